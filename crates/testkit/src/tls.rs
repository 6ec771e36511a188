//! Self-signed TLS certificates for test servers, made with rcgen.

use std::path::PathBuf;

use rm_core::fingerprint::CertFingerprint;
use tempfile::TempDir;

/// A self-signed certificate for `127.0.0.1` and `localhost`, written as
/// PEM files that live as long as this value.
pub struct TestCert {
    /// The certificate, PEM (pass it as `--tls-cert` or `--ca-cert`).
    pub cert_path: PathBuf,
    /// Its private key, PEM (`--tls-key`).
    pub key_path: PathBuf,
    /// The certificate's PEM text.
    pub cert_pem: String,
    /// SHA-256 of the certificate's DER (`--server-fingerprint`).
    pub fingerprint: CertFingerprint,
    _dir: TempDir,
}

impl TestCert {
    /// Generates a fresh key and certificate.
    pub fn generate() -> anyhow::Result<TestCert> {
        let certified = rcgen::generate_simple_self_signed(vec![
            String::from("127.0.0.1"),
            String::from("localhost"),
        ])?;
        let dir = tempfile::tempdir()?;
        let cert_path = dir.path().join("server.crt");
        let key_path = dir.path().join("server.key");
        let cert_pem = certified.cert.pem();
        std::fs::write(&cert_path, &cert_pem)?;
        std::fs::write(&key_path, certified.signing_key.serialize_pem())?;
        Ok(TestCert {
            cert_path,
            key_path,
            cert_pem,
            fingerprint: CertFingerprint::of_der(certified.cert.der()),
            _dir: dir,
        })
    }

    /// An HTTP client that trusts this certificate (and nothing else).
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        let cert = reqwest::Certificate::from_pem(self.cert_pem.as_bytes())?;
        Ok(crate::http::client_builder()
            .tls_certs_only([cert])
            .build()?)
    }
}
