//! Set-up shared by the `SqliteStore` integration tests: a store in a
//! temporary directory, fixed instants, and fixture rows (users, enrolment
//! tokens, enrolled hosts, job ids).

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use rm_core::token::TokenHash;
use rm_core::{HostId, JobId, TokenId, UserId};
use rm_store::prelude::*;
use rm_store::{AgentToken, EnrollmentToken, Job, NewHost, User};
use rm_store_sqlite::SqliteStore;
use tempfile::TempDir;
use ulid::Ulid;

/// A fixed instant plus `offset` milliseconds.
pub fn t(offset: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + offset).unwrap()
}

/// The URL of the database file `rm.db` in `dir`.
pub fn db_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.path().join("rm.db").display())
}

/// A fresh store in a new temporary directory; keep the directory alive.
pub async fn open_temp() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&db_url(&dir)).await.unwrap();
    (dir, store)
}

/// An operator created at `t(0)`.
pub fn user(name: &str) -> User {
    User {
        id: UserId::new(),
        username: name.to_owned(),
        password_hash: "$argon2id$fake".to_owned(),
        created_at: t(0),
        role: rm_core::Role::Admin,
        scope: None,
    }
}

/// An unused enrolment token named `web-1`, created at `t(0)`.
pub fn enrollment(expires: i64) -> EnrollmentToken {
    EnrollmentToken {
        id: TokenId::new(),
        name: Some("web-1".to_owned()),
        token_hash: TokenHash::of("rme.x.y"),
        created_at: t(0),
        expires_at: t(expires),
        used_at: None,
        host_id: None,
        labels: Default::default(),
    }
}

/// A new host `web-1` and its agent token, created at `t(5)`.
pub fn new_host() -> (NewHost, AgentToken) {
    let id = HostId::new();
    let host = NewHost {
        id,
        name: "web-1".to_owned(),
        hostname: "web-1.example".to_owned(),
        labels: None,
    };
    let token = AgentToken {
        id: TokenId::new(),
        host_id: id,
        token_hash: TokenHash::of(&format!("rma.{id}")),
        created_at: t(5),
        pending: false,
    };
    (host, token)
}

/// Stores `token`, then spends it at `t(5)` on a new host; returns the
/// host's id and its agent token's id.
async fn enrol_with(store: &SqliteStore, token: EnrollmentToken) -> (HostId, TokenId) {
    store.create_enrollment_token(&token, None).await.unwrap();
    let (host, agent) = new_host();
    store
        .enroll_host(token.id, t(5), &host, &agent, None)
        .await
        .unwrap();
    (host.id, agent.id)
}

/// Enrols one host with a fresh unnamed token; returns its id.
pub async fn enrol(store: &SqliteStore) -> HostId {
    let token = EnrollmentToken {
        name: None,
        ..enrollment(1_000_000)
    };
    enrol_with(store, token).await.0
}

/// Enrols one host with a fresh token named `web-1`; returns its id and
/// agent token id.
pub async fn enrol_with_agent(store: &SqliteStore) -> (HostId, TokenId) {
    enrol_with(store, enrollment(1_000_000)).await
}

/// A job id whose ULID timestamp is `t(offset)`, as the server would mint
/// it at that moment.
pub fn job_id_at(offset: i64) -> JobId {
    let ms = u64::try_from(t(offset).timestamp_millis()).unwrap();
    JobId(Ulid::from_parts(ms, Ulid::new().random()))
}

/// The ids of `jobs`, in order.
pub fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}
