-- The foundation schema of restic-manager: operators, their sessions and API
-- tokens, enrolment tokens, hosts and the agent tokens that authenticate them.
--
-- Conventions (kept portable to PostgreSQL):
--   * ids are ULID strings (TEXT, 26 chars);
--   * timestamps are INTEGER unix milliseconds (UTC);
--   * token hashes are lower-case hex SHA-256 (TEXT, 64 chars);
--   * booleans are INTEGER 0/1.

CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    username      TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    CONSTRAINT users_username_unique UNIQUE (username)
);

CREATE TABLE sessions (
    id         TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE api_tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    token_hash TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NULL,
    revoked_at INTEGER NULL
);
CREATE INDEX api_tokens_user_id ON api_tokens (user_id);

CREATE TABLE hosts (
    id               TEXT    NOT NULL PRIMARY KEY,
    name             TEXT    NOT NULL,
    hostname         TEXT    NOT NULL,
    enrolled_at      INTEGER NOT NULL,
    last_seen_at     INTEGER NULL,
    online           INTEGER NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
    connection_id    TEXT    NULL,
    agent_version    TEXT    NULL,
    restic_version   TEXT    NULL,
    restic_error     TEXT    NULL,
    protocol_version INTEGER NULL,
    os               TEXT    NULL,
    arch             TEXT    NULL,
    deleted_at       INTEGER NULL
);
-- Listing: undeleted hosts in enrolment order.
CREATE INDEX hosts_live_enrolled ON hosts (enrolled_at, id) WHERE deleted_at IS NULL;

CREATE TABLE enrollment_tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NULL,
    token_hash TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER NULL,
    -- Deferred: enrolment spends the token (setting host_id) before it
    -- inserts the host, inside one transaction.
    host_id    TEXT    NULL REFERENCES hosts (id) DEFERRABLE INITIALLY DEFERRED
);
-- Listing: pending (unused) tokens.
CREATE INDEX enrollment_tokens_pending ON enrollment_tokens (expires_at) WHERE used_at IS NULL;

CREATE TABLE agent_tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    host_id    TEXT    NOT NULL REFERENCES hosts (id),
    token_hash TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER NULL
);
CREATE INDEX agent_tokens_host_id ON agent_tokens (host_id);
