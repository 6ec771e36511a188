//! Request and response bodies of the operator-facing JSON API (`/api/v1`).
//!
//! They live beside the wire protocol so API clients (the agent's enrolment,
//! the tests, future CLIs) share the server's exact shapes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// Every API error: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// The error.
    pub error: ApiErrorDetail,
}

/// The inside of an [`ApiError`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiErrorDetail {
    /// Stable machine-readable code (`bad_request`, `unauthorized`, `not_found`, …).
    pub code: String,
    /// What was wrong, naming the field or value.
    pub message: String,
}

/// `POST /api/v1/auth/login`.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A bearer token and when it stops working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
}

/// `POST /api/v1/enrollment-tokens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateEnrollmentToken {
    /// Name the enrolled host will get unless the agent names itself.
    #[serde(default)]
    pub name: Option<String>,
    /// Lifetime in seconds (default one hour, at most 30 days).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Labels the enrolled host carries from its first `hello`
    /// (`{"env": "prod"}`), so the policies that select them apply at once.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A fresh enrolment token; the secret is shown only here, once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollmentTokenCreated {
    /// The token's id (not secret).
    pub id: String,
    /// The single-use secret token.
    pub token: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// The line to paste on the new host: `curl -fsSL <server>/install.sh |
    /// sudo sh -s -- --token … [--name …]` (downloads, enrols and starts
    /// the agent; docs/install.md).
    pub command: String,
    /// For a host that already has the binary: `restic-manager agent
    /// enroll --server … --token … [--name …] [--server-fingerprint …]`.
    #[serde(default)]
    pub enroll_command: String,
}

/// `POST /api/v1/agents/enroll`.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollRequest {
    /// The enrolment token.
    pub token: String,
    /// The host's display name (defaults to the token's name, then the hostname).
    #[serde(default)]
    pub name: Option<String>,
    /// The machine's host name.
    pub hostname: String,
    /// Labels the host gets besides its token's (`agent enroll --labels`,
    /// the installer's `--labels`); a key the token sets must keep the
    /// token's value. Left out when empty, so older servers see the
    /// request they know.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("token", &"<redacted>")
            .field("name", &self.name)
            .field("hostname", &self.hostname)
            .field("labels", &self.labels)
            .finish()
    }
}

/// The enrolled host and its agent token (shown only here, once).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollResponse {
    /// The new host's id.
    pub host_id: String,
    /// The agent's bearer token for `/ws/agent`.
    pub agent_token: String,
}

impl std::fmt::Debug for EnrollResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollResponse")
            .field("host_id", &self.host_id)
            .field("agent_token", &"<redacted>")
            .finish()
    }
}

/// A host as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostView {
    /// Host id (ULID).
    pub id: String,
    /// Display name.
    pub name: String,
    /// The machine's host name as enrolled.
    pub hostname: String,
    /// Whether its agent is connected now.
    pub online: bool,
    /// When it enrolled.
    pub enrolled_at: DateTime<Utc>,
    /// Last frame received from its agent.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The agent's release version.
    pub agent_version: Option<String>,
    /// restic's version on the host.
    pub restic_version: Option<String>,
    /// Why restic's version is unknown, as the agent reported it.
    pub restic_error: Option<String>,
    /// The protocol version the agent spoke.
    pub protocol_version: Option<u32>,
    /// Operating system.
    pub os: Option<String>,
    /// CPU architecture.
    pub arch: Option<String>,
    /// The schedule-set version the server wants the agent to run.
    pub schedule_version: u64,
    /// The version the agent last acknowledged.
    pub schedule_applied_version: Option<u64>,
    /// Whether the agent runs the schedule set the server wants (applied
    /// version equals the wanted one); `false` means drifted.
    pub schedule_in_sync: bool,
    /// When the last backup finished.
    pub last_backup_at: Option<DateTime<Utc>>,
    /// How it ended.
    pub last_backup_status: Option<String>,
    /// Repository size in bytes, from the latest statistics.
    pub repo_size_bytes: Option<u64>,
    /// Snapshots of this host in its repository, from the agent's last
    /// report (`null` before the first).
    #[serde(default)]
    pub snapshot_count: Option<u64>,
    /// When the agent last confirmed a rotated token.
    #[serde(default)]
    pub token_rotated_at: Option<DateTime<Utc>>,
    /// Whether a rotated token waits for the agent's confirmation (both the
    /// old and the new token work meanwhile).
    #[serde(default)]
    pub token_rotation_pending: bool,
    /// When the agent's token was revoked; a revoked host stays listed but
    /// its agent can never connect again.
    #[serde(default)]
    pub agent_revoked_at: Option<DateTime<Utc>>,
    /// The hooks (`<state-dir>/hooks/<name>` on the host) backup jobs may
    /// name, as the agent listed them in its last `hello`.
    #[serde(default)]
    pub hooks: Vec<String>,
    /// Files in the host's hooks folder the agent refuses to run, and why.
    #[serde(default)]
    pub hooks_refused: Vec<crate::RefusedHook>,
    /// Why the stored repository settings are not used (they break the
    /// current rules, e.g. an `env` variable outside the allow-list; stored
    /// before the rule existed): they are not pushed to the agent and jobs
    /// are refused until usable settings are set. `null` when usable.
    #[serde(default)]
    pub repository_refused: Option<String>,
    /// The host's labels (`{"env": "prod"}`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The policy that applies to the host: the highest-priority one whose
    /// selector matches its labels (ties: the oldest). `null` when none does.
    #[serde(default)]
    pub policy_id: Option<String>,
    /// That policy's name.
    #[serde(default)]
    pub policy_name: Option<String>,
    /// Other policies whose selectors match but that lost on priority, by id
    /// (the host view says which one won).
    #[serde(default)]
    pub policies_outranked: Vec<String>,
    /// Where the repository comes from: `host` (set on the host itself),
    /// `policy` (the policy's repository template), or `null` (none).
    #[serde(default)]
    pub repository_source: Option<String>,
    /// The repository string, with any password in it hidden; hosts with the
    /// same one share the repository.
    #[serde(default)]
    pub repository_url: Option<String>,
    /// How many other hosts use the same repository.
    #[serde(default)]
    pub repository_shared_with: u64,
    /// Neither a repository nor a schedule, from the host or a policy: the
    /// host is not being backed up by anything.
    #[serde(default)]
    pub unconfigured: bool,
    /// The effective freshness: a backup older than this many seconds means
    /// the host is not protected.
    #[serde(default)]
    pub freshness_seconds: u64,
    /// Where [`HostView::freshness_seconds`] comes from: `host`, `policy` or
    /// `default` (26 hours).
    #[serde(default)]
    pub freshness_source: String,
    /// A successful (or partial) backup finished within
    /// `freshness_seconds`.
    #[serde(default)]
    pub protected: bool,
    /// When the last backup that saved a snapshot finished (a later failed
    /// one does not move it).
    #[serde(default)]
    pub last_backup_success_at: Option<DateTime<Utc>>,
    /// The effective offline threshold: offline longer than this many
    /// seconds fires `host_offline`.
    #[serde(default)]
    pub offline_seconds: u64,
    /// Where [`HostView::offline_seconds`] comes from: `host`, `policy` or
    /// `default` (an hour).
    #[serde(default)]
    pub offline_source: String,
    /// The platform the agent reported (`linux-x86_64`); `null` for an
    /// agent too old to upgrade itself.
    #[serde(default)]
    pub platform: Option<String>,
    /// The agent is older than the server (`POST /api/v1/agents/upgrade`
    /// upgrades it).
    #[serde(default)]
    pub agent_outdated: bool,
    /// Agent upgrades asked for and reported.
    #[serde(default)]
    pub agent_upgrade: AgentUpgradeView,
}

/// `PATCH /api/v1/hosts/{id}`: only the fields given change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PatchHost {
    /// New display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The host's labels, replacing the old ones (`{}` removes them all).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// The host's own freshness in seconds; `null` goes back to its
    /// policy's (or the default).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub freshness_seconds: Option<Option<u64>>,
    /// The host's own offline threshold in seconds (`host_offline`);
    /// `null` goes back to its policy's (or the default).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub offline_seconds: Option<Option<u64>>,
}

/// Tells a field that is present (even as `null`) from one left out.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A policy's repository template in a request.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyRepositoryRequest {
    /// restic's repository string; may hold `{host}` (the host's name) and
    /// `{host_id}`, so each host gets its own repository.
    pub url: String,
    /// The repository password; left out, the server makes a random one per
    /// repository and keeps it sealed.
    #[serde(default)]
    pub password: Option<String>,
    /// Extra environment for restic (backend keys), sealed like the password.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A second repository `copy` jobs copy every host's snapshots to
    /// (3-2-1); its URL may hold the same placeholders.
    #[serde(default)]
    pub copy_to: Option<PolicyCopyRequest>,
}

/// A policy's second repository (`copy_to`) in a request.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyCopyRequest {
    /// restic's repository string; may hold `{host}` and `{host_id}`.
    pub url: String,
    /// Its password; left out, generated per repository and sealed.
    #[serde(default)]
    pub password: Option<String>,
    /// Extra environment for its backend, sealed.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A repository template's fields as `{:?}` shows them: never the
/// password or the values of backend variables.
fn debug_template<'a, 'b: 'a>(
    f: &'a mut std::fmt::Formatter<'b>,
    name: &str,
    password: &Option<String>,
    env: &BTreeMap<String, String>,
) -> std::fmt::DebugStruct<'a, 'b> {
    let mut shown = f.debug_struct(name);
    shown
        .field("url", &"<template>")
        .field("password", &password.as_ref().map(|_| "<redacted>"))
        .field("env_keys", &env.keys().collect::<Vec<_>>());
    shown
}

impl std::fmt::Debug for PolicyCopyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_template(f, "PolicyCopyRequest", &self.password, &self.env).finish()
    }
}

impl std::fmt::Debug for PolicyRepositoryRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_template(f, "PolicyRepositoryRequest", &self.password, &self.env)
            .field("copy_to", &self.copy_to)
            .finish()
    }
}

/// One schedule of a policy in a request: a host schedule's fields, plus
/// the id of the policy schedule it replaces on `PUT` (without one, a
/// schedule takes the id of the old schedule of the same kind in the same
/// place, so editing a cron keeps the schedule's history on every host).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyScheduleRequest {
    /// The policy schedule's id, from the policy's view.
    #[serde(default)]
    pub id: Option<String>,
    /// `backup`, `forget`, `prune` or `check` (any schedulable kind).
    pub kind: String,
    /// Cron: 5 fields, 6 with leading seconds, or `@daily` and friends.
    pub cron: String,
    /// IANA time zone; the host's own when absent.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Job parameters for the kind (a `forget` may name a `preset`).
    #[serde(default)]
    pub params: serde_json::Value,
    /// Disabled schedules are kept but never fire (default true).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Random delay up to this many seconds added to each fire.
    #[serde(default)]
    pub jitter_seconds: u32,
}

/// `POST /api/v1/policies` and `PUT /api/v1/policies/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    /// Unique name.
    pub name: String,
    /// The labels a host must all have (`{}`: every host).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Higher wins when several policies match a host (default 0; -1000 to
    /// 1000).
    #[serde(default)]
    pub priority: Option<i32>,
    /// The repository every host it applies to gets.
    #[serde(default)]
    pub repository: Option<PolicyRepositoryRequest>,
    /// The schedules every host it applies to gets (retention is a `forget`
    /// schedule, with keep_* values or a `preset`).
    #[serde(default)]
    pub schedules: Vec<PolicyScheduleRequest>,
    /// A backup older than this many seconds means a host is not protected.
    #[serde(default)]
    pub freshness_seconds: Option<u64>,
    /// Offline longer than this many seconds fires `host_offline`.
    #[serde(default)]
    pub offline_seconds: Option<u64>,
}

/// A policy's repository template as shown back: never the password or the
/// values of backend variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyRepositoryView {
    /// The template, with any password in it hidden.
    pub url: String,
    /// `given` (one password for every repository) or `generated` (a random
    /// one per repository).
    pub password: String,
    /// Names of the extra environment variables.
    pub env_keys: Vec<String>,
    /// The second repository, shown the same way.
    #[serde(default)]
    pub copy_to: Option<PolicyCopyView>,
}

/// A policy's second repository as shown back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyCopyView {
    /// The template, with any password in it hidden.
    pub url: String,
    /// `given` or `generated`.
    pub password: String,
    /// Names of the extra environment variables.
    pub env_keys: Vec<String>,
}

/// A policy schedule as shown back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyScheduleView {
    /// Id (stable across edits of the policy).
    pub id: String,
    /// Job kind.
    pub kind: String,
    /// Cron expression.
    pub cron: String,
    /// Time zone, if set.
    pub timezone: Option<String>,
    /// Parameters.
    pub params: serde_json::Value,
    /// Whether it fires.
    pub enabled: bool,
    /// Jitter.
    pub jitter_seconds: u32,
    /// "every day at 02:30".
    pub description: String,
    /// The next fire times (server's zone when the host's own is meant).
    pub next_fires: Vec<DateTime<Utc>>,
}

/// A policy as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The labels a host must all have.
    pub selector: BTreeMap<String, String>,
    /// Higher wins.
    pub priority: i32,
    /// The repository template.
    pub repository: Option<PolicyRepositoryView>,
    /// The schedules.
    pub schedules: Vec<PolicyScheduleView>,
    /// Freshness in seconds, if the policy sets one.
    pub freshness_seconds: Option<u64>,
    /// Offline threshold in seconds, if the policy sets one.
    #[serde(default)]
    pub offline_seconds: Option<u64>,
    /// Hosts it applies to (it won on priority).
    pub hosts: u64,
    /// Of those, hosts whose agent runs the wanted schedule set.
    pub hosts_in_sync: u64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

/// One host a policy applies to (`GET /api/v1/policies/{id}/hosts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyHostView {
    /// Host id.
    pub host_id: String,
    /// Host name.
    pub name: String,
    /// Whether its agent is connected.
    pub online: bool,
    /// Whether the agent acknowledged the wanted schedule set.
    pub in_sync: bool,
    /// Wanted schedule-set version.
    pub schedule_version: u64,
    /// Acknowledged version.
    pub schedule_applied_version: Option<u64>,
    /// The host's labels.
    pub labels: BTreeMap<String, String>,
}

/// `POST /api/v1/jobs`: one job per matching online host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkJobRequest {
    /// Which hosts (`{}`: every host).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// The job kind.
    pub kind: String,
    /// Kind-specific parameters.
    #[serde(default)]
    pub params: serde_json::Value,
    /// At most this many of these jobs run at a time per repository.
    #[serde(default)]
    pub max_parallel: Option<u32>,
}

/// `POST /api/v1/agents/upgrade`: which hosts' agents to upgrade to the
/// server's version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentUpgradeRequest {
    /// Which hosts, as labels they must all have; `{}` means every host.
    /// Exactly one of `selector` and `host_id` is required.
    #[serde(default)]
    pub selector: Option<BTreeMap<String, String>>,
    /// One host (the host page's button).
    #[serde(default)]
    pub host_id: Option<String>,
}

/// A host whose agent was sent `agent.upgrade`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpgradeSent {
    /// Host id.
    pub host_id: String,
    /// Host name.
    pub name: String,
    /// The agent version it ran.
    pub from: String,
}

/// The answer to `POST /api/v1/agents/upgrade`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentUpgradeResult {
    /// The version agents are upgraded to (the server's).
    pub version: String,
    /// Connected agents sent `agent.upgrade` now.
    pub sent: Vec<UpgradeSent>,
    /// Hosts left out, and why. Reasons starting with `offline` are
    /// recorded: the agent is sent the upgrade when it reconnects.
    pub skipped: Vec<SkippedHost>,
}

/// A host's agent upgrade, as the host view shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentUpgradeView {
    /// The version asked for and not yet installed or failed (sent at the
    /// agent's next connection while it is older).
    #[serde(default)]
    pub requested_version: Option<String>,
    /// When it was asked for.
    #[serde(default)]
    pub requested_at: Option<DateTime<Utc>>,
    /// The agent's last report: `downloading`, `verified`,
    /// `waiting_for_job`, `installed` or `failed`.
    #[serde(default)]
    pub state: Option<String>,
    /// The version that report was about.
    #[serde(default)]
    pub version: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// When the agent reported it.
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
}

/// A host a bulk job left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SkippedHost {
    /// Host id.
    pub host_id: String,
    /// Host name.
    pub name: String,
    /// Why (`offline`, no repository, …).
    pub reason: String,
}

/// The answer to `POST /api/v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkJobCreated {
    /// The batch the jobs belong to.
    pub batch_id: String,
    /// The jobs, one per host that got one.
    pub jobs: Vec<JobView>,
    /// Matching hosts that got none.
    pub skipped: Vec<SkippedHost>,
}

/// `POST /api/v1/hosts/{id}/token/rotate` → 202: the new token went to the
/// connected agent; the old one works until the agent confirms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRotationStarted {
    /// The public id of the new token (`rma.<id>.…`; never the secret).
    pub token_id: String,
}

/// `POST /api/v1/hosts/{id}/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateJob {
    /// The job kind (`backup`, `forget`, …).
    pub kind: String,
    /// Kind-specific parameters (see [`crate::params`]).
    #[serde(default)]
    pub params: serde_json::Value,
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobView {
    /// Job id (ULID).
    pub id: String,
    /// The host that runs it.
    pub host_id: String,
    /// Kind.
    pub kind: String,
    /// Parameters.
    pub params: serde_json::Value,
    /// `queued`, `dispatched`, `running`, `succeeded`, `partial`, `failed`, `cancelled`.
    pub status: String,
    /// `manual`, `schedule` or `system`.
    pub trigger: String,
    /// The schedule that fired it, for `trigger: schedule`.
    pub schedule_id: Option<String>,
    /// restic's exit code.
    pub exit_code: Option<i32>,
    /// Statistics (JSON object).
    pub stats: serde_json::Value,
    /// What went wrong.
    pub error: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Sent to the agent.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// restic started.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A host's repository settings as shown back: never the password or the
/// values of backend variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepositoryView {
    /// restic's repository string.
    pub url: String,
    /// Names of the extra environment variables set.
    pub env_keys: Vec<String>,
    /// The second repository `copy` jobs copy to, if one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_to: Option<CopyTargetView>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// `host` (set on the host) or `policy`.
    #[serde(default = "host_source")]
    pub source: String,
    /// The policy that gives it, for `source: policy`.
    #[serde(default)]
    pub policy_id: Option<String>,
}

/// A repository's `copy_to` as shown back: no password, no env values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CopyTargetView {
    /// restic's repository string, any URL password masked.
    pub url: String,
    /// Names of its extra environment variables.
    pub env_keys: Vec<String>,
}

/// One row of repository statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepoStatsEntry {
    /// When they were taken.
    pub recorded_at: DateTime<Utc>,
    /// The figures.
    #[serde(flatten)]
    pub stats: crate::RepoStats,
}

/// `GET /api/v1/hosts/{id}/repo-stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepoStatsResponse {
    /// The newest row.
    pub latest: Option<RepoStatsEntry>,
    /// Rows newest first.
    pub history: Vec<RepoStatsEntry>,
}

/// `GET /api/v1/hosts/{id}/verification`: where the host's repository
/// stands in its rotating verification (`check` with `read_data:
/// "rotate"`). Hosts sharing a repository show the same record. A host
/// whose repository no rotating check has ended on yet gets `cycle: null`,
/// no subsets and coverage 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerificationView {
    /// The repository's identity (its URL without credentials); `null`
    /// when the host has no repository.
    pub repository: Option<String>,
    /// Runs in the current cycle (`read_data_subset` `n/cycle`); `null`
    /// before the first rotating check ended.
    pub cycle: Option<u32>,
    /// The subsets that passed in the current cycle, ascending.
    pub subsets_done: Vec<u32>,
    /// The share of the pack data read and verified this cycle, 0.0 to 1.0
    /// (`subsets_done` / `cycle`).
    pub coverage: f64,
    /// `coverage` as a whole percentage, rounded down (100 only when every
    /// subset passed).
    pub coverage_percent: u32,
    /// When the first subset of the current cycle passed.
    pub cycle_started_at: Option<DateTime<Utc>>,
    /// Why the latest failed run failed, until its subset passes.
    pub last_error: Option<String>,
    /// The subset that failed (it is the next to run again).
    pub failed_subset: Option<u32>,
    /// The subset the next rotating check dispatched by the server reads.
    pub next_subset: Option<u32>,
    /// When the latest rotating check that counted ended.
    pub last_run_at: Option<DateTime<Utc>>,
    /// How long a full cycle takes: `every 30 days` from the host's enabled
    /// rotating check schedule (cycle × its interval), `every 30 runs` when
    /// none; `null` before the first run.
    pub full_cycle: Option<String>,
    /// The host page's sentence, e.g. `42 % of the data read and verified
    /// this cycle, full cycle every 30 days`.
    pub summary: String,
}

/// `POST /api/v1/hosts/{id}/schedules` and `PUT /api/v1/schedules/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// `backup`, `forget`, `prune` or `check`.
    pub kind: String,
    /// Cron: 5 fields, 6 with leading seconds, or `@daily` and friends.
    pub cron: String,
    /// IANA time zone (`Europe/Berlin`); the host's own when absent.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Job parameters for the kind (a `forget` may name a `preset`).
    #[serde(default)]
    pub params: serde_json::Value,
    /// Disabled schedules are kept but never fire (default true).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Random delay up to this many seconds added to each fire (default 0,
    /// at most a day), so a fleet does not hit one repository at once.
    #[serde(default)]
    pub jitter_seconds: u32,
}

fn enabled_by_default() -> bool {
    true
}

fn host_source() -> String {
    String::from("host")
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleView {
    /// Id.
    pub id: String,
    /// Host.
    pub host_id: String,
    /// Job kind.
    pub kind: String,
    /// Cron expression.
    pub cron: String,
    /// Time zone, if set.
    pub timezone: Option<String>,
    /// Parameters.
    pub params: serde_json::Value,
    /// Whether it fires.
    pub enabled: bool,
    /// Jitter.
    pub jitter_seconds: u32,
    /// "every day at 02:30".
    pub description: String,
    /// The next fire time (in the schedule's zone, or the server's when the
    /// host's own zone is meant), when enabled.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// `host` (made on the host) or `policy` (given by a policy: edit the
    /// policy to change it).
    #[serde(default = "host_source")]
    pub source: String,
    /// The policy that gives it, for `source: policy`.
    #[serde(default)]
    pub policy_id: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

/// A named retention policy, offered beside custom ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetentionPreset {
    /// The name to use as `params.preset`.
    pub name: String,
    /// What it keeps, in words.
    pub description: String,
    /// The keep_* values it stands for.
    pub params: serde_json::Value,
}

/// Who did an audited action, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditActorView {
    /// `user` (a login session), `api_token`, `enrollment_token` (a host
    /// enrolling itself), `cli` (`restic-manager admin` on the server
    /// machine) or `anonymous` (a failed login).
    pub kind: String,
    /// The operator's id.
    pub user_id: Option<String>,
    /// The operator's name at the time.
    pub username: Option<String>,
    /// The API or enrolment token's id (never its secret).
    pub token_id: Option<String>,
    /// That token's name.
    pub token_name: Option<String>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntryView {
    /// Grows with every entry; pass as `before` to page.
    pub id: u64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: AuditActorView,
    /// What: `host.delete`, `repository.set`, `auth.login_failed`, …
    pub action: String,
    /// The kind of thing acted on (`host`, `job`, `schedule`, `user`, …).
    pub target_type: Option<String>,
    /// Its id.
    pub target_id: Option<String>,
    /// Facts about the action (a JSON object); never a secret.
    pub details: serde_json::Value,
    /// The client's address.
    pub ip: Option<String>,
    /// The client's User-Agent (truncated).
    pub user_agent: Option<String>,
}

/// `GET /api/v1/audit`: a page of entries, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditEntryView>,
    /// The `before` of the next (older) page; `null` on the last page.
    pub next_before: Option<u64>,
}

/// An alert as the API shows it (DESIGN §7): one spell of one condition on
/// one host, from when it fired until it resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertView {
    /// Id (ULID).
    pub id: String,
    /// `backup_stale`, `job_failed`, `host_offline` or `check_failed`.
    pub kind: String,
    /// The host.
    pub host_id: String,
    /// The host's name.
    #[serde(default)]
    pub host_name: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// What tells this alert apart from others of its kind on the host
    /// (`job_failed`: `<job kind>:<schedule id>` or `<job kind>:manual`);
    /// empty for the other kinds.
    #[serde(default)]
    pub subject: String,
    /// What is wrong, for a person.
    pub message: String,
    /// The job that fired it (`job_failed`, `check_failed`).
    #[serde(default)]
    pub job_id: Option<String>,
    /// When it fired.
    pub started_at: DateTime<Utc>,
    /// When it resolved.
    #[serde(default)]
    pub resolved_at: Option<DateTime<Utc>>,
    /// What resolved it.
    #[serde(default)]
    pub resolved_message: Option<String>,
    /// Who acknowledged it (no more repeats), if anyone.
    #[serde(default)]
    pub acknowledged_by: Option<String>,
    /// When.
    #[serde(default)]
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// When its last notification was queued for the channels.
    #[serde(default)]
    pub notified_at: Option<DateTime<Utc>>,
    /// How many notifications of it were queued (the first and repeats).
    #[serde(default)]
    pub notifications: u64,
}

/// `POST /api/v1/silences`: hold back notifications for matching hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    /// Labels a host must all have (`{}`: every host).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Until when.
    pub until: DateTime<Utc>,
    /// Why (shown with the silence and in the audit log).
    pub reason: String,
}

/// A silence as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SilenceView {
    /// Id (ULID).
    pub id: String,
    /// Labels a host must all have.
    pub selector: BTreeMap<String, String>,
    /// Until when.
    pub until: DateTime<Utc>,
    /// Why.
    pub reason: String,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Whether it holds notifications back now.
    pub active: bool,
}

/// `POST /api/v1/notification-channels` and `PUT …/{id}` (DESIGN §7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChannelRequest {
    /// Unique name.
    pub name: String,
    /// `webhook`, `ntfy`, `email`, `slack`, `discord` or `healthchecks`.
    pub kind: String,
    /// The kind's settings (see docs/notifications.md). On `PUT`, a secret
    /// field left out (or given as `"<set>"`) keeps the stored value; `null`
    /// removes an optional one.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Labels a host must all have for its notifications to go here (`{}`:
    /// every host).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// The alert kinds that go here (empty: every kind).
    #[serde(default)]
    pub kinds: Vec<String>,
}

/// A notification channel as the API shows it: secrets never, only
/// `"<set>"` where one is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelView {
    /// Id (ULID).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Its settings, secrets shown as `"<set>"`.
    pub config: serde_json::Value,
    /// Labels a host must all have.
    pub selector: BTreeMap<String, String>,
    /// The alert kinds that go here (empty: every kind).
    pub kinds: Vec<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// Deliveries the receiver accepted.
    pub delivered: u64,
    /// Failed attempts (each failed retry counts).
    pub failed: u64,
    /// Deliveries given up after retrying for about three days.
    pub given_up: u64,
    /// The last accepted delivery.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last failed attempt.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// What the last failed attempt got back.
    pub last_error: Option<String>,
    /// Since when every attempt has failed (`null` when it works).
    pub failing_since: Option<DateTime<Utc>>,
    /// Deliveries waiting to go out.
    pub queued: u64,
}

/// `POST /api/v1/notification-channels/{id}/test`: what the receiver said
/// to a test message, sent at once (not through the queue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelTestView {
    /// Whether the receiver accepted it (HTTP 2xx, SMTP 2xx).
    pub ok: bool,
    /// The HTTP status or SMTP reply code, when there was an answer.
    pub status: Option<u16>,
    /// The start of the answer's body (at most 200 characters), the SMTP
    /// reply, or the error.
    pub response: String,
}
