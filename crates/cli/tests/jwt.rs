//! RequestAuthentication end to end: `httpbin` in `foo` accepts RS256 tokens of one issuer
//! (its key set inline, as users write it), and an AuthorizationPolicy asks for a request
//! principal, and a group claim for `/admin`. Tokens are made and signed by `openssl` — an
//! implementation independent of Strait's — and sent by curl through `sleep`'s sidecar (mesh
//! mTLS) to httpbin's: good tokens pass (from the `Authorization` header or the `access_token`
//! query parameter), the token is taken out of the request and a claim passed on as a header;
//! expired, forged, wrong-audience and unknown-issuer tokens are refused with 401 and Envoy's
//! reasons; a request without a token is left to authorization (403 where a principal is
//! required, 200 where not). Then through an ingress gateway with its own RequestAuthentication
//! and AuthorizationPolicy: it refuses by itself (401 and 403 in its access log, with Envoy's
//! response code details) and lets a good token through to httpbin's sidecar, which checks it
//! again (`forwardOriginalToken`). A second gateway's rule says `presence: REQUIRED`: there a
//! request without a token is refused with 401 "Jwt is missing" where the first gateway lets
//! authorization decide. Last, Kubernetes service-account tokens (signed by openssl as a
//! cluster's issuer would, or vouched for by a stand-in API server's TokenReview) obtain a
//! workload certificate from the CA.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::*;

const HTTPBIN: &str = "127.1.42.1";
const SLEEP: &str = "127.1.42.100";
const ISSUER: &str = "testing@secure.istio.io";

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// An RSA key made by openssl, and its public half as a JWKS.
fn rsa_key(path: &Path) -> String {
    let (ok, _, err) = run(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            path.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = run(
        "openssl",
        &["rsa", "-in", path.to_str().unwrap(), "-noout", "-modulus"],
    );
    assert!(ok, "{err}");
    let modulus = hex(out.trim().strip_prefix("Modulus=").unwrap());
    format!(
        r#"{{"keys":[{{"kty":"RSA","kid":"test","alg":"RS256","use":"sig","n":"{}","e":"AQAB"}}]}}"#,
        b64url(&modulus)
    )
}

/// A compact RS256 JWT with `claims`, signed by openssl with the key at `key`.
fn token(key: &Path, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "test"});
    let signed = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", key.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signed.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    format!("{signed}.{}", b64url(&out.stdout))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn request_authentication_verifies_tokens_and_authorization_uses_their_claims() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ca = MeshCa::create(t);
    let key = t.join("issuer.pem");
    let jwks = rsa_key(&key);
    let other_key = t.join("other.pem");
    rsa_key(&other_key);

    let app_port = free_port();
    let _app = http_backend("httpbin", "127.0.0.1", app_port, None);
    let ingress_port = free_port();
    let strict_port = free_port();
    let dir = t.join("config");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("mesh.yaml"),
        format!(
            "{}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: sleep, namespace: foo}}
spec:
  workloadSelector: {{labels: {{app: sleep}}}}
  egress:
  - port: {{number: 8000, protocol: HTTP, name: http}}
    bind: {SLEEP}
    captureMode: NONE
    hosts: [\"foo/*\"]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: httpbin, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwks: '{jwks}'
    audiences: [httpbin.foo]
    outputClaimToHeaders: [{{header: x-jwt-team, claim: team}}]
    spaceDelimitedClaims: [roles]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-jwt, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  rules:
  - from: [{{source: {{requestPrincipals: [\"{ISSUER}/*\"]}}}}]
    to: [{{operation: {{paths: [/headers]}}}}]
  - from: [{{source: {{requestPrincipals: [\"*\"]}}}}]
    to: [{{operation: {{paths: [/admin]}}}}]
    when: [{{key: \"request.auth.claims[groups]\", values: [admin]}}]
  - to: [{{operation: {{paths: [/healthz, /public]}}}}]
  - to: [{{operation: {{paths: [/write]}}}}]
    when:
    - {{key: \"request.auth.claims[scope]\", values: [write]}}
    - {{key: \"request.auth.claims[roles]\", values: [editor]}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: public, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {ingress_port}, name: http, protocol: HTTP}}
    hosts: [httpbin.example.com]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: strict, namespace: istio-system}}
spec:
  selector: {{istio: strictgateway}}
  servers:
  - port: {{number: {strict_port}, name: http, protocol: HTTP}}
    hosts: [httpbin.example.com]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: strict, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: strictgateway}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwks: '{jwks}'
    presence: REQUIRED
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin-public, namespace: foo}}
spec:
  hosts: [httpbin.example.com]
  gateways: [istio-system/public, istio-system/strict]
  http:
  - route: [{{destination: {{host: httpbin.foo.svc.cluster.local, port: {{number: 8000}}}}}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: ingress, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwks: '{jwks}'
    forwardOriginalToken: true
    fromHeaders: [{{name: Authorization, prefix: \"Bearer \"}}]
    fromCookies: [session]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ingress, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  rules:
  - from: [{{source: {{requestPrincipals: [\"*\"]}}}}]
  - to: [{{operation: {{paths: [/healthz]}}}}]
",
            bound_httpbin(HTTPBIN, &[(8000, "HTTP", app_port)])
        ),
    )
    .unwrap();
    let cp = ControlPlane::start(&dir, &strs(&ca.control_plane_args()));
    let sidecar = |ip: &str, pod: &str, sa: &str, app: &str| {
        StraitProxy::start_with(
            &cp,
            t,
            &format!("sidecar~{ip}~{pod}.foo~foo.svc.cluster.local"),
            pod,
            &format!("app={app}"),
            &strs(&ca.proxy_args("foo", sa, "3600")),
        )
    };
    let httpbin = sidecar(HTTPBIN, "httpbin-0", "httpbin", "httpbin");
    let sleep = sidecar(SLEEP, "sleep-0", "sleep", "sleep");
    let gateway = |ip: &str, name: &str, label: &str| {
        StraitProxy::start_with(
            &cp,
            t,
            &format!("router~{ip}~{name}-0.istio-system~istio-system.svc.cluster.local"),
            &format!("{name}-0"),
            &format!("istio={label}"),
            &strs(&ca.proxy_args("istio-system", name, "3600")),
        )
    };
    let ingress = gateway("127.1.42.200", "ingress", "ingressgateway");
    let strict = gateway("127.1.42.201", "strict", "strictgateway");
    for p in [&httpbin, &sleep, &ingress, &strict] {
        p.wait_for_certificate();
    }
    wait_for(Duration::from_secs(20), "the listeners", || {
        TcpStream::connect((HTTPBIN, 8000)).ok()?;
        TcpStream::connect(("127.0.0.1", ingress_port)).ok()?;
        TcpStream::connect(("127.0.0.1", strict_port)).ok()?;
        TcpStream::connect((SLEEP, 8000)).ok()
    });

    let t0 = now();
    let claims = |sub: &str, extra: serde_json::Value| {
        let mut c = serde_json::json!({"iss": ISSUER, "sub": sub, "aud": "httpbin.foo",
            "iat": t0, "exp": t0 + 3600, "team": "blue", "groups": ["users"]});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let good = token(&key, &claims("alice", serde_json::json!({})));
    let admin = token(
        &key,
        &claims("root", serde_json::json!({"groups": ["users", "admin"]})),
    );
    let expired = token(
        &key,
        &claims(
            "alice",
            serde_json::json!({"iat": t0 - 7200, "exp": t0 - 3600}),
        ),
    );
    let elsewhere = token(
        &key,
        &claims("alice", serde_json::json!({"aud": "someone-else"})),
    );
    let forged = token(&other_key, &claims("alice", serde_json::json!({})));
    // `scope` is always a space-separated list; `roles` is one because the rule says so.
    let writer = token(
        &key,
        &claims(
            "w",
            serde_json::json!({"scope": "read write", "roles": "viewer editor"}),
        ),
    );
    let reader = token(
        &key,
        &claims(
            "r",
            serde_json::json!({"scope": "read", "roles": "viewer editor"}),
        ),
    );
    let stranger = token(
        &key,
        &claims(
            "alice",
            serde_json::json!({"iss": "https://unknown.example"}),
        ),
    );

    // (path, token, expected status, expected body text)
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let table: Vec<(String, Option<String>, u16, &str)> = vec![
        ("/healthz".into(), None, 200, ""),
        ("/headers".into(), None, 403, "RBAC: access denied"),
        ("/headers".into(), Some(bearer(&good)), 200, ""),
        (format!("/headers?access_token={good}"), None, 200, ""),
        (
            "/admin".into(),
            Some(bearer(&good)),
            403,
            "RBAC: access denied",
        ),
        ("/admin".into(), Some(bearer(&admin)), 200, ""),
        ("/write".into(), Some(bearer(&writer)), 200, ""),
        (
            "/write".into(),
            Some(bearer(&reader)),
            403,
            "RBAC: access denied",
        ),
        (
            "/healthz".into(),
            Some(bearer(&expired)),
            401,
            "Jwt is expired",
        ),
        (
            "/headers".into(),
            Some(bearer(&elsewhere)),
            401,
            "Audiences in Jwt are not allowed",
        ),
        (
            "/headers".into(),
            Some(bearer(&forged)),
            401,
            "Jwt verification fails",
        ),
        (
            "/headers".into(),
            Some(bearer(&stranger)),
            401,
            "Jwt issuer is not configured",
        ),
        (
            "/headers".into(),
            Some(bearer("not.a-token")),
            401,
            "Jwt is not in the form",
        ),
    ];
    for (path, header, want, text) in &table {
        let url = format!("http://{SLEEP}:8000{path}");
        let mut args = vec![url.as_str(), "-H", "Host: httpbin.foo"];
        if let Some(h) = header {
            args.extend(["-H", h.as_str()]);
        }
        let (code, body) = curl(&args);
        assert_eq!(
            code,
            *want,
            "{path} with {header:?}: {body}\n{}",
            httpbin.log()
        );
        assert!(body.contains(text), "{path}: {body}");
    }

    // What the application saw of a verified request: no token, the claim as a header.
    let (code, body) = curl(&[
        &format!("http://{SLEEP}:8000/headers"),
        "-H",
        "Host: httpbin.foo",
        "-H",
        &bearer(&good),
    ]);
    assert_eq!(code, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    let headers = seen["headers"].as_object().unwrap();
    let names: Vec<String> = headers.keys().map(|k| k.to_ascii_lowercase()).collect();
    assert!(!names.contains(&"authorization".to_string()), "{body}");
    let team = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-jwt-team"))
        .map(|(_, v)| v.clone());
    assert_eq!(team, Some(serde_json::json!("blue")), "{body}");

    // The ingress gateway: its own RequestAuthentication (token forwarded, so httpbin's sidecar
    // checks it again) and AuthorizationPolicy (any token, or /healthz without one).
    let through = |port: u16, path: &str, header: Option<String>| {
        let url = format!("http://127.0.0.1:{port}{path}");
        let mut args = vec![url.clone(), "-H".into(), "Host: httpbin.example.com".into()];
        if let Some(h) = header {
            args.extend(["-H".into(), h]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args)
    };
    let through_gateway = |path: &str, header: Option<String>| through(ingress_port, path, header);
    let (code, body) = through_gateway("/healthz", None);
    assert_eq!(code, 200, "{body}\n{}", ingress.log());
    let (code, body) = through_gateway("/headers", Some(bearer(&good)));
    assert_eq!(code, 200, "{body}\n{}", ingress.log());
    assert!(
        body.contains("x-jwt-team"),
        "httpbin's sidecar verified it too: {body}"
    );
    let (code, body) = through_gateway("/headers", Some(bearer(&expired)));
    assert_eq!((code, body.as_str()), (401, "Jwt is expired"));
    let (code, body) = through_gateway("/status/200", None);
    assert_eq!((code, body.as_str()), (403, "RBAC: access denied"));
    // The gateway also takes the token from a cookie (`fromCookies`).
    let (code, body) = through_gateway(
        "/public",
        Some(format!("Cookie: theme=dark; session={good}")),
    );
    assert_eq!(code, 200, "{body}\n{}", ingress.log());
    let (code, _) = through_gateway("/public", Some("Cookie: session=not.a-token".into()));
    assert_eq!(code, 401);
    // Those refusals were the gateway's own: the request never reached httpbin.
    let log = ingress.access_log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"response_code\":401") || l.contains("\"response_code\":403"))
        .collect();
    assert_eq!(refused.len(), 3, "{log}");
    for details in [
        "rbac_access_denied_matched_policy[none]",
        "jwt_authn_access_denied{Jwt_is_expired}",
    ] {
        assert!(
            refused.iter().any(|l| l.contains(details)),
            "{details}: {log}"
        );
    }

    // `presence: REQUIRED`: the strict gateway refuses a request without a token by itself
    // (the first gateway, whose rule leaves it optional, let /healthz through above), takes a
    // good one (not forwarded, so /public, which httpbin serves without a token) and refuses a
    // bad one.
    let (code, body) = through(strict_port, "/public", None);
    assert_eq!(
        (code, body.as_str()),
        (401, "Jwt is missing"),
        "{}",
        strict.log()
    );
    let (code, body) = through(strict_port, "/healthz", None);
    assert_eq!((code, body.as_str()), (401, "Jwt is missing"));
    let (code, body) = through(strict_port, "/public", Some(bearer(&good)));
    assert_eq!(code, 200, "{body}\n{}", strict.log());
    let (code, body) = through(strict_port, "/public", Some(bearer(&expired)));
    assert_eq!((code, body.as_str()), (401, "Jwt is expired"));
    let log = strict.access_log();
    assert!(
        log.contains("jwt_authn_access_denied{Jwt_is_missing}"),
        "{log}"
    );
    drop(sleep);
}

/// A Kubernetes service-account token (the projected token a pod mounts for the mesh, signed by
/// openssl as the cluster's issuer would) obtains the pod's workload certificate from a control
/// plane that trusts the issuer's keys (`--service-account-issuer`); the sidecar then takes xDS
/// over mTLS and serves. Tokens of another service account than the one asked for, signed by
/// another key, or for the API server's audience are refused with the reason in the log. When the
/// issuer's key rotates, the control plane follows the key set file; a broken key set is refused
/// and the last good one stays.
#[test]
fn a_kubernetes_service_account_token_obtains_the_workload_certificate() {
    const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
    // Not httpbin's address of the other test, which runs alongside.
    const POD: &str = "127.1.43.1";
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ca = MeshCa::create(t);
    let key = t.join("sa-issuer.pem");
    let jwks = t.join("sa-jwks.json");
    std::fs::write(&jwks, rsa_key(&key)).unwrap();
    let other_key = t.join("other.pem");
    let other_jwks = rsa_key(&other_key);
    let (_app, cp) = httpbin_with_issuer(
        t,
        &ca,
        POD,
        &[
            "--service-account-issuer".to_string(),
            format!("{SA_ISSUER}={}", jwks.display()),
        ],
    );

    let t0 = now();
    let projected = |aud: &str, sa: &str| {
        serde_json::json!({
            "aud": [aud], "iat": t0, "nbf": t0, "exp": t0 + 3600, "iss": SA_ISSUER,
            "sub": format!("system:serviceaccount:foo:{sa}"),
            "kubernetes.io": {"namespace": "foo",
                "pod": {"name": "httpbin-0", "uid": "5f0c2d9e"},
                "serviceaccount": {"name": sa, "uid": "0d1f7a44"}}
        })
    };
    let spawn = |pod: &str, token: String| sa_token_sidecar(&cp, &ca, t, POD, pod, &token);
    // A sidecar started with `token`, once it holds its certificate.
    let certified = |pod: &str, token: String| {
        let p = spawn(pod, token);
        p.wait_for_certificate();
        p
    };
    let good = certified("httpbin-0", token(&key, &projected("istio-ca", "httpbin")));
    assert!(
        good.log()
            .contains("spiffe://cluster.local/ns/foo/sa/httpbin"),
        "{}",
        good.log()
    );
    // With it, xDS over mTLS: the sidecar's listener comes up and serves.
    wait_for(Duration::from_secs(20), "the listener", || {
        TcpStream::connect((POD, 8000)).ok()
    });

    for (pod, token, reason) in [
        (
            "sleep-0",
            token(&key, &projected("istio-ca", "sleep")),
            "PermissionDenied",
        ),
        (
            "forged-0",
            token(&other_key, &projected("istio-ca", "httpbin")),
            "Jwt verification fails",
        ),
        (
            "apiserver-0",
            token(
                &key,
                &projected("https://kubernetes.default.svc", "httpbin"),
            ),
            "Audiences in Jwt are not allowed",
        ),
    ] {
        let refused = spawn(pod, token);
        let line = refusal(&refused);
        assert!(line.contains(reason), "{pod}: {line}");
        assert!(!refused.log().contains("workload certificate issued"));
    }

    // The issuer's key rotates: the control plane follows the key set file without a restart,
    // and a token signed with the new key is taken.
    drop(good);
    std::fs::write(&jwks, &other_jwks).unwrap();
    wait_for(Duration::from_secs(20), "the key sets reloaded", || {
        cp.log()
            .contains("service-account issuers' key sets reloaded")
            .then_some(())
    });
    let rotated = certified(
        "rotated-0",
        token(&other_key, &projected("istio-ca", "httpbin")),
    );
    // A key set that cannot be used is refused and the last good one stays.
    std::fs::write(&jwks, "{\"keys\": 7}").unwrap();
    wait_for(Duration::from_secs(20), "the refusal", || {
        cp.log()
            .contains("previous key sets stay in effect")
            .then_some(())
    });
    certified(
        "after-0",
        token(&other_key, &projected("istio-ca", "httpbin")),
    );
    drop(rotated);
}

/// httpbin's app, and a control plane with the mesh CA and `issuer_args` that has httpbin's
/// sidecar bind `pod`:8000.
fn httpbin_with_issuer(
    dir: &Path,
    ca: &MeshCa,
    pod: &str,
    issuer_args: &[String],
) -> (Proc, ControlPlane) {
    let app_port = free_port();
    let app = http_backend("httpbin", "127.0.0.1", app_port, None);
    let config = dir.join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(
        config.join("mesh.yaml"),
        bound_httpbin(pod, &[(8000, "HTTP", app_port)]),
    )
    .unwrap();
    let mut cp_args = ca.control_plane_args();
    cp_args.extend(issuer_args.iter().cloned());
    (app, ControlPlane::start(&config, &strs(&cp_args)))
}

/// A sidecar of `foo/httpbin` at `ip` that presents `token` (a service-account token) to the
/// CA, not yet waited for.
fn sa_token_sidecar(
    cp: &ControlPlane,
    ca: &MeshCa,
    dir: &Path,
    ip: &str,
    pod: &str,
    token: &str,
) -> StraitProxy {
    let file = dir.join(format!("{pod}.sa-token"));
    std::fs::write(&file, token).unwrap();
    StraitProxy::spawn_with(
        cp,
        dir,
        &format!("sidecar~{ip}~{pod}.foo~foo.svc.cluster.local"),
        pod,
        "app=httpbin",
        &[
            "--ca-root",
            ca.root.to_str().unwrap(),
            "--token",
            file.to_str().unwrap(),
            "--service-account",
            "httpbin",
            "--cert-ttl",
            "3600",
        ],
    )
}

/// A service-account issuer given by its URL alone: the control plane reads its OpenID
/// discovery document, fetches the key set it names, and fetches it again every
/// `--service-account-keys-refresh`, so a rotated key is followed; while the key server is
/// down, the last key set stays in effect.
#[test]
fn a_service_account_issuers_keys_are_discovered_and_followed() {
    // Not the addresses of the other tests, which run alongside.
    const POD: &str = "127.1.44.1";
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ca = MeshCa::create(t);
    let key = t.join("sa-issuer.pem");
    let new_key = t.join("sa-issuer-new.pem");
    let new_jwks = rsa_key(&new_key);
    let www = t.join("www");
    std::fs::create_dir_all(www.join(".well-known")).unwrap();
    std::fs::create_dir_all(www.join("openid/v1")).unwrap();
    std::fs::write(www.join("openid/v1/jwks"), rsa_key(&key)).unwrap();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    std::fs::write(
        www.join(".well-known/openid-configuration"),
        serde_json::json!({"issuer": issuer, "jwks_uri": format!("{issuer}/openid/v1/jwks")})
            .to_string(),
    )
    .unwrap();
    let serve_keys = || {
        python_server(
            Command::new(python())
                .args(["-m", "http.server", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--directory"])
                .arg(&www),
            port,
            "the issuer's key server",
        )
    };
    let key_server = serve_keys();

    let (_app, cp) = httpbin_with_issuer(
        t,
        &ca,
        POD,
        &[
            "--service-account-issuer".to_string(),
            issuer.clone(),
            "--service-account-keys-refresh".to_string(),
            "1".to_string(),
        ],
    );
    let t0 = now();
    let projected = serde_json::json!({
        "aud": ["istio-ca"], "iat": t0, "nbf": t0, "exp": t0 + 3600, "iss": issuer,
        "sub": "system:serviceaccount:foo:httpbin",
    });
    let certified = |pod: &str, signer: &Path| {
        let p = sa_token_sidecar(&cp, &ca, t, POD, pod, &token(signer, &projected));
        p.wait_for_certificate();
        assert!(
            p.log().contains("spiffe://cluster.local/ns/foo/sa/httpbin"),
            "{}",
            p.log()
        );
        p
    };
    drop(certified("httpbin-0", &key));

    // The issuer rotates its key: the next fetch takes the new key set.
    std::fs::write(www.join("openid/v1/jwks"), &new_jwks).unwrap();
    wait_for(Duration::from_secs(20), "the new key set", || {
        (cp.log()
            .matches("fetched the service-account issuer's key set")
            .count()
            >= 2)
            .then_some(())
    });
    drop(certified("rotated-0", &new_key));

    // The key server goes away: fetches fail, the last key set stays in effect.
    drop(key_server);
    wait_for(Duration::from_secs(20), "a failed fetch", || {
        cp.log()
            .contains("cannot fetch the service-account issuer's key set")
            .then_some(())
    });
    drop(certified("later-0", &new_key));
}

/// A stand-in for the Kubernetes API server's TokenReview (Python's `http.server` over TLS):
/// it answers only the control plane's own bearer token, for the `istio-ca` audience, and
/// vouches for `good-token` as `foo/httpbin`; every request body is appended to `log`.
const FAKE_API_SERVER: &str = r#"
import http.server, json, ssl, sys
port, cert, key, own, log = sys.argv[1:6]
class Review(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(log, "a") as f:
            f.write(body.decode() + "\n")
        if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
            return self.answer(404, {"kind": "Status", "message": "the server could not find the requested resource"})
        if self.headers.get("Authorization") != "Bearer " + own:
            return self.answer(401, {"kind": "Status", "message": "Unauthorized"})
        spec = json.loads(body)["spec"]
        if spec["token"] == "good-token" and "istio-ca" in spec.get("audiences", []):
            status = {"authenticated": True, "audiences": ["istio-ca"],
                      "user": {"username": "system:serviceaccount:foo:httpbin",
                               "groups": ["system:serviceaccounts", "system:serviceaccounts:foo", "system:authenticated"]}}
        else:
            status = {"authenticated": False, "error": "[invalid bearer token, service account token has been invalidated]"}
        self.answer(201, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
    def answer(self, code, doc):
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(port)), Review)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

/// With `--token-review-server`, a service-account token no issuer's keys verify is posted to
/// the API server as a TokenReview (the control plane's own token as the credential, the CA's
/// audience in the spec), and the workload is certified as the service account the answer
/// names; a token the API server does not vouch for is refused with its reason.
#[test]
fn a_service_account_token_the_api_server_vouches_for_obtains_the_workload_certificate() {
    const POD: &str = "127.1.45.1";
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ca = MeshCa::create(t);
    let (cert, key) = (t.join("apiserver.pem"), t.join("apiserver-key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=kube-apiserver"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        made.success(),
        "openssl could not make the API server's certificate"
    );
    let own_token = t.join("istiod-token");
    std::fs::write(&own_token, "istiod-own-token\n").unwrap();
    let script = t.join("apiserver.py");
    std::fs::write(&script, FAKE_API_SERVER).unwrap();
    let log = t.join("reviews.log");
    let port = free_port();
    let _api_server = python_server(
        Command::new(python())
            .arg(&script)
            .arg(port.to_string())
            .args([&cert, &key])
            .arg("istiod-own-token")
            .arg(&log),
        port,
        "the fake API server",
    );
    let (_app, cp) = httpbin_with_issuer(
        t,
        &ca,
        POD,
        &[
            "--token-review-server".to_string(),
            format!("https://127.0.0.1:{port}"),
            "--token-review-token".to_string(),
            own_token.display().to_string(),
            "--token-review-ca".to_string(),
            cert.display().to_string(),
        ],
    );
    let good = sa_token_sidecar(&cp, &ca, t, POD, "httpbin-0", "good-token");
    good.wait_for_certificate();
    assert!(
        good.log()
            .contains("spiffe://cluster.local/ns/foo/sa/httpbin"),
        "{}",
        good.log()
    );
    let reviews = std::fs::read_to_string(&log).unwrap();
    let first: serde_json::Value = serde_json::from_str(reviews.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "TokenReview");
    assert_eq!(first["spec"]["token"], "good-token");
    assert_eq!(first["spec"]["audiences"], serde_json::json!(["istio-ca"]));
    drop(good);

    let refused = sa_token_sidecar(&cp, &ca, t, POD, "stolen-0", "stolen-token");
    let line = refusal(&refused);
    assert!(
        line.contains("service account token has been invalidated"),
        "{line}"
    );
    assert!(!refused.log().contains("workload certificate issued"));
}

/// Starts a Python server (`command`) and waits until it takes connections on `port`.
fn python_server(command: &mut Command, port: u16, what: &str) -> Proc {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Proc {
        child,
        what: what.into(),
    };
    wait_for(Duration::from_secs(20), what, || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    server
}

/// The sidecar's log line saying the CA refused it (waited for).
fn refusal(sidecar: &StraitProxy) -> String {
    wait_for(Duration::from_secs(20), "the refusal", || {
        sidecar
            .log()
            .lines()
            .find(|l| l.contains("cannot obtain a workload certificate"))
            .map(str::to_string)
    })
}
