-- Rotating verification (docs/verification.md): per repository identity
-- (`host_repositories.repository_key`, so hosts sharing a repository share
-- one record), the cycle of `check --read-data-subset=n/N` runs it is in.
-- `subsets_done` is a JSON array of the subsets that passed this cycle;
-- times are unix ms. No foreign key: a record outlives the hosts using it
-- (a host may come back to the repository), and costs one small row.
CREATE TABLE repository_verification (
    repository_key   TEXT    NOT NULL PRIMARY KEY,
    cycle            INTEGER NOT NULL,
    subsets_done     TEXT    NOT NULL,
    cycle_started_at INTEGER NULL,
    last_error       TEXT    NULL,
    failed_subset    INTEGER NULL,
    last_subset      INTEGER NULL,
    last_run_at      INTEGER NULL,
    updated_at       INTEGER NOT NULL
);
