//! Throwaway TLS material: one CA and one server certificate for `localhost` and `127.0.0.1`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// PEM files of a CA and a server certificate it signed, written into one directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate clients trust (`sslrootcert`).
    pub ca_cert: PathBuf,
    /// The server certificate, valid for `localhost` and `127.0.0.1`.
    pub server_cert: PathBuf,
    /// The server's private key, PKCS#8 PEM, mode 0600.
    pub server_key: PathBuf,
}

impl TlsFiles {
    /// Generates a fresh CA named `ca_name` and a server certificate, writing
    /// `ca.crt`, `server.crt` and `server.key` into `dir`.
    pub fn generate(dir: &Path, ca_name: &str) -> Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;

        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;

        let files = Self {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
        };
        write(&files.ca_cert, &ca_cert.pem(), 0o644)?;
        write(&files.server_cert, &cert.pem(), 0o644)?;
        write(&files.server_key, &key.serialize_pem(), 0o600)?;
        Ok(files)
    }

    /// A rustls client configuration that trusts only this CA.
    pub fn client_config(&self) -> Result<rustls::ClientConfig> {
        client_config_trusting(&self.ca_cert)
    }
}

/// A rustls client configuration whose only root is the CA certificate at `ca_cert`.
pub fn client_config_trusting(ca_cert: &Path) -> Result<rustls::ClientConfig> {
    let pem = fs::read(ca_cert).with_context(|| format!("reading {}", ca_cert.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}
