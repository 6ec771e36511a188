-- The whole restic-manager schema on PostgreSQL: the SQLite store's schema
-- after its migrations 0001–0016, table by table, with the same table,
-- column, index and constraint names, so that the same column lists work
-- on both stores and `admin migrate-store` copies table to table.
--
-- Types (the shared row types decode these alike on both stores):
--   * ids, names, hashes and JSON values are TEXT (ids are ULID strings;
--     queries cast JSON `::jsonb` where they look inside it);
--   * every TEXT column is COLLATE "C": ordering and comparison are by
--     bytes, as SQLite's BINARY collation does, whatever locale the
--     database was created with (so `ORDER BY name` and keyset paging on
--     ids agree between the stores);
--   * timestamps are BIGINT unix milliseconds (UTC), every integer is
--     BIGINT (never INTEGER: the rows decode i64);
--   * flags are BOOLEAN where SQLite has INTEGER 0/1 with a CHECK;
--   * blobs are BYTEA;
--   * SQLite's AUTOINCREMENT ids are identities (never reused either);
--     `BY DEFAULT` so a migration can copy the ids it reads, after which
--     it must move the sequence past them (`setval`).
--
-- SQLite-only constructs and what they became:
--   * `job_logs … WITHOUT ROWID`: an ordinary table; its primary key
--     (job_id, seq) is the index that SQLite's clustered key was;
--   * `repo_stats` has no primary key and the SQLite store breaks ties in
--     `ORDER BY recorded_at DESC, rowid DESC` with SQLite's implicit rowid:
--     here `rowid` is a real identity column of that name (same query on
--     both), and `repo_stats_host_recorded` ends with it as SQLite's index
--     implicitly does;
--   * `sqlite_sequence` (AUTOINCREMENT's bookkeeping) has no twin: the
--     identities' sequences are it.
-- There are no triggers in the SQLite schema.

CREATE TABLE users (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    username      TEXT COLLATE "C" NOT NULL,
    password_hash TEXT COLLATE "C" NOT NULL,
    created_at    BIGINT           NOT NULL,
    role          TEXT COLLATE "C" NOT NULL DEFAULT 'admin'
        CHECK (role IN ('admin', 'operator', 'viewer')),
    scope         TEXT COLLATE "C" NULL,
    CONSTRAINT users_username_unique UNIQUE (username)
);

CREATE TABLE sessions (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT COLLATE "C" NOT NULL,
    created_at BIGINT           NOT NULL,
    expires_at BIGINT           NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE api_tokens (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT COLLATE "C" NOT NULL,
    token_hash TEXT COLLATE "C" NOT NULL,
    created_at BIGINT           NOT NULL,
    expires_at BIGINT           NULL,
    revoked_at BIGINT           NULL,
    role       TEXT COLLATE "C" NULL
        CHECK (role IS NULL OR role IN ('admin', 'operator', 'viewer'))
);
CREATE INDEX api_tokens_user_id ON api_tokens (user_id);

CREATE TABLE hosts (
    id                        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name                      TEXT COLLATE "C" NOT NULL,
    hostname                  TEXT COLLATE "C" NOT NULL,
    enrolled_at               BIGINT           NOT NULL,
    last_seen_at              BIGINT           NULL,
    online                    BOOLEAN          NOT NULL DEFAULT FALSE,
    connection_id             TEXT COLLATE "C" NULL,
    agent_version             TEXT COLLATE "C" NULL,
    restic_version            TEXT COLLATE "C" NULL,
    restic_error              TEXT COLLATE "C" NULL,
    protocol_version          BIGINT           NULL,
    os                        TEXT COLLATE "C" NULL,
    arch                      TEXT COLLATE "C" NULL,
    deleted_at                BIGINT           NULL,
    last_backup_at            BIGINT           NULL,
    last_backup_status        TEXT COLLATE "C" NULL,
    repo_size_bytes           BIGINT           NULL,
    schedule_version          BIGINT           NOT NULL DEFAULT 0,
    schedule_applied_version  BIGINT           NULL,
    snapshot_count            BIGINT           NULL,
    token_rotated_at          BIGINT           NULL,
    agent_revoked_at          BIGINT           NULL,
    hooks                     TEXT COLLATE "C" NULL,
    hooks_refused             TEXT COLLATE "C" NULL,
    labels                    TEXT COLLATE "C" NOT NULL DEFAULT '{}',
    freshness_seconds         BIGINT           NULL CHECK (freshness_seconds > 0),
    policy_id                 TEXT COLLATE "C" NULL,
    last_backup_success_at    BIGINT           NULL,
    offline_seconds           BIGINT           NULL CHECK (offline_seconds > 0),
    platform                  TEXT COLLATE "C" NULL,
    upgrade_requested_version TEXT COLLATE "C" NULL,
    upgrade_requested_at      BIGINT           NULL,
    upgrade_state             TEXT COLLATE "C" NULL,
    upgrade_version           TEXT COLLATE "C" NULL,
    upgrade_error             TEXT COLLATE "C" NULL,
    upgrade_at                BIGINT           NULL
);
-- Listing: undeleted hosts in enrolment order.
CREATE INDEX hosts_live_enrolled ON hosts (enrolled_at, id) WHERE deleted_at IS NULL;
CREATE INDEX hosts_policy ON hosts (policy_id) WHERE deleted_at IS NULL AND policy_id IS NOT NULL;

CREATE TABLE enrollment_tokens (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name       TEXT COLLATE "C" NULL,
    token_hash TEXT COLLATE "C" NOT NULL,
    created_at BIGINT           NOT NULL,
    expires_at BIGINT           NOT NULL,
    used_at    BIGINT           NULL,
    -- Deferred: enrolment spends the token (setting host_id) before it
    -- inserts the host, inside one transaction.
    host_id    TEXT COLLATE "C" NULL REFERENCES hosts (id) DEFERRABLE INITIALLY DEFERRED,
    labels     TEXT COLLATE "C" NOT NULL DEFAULT '{}'
);
-- Listing: pending (unused) tokens.
CREATE INDEX enrollment_tokens_pending ON enrollment_tokens (expires_at) WHERE used_at IS NULL;

CREATE TABLE agent_tokens (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    host_id    TEXT COLLATE "C" NOT NULL REFERENCES hosts (id),
    token_hash TEXT COLLATE "C" NOT NULL,
    created_at BIGINT           NOT NULL,
    revoked_at BIGINT           NULL,
    pending    BOOLEAN          NOT NULL DEFAULT FALSE
);
CREATE INDEX agent_tokens_host_id ON agent_tokens (host_id);
CREATE INDEX agent_tokens_pending ON agent_tokens (host_id) WHERE pending AND revoked_at IS NULL;

-- Repository settings, sealed (AES-256-GCM) by the server. `seal_format`
-- is a format number (0 legacy, 1 owner-bound), not a flag.
CREATE TABLE host_repositories (
    host_id        TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES hosts (id),
    nonce          BYTEA            NOT NULL,
    ciphertext     BYTEA            NOT NULL,
    updated_at     BIGINT           NOT NULL,
    seal_format    BIGINT           NOT NULL DEFAULT 0 CHECK (seal_format IN (0, 1)),
    refused        TEXT COLLATE "C" NULL,
    policy_id      TEXT COLLATE "C" NULL,
    repository_key TEXT COLLATE "C" NULL
);
CREATE INDEX host_repositories_key ON host_repositories (repository_key);

CREATE TABLE snapshots (
    host_id    TEXT COLLATE "C" NOT NULL REFERENCES hosts (id),
    id         TEXT COLLATE "C" NOT NULL,
    short_id   TEXT COLLATE "C" NOT NULL,
    time       BIGINT           NOT NULL,
    hostname   TEXT COLLATE "C" NOT NULL,
    paths      TEXT COLLATE "C" NOT NULL,
    tags       TEXT COLLATE "C" NOT NULL,
    size_bytes BIGINT           NULL,
    file_count BIGINT           NULL,
    PRIMARY KEY (host_id, id)
);
CREATE INDEX snapshots_host_time ON snapshots (host_id, time DESC);

CREATE TABLE repo_stats (
    host_id                TEXT COLLATE "C" NOT NULL REFERENCES hosts (id),
    recorded_at            BIGINT           NOT NULL,
    total_size_bytes       BIGINT           NULL,
    raw_size_bytes         BIGINT           NULL,
    unique_files           BIGINT           NULL,
    snapshot_count         BIGINT           NULL,
    last_check_at          BIGINT           NULL,
    last_check_status      TEXT COLLATE "C" NULL,
    lock_present           BOOLEAN          NULL,
    last_prune_at          BIGINT           NULL,
    last_prune_freed_bytes BIGINT           NULL,
    -- SQLite's implicit rowid, made explicit: the tie-breaker of rows
    -- recorded in the same millisecond (see the top of this file).
    rowid                  BIGINT           NOT NULL GENERATED BY DEFAULT AS IDENTITY
);
CREATE INDEX repo_stats_host_recorded ON repo_stats (host_id, recorded_at DESC, rowid DESC);

CREATE TABLE schedules (
    id                 TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    host_id            TEXT COLLATE "C" NOT NULL REFERENCES hosts (id),
    kind               TEXT COLLATE "C" NOT NULL,
    cron               TEXT COLLATE "C" NOT NULL,
    timezone           TEXT COLLATE "C" NULL,
    params             TEXT COLLATE "C" NOT NULL,
    enabled            BOOLEAN          NOT NULL,
    jitter_seconds     BIGINT           NOT NULL CHECK (jitter_seconds >= 0),
    created_at         BIGINT           NOT NULL,
    updated_at         BIGINT           NOT NULL,
    policy_id          TEXT COLLATE "C" NULL,
    policy_schedule_id TEXT COLLATE "C" NULL
);
-- A host's schedule set, in creation order.
CREATE INDEX schedules_host_created ON schedules (host_id, created_at, id);
CREATE INDEX schedules_policy ON schedules (policy_id) WHERE policy_id IS NOT NULL;

CREATE TABLE jobs (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    host_id         TEXT COLLATE "C" NOT NULL REFERENCES hosts (id),
    kind            TEXT COLLATE "C" NOT NULL,
    params          TEXT COLLATE "C" NOT NULL,
    status          TEXT COLLATE "C" NOT NULL CHECK (status IN
                        ('queued', 'dispatched', 'running',
                         'succeeded', 'partial', 'failed', 'cancelled', 'skipped')),
    "trigger"       TEXT COLLATE "C" NOT NULL
                        CHECK ("trigger" IN ('manual', 'schedule', 'catch_up', 'system')),
    exit_code       BIGINT           NULL,
    stats           TEXT COLLATE "C" NULL,
    error           TEXT COLLATE "C" NULL,
    created_at      BIGINT           NOT NULL,
    dispatched_at   BIGINT           NULL,
    started_at      BIGINT           NULL,
    finished_at     BIGINT           NULL,
    -- Deleting a schedule keeps its job history.
    schedule_id     TEXT COLLATE "C" NULL REFERENCES schedules (id) ON DELETE SET NULL,
    -- An end the server decided without the agent; the agent's own end,
    -- replayed later, replaces it.
    end_provisional BOOLEAN          NOT NULL DEFAULT FALSE
);
-- Listing: newest first (also paging with `before`).
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);
-- Listing one host's jobs, newest first.
CREATE INDEX jobs_host_created ON jobs (host_id, created_at DESC, id DESC);
-- Dispatch: a host's queued / active jobs in creation order.
CREATE INDEX jobs_host_status ON jobs (host_id, status, created_at, id);
-- Listing by status; hosts with queued jobs.
CREATE INDEX jobs_status ON jobs (status, created_at DESC, id DESC);
-- A schedule's active jobs; also the ON DELETE SET NULL lookup.
CREATE INDEX jobs_schedule_status ON jobs (schedule_id, status);

-- Output lines; the primary key makes storing idempotent on (job_id, seq).
-- Unlike SQLite's, `job_id` has no foreign key here: PostgreSQL checks one
-- per inserted line (an index probe and a row lock on the job), which
-- halved log ingest. `append_logs` stores lines only of jobs it has just
-- looked up (once per batch), and no job is ever deleted; whatever deletes
-- jobs one day must delete their lines too.
CREATE TABLE job_logs (
    job_id TEXT COLLATE "C" NOT NULL,
    seq    BIGINT           NOT NULL,
    ts     BIGINT           NOT NULL,
    stream TEXT COLLATE "C" NOT NULL,
    text   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- The latest answer of the agent to a job's `command.run`.
CREATE TABLE command_results (
    job_id      TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    accepted    BOOLEAN          NOT NULL,
    reason      TEXT COLLATE "C" NULL,
    message     TEXT COLLATE "C" NULL,
    received_at BIGINT           NOT NULL
);

CREATE TABLE sealing_key (
    id          BIGINT           NOT NULL PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT COLLATE "C" NOT NULL,
    recorded_at BIGINT           NOT NULL
);

CREATE TABLE storage_probe (
    id         BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    written_at BIGINT NOT NULL
);

CREATE TABLE policies (
    id                    TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name                  TEXT COLLATE "C" NOT NULL,
    selector              TEXT COLLATE "C" NOT NULL,
    priority              BIGINT           NOT NULL,
    repository_nonce      BYTEA            NULL,
    repository_ciphertext BYTEA            NULL,
    schedules             TEXT COLLATE "C" NOT NULL,
    freshness_seconds     BIGINT           NULL CHECK (freshness_seconds > 0),
    created_at            BIGINT           NOT NULL,
    updated_at            BIGINT           NOT NULL,
    offline_seconds       BIGINT           NULL CHECK (offline_seconds > 0),
    CONSTRAINT policies_name_unique UNIQUE (name)
);

CREATE TABLE job_batches (
    job_id       TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    batch_id     TEXT COLLATE "C" NOT NULL,
    max_parallel BIGINT           NOT NULL CHECK (max_parallel > 0)
);

CREATE TABLE repository_fires (
    fire_key   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    job_id     TEXT COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    created_at BIGINT           NOT NULL
);

CREATE TABLE alerts (
    id               TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    kind             TEXT COLLATE "C" NOT NULL,
    host_id          TEXT COLLATE "C" NOT NULL,
    subject          TEXT COLLATE "C" NOT NULL DEFAULT '',
    state            TEXT COLLATE "C" NOT NULL CHECK (state IN ('firing', 'resolved')),
    message          TEXT COLLATE "C" NOT NULL,
    job_id           TEXT COLLATE "C" NULL,
    started_at       BIGINT           NOT NULL,
    resolved_at      BIGINT           NULL,
    resolved_message TEXT COLLATE "C" NULL,
    acknowledged_by  TEXT COLLATE "C" NULL,
    acknowledged_at  BIGINT           NULL,
    notified_at      BIGINT           NULL,
    notifications    BIGINT           NOT NULL DEFAULT 0,
    next_notify_at   BIGINT           NULL
);
CREATE UNIQUE INDEX alerts_one_firing ON alerts (host_id, kind, subject) WHERE state = 'firing';
CREATE INDEX alerts_started ON alerts (started_at DESC, id DESC);
CREATE INDEX alerts_host ON alerts (host_id, started_at DESC);
CREATE INDEX alerts_notify_due ON alerts (next_notify_at) WHERE next_notify_at IS NOT NULL;

CREATE TABLE silences (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    selector   TEXT COLLATE "C" NOT NULL,
    until      BIGINT           NOT NULL,
    reason     TEXT COLLATE "C" NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    created_at BIGINT           NOT NULL
);
CREATE INDEX silences_until ON silences (until);

-- The actor is copied, not referenced (the log outlives users and
-- tokens); the id only grows and is the paging cursor.
CREATE TABLE audit_log (
    id               BIGINT           NOT NULL PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY,
    at               BIGINT           NOT NULL,
    actor_kind       TEXT COLLATE "C" NOT NULL CHECK (actor_kind IN
                         ('user', 'api_token', 'enrollment_token', 'cli', 'anonymous', 'server')),
    actor_user_id    TEXT COLLATE "C" NULL,
    actor_username   TEXT COLLATE "C" NULL,
    actor_token_id   TEXT COLLATE "C" NULL,
    actor_token_name TEXT COLLATE "C" NULL,
    action           TEXT COLLATE "C" NOT NULL,
    target_type      TEXT COLLATE "C" NULL,
    target_id        TEXT COLLATE "C" NULL,
    details          TEXT COLLATE "C" NOT NULL,
    ip               TEXT COLLATE "C" NULL,
    user_agent       TEXT COLLATE "C" NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_target ON audit_log (target_id, id);

CREATE TABLE notification_channels (
    id                TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name              TEXT COLLATE "C" NOT NULL UNIQUE,
    kind              TEXT COLLATE "C" NOT NULL,
    config            TEXT COLLATE "C" NOT NULL,
    secret_nonce      BYTEA            NULL,
    secret_ciphertext BYTEA            NULL,
    selector          TEXT COLLATE "C" NOT NULL DEFAULT '{}',
    kinds             TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    created_at        BIGINT           NOT NULL,
    updated_at        BIGINT           NOT NULL,
    delivered         BIGINT           NOT NULL DEFAULT 0,
    failed            BIGINT           NOT NULL DEFAULT 0,
    given_up          BIGINT           NOT NULL DEFAULT 0,
    last_success_at   BIGINT           NULL,
    last_failure_at   BIGINT           NULL,
    last_error        TEXT COLLATE "C" NULL,
    failing_since     BIGINT           NULL
);

CREATE TABLE notification_outbox (
    id              BIGINT           NOT NULL PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY,
    channel_id      TEXT COLLATE "C" NOT NULL
                        REFERENCES notification_channels (id) ON DELETE CASCADE,
    alert_id        TEXT COLLATE "C" NULL,
    event           TEXT COLLATE "C" NOT NULL,
    payload         TEXT COLLATE "C" NOT NULL,
    attempts        BIGINT           NOT NULL DEFAULT 0,
    next_attempt_at BIGINT           NOT NULL,
    created_at      BIGINT           NOT NULL,
    delivered_at    BIGINT           NULL,
    given_up_at     BIGINT           NULL,
    last_error      TEXT COLLATE "C" NULL
);
CREATE INDEX notification_outbox_due ON notification_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;
CREATE INDEX notification_outbox_channel ON notification_outbox (channel_id);
CREATE INDEX notification_outbox_pending ON notification_outbox (channel_id)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;
CREATE INDEX notification_outbox_finished ON notification_outbox (created_at)
    WHERE delivered_at IS NOT NULL OR given_up_at IS NOT NULL;
