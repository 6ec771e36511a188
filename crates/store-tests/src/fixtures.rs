//! Fixed instants and fixture rows (users, enrolment tokens, enrolled
//! hosts, job ids) for tests on any store.

// A fixture that cannot be stored is the calling test's failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use rm_core::token::TokenHash;
use rm_core::{HostId, JobId, JobStatus, JobTrigger, ScheduleId, TokenId, UserId};
use rm_store::{
    AgentToken, EnrollmentToken, Job, JobEnd, LogLineRecord, NewHost, NewJob, ScheduleRecord,
    Store, User,
};
use serde_json::json;
use ulid::Ulid;

/// A fixed instant plus `offset` milliseconds.
pub fn t(offset: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + offset).unwrap()
}

/// An admin created at `t(0)`.
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

/// An unused enrolment token named `web-1`, created at `t(0)`, expiring at
/// `t(expires)`.
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
async fn enrol_with(store: &dyn Store, token: EnrollmentToken) -> (HostId, TokenId) {
    store.create_enrollment_token(&token, None).await.unwrap();
    let (host, agent) = new_host();
    store
        .enroll_host(token.id, t(5), &host, &agent, None)
        .await
        .unwrap();
    (host.id, agent.id)
}

/// Enrols one host with a fresh unnamed token; returns its id.
pub async fn enrol(store: &dyn Store) -> HostId {
    let token = EnrollmentToken {
        name: None,
        ..enrollment(1_000_000)
    };
    enrol_with(store, token).await.0
}

/// Enrols one host with a fresh token named `web-1`; returns its id and
/// agent token id.
pub async fn enrol_with_agent(store: &dyn Store) -> (HostId, TokenId) {
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

/// A nightly schedule of `kind` on `host` in Berlin time, with jitter,
/// created at `t(created)`.
pub fn schedule(host: HostId, kind: &str, created: i64) -> ScheduleRecord {
    ScheduleRecord {
        id: ScheduleId::new(),
        host_id: host,
        kind: kind.to_owned(),
        cron: "0 3 * * *".to_owned(),
        timezone: Some("Europe/Berlin".to_owned()),
        params: json!({ "paths": ["/etc"], "tags": ["nightly"] }),
        enabled: true,
        jitter_seconds: 300,
        created_at: t(created),
        updated_at: t(created),
        policy: None,
    }
}

/// A queued backup of `host` created at `t(created)` (id [`job_id_at`]),
/// fired by `schedule` or, without one, started by hand.
pub fn backup_job(host: HostId, schedule: Option<ScheduleId>, created: i64) -> NewJob {
    NewJob {
        id: job_id_at(created),
        host_id: host,
        kind: "backup".to_owned(),
        params: json!({ "paths": ["/etc"] }),
        trigger: if schedule.is_some() {
            JobTrigger::Schedule
        } else {
            JobTrigger::Manual
        },
        schedule_id: schedule,
        status: JobStatus::Queued,
        error: None,
        created_at: t(created),
    }
}

/// A queued manual job of `kind` on `host` created at `t(created)` (id
/// [`job_id_at`]).
pub fn new_job(host: HostId, kind: &str, created: i64) -> NewJob {
    NewJob {
        id: job_id_at(created),
        host_id: host,
        kind: kind.to_owned(),
        params: json!({ "paths": ["/etc", "/home"], "tags": ["nightly"] }),
        trigger: JobTrigger::Manual,
        schedule_id: None,
        status: JobStatus::Queued,
        error: None,
        created_at: t(created),
    }
}

/// [`new_job`], created in `store`.
pub async fn create_job(store: &dyn Store, host: HostId, kind: &str, created: i64) -> Job {
    store
        .create_job(&new_job(host, kind, created), None)
        .await
        .unwrap()
}

/// A job's end at `t(at)` with `status`, exit code 0 and small stats.
pub fn end(status: JobStatus, at: i64) -> JobEnd {
    JobEnd {
        status,
        exit_code: Some(0),
        stats: json!({ "files_new": 3, "data_added": 1024 }),
        error: None,
        finished_at: t(at),
        provisional: false,
    }
}

/// Log line `seq` of `job` (even lines on stderr).
pub fn log_line(job: JobId, seq: u64) -> LogLineRecord {
    LogLineRecord {
        job_id: job,
        seq,
        ts: t(i64::try_from(seq).unwrap()),
        stream: if seq.is_multiple_of(2) {
            "stderr"
        } else {
            "stdout"
        }
        .to_owned(),
        text: format!("line {seq} of {job}"),
    }
}

/// [`log_line`]s `seqs` of `job`.
pub fn log_lines(job: JobId, seqs: std::ops::RangeInclusive<u64>) -> Vec<LogLineRecord> {
    seqs.map(|s| log_line(job, s)).collect()
}
