//! Enrolment against a minimal HTTP server: the request the agent sends,
//! the state it writes, and the errors an operator sees when something is
//! wrong, including the cases that must fail before any request is made.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rm_agent::state::StateDir;
use rm_agent::{enroll, AgentError, EnrollOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use support::{listener, within};

/// What the fake server received.
struct Seen {
    request_line: String,
    body: serde_json::Value,
}

/// Serves one HTTP request with `status` and `body`, reporting what it got.
fn serve_once(
    listener: TcpListener,
    status: &'static str,
    reply: &'static str,
) -> oneshot::Receiver<Seen> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (head_end, content_length) = loop {
            let Ok(n) = stream.read(&mut chunk).await else {
                return;
            };
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (pos + 4, length);
            }
        };
        while buf.len() < head_end + content_length {
            let Ok(n) = stream.read(&mut chunk).await else {
                return;
            };
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let body = serde_json::from_slice(&buf[head_end..]).unwrap_or(serde_json::Value::Null);
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
            reply.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
        let _ = tx.send(Seen {
            request_line: head.lines().next().unwrap_or_default().to_owned(),
            body,
        });
    });
    rx
}

fn options(server_url: &str, state_dir: &Path) -> EnrollOptions {
    EnrollOptions {
        server_url: server_url.to_owned(),
        token: "rme_enrol_token".to_owned(),
        name: Some("web-1".to_owned()),
        labels: Default::default(),
        state_dir: state_dir.to_path_buf(),
        force: false,
        trust: Default::default(),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn state_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("agent-state")
}

#[tokio::test]
async fn enrols_and_writes_a_private_state_file() {
    let (listener, url) = listener().await;
    let seen = serve_once(
        listener,
        "201 Created",
        r#"{"host_id":"01HOST","agent_token":"rma_new_token"}"#,
    );
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = state_dir(&tmp);

    // A path prefix and trailing slash, as behind a reverse proxy.
    let enrolled = within(
        10.0,
        "enrolment",
        enroll(options(&format!("{url}/rm/"), &dir)),
    )
    .await
    .unwrap_or_else(|e| panic!("enrol: {e}"));

    let seen = within(5.0, "the request", seen)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(seen.request_line, "POST /rm/api/v1/agents/enroll HTTP/1.1");
    assert_eq!(seen.body["token"], "rme_enrol_token");
    assert_eq!(seen.body["name"], "web-1");
    assert!(
        seen.body["hostname"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{}",
        seen.body
    );

    assert_eq!(enrolled.host_id, "01HOST");
    assert_eq!(enrolled.state_file, dir.join("agent.json"));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&enrolled.state_file), 0o600);
    let state = StateDir::new(&dir)
        .load_agent()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state.server_url, format!("{url}/rm"));
    assert_eq!(state.host_id, "01HOST");
    assert_eq!(state.agent_token, "rma_new_token");
}

#[tokio::test]
async fn refuses_to_overwrite_an_enrolment_without_force() {
    let (listener, url) = listener().await;
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = state_dir(&tmp);
    support::write_enrolment(&dir, "http://old.example:8080");
    let old_config = dir.join("config.json");
    std::fs::write(&old_config, "{}").unwrap_or_else(|e| panic!("{e}"));

    // Must fail before any request: the enrolment token is single-use.
    match enroll(options(&url, &dir)).await {
        Err(e @ AgentError::AlreadyEnrolled { .. }) => {
            let text = e.to_string();
            assert!(text.contains("--force"), "{text}");
            assert!(text.contains("agent.json"), "{text}");
        }
        other => panic!("expected AlreadyEnrolled, got {other:?}"),
    }
    let old = StateDir::new(&dir)
        .load_agent()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(old.server_url, "http://old.example:8080");
    assert!(old_config.exists());

    let seen = serve_once(
        listener,
        "201 Created",
        r#"{"host_id":"01NEW","agent_token":"rma_newer"}"#,
    );
    let mut forced = options(&url, &dir);
    forced.force = true;
    let enrolled = within(10.0, "forced enrolment", enroll(forced))
        .await
        .unwrap_or_else(|e| panic!("forced enrol: {e}"));
    assert_eq!(enrolled.host_id, "01NEW");
    within(5.0, "the request", seen)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let new = StateDir::new(&dir)
        .load_agent()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(new.agent_token, "rma_newer");
    // The old server's cached configuration must not outlive its enrolment.
    assert!(!old_config.exists());
}

#[tokio::test]
async fn surfaces_the_servers_error_message() {
    let (listener, url) = listener().await;
    let _seen = serve_once(
        listener,
        "401 Unauthorized",
        r#"{"error":{"code":"unauthorized","message":"enrolment token is already used or expired"}}"#,
    );
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = state_dir(&tmp);
    match within(10.0, "enrolment", enroll(options(&url, &dir))).await {
        Err(e @ AgentError::EnrollRejected { status: 401, .. }) => {
            assert!(
                e.to_string()
                    .contains("enrolment token is already used or expired"),
                "{e}"
            )
        }
        other => panic!("expected EnrollRejected, got {other:?}"),
    }
    assert!(!dir.join("agent.json").exists());
}

#[tokio::test]
async fn trust_flags_with_an_http_server_are_refused_before_any_request() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = state_dir(&tmp);
    let mut opts = options("http://127.0.0.1:1", &dir);
    opts.trust.insecure = true;
    match enroll(opts).await {
        Err(e @ AgentError::TlsSetup(_)) => {
            assert!(e.to_string().contains("only apply to an https://"), "{e}")
        }
        other => panic!("expected TlsSetup, got {other:?}"),
    }
    assert!(!dir.join("agent.json").exists());
}

#[tokio::test]
async fn bad_urls_and_empty_tokens_are_refused() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = state_dir(&tmp);
    for url in [
        "backup.example.com:8080",
        "ftp://backup.example.com",
        "http://",
    ] {
        let result = enroll(options(url, &dir)).await;
        assert!(
            matches!(result, Err(AgentError::InvalidServerUrl { .. })),
            "{url}: {result:?}"
        );
    }
    let mut empty = options("http://127.0.0.1:9", &dir);
    empty.token = "  ".into();
    let result = enroll(empty).await;
    assert!(
        matches!(result, Err(AgentError::InvalidToken { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_named() {
    let (listener, url) = listener().await;
    drop(listener);
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    match within(10.0, "enrolment", enroll(options(&url, &state_dir(&tmp)))).await {
        Err(e @ AgentError::ServerUnreachable { .. }) => {
            assert!(e.to_string().contains(&url), "{e}")
        }
        other => panic!("expected ServerUnreachable, got {other:?}"),
    }
}
