-- The audit log: one row per operator action that changed something (and
-- every login attempt), written by the server after the change succeeded.
--
-- Conventions as in 0001–0003 (ULID TEXT ids for referenced records,
-- INTEGER unix-ms timestamps, JSON as TEXT), plus:
--   * the row id is an INTEGER that only grows (AUTOINCREMENT: never reused,
--     even after old rows are pruned), so it is the paging cursor and the
--     order rows were written in;
--   * the actor is copied, not referenced: the log must outlive deleted
--     users and revoked tokens, so there are no foreign keys;
--   * `details` never holds a secret (no passwords, tokens or env values).

CREATE TABLE audit_log (
    id               INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at               INTEGER NOT NULL,
    actor_kind       TEXT    NOT NULL CHECK (actor_kind IN
                         ('user', 'api_token', 'enrollment_token', 'cli', 'anonymous')),
    actor_user_id    TEXT    NULL,
    actor_username   TEXT    NULL,
    actor_token_id   TEXT    NULL,
    actor_token_name TEXT    NULL,
    action           TEXT    NOT NULL,
    target_type      TEXT    NULL,
    target_id        TEXT    NULL,
    details          TEXT    NOT NULL,
    ip               TEXT    NULL,
    user_agent       TEXT    NULL
);
-- Reading by time (and pruning old rows).
CREATE INDEX audit_log_at ON audit_log (at);
-- "What happened to this host / user / job".
CREATE INDEX audit_log_target ON audit_log (target_id, id);
