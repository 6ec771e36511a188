//! TLS end to end: the real server binary and the in-process test server
//! serving HTTPS/WSS with a self-signed certificate, and the real agent
//! binary enrolling and connecting with a CA certificate, a pinned
//! fingerprint or `--insecure` — and refusing what it must refuse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rm_testkit::{AgentProcess, TestCert, TestServer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const LIMIT: Duration = Duration::from_secs(15);

fn bin() -> &'static Path {
    Path::new(BIN)
}

fn restic() -> PathBuf {
    rm_testkit::restic::binary()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `agent enroll` against `server` with `args`; returns the output and
/// the state directory.
async fn enroll(
    server: &TestServer,
    dir: &Path,
    name: &str,
    args: &[&str],
) -> (std::process::Output, PathBuf) {
    let admin = server.admin().await.unwrap();
    let created = admin
        .create_enrollment_token(Some(name), None)
        .await
        .unwrap();
    let state_dir = dir.join(name);
    let out = AgentProcess::enroll(bin(), &server.url, &created.token, &state_dir, args)
        .await
        .unwrap();
    (out, state_dir)
}

#[tokio::test]
async fn an_agent_enrols_over_https_with_a_ca_certificate_and_connects_over_wss() {
    let server = TestServer::start_tls().await.unwrap();
    let cert = server.tls_cert().unwrap();
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );

    // The enrolment command pins the server's certificate.
    let created = server
        .admin()
        .await
        .unwrap()
        .create_enrollment_token(Some("web"), None)
        .await
        .unwrap();
    assert!(
        created.enroll_command.ends_with(&format!(
            "--name web --server-fingerprint {}",
            cert.fingerprint
        )),
        "{}",
        created.enroll_command
    );
    assert!(created
        .enroll_command
        .contains(&format!("--server {}", server.url)));
    // The one-liner fetches the installer, which carries the fingerprint.
    assert_eq!(
        created.command,
        format!(
            "curl -fsSL {}/install.sh | sudo sh -s -- --token {} --name web",
            server.url, created.token
        )
    );

    let agent = server
        .enrolled_agent_with(
            bin(),
            "ca-host",
            &restic(),
            &[],
            &["--ca-cert", path(&cert.cert_path)],
        )
        .await
        .unwrap();
    // `run` got no flags: the trust was saved at enrolment, CA by content.
    let state = std::fs::read_to_string(agent.state_dir.join("agent.json")).unwrap();
    assert!(state.contains("BEGIN CERTIFICATE"), "{state}");
    assert!(!agent.process.log().contains("INSECURE"));
    let host = server
        .admin()
        .await
        .unwrap()
        .host(&agent.host_id)
        .await
        .unwrap();
    assert!(host.online);
}

#[tokio::test]
async fn a_pinned_fingerprint_alone_trusts_a_self_signed_server() {
    let server = TestServer::start_tls().await.unwrap();
    let fingerprint = server.tls_cert().unwrap().fingerprint.to_string();
    let agent = server
        .enrolled_agent_with(
            bin(),
            "pinned",
            &restic(),
            &[],
            &["--server-fingerprint", &fingerprint],
        )
        .await
        .unwrap();
    assert!(server.host_online(&agent.host_id).await);

    // A `run` flag overrides the saved pin: a wrong one is refused at connect.
    let other = TestCert::generate().unwrap().fingerprint.to_string();
    let wrong = AgentProcess::spawn(
        bin(),
        &agent.state_dir,
        &restic(),
        &[("RM_SERVER_FINGERPRINT", other.as_str())],
    )
    .unwrap();
    wrong.wait_for_log("pinned to", LIMIT).await.unwrap();
    let log = wrong.log();
    assert!(log.contains(&other) && log.contains(&fingerprint), "{log}");
}

#[tokio::test]
async fn a_wrong_fingerprint_is_refused_naming_both() {
    let server = TestServer::start_tls().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let actual = server.tls_cert().unwrap().fingerprint.to_string();
    let pinned = TestCert::generate().unwrap().fingerprint.to_string();
    let (out, state_dir) = enroll(
        &server,
        tmp.path(),
        "wrong-pin",
        &["--server-fingerprint", &pinned],
    )
    .await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("has fingerprint {actual}"))
            && stderr.contains(&format!("pinned to {pinned}")),
        "{stderr}"
    );
    assert!(!state_dir.join("agent.json").exists());
    // Nothing was enrolled: the token was never sent.
    assert!(server
        .admin()
        .await
        .unwrap()
        .hosts()
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn without_a_ca_or_a_pin_the_certificate_is_not_trusted() {
    let server = TestServer::start_tls().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (out, state_dir) = enroll(&server, tmp.path(), "untrusted", &[]).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    for needle in [
        "certificate for 127.0.0.1 is not trusted",
        "--ca-cert",
        "--server-fingerprint",
        &server.tls_cert().unwrap().fingerprint.to_string(),
    ] {
        assert!(stderr.contains(needle), "{needle:?} missing from: {stderr}");
    }
    assert!(!state_dir.join("agent.json").exists());
}

#[tokio::test]
async fn insecure_connects_and_warns_at_enrolment_and_every_connect() {
    let server = TestServer::start_tls().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (out, state_dir) = enroll(&server, tmp.path(), "insecure", &["--insecure"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("INSECURE"),
        "{}",
        text(&out.stderr)
    );

    let host_id = server.admin().await.unwrap().hosts().await.unwrap()[0]
        .id
        .clone();
    let agent = AgentProcess::spawn(bin(), &state_dir, &restic(), &[]).unwrap();
    rm_testkit::wait_until(LIMIT, "the insecure agent to connect", || {
        server.host_online(&host_id)
    })
    .await
    .unwrap();
    assert!(agent.log().contains("INSECURE"), "{}", agent.log());
}

#[tokio::test]
async fn insecure_cannot_be_combined_with_a_pin() {
    let server = TestServer::start_tls().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fingerprint = server.tls_cert().unwrap().fingerprint.to_string();
    let (out, _) = enroll(
        &server,
        tmp.path(),
        "both",
        &["--insecure", "--server-fingerprint", &fingerprint],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--insecure"),
        "{}",
        text(&out.stderr)
    );
}

async fn server_output(args: &[&str]) -> std::process::Output {
    let data = tempfile::tempdir().unwrap();
    tokio::time::timeout(
        LIMIT,
        Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .args(args)
            .env("RM_ADMIN_PASSWORD", "a-test-password")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the server should have refused to start")
    .unwrap()
}

#[tokio::test]
async fn the_server_refuses_half_or_unusable_tls_settings_clearly() {
    let cert = TestCert::generate().unwrap();
    let other = TestCert::generate().unwrap();

    let out = server_output(&["--tls-cert", path(&cert.cert_path)]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--tls-key"),
        "{}",
        text(&out.stderr)
    );
    let out = server_output(&["--tls-key", path(&cert.key_path)]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--tls-cert"),
        "{}",
        text(&out.stderr)
    );

    let missing = cert.cert_path.with_file_name("missing.crt");
    let out = server_output(&[
        "--tls-cert",
        path(&missing),
        "--tls-key",
        path(&cert.key_path),
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(path(&missing)),
        "{}",
        text(&out.stderr)
    );

    // The key files swapped: PEM of the wrong kind names the file.
    let out = server_output(&[
        "--tls-cert",
        path(&cert.key_path),
        "--tls-key",
        path(&cert.cert_path),
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(path(&cert.key_path)),
        "{}",
        text(&out.stderr)
    );

    // Another certificate's key does not fit.
    let out = server_output(&[
        "--tls-cert",
        path(&cert.cert_path),
        "--tls-key",
        path(&other.key_path),
    ])
    .await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("does not fit") && stderr.contains(path(&other.key_path)),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_server_binary_serves_https_and_prints_its_fingerprint() {
    let cert = TestCert::generate().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("RM_TLS_CERT", &cert.cert_path)
        .env("RM_TLS_KEY", &cert.key_path)
        .env("RM_ADMIN_PASSWORD", "a-test-password")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = None;
    let mut fingerprint = None;
    tokio::time::timeout(LIMIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("restic-manager server listening on ") {
                url = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(rest) = line.strip_prefix("TLS certificate fingerprint: ") {
                fingerprint = Some(rest.trim().to_owned());
                break;
            }
        }
    })
    .await
    .unwrap();
    let url = url.unwrap();
    assert!(url.starts_with("https://"), "{url}");
    assert_eq!(fingerprint, Some(cert.fingerprint.to_string()));

    let health = cert
        .client()
        .unwrap()
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    // Plain HTTP on the TLS port gets nowhere.
    let plain = rm_testkit::http::client()
        .get(format!("{}/healthz", url.replacen("https", "http", 1)))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // The offline admin command pins the same certificate.
    let out = Command::new(BIN)
        .args(["admin", "create-enrollment-token", "--data-dir"])
        .arg(data.path())
        .env("RM_TLS_CERT", &cert.cert_path)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // stdout: the one-liner; stderr: the enrol-only line, pinned.
    let command = text(&out.stdout);
    assert!(
        command
            .starts_with("curl -fsSL https://127.0.0.1:8080/install.sh | sudo sh -s -- --token "),
        "{command}"
    );
    let enroll = text(&out.stderr);
    assert!(
        enroll.contains("--server https://127.0.0.1:8080")
            && enroll.contains(&format!("--server-fingerprint {}", cert.fingerprint)),
        "{enroll}"
    );
    child.start_kill().unwrap();
}
