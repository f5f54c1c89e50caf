//! The secrets the proxy receives by SDS (a Gateway's or DestinationRule's `credentialName`):
//! the certificates, keys and CA certificates in them, checked when they arrive, and which of
//! them — or of the certificate files it names — a chain or cluster was made with, so a new
//! version of one makes it again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use strait_identity::cert::{CertInfo, parse_pem_certs, parse_pem_key};
use strait_identity::tls;
use strait_xds::secret::{Secret, SecretContent};

/// Secrets by SDS name, as the proxy holds them.
pub type Secrets = BTreeMap<String, Arc<Secret>>;

/// What a chain's or cluster's TLS was made with: the secrets it names (by version) and the
/// certificate files it reads (by content). A new version of either makes it again.
#[derive(Debug, Default)]
pub struct TlsMaterial {
    secrets: SecretsUsed,
    files: FilesUsed,
}

impl TlsMaterial {
    /// The secrets named as `secrets` holds them, and the files at `paths` as they read now —
    /// taken before they are used, so a file changed in between is seen at the next check.
    pub fn of<'a, S: AsRef<str>>(
        secret_names: impl IntoIterator<Item = S>,
        paths: impl IntoIterator<Item = &'a str>,
        secrets: &Secrets,
    ) -> Self {
        Self {
            secrets: SecretsUsed::of(secret_names, secrets),
            files: FilesUsed::of(paths),
        }
    }

    /// Whether `secrets` still holds the same versions and every file reads as it did.
    pub fn current(&self, secrets: &Secrets) -> bool {
        self.secrets.unchanged(secrets) && self.files.unchanged()
    }

    /// Whether a file reads differently now.
    pub fn files_changed(&self) -> bool {
        !self.files.unchanged()
    }

    /// Whether both were made with the very same secrets and file contents.
    pub fn same_as(&self, other: &TlsMaterial) -> bool {
        self.secrets.same_as(&other.secrets) && self.files.same_as(&other.files)
    }

    /// Takes the file versions `refused` read as this one's: a rewrite that was refused (the
    /// last good certificate serving on) is not tried, and logged, again at every check — only
    /// when the files change again.
    pub fn accept_refused_files(&self, refused: &TlsMaterial) {
        self.files.accept_versions(&refused.files);
    }
}

/// The secrets something was made with, by name (`None`: not received then).
#[derive(Debug, Clone, Default)]
struct SecretsUsed(Vec<(String, Option<Arc<Secret>>)>);

impl SecretsUsed {
    /// `names` as `secrets` holds them now.
    fn of<S: AsRef<str>>(names: impl IntoIterator<Item = S>, secrets: &Secrets) -> Self {
        Self(
            names
                .into_iter()
                .map(|name| {
                    let name = name.as_ref();
                    (name.to_string(), secrets.get(name).cloned())
                })
                .collect(),
        )
    }

    /// Whether both were made with the very same secrets.
    fn same_as(&self, other: &SecretsUsed) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().zip(&other.0).all(|((a, x), (b, y))| {
                a == b
                    && match (x, y) {
                        (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                        (None, None) => true,
                        _ => false,
                    }
            })
    }

    /// Whether `secrets` still holds the very same versions (and still lacks the missing).
    fn unchanged(&self, secrets: &Secrets) -> bool {
        self.0
            .iter()
            .all(|(name, used)| match (used, secrets.get(name)) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            })
    }
}

/// The certificate files something was made with (a Gateway server's or DestinationRule's
/// `serverCertificate`, `privateKey`, `caCertificates`, `clientCertificate`), by a hash of their
/// content (`None`: unreadable then), so that a file rotated in place (a re-mounted Secret, a
/// renewal by cert-manager) makes it again, as Istio's agent does for mounted certificates.
#[derive(Debug, Default)]
struct FilesUsed(std::sync::Mutex<Vec<(String, Option<u64>)>>);

impl FilesUsed {
    /// `paths` as they read now. Taken before the files are used, so a change in between is
    /// seen at the next check rather than missed.
    fn of<'a>(paths: impl IntoIterator<Item = &'a str>) -> Self {
        Self(std::sync::Mutex::new(
            paths
                .into_iter()
                .map(|p| (p.to_string(), content_hash(p)))
                .collect(),
        ))
    }

    fn versions(&self) -> Vec<(String, Option<u64>)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Whether every file still reads as it did.
    fn unchanged(&self) -> bool {
        self.versions()
            .iter()
            .all(|(path, hash)| content_hash(path) == *hash)
    }

    /// Whether both read the same files at the same versions.
    fn same_as(&self, other: &FilesUsed) -> bool {
        self.versions() == other.versions()
    }

    /// Takes the versions `seen` read as this one's: a rewrite that was refused (the last good
    /// certificate serving on) is not tried, and logged, again at every check — only when the
    /// files change again.
    fn accept_versions(&self, seen: &FilesUsed) {
        let versions = seen.versions();
        if let Ok(mut v) = self.0.lock() {
            *v = versions;
        }
    }
}

fn content_hash(path: &str) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let bytes = std::fs::read(path).ok()?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

/// One certificate as the admin API's `/certs` shows it (what `strait proxy-config secret`
/// tabulates, as `istioctl proxy-config secret` does).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertView {
    pub serial_number: String,
    pub subject: String,
    pub subject_alt_names: Vec<String>,
    pub valid_from: String,
    pub expiration_time: String,
    /// Negative once expired.
    pub days_until_expiration: i64,
}

/// A secret as `/certs` shows it: its certificates (leaf first, or the CA certificates), or why
/// they cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretView {
    pub name: String,
    /// `Cert Chain` or `CA`, as istioctl names them.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub certificates: Vec<CertView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SecretView {
    /// A received secret (its key never shown).
    pub fn of_secret(secret: &Secret, now: SystemTime) -> SecretView {
        let (kind, pem) = match &secret.content {
            SecretContent::Certificate {
                certificate_chain, ..
            } => (CERT_CHAIN, certificate_chain),
            SecretContent::Roots { trusted_ca } => (CA, trusted_ca),
        };
        let ders = std::str::from_utf8(pem)
            .map_err(|_| "not PEM text".to_string())
            .and_then(|text| parse_pem_certs(text, &secret.name).map_err(|e| e.to_string()));
        match ders {
            Ok(ders) => SecretView::of_certificates(&secret.name, kind, &ders, now),
            Err(error) => SecretView {
                name: secret.name.clone(),
                kind,
                certificates: vec![],
                error: Some(error),
            },
        }
    }

    /// Certificates held otherwise (the workload's `default` chain, its `ROOTCA`).
    pub fn of_certificates(
        name: &str,
        kind: &'static str,
        ders: &[rustls::pki_types::CertificateDer<'_>],
        now: SystemTime,
    ) -> SecretView {
        let mut certificates = Vec::new();
        let mut error = None;
        for der in ders {
            match CertInfo::of(der) {
                Ok(info) => certificates.push(CertView::of(&info, now)),
                Err(e) => error = Some(e.to_string()),
            }
        }
        SecretView {
            name: name.to_string(),
            kind,
            certificates,
            error,
        }
    }
}

/// istioctl's names of the two kinds.
pub const CERT_CHAIN: &str = "Cert Chain";
pub const CA: &str = "CA";

impl CertView {
    fn of(info: &CertInfo, now: SystemTime) -> CertView {
        let seconds = |t: SystemTime| -> i64 {
            match t.duration_since(UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
            }
        };
        let left = seconds(info.not_after) - seconds(now);
        CertView {
            serial_number: info.serial.clone(),
            subject: info.subject.clone(),
            subject_alt_names: info.uris.iter().chain(&info.dns_names).cloned().collect(),
            valid_from: utc(seconds(info.not_before)),
            expiration_time: utc(seconds(info.not_after)),
            days_until_expiration: left.div_euclid(86_400),
        }
    }
}

/// Seconds since the Unix epoch as `2026-12-08T01:24:43Z`.
fn utc(seconds: i64) -> String {
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The certificate and key of secret `name`.
pub fn secret_certificate(name: &str, secrets: &Secrets) -> Result<Arc<CertifiedKey>, String> {
    match secrets.get(name).map(|s| &s.content) {
        Some(SecretContent::Certificate {
            certificate_chain,
            private_key,
        }) => certified(
            text(certificate_chain, name)?,
            text(private_key, name)?,
            &format!("secret {name}: certificate chain"),
            &format!("secret {name}: private key"),
        ),
        Some(SecretContent::Roots { .. }) => Err(format!(
            "secret {name} holds CA certificates, not a certificate and its key"
        )),
        None => Err(not_received(name, "tls.crt and tls.key (or cert and key)")),
    }
}

/// The CA certificates of secret `name`.
pub fn secret_roots(name: &str, secrets: &Secrets) -> Result<Arc<RootCertStore>, String> {
    match secrets.get(name).map(|s| &s.content) {
        Some(SecretContent::Roots { trusted_ca }) => {
            roots(text(trusted_ca, name)?, &format!("secret {name}"))
        }
        Some(SecretContent::Certificate { .. }) => Err(format!(
            "secret {name} holds a certificate and key, not CA certificates"
        )),
        None => Err(not_received(name, "ca.crt (or cacert)")),
    }
}

/// Whether a secret as received can serve: its certificate parses and matches its key, or its
/// CA certificates parse.
pub fn check_secret(secret: &Secret) -> Result<(), String> {
    let name = &secret.name;
    match &secret.content {
        SecretContent::Certificate {
            certificate_chain,
            private_key,
        } => certified(
            text(certificate_chain, name)?,
            text(private_key, name)?,
            "certificate chain",
            "private key",
        )
        .map(|_| ()),
        SecretContent::Roots { trusted_ca } => {
            roots(text(trusted_ca, name)?, "CA certificates").map(|_| ())
        }
    }
}

pub(crate) fn certified(
    chain_pem: &str,
    key_pem: &str,
    chain_what: &str,
    key_what: &str,
) -> Result<Arc<CertifiedKey>, String> {
    let chain = parse_pem_certs(chain_pem, chain_what).map_err(|e| e.to_string())?;
    let key = parse_pem_key(key_pem, key_what).map_err(|e| e.to_string())?;
    tls::certified_key_of(chain, key).map_err(|e| format!("{key_what}: {e}"))
}

fn roots(pem: &str, what: &str) -> Result<Arc<RootCertStore>, String> {
    let certs = parse_pem_certs(pem, what).map_err(|e| e.to_string())?;
    tls::root_store(&certs).map_err(|e| format!("{what}: {e}"))
}

fn text<'a>(bytes: &'a [u8], name: &str) -> Result<&'a str, String> {
    std::str::from_utf8(bytes).map_err(|_| format!("secret {name}: not PEM text"))
}

/// Why a chain naming secret `name` cannot serve yet.
fn not_received(name: &str, keys: &str) -> String {
    let credential = name
        .strip_prefix(strait_xds::secret::KUBERNETES_PREFIX)
        .unwrap_or(name);
    let which = match credential.strip_suffix(strait_xds::secret::CA_SUFFIX) {
        Some(own) => format!("a Secret {credential:?} with {keys}, or a Secret {own:?} with it"),
        None => format!("a Secret {credential:?} with {keys}"),
    };
    format!(
        "secret {name} has not been received: the control plane sends it when this proxy's namespace has {which} and the proxy connects to its TLS port (secrets are never sent over plaintext xDS)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(name: &str, pem: &str) -> Arc<Secret> {
        Arc::new(Secret {
            name: name.into(),
            content: SecretContent::Roots {
                trusted_ca: pem.as_bytes().to_vec(),
            },
        })
    }

    #[test]
    fn a_file_rewritten_in_place_is_a_change() {
        let dir = std::env::temp_dir().join(format!("strait-files-used-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cert.pem");
        std::fs::write(&path, "one").unwrap();
        let p = path.to_str().unwrap();
        let used = FilesUsed::of([p]);
        assert!(used.unchanged());
        std::fs::write(&path, "two").unwrap();
        let changed = used.unchanged();
        std::fs::remove_file(&path).unwrap();
        let gone = FilesUsed::of([p]);
        std::fs::remove_dir(&dir).unwrap();
        assert!(!changed);
        assert!(gone.unchanged(), "still unreadable");
        assert!(!used.unchanged());
        used.accept_versions(&gone);
        assert!(
            used.unchanged() && used.same_as(&gone),
            "the refused version, taken as seen"
        );
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_796_692_483), "2026-12-08T01:14:43Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
    }

    /// What something was made with is compared by version: a new version, an arrival or a
    /// removal is a change; the very same versions are not.
    #[test]
    fn a_new_version_arrival_or_removal_of_a_used_secret_is_a_change() {
        let mut secrets = Secrets::new();
        let waiting = SecretsUsed::of(["kubernetes://a-cacert"], &secrets);
        assert!(waiting.unchanged(&secrets));
        secrets.insert(
            "kubernetes://a-cacert".into(),
            roots("kubernetes://a-cacert", "one"),
        );
        assert!(!waiting.unchanged(&secrets), "it arrived");
        let made = SecretsUsed::of(["kubernetes://a-cacert"], &secrets);
        assert!(made.unchanged(&secrets) && made.same_as(&made.clone()));
        assert!(!made.same_as(&waiting));
        secrets.insert(
            "kubernetes://a-cacert".into(),
            roots("kubernetes://a-cacert", "one"),
        );
        assert!(
            !made.unchanged(&secrets),
            "a new version, even of equal content"
        );
        secrets.clear();
        assert!(!made.unchanged(&secrets), "it was removed");
    }
}
