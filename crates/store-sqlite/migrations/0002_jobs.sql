-- Jobs and everything they produce: sealed repository settings per host, the
-- jobs themselves, their output lines, the agents' answers to `command.run`,
-- the snapshot list and repository statistics history. Also the host
-- summary columns the host list shows without joining the history tables.
--
-- Conventions as in 0001 (ids ULID TEXT, timestamps INTEGER unix ms, booleans
-- INTEGER 0/1), plus:
--   * JSON values (job params and stats, snapshot paths and tags) are TEXT;
--   * u64 quantities are INTEGER (i64); the store refuses to write values
--     above i64::MAX instead of wrapping them;
--   * hosts are never removed (only marked deleted), so references to hosts
--     need no ON DELETE action; rows hanging off a job go with the job.

-- Denormalised host summary, kept up to date by finish_job / add_repo_stats.
ALTER TABLE hosts ADD COLUMN last_backup_at INTEGER NULL;
ALTER TABLE hosts ADD COLUMN last_backup_status TEXT NULL;
ALTER TABLE hosts ADD COLUMN repo_size_bytes INTEGER NULL;

-- Repository settings, sealed (AES-256-GCM) by the server.
CREATE TABLE host_repositories (
    host_id    TEXT    NOT NULL PRIMARY KEY REFERENCES hosts (id),
    nonce      BLOB    NOT NULL,
    ciphertext BLOB    NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE jobs (
    id            TEXT    NOT NULL PRIMARY KEY,
    host_id       TEXT    NOT NULL REFERENCES hosts (id),
    kind          TEXT    NOT NULL,
    params        TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN
                      ('queued', 'dispatched', 'running',
                       'succeeded', 'partial', 'failed', 'cancelled')),
    "trigger"     TEXT    NOT NULL CHECK ("trigger" IN ('manual', 'schedule', 'system')),
    exit_code     INTEGER NULL,
    stats         TEXT    NULL,
    error         TEXT    NULL,
    created_at    INTEGER NOT NULL,
    dispatched_at INTEGER NULL,
    started_at    INTEGER NULL,
    finished_at   INTEGER NULL
);
-- Listing: newest first (also paging with `before`).
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);
-- Listing one host's jobs, newest first.
CREATE INDEX jobs_host_created ON jobs (host_id, created_at DESC, id DESC);
-- Dispatch: a host's queued / active jobs in creation order.
CREATE INDEX jobs_host_status ON jobs (host_id, status, created_at, id);
-- Listing by status; hosts with queued jobs.
CREATE INDEX jobs_status ON jobs (status, created_at DESC, id DESC);

-- Output lines; the primary key makes storing idempotent on (job_id, seq).
CREATE TABLE job_logs (
    job_id TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    ts     INTEGER NOT NULL,
    stream TEXT    NOT NULL,
    text   TEXT    NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

-- The latest answer of the agent to a job's `command.run`.
CREATE TABLE command_results (
    job_id      TEXT    NOT NULL PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    accepted    INTEGER NOT NULL CHECK (accepted IN (0, 1)),
    reason      TEXT    NULL,
    message     TEXT    NULL,
    received_at INTEGER NOT NULL
);

-- The snapshot list of a host's repository (replaced wholesale).
CREATE TABLE snapshots (
    host_id    TEXT    NOT NULL REFERENCES hosts (id),
    id         TEXT    NOT NULL,
    short_id   TEXT    NOT NULL,
    time       INTEGER NOT NULL,
    hostname   TEXT    NOT NULL,
    paths      TEXT    NOT NULL,
    tags       TEXT    NOT NULL,
    size_bytes INTEGER NULL,
    file_count INTEGER NULL,
    PRIMARY KEY (host_id, id)
);
CREATE INDEX snapshots_host_time ON snapshots (host_id, time DESC);

-- Repository statistics history.
CREATE TABLE repo_stats (
    host_id                TEXT    NOT NULL REFERENCES hosts (id),
    recorded_at            INTEGER NOT NULL,
    total_size_bytes       INTEGER NULL,
    raw_size_bytes         INTEGER NULL,
    unique_files           INTEGER NULL,
    snapshot_count         INTEGER NULL,
    last_check_at          INTEGER NULL,
    last_check_status      TEXT    NULL,
    lock_present           INTEGER NULL CHECK (lock_present IN (0, 1)),
    last_prune_at          INTEGER NULL,
    last_prune_freed_bytes INTEGER NULL
);
CREATE INDEX repo_stats_host_recorded ON repo_stats (host_id, recorded_at DESC);
