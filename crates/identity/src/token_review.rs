//! Kubernetes service-account tokens checked by the API server (a `TokenReview`), as Istio's CA
//! checks them by default: the CA posts the token with the audiences it accepts, and takes the
//! caller's namespace and service account from the answer — only when the API server says the
//! token is authenticated, for one of those audiences, and belongs to a service account. This
//! module builds the request and reads the answer; the round trip is the caller's
//! ([`TokenReviewer`]).

use serde_json::{Value, json};

use crate::service_account::ServiceAccount;

/// The API path reviews are posted to.
pub const PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// Asks an API server about a token.
#[tonic::async_trait]
pub trait TokenReviewer: Send + Sync {
    /// The service account `token` belongs to, or why it is not accepted.
    async fn review(&self, token: &str) -> Result<ServiceAccount, String>;
}

/// The `TokenReview` to post for `token`, for any of `audiences`.
pub fn request(token: &str, audiences: &[String]) -> String {
    json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": audiences},
    })
    .to_string()
}

/// The service account an API server's answer vouches for, for one of `audiences`.
pub fn answer(body: &str, audiences: &[String]) -> Result<ServiceAccount, String> {
    let review: Value = serde_json::from_str(body)
        .map_err(|e| format!("the TokenReview answer is not JSON: {e}"))?;
    let status = &review["status"];
    if let Some(error) = status["error"].as_str().filter(|e| !e.is_empty()) {
        return Err(format!(
            "the API server did not authenticate the token: {error}"
        ));
    }
    if status["authenticated"].as_bool() != Some(true) {
        return Err("the API server did not authenticate the token".into());
    }
    // An API server that does not know audiences leaves them out; one that does names those the
    // token is valid for, which must include one the CA accepts.
    if let Some(given) = status["audiences"].as_array()
        && !given
            .iter()
            .filter_map(Value::as_str)
            .any(|a| audiences.iter().any(|want| want == a))
    {
        return Err(format!(
            "the token is for audiences {given:?}, none of which this CA accepts ({audiences:?})"
        ));
    }
    let user = &status["user"];
    let in_group = user["groups"].as_array().is_some_and(|g| {
        g.iter()
            .any(|g| g.as_str() == Some("system:serviceaccounts"))
    });
    if !in_group {
        return Err("the token is not a service account's (not in system:serviceaccounts)".into());
    }
    let username = user["username"].as_str().unwrap_or_default();
    match username.split(':').collect::<Vec<_>>()[..] {
        ["system", "serviceaccount", namespace, name]
            if !namespace.is_empty() && !name.is_empty() =>
        {
            Ok(ServiceAccount {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
        }
        _ => Err(format!(
            "the TokenReview's username {username:?} is not system:serviceaccount:<namespace>:<name>"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auds() -> Vec<String> {
        vec!["istio-ca".to_string()]
    }

    fn review(status: Value) -> String {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
            .to_string()
    }

    #[test]
    fn the_request_carries_the_token_and_the_accepted_audiences() {
        let r: Value = serde_json::from_str(&request("t0k3n", &auds())).unwrap();
        assert_eq!(r["kind"], "TokenReview");
        assert_eq!(r["spec"]["token"], "t0k3n");
        assert_eq!(r["spec"]["audiences"], json!(["istio-ca"]));
    }

    #[test]
    fn an_authenticated_service_account_is_accepted_and_everything_else_says_why_not() {
        let ok = review(json!({
            "authenticated": true,
            "audiences": ["istio-ca"],
            "user": {"username": "system:serviceaccount:foo:httpbin",
                     "groups": ["system:serviceaccounts", "system:serviceaccounts:foo", "system:authenticated"]}
        }));
        assert_eq!(
            answer(&ok, &auds()),
            Ok(ServiceAccount {
                namespace: "foo".into(),
                name: "httpbin".into()
            })
        );
        // No audiences in the answer (an API server that does not check them): accepted.
        let no_audiences = review(json!({
            "authenticated": true,
            "user": {"username": "system:serviceaccount:foo:httpbin", "groups": ["system:serviceaccounts"]}
        }));
        assert!(answer(&no_audiences, &auds()).is_ok());
        let refused = [
            (
                review(json!({"authenticated": false, "error": "token has expired"})),
                "token has expired",
            ),
            (
                review(json!({"authenticated": false})),
                "did not authenticate",
            ),
            (
                review(json!({"authenticated": true, "audiences": ["api"],
                    "user": {"username": "system:serviceaccount:foo:httpbin", "groups": ["system:serviceaccounts"]}})),
                "none of which",
            ),
            (
                review(json!({"authenticated": true,
                    "user": {"username": "alice", "groups": ["system:authenticated"]}})),
                "not a service account",
            ),
            (
                review(json!({"authenticated": true,
                    "user": {"username": "system:serviceaccount:foo", "groups": ["system:serviceaccounts"]}})),
                "is not system:serviceaccount",
            ),
            ("<html>".to_string(), "not JSON"),
        ];
        for (body, why) in refused {
            let err = answer(&body, &auds()).unwrap_err();
            assert!(err.contains(why), "{body}: {err}");
        }
    }
}
