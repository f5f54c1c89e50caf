//! Istio's `cacerts` layout: creating a root (`strait ca init`) and per-cluster intermediates
//! (`strait ca intermediate`), and loading a directory the control plane signs with.
//!
//! A root directory holds `root-cert.pem` and `root-key.pem`. An intermediate directory holds
//! `ca-cert.pem` and `ca-key.pem` (the signing CA), `root-cert.pem` (the roots workloads
//! trust — several during a rotation) and `cert-chain.pem` (the signing CA up to the root).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;

use crate::cert::{CertInfo, parse_pem_certs};

pub const ROOT_CERT: &str = "root-cert.pem";
pub const ROOT_KEY: &str = "root-key.pem";
pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";

/// Organisation written into the CA certificates Strait creates.
const ORGANIZATION: &str = "Strait";

/// A problem with a CA directory, naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaFilesError {
    #[error("{path}: cannot read: {source} (create it with `strait ca {hint}`)")]
    Read {
        path: PathBuf,
        hint: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{dir}: already holds {file}; refusing to overwrite CA material (choose another --out or remove it)"
    )]
    Exists { dir: PathBuf, file: &'static str },
    #[error("cannot create the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Lifetimes of the CA certificates `strait ca` creates by default, as Istio's certificate
/// Makefile: ten years for the root, two for an intermediate.
pub const ROOT_VALIDITY: Duration = Duration::from_secs(3650 * 86400);
pub const INTERMEDIATE_VALIDITY: Duration = Duration::from_secs(730 * 86400);

/// A CA certificate with its key, as PEM.
#[derive(Debug, Clone)]
pub struct PemPair {
    pub cert: String,
    pub key: String,
}

/// Creates a self-signed root CA (ECDSA P-256).
pub fn create_root(valid_for: Duration, now: SystemTime) -> Result<PemPair, CaFilesError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = ca_params("Root CA", None, valid_for, now);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key)?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Creates an intermediate CA for `cluster`, signed by the root, able to sign workloads only.
pub fn create_intermediate(
    root: &PemPair,
    cluster: &str,
    valid_for: Duration,
    now: SystemTime,
) -> Result<PemPair, CaFilesError> {
    let root_key = KeyPair::from_pem(&root.key)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&root.cert, root_key)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = ca_params("Intermediate CA", Some(cluster), valid_for, now);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    // Never outlive the root.
    let root_der = parse_pem_certs(&root.cert, ROOT_CERT)
        .map_err(|e| invalid(Path::new(ROOT_CERT), e.to_string()))?;
    if let Ok(info) = CertInfo::of(&root_der[0]) {
        params.not_after = params.not_after.min(info.not_after.into());
    }
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn ca_params(
    common_name: &str,
    cluster: Option<&str>,
    valid_for: Duration,
    now: SystemTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, common_name);
    if let Some(c) = cluster {
        dn.push(DnType::LocalityName, c);
    }
    params.distinguished_name = dn;
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + valid_for).into();
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params
}

/// A random positive 128-bit serial number.
pub fn random_serial() -> rcgen::SerialNumber {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).ok();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    rcgen::SerialNumber::from_slice(&bytes)
}

/// Writes a new root into `dir` (`root-cert.pem`, `root-key.pem` mode 0600).
pub fn write_root(dir: &Path, root: &PemPair) -> Result<(), CaFilesError> {
    refuse_overwrite(dir, &[ROOT_CERT, ROOT_KEY])?;
    write_file(&dir.join(ROOT_CERT), &root.cert, false)?;
    write_file(&dir.join(ROOT_KEY), &root.key, true)
}

/// Writes an intermediate in Istio's `cacerts` layout into `dir`. `roots` is the trust bundle
/// (the issuing root first).
pub fn write_intermediate(
    dir: &Path,
    ca: &PemPair,
    roots: &str,
    issuing_root: &str,
) -> Result<(), CaFilesError> {
    refuse_overwrite(dir, &[CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT])?;
    write_file(&dir.join(CA_CERT), &ca.cert, false)?;
    write_file(&dir.join(CA_KEY), &ca.key, true)?;
    write_file(&dir.join(ROOT_CERT), roots, false)?;
    write_file(
        &dir.join(CERT_CHAIN),
        &format!("{}{}", ca.cert, issuing_root),
        false,
    )
}

/// Reads a root directory written by [`write_root`].
pub fn read_root(dir: &Path) -> Result<PemPair, CaFilesError> {
    let cert = read(&dir.join(ROOT_CERT), "init")?;
    let key = read(&dir.join(ROOT_KEY), "init")?;
    check_pair(&dir.join(ROOT_CERT), &cert, &key)?;
    Ok(PemPair { cert, key })
}

fn refuse_overwrite(dir: &Path, files: &[&'static str]) -> Result<(), CaFilesError> {
    fs::create_dir_all(dir).map_err(|source| CaFilesError::Write {
        path: dir.into(),
        source,
    })?;
    for f in files {
        if dir.join(f).exists() {
            return Err(CaFilesError::Exists {
                dir: dir.into(),
                file: f,
            });
        }
    }
    Ok(())
}

fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), CaFilesError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(|source| CaFilesError::Write {
        path: path.into(),
        source,
    })?;
    file.write_all(text.as_bytes())
        .map_err(|source| CaFilesError::Write {
            path: path.into(),
            source,
        })
}

fn read(path: &Path, hint: &'static str) -> Result<String, CaFilesError> {
    fs::read_to_string(path).map_err(|source| CaFilesError::Read {
        path: path.into(),
        hint,
        source,
    })
}

fn invalid(path: &Path, reason: impl Into<String>) -> CaFilesError {
    CaFilesError::Invalid {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Checks that `key` belongs to the first certificate of `cert` and that it is a CA.
fn check_pair(cert_path: &Path, cert: &str, key: &str) -> Result<(), CaFilesError> {
    let certs = parse_pem_certs(cert, &cert_path.display().to_string())
        .map_err(|e| invalid(cert_path, e.to_string()))?;
    let key_pair = KeyPair::from_pem(key).map_err(|e| {
        invalid(
            cert_path,
            format!("its private key cannot be read ({e}); expected a PEM PKCS#8 key"),
        )
    })?;
    let leaf = &certs[0];
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| invalid(cert_path, e.to_string()))?;
    if parsed.public_key().subject_public_key.data.as_ref() != key_pair.public_key_raw() {
        return Err(invalid(
            cert_path,
            "the private key does not belong to this certificate (mixed-up files?)",
        ));
    }
    if !parsed.is_ca() {
        return Err(invalid(
            cert_path,
            "not a CA certificate (basicConstraints CA:TRUE missing); it cannot sign workloads",
        ));
    }
    Ok(())
}

/// The signing material of a cluster's CA, loaded from a `cacerts` directory.
#[derive(Debug, Clone)]
pub struct CaFiles {
    /// The signing CA's certificate and key.
    pub ca: PemPair,
    /// The signing CA and every CA above it except self-signed roots (sent after the leaf).
    pub intermediates: Vec<CertificateDer<'static>>,
    /// The roots workloads trust (`root-cert.pem`; several while a root is rotated).
    pub roots: Vec<CertificateDer<'static>>,
    pub dir: Option<PathBuf>,
}

impl CaFiles {
    /// Loads Istio's layout, checking that the pieces fit together.
    pub fn load(dir: &Path) -> Result<Self, CaFilesError> {
        let hint = "intermediate --root ROOT_DIR --cluster NAME --out DIR";
        let ca_cert = read(&dir.join(CA_CERT), hint)?;
        let ca_key = read(&dir.join(CA_KEY), hint)?;
        let roots_pem = read(&dir.join(ROOT_CERT), hint)?;
        check_pair(&dir.join(CA_CERT), &ca_cert, &ca_key)?;
        let chain_path = dir.join(CERT_CHAIN);
        let chain_pem = match fs::read_to_string(&chain_path) {
            Ok(s) => s,
            // A self-signed CA may omit the chain.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ca_cert.clone(),
            Err(source) => {
                return Err(CaFilesError::Read {
                    path: chain_path,
                    hint,
                    source,
                });
            }
        };
        let roots = parse_pem_certs(&roots_pem, ROOT_CERT)
            .map_err(|e| invalid(&dir.join(ROOT_CERT), e.to_string()))?;
        let chain = parse_pem_certs(&chain_pem, CERT_CHAIN)
            .map_err(|e| invalid(&chain_path, e.to_string()))?;
        let ca_der = parse_pem_certs(&ca_cert, CA_CERT)
            .map_err(|e| invalid(&dir.join(CA_CERT), e.to_string()))?;
        if chain.first() != ca_der.first() {
            return Err(invalid(
                &chain_path,
                "must start with ca-cert.pem (the signing CA), then each CA above it",
            ));
        }
        let intermediates: Vec<_> = chain.into_iter().filter(|c| !is_self_signed(c)).collect();
        let top = intermediates.last().unwrap_or(&ca_der[0]);
        if !roots.iter().any(|r| signed_by(top, r)) {
            return Err(invalid(
                &dir.join(ROOT_CERT),
                "does not contain the root that issued ca-cert.pem; workloads would not trust the certificates this CA signs",
            ));
        }
        let now = SystemTime::now();
        for (name, der) in [(CA_CERT, &ca_der[0])] {
            if let Ok(info) = CertInfo::of(der)
                && info.not_after < now
            {
                return Err(invalid(
                    &dir.join(name),
                    "expired; create a new intermediate with `strait ca intermediate`",
                ));
            }
        }
        Ok(Self {
            ca: PemPair {
                cert: ca_cert,
                key: ca_key,
            },
            intermediates,
            roots,
            dir: Some(dir.into()),
        })
    }

    /// A self-signed development CA that exists only in memory: its root is its signing CA.
    pub fn self_signed_for_development(now: SystemTime) -> Result<Self, CaFilesError> {
        let root = create_root(ROOT_VALIDITY, now)?;
        let der = parse_pem_certs(&root.cert, "generated root")
            .map_err(|e| invalid(Path::new("generated root"), e.to_string()))?;
        Ok(Self {
            ca: root,
            intermediates: Vec::new(),
            roots: der,
            dir: None,
        })
    }
}

/// Whether `issuer`'s key verifies `cert`'s signature (and the names chain).
pub fn signed_by(cert: &CertificateDer<'_>, issuer: &CertificateDer<'_>) -> bool {
    let (Ok((_, c)), Ok((_, i))) = (
        x509_parser::parse_x509_certificate(cert),
        x509_parser::parse_x509_certificate(issuer),
    ) else {
        return false;
    };
    c.issuer().as_raw() == i.subject().as_raw() && c.verify_signature(Some(i.public_key())).is_ok()
}

/// A root: its subject is its issuer.
pub fn is_self_signed(der: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.subject().as_raw() == c.issuer().as_raw())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_intermediate_load_as_istio_cacerts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let root = create_root(Duration::from_secs(86400), now).expect("root");
        write_root(&dir.path().join("root"), &root).expect("write root");
        let root = read_root(&dir.path().join("root")).expect("read root");
        let ca = create_intermediate(&root, "cluster1", Duration::from_secs(3600), now)
            .expect("intermediate");
        let out = dir.path().join("cluster1");
        write_intermediate(&out, &ca, &root.cert, &root.cert).expect("write");
        let files = CaFiles::load(&out).expect("load");
        assert_eq!(files.intermediates.len(), 1);
        assert_eq!(files.roots.len(), 1);
        let info = CertInfo::of(&files.intermediates[0]).expect("info");
        assert!(info.is_ca);
        assert!(info.subject.contains("L=cluster1"), "{}", info.subject);
        // Overwriting is refused; a mismatched key is named.
        assert!(matches!(
            write_intermediate(&out, &ca, &root.cert, &root.cert),
            Err(CaFilesError::Exists { .. })
        ));
        let other = create_root(Duration::from_secs(86400), now).expect("root");
        fs::write(out.join(CA_KEY), &other.key).expect("write");
        let err = CaFiles::load(&out).expect_err("mismatch").to_string();
        assert!(
            err.contains("ca-cert.pem") && err.contains("does not belong"),
            "{err}"
        );
    }

    #[test]
    fn a_bundle_without_the_issuing_root_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let root = create_root(Duration::from_secs(86400), now).expect("root");
        let other = create_root(Duration::from_secs(86400), now).expect("root");
        let ca = create_intermediate(&root, "c", Duration::from_secs(3600), now).expect("ca");
        write_intermediate(dir.path(), &ca, &other.cert, &root.cert).expect("write");
        let err = CaFiles::load(dir.path()).expect_err("no root").to_string();
        assert!(err.contains("root-cert.pem"), "{err}");
    }

    #[test]
    fn missing_files_say_how_to_create_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = CaFiles::load(dir.path()).expect_err("empty").to_string();
        assert!(
            err.contains("ca-cert.pem") && err.contains("strait ca intermediate"),
            "{err}"
        );
    }
}
