//! `SqliteStore::backup_to` makes a consistent, private copy of a database
//! in use without ever overwriting a file. (The audit log itself is tested on
//! every store in `rm-store-tests`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{enrol, open_temp, t, user};
use rm_store::prelude::*;
use rm_store::{
    AuditActor, AuditActorKind, AuditFilter, LogLineRecord, NewAuditEntry, NewJob, StoreError,
};
use rm_store_sqlite::SqliteStore;
use serde_json::json;

fn entry(at: i64, actor: AuditActor, action: &str, target: Option<&str>) -> NewAuditEntry {
    NewAuditEntry {
        at: t(at),
        actor,
        action: action.to_owned(),
        target_type: target.map(|_| "host".to_owned()),
        target_id: target.map(str::to_owned),
        details: json!({"n": at}),
        ip: Some("127.0.0.1".to_owned()),
        user_agent: Some("test-agent/1".to_owned()),
    }
}

#[tokio::test]
async fn backup_to_copies_a_database_in_use_into_a_new_private_file() {
    let (dir, store) = open_temp().await;
    let admin = user("admin");
    store.create_user(&admin, None).await.unwrap();
    let host = enrol(&store).await;
    let job = NewJob {
        id: rm_core::JobId::new(),
        host_id: host,
        kind: "backup".to_owned(),
        params: json!({"paths": ["/srv"]}),
        trigger: rm_core::JobTrigger::Manual,
        schedule_id: None,
        status: rm_core::JobStatus::Queued,
        error: None,
        created_at: t(10),
    };
    store.create_job(&job, None).await.unwrap();
    let lines: Vec<LogLineRecord> = (1..=100)
        .map(|seq| LogLineRecord {
            job_id: job.id,
            seq,
            ts: t(20),
            stream: "stdout".to_owned(),
            text: format!("line {seq}"),
        })
        .collect();
    store.append_logs(&lines).await.unwrap();

    // Writers keep going while the copy is made.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                store
                    .record_audit(&entry(
                        i,
                        AuditActor::of_kind(AuditActorKind::Cli),
                        "job.create",
                        None,
                    ))
                    .await
                    .unwrap();
            }
        })
    };
    let out = dir.path().join("copy.db");
    let bytes = store.backup_to(&out).await.unwrap();
    writer.await.unwrap();
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.len(), bytes);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let copy = SqliteStore::open(&format!("sqlite://{}", out.display()))
        .await
        .unwrap();
    assert_eq!(copy.user_by_name("admin").await.unwrap(), Some(admin));
    assert!(copy.host(host).await.unwrap().is_some());
    assert_eq!(copy.logs(job.id, 0, 1000).await.unwrap(), lines);
    // A consistent snapshot: some prefix of the concurrent writes, no gaps.
    let copied = copy
        .list_audit(&AuditFilter {
            limit: 500,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let ns: Vec<i64> = copied
        .iter()
        .map(|e| e.entry.details["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (0..ns.len() as i64).rev().collect::<Vec<_>>());
    copy.close().await;

    // An existing file is refused and left untouched.
    std::fs::write(&out, b"precious").unwrap();
    let err = store.backup_to(&out).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    // So is an empty one (VACUUM INTO alone would overwrite it).
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        store.backup_to(&empty).await,
        Err(StoreError::Conflict(_))
    ));
    // A missing folder is named.
    let nowhere = dir.path().join("no-such-dir").join("copy.db");
    let err = store.backup_to(&nowhere).await.unwrap_err().to_string();
    assert!(err.contains("no-such-dir"), "{err}");
    assert!(!nowhere.exists());
}
