//! Remote secrets (pure). What `strait create-remote-secret` prints is Istio's shape — a Secret
//! labelled `istio/multiCluster: "true"` whose key is the cluster's name and whose value is a
//! kubeconfig — holding what another control plane needs to watch this cluster: the address of
//! its registry stream, the CA bundle to verify it, and a short-lived reader token. Reading one
//! back from a cluster's manifests names the Secret and key of every mistake.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use std::time::Duration;
use strait_config::kube::SecretData;

use strait_config::linkerd::LinkSelector;
use strait_config::resource::Object;
use strait_model::mirror::default_export_selector;

/// The label that marks a remote secret (Istio's).
pub const MULTICLUSTER_LABEL: &str = "istio/multiCluster";
/// The annotation naming the cluster a remote secret gives access to (Istio's).
pub const CLUSTER_ANNOTATION: &str = "networking.istio.io/cluster";
/// The identity a reader token carries (Istio's remote secrets use this service account).
pub const READER_NAMESPACE: &str = "istio-system";
pub const READER_SERVICE_ACCOUNT: &str = "istio-reader-service-account";

/// What a remote secret gives: where a cluster's registry stream is and how to be let in.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteAccess {
    /// The remote cluster's name (the secret's key).
    pub cluster: String,
    /// `host:port` of its control plane's secure port.
    pub server: String,
    /// The DNS name its serving certificate carries.
    pub server_name: String,
    /// PEM certificates its serving certificate must chain to.
    pub ca_pem: String,
    pub token: String,
    /// Where it came from: `Secret <namespace>/<name>`.
    pub source: String,
    /// A Linkerd-style link: only the cluster's exported services join, mirrored as
    /// `<name>-<cluster>`; else (Istio) its services merge with the mesh's.
    pub mirror: bool,
    /// A link's gateway health URL, probed every few seconds: mirrors lose their endpoints
    /// while it fails.
    pub probe: Option<String>,
    /// For a link: which services it mirrors and how its gateway is probed.
    pub link: LinkSettings,
}

/// What a Linkerd `Link` says of a link (its credentials Secret alone gives the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    /// The linked cluster's services that are mirrored.
    pub selector: LinkSelector,
    pub probe_period: Duration,
    /// Failed probes in a row that withdraw the mirrors' endpoints.
    pub probe_failures: u32,
    pub probe_timeout: Duration,
}

impl Default for LinkSettings {
    /// Linkerd's exported label; probed every 3 s, 2 s to answer, two failures in a row.
    fn default() -> Self {
        LinkSettings {
            selector: default_export_selector(),
            probe_period: Duration::from_secs(3),
            probe_failures: 2,
            probe_timeout: Duration::from_secs(2),
        }
    }
}

impl std::fmt::Debug for RemoteAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteAccess")
            .field("cluster", &self.cluster)
            .field("server", &self.server)
            .field("server_name", &self.server_name)
            .field("source", &self.source)
            .field("mirror", &self.mirror)
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

pub use strait_model::mirror::{LINK_CLUSTER_LABEL, LINK_SECRET_TYPE};
/// The annotation holding a link's gateway probe URL.
pub const LINK_PROBE_ANNOTATION: &str = "strait.dev/gateway-probe";

/// The kubeconfig a remote secret carries.
fn kubeconfig(access: &RemoteAccess) -> String {
    let c = &access.cluster;
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {c}\n  cluster:\n    server: https://{server}\n    tls-server-name: {name}\n    certificate-authority-data: {ca}\ncontexts:\n- name: {c}\n  context:\n    cluster: {c}\n    user: {c}\ncurrent-context: {c}\nusers:\n- name: {c}\n  user:\n    token: {token}\n",
        server = access.server,
        name = access.server_name,
        ca = B64.encode(access.ca_pem.as_bytes()),
        token = access.token,
    )
}

fn indented(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// The Linkerd `Link` of a link (after its credentials Secret): its gateway and how it is
/// probed (from `access.probe`, `http://<address>:<port><path>`), with Linkerd's selector.
fn link_yaml(access: &RemoteAccess) -> String {
    let c = &access.cluster;
    let l = &access.link;
    let probe = access.probe.as_deref().and_then(probe_parts);
    let gateway = probe
        .as_ref()
        .map(|(host, port, path)| {
            format!(
                "  gatewayAddress: {host}\n  gatewayPort: \"15443\"\n  probeSpec:\n    path: {path}\n    port: \"{port}\"\n    period: {}s\n    failureThreshold: \"{}\"\n    timeout: {}s\n",
                l.probe_period.as_secs().max(1),
                l.probe_failures,
                l.probe_timeout.as_secs().max(1)
            )
        })
        .unwrap_or_default();
    format!(
        "---\napiVersion: multicluster.linkerd.io/v1alpha2\nkind: Link\nmetadata:\n  name: {c}\n  namespace: linkerd-multicluster\nspec:\n  targetClusterName: {c}\n  clusterCredentialsSecret: cluster-credentials-{c}\n{gateway}  selector:\n    matchLabels:\n      {}: \"true\"\n",
        strait_model::mirror::EXPORTED_LABEL
    )
}

/// `http://host:port/path` → (host, port, path).
fn probe_parts(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = authority.rsplit_once(':')?;
    Some((
        host.trim_matches(['[', ']']).to_string(),
        port.parse().ok()?,
        path.to_string(),
    ))
}

/// The Secret document (YAML) for `access`: Istio's remote secret, or with `access.mirror` the
/// credentials of a Linkerd-style link (`strait multicluster link`).
pub fn secret_yaml(access: &RemoteAccess) -> String {
    let c = &access.cluster;
    let indented = indented(&kubeconfig(access));
    if access.mirror {
        let link = link_yaml(access);
        return format!(
            "# Links cluster {c} Linkerd-style: its services labelled mirror.linkerd.io/exported=true\n# appear here as <name>-{c}. Apply both documents among the linking cluster's manifests.\napiVersion: v1\nkind: Secret\nmetadata:\n  name: cluster-credentials-{c}\n  namespace: linkerd-multicluster\n  labels:\n    {LINK_CLUSTER_LABEL}: {c}\ntype: {LINK_SECRET_TYPE}\nstringData:\n  kubeconfig: |\n{indented}{link}"
        );
    }
    format!(
        "# Lets another cluster's control plane watch cluster {c}'s registry. Apply it (put it in\n# that control plane's manifests); replacing it with a fresh one rotates the token.\napiVersion: v1\nkind: Secret\nmetadata:\n  name: istio-remote-secret-{c}\n  namespace: istio-system\n  labels:\n    {MULTICLUSTER_LABEL}: \"true\"\n  annotations:\n    {CLUSTER_ANNOTATION}: {c}\ntype: Opaque\nstringData:\n  {c}: |\n{indented}"
    )
}

#[derive(Deserialize)]
struct KubeConfig {
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
struct NamedCluster {
    cluster: ClusterEntry,
}

#[derive(Deserialize)]
struct ClusterEntry {
    server: String,
    #[serde(rename = "tls-server-name")]
    tls_server_name: Option<String>,
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: Option<String>,
}

#[derive(Deserialize)]
struct NamedUser {
    user: UserEntry,
}

#[derive(Deserialize)]
struct UserEntry {
    token: Option<String>,
}

/// Whether a Secret is a remote secret (Istio's) or a link's credentials (Linkerd's).
pub fn is_remote_secret(secret: &Object<SecretData>) -> bool {
    secret
        .meta
        .labels
        .get(MULTICLUSTER_LABEL)
        .map(String::as_str)
        == Some("true")
        || is_link(secret)
}

fn is_link(secret: &Object<SecretData>) -> bool {
    secret.spec.secret_type.as_deref() == Some(LINK_SECRET_TYPE)
}

/// The remote clusters a remote secret gives access to, one per key; each mistake names the
/// Secret, the key and the field.
pub fn remote_access(secret: &Object<SecretData>) -> Vec<Result<RemoteAccess, String>> {
    remote_access_named(secret, None)
}

/// [`remote_access`]; a link's credentials name `linked` (the cluster a `Link` referring to
/// them targets) when they carry no cluster-name label.
pub fn remote_access_named(
    secret: &Object<SecretData>,
    linked: Option<&str>,
) -> Vec<Result<RemoteAccess, String>> {
    let source = format!("Secret {}/{}", secret.meta.namespace, secret.meta.name);
    let mut values: Vec<(String, Result<String, String>)> = secret
        .spec
        .data
        .iter()
        .map(|(k, v)| {
            let decoded = B64
                .decode(v.trim())
                .map_err(|e| format!("data.{k} is not base64 ({e})"))
                .and_then(|b| {
                    String::from_utf8(b).map_err(|_| format!("data.{k} is not UTF-8 text"))
                });
            (k.clone(), decoded)
        })
        .collect();
    values.extend(
        secret
            .spec
            .string_data
            .iter()
            .map(|(k, v)| (k.clone(), Ok(v.clone()))),
    );
    if is_link(secret) {
        // One kubeconfig under `kubeconfig`; the cluster is named by the label.
        let Some(cluster) = secret
            .meta
            .labels
            .get(LINK_CLUSTER_LABEL)
            .map(String::as_str)
            .or(linked)
        else {
            return vec![Err(format!(
                "{source}: a link's credentials need the label {LINK_CLUSTER_LABEL} naming the linked cluster (or a Link whose clusterCredentialsSecret names them)"
            ))];
        };
        let probe = secret.meta.annotations.get(LINK_PROBE_ANNOTATION).cloned();
        return values
            .into_iter()
            .filter(|(k, _)| k == "kubeconfig")
            .map(|(_, text)| {
                let text = text.map_err(|e| format!("{source}: {e}"))?;
                let mut access = parse_kubeconfig(cluster, &text, &source)
                    .map_err(|e| format!("{source}, key \"kubeconfig\": {e}"))?;
                access.mirror = true;
                access.probe = probe.clone();
                Ok(access)
            })
            .collect();
    }
    values
        .into_iter()
        .map(|(cluster, text)| {
            let text = text.map_err(|e| format!("{source}: {e}"))?;
            parse_kubeconfig(&cluster, &text, &source)
                .map_err(|e| format!("{source}, key {cluster:?}: {e}"))
        })
        .collect()
}

fn parse_kubeconfig(cluster: &str, text: &str, source: &str) -> Result<RemoteAccess, String> {
    let config: KubeConfig = serde_saphyr::from_str(text).map_err(|e| {
        format!("not a kubeconfig ({e}); create it with `strait create-remote-secret`")
    })?;
    let entry = config
        .clusters
        .into_iter()
        .next()
        .ok_or("clusters is empty: the kubeconfig names no server")?
        .cluster;
    let server = entry
        .server
        .strip_prefix("https://")
        .ok_or_else(|| {
            format!(
                "clusters[0].cluster.server {:?} must be https://host:port (the remote control plane's secure port)",
                entry.server
            )
        })?
        .trim_end_matches('/')
        .to_string();
    let ca = entry
        .certificate_authority_data
        .ok_or("clusters[0].cluster.certificate-authority-data is missing: without it the remote cannot be verified")?;
    let ca_pem = B64
        .decode(ca.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|p| p.contains("BEGIN CERTIFICATE"))
        .ok_or(
            "clusters[0].cluster.certificate-authority-data is not base64 of PEM certificates",
        )?;
    let token = config
        .users
        .into_iter()
        .next()
        .and_then(|u| u.user.token)
        .ok_or("users[0].user.token is missing: the remote lets no one in without it")?;
    Ok(RemoteAccess {
        cluster: cluster.to_string(),
        server,
        server_name: entry
            .tls_server_name
            .unwrap_or_else(|| "istiod.istio-system.svc".into()),
        ca_pem,
        token,
        source: source.to_string(),
        mirror: false,
        probe: None,
        link: LinkSettings::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::valid_config as secrets;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn what_create_remote_secret_prints_reads_back() {
        let access = RemoteAccess {
            cluster: "cluster2".into(),
            server: "10.2.0.2:15012".into(),
            server_name: "istiod.istio-system.svc".into(),
            ca_pem: PEM.into(),
            token: "strait1.abc.def".into(),
            source: String::new(),
            mirror: false,
            probe: None,
            link: LinkSettings::default(),
        };
        let set = secrets(&secret_yaml(&access));
        let secret = &set.secrets[0];
        assert!(is_remote_secret(secret));
        let read = remote_access(secret);
        let got = read[0].as_ref().unwrap();
        assert_eq!(got.cluster, "cluster2");
        assert_eq!(got.server, "10.2.0.2:15012");
        assert_eq!(
            (got.ca_pem.as_str(), got.token.as_str()),
            (PEM, "strait1.abc.def")
        );
        assert_eq!(
            got.source,
            "Secret istio-system/istio-remote-secret-cluster2"
        );
        assert!(
            !format!("{got:?}").contains("abc"),
            "the token leaks into logs"
        );

        let link = RemoteAccess {
            mirror: true,
            probe: Some("http://10.255.0.101:15021/healthz/ready".into()),
            ..access
        };
        // The credentials Secret and a Link holding the gateway's probe, read back together.
        let set = secrets(&secret_yaml(&link));
        assert!(is_remote_secret(&set.secrets[0]));
        assert_eq!(set.links.len(), 1);
        let (mut read, problems) =
            crate::remotes::from_config(&strait_model::ClusterId::new("cluster1"), &set);
        assert!(problems.is_empty(), "{problems:?}");
        let got = read.remove(0);
        assert_eq!(
            got.link,
            LinkSettings::default(),
            "the Link says what strait uses"
        );
        assert_eq!(
            got.source,
            "Secret linkerd-multicluster/cluster-credentials-cluster2"
        );
        assert_eq!(
            (got.cluster.as_str(), got.mirror, got.probe.as_deref()),
            (
                "cluster2",
                true,
                Some("http://10.255.0.101:15021/healthz/ready")
            )
        );
    }

    #[test]
    fn mistakes_name_the_secret_key_and_field() {
        let set = secrets(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: r\n  namespace: istio-system\n  labels: {istio/multiCluster: \"true\"}\nstringData:\n  c2: |\n    clusters:\n    - cluster: {server: \"http://10.0.0.1:15012\"}\n  c3: |\n    clusters:\n    - cluster: {server: \"https://10.0.0.1:15012\"}\n",
        );
        let errors: Vec<String> = remote_access(&set.secrets[0])
            .into_iter()
            .map(|r| r.unwrap_err())
            .collect();
        assert!(
            errors[0].starts_with("Secret istio-system/r, key \"c2\": clusters[0].cluster.server"),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("certificate-authority-data is missing"),
            "{errors:?}"
        );
    }
}
