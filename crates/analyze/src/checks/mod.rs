//! The cross-reference checks, by area.

mod credentials;
mod policy;
mod registry;
mod routing;
mod unsupported;

use crate::context::Context;
use crate::message::Message;

pub(crate) fn run(ctx: &Context<'_>, out: &mut Vec<Message>) {
    routing::destinations(ctx, out);
    routing::virtual_service_conflicts(ctx, out);
    routing::gateways(ctx, out);
    routing::delegates(ctx, out);
    policy::subsets_select_workloads(ctx, out);
    policy::locality_without_outlier_detection(ctx, out);
    policy::strict_mtls_against_disabled_tls(ctx, out);
    registry::service_entry_conflicts(ctx, out);
    registry::undetermined_protocols(ctx, out);
    registry::traffic_split_backends(ctx, out);
    registry::merge_conflicts(ctx, out);
    registry::global_hosts(ctx, out);
    unsupported::unix_socket_endpoints(ctx, out);
    credentials::gateway_credentials(ctx, out);
    unsupported::gateway_server_certificates(ctx, out);
    unsupported::client_tls_settings(ctx, out);
}
