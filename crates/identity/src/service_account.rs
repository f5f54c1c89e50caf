//! Kubernetes service-account tokens, checked offline. The projected token a pod mounts for the
//! mesh (audience `istio-ca`, as Istio's injection asks for) is a JWT its cluster's
//! service-account issuer signed; with that issuer's public keys (what the API server publishes
//! at `/openid/v1/jwks`) the CA verifies it and reads the namespace and service account from it
//! — as Istio's CA does for callers of a configured JWT issuer (`JWT_RULE`), with no TokenReview
//! round trip to an API server. Verification is pure; the key files are read by the caller.

use std::time::SystemTime;

use serde_json::{Map, Value};
use strait_jwt::jwks::{self, KeySet};

/// The audience Istio's injection asks the projected token for.
pub const DEFAULT_AUDIENCE: &str = "istio-ca";

/// One cluster's service-account issuer, as the CA trusts it.
#[derive(Debug, Clone)]
pub struct ServiceAccountIssuer {
    /// The tokens' `iss` (the API server's `--service-account-issuer`).
    pub issuer: String,
    keys: KeySet,
    /// Accepted audiences (any one must be in the token's `aud`).
    audiences: Vec<String>,
}

/// Who a verified token says the caller runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccountIssuer {
    /// `jwks`: the issuer's key set (JWKS JSON); `audiences` empty means [`DEFAULT_AUDIENCE`].
    pub fn new(issuer: &str, jwks: &str, audiences: &[String]) -> Result<Self, String> {
        if issuer.is_empty() {
            return Err("the issuer is empty".into());
        }
        let keys = jwks::parse(jwks).map_err(|e| format!("the key set: {e}"))?;
        Ok(Self {
            issuer: issuer.to_string(),
            keys,
            audiences: if audiences.is_empty() {
                vec![DEFAULT_AUDIENCE.to_string()]
            } else {
                audiences.to_vec()
            },
        })
    }

    /// The service account `token` was issued to, if this issuer signed it for an accepted
    /// audience and it is in its validity period.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<ServiceAccount, String> {
        let verified = strait_jwt::token::verify(token, &self.keys, &self.audiences, now)
            .map_err(|e| e.to_string())?;
        if verified.issuer != self.issuer {
            return Err(format!(
                "issued by {:?}, not {:?}",
                verified.issuer, self.issuer
            ));
        }
        service_account_of(&verified.claims, &verified.subject).ok_or_else(|| {
            format!(
                "names no service account (neither a \"kubernetes.io\" claim nor a subject system:serviceaccount:<namespace>:<name>; subject {:?})",
                verified.subject
            )
        })
    }
}

/// The first of `issuers` whose `iss` the token names, and what it says about the caller.
pub fn verify(
    issuers: &[ServiceAccountIssuer],
    token: &str,
    now: SystemTime,
) -> Result<ServiceAccount, String> {
    let issuer = strait_jwt::token::issuer_of(token).map_err(|e| e.to_string())?;
    let trusted = issuers
        .iter()
        .find(|i| i.issuer == issuer)
        .ok_or_else(|| format!("issuer {issuer:?} is not a trusted service-account issuer"))?;
    trusted.verify(token, now)
}

/// The namespace and service account of a Kubernetes token: the `kubernetes.io` claim of
/// projected tokens, else the subject `system:serviceaccount:<namespace>:<name>` (which both
/// projected and legacy tokens carry).
fn service_account_of(claims: &Map<String, Value>, subject: &str) -> Option<ServiceAccount> {
    let from_claim = claims.get("kubernetes.io").and_then(|k| {
        Some(ServiceAccount {
            namespace: k.get("namespace")?.as_str()?.to_string(),
            name: k.get("serviceaccount")?.get("name")?.as_str()?.to_string(),
        })
    });
    let from_subject = || {
        let rest = subject.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        Some(ServiceAccount {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    };
    from_claim
        .or_else(from_subject)
        .filter(|sa| !sa.namespace.is_empty() && !sa.name.is_empty())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;
    use strait_jwt::testing::Es256Issuer;

    use super::*;

    const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

    /// A signing key of the cluster's issuer and its JWKS text, as the API server publishes it.
    fn key() -> (Es256Issuer, String) {
        let key = Es256Issuer::generate();
        let jwks = key.jwks(json!({"kid": "sa-1", "alg": "ES256", "use": "sig"}));
        (key, jwks)
    }

    fn sign(key: &Es256Issuer, claims: &Value) -> String {
        key.sign(&json!({"alg": "ES256", "kid": "sa-1"}), claims)
    }

    /// A projected token as the kubelet gets it for a pod.
    fn projected(iss: &str, aud: &str, ns: &str, sa: &str, iat: u64) -> Value {
        json!({
            "aud": [aud], "exp": iat + 3600, "iat": iat, "nbf": iat, "iss": iss,
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
            "kubernetes.io": {"namespace": ns,
                "pod": {"name": "httpbin-7f9c-abcde", "uid": "1b2f"},
                "serviceaccount": {"name": sa, "uid": "9e1c"}}
        })
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_projected_token_names_its_namespace_and_service_account() {
        let (pair, jwks) = key();
        let issuer = ServiceAccountIssuer::new(ISSUER, &jwks, &[]).unwrap();
        let t = 1_700_000_000;
        let token = sign(&pair, &projected(ISSUER, "istio-ca", "foo", "httpbin", t));
        assert_eq!(
            verify(std::slice::from_ref(&issuer), &token, at(t + 10)),
            Ok(ServiceAccount {
                namespace: "foo".into(),
                name: "httpbin".into()
            })
        );
        // A legacy token: the subject alone says who.
        let legacy = sign(
            &pair,
            &json!({"iss": ISSUER, "aud": "istio-ca", "exp": t + 60,
                "sub": "system:serviceaccount:bar:sleep"}),
        );
        assert_eq!(
            issuer
                .verify(&legacy, at(t))
                .map(|sa| sa.namespace + "/" + &sa.name),
            Ok("bar/sleep".into())
        );
    }

    #[test]
    fn tokens_of_other_issuers_audiences_times_or_keys_are_refused() {
        let (pair, jwks) = key();
        let (other_pair, _) = key();
        let issuers = [ServiceAccountIssuer::new(ISSUER, &jwks, &[]).unwrap()];
        let t = 1_700_000_000;
        let refused = |token: String, now: u64| verify(&issuers, &token, at(now)).unwrap_err();
        let e = refused(
            sign(
                &pair,
                &projected("https://elsewhere", "istio-ca", "foo", "a", t),
            ),
            t,
        );
        assert!(e.contains("not a trusted service-account issuer"), "{e}");
        // The API server's own audience, not the mesh's.
        let e = refused(
            sign(
                &pair,
                &projected(ISSUER, "https://kubernetes.default.svc", "foo", "a", t),
            ),
            t,
        );
        assert!(e.contains("Audiences in Jwt are not allowed"), "{e}");
        let e = refused(
            sign(&pair, &projected(ISSUER, "istio-ca", "foo", "a", t)),
            t + 7200,
        );
        assert!(e.contains("expired"), "{e}");
        let e = refused(
            sign(&other_pair, &projected(ISSUER, "istio-ca", "foo", "a", t)),
            t,
        );
        assert!(e.contains("Jwt verification fails"), "{e}");
        let e = refused(
            sign(
                &pair,
                &json!({"iss": ISSUER, "aud": "istio-ca", "exp": t + 60, "sub": "alice"}),
            ),
            t,
        );
        assert!(e.contains("names no service account"), "{e}");
        // Audiences can be configured (a cluster that projects tokens for another audience).
        let custom = ServiceAccountIssuer::new(ISSUER, &jwks, &["mesh".to_string()]).unwrap();
        let token = sign(&pair, &projected(ISSUER, "mesh", "foo", "a", t));
        assert!(custom.verify(&token, at(t)).is_ok());
        assert!(ServiceAccountIssuer::new("", &jwks, &[]).is_err());
        assert!(ServiceAccountIssuer::new(ISSUER, "{}", &[]).is_err());
    }
}
