-- Notification channels and the outbox their deliveries wait in
-- (DESIGN §7).

-- A place notifications go. `config` holds the settings that are not
-- secret (JSON); the secret ones (a webhook's signing secret, an ntfy
-- token, an SMTP password, a Slack/Discord webhook URL, a healthchecks
-- base URL with its ping key) are sealed together in `secret_*`, bound to
-- `channel:<id>/config`. `selector` limits it to hosts with those labels
-- (`{}`: every host); `kinds` to some alert kinds (`[]`: every kind). The
-- counters and failure state are read by `/metrics` at scrape time, so
-- they live here and not in one server's memory.
CREATE TABLE notification_channels (
    id                TEXT    NOT NULL PRIMARY KEY,
    name              TEXT    NOT NULL UNIQUE,
    kind              TEXT    NOT NULL,
    config            TEXT    NOT NULL,
    secret_nonce      BLOB    NULL,
    secret_ciphertext BLOB    NULL,
    selector          TEXT    NOT NULL DEFAULT '{}',
    kinds             TEXT    NOT NULL DEFAULT '[]',
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    delivered         INTEGER NOT NULL DEFAULT 0,
    failed            INTEGER NOT NULL DEFAULT 0,
    given_up          INTEGER NOT NULL DEFAULT 0,
    last_success_at   INTEGER NULL,
    last_failure_at   INTEGER NULL,
    last_error        TEXT    NULL,
    failing_since     INTEGER NULL
);

-- One delivery to one channel. A row is due while neither `delivered_at`
-- nor `given_up_at` is set and `next_attempt_at` has passed; a server
-- claims it by moving `next_attempt_at` forward by a lease in the claiming
-- transaction, so a server that dies mid-delivery leaves a row that is due
-- again once the lease ends (delivered at least once, never lost). Rows of
-- a deleted channel go with it.
CREATE TABLE notification_outbox (
    id              INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    channel_id      TEXT    NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    alert_id        TEXT    NULL,
    event           TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER NULL,
    given_up_at     INTEGER NULL,
    last_error      TEXT    NULL
);
CREATE INDEX notification_outbox_due ON notification_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;
CREATE INDEX notification_outbox_channel ON notification_outbox (channel_id);
-- Each channel's queued rows, counted whenever channels are read (every
-- backup's end with a healthchecks channel): only the pending ones.
CREATE INDEX notification_outbox_pending ON notification_outbox (channel_id)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;
CREATE INDEX notification_outbox_finished ON notification_outbox (created_at)
    WHERE delivered_at IS NOT NULL OR given_up_at IS NOT NULL;
