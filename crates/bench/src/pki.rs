//! Certificates for the data plane's TLS rows: the mesh CA the Strait sidecars take their
//! SPIFFE identities from (made by `strait ca`, as an operator makes it), and for the reference
//! chains a root with one ECDSA P-256 leaf per hop, so HAProxy and nginx do the same mutual
//! TLS 1.3 handshake and encryption between their hops as the sidecars do.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The name both reference hops' certificates carry (nginx checks it; HAProxy checks the chain).
pub const REFERENCE_NAME: &str = "hop.bench.internal";

/// The mesh CA: `strait control-plane --cacerts DIR --token-key FILE`.
pub struct MeshCa {
    strait: PathBuf,
    dir: PathBuf,
    pub cacerts: PathBuf,
    pub root: PathBuf,
    pub token_key: PathBuf,
}

fn strait(strait: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(strait)
        .args(args)
        .output()
        .with_context(|| format!("running strait {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "strait {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

impl MeshCa {
    /// A root and cluster1's intermediate under `dir`.
    pub fn create(strait_bin: &Path, dir: &Path) -> anyhow::Result<MeshCa> {
        let root_dir = dir.join("root");
        let cacerts = dir.join("cacerts");
        strait(strait_bin, &["ca", "init", "--out", path_str(&root_dir)?])?;
        strait(
            strait_bin,
            &[
                "ca",
                "intermediate",
                "--root",
                path_str(&root_dir)?,
                "--cluster",
                "cluster1",
                "--out",
                path_str(&cacerts)?,
            ],
        )?;
        Ok(MeshCa {
            strait: strait_bin.to_path_buf(),
            dir: dir.to_path_buf(),
            root: cacerts.join("root-cert.pem"),
            cacerts,
            token_key: dir.join("token-key"),
        })
    }

    /// The control plane's flags: sign with the intermediate, check tokens with the key.
    pub fn control_plane_args(&self) -> anyhow::Result<Vec<String>> {
        Ok(vec![
            "--cacerts".into(),
            path_str(&self.cacerts)?.into(),
            "--token-key".into(),
            path_str(&self.token_key)?.into(),
        ])
    }

    /// A sidecar's flags to obtain the identity of `namespace/service_account` (xDS then goes
    /// over TLS to the control plane's secure port).
    pub fn proxy_args(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> anyhow::Result<Vec<String>> {
        let token = strait(
            &self.strait,
            &[
                "ca",
                "token",
                "--key",
                path_str(&self.token_key)?,
                "--namespace",
                namespace,
                "--service-account",
                service_account,
            ],
        )?;
        let file = self
            .dir
            .join(format!("{namespace}.{service_account}.token"));
        std::fs::write(&file, token.trim())?;
        Ok(vec![
            "--ca-root".into(),
            path_str(&self.root)?.into(),
            "--token".into(),
            path_str(&file)?.into(),
            "--service-account".into(),
            service_account.into(),
        ])
    }
}

/// One reference hop's certificate: PEM files, and both in one file for HAProxy's `crt`.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub combined: PathBuf,
}

/// The reference chains' root and the two hops' leaves.
pub struct ReferencePki {
    pub root: PathBuf,
    pub first: Leaf,
    pub second: Leaf,
}

impl ReferencePki {
    pub fn create(dir: &Path) -> anyhow::Result<ReferencePki> {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            PKCS_ECDSA_P256_SHA256,
        };
        std::fs::create_dir_all(dir)?;
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut root = CertificateParams::new(Vec::<String>::new())?;
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.distinguished_name
            .push(rcgen::DnType::CommonName, "strait-bench reference root");
        let root_cert = root.self_signed(&root_key)?;
        let root_path = dir.join("root.pem");
        std::fs::write(&root_path, root_cert.pem())?;
        let issuer = Issuer::new(root, root_key);
        let leaf = |name: &str| -> anyhow::Result<Leaf> {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::new(vec![REFERENCE_NAME.to_string()])?;
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params.signed_by(&key, &issuer)?;
            let leaf = Leaf {
                cert: dir.join(format!("{name}.crt")),
                key: dir.join(format!("{name}.key")),
                combined: dir.join(format!("{name}.pem")),
            };
            std::fs::write(&leaf.cert, cert.pem())?;
            std::fs::write(&leaf.key, key.serialize_pem())?;
            std::fs::write(
                &leaf.combined,
                format!("{}{}", cert.pem(), key.serialize_pem()),
            )?;
            Ok(leaf)
        };
        Ok(ReferencePki {
            root: root_path,
            first: leaf("first")?,
            second: leaf("second")?,
        })
    }
}
