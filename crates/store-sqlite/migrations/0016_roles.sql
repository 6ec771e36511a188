-- Roles (docs/security.md): every user has a role, existing users become
-- admins (they could do everything before). `scope` is a label selector as
-- JSON (`{"team":"a"}`), NULL for an unscoped user: a scoped user sees and
-- acts on matching hosts only. An API token's `role` may narrow its
-- user's; NULL means "the user's role", and the effective role is the
-- smaller of the two at every request, so demoting a user demotes their
-- tokens at once.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'
    CHECK (role IN ('admin', 'operator', 'viewer'));
ALTER TABLE users ADD COLUMN scope TEXT NULL;
ALTER TABLE api_tokens ADD COLUMN role TEXT NULL
    CHECK (role IS NULL OR role IN ('admin', 'operator', 'viewer'));
