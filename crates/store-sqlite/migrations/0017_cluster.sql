-- Several servers on one database (docs/postgresql.md#several-servers).
-- SQLite is only ever opened by one server, but keeps the same tables so
-- the store contract and its tests are one. `servers`: who is running,
-- until when (unix ms) it counts as alive. `leases`: named timed work and
-- the server that may run it until `until`. `cluster_replies`: the answer to
-- a call one server made through another, until the caller takes it. None is copied by
-- `admin migrate-store`: they describe running processes, not the fleet.
CREATE TABLE servers (
    id           TEXT    NOT NULL PRIMARY KEY,
    internal_url TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    alive_until  INTEGER NOT NULL
);
CREATE TABLE leases (
    name   TEXT    NOT NULL PRIMARY KEY,
    holder TEXT    NOT NULL,
    until  INTEGER NOT NULL
);
-- The server holding the host's agent connection (`servers.id`, not a
-- foreign key: a dead server's row may be gone while its hosts are swept).
ALTER TABLE hosts ADD COLUMN server_id TEXT NULL;
CREATE INDEX hosts_online_server ON hosts (server_id) WHERE online = 1;
CREATE TABLE cluster_replies (
    id         TEXT    NOT NULL PRIMARY KEY,
    body       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
