//! The sealing key as operators meet it, with the real binary: a server
//! whose key file is missing or another key refuses to start while sealed
//! repository settings exist, `admin reset-sealed-secrets` is the audited
//! way out, a sealed value copied onto another host's row does not open
//! there, and a database from before owner binding is re-sealed on start
//! and still reaches the real agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rm_core::sealing::{SealingKey, UNBOUND};
use rm_core::HostId;
use rm_protocol::{Frame, Message, RepositoryConfig, CURRENT_PROTOCOL_VERSION};
use rm_store::prelude::*;
use rm_store::{SealFormat, SealedRepository};
use rm_store_sqlite::SqliteStore;
use rm_testkit::{hello, wait_until, Api, RawAgent, ServerProcess};
use serde_json::{json, Value};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");

fn db_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("restic-manager.db").display())
}

fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(rm_server::KEY_FILE)
}

/// Runs `restic-manager <args>` to its end (at most 60 s); returns whether
/// it succeeded and what it printed (stdout then stderr).
async fn run(args: &[&str]) -> (bool, String) {
    let child = Command::new(BIN)
        .args(args)
        .env("RM_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`restic-manager {args:?}` did not end"))
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `server` on `data_dir` must exit on its own, failing; returns its output.
async fn refused_start(data_dir: &Path) -> String {
    let dir = data_dir.to_str().unwrap();
    let (ok, out) = run(&["server", "--listen", "127.0.0.1:0", "--data-dir", dir]).await;
    assert!(!ok, "the server started:\n{out}");
    out
}

/// Enrols a host through the API; returns its id and agent token.
async fn enrol(server: &ServerProcess, name: &str) -> (String, String) {
    let admin = server.admin().await.unwrap();
    let created = admin
        .create_enrollment_token(Some(name), None)
        .await
        .unwrap();
    let enrolled = server
        .anonymous()
        .enroll(&created.token, None, &format!("{name}.test"))
        .await
        .unwrap();
    (enrolled.host_id, enrolled.agent_token)
}

/// What the server pushes to an agent that says hello: its repository.
async fn repository_pushed(server: &ServerProcess, agent_token: &str) -> Option<RepositoryConfig> {
    let ws = format!("ws://{}/ws/agent", server.addr);
    let mut agent = RawAgent::connect_as(&ws, agent_token).await.unwrap();
    agent
        .send(Frame::new(hello(CURRENT_PROTOCOL_VERSION)))
        .await
        .unwrap();
    let frame = agent.recv().await.unwrap();
    let Message::ConfigUpdate(update) = frame.message else {
        panic!("expected config.update, got {frame:?}");
    };
    let _ = agent.close().await;
    update.repository
}

async fn has_repository(admin: &Api, host: &str) -> bool {
    let (status, body) = admin
        .get(&format!("/api/v1/hosts/{host}/repository"))
        .await
        .unwrap();
    assert!(status == 200 || status == 404, "{status}: {body}");
    status == 200
}

#[tokio::test]
async fn a_missing_or_different_key_stops_the_server_until_reset_sealed_secrets() {
    let mut server = ServerProcess::start(Path::new(BIN), &[]).await.unwrap();
    let (host, _) = enrol(&server, "web-01").await;
    let admin = server.admin().await.unwrap();
    admin
        .set_repository(&host, "/srv/backups/web-01", "repository password")
        .await
        .unwrap();
    assert!(server
        .terminate(Duration::from_secs(10))
        .await
        .unwrap()
        .success());
    let data_dir = server.data_dir().to_owned();
    let key = key_path(&data_dir);
    let original = std::fs::read(&key).unwrap();

    // Missing: refused, with the path and the way out; no new key made.
    std::fs::remove_file(&key).unwrap();
    let out = refused_start(&data_dir).await;
    for phrase in [
        &key.display().to_string(),
        "is missing",
        "1 host(s)",
        "restore",
        "restic-manager admin reset-sealed-secrets --yes",
        "No new key was made",
    ] {
        assert!(out.contains(phrase), "no {phrase:?} in:\n{out}");
    }
    assert!(!key.exists(), "a new key was made");

    // Another key: refused too, naming both fingerprints.
    let other = SealingKey::generate().unwrap();
    std::fs::write(&key, other.as_bytes()).unwrap();
    let recorded = SealingKey::from_bytes(&original).unwrap().fingerprint();
    let out = refused_start(&data_dir).await;
    for phrase in [
        &key.display().to_string(),
        "is not the key that sealed",
        &recorded,
        &other.fingerprint(),
        "restic-manager admin reset-sealed-secrets --yes",
    ] {
        assert!(out.contains(phrase), "no {phrase:?} in:\n{out}");
    }
    assert_eq!(std::fs::read(&key).unwrap(), other.as_bytes());

    // Without --yes the reset explains and changes nothing.
    let dir = data_dir.to_str().unwrap();
    let (ok, out) = run(&["admin", "reset-sealed-secrets", "--data-dir", dir]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("--yes") && out.contains("1 host(s)"), "{out}");
    assert!(out.contains("nothing was changed"), "{out}");
    let _ = refused_start(&data_dir).await;

    // With the key gone as well, --yes discards the settings and makes a key.
    std::fs::remove_file(&key).unwrap();
    let (ok, out) = run(&["admin", "reset-sealed-secrets", "--yes", "--data-dir", dir]).await;
    assert!(ok, "{out}");
    for phrase in [
        "Discarded the sealed repository settings of 1 host(s)",
        &format!("web-01 ({host})"),
        "Created the key",
        &key.display().to_string(),
        "Set the repository of each host above again",
    ] {
        assert!(out.contains(phrase), "no {phrase:?} in:\n{out}");
    }
    let made = SealingKey::from_bytes(&std::fs::read(&key).unwrap()).unwrap();
    assert!(out.contains(&made.fingerprint()), "{out}");

    // The server starts; the host has no repository; the reset is audited.
    server.start_again().await.unwrap();
    let admin = server.admin().await.unwrap();
    assert!(!has_repository(&admin, &host).await);
    let (status, audit) = admin
        .get("/api/v1/audit?action=sealed_secrets.reset")
        .await
        .unwrap();
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["actor"]["kind"], "cli");
    assert_eq!(entries[0]["details"]["hosts"], 1);
    assert_eq!(entries[0]["details"]["key_created"], true);
    assert_eq!(entries[0]["target_id"], made.fingerprint());

    // And a repository can be set again, sealed with the new key.
    admin
        .set_repository(&host, "/srv/backups/web-01", "repository password")
        .await
        .unwrap();
    assert!(has_repository(&admin, &host).await);
}

#[tokio::test]
async fn a_sealed_value_copied_onto_another_hosts_row_does_not_open_there() {
    let mut server = ServerProcess::start(Path::new(BIN), &[]).await.unwrap();
    let (a, a_token) = enrol(&server, "alpha").await;
    let (b, b_token) = enrol(&server, "bravo").await;
    let admin = server.admin().await.unwrap();
    admin
        .set_repository(&a, "/srv/backups/alpha", "password of alpha")
        .await
        .unwrap();
    admin
        .set_repository(&b, "/srv/backups/bravo", "password of bravo")
        .await
        .unwrap();
    assert!(server
        .terminate(Duration::from_secs(10))
        .await
        .unwrap()
        .success());

    // Someone with write access to the database copies A's sealed settings
    // onto B's row.
    let store = SqliteStore::open(&db_url(server.data_dir())).await.unwrap();
    let a_id: HostId = a.parse().unwrap();
    let b_id: HostId = b.parse().unwrap();
    let a_value = store.repository(a_id).await.unwrap().unwrap();
    assert_eq!(a_value.format, SealFormat::OwnerBound);
    store
        .set_repository(b_id, &a_value, "/srv/backups/alpha", None)
        .await
        .unwrap();
    store.close().await;

    server.start_again().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (status, body) = admin
        .get(&format!("/api/v1/hosts/{a}/repository"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["url"], "/srv/backups/alpha");
    let (status, body) = admin
        .get(&format!("/api/v1/hosts/{b}/repository"))
        .await
        .unwrap();
    assert_eq!(status, 500, "{body}");
    let owner = format!("host:{b}/repository");
    wait_until(
        Duration::from_secs(5),
        "the error in the server log",
        || {
            let found = server.log().contains(&owner);
            async move { found }
        },
    )
    .await
    .unwrap();
    let log = server.log();
    assert!(log.contains("sealed for another owner"), "{log}");

    // B's agent gets no repository (not A's); A's agent gets its own.
    assert_eq!(repository_pushed(&server, &b_token).await, None);
    let pushed = repository_pushed(&server, &a_token).await.unwrap();
    assert_eq!(pushed.url, "/srv/backups/alpha");
    assert_eq!(pushed.password, "password of alpha");

    // Setting B's repository again repairs it.
    admin
        .set_repository(&b, "/srv/backups/bravo", "password of bravo")
        .await
        .unwrap();
    let pushed = repository_pushed(&server, &b_token).await.unwrap();
    assert_eq!(pushed.password, "password of bravo");
}

#[tokio::test]
async fn settings_sealed_before_owner_binding_are_resealed_on_start_and_reach_the_agent() {
    const PASSWORD: &str = "password sealed the old way";
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let init = rm_testkit::restic::command()
        .arg("init")
        .env("RESTIC_REPOSITORY", &repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();
    assert!(init.status.success(), "{init:?}");

    let mut server = ServerProcess::start(Path::new(BIN), &[]).await.unwrap();
    let agent = server
        .enrolled_agent(
            Path::new(BIN),
            "old-timer",
            &rm_testkit::restic::binary(),
            &[("RM_RESTART_SPREAD", "1")],
        )
        .await
        .unwrap();
    assert!(server
        .terminate(Duration::from_secs(10))
        .await
        .unwrap()
        .success());

    // The database as the release before wrote it: the settings sealed
    // without associated data, no key fingerprint recorded.
    let data_dir = server.data_dir().to_owned();
    let key = SealingKey::from_bytes(&std::fs::read(key_path(&data_dir)).unwrap()).unwrap();
    let config = RepositoryConfig {
        url: repo.display().to_string(),
        password: PASSWORD.to_owned(),
        env: BTreeMap::new(),
        copy_to: None,
    };
    let sealed = key
        .seal(&serde_json::to_vec(&config).unwrap(), UNBOUND)
        .unwrap();
    let host: HostId = agent.host_id.parse().unwrap();
    let store = SqliteStore::open(&db_url(&data_dir)).await.unwrap();
    store
        .set_repository(
            host,
            &SealedRepository {
                nonce: sealed.nonce,
                ciphertext: sealed.ciphertext,
                format: SealFormat::Unbound,
                updated_at: chrono::Utc::now(),
            },
            "/srv/restic",
            None,
        )
        .await
        .unwrap();
    store.close().await;
    let sqlite = Command::new("sqlite3")
        .args(["-cmd", ".timeout 10000"])
        .arg(data_dir.join("restic-manager.db"))
        .arg("DELETE FROM sealing_key;")
        .output()
        .await
        .unwrap();
    assert!(sqlite.status.success(), "{sqlite:?}");

    server.start_again().await.unwrap();
    let store = SqliteStore::open(&db_url(&data_dir)).await.unwrap();
    let rows = store.sealed_repositories().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, host);
    assert_eq!(rows[0].1.format, SealFormat::OwnerBound);
    let record = store.sealing_key_record().await.unwrap().unwrap();
    assert_eq!(record.fingerprint, key.fingerprint());
    // Bound to its host now: the old way no longer opens it.
    let resealed = rm_core::sealing::Sealed {
        nonce: rows[0].1.nonce.clone(),
        ciphertext: rows[0].1.ciphertext.clone(),
    };
    assert!(key.open(&resealed, UNBOUND).is_err());
    assert!(key
        .open(&resealed, format!("host:{host}/repository").as_bytes())
        .is_ok());

    // The real agent reconnects, gets the settings, and restic opens the
    // repository with the password.
    let admin = server.admin().await.unwrap();
    wait_until(Duration::from_secs(30), "the agent to reconnect", || {
        let admin = admin.clone();
        let id = agent.host_id.clone();
        async move { matches!(admin.host(&id).await, Ok(h) if h.online) }
    })
    .await
    .unwrap();
    let job = admin
        .start_job(&agent.host_id, "snapshots", json!({}))
        .await
        .unwrap();
    let finished: Value = admin
        .finished_job(&job, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(finished["status"], "succeeded", "{finished}");

    // A second start re-seals nothing: the migration is done once.
    assert!(server
        .terminate(Duration::from_secs(10))
        .await
        .unwrap()
        .success());
    server.start_again().await.unwrap();
    let again = store.sealed_repositories().await.unwrap();
    assert_eq!(again, rows);
    assert_eq!(store.sealing_key_record().await.unwrap(), Some(record));
    store.close().await;
}

/// A store in `dir` with one host (inserted as the release before would
/// have), and its id.
async fn store_with_a_host(dir: &Path) -> (SqliteStore, HostId) {
    let store = SqliteStore::open(&db_url(dir)).await.unwrap();
    let host = HostId::new();
    let sqlite = Command::new("sqlite3")
        .args(["-cmd", ".timeout 10000"])
        .arg(dir.join("restic-manager.db"))
        .arg(format!(
            "INSERT INTO hosts (id, name, hostname, enrolled_at) VALUES ('{host}', 'h', 'h', 0);"
        ))
        .output()
        .await
        .unwrap();
    assert!(sqlite.status.success(), "{sqlite:?}");
    (store, host)
}

fn unbound(key: &SealingKey, plaintext: &[u8]) -> SealedRepository {
    let sealed = key.seal(plaintext, UNBOUND).unwrap();
    SealedRepository {
        nonce: sealed.nonce,
        ciphertext: sealed.ciphertext,
        format: SealFormat::Unbound,
        // Whole milliseconds, as the store keeps them.
        updated_at: chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
    }
}

#[tokio::test]
async fn a_store_with_nothing_sealed_makes_its_key_and_adopts_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&db_url(dir.path())).await.unwrap();
    let path = key_path(dir.path());
    let first = rm_server::sealing::unlock(&store, &path).await.unwrap();
    let record = store.sealing_key_record().await.unwrap().unwrap();
    assert_eq!(record.fingerprint, first.fingerprint());
    let again = rm_server::sealing::unlock(&store, &path).await.unwrap();
    assert_eq!(again.as_bytes(), first.as_bytes());
    assert_eq!(store.sealing_key_record().await.unwrap(), Some(record));

    // Nothing sealed, so nothing is lost: a missing key is made anew and
    // recorded (a warning says database copies from before need the old).
    std::fs::remove_file(&path).unwrap();
    let second = rm_server::sealing::unlock(&store, &path).await.unwrap();
    assert_ne!(second.fingerprint(), first.fingerprint());
    assert_eq!(
        store
            .sealing_key_record()
            .await
            .unwrap()
            .unwrap()
            .fingerprint,
        second.fingerprint()
    );
}

#[tokio::test]
async fn without_a_recorded_fingerprint_the_key_must_open_the_old_values() {
    let dir = tempfile::tempdir().unwrap();
    let (store, host) = store_with_a_host(dir.path()).await;
    let right = SealingKey::generate().unwrap();
    let value = unbound(&right, br#"{"url":"/r","password":"p","env":{}}"#);
    store
        .set_repository(host, &value, "/srv/restic", None)
        .await
        .unwrap();
    let path = key_path(dir.path());

    // Another key opens nothing: refused, and nothing changed.
    let wrong = SealingKey::generate().unwrap();
    std::fs::write(&path, wrong.as_bytes()).unwrap();
    let e = rm_server::sealing::unlock(&store, &path)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not open") && e.contains("1 host(s)"),
        "{e}"
    );
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert_eq!(store.sealing_key_record().await.unwrap(), None);
    assert_eq!(store.repository(host).await.unwrap(), Some(value.clone()));

    // The right key: re-sealed bound to the host, and recorded.
    std::fs::write(&path, right.as_bytes()).unwrap();
    rm_server::sealing::unlock(&store, &path).await.unwrap();
    let stored = store.repository(host).await.unwrap().unwrap();
    assert_eq!(stored.format, SealFormat::OwnerBound);
    assert_eq!(stored.updated_at, value.updated_at);
    assert_eq!(
        store
            .sealing_key_record()
            .await
            .unwrap()
            .unwrap()
            .fingerprint,
        right.fingerprint()
    );
}

#[tokio::test]
async fn a_damaged_old_value_is_left_alone_while_the_others_are_resealed() {
    let server = rm_testkit::TestServer::start().await.unwrap();
    let (good, _) = server.enrolled_host("good").await.unwrap();
    let (damaged, _) = server.enrolled_host("damaged").await.unwrap();
    let key = SealingKey::from_bytes(&std::fs::read(key_path(server.data_dir())).unwrap()).unwrap();
    let config = RepositoryConfig {
        url: String::from("/srv/good"),
        password: String::from("good password"),
        env: BTreeMap::new(),
        copy_to: None,
    };
    let good_id: HostId = good.parse().unwrap();
    let damaged_id: HostId = damaged.parse().unwrap();
    server
        .store()
        .set_repository(
            good_id,
            &unbound(&key, &serde_json::to_vec(&config).unwrap()),
            "/srv/restic",
            None,
        )
        .await
        .unwrap();
    let mut broken = unbound(&key, b"{}");
    broken.ciphertext[0] ^= 1;
    server
        .store()
        .set_repository(damaged_id, &broken, "/srv/restic", None)
        .await
        .unwrap();

    let server = server.restart().await.unwrap();
    assert_eq!(
        server
            .store()
            .repository(good_id)
            .await
            .unwrap()
            .unwrap()
            .format,
        SealFormat::OwnerBound
    );
    assert_eq!(
        server.store().repository(damaged_id).await.unwrap(),
        Some(broken)
    );
    let admin = server.admin().await.unwrap();
    let (status, body) = admin
        .get(&format!("/api/v1/hosts/{good}/repository"))
        .await
        .unwrap();
    assert_eq!((status.as_u16(), &body["url"]), (200, &json!("/srv/good")));
    let (status, _) = admin
        .get(&format!("/api/v1/hosts/{damaged}/repository"))
        .await
        .unwrap();
    assert_eq!(status, 500);
}
