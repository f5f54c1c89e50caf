//! Istio's validation rules for the kinds its CRD corpus barely covers (VirtualService,
//! DestinationRule, Gateway, Sidecar, ServiceEntry, AuthorizationPolicy), as tables: each case
//! is a spec that Istio accepts, or rejects at a named field with a named problem.

use strait_config::load::{LoadOptions, Outcome, load_str};

struct Case {
    name: &'static str,
    kind: &'static str,
    spec: &'static str,
    /// `None`: valid. `Some((field, text))`: rejected with an error at `field` mentioning `text`.
    expect: Option<(&'static str, &'static str)>,
}

const fn ok(name: &'static str, kind: &'static str, spec: &'static str) -> Case {
    Case {
        name,
        kind,
        spec,
        expect: None,
    }
}

const fn bad(
    name: &'static str,
    kind: &'static str,
    spec: &'static str,
    field: &'static str,
    text: &'static str,
) -> Case {
    Case {
        name,
        kind,
        spec,
        expect: Some((field, text)),
    }
}

const VS: &str = "VirtualService";
const DR: &str = "DestinationRule";
const GW: &str = "Gateway";
const SC: &str = "Sidecar";
const SE: &str = "ServiceEntry";
const AP: &str = "AuthorizationPolicy";

fn cases() -> Vec<Case> {
    vec![
        // VirtualService: hosts
        ok(
            "weighted routes",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews, subset: v1}, weight: 75}, {destination: {host: reviews, subset: v2}, weight: 25}]}]",
        ),
        bad(
            "wildcard host on the mesh",
            VS,
            "hosts: ['*']\nhttp: [{route: [{destination: {host: reviews}}]}]",
            "spec.hosts[0]",
            "wildcard host * is not allowed",
        ),
        ok(
            "wildcard host on a gateway",
            VS,
            "hosts: ['*']\ngateways: [istio-system/ingress]\nhttp: [{route: [{destination: {host: reviews}}]}]",
        ),
        bad(
            "duplicate hosts",
            VS,
            "hosts: ['*.foo.com', a.foo.com]\nhttp: [{route: [{destination: {host: reviews}}]}]",
            "spec.hosts[1]",
            "duplicate hosts",
        ),
        bad(
            "invalid host",
            VS,
            "hosts: [Bad_Host]\nhttp: [{route: [{destination: {host: reviews}}]}]",
            "spec.hosts[0]",
            "invalid",
        ),
        ok(
            "IP host",
            VS,
            "hosts: [10.1.2.3]\nhttp: [{route: [{destination: {host: reviews}}]}]",
        ),
        bad(
            "no routes",
            VS,
            "hosts: [reviews]",
            "spec",
            "http, tcp or tls must be provided",
        ),
        bad(
            "delegate with gateways",
            VS,
            "gateways: [istio-system/gw]\nhttp: [{route: [{destination: {host: reviews}}]}]",
            "spec.gateways",
            "delegate virtual service must have no gateways",
        ),
        // VirtualService: weights
        bad(
            "negative weight",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}, weight: -1}, {destination: {host: b}, weight: 101}]}]",
            "spec.http[0].route[0].weight",
            "weight -1 < 0",
        ),
        bad(
            "all weights zero",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}, weight: 0}, {destination: {host: b}, weight: 0}]}]",
            "spec.http[0].route",
            "total destination weight = 0",
        ),
        ok(
            "single destination without weight",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}}]}]",
        ),
        bad(
            "destination host wildcard",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: '*'}}]}]",
            "spec.http[0].route[0].destination.host",
            "invalid destination host",
        ),
        bad(
            "destination port out of range",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a, port: {number: 70000}}}]}]",
            "spec.http[0].route[0].destination.port.number",
            "port must be between 1-65535",
        ),
        bad(
            "bad subset name",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a, subset: V_1}}]}]",
            "spec.http[0].route[0].destination.subset",
            "subset name is invalid",
        ),
        // VirtualService: matches
        bad(
            "two string match kinds",
            VS,
            "hosts: [reviews]\nhttp: [{match: [{uri: {exact: /a, prefix: /b}}], route: [{destination: {host: a}}]}]",
            "spec.http[0].match[0].uri",
            "only one of exact, prefix, regex",
        ),
        bad(
            "empty prefix",
            VS,
            "hosts: [reviews]\nhttp: [{match: [{uri: {prefix: ''}}], route: [{destination: {host: a}}]}]",
            "spec.http[0].match[0].uri.prefix",
            "prefix string match should not be empty",
        ),
        bad(
            "bad regex",
            VS,
            "hosts: [reviews]\nhttp: [{match: [{uri: {regex: '('}}], route: [{destination: {host: a}}]}]",
            "spec.http[0].match[0].uri.regex",
            "RE2",
        ),
        bad(
            "bad header name",
            VS,
            "hosts: [reviews]\nhttp: [{match: [{headers: {'bad header': {exact: x}}}], route: [{destination: {host: a}}]}]",
            "spec.http[0].match[0].headers[bad header]",
            "not a valid header name",
        ),
        ok(
            "header, query and method matches",
            VS,
            "hosts: [reviews]\nhttp: [{match: [{headers: {end-user: {exact: jason}}, queryParams: {v: {regex: '^1'}}, method: {exact: GET}, ignoreUriCase: true}], route: [{destination: {host: a}}]}]",
        ),
        bad(
            "bad source namespace",
            VS,
            "hosts: [reviews]\nhttp: [{match: [{sourceNamespace: Bad_NS}], route: [{destination: {host: a}}]}]",
            "spec.http[0].match[0].sourceNamespace",
            "sourceNamespace match",
        ),
        bad(
            "gateway name",
            VS,
            "hosts: [reviews]\ngateways: [istio-system/Bad_GW]\nhttp: [{route: [{destination: {host: a}}]}]",
            "spec.gateways[0]",
            "invalid value for gateway name",
        ),
        // VirtualService: actions
        bad(
            "route and redirect",
            VS,
            "hosts: [reviews]\nhttp: [{redirect: {uri: /x}, route: [{destination: {host: a}}]}]",
            "spec.http[0]",
            "cannot contain both route and redirect",
        ),
        bad(
            "no action",
            VS,
            "hosts: [reviews]\nhttp: [{match: [{uri: {prefix: /}}]}]",
            "spec.http[0].route",
            "HTTP route, redirect or directResponse is required",
        ),
        ok(
            "redirect",
            VS,
            "hosts: [reviews]\nhttp: [{redirect: {uri: /v1/bookRatings, authority: newratings.default.svc.cluster.local, redirectCode: 301}}]",
        ),
        bad(
            "redirect code",
            VS,
            "hosts: [reviews]\nhttp: [{redirect: {uri: /x, redirectCode: 200}}]",
            "spec.http[0].redirect.redirectCode",
            "must be 3xx",
        ),
        bad(
            "redirect scheme",
            VS,
            "hosts: [reviews]\nhttp: [{redirect: {scheme: ftp}}]",
            "spec.http[0].redirect.scheme",
            "invalid redirect scheme",
        ),
        bad(
            "empty redirect",
            VS,
            "hosts: [reviews]\nhttp: [{redirect: {}}]",
            "spec.http[0].redirect",
            "redirect must specify",
        ),
        ok(
            "direct response",
            VS,
            "hosts: [reviews]\nhttp: [{directResponse: {status: 503, body: {string: unavailable}}}]",
        ),
        bad(
            "direct response status",
            VS,
            "hosts: [reviews]\nhttp: [{directResponse: {status: 99}}]",
            "spec.http[0].directResponse.status",
            "not in range 200-599",
        ),
        bad(
            "rewrite with redirect",
            VS,
            "hosts: [reviews]\nhttp: [{redirect: {uri: /x}, rewrite: {uri: /y}}]",
            "spec.http[0]",
            "both rewrite and redirect",
        ),
        bad(
            "empty rewrite",
            VS,
            "hosts: [reviews]\nhttp: [{rewrite: {}, route: [{destination: {host: a}}]}]",
            "spec.http[0].rewrite",
            "rewrite must specify at least one",
        ),
        bad(
            "uri and regex rewrite",
            VS,
            "hosts: [reviews]\nhttp: [{rewrite: {uri: /a, uriRegexRewrite: {match: '^/x', rewrite: /y}}, route: [{destination: {host: a}}]}]",
            "spec.http[0].rewrite",
            "only contain one of URI or UriRegexRewrite",
        ),
        // VirtualService: retries, timeouts, faults, mirrors, headers
        ok(
            "retries",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error,connect-failure,refused-stream,503,unavailable'}, timeout: 10s}]",
        ),
        bad(
            "retry policy",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: 3, retryOn: '5xx,teapot'}}]",
            "spec.http[0].retries.retryOn",
            "\"teapot\" is not a valid retryOn policy",
        ),
        bad(
            "negative attempts",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: -1}}]",
            "spec.http[0].retries.attempts",
            "attempts cannot be negative",
        ),
        bad(
            "retry settings with zero attempts",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: 0, perTryTimeout: 1s}}]",
            "spec.http[0].retries",
            "attempts are set to 0",
        ),
        bad(
            "timeout below 1ms",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}}], timeout: 100us}]",
            "spec.http[0].timeout",
            "greater than 1ms",
        ),
        bad(
            "timeout syntax",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}}], timeout: 5}]",
            "spec.http[0].timeout",
            "not a duration",
        ),
        ok(
            "fault injection",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}}], fault: {delay: {fixedDelay: 5s, percentage: {value: 10}}, abort: {httpStatus: 503, percentage: {value: 0.5}}}}]",
        ),
        bad(
            "fault without action",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}}], fault: {}}]",
            "spec.http[0].fault",
            "must have an abort and/or a delay",
        ),
        bad(
            "fault percentage",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {httpStatus: 503, percentage: {value: 101}}}}]",
            "spec.http[0].fault.abort.percentage.value",
            "percentage 101",
        ),
        bad(
            "grpc status",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {grpcStatus: BOGUS}}}]",
            "spec.http[0].fault.abort.grpcStatus",
            "gRPC status \"BOGUS\"",
        ),
        bad(
            "mirror percentage",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}}], mirror: {host: b}, mirrorPercentage: {value: 120}}]",
            "spec.http[0].mirrorPercentage.value",
            "max value of 100",
        ),
        bad(
            "header named host",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}}], headers: {response: {set: {host: x}}}}]",
            "spec.http[0].headers.response.set[host]",
            "cannot set Host header",
        ),
        bad(
            "authority twice",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}}], rewrite: {authority: a.com}, headers: {request: {set: {':authority': b.com}}}}]",
            "spec.http[0].headers",
            "authority header cannot be set multiple times",
        ),
        bad(
            "unclosed header variable",
            VS,
            "hosts: [reviews]\nhttp: [{route: [{destination: {host: a}}], headers: {request: {add: {x-a: 'abc%123'}}}}]",
            "spec.http[0].headers.request.add[x-a]",
            "must be closed",
        ),
        // VirtualService: TLS and TCP routes
        ok(
            "TLS route",
            VS,
            "hosts: ['*.bookinfo.com']\ngateways: [istio-system/gw]\ntls: [{match: [{port: 443, sniHosts: [login.bookinfo.com]}], route: [{destination: {host: login.prod.svc.cluster.local}}]}]",
        ),
        bad(
            "SNI outside the hosts",
            VS,
            "hosts: ['*.bookinfo.com']\ngateways: [istio-system/gw]\ntls: [{match: [{sniHosts: [login.other.com]}], route: [{destination: {host: a}}]}]",
            "spec.tls[0].match[0].sniHosts[0]",
            "not a compatible subset",
        ),
        bad(
            "TCP without route",
            VS,
            "hosts: [reviews]\ntcp: [{match: [{port: 27017}]}]",
            "spec.tcp[0].route",
            "TCP route is required",
        ),
        bad(
            "bad subnet",
            VS,
            "hosts: [reviews]\ntcp: [{match: [{destinationSubnets: [10.0.0.0/40]}], route: [{destination: {host: a}}]}]",
            "spec.tcp[0].match[0].destinationSubnets[0]",
            "not a valid CIDR",
        ),
        // DestinationRule
        ok(
            "full traffic policy",
            DR,
            "host: reviews.prod.svc.cluster.local\ntrafficPolicy:\n  loadBalancer: {simple: LEAST_REQUEST}\n  connectionPool: {tcp: {maxConnections: 100, connectTimeout: 30ms}, http: {http2MaxRequests: 1000, maxRequestsPerConnection: 10}}\n  outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}\n  tls: {mode: ISTIO_MUTUAL}\nsubsets: [{name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}]",
        ),
        bad(
            "empty traffic policy",
            DR,
            "host: reviews\ntrafficPolicy: {}",
            "spec.trafficPolicy",
            "traffic policy must have at least one field",
        ),
        bad(
            "duplicate subsets",
            DR,
            "host: reviews\nsubsets: [{name: v1}, {name: v1}]",
            "spec.subsets[1].name",
            "duplicate subset names",
        ),
        bad(
            "subset label",
            DR,
            "host: reviews\nsubsets: [{name: v1, labels: {version: 'a b'}}]",
            "spec.subsets[0].labels[version]",
            "label value",
        ),
        bad(
            "simple and consistent hash",
            DR,
            "host: reviews\ntrafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {httpHeaderName: x-user}}}",
            "spec.trafficPolicy.loadBalancer",
            "only one of simple, consistentHash",
        ),
        bad(
            "unsupported lb",
            DR,
            "host: reviews\ntrafficPolicy: {loadBalancer: {simple: FASTEST}}",
            "spec.trafficPolicy.loadBalancer.simple",
            "Unsupported value: \"FASTEST\"",
        ),
        bad(
            "maglev table not prime",
            DR,
            "host: reviews\ntrafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x, maglev: {tableSize: 1000}}}}",
            "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
            "prime",
        ),
        bad(
            "cookie without name",
            DR,
            "host: reviews\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: '', ttl: 0s}}}}",
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
            "name required",
        ),
        bad(
            "negative max connections",
            DR,
            "host: reviews\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}",
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
            "non-negative",
        ),
        bad(
            "empty connection pool",
            DR,
            "host: reviews\ntrafficPolicy: {connectionPool: {}}",
            "spec.trafficPolicy.connectionPool",
            "at least one field",
        ),
        bad(
            "ejection percent",
            DR,
            "host: reviews\ntrafficPolicy: {outlierDetection: {maxEjectionPercent: 150}}",
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
            "not in range 0..100",
        ),
        bad(
            "local origin without split",
            DR,
            "host: reviews\ntrafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 3}}",
            "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
            "split external local origin errors is set to false",
        ),
        ok(
            "locality distribute",
            DR,
            "host: reviews\ntrafficPolicy:\n  outlierDetection: {consecutive5xxErrors: 5}\n  loadBalancer: {localityLbSetting: {distribute: [{from: us-west/zone1/*, to: {us-west/zone1/*: 80, us-west/zone2/*: 20}}]}}",
        ),
        bad(
            "locality weights not 100",
            DR,
            "host: reviews\ntrafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: a/*, to: {a/*: 80, b/*: 10}}]}}}",
            "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
            "total locality weight 90 != 100",
        ),
        bad(
            "locality weight zero",
            DR,
            "host: reviews\ntrafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: a/*, to: {a/*: 100, b/*: 0}}]}}}",
            "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to[b/*]",
            "range [1, 100]",
        ),
        bad(
            "overlapping localities",
            DR,
            "host: reviews\ntrafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: a/*, to: {a/*: 50, a/z1: 50}}]}}}",
            "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
            "overlap",
        ),
        bad(
            "failover to itself",
            DR,
            "host: reviews\ntrafficPolicy: {outlierDetection: {consecutive5xxErrors: 5}, loadBalancer: {localityLbSetting: {failover: [{from: us-east, to: us-east}]}}}",
            "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
            "different regions",
        ),
        bad(
            "failover with zone",
            DR,
            "host: reviews\ntrafficPolicy: {outlierDetection: {consecutive5xxErrors: 5}, loadBalancer: {localityLbSetting: {failover: [{from: us-east/z1, to: us-west}]}}}",
            "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
            "only specify region",
        ),
        ok(
            "failover priority with custom labels",
            DR,
            "host: reviews\ntrafficPolicy: {outlierDetection: {consecutive5xxErrors: 5}, loadBalancer: {localityLbSetting: {failover: [{from: us-east, to: us-west}], failoverPriority: [topology.istio.io/network]}}}",
        ),
        bad(
            "mutual tls without certificate",
            DR,
            "host: reviews\ntrafficPolicy: {tls: {mode: MUTUAL}}",
            "spec.trafficPolicy.tls.clientCertificate",
            "client certificate required",
        ),
        ok(
            "mutual tls with credential",
            DR,
            "host: reviews\ntrafficPolicy: {tls: {mode: MUTUAL, credentialName: client-credential}}",
        ),
        bad(
            "port level without port",
            DR,
            "host: reviews\ntrafficPolicy: {portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}",
            "spec.trafficPolicy.portLevelSettings[0].port",
            "must have valid port",
        ),
        bad(
            "tunnel and proxy protocol",
            DR,
            "host: reviews\ntrafficPolicy: {tunnel: {targetHost: a.com, targetPort: 80}, proxyProtocol: {version: V1}}",
            "spec.trafficPolicy",
            "must not be set together",
        ),
        bad(
            "selector with exportTo elsewhere",
            DR,
            "host: reviews\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: [other]",
            "spec.exportTo",
            "cannot have exportTo beyond current namespace",
        ),
        bad(
            "exportTo duplicates",
            DR,
            "host: reviews\nexportTo: [default, .]",
            "spec.exportTo[1]",
            "duplicate entries in exportTo: . and current namespace",
        ),
        bad(
            "exportTo duplicates the other way",
            DR,
            "host: reviews\nexportTo: [., default]",
            "spec.exportTo[1]",
            "duplicate entries in exportTo for entry default",
        ),
        bad(
            "unknown field",
            DR,
            "host: reviews\ntrafficPolicy: {loadBalancer: {simpel: RANDOM}}",
            "spec.trafficPolicy.loadBalancer.simpel",
            "did you mean \"simple\"",
        ),
        // Gateway
        ok(
            "expose-services",
            GW,
            "selector: {istio: eastwestgateway}\nservers: [{port: {number: 15443, name: tls, protocol: TLS}, tls: {mode: AUTO_PASSTHROUGH}, hosts: ['*.local']}]",
        ),
        ok(
            "expose-istiod",
            GW,
            "selector: {istio: eastwestgateway}\nservers: [{port: {name: tls-istiod, number: 15012, protocol: tls}, tls: {mode: PASSTHROUGH}, hosts: ['*']}]",
        ),
        ok(
            "https with credential",
            GW,
            "servers: [{port: {number: 443, name: https, protocol: HTTPS}, tls: {mode: SIMPLE, credentialName: bookinfo-cert}, hosts: [bookinfo/bookinfo.example.com]}]",
        ),
        bad(
            "no servers",
            GW,
            "selector: {istio: ingressgateway}",
            "spec.servers",
            "at least one server",
        ),
        bad(
            "TLS port without tls",
            GW,
            "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*']}]",
            "spec.servers[0].tls",
            "must have TLS settings",
        ),
        bad(
            "tls on plain TCP",
            GW,
            "servers: [{port: {number: 31400, name: tcp, protocol: TCP}, tls: {mode: SIMPLE}, hosts: ['*']}]",
            "spec.servers[0].tls",
            "cannot have TLS settings for non HTTPS/TLS ports",
        ),
        bad(
            "simple tls without certificate",
            GW,
            "servers: [{port: {number: 443, name: https, protocol: HTTPS}, tls: {mode: SIMPLE}, hosts: ['*']}]",
            "spec.servers[0].tls.serverCertificate",
            "SIMPLE TLS requires a server certificate",
        ),
        bad(
            "bad protocol",
            GW,
            "servers: [{port: {number: 80, name: http, protocol: QUIC}, hosts: ['*']}]",
            "spec.servers[0].port.protocol",
            "invalid protocol",
        ),
        bad(
            "duplicate port names",
            GW,
            "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}, {port: {number: 81, name: http, protocol: HTTP}, hosts: ['*']}]",
            "spec.servers[1].port.name",
            "must be unique",
        ),
        bad(
            "short host",
            GW,
            "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [bookinfo]}]",
            "spec.servers[0].hosts[0]",
            "short names",
        ),
        bad(
            "port name required",
            GW,
            "servers: [{port: {number: 80, protocol: HTTP}, hosts: ['*']}]",
            "spec.servers[0].port.name",
            "must be set",
        ),
        bad(
            "istio mutual with certificate",
            GW,
            "servers: [{port: {number: 443, name: https, protocol: HTTPS}, tls: {mode: ISTIO_MUTUAL, serverCertificate: /x}, hosts: ['*']}]",
            "spec.servers[0].tls.serverCertificate",
            "ISTIO_MUTUAL TLS cannot have associated server certificate",
        ),
        bad(
            "credentialName and credentialNames",
            GW,
            "servers: [{port: {number: 443, name: https, protocol: HTTPS}, tls: {mode: SIMPLE, credentialName: a, credentialNames: [b]}, hosts: ['*']}]",
            "spec.servers[0].tls",
            "only one of credentialName or credentialNames",
        ),
        // Sidecar
        ok(
            "egress scope",
            SC,
            "egress: [{hosts: ['./*', istio-system/*]}]",
        ),
        ok(
            "explicit listeners without iptables",
            SC,
            "ingress: [{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: '127.0.0.1:8080', captureMode: NONE}]\negress: [{port: {number: 5000, protocol: HTTP, name: http}, bind: 127.0.0.1, captureMode: NONE, hosts: ['*/*']}]",
        ),
        bad(
            "empty sidecar",
            SC,
            "workloadSelector: {labels: {app: a}}",
            "spec",
            "empty configuration",
        ),
        bad(
            "host without namespace",
            SC,
            "egress: [{hosts: [reviews.prod.svc.cluster.local]}]",
            "spec.egress[0].hosts[0]",
            "namespace/dnsName",
        ),
        bad(
            "catch-all not last",
            SC,
            "egress: [{hosts: ['*/*']}, {port: {number: 80, protocol: HTTP, name: http}, hosts: ['*/*']}]",
            "spec.egress[0]",
            "should be the last listener",
        ),
        bad(
            "ingress without port",
            SC,
            "ingress: [{defaultEndpoint: '127.0.0.1:8080'}]",
            "spec.ingress[0].port",
            "port is required",
        ),
        bad(
            "default endpoint host",
            SC,
            "ingress: [{port: {number: 80, protocol: HTTP, name: http}, defaultEndpoint: '10.0.0.1:8080'}]",
            "spec.ingress[0].defaultEndpoint",
            "defaultEndpoint must be of form",
        ),
        bad(
            "egress proxy without ALLOW_ANY",
            SC,
            "outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: proxy.example.com, port: {number: 3128}}}",
            "spec.outboundTrafficPolicy.egressProxy",
            "only with ALLOW_ANY",
        ),
        // ServiceEntry (beyond the corpus)
        bad(
            "multiple hosts with TCP",
            SE,
            "hosts: [a.com, b.com]\nports: [{number: 3306, name: mysql, protocol: TCP}]\nresolution: DNS",
            "spec.hosts",
            "multiple hosts provided with non-HTTP, non-TLS ports",
        ),
        bad(
            "DNS without endpoints needs FQDN hosts",
            SE,
            "hosts: ['*.example.com']\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS",
            "spec.hosts[0]",
            "hosts must be FQDN",
        ),
        bad(
            "STATIC endpoint name",
            SE,
            "hosts: [db.example.com]\nports: [{number: 3306, name: tcp, protocol: TCP}]\nresolution: STATIC\nendpoints: [{address: db.internal}]",
            "spec.endpoints[0].address",
            "not a valid IP address",
        ),
        bad(
            "endpoint port not declared",
            SE,
            "hosts: [db.example.com]\nports: [{number: 3306, name: tcp, protocol: TCP}]\nresolution: STATIC\nendpoints: [{address: 10.0.0.1, ports: {mysql: 3306}}]",
            "spec.endpoints[0].ports[mysql]",
            "not defined by the service entry",
        ),
        ok(
            "seed ServiceEntry with gateway endpoint",
            SE,
            "hosts: [my-service.cluster2.global]\naddresses: [240.0.0.1]\nports: [{number: 80, name: http, protocol: HTTP}, {number: 443, name: https, protocol: HTTPS}]\nlocation: MESH_INTERNAL\nresolution: DNS\nendpoints: [{address: eastwest.cluster2.example.com, ports: {http: 15443, https: 15443}, labels: {cluster: cluster2}}]",
        ),
        // AuthorizationPolicy (beyond the corpus)
        ok(
            "allow by principal and path",
            AP,
            "selector: {matchLabels: {app: httpbin}}\naction: ALLOW\nrules: [{from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}], to: [{operation: {methods: [GET], paths: [/info*]}}], when: [{key: \"request.headers[version]\", values: [v1]}]}]",
        ),
        bad(
            "deny without rules",
            AP,
            "action: DENY",
            "spec.rules",
            "DENY action without `rules`",
        ),
        bad(
            "empty source",
            AP,
            "rules: [{from: [{source: {}}]}]",
            "spec.rules[0].from[0].source",
            "`from.source` must not be empty",
        ),
        bad(
            "bad ip block",
            AP,
            "rules: [{from: [{source: {ipBlocks: [300.1.1.1]}}]}]",
            "spec.rules[0].from[0].source.ipBlocks[0]",
            "not a valid IP",
        ),
        bad(
            "bad port",
            AP,
            "rules: [{to: [{operation: {ports: [http]}}]}]",
            "spec.rules[0].to[0].operation.ports[0]",
            "invalid port",
        ),
        bad(
            "unknown condition key",
            AP,
            "rules: [{when: [{key: request.colour, values: [red]}]}]",
            "spec.rules[0].when[0].values",
            "unknown attribute",
        ),
        bad(
            "condition without values",
            AP,
            "rules: [{when: [{key: source.ip}]}]",
            "spec.rules[0].when[0]",
            "at least one of `values` or `notValues`",
        ),
        bad(
            "provider without CUSTOM",
            AP,
            "action: ALLOW\nprovider: {name: ext-authz}\nrules: [{}]",
            "spec.provider",
            "must not be with non CUSTOM action",
        ),
        bad(
            "selector and targetRef",
            AP,
            "selector: {matchLabels: {app: a}}\ntargetRef: {kind: Service, name: a}\nrules: [{}]",
            "spec",
            "only one of targetRefs or selector",
        ),
    ]
}

fn api_version(kind: &str) -> &'static str {
    match kind {
        AP => "security.istio.io/v1",
        _ => "networking.istio.io/v1",
    }
}

#[test]
fn istio_rules_accept_and_reject_as_istio_does() {
    let mut failures = Vec::new();
    let cases = cases();
    for case in &cases {
        let spec: String = case.spec.lines().map(|l| format!("  {l}\n")).collect();
        let doc = format!(
            "apiVersion: {}\nkind: {}\nmetadata:\n  name: test\n  namespace: default\nspec:\n{spec}",
            api_version(case.kind),
            case.kind
        );
        let report = load_str(&doc, case.name, &LoadOptions::default());
        let d = &report.documents[0];
        let errors: Vec<String> = d
            .diagnostics
            .iter()
            .filter(|x| x.is_error())
            .map(|x| x.issue.to_string())
            .collect();
        match case.expect {
            None => {
                if !matches!(d.outcome, Outcome::Accepted(_)) {
                    failures.push(format!(
                        "{} ({}): should be valid, got {errors:?}",
                        case.name, case.kind
                    ));
                }
            }
            Some((field, text)) => {
                let found = d.diagnostics.iter().any(|x| {
                    x.is_error()
                        && x.issue.path.to_string() == field
                        && x.issue.to_string().contains(text)
                });
                if d.outcome != Outcome::Rejected || !found {
                    failures.push(format!(
                        "{} ({}): should be rejected at {field} with \"{text}\", got {errors:?}",
                        case.name, case.kind
                    ));
                }
            }
        }
    }
    println!("{} Istio rule cases checked", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Istio:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
