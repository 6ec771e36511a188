-- Agent upgrades (DESIGN §8): the platform each agent reports in `hello`
-- (NULL: an agent too old to upgrade itself), the upgrade an operator asked
-- for (sent at the agent's next hello while it is still older, so offline
-- hosts are upgraded when they come back), and the agent's last report on
-- an upgrade.
ALTER TABLE hosts ADD COLUMN platform TEXT NULL;
ALTER TABLE hosts ADD COLUMN upgrade_requested_version TEXT NULL;
ALTER TABLE hosts ADD COLUMN upgrade_requested_at INTEGER NULL;
ALTER TABLE hosts ADD COLUMN upgrade_state TEXT NULL;
ALTER TABLE hosts ADD COLUMN upgrade_version TEXT NULL;
ALTER TABLE hosts ADD COLUMN upgrade_error TEXT NULL;
ALTER TABLE hosts ADD COLUMN upgrade_at INTEGER NULL;
