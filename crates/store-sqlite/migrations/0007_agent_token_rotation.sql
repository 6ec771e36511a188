-- Agent token rotation and revocation.
--
-- A rotation adds the new token as a `pending` row beside the current one;
-- both authenticate until the agent confirms (or connects with the new
-- one), when the pending row becomes the only valid token of the host.
-- Revoking an agent revokes all its tokens and stamps the host, which stays
-- listed with its history.

ALTER TABLE agent_tokens ADD COLUMN pending INTEGER NOT NULL DEFAULT 0 CHECK (pending IN (0, 1));

ALTER TABLE hosts ADD COLUMN token_rotated_at INTEGER NULL;
ALTER TABLE hosts ADD COLUMN agent_revoked_at INTEGER NULL;

-- The host's waiting rotation, found without scanning its old tokens.
CREATE INDEX agent_tokens_pending ON agent_tokens (host_id) WHERE pending = 1 AND revoked_at IS NULL;
