//! The secrets a proxy may be sent (SDS, Istio's `credentialName`): the Kubernetes Secrets of
//! its own namespace, as Istio's secret generator reads them. A Secret holding a certificate
//! and its key (`tls.crt` and `tls.key`, or the generic `cert` and `key`) is
//! `kubernetes://<name>`; CA certificates (`ca.crt` or `cacert`) are
//! `kubernetes://<name>-cacert`, taken from a Secret named `<name>-cacert` when there is one,
//! else from the Secret `<name>` itself.

use std::collections::{BTreeMap, BTreeSet};

use strait_config::ConfigSet;
use strait_config::kube::{CA_SECRET_SUFFIX, SecretData, roots_secret};
use strait_xds::secret::{self as sds, Secret, SecretContent};

/// Every secret of `namespace` that a proxy there may ask for, by SDS name.
pub fn of_namespace(config: &ConfigSet, namespace: &str) -> Vec<Secret> {
    let here: BTreeMap<&str, &SecretData> = config
        .secrets
        .iter()
        .filter(|s| s.meta.namespace == namespace)
        .map(|s| (s.meta.name.as_str(), &s.spec))
        .collect();
    let mut out: BTreeMap<String, SecretContent> = BTreeMap::new();
    for (name, data) in &here {
        if let Some((certificate_chain, private_key)) = data.certificate() {
            out.insert(
                sds::certificate_name(name),
                SecretContent::Certificate {
                    certificate_chain,
                    private_key,
                },
            );
        }
    }
    // Every credential a Secret's name implies (`<name>-cacert` implies `<name>`), with its CA
    // certificates where Istio looks for them.
    let credentials: BTreeSet<&str> = here
        .keys()
        .map(|n| n.strip_suffix(CA_SECRET_SUFFIX).unwrap_or(n))
        .collect();
    for credential in credentials {
        let find = |n: &str| here.get(n).copied();
        if let Some(trusted_ca) = roots_secret(find, credential).and_then(|s| s.ca_certificates()) {
            out.insert(
                sds::roots_name(credential),
                SecretContent::Roots { trusted_ca },
            );
        }
    }
    out.into_iter()
        .map(|(name, content)| Secret { name, content })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(yaml: &str) -> ConfigSet {
        use strait_config::{LoadOptions, load_str};
        let set = ConfigSet::from_resources(
            load_str(yaml, "secrets.yaml", &LoadOptions::default()).into_resources(),
        );
        assert_eq!(set.secrets.len(), yaml.matches("kind: Secret").count());
        set
    }

    #[test]
    fn certificates_and_their_roots_are_named_as_istio_names_them() {
        let config = set("apiVersion: v1
kind: Secret
metadata: {name: web, namespace: istio-system}
type: kubernetes.io/tls
stringData: {tls.crt: CHAIN, tls.key: KEY, ca.crt: OWN-ROOTS}
---
apiVersion: v1
kind: Secret
metadata: {name: web-cacert, namespace: istio-system}
data: {cacert: U0VQQVJBVEUtUk9PVFM=}
---
apiVersion: v1
kind: Secret
metadata: {name: api, namespace: istio-system}
stringData: {cert: API-CHAIN, key: API-KEY, ca.crt: API-ROOTS}
---
apiVersion: v1
kind: Secret
metadata: {name: elsewhere, namespace: other}
stringData: {tls.crt: X, tls.key: Z}
---
apiVersion: v1
kind: Secret
metadata: {name: opaque, namespace: istio-system}
stringData: {password: hunter2}
");
        let got: Vec<(String, String)> = of_namespace(&config, "istio-system")
            .into_iter()
            .map(|s| {
                let shown = match s.content {
                    SecretContent::Certificate {
                        certificate_chain,
                        private_key,
                    } => format!(
                        "{} {}",
                        String::from_utf8_lossy(&certificate_chain),
                        String::from_utf8_lossy(&private_key)
                    ),
                    SecretContent::Roots { trusted_ca } => {
                        String::from_utf8_lossy(&trusted_ca).into_owned()
                    }
                };
                (s.name, shown)
            })
            .collect();
        let want = [
            ("kubernetes://api", "API-CHAIN API-KEY"),
            ("kubernetes://api-cacert", "API-ROOTS"),
            ("kubernetes://web", "CHAIN KEY"),
            // The Secret named for the roots wins over web's own ca.crt.
            ("kubernetes://web-cacert", "SEPARATE-ROOTS"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
        assert!(of_namespace(&config, "default").is_empty());
    }
}
