-- Which key sealed the store's secrets, and how each secret was sealed.
--
-- `sealing_key` holds one row: the fingerprint of the key (a one-way hash,
-- never the key), so a server started with a missing or different key file
-- refuses to start instead of making a new key that opens nothing.
--
-- `seal_format` says whether a repository's sealed settings are bound to
-- their owner (1: associated data `host:<id>/repository`) or from before
-- that (0). Existing rows are 0; the server re-seals them on start, all in
-- one transaction together with the fingerprint.

CREATE TABLE sealing_key (
    id          INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL
);

ALTER TABLE host_repositories ADD COLUMN seal_format INTEGER NOT NULL DEFAULT 0 CHECK (seal_format IN (0, 1));
