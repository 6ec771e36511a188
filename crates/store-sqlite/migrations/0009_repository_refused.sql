-- Repository settings the server refuses to use.
--
-- Settings stored before the repository `env` became an allow-list may set
-- variables that are now refused (`PATH`, `LD_PRELOAD`, …). They stay
-- stored (sealed, as they are), but are not pushed to the agent: `refused`
-- holds why, for the host's page, until an operator sets usable settings
-- (which clears it). The server fills it at start-up and whenever it opens
-- the settings.

ALTER TABLE host_repositories ADD COLUMN refused TEXT NULL;
