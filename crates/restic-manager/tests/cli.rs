//! The command line as an operator meets it: help texts, starting the
//! server, offline administration against a live server's database, and
//! consistent copies of that database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rm_protocol::JobOutcome;
use rm_store::prelude::*;
use rm_store_sqlite::SqliteStore;
use rm_testkit::{Api, RawAgent, ServerProcess, TestServer, ADMIN_PASSWORD};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");

async fn run(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        drop(pipe);
    }
    child.wait_with_output().await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn every_command_explains_itself() {
    for (args, phrase) in [
        (vec!["--help"], "control plane for restic"),
        (vec!["server", "--help"], "RM_LISTEN"),
        (vec!["server", "--help"], "RM_DATABASE_URL"),
        (vec!["agent", "enroll", "--help"], "enrolment token"),
        (vec!["agent", "run", "--help"], "reconnects"),
        (vec!["admin", "create-user", "--help"], "password-stdin"),
        (vec!["admin", "reset-password", "--help"], "sessions"),
        (vec!["admin", "create-api-token", "--help"], "printed once"),
        (
            vec!["admin", "create-enrollment-token", "--help"],
            "enrols a host",
        ),
        (vec!["admin", "backup-db", "--help"], "secret.key"),
        (vec!["admin", "backup", "--help"], "--to"),
        (vec!["admin", "reset-sealed-secrets", "--help"], "--yes"),
        (
            vec!["admin", "reset-sealed-secrets", "--help"],
            "secret.key",
        ),
    ] {
        let out = run(&args, None).await;
        assert!(out.status.success(), "{args:?}");
        let help = text(&out.stdout);
        assert!(
            help.contains(phrase),
            "{args:?} help lacks {phrase:?}:\n{help}"
        );
    }
}

#[tokio::test]
async fn admin_commands_manage_users_and_api_tokens_of_a_running_server() {
    let server = TestServer::start().await.unwrap();
    let data_dir = server.data_dir().to_str().unwrap().to_owned();

    let out = run(
        &[
            "admin",
            "create-user",
            "--username",
            "alice",
            "--password-stdin",
            "--data-dir",
            &data_dir,
        ],
        Some("alice-password-1\n"),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let alice = server
        .anonymous()
        .login("alice", "alice-password-1")
        .await
        .unwrap();
    assert_eq!(alice.get("/api/v1/hosts").await.unwrap().0, 200);

    // A taken name is refused with a clear message.
    let out = run(
        &[
            "admin",
            "create-user",
            "--username",
            "alice",
            "--password-stdin",
            "--data-dir",
            &data_dir,
        ],
        Some("another-password\n"),
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("alice"), "{}", text(&out.stderr));

    // With a role and a scope; a scope on an admin, or a bad role, is
    // refused before anything is written.
    let out = run(
        &[
            "admin",
            "create-user",
            "--username",
            "vera",
            "--password-stdin",
            "--role",
            "viewer",
            "--scope",
            "team=web",
            "--data-dir",
            &data_dir,
        ],
        Some("vera-password-1\n"),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("(viewer)"));
    let vera = server
        .anonymous()
        .login("vera", "vera-password-1")
        .await
        .unwrap();
    let (_, me) = vera.get("/api/v1/auth/me").await.unwrap();
    assert_eq!(me["role"], "viewer", "{me}");
    assert_eq!(me["scope"], serde_json::json!({"team": "web"}), "{me}");
    for (flags, words) in [
        (["--role", "admin", "--scope", "team=web"], "--scope"),
        (["--role", "root", "--scope", "team=web"], "unknown role"),
    ] {
        let mut args = vec![
            "admin",
            "create-user",
            "--username",
            "x1",
            "--password-stdin",
        ];
        args.extend(flags);
        args.extend(["--data-dir", &data_dir]);
        let out = run(&args, Some("x1-password-1\n")).await;
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(words), "{}", text(&out.stderr));
    }
    assert!(server.store().user_by_name("x1").await.unwrap().is_none());

    // A short password is refused before anything changes.
    let out = run(
        &[
            "admin",
            "reset-password",
            "--username",
            "alice",
            "--password-stdin",
            "--data-dir",
            &data_dir,
        ],
        Some("short\n"),
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("shorter than 8"));
    assert_eq!(alice.get("/api/v1/hosts").await.unwrap().0, 200);

    // Resetting without stdin generates and prints a password, and ends sessions.
    let out = run(
        &[
            "admin",
            "reset-password",
            "--username",
            "alice",
            "--data-dir",
            &data_dir,
        ],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let new_password = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .expect("generated password printed")
        .to_owned();
    assert_eq!(alice.get("/api/v1/hosts").await.unwrap().0, 401);
    assert!(server
        .anonymous()
        .login("alice", "alice-password-1")
        .await
        .is_err());
    server
        .anonymous()
        .login("alice", &new_password)
        .await
        .unwrap();

    let out = run(
        &[
            "admin",
            "create-api-token",
            "--username",
            "alice",
            "--name",
            "ci",
            "--data-dir",
            &data_dir,
        ],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert!(token.starts_with("rmt."), "{token}");
    let api = Api::new(&server.url, Some(token));
    assert_eq!(api.get("/api/v1/hosts").await.unwrap().0, 200);

    let out = run(
        &[
            "admin",
            "create-api-token",
            "--username",
            "nobody",
            "--name",
            "x",
            "--data-dir",
            &data_dir,
        ],
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nobody"));

    // The audit log has each change, done by `cli` (and not the refusals).
    let (_, log) = api.get("/api/v1/audit?limit=500").await.unwrap();
    let by_cli: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"]["kind"] == "cli")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        by_cli,
        [
            "api_token.create",
            "user.password_reset",
            "user.create",
            "user.create"
        ]
    );
    assert!(!log.to_string().contains(&new_password));
}

/// Starts `restic-manager server` on port 0 and returns the child and the
/// URL it printed, plus everything else it printed before that.
async fn start_server(
    data_dir: &Path,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String, String) {
    let mut child = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if let Some(rest) = line.strip_prefix("restic-manager server listening on ") {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("server exited before listening:\n{printed}");
    })
    .await
    .unwrap();
    (child, url, printed)
}

async fn terminate(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().unwrap().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn first_start_prints_a_generated_admin_password_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, url, printed) = start_server(&data, &[]).await;
    let password = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .expect("password printed on first start")
        .to_owned();
    Api::new(&url, None)
        .login("admin", &password)
        .await
        .unwrap();
    assert!(terminate(&mut child).await.success());

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);

    // The second start creates nothing and prints no password.
    let (mut child, url, printed) = start_server(&data, &[]).await;
    assert!(!printed.contains("password:"), "{printed}");
    Api::new(&url, None)
        .login("admin", &password)
        .await
        .unwrap();
    assert!(terminate(&mut child).await.success());
}

#[tokio::test]
async fn the_first_admin_password_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, printed) =
        start_server(dir.path(), &[("RM_ADMIN_PASSWORD", "from-the-env-123")]).await;
    assert!(
        !printed.contains("from-the-env-123"),
        "the password must not be echoed"
    );
    Api::new(&url, None)
        .login("admin", "from-the-env-123")
        .await
        .unwrap();
    assert!(terminate(&mut child).await.success());
}

#[tokio::test]
async fn unusable_database_urls_are_refused_clearly_without_their_password() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    for (url, phrase) in [
        // Nothing listens on port 1: the error names the URL, masked.
        (
            "postgres://u:pw-never-shown@127.0.0.1:1/db",
            "could not open the database at postgres://u:***@127.0.0.1:1/db",
        ),
        (
            "mysql://u:pw-never-shown@127.0.0.1/db",
            "unsupported database URL scheme `mysql`",
        ),
    ] {
        let out = run(
            &[
                "server",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data_dir,
                "--database-url",
                url,
            ],
            None,
        )
        .await;
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(stderr.contains(phrase), "{stderr}");
        assert!(!stderr.contains("pw-never-shown"), "{stderr}");
    }
}

#[tokio::test]
async fn cluster_timings_that_would_let_a_lease_lapse_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    for (renew, expiry, phrase) in [
        (
            "5",
            "5",
            "--cluster-expiry-seconds (5) must be more than --cluster-renew-seconds (5)",
        ),
        // Against the default expiry (20 s).
        (
            "30",
            "",
            "--cluster-expiry-seconds (20) must be more than --cluster-renew-seconds (30)",
        ),
        ("0", "", "--cluster-renew-seconds"),
    ] {
        let mut args = vec![
            "server",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--cluster-renew-seconds",
            renew,
        ];
        if !expiry.is_empty() {
            args.extend(["--cluster-expiry-seconds", expiry]);
        }
        let out = run(&args, None).await;
        assert!(!out.status.success(), "{renew}/{expiry}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(phrase), "{renew}/{expiry}: {stderr}");
        assert!(
            !data_dir.exists(),
            "{renew}/{expiry}: the data folder was made"
        );
    }
}

#[tokio::test]
async fn an_agent_host_name_restic_could_misread_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().to_str().unwrap();
    for (name, phrase) in [
        ("-h", "must not start with `-`"),
        ("web 1", "whitespace"),
        ("", "1 to 253 characters"),
    ] {
        let hostname = format!("--hostname={name}");
        let out = run(
            &["agent", "run", "--state-dir", state_dir, hostname.as_str()],
            None,
        )
        .await;
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("--hostname") && stderr.contains(phrase),
            "{name:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn an_enrolment_token_made_offline_enrols_a_host() {
    let server = TestServer::start().await.unwrap();
    let data_dir = server.data_dir().to_str().unwrap().to_owned();
    let out = run(
        &[
            "admin",
            "create-enrollment-token",
            "--name",
            "db 02",
            "--public-url",
            &server.url,
            "--data-dir",
            &data_dir,
        ],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // stdout: the one-liner alone; stderr: also the enrol-only line.
    let command = text(&out.stdout).trim().to_owned();
    let prefix = format!(
        "curl -fsSL {}/install.sh | sudo sh -s -- --token ",
        server.url
    );
    assert!(command.starts_with(&prefix), "{command}");
    assert!(
        text(&out.stderr).contains(&format!(
            "restic-manager agent enroll --server {} --token ",
            server.url
        )),
        "{}",
        text(&out.stderr)
    );
    let token = command[prefix.len()..].split_whitespace().next().unwrap();
    let enrolled = server
        .anonymous()
        .enroll(token, None, "db02")
        .await
        .unwrap();
    let host = server
        .admin()
        .await
        .unwrap()
        .host(&enrolled.host_id)
        .await
        .unwrap();
    assert_eq!(host.name, "db 02");

    let out = run(
        &[
            "admin",
            "create-enrollment-token",
            "--ttl-seconds",
            "0",
            "--data-dir",
            &data_dir,
        ],
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ttl_seconds"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn backup_db_copies_a_live_database_and_never_overwrites() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let data_dir = server.data_dir().to_str().unwrap().to_owned();
    // Data worth keeping: a host with a repository and a finished job with
    // output (the automatic init, played by a hand-driven agent).
    let (host_id, agent_token) = server.enrolled_host("db-01").await.unwrap();
    admin
        .set_repository(&host_id, "/srv/restic-repo", "repo-password")
        .await
        .unwrap();
    let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &agent_token)
        .await
        .unwrap();
    let init = agent.next_run().await.unwrap();
    let lines = [
        "created restic repository 1a2b3c",
        "keep your password safe",
    ];
    agent
        .run_to_end(&init.job_id, JobOutcome::Succeeded, &lines)
        .await
        .unwrap();
    admin
        .finished_job(&init.job_id, Duration::from_secs(10))
        .await
        .unwrap();
    server.state.flush_logs().await;

    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("rm-backup.db");
    let out_arg = out.to_str().unwrap();
    let result = run(
        &[
            "admin",
            "backup-db",
            "--out",
            out_arg,
            "--data-dir",
            &data_dir,
        ],
        None,
    )
    .await;
    assert!(result.status.success(), "{}", text(&result.stderr));
    let said = text(&result.stdout);
    assert!(said.contains(out_arg), "{said}");
    let size = std::fs::metadata(&out).unwrap().len();
    assert!(said.contains(&format!("{size} bytes")), "{said}");
    assert!(said.contains("secret.key"), "{said}");
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The copy opens as a store and holds the data.
    let copy = SqliteStore::open(&format!("sqlite://{}", out.display()))
        .await
        .unwrap();
    let host = copy.host(host_id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(host.name, "db-01");
    assert!(host.has_repository);
    let job_id = init.job_id.parse().unwrap();
    let job = copy.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.status.to_string(), "succeeded");
    let copied: Vec<String> = copy
        .logs(job_id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert_eq!(copied, lines);
    assert!(copy.user_by_name("admin").await.unwrap().is_some());
    copy.close().await;

    // An existing file is refused and left as it was; the server goes on.
    let before = std::fs::read(&out).unwrap();
    let again = run(
        &[
            "admin",
            "backup-db",
            "--out",
            out_arg,
            "--data-dir",
            &data_dir,
        ],
        None,
    )
    .await;
    assert!(!again.status.success());
    let complaint = text(&again.stderr);
    assert!(
        complaint.contains("already exists") && complaint.contains(out_arg),
        "{complaint}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), before);
    assert_eq!(admin.hosts().await.unwrap().len(), 1);

    // The flags also come from the environment.
    let second = out_dir.path().join("second.db");
    let by_env = Command::new(BIN)
        .args(["admin", "backup-db"])
        .env("RM_TO", &second)
        .env("RM_DATA_DIR", &data_dir)
        .output()
        .await
        .unwrap();
    assert!(by_env.status.success(), "{}", text(&by_env.stderr));
    assert!(second.is_file());

    // No database there: refused, and none is created.
    let empty = tempfile::tempdir().unwrap();
    let missing = run(
        &[
            "admin",
            "backup-db",
            "--out",
            out_dir.path().join("third.db").to_str().unwrap(),
            "--data-dir",
            empty.path().to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("not found"),
        "{}",
        text(&missing.stderr)
    );
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
    assert!(!out_dir.path().join("third.db").exists());
}

/// The README's "back up the server", end to end: `admin backup --to` of a
/// running server, put back into a fresh data directory with the key file,
/// gives a server that starts, knows its hosts and opens their sealed
/// repository settings.
#[tokio::test]
async fn a_backup_restored_into_a_fresh_data_dir_is_a_working_server() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (host_id, _) = server.enrolled_host("kept-01").await.unwrap();
    admin
        .set_repository(&host_id, "/srv/restic-kept", "kept-password")
        .await
        .unwrap();
    let copies = tempfile::tempdir().unwrap();
    let copy = copies.path().join("rm-copy.db");
    let result = run(
        &[
            "admin",
            "backup",
            "--to",
            copy.to_str().unwrap(),
            "--data-dir",
            server.data_dir().to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(result.status.success(), "{}", text(&result.stderr));

    // Restore: the copy as the database, the key file beside it.
    let fresh = copies.path().join("fresh-data");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::copy(&copy, fresh.join("restic-manager.db")).unwrap();
    std::fs::copy(
        server.data_dir().join(rm_server::KEY_FILE),
        fresh.join(rm_server::KEY_FILE),
    )
    .unwrap();
    let restored = ServerProcess::start_in(
        Path::new(BIN),
        &fresh,
        "127.0.0.1:0".parse().unwrap(),
        &[],
        &[("RM_ADMIN_PASSWORD", "unused-the-admin-exists")],
    )
    .await
    .unwrap();
    let admin = restored
        .anonymous()
        .login("admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    let hosts = admin.hosts().await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].name, "kept-01");
    let (status, repository) = admin
        .get(&format!("/api/v1/hosts/{host_id}/repository"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{repository}");
    assert_eq!(repository["url"], "/srv/restic-kept");
}
