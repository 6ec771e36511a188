-- Alerts the server decides (DESIGN §7): what it needs to know when a host
-- stops being protected, the alerts themselves and silences.

-- The last backup that succeeded (or was partial: a snapshot was saved),
-- whatever came after it: `backup_stale` counts from here. Filled from the
-- last backup where that one succeeded.
ALTER TABLE hosts ADD COLUMN last_backup_success_at INTEGER NULL;
UPDATE hosts SET last_backup_success_at = last_backup_at
 WHERE last_backup_status IN ('succeeded', 'partial');
-- How long a host may be offline before `host_offline` fires: its own,
-- else its policy's, else the server's default.
ALTER TABLE hosts ADD COLUMN offline_seconds INTEGER NULL CHECK (offline_seconds > 0);
ALTER TABLE policies ADD COLUMN offline_seconds INTEGER NULL CHECK (offline_seconds > 0);

-- One spell of one condition on one host. `subject` tells apart alerts of
-- one kind on one host (`job_failed`: the job kind and its schedule, or
-- `manual`); empty otherwise. At most one firing alert per (host, kind,
-- subject), whichever server decides it. `next_notify_at`: when the next
-- notification of this alert is due (its first, or a repeat); NULL once
-- acknowledged or resolved.
CREATE TABLE alerts (
    id                 TEXT    NOT NULL PRIMARY KEY,
    kind               TEXT    NOT NULL,
    host_id            TEXT    NOT NULL,
    subject            TEXT    NOT NULL DEFAULT '',
    state              TEXT    NOT NULL CHECK (state IN ('firing', 'resolved')),
    message            TEXT    NOT NULL,
    job_id             TEXT    NULL,
    started_at         INTEGER NOT NULL,
    resolved_at        INTEGER NULL,
    resolved_message   TEXT    NULL,
    acknowledged_by    TEXT    NULL,
    acknowledged_at    INTEGER NULL,
    notified_at        INTEGER NULL,
    notifications      INTEGER NOT NULL DEFAULT 0,
    next_notify_at     INTEGER NULL
);
CREATE UNIQUE INDEX alerts_one_firing ON alerts (host_id, kind, subject) WHERE state = 'firing';
CREATE INDEX alerts_started ON alerts (started_at DESC, id DESC);
CREATE INDEX alerts_host ON alerts (host_id, started_at DESC);
CREATE INDEX alerts_notify_due ON alerts (next_notify_at) WHERE next_notify_at IS NOT NULL;

-- Maintenance windows: notifications for hosts matching `selector` (a
-- JSON object of labels; `{}` matches every host) are held back until
-- `until`; alerts still fire and are stored.
CREATE TABLE silences (
    id         TEXT    NOT NULL PRIMARY KEY,
    selector   TEXT    NOT NULL,
    until      INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX silences_until ON silences (until);

-- The server itself becomes an audit actor (alerts it fires and
-- resolves). SQLite cannot change a CHECK constraint in place: the table
-- is rebuilt with every row and id kept (the AUTOINCREMENT counter moves
-- with the rename, so ids are still never reused).
CREATE TABLE audit_log_v13 (
    id               INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at               INTEGER NOT NULL,
    actor_kind       TEXT    NOT NULL CHECK (actor_kind IN
                         ('user', 'api_token', 'enrollment_token', 'cli', 'anonymous', 'server')),
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
INSERT INTO audit_log_v13 (id, at, actor_kind, actor_user_id, actor_username, actor_token_id,
    actor_token_name, action, target_type, target_id, details, ip, user_agent)
SELECT id, at, actor_kind, actor_user_id, actor_username, actor_token_id,
    actor_token_name, action, target_type, target_id, details, ip, user_agent
FROM audit_log;
-- Keep the counter even when the newest rows were pruned.
UPDATE sqlite_sequence SET seq = MAX(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'))
 WHERE name = 'audit_log_v13' AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'audit_log');
DROP TABLE audit_log;
ALTER TABLE audit_log_v13 RENAME TO audit_log;
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_target ON audit_log (target_id, id);
