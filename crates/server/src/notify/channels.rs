//! Notification channels: each kind's settings, checked with errors that
//! name the field (`config.url`, `config.to[1]`), split into what may be
//! shown and the secrets that are sealed (bound to `channel:<id>/config`)
//! and never shown back, and the service behind the API.

use chrono::Utc;
use rm_core::{ChannelId, Labels, Selector};
use rm_protocol::api::{ChannelRequest, ChannelTestView, ChannelView};
use rm_store::{ChannelRecord, NewAuditEntry};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::deliver;
use super::NotifyError;
use crate::audit::{Action, Audit, Target};
use crate::state::AppState;

/// A channel that POSTs JSON.
pub const KIND_WEBHOOK: &str = "webhook";
/// An ntfy topic.
pub const KIND_NTFY: &str = "ntfy";
/// Email over SMTP.
pub const KIND_EMAIL: &str = "email";
/// A Slack incoming webhook.
pub const KIND_SLACK: &str = "slack";
/// A Discord webhook.
pub const KIND_DISCORD: &str = "discord";
/// healthchecks.io (or a self-hosted Healthchecks): pings per host.
pub const KIND_HEALTHCHECKS: &str = "healthchecks";

/// Every channel kind.
pub const KINDS: [&str; 6] = [
    KIND_WEBHOOK,
    KIND_NTFY,
    KIND_EMAIL,
    KIND_SLACK,
    KIND_DISCORD,
    KIND_HEALTHCHECKS,
];

/// The alert kinds a channel's `kinds` may name.
pub const ALERT_KINDS: [&str; 5] = [
    "backup_stale",
    "job_failed",
    "host_offline",
    "check_failed",
    "drill_failed",
];

/// How a stored secret is shown.
pub const SET: &str = "<set>";

/// Longest channel name, in characters.
const MAX_NAME_CHARS: usize = 100;
/// Most email recipients.
const MAX_RECIPIENTS: usize = 50;
/// Longest URL, in bytes.
const MAX_URL_BYTES: usize = 2048;
/// Longest other text setting, in characters.
const MAX_TEXT_CHARS: usize = 500;

/// `tls` of an email channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on the same machine or network).
    None,
    /// SMTP upgraded with STARTTLS (port 587), required.
    Starttls,
    /// SMTP over TLS from the first byte (port 465).
    Tls,
}

impl SmtpTls {
    fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        }
    }
}

/// `webhook` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where the JSON is POSTed.
    pub url: String,
    /// Signs the body (`X-RM-Signature`) when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `ntfy` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtfyConfig {
    /// The topic's URL.
    pub url: String,
    /// An access token (`Authorization: Bearer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `email` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server.
    pub smtp_host: String,
    /// Its port (default by `tls`: 25, 587, 465).
    #[serde(default)]
    pub smtp_port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    #[serde(default)]
    pub tls: Option<SmtpTls>,
    /// Logs in when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The login's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The sender (`Backups <backups@example.com>` or a bare address).
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
}

/// `slack` and `discord` settings: the webhook URL is the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// The incoming webhook's URL.
    pub webhook_url: String,
}

/// `healthchecks` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthchecksConfig {
    /// `https://hc-ping.com/<ping key>`: pings go to `<base_url>/<slug>`.
    pub base_url: String,
}

/// A channel's whole settings, secrets included, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelConfig {
    /// `webhook`.
    Webhook(WebhookConfig),
    /// `ntfy`.
    Ntfy(NtfyConfig),
    /// `email`.
    Email(EmailConfig),
    /// `slack`.
    Slack(ChatConfig),
    /// `discord`.
    Discord(ChatConfig),
    /// `healthchecks`.
    Healthchecks(HealthchecksConfig),
}

/// The fields saying where a kind's secret goes: a stored secret is kept
/// by an update only while they stay the same, so nobody can send it
/// somewhere else without knowing it.
fn destination_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        KIND_WEBHOOK | KIND_NTFY => &["url"],
        KIND_EMAIL => &["smtp_host", "smtp_port", "tls", "username"],
        _ => &[],
    }
}

/// The settings of `kind` that are secret: sealed, never shown.
pub fn secret_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        KIND_WEBHOOK => &["secret"],
        KIND_NTFY => &["token"],
        KIND_EMAIL => &["password"],
        KIND_SLACK | KIND_DISCORD => &["webhook_url"],
        KIND_HEALTHCHECKS => &["base_url"],
        _ => &[],
    }
}

fn invalid(message: impl Into<String>) -> NotifyError {
    NotifyError::Invalid(message.into())
}

/// Deserializes `value` as `T`, naming the field serde complained about
/// (`config.to[1]`).
fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, NotifyError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            invalid(format!("`config`: {inner}"))
        } else {
            invalid(format!("`config.{path}`: {inner}"))
        }
    })
}

/// Checks an http(s) URL. `shown`: it is shown back, so it must not carry
/// credentials.
fn check_url(field: &str, raw: &str, shown: Option<&str>) -> Result<(), NotifyError> {
    if raw.len() > MAX_URL_BYTES {
        return Err(invalid(format!(
            "`config.{field}` is longer than {MAX_URL_BYTES} bytes"
        )));
    }
    let url = url::Url::parse(raw)
        .map_err(|e| invalid(format!("`config.{field}`: {e} (expected an http(s) URL)")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "`config.{field}`: the scheme must be http or https, not `{}`",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("`config.{field}` has no host")));
    }
    if let Some(secret_field) = shown {
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(format!(
                "`config.{field}` must not carry credentials (it is shown back); put them in \
                 `config.{secret_field}`"
            )));
        }
    }
    Ok(())
}

fn check_text(field: &str, value: &str, required: bool) -> Result<(), NotifyError> {
    if required && value.trim().is_empty() {
        return Err(invalid(format!("`config.{field}` must not be empty")));
    }
    if value.chars().count() > MAX_TEXT_CHARS {
        return Err(invalid(format!(
            "`config.{field}` is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "`config.{field}` must not contain control characters"
        )));
    }
    Ok(())
}

fn check_mailbox(field: &str, value: &str) -> Result<(), NotifyError> {
    check_text(field, value, true)?;
    value
        .parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|e| {
            invalid(format!(
                "`config.{field}`: {value:?} is not an email address ({e})"
            ))
        })
}

/// An empty optional secret is no secret.
fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

impl ChannelConfig {
    /// Parses and checks the whole settings of `kind`.
    pub fn parse(kind: &str, config: Value) -> Result<ChannelConfig, NotifyError> {
        match kind {
            KIND_WEBHOOK => {
                let mut c: WebhookConfig = parse(config)?;
                check_url("url", &c.url, Some("secret"))?;
                c.secret = non_empty(c.secret);
                if let Some(s) = &c.secret {
                    check_text("secret", s, true)?;
                }
                Ok(ChannelConfig::Webhook(c))
            }
            KIND_NTFY => {
                let mut c: NtfyConfig = parse(config)?;
                check_url("url", &c.url, Some("token"))?;
                c.token = non_empty(c.token);
                if let Some(t) = &c.token {
                    check_text("token", t, true)?;
                }
                Ok(ChannelConfig::Ntfy(c))
            }
            KIND_EMAIL => {
                let mut c: EmailConfig = parse(config)?;
                check_text("smtp_host", &c.smtp_host, true)?;
                if c.smtp_host
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch == '/')
                {
                    return Err(invalid(format!(
                        "`config.smtp_host`: {:?} is not a host name",
                        c.smtp_host
                    )));
                }
                let tls = c.tls.unwrap_or(SmtpTls::Starttls);
                c.tls = Some(tls);
                if c.smtp_port == Some(0) {
                    return Err(invalid("`config.smtp_port` must be from 1 to 65535"));
                }
                c.smtp_port = Some(c.smtp_port.unwrap_or(tls.default_port()));
                c.username = non_empty(c.username);
                c.password = non_empty(c.password);
                if let Some(u) = &c.username {
                    check_text("username", u, true)?;
                }
                if c.password.is_some() && c.username.is_none() {
                    return Err(invalid(
                        "`config.password` is given without `config.username`",
                    ));
                }
                check_mailbox("from", &c.from)?;
                if c.to.is_empty() {
                    return Err(invalid("`config.to` must name at least one recipient"));
                }
                if c.to.len() > MAX_RECIPIENTS {
                    return Err(invalid(format!(
                        "`config.to` has {} recipients; at most {MAX_RECIPIENTS} are allowed",
                        c.to.len()
                    )));
                }
                for (i, to) in c.to.iter().enumerate() {
                    check_mailbox(&format!("to[{i}]"), to)?;
                }
                Ok(ChannelConfig::Email(c))
            }
            KIND_SLACK | KIND_DISCORD => {
                let c: ChatConfig = parse(config)?;
                check_url("webhook_url", &c.webhook_url, None)?;
                Ok(if kind == KIND_SLACK {
                    ChannelConfig::Slack(c)
                } else {
                    ChannelConfig::Discord(c)
                })
            }
            KIND_HEALTHCHECKS => {
                let mut c: HealthchecksConfig = parse(config)?;
                check_url("base_url", &c.base_url, None)?;
                c.base_url = c.base_url.trim_end_matches('/').to_owned();
                Ok(ChannelConfig::Healthchecks(c))
            }
            other => Err(invalid(format!(
                "`kind`: `{other}` is not a channel kind (one of {})",
                KINDS.join(", ")
            ))),
        }
    }

    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Webhook(_) => KIND_WEBHOOK,
            ChannelConfig::Ntfy(_) => KIND_NTFY,
            ChannelConfig::Email(_) => KIND_EMAIL,
            ChannelConfig::Slack(_) => KIND_SLACK,
            ChannelConfig::Discord(_) => KIND_DISCORD,
            ChannelConfig::Healthchecks(_) => KIND_HEALTHCHECKS,
        }
    }

    /// The whole settings as one JSON object.
    fn to_map(&self) -> Map<String, Value> {
        let value = match self {
            ChannelConfig::Webhook(c) => serde_json::to_value(c),
            ChannelConfig::Ntfy(c) => serde_json::to_value(c),
            ChannelConfig::Email(c) => serde_json::to_value(c),
            ChannelConfig::Slack(c) | ChannelConfig::Discord(c) => serde_json::to_value(c),
            ChannelConfig::Healthchecks(c) => serde_json::to_value(c),
        };
        match value {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    /// The settings split into (shown, secret) objects.
    pub fn split(&self) -> (Map<String, Value>, Map<String, Value>) {
        let mut public = self.to_map();
        let mut secret = Map::new();
        for field in secret_fields(self.kind()) {
            if let Some(v) = public.remove(*field) {
                secret.insert((*field).to_owned(), v);
            }
        }
        (public, secret)
    }
}

/// The owner and field a channel's secrets are bound to.
pub fn config_owner(id: ChannelId) -> String {
    format!("channel:{id}/config")
}

/// A stored channel's whole settings: its shown settings and its opened
/// secrets, parsed.
pub fn open_config(
    state: &AppState,
    channel: &ChannelRecord,
) -> Result<ChannelConfig, NotifyError> {
    let mut map = match &channel.config {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    map.extend(open_secrets(state, channel)?);
    ChannelConfig::parse(&channel.kind, Value::Object(map)).map_err(|e| {
        NotifyError::Sealing(format!(
            "the stored settings of channel `{}` are not valid any more: {e}",
            channel.name
        ))
    })
}

fn open_secrets(
    state: &AppState,
    channel: &ChannelRecord,
) -> Result<Map<String, Value>, NotifyError> {
    let Some(sealed) = &channel.secret else {
        return Ok(Map::new());
    };
    let plain = crate::sealing::open_for(state.sealing_key(), &config_owner(channel.id), sealed)
        .map_err(|_| {
            NotifyError::Sealing(format!(
                "the secrets of channel `{}` do not open with the server's key (sealed with \
                 another key, or altered); set them again",
                channel.name
            ))
        })?;
    match serde_json::from_slice(&plain) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(NotifyError::Sealing(format!(
            "the secrets of channel `{}` are not a JSON object; set them again",
            channel.name
        ))),
    }
}

/// The API view: shown settings, `"<set>"` for each stored secret.
pub fn view(state: &AppState, channel: &ChannelRecord) -> ChannelView {
    let mut config = match &channel.config {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    // The names of the stored secrets are known without opening them
    // when they open; a value that does not open shows as set all the
    // same (the channel's errors say why it fails).
    let stored: Vec<String> = match open_secrets(state, channel) {
        Ok(map) => map.keys().cloned().collect(),
        Err(_) => secret_fields(&channel.kind)
            .iter()
            .map(|f| (*f).to_owned())
            .collect(),
    };
    for field in stored {
        config.insert(field, Value::String(SET.to_owned()));
    }
    let s = &channel.stats;
    ChannelView {
        id: channel.id.to_string(),
        name: channel.name.clone(),
        kind: channel.kind.clone(),
        config: Value::Object(config),
        selector: super::selector_map(&channel.selector),
        kinds: channel.kinds.clone(),
        created_at: channel.created_at,
        updated_at: channel.updated_at,
        delivered: s.delivered,
        failed: s.failed,
        given_up: s.given_up,
        last_success_at: s.last_success_at,
        last_failure_at: s.last_failure_at,
        last_error: s.last_error.clone(),
        failing_since: s.failing_since,
        queued: s.queued,
    }
}

/// Checks a request and makes the record it describes. On an update
/// (`existing`), a secret field left out or given as `"<set>"` keeps the
/// stored value when the kind stays the same.
fn record_from(
    state: &AppState,
    req: &ChannelRequest,
    id: ChannelId,
    existing: Option<&ChannelRecord>,
) -> Result<ChannelRecord, NotifyError> {
    let name = req.name.trim();
    if name.is_empty() {
        return Err(invalid("`name` must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(format!(
            "`name` is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("`name` must not contain control characters"));
    }
    if !KINDS.contains(&req.kind.as_str()) {
        return Err(invalid(format!(
            "`kind`: `{}` is not a channel kind (one of {})",
            req.kind,
            KINDS.join(", ")
        )));
    }
    let selector = Labels::parse("selector", req.selector.clone())
        .map(Selector)
        .map_err(|e| invalid(e.to_string()))?;
    let mut kinds: Vec<String> = Vec::with_capacity(req.kinds.len());
    for (i, kind) in req.kinds.iter().enumerate() {
        if !ALERT_KINDS.contains(&kind.as_str()) {
            return Err(invalid(format!(
                "`kinds[{i}]`: `{kind}` is not an alert kind (one of {})",
                ALERT_KINDS.join(", ")
            )));
        }
        if !kinds.contains(kind) {
            kinds.push(kind.clone());
        }
    }
    let mut config = match &req.config {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        _ => return Err(invalid("`config` must be a JSON object")),
    };
    let kept = match existing {
        Some(old) if old.kind == req.kind => open_secrets(state, old).unwrap_or_default(),
        _ => Map::new(),
    };
    // Stored secrets used by this update, checked once the new settings are
    // parsed (defaults filled in, as the stored public settings are).
    let mut reused = Vec::new();
    for field in secret_fields(&req.kind) {
        match config.get(*field) {
            None => {
                if let Some(v) = kept.get(*field) {
                    reused.push(*field);
                    config.insert((*field).to_owned(), v.clone());
                }
            }
            Some(Value::String(s)) if s == SET => match kept.get(*field) {
                Some(v) => {
                    reused.push(*field);
                    config.insert((*field).to_owned(), v.clone());
                }
                None => {
                    return Err(invalid(format!(
                        "`config.{field}` is `{SET}` but no value is stored; give the value"
                    )))
                }
            },
            Some(Value::Null) => {
                config.remove(*field);
            }
            Some(_) => {}
        }
    }
    let parsed = ChannelConfig::parse(&req.kind, Value::Object(config))?;
    let (public, secret) = parsed.split();
    // A stored secret is only ever sent where it was meant to go: moving
    // the channel needs it given again.
    if let (Some(old), Some(field)) = (existing, reused.first()) {
        let moved = destination_fields(&req.kind)
            .iter()
            .find(|f| old.config.get(**f) != public.get(**f));
        if let Some(changed) = moved {
            return Err(invalid(format!(
                "`config.{field}`: give it again when `config.{changed}` changes (a stored secret is only ever sent where it was meant to go)"
            )));
        }
    }
    let secret = if secret.is_empty() {
        None
    } else {
        let plain = serde_json::to_vec(&Value::Object(secret))
            .map_err(|e| invalid(format!("`config`: {e}")))?;
        Some(
            crate::sealing::seal_for(state.sealing_key(), &config_owner(id), &plain)
                .map_err(|e| NotifyError::Sealing(e.to_string()))?,
        )
    };
    let now = Utc::now();
    Ok(ChannelRecord {
        id,
        name: name.to_owned(),
        kind: req.kind.clone(),
        config: Value::Object(public),
        secret,
        selector,
        kinds,
        created_at: existing.map(|c| c.created_at).unwrap_or(now),
        updated_at: now,
        stats: Default::default(),
    })
}

/// What the audit log keeps of a channel: never its settings.
fn audit_details(record: &ChannelRecord) -> Value {
    serde_json::json!({
        "name": record.name,
        "kind": record.kind,
        "selector": record.selector.to_string(),
        "kinds": record.kinds,
    })
}

async fn load(state: &AppState, id: ChannelId) -> Result<ChannelRecord, NotifyError> {
    state
        .store()
        .channel(id)
        .await?
        .ok_or_else(|| NotifyError::NotFound(id.to_string()))
}

/// Every channel, in name order.
pub async fn list(state: &AppState) -> Result<Vec<ChannelView>, NotifyError> {
    Ok(state
        .store()
        .channels()
        .await?
        .iter()
        .map(|c| view(state, c))
        .collect())
}

/// One channel.
pub async fn show(state: &AppState, id: ChannelId) -> Result<ChannelView, NotifyError> {
    Ok(view(state, &load(state, id).await?))
}

fn entry(by: Option<&Audit>, action: Action, record: &ChannelRecord) -> Option<NewAuditEntry> {
    by.map(|a| {
        a.entry(
            action,
            Some(Target::new("channel", record.id)),
            audit_details(record),
        )
    })
}

/// Makes a channel.
pub async fn create(
    state: &AppState,
    req: &ChannelRequest,
    by: Option<&Audit>,
) -> Result<ChannelView, NotifyError> {
    let record = record_from(state, req, ChannelId::new(), None)?;
    let audit = entry(by, Action::ChannelCreate, &record);
    state
        .store()
        .create_channel(&record, audit.as_ref())
        .await?;
    show(state, record.id).await
}

/// Replaces a channel's settings (its counters and queue stay).
pub async fn update(
    state: &AppState,
    id: ChannelId,
    req: &ChannelRequest,
    by: Option<&Audit>,
) -> Result<ChannelView, NotifyError> {
    let old = load(state, id).await?;
    let record = record_from(state, req, id, Some(&old))?;
    let audit = entry(by, Action::ChannelUpdate, &record);
    state
        .store()
        .update_channel(&record, audit.as_ref())
        .await?;
    show(state, id).await
}

/// Deletes a channel and what is queued for it.
pub async fn delete(
    state: &AppState,
    id: ChannelId,
    by: Option<&Audit>,
) -> Result<(), NotifyError> {
    let old = load(state, id).await?;
    let audit = entry(by, Action::ChannelDelete, &old);
    state.store().delete_channel(id, audit.as_ref()).await?;
    Ok(())
}

/// Sends a test message now (not through the queue) and says what the
/// receiver answered. The attempt is audited; the channel's counters are
/// for real deliveries and stay as they are.
pub async fn test(
    state: &AppState,
    id: ChannelId,
    by: Option<&Audit>,
) -> Result<ChannelTestView, NotifyError> {
    let channel = load(state, id).await?;
    let sent = match open_config(state, &channel) {
        Ok(config) => {
            let payload = deliver::test_payload(&channel.name);
            deliver::send(state, &config, &payload).await
        }
        Err(e) => deliver::Sent::failed(e.to_string()),
    };
    if let Some(by) = by {
        let mut details = audit_details(&channel);
        if let Value::Object(map) = &mut details {
            map.insert("ok".to_owned(), Value::Bool(sent.ok));
            map.insert(
                "status".to_owned(),
                sent.status.map(Value::from).unwrap_or(Value::Null),
            );
        }
        let entry = by.entry(
            Action::ChannelTest,
            Some(Target::new("channel", id)),
            details,
        );
        if let Err(e) = state.store().record_audit(&entry).await {
            tracing::warn!(error = %e, "could not record the channel test in the audit log");
        }
    }
    Ok(ChannelTestView {
        ok: sent.ok,
        status: sent.status,
        response: sent.response,
    })
}
