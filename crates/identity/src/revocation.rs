//! Revoked bootstrap tokens: a list the control plane reads (`--token-revocations`) and
//! re-reads when it changes, so a leaked token stops working without a restart or a new key.
//! A token is revoked by its ID, or every token of a service account issued before a time is
//! (as deleting a Kubernetes service account's secret would). Pure: text in, decisions out.
//!
//! The file, one entry per line (`#` starts a comment):
//!
//! ```text
//! token 3q2-7wAAAAAAAAAA                       # one token, by its ID
//! serviceaccount sample/sleep 1796500000       # sleep's tokens issued before then (Unix s)
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::token::Claims;

/// What is revoked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    ids: BTreeSet<String>,
    /// `namespace/service-account` → tokens issued before this (Unix seconds) are revoked.
    accounts: BTreeMap<String, u64>,
}

impl Revocations {
    /// Parses a revocation list; `file` names it in errors, which give the line.
    pub fn parse(text: &str, file: &str) -> Result<Revocations, String> {
        let mut out = Revocations::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = |what: &str| format!("{file}:{}: {what}: {raw:?}", i + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["token", id] => {
                    out.ids.insert((*id).to_string());
                }
                ["serviceaccount", account, before] => {
                    let Some((ns, sa)) = account
                        .split_once('/')
                        .filter(|(n, s)| !n.is_empty() && !s.is_empty() && !s.contains('/'))
                    else {
                        return Err(at("the service account must be written <namespace>/<name>"));
                    };
                    let before: u64 = before.parse().map_err(|_| {
                        at("the time must be whole seconds since the Unix epoch (`date +%s`)")
                    })?;
                    let e = out.accounts.entry(format!("{ns}/{sa}")).or_insert(before);
                    *e = (*e).max(before);
                }
                _ => {
                    return Err(at(
                        "write `token <id>` or `serviceaccount <namespace>/<name> <unix-seconds>`",
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Why a token with `claims` is revoked, if it is.
    pub fn check(&self, claims: &Claims) -> Option<String> {
        if !claims.id.is_empty() && self.ids.contains(&claims.id) {
            return Some(format!("token {} is revoked", claims.id));
        }
        let account = format!("{}/{}", claims.namespace, claims.service_account);
        match self.accounts.get(&account) {
            Some(before) if claims.issued_at < *before => Some(format!(
                "the tokens of {account} issued before {before} (Unix seconds) are revoked"
            )),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len() + self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(ns: &str, sa: &str, id: &str, issued_at: u64) -> Claims {
        Claims {
            namespace: ns.into(),
            service_account: sa.into(),
            cluster: String::new(),
            exp: u64::MAX,
            id: id.into(),
            issued_at,
        }
    }

    #[test]
    fn tokens_are_revoked_by_id_or_by_account_and_issue_time() {
        let r = Revocations::parse(
            "# leaked on 2026-12-05\ntoken abc\n\nserviceaccount sample/sleep 1000  # rotated\nserviceaccount sample/sleep 900\n",
            "revoked.txt",
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert!(
            r.check(&claims("a", "b", "abc", 5))
                .unwrap()
                .contains("abc")
        );
        assert_eq!(r.check(&claims("a", "b", "abd", 5)), None);
        assert!(r.check(&claims("sample", "sleep", "x", 999)).is_some());
        assert_eq!(r.check(&claims("sample", "sleep", "x", 1000)), None);
        assert_eq!(r.check(&claims("sample", "other", "x", 1)), None);
        // A token from before IDs existed (no ID, issued "at 0") falls to its account's entry.
        assert!(r.check(&claims("sample", "sleep", "", 0)).is_some());
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let e = Revocations::parse("token a\nserviceaccount sleep 10\n", "r.txt").unwrap_err();
        assert!(e.starts_with("r.txt:2: the service account"), "{e}");
        let e = Revocations::parse("serviceaccount a/b yesterday", "r.txt").unwrap_err();
        assert!(e.contains("r.txt:1:") && e.contains("date +%s"), "{e}");
        let e = Revocations::parse("revoke everything", "r.txt").unwrap_err();
        assert!(e.contains("write `token <id>`"), "{e}");
    }
}
