//! A real store of the kind `RM_TEST_STORE` picks (SQLite by default; see
//! `rm_store_tests`), and hosts put straight into it, for tests of server
//! parts that run over a store without HTTP (the alert evaluator with a
//! manual clock).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rm_core::token::TokenHash;
use rm_core::{HostId, JobId, JobStatus, JobTrigger, Labels, TokenId};
use rm_store::prelude::*;
use rm_store::{AgentToken, EnrollmentToken, HelloRecord, JobEnd, NewHost, NewJob};
pub use rm_store_tests::TestDatabase;

/// A fresh, empty store; keep the guard alive as long as the store.
pub async fn temp_store() -> anyhow::Result<(TestDatabase, Arc<dyn Store>)> {
    Ok(rm_store_tests::open_temp_store().await?)
}

/// Enrols a host named `name` with `labels` at `at`; returns its id.
pub async fn enrol_host(
    store: &dyn Store,
    name: &str,
    labels: Labels,
    at: DateTime<Utc>,
) -> anyhow::Result<HostId> {
    let token = EnrollmentToken {
        id: TokenId::new(),
        name: Some(name.to_owned()),
        token_hash: TokenHash::of(&format!("rme.{name}.{}", TokenId::new())),
        created_at: at,
        expires_at: at + chrono::Duration::days(1),
        used_at: None,
        host_id: None,
        labels,
    };
    store.create_enrollment_token(&token, None).await?;
    let id = HostId::new();
    let host = NewHost {
        id,
        name: name.to_owned(),
        hostname: name.to_owned(),
        labels: None,
    };
    let agent = AgentToken {
        id: TokenId::new(),
        host_id: id,
        token_hash: TokenHash::of(&format!("rma.{id}")),
        created_at: at,
        pending: false,
    };
    store.enroll_host(token.id, at, &host, &agent, None).await?;
    Ok(id)
}

/// The server id [`connect_host`] records as holding the connection: no
/// running server has it.
pub const TEST_SERVER_ID: &str = "test-server";

/// Records an agent connection of `host` at `at` (online), held by
/// [`TEST_SERVER_ID`]; returns the connection id to pass to
/// `mark_host_offline`.
pub async fn connect_host(
    store: &dyn Store,
    host: HostId,
    at: DateTime<Utc>,
) -> anyhow::Result<String> {
    connect_host_to(store, host, TEST_SERVER_ID, at).await
}

/// [`connect_host`] with the connection held by server `server`.
pub async fn connect_host_to(
    store: &dyn Store,
    host: HostId,
    server: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<String> {
    let connection = TokenId::new().to_string();
    let hello = HelloRecord {
        connection_id: connection.clone(),
        server_id: server.to_owned(),
        agent_version: String::from("test"),
        restic_version: None,
        restic_error: None,
        protocol_version: 1,
        hostname: String::from("test"),
        os: String::from("linux"),
        arch: String::from("x86_64"),
        at,
        hooks: Vec::new(),
        hooks_refused: Vec::new(),
        platform: None,
    };
    store.record_hello(host, &hello).await?;
    Ok(connection)
}

/// Stores a `kind` job of `host` that ended with `status` at `at`.
pub async fn ended_job(
    store: &dyn Store,
    host: HostId,
    kind: &str,
    status: JobStatus,
    at: DateTime<Utc>,
) -> anyhow::Result<JobId> {
    let id = JobId::new();
    let job = NewJob {
        id,
        host_id: host,
        kind: kind.to_owned(),
        params: serde_json::json!({}),
        trigger: JobTrigger::Manual,
        schedule_id: None,
        status: JobStatus::Dispatched,
        error: None,
        created_at: at,
    };
    store.create_job(&job, None).await?;
    let end = JobEnd {
        status,
        exit_code: Some(0),
        stats: serde_json::json!({}),
        error: None,
        finished_at: at,
        provisional: false,
    };
    store.finish_job(id, &end, None).await?;
    Ok(id)
}

/// Stores a `kind` job of `host` that its agent is running since `at`.
pub async fn running_job(
    store: &dyn Store,
    host: HostId,
    kind: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<JobId> {
    let id = JobId::new();
    let job = NewJob {
        id,
        host_id: host,
        kind: kind.to_owned(),
        params: serde_json::json!({}),
        trigger: JobTrigger::Manual,
        schedule_id: None,
        status: JobStatus::Dispatched,
        error: None,
        created_at: at,
    };
    store.create_job(&job, None).await?;
    store.advance_job(id, JobStatus::Running, at).await?;
    Ok(id)
}
