//! What the control plane sends is what the proxy reads: every resource of the translation
//! golden files, converted to Envoy's protobufs and back, is unchanged.

#![allow(clippy::unwrap_used, clippy::panic)] // test

use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use strait_xds::{Cluster, ClusterLoadAssignment, Listener, RouteConfiguration};
use strait_xds_wire as wire;

fn items<T: DeserializeOwned>(doc: &serde_json::Value, key: &str) -> Vec<T> {
    doc.get(key)
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .unwrap_or_default()
}

#[test]
fn every_golden_resource_survives_the_wire() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../translate/tests/golden");
    let mut counts = [0usize; 4];
    for dir in std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()) {
        let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        for l in items::<Listener>(&doc, "listeners") {
            let back = wire::from_envoy::listener(&wire::to_any(&wire::listener(&l)))
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(back, l, "{case}: listener {}", l.name);
            counts[0] += 1;
        }
        for r in items::<RouteConfiguration>(&doc, "routes") {
            let back = wire::from_envoy::route_configuration(&wire::to_any(
                &wire::route_configuration(&r),
            ))
            .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(back, r, "{case}: route {}", r.name);
            counts[1] += 1;
        }
        for c in items::<Cluster>(&doc, "clusters") {
            let back = wire::from_envoy::cluster(&wire::to_any(&wire::cluster(&c)))
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(back, c, "{case}: cluster {}", c.name);
            counts[2] += 1;
        }
        for mut e in items::<ClusterLoadAssignment>(&doc, "endpoints") {
            let back = wire::from_envoy::load_assignment(&wire::to_any(&wire::load_assignment(&e)))
                .unwrap_or_else(|err| panic!("{case}: {err}"));
            // An endpoint's network and identity stay with the control plane.
            for ep in e.localities.iter_mut().flat_map(|l| l.endpoints.iter_mut()) {
                let m = Arc::make_mut(&mut ep.metadata);
                m.network = "".into();
                m.identity = None;
            }
            assert_eq!(back, e, "{case}: endpoints {}", e.cluster_name);
            counts[3] += 1;
        }
    }
    println!("listeners, routes, clusters, endpoints: {counts:?}");
    assert!(counts.iter().all(|c| *c > 0), "{counts:?}");
}

fn cluster_with_tls(tls: strait_xds::cluster::UpstreamTls) -> Cluster {
    use strait_xds::cluster::*;
    Cluster {
        name: "outbound|443||api.example.com".into(),
        discovery: Discovery::StrictDns(vec![("api.example.com".into(), 443)]),
        lb_policy: LbPolicy::RingHash {
            minimum_ring_size: 2048,
        },
        connect_timeout_ms: 1500,
        circuit_breakers: Some(CircuitBreakers {
            max_connections: Some(10),
            max_pending_requests: Some(5),
            max_requests: Some(100),
            max_retries: Some(3),
        }),
        outlier_detection: Some(OutlierDetection {
            consecutive_5xx: Some(5),
            consecutive_gateway_errors: Some(2),
            consecutive_local_origin_failures: Some(4),
            split_external_local_origin_errors: true,
            interval_ms: 2500,
            base_ejection_time_ms: 60_000,
            max_ejection_percent: 50,
        }),
        http2: true,
        tls: Some(Arc::new(tls)),
        locality_weighted: true,
        panic_threshold_percent: Some(25.0),
        max_requests_per_connection: Some(7),
        idle_timeout_ms: Some(3000),
        tcp_keepalive: Some(TcpKeepalive {
            probes: Some(3),
            time_secs: Some(60),
            interval_secs: Some(10),
        }),
        service: Some(ServiceInfo {
            host: "api.example.com".into(),
            namespace: "ext".into(),
            name: "api".into(),
            port: 443,
            subset: Some("v1".into()),
        }),
    }
}

#[test]
fn every_tls_mode_and_cluster_setting_survives_the_wire() {
    use strait_xds::cluster::{UpstreamTls, UpstreamTlsMode};
    let base = UpstreamTls {
        mode: UpstreamTlsMode::Simple,
        sni: Some("api.example.com".into()),
        subject_alt_names: vec![],
        alpn: vec![],
        ca_certificates: None,
        client_certificate: None,
        private_key: None,
        credential_name: None,
        insecure_skip_verify: false,
        auto_mtls: false,
    };
    let mesh = UpstreamTls {
        mode: UpstreamTlsMode::IstioMutual,
        subject_alt_names: vec!["spiffe://cluster.local/ns/a/sa/b".into()],
        alpn: vec!["istio".into()],
        ..base.clone()
    };
    let variants = vec![
        // Auto mTLS (per endpoint) and a DestinationRule's own ISTIO_MUTUAL (every endpoint).
        UpstreamTls {
            auto_mtls: true,
            ..mesh.clone()
        },
        mesh,
        UpstreamTls {
            ca_certificates: Some("/etc/ca.pem".into()),
            subject_alt_names: vec!["api.example.com".into()],
            ..base.clone()
        },
        UpstreamTls {
            insecure_skip_verify: true,
            ..base.clone()
        },
        UpstreamTls {
            mode: UpstreamTlsMode::Mutual,
            client_certificate: Some("/etc/cert.pem".into()),
            private_key: Some("/etc/key.pem".into()),
            ca_certificates: Some("/etc/ca.pem".into()),
            ..base.clone()
        },
        UpstreamTls {
            mode: UpstreamTlsMode::Mutual,
            credential_name: Some("client-credential".into()),
            ..base.clone()
        },
        UpstreamTls {
            credential_name: Some("ca-only".into()),
            ..base.clone()
        },
    ];
    for tls in variants {
        let c = cluster_with_tls(tls);
        let back = wire::from_envoy::cluster(&wire::to_any(&wire::cluster(&c))).unwrap();
        assert_eq!(back, c);
    }
    // A credential's secrets carry Istio's SDS names, as a real Envoy asks for them.
    let c = cluster_with_tls(UpstreamTls {
        mode: UpstreamTlsMode::Mutual,
        credential_name: Some("client-credential".into()),
        ..base.clone()
    });
    let socket = wire::cluster(&c).transport_socket.unwrap();
    let Some(wire::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(any)) =
        socket.config_type
    else {
        panic!("no typed config");
    };
    use prost::Message;
    let context =
        wire::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext::decode(
            any.value.as_slice(),
        )
        .unwrap();
    let shown = format!("{context:?}");
    assert!(
        shown.contains("\"kubernetes://client-credential\""),
        "{shown}"
    );
    assert!(
        shown.contains("\"kubernetes://client-credential-cacert\""),
        "{shown}"
    );
}

#[test]
fn routes_and_listeners_with_every_feature_survive_the_wire() {
    use strait_xds::StringMatch;
    use strait_xds::listener::*;
    use strait_xds::route::*;
    let edits: HeaderEdits = HeaderEditList {
        set: vec![("x-set".into(), "1".into())],
        add: vec![("x-add".into(), "2".into())],
        remove: vec!["x-gone".into()],
    }
    .into();
    let routes = vec![
        Route {
            name: "redirect".into(),
            matching: RouteMatch {
                path: PathMatch::Exact("/old".into()),
                case_sensitive: false,
                headers: vec![HeaderMatch {
                    name: ":method".into(),
                    matcher: StringMatch::Exact("GET".into()),
                    invert: true,
                }],
                query_params: vec![QueryMatch {
                    name: "q".into(),
                    matcher: StringMatch::Regex("a+".into()),
                }],
            },
            action: Action::Redirect(Redirect {
                scheme: Some("https".into()),
                host: Some("new.example.com".into()),
                port: Some(8443),
                path: None,
                prefix_rewrite: Some("/new".into()),
                response_code: 308,
            }),
            request_headers: edits.clone(),
            response_headers: HeaderEdits::default(),
            fault: None,
            cors: Some(Box::new(Cors {
                allow_origins: vec![StringMatch::Prefix("https://".into())],
                allow_methods: vec!["GET".into(), "POST".into()],
                allow_headers: vec!["x-a".into()],
                expose_headers: vec!["x-b".into()],
                max_age_secs: Some(60),
                allow_credentials: Some(true),
            })),
        },
        Route {
            name: "direct".into(),
            matching: RouteMatch::any(),
            action: Action::DirectResponse {
                status: 418,
                body: Some("teapot".into()),
            },
            request_headers: HeaderEdits::default(),
            response_headers: edits.clone(),
            fault: Some(Box::new(Fault {
                delay: Some(FaultDelay {
                    fixed_delay_ms: 250,
                    percent: 12.5,
                }),
                abort: Some(FaultAbort {
                    status: AbortStatus::Grpc(14),
                    percent: 1.0,
                }),
            })),
            cors: None,
        },
        Route {
            name: "forward".into(),
            matching: RouteMatch {
                path: PathMatch::Regex("/v[0-9]+/.*".into()),
                case_sensitive: true,
                headers: vec![HeaderMatch {
                    name: "x-present".into(),
                    matcher: StringMatch::Present,
                    invert: false,
                }],
                query_params: vec![],
            },
            action: Action::Forward(RouteAction {
                clusters: vec![
                    WeightedCluster {
                        name: "a".into(),
                        weight: 70,
                        request_headers: edits.clone(),
                        response_headers: HeaderEdits::default(),
                    },
                    WeightedCluster {
                        name: "b".into(),
                        weight: 30,
                        request_headers: HeaderEdits::default(),
                        response_headers: HeaderEdits::default(),
                    },
                ],
                timeout_ms: Some(1500),
                retry: Some(Arc::new(RetryPolicy {
                    retry_on: vec!["5xx".into(), "reset".into()],
                    num_retries: 4,
                    per_try_timeout_ms: Some(300),
                    retriable_status_codes: vec![503],
                    backoff_base_ms: Some(25),
                    retry_other_hosts: true,
                })),
                mirrors: vec![Mirror {
                    cluster: "shadow".into(),
                    percent: 5.0,
                }],
                prefix_rewrite: None,
                regex_rewrite: Some(("^/v1/".into(), "/".into())),
                host_rewrite: Some("inner".into()),
                hash_policy: vec![
                    HashPolicy::Header("x-user".into()),
                    HashPolicy::Cookie {
                        name: "c".into(),
                        ttl_ms: Some(1000),
                        path: Some("/".into()),
                    },
                    HashPolicy::SourceIp,
                    HashPolicy::QueryParameter("u".into()),
                ],
                upgrades: vec!["websocket".into()],
            }),
            request_headers: HeaderEdits::default(),
            response_headers: HeaderEdits::default(),
            fault: None,
            cors: None,
        },
    ];
    let rc = RouteConfiguration {
        name: "8080".into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: routes.into_iter().map(Arc::new).collect(),
        }],
    };
    let back =
        wire::from_envoy::route_configuration(&wire::to_any(&wire::route_configuration(&rc)))
            .unwrap();
    assert_eq!(back, rc);

    // Routes with the same retry policy share one copy of it.
    let mut twice = rc.clone();
    twice.virtual_hosts.push(VirtualHost {
        name: "again".into(),
        domains: vec!["again".into()],
        routes: rc.virtual_hosts[0].routes.clone(),
    });
    let back =
        wire::from_envoy::route_configuration(&wire::to_any(&wire::route_configuration(&twice)))
            .unwrap();
    assert_eq!(back, twice);
    let retry_of = |vh: usize| match &back.virtual_hosts[vh].routes[2].action {
        Action::Forward(a) => a.retry.clone().unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(Arc::ptr_eq(&retry_of(0), &retry_of(1)));

    let listener = Listener {
        name: "0.0.0.0_15443".into(),
        kind: ListenerKind::Socket(SocketListener {
            address: strait_xds::SocketAddress::new("0.0.0.0", 15443),
            direction: Direction::Inbound,
            use_original_dst: false,
            bind_to_port: true,
            inspect_protocol: true,
            filter_chains: vec![
                FilterChain {
                    name: "tls".into(),
                    matching: FilterChainMatch {
                        destination_port: Some(15443),
                        prefix_ranges: vec!["10.0.0.0/8".into()],
                        server_names: vec!["*.example.com".into()],
                        transport_protocol: Some("tls".into()),
                        application_protocols: vec!["istio".into()],
                    },
                    tls: Some(DownstreamTls::mesh(vec!["h2".into(), "http/1.1".into()])),
                    rbac: Vec::new(),
                    filter: NetworkFilter::Http(HttpConnectionManager {
                        stat_prefix: "in".into(),
                        route: RouteSource::Inline(rc.clone()),
                        http_filters: vec![HttpFilter::Fault, HttpFilter::Cors, HttpFilter::Router],
                        rbac: vec![every_rbac_rule(false), every_rbac_rule(true)],
                        jwt: Some(jwt_filter()),
                        upgrades: vec!["websocket".into()],
                        idle_timeout_ms: Some(60_000),
                    }),
                },
                // A gateway's own certificate and client roots, from files.
                FilterChain {
                    name: "own".into(),
                    matching: FilterChainMatch {
                        server_names: vec!["partner.example.com".into()],
                        ..Default::default()
                    },
                    tls: Some(DownstreamTls {
                        certificate: ServerCertificate::Files {
                            certificate_chain: "/etc/certs/partner.pem".into(),
                            private_key: "/etc/certs/partner.key".into(),
                        },
                        validation: Some(ClientRoots::File {
                            ca_certificates: "/etc/certs/clients.pem".into(),
                        }),
                        require_client_certificate: false,
                        alpn: vec!["h2".into(), "http/1.1".into()],
                    }),
                    rbac: Vec::new(),
                    filter: NetworkFilter::Tcp(TcpProxy {
                        stat_prefix: "own".into(),
                        clusters: vec![],
                        idle_timeout_ms: None,
                    }),
                },
                FilterChain {
                    name: "sni".into(),
                    matching: FilterChainMatch::default(),
                    tls: None,
                    rbac: Vec::new(),
                    filter: NetworkFilter::SniCluster(TcpProxy {
                        stat_prefix: "sni".into(),
                        clusters: vec![],
                        idle_timeout_ms: None,
                    }),
                },
            ],
            default_chain: Some(FilterChain {
                name: "tcp".into(),
                matching: FilterChainMatch::default(),
                tls: None,
                rbac: vec![every_rbac_rule(false)],
                filter: NetworkFilter::Tcp(TcpProxy {
                    stat_prefix: "tcp".into(),
                    clusters: vec![("x".into(), 60), ("y".into(), 40)],
                    idle_timeout_ms: Some(1000),
                }),
            }),
        }),
    };
    let back = wire::from_envoy::listener(&wire::to_any(&wire::listener(&listener))).unwrap();
    assert_eq!(back, listener);
}

/// A JWT filter with two providers, one using every field.
fn jwt_filter() -> strait_xds::jwt::JwtAuthn {
    use strait_xds::jwt::{ClaimHeader, JwtAuthn, JwtProvider, TokenHeader};
    let first = JwtProvider {
        name: "origins-0".into(),
        issuer: "https://issuer.example".into(),
        audiences: vec!["api".into(), "web".into()],
        jwks: r#"{"keys":[]}"#.into(),
        from_headers: vec![TokenHeader {
            name: "x-jwt".into(),
            prefix: "Token ".into(),
        }],
        from_params: vec!["token".into()],
        from_cookies: vec!["session".into()],
        forward: true,
        payload_header: Some("x-jwt-payload".into()),
        claim_headers: vec![ClaimHeader {
            header: "x-user".into(),
            claim: "sub".into(),
        }],
        space_delimited_claims: vec!["scope".into(), "roles".into()],
        required: true,
    };
    let second = JwtProvider {
        name: "origins-1".into(),
        issuer: "other".into(),
        audiences: vec![],
        jwks: String::new(),
        from_headers: vec![],
        from_params: vec![],
        from_cookies: vec![],
        forward: false,
        payload_header: None,
        claim_headers: vec![],
        space_delimited_claims: vec![],
        required: false,
    };
    JwtAuthn {
        providers: vec![first, second],
    }
}

/// One RBAC filter using every permission and principal kind.
fn every_rbac_rule(shadow: bool) -> strait_xds::rbac::Rbac {
    use strait_xds::StringMatch;
    use strait_xds::jwt::AuthAttribute;
    use strait_xds::rbac::{Permission as P, Principal as I, Rbac, RbacAction, RbacPolicy};
    use strait_xds::route::HeaderMatch;
    let header = HeaderMatch {
        name: "x-token".into(),
        matcher: StringMatch::Prefix("abc".into()),
        invert: false,
    };
    Rbac {
        action: if shadow {
            RbacAction::Allow
        } else {
            RbacAction::Deny
        },
        shadow,
        policies: vec![
            RbacPolicy {
                name: "ns[foo]-policy[a]-rule[0]".into(),
                permissions: vec![
                    P::And(vec![
                        P::Or(vec![
                            P::DestinationPort(8080),
                            P::DestinationIp("10.0.0.0/8".into()),
                        ]),
                        P::Not(Box::new(P::Path(StringMatch::Regex("/x/[^/]+".into())))),
                        P::Host(StringMatch::Suffix(".example.com".into())),
                        P::ServerName(StringMatch::Exact("a.example.com".into())),
                        P::Header(header.clone()),
                    ]),
                    P::Any,
                    P::never(),
                ],
                principals: vec![
                    I::And(vec![
                        I::Or(vec![
                            I::Authenticated(StringMatch::Present),
                            I::Authenticated(StringMatch::Exact("spiffe://td/ns/a/sa/b".into())),
                        ]),
                        I::Not(Box::new(I::DirectRemoteIp("192.0.2.0/24".into()))),
                        I::RemoteIp("2001:db8::/32".into()),
                        I::Header(header),
                        I::RequestAuth {
                            attribute: AuthAttribute::Principal,
                            value: StringMatch::Prefix("https://issuer.example/".into()),
                        },
                        I::RequestAuth {
                            attribute: AuthAttribute::Presenter,
                            value: StringMatch::Present,
                        },
                        I::RequestAuth {
                            attribute: AuthAttribute::Audiences,
                            value: StringMatch::Exact("api".into()),
                        },
                        I::RequestAuth {
                            attribute: AuthAttribute::Claim(vec!["realm".into(), "roles".into()]),
                            value: StringMatch::Suffix("admin".into()),
                        },
                    ]),
                    I::Any,
                ],
            },
            RbacPolicy {
                name: "ns[foo]-policy[b]-rule[0]".into(),
                permissions: vec![P::Any],
                principals: vec![I::never()],
            },
        ],
    }
}

#[test]
fn what_the_proxy_cannot_honour_is_rejected_with_the_field_named() {
    use wire::pb::envoy::config::listener::v3 as l;
    use wire::pb::google::protobuf::Any;
    let bad = l::Listener {
        name: "in".into(),
        address: Some(wire::pb::envoy::config::core::v3::Address {
            address: Some(wire::pb::envoy::config::core::v3::address::Address::SocketAddress(
                wire::pb::envoy::config::core::v3::SocketAddress {
                    address: "0.0.0.0".into(),
                    port_specifier: Some(
                        wire::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(15006),
                    ),
                    ..Default::default()
                },
            )),
        }),
        filter_chains: vec![l::FilterChain {
            filters: vec![l::Filter {
                name: "envoy.filters.network.mongo_proxy".into(),
                config_type: Some(l::filter::ConfigType::TypedConfig(Any::default())),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = wire::from_envoy::listener(&wire::to_any(&bad)).unwrap_err();
    assert_eq!(err.resource, "listener in");
    assert!(err.reason.contains("filter_chains[0].filters[0]"), "{err}");
    assert!(err.reason.contains("mongo_proxy"), "{err}");
    // A cluster sent where a listener is expected.
    let err = wire::from_envoy::listener(&wire::to_any(
        &wire::pb::envoy::config::cluster::v3::Cluster::default(),
    ))
    .unwrap_err();
    assert!(
        err.reason
            .contains("expected type.googleapis.com/envoy.config.listener.v3.Listener"),
        "{err}"
    );
}

fn assignment(cluster: &str, pods: &[&str]) -> ClusterLoadAssignment {
    use strait_xds::endpoint::{EndpointMetadata, HealthStatus, LbEndpoint, LocalityEndpoints};
    let endpoints = pods
        .iter()
        .enumerate()
        .map(|(i, pod)| LbEndpoint {
            address: strait_xds::SocketAddress::new(format!("10.0.0.{}", i + 1), 8080),
            health: HealthStatus::Healthy,
            weight: 1,
            metadata: Arc::new(EndpointMetadata {
                cluster: "cluster1".into(),
                network: "".into(),
                identity: None,
                mtls: true,
                gateway: false,
                workload: (*pod).into(),
                namespace: "bookinfo".into(),
            }),
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster.into(),
        localities: vec![LocalityEndpoints {
            locality: Default::default(),
            priority: 0,
            weight: None,
            endpoints,
        }],
        overprovisioning_factor: None,
    }
}

#[test]
fn an_assignments_endpoints_share_the_texts_they_repeat() {
    let a = assignment("outbound|9080||reviews", &["reviews-v1", "reviews-v2"]);
    let back =
        wire::from_envoy::load_assignment(&wire::to_any(&wire::load_assignment(&a))).unwrap();
    assert_eq!(back, a);
    // One copy of the namespace and cluster for the assignment's endpoints.
    let eps = &back.localities[0].endpoints;
    assert!(Arc::ptr_eq(
        &eps[0].metadata.namespace,
        &eps[1].metadata.namespace
    ));
    assert!(Arc::ptr_eq(
        &eps[0].metadata.cluster,
        &eps[1].metadata.cluster
    ));
    assert!(!Arc::ptr_eq(
        &eps[0].metadata.workload,
        &eps[1].metadata.workload
    ));
}

#[test]
fn a_workloads_replicas_share_one_metadata() {
    let a = assignment(
        "outbound|9080||reviews",
        &["reviews-v1", "reviews-v2", "reviews-v1"],
    );
    let back =
        wire::from_envoy::load_assignment(&wire::to_any(&wire::load_assignment(&a))).unwrap();
    assert_eq!(back, a);
    let eps = &back.localities[0].endpoints;
    assert!(Arc::ptr_eq(&eps[0].metadata, &eps[2].metadata));
    assert!(!Arc::ptr_eq(&eps[0].metadata, &eps[1].metadata));
}
