-- Managing a fleet from one place (DESIGN §6): host labels, fleet policies
-- and what they give each host, shared repositories, bulk jobs.

-- Labels as a JSON object of strings (`{"env":"prod"}`); the host's own
-- freshness; the policy that applies to it (kept by the server's policy
-- reconciler, so lists need no matching per request).
ALTER TABLE hosts ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE hosts ADD COLUMN freshness_seconds INTEGER NULL CHECK (freshness_seconds > 0);
ALTER TABLE hosts ADD COLUMN policy_id TEXT NULL;
CREATE INDEX hosts_policy ON hosts (policy_id) WHERE deleted_at IS NULL AND policy_id IS NOT NULL;

ALTER TABLE enrollment_tokens ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';

-- Where a host's repository settings come from (NULL: the host's own),
-- and the repository's identity (its URL without credentials): hosts with
-- the same key share the repository. Rows stored before this have no key
-- until the server fills it in on start (it must open them to learn it).
ALTER TABLE host_repositories ADD COLUMN policy_id TEXT NULL;
ALTER TABLE host_repositories ADD COLUMN repository_key TEXT NULL;
CREATE INDEX host_repositories_key ON host_repositories (repository_key);

-- A schedule row a policy gave a host: the policy and the policy schedule
-- it was made from (NULL for the host's own schedules).
ALTER TABLE schedules ADD COLUMN policy_id TEXT NULL;
ALTER TABLE schedules ADD COLUMN policy_schedule_id TEXT NULL;
CREATE INDEX schedules_policy ON schedules (policy_id) WHERE policy_id IS NOT NULL;

-- Policies. The repository template may hold a password and backend keys:
-- it is sealed like a host's settings (associated data
-- `policy:<id>/repository`). `schedules` is a JSON array of
-- {id, kind, cron, timezone, params, enabled, jitter_seconds}.
CREATE TABLE policies (
    id                    TEXT    NOT NULL PRIMARY KEY,
    name                  TEXT    NOT NULL,
    selector              TEXT    NOT NULL,
    priority              INTEGER NOT NULL,
    repository_nonce      BLOB    NULL,
    repository_ciphertext BLOB    NULL,
    schedules             TEXT    NOT NULL,
    freshness_seconds     INTEGER NULL CHECK (freshness_seconds > 0),
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    CONSTRAINT policies_name_unique UNIQUE (name)
);

-- Jobs started together by one bulk action, and how many of them may run
-- at a time per repository.
CREATE TABLE job_batches (
    job_id       TEXT    NOT NULL PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    batch_id     TEXT    NOT NULL,
    max_parallel INTEGER NOT NULL CHECK (max_parallel > 0)
);

-- One job per shared-repository fire of a policy's prune or check: every
-- host of the repository fires it, the first one makes the job.
CREATE TABLE repository_fires (
    fire_key   TEXT    NOT NULL PRIMARY KEY,
    job_id     TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
);
