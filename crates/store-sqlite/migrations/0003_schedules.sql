-- Schedules: per-host cron schedules, the host's schedule-set version (bumped
-- by every schedule change) and the version its agent acknowledged, and the
-- link from a job to the schedule that fired it. Jobs may now also be
-- `skipped` (a fire whose previous run was still going, created finished).
--
-- Conventions as in 0001/0002 (ULID TEXT ids, INTEGER unix-ms timestamps,
-- INTEGER 0/1 booleans, JSON as TEXT, u64 as INTEGER).

CREATE TABLE schedules (
    id             TEXT    NOT NULL PRIMARY KEY,
    host_id        TEXT    NOT NULL REFERENCES hosts (id),
    kind           TEXT    NOT NULL,
    cron           TEXT    NOT NULL,
    timezone       TEXT    NULL,
    params         TEXT    NOT NULL,
    enabled        INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    jitter_seconds INTEGER NOT NULL CHECK (jitter_seconds >= 0),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
-- A host's schedule set, in creation order.
CREATE INDEX schedules_host_created ON schedules (host_id, created_at, id);

ALTER TABLE hosts ADD COLUMN schedule_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN schedule_applied_version INTEGER NULL;

-- ── rebuilding `jobs` ──────────────────────────────────────────────────
--
-- The status CHECK must allow 'skipped', and SQLite cannot alter a CHECK,
-- so `jobs` is rebuilt (create new, copy, drop old, rename). The trap:
-- `job_logs` and `command_results` reference `jobs (id) ON DELETE CASCADE`,
-- and with foreign keys ON, `DROP TABLE jobs` first deletes every row of
-- `jobs`, which cascades into both of them. sqlx runs this file inside a
-- transaction, where `PRAGMA foreign_keys = OFF` is a no-op; sqlx-sqlite 0.8
-- also ignores the `-- no-transaction` marker; and `PRAGMA
-- defer_foreign_keys` only defers constraint *checks*, never ON DELETE
-- actions.
--
-- So the two child tables are rebuilt as well, pointing at `jobs_new`, and
-- the old tables are dropped children first: when the old `jobs` is dropped
-- nothing references it any more, so no foreign-key action can fire. The
-- final `ALTER TABLE jobs_new RENAME TO jobs` rewrites the children's
-- `REFERENCES jobs_new` into `REFERENCES "jobs"` (SQLite does this for
-- parent-table renames whenever foreign keys are ON, and since 3.26 also
-- when they are OFF unless `legacy_alter_table` is set). Everything stays in
-- sqlx's one transaction: a failure leaves the database at 0002.
-- `tests/schedules.rs` proves jobs, logs and command results survive.

CREATE TABLE jobs_new (
    id            TEXT    NOT NULL PRIMARY KEY,
    host_id       TEXT    NOT NULL REFERENCES hosts (id),
    kind          TEXT    NOT NULL,
    params        TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN
                      ('queued', 'dispatched', 'running',
                       'succeeded', 'partial', 'failed', 'cancelled', 'skipped')),
    "trigger"     TEXT    NOT NULL CHECK ("trigger" IN ('manual', 'schedule', 'catch_up', 'system')),
    exit_code     INTEGER NULL,
    stats         TEXT    NULL,
    error         TEXT    NULL,
    created_at    INTEGER NOT NULL,
    dispatched_at INTEGER NULL,
    started_at    INTEGER NULL,
    finished_at   INTEGER NULL,
    -- Deleting a schedule keeps its job history.
    schedule_id   TEXT    NULL REFERENCES schedules (id) ON DELETE SET NULL
);
INSERT INTO jobs_new (id, host_id, kind, params, status, "trigger", exit_code, stats, error,
                      created_at, dispatched_at, started_at, finished_at, schedule_id)
SELECT id, host_id, kind, params, status, "trigger", exit_code, stats, error,
       created_at, dispatched_at, started_at, finished_at, NULL
FROM jobs;

CREATE TABLE job_logs_new (
    job_id TEXT    NOT NULL REFERENCES jobs_new (id) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    ts     INTEGER NOT NULL,
    stream TEXT    NOT NULL,
    text   TEXT    NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
INSERT INTO job_logs_new (job_id, seq, ts, stream, text)
SELECT job_id, seq, ts, stream, text FROM job_logs;

CREATE TABLE command_results_new (
    job_id      TEXT    NOT NULL PRIMARY KEY REFERENCES jobs_new (id) ON DELETE CASCADE,
    accepted    INTEGER NOT NULL CHECK (accepted IN (0, 1)),
    reason      TEXT    NULL,
    message     TEXT    NULL,
    received_at INTEGER NOT NULL
);
INSERT INTO command_results_new (job_id, accepted, reason, message, received_at)
SELECT job_id, accepted, reason, message, received_at FROM command_results;

-- Children first: once they are gone nothing references the old `jobs`, so
-- dropping it cascades nowhere.
DROP TABLE job_logs;
DROP TABLE command_results;
DROP TABLE jobs;

ALTER TABLE jobs_new RENAME TO jobs;
ALTER TABLE job_logs_new RENAME TO job_logs;
ALTER TABLE command_results_new RENAME TO command_results;

-- The indexes of 0002 (dropped with the old table), then the new one.
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_host_created ON jobs (host_id, created_at DESC, id DESC);
CREATE INDEX jobs_host_status ON jobs (host_id, status, created_at, id);
CREATE INDEX jobs_status ON jobs (status, created_at DESC, id DESC);
-- A schedule's active jobs; also the ON DELETE SET NULL lookup.
CREATE INDEX jobs_schedule_status ON jobs (schedule_id, status);
