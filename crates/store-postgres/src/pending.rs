//! Stubs for the store parts not yet written for PostgreSQL: every method
//! fails, so the crate compiles and the suite runs while the parts are
//! written. Each part's stub is deleted as its file lands; this file
//! goes when it is empty.

#![allow(unused_variables)]

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::*;
use rm_store::*;

use crate::PostgresStore;

fn pending(method: &str) -> StoreError {
    StoreError::Backend(format!("{method} is not written for PostgreSQL yet").into())
}

// ── users ───────────────────────────────────────────────────────

#[async_trait]
impl UserStore for PostgresStore {
    async fn create_user(&self, user: &User, audit: Option<&NewAuditEntry>) -> StoreResult<()> {
        Err(pending("create_user"))
    }
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        Err(pending("user_by_name"))
    }
    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        Err(pending("user_by_id"))
    }
    async fn set_user_password(
        &self,
        username: &str,
        password_hash: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        Err(pending("set_user_password"))
    }
    async fn count_users(&self) -> StoreResult<u64> {
        Err(pending("count_users"))
    }
    async fn list_users(&self) -> StoreResult<Vec<User>> {
        Err(pending("list_users"))
    }
    async fn delete_user(&self, id: UserId, audit: Option<&NewAuditEntry>) -> StoreResult<()> {
        Err(pending("delete_user"))
    }
    async fn set_user_access(
        &self,
        id: UserId,
        role: Role,
        scope: Option<&Selector>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<User> {
        Err(pending("set_user_access"))
    }
    async fn create_session(
        &self,
        session: &Session,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        Err(pending("create_session"))
    }
    async fn session(&self, id: TokenId) -> StoreResult<Option<Session>> {
        Err(pending("session"))
    }
    async fn delete_session(&self, id: TokenId, audit: Option<&NewAuditEntry>) -> StoreResult<()> {
        Err(pending("delete_session"))
    }
    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        Err(pending("delete_expired_sessions"))
    }
    async fn create_api_token(
        &self,
        token: &ApiToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        Err(pending("create_api_token"))
    }
    async fn api_token(&self, id: TokenId) -> StoreResult<Option<ApiToken>> {
        Err(pending("api_token"))
    }
    async fn list_api_tokens(&self, user: UserId) -> StoreResult<Vec<ApiToken>> {
        Err(pending("list_api_tokens"))
    }
    async fn revoke_api_token(
        &self,
        id: TokenId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        Err(pending("revoke_api_token"))
    }
}

// ── hosts ───────────────────────────────────────────────────────

#[async_trait]
impl HostStore for PostgresStore {
    async fn create_enrollment_token(
        &self,
        token: &EnrollmentToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        Err(pending("create_enrollment_token"))
    }
    async fn enrollment_token(&self, id: TokenId) -> StoreResult<Option<EnrollmentToken>> {
        Err(pending("enrollment_token"))
    }
    async fn pending_enrollment_tokens(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<EnrollmentToken>> {
        Err(pending("pending_enrollment_tokens"))
    }
    async fn enroll_host(
        &self,
        token_id: TokenId,
        now: DateTime<Utc>,
        host: &NewHost,
        agent_token: &AgentToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Host> {
        Err(pending("enroll_host"))
    }
    async fn list_hosts(&self) -> StoreResult<Vec<Host>> {
        Err(pending("list_hosts"))
    }
    async fn list_hosts_page(&self, after: Option<HostId>, limit: u32) -> StoreResult<Vec<Host>> {
        Err(pending("list_hosts_page"))
    }
    async fn list_hosts_page_matching(
        &self,
        after: Option<HostId>,
        limit: u32,
        selector: &Selector,
    ) -> StoreResult<Vec<Host>> {
        Err(pending("list_hosts_page_matching"))
    }
    async fn list_hosts_attention_first(
        &self,
        protected: ProtectedAt,
        selector: &Selector,
        offset: u32,
        limit: u32,
    ) -> StoreResult<Vec<Host>> {
        Err(pending("list_hosts_attention_first"))
    }
    async fn agent_versions(&self, selector: &Selector) -> StoreResult<Vec<(String, u64)>> {
        Err(pending("agent_versions"))
    }
    async fn host_counts(
        &self,
        protected: ProtectedAt,
        selector: &Selector,
    ) -> StoreResult<HostCounts> {
        Err(pending("host_counts"))
    }
    async fn hosts_matching(&self, selector: &Selector) -> StoreResult<Vec<Host>> {
        Err(pending("hosts_matching"))
    }
    async fn patch_host(
        &self,
        id: HostId,
        patch: &HostPatch,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Host> {
        Err(pending("patch_host"))
    }
    async fn host(&self, id: HostId) -> StoreResult<Option<Host>> {
        Err(pending("host"))
    }
    async fn record_hello(&self, host_id: HostId, hello: &HelloRecord) -> StoreResult<()> {
        Err(pending("record_hello"))
    }
    async fn request_agent_upgrade(
        &self,
        hosts: &[HostId],
        version: &str,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        Err(pending("request_agent_upgrade"))
    }
    async fn record_agent_upgrade_status(
        &self,
        host_id: HostId,
        version: &str,
        state: &str,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        Err(pending("record_agent_upgrade_status"))
    }
    async fn touch_hosts(&self, seen: &[(HostId, DateTime<Utc>)]) -> StoreResult<()> {
        Err(pending("touch_hosts"))
    }
    async fn mark_host_offline(
        &self,
        host_id: HostId,
        connection_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        Err(pending("mark_host_offline"))
    }
    async fn mark_all_hosts_offline(&self) -> StoreResult<u64> {
        Err(pending("mark_all_hosts_offline"))
    }
    async fn delete_host(
        &self,
        id: HostId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        Err(pending("delete_host"))
    }
    async fn host_backup_summaries(&self) -> StoreResult<Vec<HostBackupSummary>> {
        Err(pending("host_backup_summaries"))
    }
}

// ── agent_tokens ────────────────────────────────────────────────

#[async_trait]
impl AgentTokenStore for PostgresStore {
    async fn active_agent_token(&self, id: TokenId) -> StoreResult<Option<AgentToken>> {
        Err(pending("active_agent_token"))
    }
    async fn begin_token_rotation(
        &self,
        token: &AgentToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        Err(pending("begin_token_rotation"))
    }
    async fn promote_agent_token(
        &self,
        host: HostId,
        id: TokenId,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        Err(pending("promote_agent_token"))
    }
    async fn pending_agent_token(&self, host: HostId) -> StoreResult<Option<AgentToken>> {
        Err(pending("pending_agent_token"))
    }
    async fn revoke_agent_token(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<bool> {
        Err(pending("revoke_agent_token"))
    }
    async fn revoke_agent(
        &self,
        host: HostId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        Err(pending("revoke_agent"))
    }
}

// ── audit ───────────────────────────────────────────────────────

#[async_trait]
impl AuditStore for PostgresStore {
    async fn record_audit(&self, entry: &NewAuditEntry) -> StoreResult<u64> {
        Err(pending("record_audit"))
    }
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        Err(pending("list_audit"))
    }
}

// ── sealing ─────────────────────────────────────────────────────

#[async_trait]
impl SealingStore for PostgresStore {
    async fn sealing_key_record(&self) -> StoreResult<Option<SealingKeyRecord>> {
        Err(pending("sealing_key_record"))
    }
    async fn sealed_repositories(&self) -> StoreResult<Vec<(HostId, SealedRepository)>> {
        Err(pending("sealed_repositories"))
    }
    async fn record_sealing_key(
        &self,
        record: &SealingKeyRecord,
        resealed: &[(HostId, SealedRepository)],
    ) -> StoreResult<()> {
        Err(pending("record_sealing_key"))
    }
    async fn reset_sealed_secrets(
        &self,
        record: &SealingKeyRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<HostId>> {
        Err(pending("reset_sealed_secrets"))
    }
}

// ── repositories ────────────────────────────────────────────────

#[async_trait]
impl RepositoryStore for PostgresStore {
    async fn set_repository(
        &self,
        host: HostId,
        sealed: &SealedRepository,
        key: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        Err(pending("set_repository"))
    }
    async fn delete_own_repository(
        &self,
        host: HostId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        Err(pending("delete_own_repository"))
    }
    async fn set_repository_key(&self, host: HostId, key: &str) -> StoreResult<()> {
        Err(pending("set_repository_key"))
    }
    async fn repository_key(&self, host: HostId) -> StoreResult<Option<String>> {
        Err(pending("repository_key"))
    }
    async fn hosts_of_repository(&self, key: &str) -> StoreResult<Vec<Host>> {
        Err(pending("hosts_of_repository"))
    }
    async fn repository_jobs(&self, key: &str) -> StoreResult<Vec<RepositoryJob>> {
        Err(pending("repository_jobs"))
    }
    async fn repository(&self, host: HostId) -> StoreResult<Option<SealedRepository>> {
        Err(pending("repository"))
    }
    async fn repositories(&self) -> StoreResult<Vec<(HostId, SealedRepository, Option<String>)>> {
        Err(pending("repositories"))
    }
    async fn set_repository_refused(&self, host: HostId, reason: Option<&str>) -> StoreResult<()> {
        Err(pending("set_repository_refused"))
    }
}

// ── policies ────────────────────────────────────────────────────

#[async_trait]
impl PolicyStore for PostgresStore {
    async fn policies(&self) -> StoreResult<Vec<PolicyRecord>> {
        Err(pending("policies"))
    }
    async fn policy(&self, id: PolicyId) -> StoreResult<Option<PolicyRecord>> {
        Err(pending("policy"))
    }
    async fn policy_targets(&self, hosts: Option<&[HostId]>) -> StoreResult<Vec<PolicyTarget>> {
        Err(pending("policy_targets"))
    }
    async fn apply_policy_changes(
        &self,
        policy: Option<&PolicyWrite>,
        changes: &[HostPolicyChange],
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<(HostId, u64)>> {
        Err(pending("apply_policy_changes"))
    }
    async fn hosts_of_policy(&self, id: PolicyId) -> StoreResult<Vec<Host>> {
        Err(pending("hosts_of_policy"))
    }
    async fn policy_coverage(&self) -> StoreResult<Vec<PolicyCoverage>> {
        Err(pending("policy_coverage"))
    }
}

// ── alerts ──────────────────────────────────────────────────────

#[async_trait]
impl AlertStore for PostgresStore {
    async fn fire_alert(
        &self,
        alert: &NewAlert,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        Err(pending("fire_alert"))
    }
    async fn resolve_alert(
        &self,
        host: HostId,
        kind: &str,
        subject: &str,
        at: DateTime<Utc>,
        message: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Option<AlertRecord>> {
        Err(pending("resolve_alert"))
    }
    async fn resolve_host_alerts(
        &self,
        host: HostId,
        at: DateTime<Utc>,
        message: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<u64> {
        Err(pending("resolve_host_alerts"))
    }
    async fn alert(&self, id: AlertId) -> StoreResult<Option<AlertRecord>> {
        Err(pending("alert"))
    }
    async fn list_alerts(&self, filter: &AlertFilter) -> StoreResult<Vec<AlertRecord>> {
        Err(pending("list_alerts"))
    }
    async fn firing_alerts(&self) -> StoreResult<Vec<AlertRecord>> {
        Err(pending("firing_alerts"))
    }
    async fn firing_alert_counts(&self) -> StoreResult<Vec<(String, u64)>> {
        Err(pending("firing_alert_counts"))
    }
    async fn acknowledge_alert(
        &self,
        id: AlertId,
        by: &str,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<AlertRecord> {
        Err(pending("acknowledge_alert"))
    }
    async fn alerts_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<AlertRecord>> {
        Err(pending("alerts_due"))
    }
    async fn next_alert_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Err(pending("next_alert_due"))
    }
    async fn alert_notified(
        &self,
        id: AlertId,
        at: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> StoreResult<()> {
        Err(pending("alert_notified"))
    }
    async fn hold_alert(&self, id: AlertId, until: DateTime<Utc>) -> StoreResult<()> {
        Err(pending("hold_alert"))
    }
    async fn create_silence(
        &self,
        silence: &SilenceRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        Err(pending("create_silence"))
    }
    async fn silences(&self, after: Option<DateTime<Utc>>) -> StoreResult<Vec<SilenceRecord>> {
        Err(pending("silences"))
    }
    async fn delete_silence(
        &self,
        id: SilenceId,
        now: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        Err(pending("delete_silence"))
    }
}

// ── notifications ───────────────────────────────────────────────

#[async_trait]
impl NotificationStore for PostgresStore {
    async fn create_channel(
        &self,
        channel: &ChannelRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        Err(pending("create_channel"))
    }
    async fn update_channel(
        &self,
        channel: &ChannelRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        Err(pending("update_channel"))
    }
    async fn delete_channel(
        &self,
        id: ChannelId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        Err(pending("delete_channel"))
    }
    async fn channel(&self, id: ChannelId) -> StoreResult<Option<ChannelRecord>> {
        Err(pending("channel"))
    }
    async fn channels(&self) -> StoreResult<Vec<ChannelRecord>> {
        Err(pending("channels"))
    }
    async fn enqueue_notifications(&self, rows: &[NewNotification]) -> StoreResult<()> {
        Err(pending("enqueue_notifications"))
    }
    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>> {
        Err(pending("claim_notifications"))
    }
    async fn finish_notification(&self, id: u64, outcome: &DeliveryOutcome) -> StoreResult<bool> {
        Err(pending("finish_notification"))
    }
    async fn next_notification_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Err(pending("next_notification_due"))
    }
    async fn prune_notifications(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        Err(pending("prune_notifications"))
    }
}
