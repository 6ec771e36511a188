//! HTTPS and WSS for the server: the certificate and key loaded from PEM
//! files into a rustls configuration (ring provider), the certificate's
//! fingerprint for enrolment commands, and a listener that completes TLS
//! handshakes off the accept loop so one slow client cannot stall others.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rm_core::fingerprint::CertFingerprint;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for the HTTP server to pick them up.
const READY_QUEUE: usize = 64;

/// Why the certificate or key cannot be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("could not read the TLS {what} file {}: {source}", path.display())]
    Read {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("the TLS {what} file {} is not usable: {problem}", path.display())]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        problem: String,
    },
    /// The key does not belong to the certificate (or rustls refused them).
    #[error(
        "the TLS private key in {} does not fit the certificate in {}: {problem}",
        key.display(),
        cert.display()
    )]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        problem: String,
    },
}

/// The server's TLS certificate, key and settings, ready to accept with.
#[derive(Clone)]
pub struct TlsIdentity {
    config: Arc<rustls::ServerConfig>,
    fingerprint: CertFingerprint,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration holds the private key: show only the fingerprint.
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Loads a PEM certificate chain (leaf first, then intermediates) and
    /// its PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<TlsIdentity, TlsError> {
        let (chain, fingerprint) = read_chain(cert_path)?;
        let key = read_key(key_path)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mismatch = |e: rustls::Error| TlsError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            problem: e.to_string(),
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(mismatch)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(mismatch)?;
        // axum serves HTTP/1.1 only (WebSocket upgrades need it anyway).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsIdentity {
            config: Arc::new(config),
            fingerprint,
        })
    }

    /// The SHA-256 fingerprint of the leaf certificate, which agents can pin.
    pub fn fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// The fingerprint of the leaf certificate in a PEM file (for the offline
/// `admin create-enrollment-token`, which has no business with the key).
pub fn certificate_fingerprint(path: &Path) -> Result<CertFingerprint, TlsError> {
    read_chain(path).map(|(_, fingerprint)| fingerprint)
}

/// The chain in a PEM file and its leaf's fingerprint.
fn read_chain(path: &Path) -> Result<(Vec<CertificateDer<'static>>, CertFingerprint), TlsError> {
    let pem = read("certificate", path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "certificate",
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::Pem {
            what: "certificate",
            path: path.to_owned(),
            problem: String::from(
                "it holds no PEM certificate (`-----BEGIN CERTIFICATE-----` block)",
            ),
        });
    };
    let fingerprint = CertFingerprint::of_der(leaf);
    Ok((chain, fingerprint))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("private key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        what: "private key",
        path: path.to_owned(),
        problem: match e {
            rustls::pki_types::pem::Error::NoItemsFound => String::from(
                "it holds no PEM private key (`-----BEGIN PRIVATE KEY-----`, RSA or EC)",
            ),
            other => other.to_string(),
        },
    })
}

/// Accepts TCP connections and hands out those that completed a TLS
/// handshake. Handshakes run in their own tasks with a time limit, so the
/// HTTP server's accept loop only ever waits for finished ones.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `identity`.
    pub(crate) fn new(
        listener: TcpListener,
        identity: &TlsIdentity,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = TlsAcceptor::from(identity.config.clone());
        let acceptor_task = tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(TlsListener {
            ready,
            local,
            acceptor_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // The server stopped serving: stop taking new connections too.
        self.acceptor_task.abort();
    }
}

async fn accept_loop(
    mut listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        // axum's own accept retries transient errors (too many open files…).
        let (stream, peer) = axum::serve::Listener::accept(&mut listener).await;
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                // Scanners and agents that do not trust us end here; the
                // agent's own log says why, so this is only for debugging.
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop never ends by itself; if it was aborted, no
            // connection will come again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
