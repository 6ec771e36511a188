-- Several servers on one database (docs/postgresql.md#several-servers).
-- `servers`: who is running, until when (unix ms) it counts as alive.
-- `leases`: named timed work and the server that may run it until `until`,
-- taken with one conditional upsert. `cluster_replies`: the answer to a
-- call one server made through another, until the caller takes it. None
-- is copied by
-- `admin migrate-store`: they describe running processes, not the fleet.
CREATE TABLE servers (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    internal_url TEXT COLLATE "C" NOT NULL,
    started_at   BIGINT           NOT NULL,
    alive_until  BIGINT           NOT NULL
);
CREATE TABLE leases (
    name   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    holder TEXT COLLATE "C" NOT NULL,
    until  BIGINT           NOT NULL
);
-- The server holding the host's agent connection (`servers.id`, not a
-- foreign key: a dead server's row may be gone while its hosts are swept).
ALTER TABLE hosts ADD COLUMN server_id TEXT COLLATE "C" NULL;
CREATE INDEX hosts_online_server ON hosts (server_id) WHERE online;
CREATE TABLE cluster_replies (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    body       TEXT             NOT NULL,
    created_at BIGINT           NOT NULL
);
