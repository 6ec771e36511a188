//! Real receivers for notification tests: [`HttpReceiver`], an HTTP server
//! on 127.0.0.1 that records every request and answers a chosen status
//! (and can be stopped and started again on the same port), and
//! [`SmtpReceiver`], Debian's `python3-aiosmtpd` writing what it receives
//! into a Maildir.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use tokio_util::sync::CancellationToken;

use crate::child::LoggedChild;

/// The `X-RM-Signature` a webhook body signed with `secret` must carry
/// (`sha256=<hex HMAC-SHA256>`), computed here independently of the server.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One request an [`HttpReceiver`] got.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path with its query (`/hooks/a?x=1`).
    pub path: String,
    /// Headers by lower-case name (the last value of a repeated one).
    pub headers: BTreeMap<String, String>,
    /// The body as sent.
    pub body: Vec<u8>,
    /// When it arrived (benches measure delivery times from it).
    pub received_at: chrono::DateTime<chrono::Utc>,
}

impl ReceivedRequest {
    /// A header's value, by any-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("the body is not JSON: {}", self.text()))
    }
}

struct Shared {
    requests: Mutex<Vec<ReceivedRequest>>,
    status: AtomicU16,
    changed: tokio::sync::Notify,
}

/// An HTTP server on 127.0.0.1 that records every request and answers
/// each with the status set by [`HttpReceiver::answer_with`] (200 at
/// first) and the body `answered <status>`.
pub struct HttpReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl HttpReceiver {
    /// Starts one on a free port.
    pub async fn start() -> anyhow::Result<HttpReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut receiver = HttpReceiver {
            addr: listener.local_addr()?,
            shared: Arc::new(Shared {
                requests: Mutex::new(Vec::new()),
                status: AtomicU16::new(200),
                changed: tokio::sync::Notify::new(),
            }),
            running: None,
        };
        receiver.serve(listener);
        Ok(receiver)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let shared = self.shared.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let shared = shared.clone();
                async move { record(&shared, method, uri, headers, body) }
            },
        );
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
        });
        self.running = Some((stop, task));
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers every later request with `status`.
    pub fn answer_with(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Waits until at least `n` requests arrived; returns them all.
    pub async fn wait_for(
        &self,
        n: usize,
        limit: Duration,
    ) -> anyhow::Result<Vec<ReceivedRequest>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.shared.changed.notified();
            let got = self.requests();
            if got.len() >= n {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                bail!(
                    "timed out after {limit:?} waiting for {n} request(s) at {}; got {}: {got:#?}",
                    self.addr,
                    got.len()
                );
            }
        }
    }

    /// Stops listening (connection refused from now on); the port stays
    /// this receiver's for [`HttpReceiver::restart`].
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("could not listen on {} again", self.addr))?;
        self.serve(listener);
        Ok(())
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.cancel();
            task.abort();
        }
    }
}

fn record(
    shared: &Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let request = ReceivedRequest {
        received_at: chrono::Utc::now(),
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| uri.path().to_owned()),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    if let Ok(mut requests) = shared.requests.lock() {
        requests.push(request);
    }
    shared.changed.notify_waiters();
    let status = shared.status.load(Ordering::SeqCst);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, format!("answered {}", status.as_u16()))
}

/// Debian's Python, which has `python3-aiosmtpd` (a pyenv or venv
/// `python3` earlier on PATH would not).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// `python3 -m aiosmtpd` on 127.0.0.1 (plain SMTP, no authentication),
/// keeping every message it accepts in a Maildir; killed when dropped.
pub struct SmtpReceiver {
    /// The port it listens on.
    pub port: u16,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
    child: LoggedChild,
}

impl SmtpReceiver {
    /// Starts one on a free port and waits until it accepts connections.
    /// Fails, saying how to install it, when aiosmtpd is missing.
    pub async fn start() -> anyhow::Result<SmtpReceiver> {
        SmtpReceiver::launch(None).await
    }

    /// [`SmtpReceiver::start`] offering (and requiring) STARTTLS with
    /// `cert` (a self-signed certificate nobody's roots trust).
    pub async fn start_starttls(cert: &crate::TestCert) -> anyhow::Result<SmtpReceiver> {
        SmtpReceiver::launch(Some(cert)).await
    }

    async fn launch(tls: Option<&crate::TestCert>) -> anyhow::Result<SmtpReceiver> {
        let check = std::process::Command::new(SYSTEM_PYTHON)
            .args(["-c", "import aiosmtpd"])
            .output();
        if !check.map(|o| o.status.success()).unwrap_or(false) {
            bail!("{SYSTEM_PYTHON} has no aiosmtpd: run scripts/test, or apt-get install python3-aiosmtpd");
        }
        let dir = tempfile::tempdir()?;
        let maildir = dir.path().join("mail");
        let port = crate::rclone::free_port();
        let mut command = tokio::process::Command::new(SYSTEM_PYTHON);
        command
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"]);
        if let Some(cert) = tls {
            command
                .arg("--tlscert")
                .arg(&cert.cert_path)
                .arg("--tlskey")
                .arg(&cert.key_path);
        }
        // The handler's argument goes last, after every option.
        command.arg(&maildir);
        let child = LoggedChild::spawn("aiosmtpd", command)?;
        let receiver = SmtpReceiver {
            port,
            maildir,
            _dir: dir,
            child,
        };
        crate::wait_until(
            Duration::from_secs(30),
            "aiosmtpd to listen",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            },
        )
        .await
        .with_context(|| format!("aiosmtpd log:\n{}", receiver.child.log()))?;
        Ok(receiver)
    }

    /// Every message received so far (raw, headers and body), oldest
    /// first.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| {
                let modified = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (modified, e.path())
            })
            .collect();
        files.sort();
        files
            .iter()
            .filter_map(|(_, path)| std::fs::read_to_string(path).ok())
            .collect()
    }

    /// Waits until at least `n` messages arrived; returns them all.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> anyhow::Result<Vec<String>> {
        crate::wait_until(limit, &format!("{n} message(s) at aiosmtpd"), || {
            let count = self.messages().len();
            async move { count >= n }
        })
        .await
        .with_context(|| format!("aiosmtpd log:\n{}", self.child.log()))?;
        Ok(self.messages())
    }
}
