//! How the agent trusts an `https://` server: one rustls client
//! configuration (ring provider) for both the enrolment request and the
//! WebSocket, built from what the operator said at enrolment.
//!
//! The server's certificate is verified against the system's roots
//! (`rustls-native-certs`; the bundled Mozilla roots of `webpki-roots` when
//! the system has none that load) plus an optional private CA
//! (`--ca-cert`). A pin (`--server-fingerprint sha256:…`) instead accepts
//! exactly one leaf certificate, self-signed or not, and refuses any other
//! even if a CA vouches for it. `--insecure` turns verification off and
//! says so loudly every time it is used. Handshake signatures are always
//! checked, so a pinned certificate proves the server holds its key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rm_core::fingerprint::CertFingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use serde::{Deserialize, Serialize};

use crate::error::AgentError;
use crate::server_url::ServerUrl;

/// The trust flags as given on the command line (`enroll` or `run`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustOptions {
    /// `--ca-cert FILE`: a PEM file with the CA certificate(s) to trust.
    pub ca_cert: Option<PathBuf>,
    /// `--server-fingerprint sha256:…`: the one server certificate to trust.
    pub server_fingerprint: Option<String>,
    /// `--insecure`: verify nothing.
    pub insecure: bool,
}

impl TrustOptions {
    fn is_empty(&self) -> bool {
        self == &TrustOptions::default()
    }
}

/// The trust saved in `agent.json` at enrolment, so `run` needs no flags.
/// The CA certificate is kept by content: the file it came from may move.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustSettings {
    /// PEM of the extra CA certificate(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_pem: Option<String>,
    /// Where the CA certificate was read from (for messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_path: Option<PathBuf>,
    /// The pinned server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_fingerprint: Option<CertFingerprint>,
    /// Verification is off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

impl std::fmt::Debug for TrustSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustSettings")
            .field("ca_cert_path", &self.ca_cert_path)
            .field("ca_cert", &self.ca_cert_pem.as_ref().map(|_| "<pem>"))
            .field("server_fingerprint", &self.server_fingerprint)
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl TrustSettings {
    /// Whether nothing beyond the system's roots is configured.
    pub fn is_default(&self) -> bool {
        self == &TrustSettings::default()
    }

    /// These settings with the command line's flags applied on top (each
    /// given flag replaces its saved counterpart), the CA file read and the
    /// fingerprint checked. Contradicting flags are refused.
    pub fn with_options(&self, options: &TrustOptions) -> Result<TrustSettings, AgentError> {
        if options.insecure && (options.ca_cert.is_some() || options.server_fingerprint.is_some()) {
            return Err(AgentError::TlsSetup(String::from(
                "--insecure turns certificate verification off, so it cannot be combined with \
                 --ca-cert or --server-fingerprint; use one of them",
            )));
        }
        let mut settings = self.clone();
        // A flag of one kind replaces saved trust of the other: `--insecure`
        // drops a saved CA or pin, and a CA or pin ends a saved `--insecure`.
        if options.insecure {
            settings = TrustSettings {
                insecure: true,
                ..TrustSettings::default()
            };
        } else if options.ca_cert.is_some() || options.server_fingerprint.is_some() {
            settings.insecure = false;
        }
        if let Some(path) = &options.ca_cert {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                AgentError::TlsSetup(format!(
                    "could not read the CA certificate file {}: {e}",
                    path.display()
                ))
            })?;
            // Checked now, so a bad file fails enrolment and not every connect.
            ca_certificates(&pem, path)?;
            settings.ca_cert_pem = Some(pem);
            settings.ca_cert_path = Some(path.clone());
        }
        if let Some(text) = &options.server_fingerprint {
            let fingerprint = text
                .parse::<CertFingerprint>()
                .map_err(|e| AgentError::TlsSetup(format!("--server-fingerprint: {e}")))?;
            settings.server_fingerprint = Some(fingerprint);
        }
        Ok(settings)
    }
}

/// The TLS side of talking to one server: `None` inside for `http://`.
#[derive(Clone)]
pub(crate) struct Trust {
    config: Option<Arc<ClientConfig>>,
    insecure: bool,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("tls", &self.config.is_some())
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl Trust {
    /// The trust for `server`: the command line's `options` over the saved
    /// `settings`. Trust options with an `http://` server are refused, since
    /// the operator evidently meant to use TLS.
    pub(crate) fn new(
        server: &ServerUrl,
        settings: &TrustSettings,
        options: &TrustOptions,
    ) -> Result<(Trust, TrustSettings), AgentError> {
        let settings = settings.with_options(options)?;
        if !server.is_tls() {
            if !settings.is_default() || !options.is_empty() {
                return Err(AgentError::TlsSetup(format!(
                    "--ca-cert, --server-fingerprint and --insecure only apply to an https:// server, \
                     and {server} is plain http"
                )));
            }
            return Ok((
                Trust {
                    config: None,
                    insecure: false,
                },
                settings,
            ));
        }
        let config = client_config(&settings)?;
        Ok((
            Trust {
                config: Some(Arc::new(config)),
                insecure: settings.insecure,
            },
            settings,
        ))
    }

    /// The rustls configuration for an `https://` server (warning loudly
    /// when verification is off), `None` for `http://`.
    pub(crate) fn client_config(&self) -> Option<Arc<ClientConfig>> {
        if self.insecure {
            tracing::warn!(
                "INSECURE: not verifying the server's TLS certificate (--insecure); anyone on the \
                 network path can impersonate the server and take this agent's token and \
                 repository passwords. Use --ca-cert or --server-fingerprint instead"
            );
        }
        self.config.clone()
    }

    /// An HTTP client for this agent's server: `builder`'s settings plus
    /// this trust, the agent's User-Agent and no redirects (requests go to
    /// the checked URL only). The error is worded for the log.
    pub(crate) fn http_client(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::Client, String> {
        let tls = match self.client_config() {
            Some(config) => config.as_ref().clone(),
            None => unused_http_config().map_err(|e| e.to_string())?,
        };
        builder
            .user_agent(crate::user_agent())
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| describe(&e))
    }
}

/// The certificates in a CA PEM file, refusing a file with none.
fn ca_certificates(pem: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, AgentError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            AgentError::TlsSetup(format!(
                "the CA certificate file {} is not valid PEM: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(AgentError::TlsSetup(format!(
            "the CA certificate file {} holds no PEM certificate (`-----BEGIN CERTIFICATE-----` block)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The rustls configuration reqwest gets for a plain `http://` server. It is
/// never used for a connection, but reqwest builds a TLS backend for every
/// client and, without a ring configuration of ours, would look for a
/// process-wide provider (and panic on finding none).
pub(crate) fn unused_http_config() -> Result<ClientConfig, AgentError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| AgentError::TlsSetup(e.to_string()))?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(settings: &TrustSettings) -> Result<ClientConfig, AgentError> {
    let provider = provider();
    let mut roots = system_roots();
    let mut given = Vec::new();
    if let Some(pem) = &settings.ca_cert_pem {
        let path = settings
            .ca_cert_path
            .clone()
            .unwrap_or_else(|| PathBuf::from("agent.json"));
        for cert in ca_certificates(pem, &path)? {
            given.push(CertFingerprint::of_der(&cert));
            roots.add(cert).map_err(|e| {
                AgentError::TlsSetup(format!(
                    "the CA certificate in {} cannot be used: {e}",
                    path.display()
                ))
            })?;
        }
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| AgentError::TlsSetup(format!("no usable root certificates: {e}")))?;
    let verifier = ServerVerifier {
        webpki,
        given,
        pin: settings.server_fingerprint,
        insecure: settings.insecure,
        provider: provider.clone(),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AgentError::TlsSetup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// The operating system's trusted roots, or the bundled Mozilla roots when
/// none can be loaded (a minimal container without a CA bundle).
fn system_roots() -> RootCertStore {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if added > 0 {
        tracing::debug!(roots = added, "using the system's root certificates");
        return roots;
    }
    let why = loaded
        .errors
        .first()
        .map(|e| e.to_string())
        .unwrap_or_else(|| String::from("none found"));
    tracing::info!(
        "the system's root certificates could not be loaded ({why}); using the bundled Mozilla roots (webpki-roots)"
    );
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots
}

/// Why the server's certificate was refused; its text is what the operator
/// reads, so it names the certificate and the fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TrustProblem {
    /// Not signed by a trusted CA, expired, wrong name, …
    #[error(
        "certificate for {server} is not trusted: {reason}; use --ca-cert FILE (the CA that signed it) \
         or --server-fingerprint with the fingerprint the server printed at start-up \
         (this server presented {presented})"
    )]
    Untrusted {
        /// The name the agent connected to.
        server: String,
        /// What verification found.
        reason: String,
        /// The fingerprint of the certificate the server sent.
        presented: CertFingerprint,
    },
    /// The pin does not match.
    #[error(
        "certificate for {server} has fingerprint {presented}, but this agent is pinned to {pinned}; \
         refusing to connect (if the server's certificate was replaced on purpose, pass \
         --server-fingerprint with the new one)"
    )]
    PinMismatch {
        /// The name the agent connected to.
        server: String,
        /// The fingerprint of the certificate the server sent.
        presented: CertFingerprint,
        /// The fingerprint the agent trusts.
        pinned: CertFingerprint,
    },
}

/// A TLS failure explained: the [`TrustProblem`] somewhere in `error`'s
/// chain, if there is one. Transport layers wrap rustls' error in
/// `io::Error`s, whose `source()` skips the wrapped error, so both ways
/// down are followed.
pub(crate) fn trust_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = from_rustls(e) {
            return Some(found);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(found) = io.get_ref().and_then(|inner| trust_problem(inner)) {
                return Some(found);
            }
        }
        next = e.source();
    }
    None
}

fn from_rustls(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    match e.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other
            .0
            .downcast_ref::<TrustProblem>()
            .map(ToString::to_string),
        _ => None,
    }
}

/// A failure of one of the agent's TLS connections in words: the trust
/// problem when there is one, else the whole error chain.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    trust_problem(error).unwrap_or_else(|| crate::error::error_chain(error))
}

fn refuse(problem: TrustProblem) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        problem,
    ))))
}

/// What a verification error means, in the operator's words.
fn reason(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => String::from(
            "it is not signed by a trusted certificate authority (self-signed or a private CA)",
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => String::from("it is not valid for this server name"),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => String::from("it has expired"),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => String::from("it is not valid yet"),
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if other.to_string().contains("CaUsedAsEndEntity") =>
        {
            String::from("it is a CA certificate, which a server cannot present as its own")
        }
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other.to_string(),
        other => other.to_string(),
    }
}

#[derive(Debug)]
struct ServerVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The certificates of `--ca-cert` themselves: a self-signed server
    /// certificate given there is trusted as itself, even when (as with
    /// `openssl req -x509`) it is marked as a CA, which webpki refuses to
    /// accept as a server's own certificate.
    given: Vec<CertFingerprint>,
    pin: Option<CertFingerprint>,
    insecure: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        let presented = CertFingerprint::of_der(end_entity);
        let server = server_name.to_str().into_owned();
        if let Some(pinned) = self.pin {
            return if presented == pinned {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(refuse(TrustProblem::PinMismatch {
                    server,
                    presented,
                    pinned,
                }))
            };
        }
        if self.given.contains(&presented) {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| {
                refuse(TrustProblem::Untrusted {
                    server,
                    reason: reason(&e),
                    presented,
                })
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn https() -> ServerUrl {
        ServerUrl::parse("https://backup.example.com").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn insecure_cannot_be_mixed_with_real_trust() {
        let options = TrustOptions {
            insecure: true,
            server_fingerprint: Some(CertFingerprint::of_der(b"x").to_string()),
            ..TrustOptions::default()
        };
        let err = TrustSettings::default().with_options(&options).unwrap_err();
        assert!(err.to_string().contains("--insecure"), "{err}");
    }

    #[test]
    fn a_bad_fingerprint_or_ca_file_is_named() {
        let options = TrustOptions {
            server_fingerprint: Some(String::from("sha256:nope")),
            ..TrustOptions::default()
        };
        let err = TrustSettings::default().with_options(&options).unwrap_err();
        assert!(err.to_string().contains("--server-fingerprint"), "{err}");

        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let not_pem = tmp.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap_or_else(|e| panic!("{e}"));
        for path in [not_pem, tmp.path().join("missing.pem")] {
            let options = TrustOptions {
                ca_cert: Some(path.clone()),
                ..TrustOptions::default()
            };
            let err = TrustSettings::default().with_options(&options).unwrap_err();
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn flags_override_what_was_saved() {
        let saved = TrustSettings {
            server_fingerprint: Some(CertFingerprint::of_der(b"old")),
            ..TrustSettings::default()
        };
        let new = CertFingerprint::of_der(b"new");
        let merged = saved
            .with_options(&TrustOptions {
                server_fingerprint: Some(new.to_string()),
                ..TrustOptions::default()
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(merged.server_fingerprint, Some(new));
        assert_eq!(
            saved.with_options(&TrustOptions::default()).ok(),
            Some(saved.clone())
        );
    }

    #[test]
    fn trust_options_need_https() {
        let http = ServerUrl::parse("http://backup.example.com").unwrap_or_else(|e| panic!("{e}"));
        let options = TrustOptions {
            insecure: true,
            ..TrustOptions::default()
        };
        let err = Trust::new(&http, &TrustSettings::default(), &options).unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
        let (trust, _) = Trust::new(&http, &TrustSettings::default(), &TrustOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(trust.client_config().is_none());
        let (trust, _) = Trust::new(
            &https(),
            &TrustSettings::default(),
            &TrustOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(trust.client_config().is_some());
    }

    #[test]
    fn saved_settings_round_trip_and_stay_small_by_default() {
        assert_eq!(
            serde_json::to_string(&TrustSettings::default()).unwrap_or_default(),
            "{}"
        );
        let settings = TrustSettings {
            server_fingerprint: Some(CertFingerprint::of_der(b"x")),
            insecure: true,
            ..TrustSettings::default()
        };
        let json = serde_json::to_string(&settings).unwrap_or_default();
        let back: TrustSettings = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, settings);
    }
}
