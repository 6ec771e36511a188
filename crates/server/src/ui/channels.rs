//! The notification channels pages: `/channels` lists every channel with
//! its health (deliveries, failures, queue, and since when and why it is
//! failing) and a "Send test" button; `/channels/new` and
//! `/channels/{id}` are its form, showing only the chosen kind's fields.
//!
//! The form is a plain HTML form (CSRF token in a hidden field); each
//! kind's fields are posted as `<kind>.<field>` so the other kinds' never
//! mix in. The chosen kind's fields become a [`ChannelRequest`] handed to
//! the same service as the JSON API ([`crate::notify::channels`]), with the
//! same audit entries. Secrets are never shown back: on an edit a secret
//! field left empty is left out of the request, which keeps the stored
//! one; an optional one ticked "remove" is sent as `null`. A refusal renders the form again with what was typed (secrets
//! excepted), the service's message at the top and next to the field it
//! names; nothing is saved. The test button posts to the API's
//! `…/{id}/test` and shows the receiver's answer in the row.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use rm_core::{ChannelId, Labels};
use rm_protocol::api::{ChannelRequest, ChannelView};
use rm_store::StoreError;
use serde_json::{Map, Value};

use super::format;
use super::session::{render, store_error, WebUser};
use crate::audit::{Audit, Client};
use crate::notify::channels::{self as service, ALERT_KINDS, KINDS, SET};
use crate::notify::NotifyError;
use crate::state::AppState;

/// How a kind's field is typed in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    Text,
    Secret,
    Number,
    Tls,
    Lines,
}

/// One field of a kind's fieldset.
pub(crate) struct FieldDef {
    pub(crate) kind: &'static str,
    pub(crate) name: &'static str,
    pub(crate) label: &'static str,
    pub(crate) input: Input,
    /// Required by the service (sent even when empty, so its message
    /// names the field).
    pub(crate) required: bool,
    pub(crate) placeholder: &'static str,
}

impl FieldDef {
    /// The form name: `webhook.url`.
    pub(crate) fn key(&self) -> String {
        format!("{}.{}", self.kind, self.name)
    }

    /// The element id: `webhook-url`.
    pub(crate) fn dom_id(&self) -> String {
        format!("{}-{}", self.kind, self.name.replace('_', "-"))
    }

    pub(crate) fn is_secret(&self) -> bool {
        self.input == Input::Secret
    }
    pub(crate) fn is_number(&self) -> bool {
        self.input == Input::Number
    }
    pub(crate) fn is_tls(&self) -> bool {
        self.input == Input::Tls
    }
    pub(crate) fn is_lines(&self) -> bool {
        self.input == Input::Lines
    }
}

const fn field(
    kind: &'static str,
    name: &'static str,
    label: &'static str,
    input: Input,
    required: bool,
    placeholder: &'static str,
) -> FieldDef {
    FieldDef {
        kind,
        name,
        label,
        input,
        required,
        placeholder,
    }
}

/// Every kind's fields, in the order the form shows them (docs/notifications.md).
const FIELDS: [FieldDef; 14] = [
    field(
        "webhook",
        "url",
        "URL the JSON is POSTed to",
        Input::Text,
        true,
        "https://hooks.example.com/backups",
    ),
    field(
        "webhook",
        "secret",
        "Signing secret (optional; signs the body as X-RM-Signature)",
        Input::Secret,
        false,
        "",
    ),
    field(
        "ntfy",
        "url",
        "Topic URL",
        Input::Text,
        true,
        "https://ntfy.sh/my-backups",
    ),
    field(
        "ntfy",
        "token",
        "Access token (optional)",
        Input::Secret,
        false,
        "",
    ),
    field(
        "email",
        "smtp_host",
        "SMTP server",
        Input::Text,
        true,
        "smtp.example.com",
    ),
    field(
        "email",
        "smtp_port",
        "Port (empty: 25, 587 or 465 by TLS)",
        Input::Number,
        false,
        "587",
    ),
    field("email", "tls", "TLS", Input::Tls, false, ""),
    field(
        "email",
        "username",
        "Username (optional)",
        Input::Text,
        false,
        "",
    ),
    field(
        "email",
        "password",
        "Password (optional)",
        Input::Secret,
        false,
        "",
    ),
    field(
        "email",
        "from",
        "From",
        Input::Text,
        true,
        "Backups <backups@example.com>",
    ),
    field(
        "email",
        "to",
        "To (one per line or comma-separated)",
        Input::Lines,
        true,
        "ops@example.com",
    ),
    field(
        "slack",
        "webhook_url",
        "Incoming webhook URL",
        Input::Secret,
        true,
        "https://hooks.slack.com/services/…",
    ),
    field(
        "discord",
        "webhook_url",
        "Webhook URL",
        Input::Secret,
        true,
        "https://discord.com/api/webhooks/…",
    ),
    field(
        "healthchecks",
        "base_url",
        "Ping URL with its key (pings go to <base_url>/<host>)",
        Input::Secret,
        true,
        "https://hc-ping.com/<ping key>",
    ),
];

/// The fields of `kind`.
fn fields_of(kind: &str) -> impl Iterator<Item = &'static FieldDef> + '_ {
    FIELDS.iter().filter(move |f| f.kind == kind)
}

/// One kind's fieldset.
pub(crate) struct KindSet {
    pub(crate) kind: &'static str,
    pub(crate) fields: Vec<&'static FieldDef>,
}

fn kind_sets() -> Vec<KindSet> {
    KINDS
        .iter()
        .map(|kind| KindSet {
            kind,
            fields: fields_of(kind).collect(),
        })
        .collect()
}

/// A selector as people write it: `env=prod, role=web`.
fn selector_text(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One channel as the list shows it.
pub(crate) struct ChannelRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) selector: String,
    pub(crate) kinds: String,
    pub(crate) delivered: u64,
    pub(crate) failed: u64,
    pub(crate) given_up: u64,
    pub(crate) queued: u64,
    pub(crate) last_success: String,
    /// `since <time> (<how long>)` when failing now, else empty.
    pub(crate) failing: String,
    pub(crate) last_error: String,
}

fn channel_row(c: &ChannelView) -> ChannelRow {
    let now = Utc::now();
    ChannelRow {
        id: c.id.clone(),
        name: c.name.clone(),
        kind: c.kind.clone(),
        selector: if c.selector.is_empty() {
            String::from("every host")
        } else {
            selector_text(&c.selector)
        },
        kinds: if c.kind == service::KIND_HEALTHCHECKS {
            String::from("backups (pings)")
        } else if c.kinds.is_empty() {
            String::from("every kind")
        } else {
            c.kinds.join(", ")
        },
        delivered: c.delivered,
        failed: c.failed,
        given_up: c.given_up,
        queued: c.queued,
        last_success: c
            .last_success_at
            .map(format::time)
            .unwrap_or_else(|| String::from("never")),
        failing: c
            .failing_since
            .map(|at| format!("{} ({})", format::time(at), format::ago(at, now)))
            .unwrap_or_default(),
        last_error: c.last_error.clone().unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "channels.html")]
struct ChannelsPage {
    user: super::session::Who,
    csrf: String,
    channels: Vec<ChannelRow>,
    saved: bool,
    deleted: bool,
}

/// Query of the list: `?saved=1` or `?deleted=1` after a change.
#[derive(serde::Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    saved: Option<String>,
    #[serde(default)]
    deleted: Option<String>,
}

/// `GET /channels`.
pub(crate) async fn list(
    State(state): State<AppState>,
    user: WebUser,
    Query(query): Query<ListQuery>,
) -> Response {
    let channels = match service::list(&state).await {
        Ok(channels) => channels,
        Err(e) => return store_error(e),
    };
    render(&ChannelsPage {
        user: user.username,
        csrf: user.csrf,
        channels: channels.iter().map(channel_row).collect(),
        saved: query.saved.is_some(),
        deleted: query.deleted.is_some(),
    })
}

/// The form as typed (or as stored): `name`, `kind`, `selector`, the
/// ticked alert kinds, and every kind's fields by `<kind>.<field>`.
#[derive(Default)]
pub(crate) struct ChannelFields {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) selector: String,
    pub(crate) kinds: Vec<String>,
    pub(crate) values: BTreeMap<String, String>,
    /// Optional secrets ticked "remove", as `<kind>.<field>`.
    pub(crate) cleared: Vec<String>,
}

impl ChannelFields {
    fn from_view(c: &ChannelView) -> ChannelFields {
        let mut values = BTreeMap::new();
        if let Value::Object(config) = &c.config {
            for f in fields_of(&c.kind).filter(|f| !f.is_secret()) {
                let shown = match config.get(f.name) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    Some(Value::Array(items)) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("\n"),
                    _ => continue,
                };
                values.insert(f.key(), shown);
            }
        }
        ChannelFields {
            name: c.name.clone(),
            kind: c.kind.clone(),
            selector: selector_text(&c.selector),
            kinds: c.kinds.clone(),
            values,
            cleared: Vec::new(),
        }
    }
}

/// What the form knows of a saved channel.
pub(crate) struct Saved {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) kind: String,
    /// Its stored secrets, as `<kind>.<field>`.
    pub(crate) secrets: Vec<String>,
}

#[derive(Template)]
#[template(path = "channel.html")]
struct ChannelPage {
    user: super::session::Who,
    csrf: String,
    saved: Option<Saved>,
    form: ChannelFields,
    sets: Vec<KindSet>,
    alert_kinds: [&'static str; 5],
    error: Option<String>,
    /// The field it is about (`name`, `webhook.url`, …).
    error_field: String,
}

impl ChannelPage {
    fn new(user: WebUser, form: ChannelFields) -> ChannelPage {
        ChannelPage {
            user: user.username,
            csrf: user.csrf,
            saved: None,
            form,
            sets: kind_sets(),
            alert_kinds: ALERT_KINDS,
            error: None,
            error_field: String::new(),
        }
    }

    fn bad(&self, field: &str) -> bool {
        self.error_field == field
    }

    fn v(&self, key: &str) -> &str {
        self.form.values.get(key).map(String::as_str).unwrap_or("")
    }

    fn is_kind(&self, kind: &str) -> bool {
        self.form.kind == kind
    }

    fn ticked(&self, kind: &str) -> bool {
        self.form.kinds.iter().any(|k| k == kind)
    }

    /// Whether the saved channel has this secret stored (its kind unchanged).
    fn stored(&self, key: &str) -> bool {
        self.saved
            .as_ref()
            .is_some_and(|s| s.secrets.iter().any(|k| k == key))
    }

    /// Whether the optional secret is ticked "remove".
    fn cleared(&self, key: &str) -> bool {
        self.form.cleared.iter().any(|k| k == key)
    }

    /// The TLS choice, `starttls` when none is given.
    fn tls_is(&self, key: &str, value: &str) -> bool {
        match self.v(key) {
            "" => value == "starttls",
            chosen => chosen == value,
        }
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "channel not found").into_response()
}

fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response()
}

/// `GET /channels/new`: an empty form, a webhook to begin with.
pub(crate) async fn new_form(user: WebUser) -> Response {
    let form = ChannelFields {
        kind: String::from(service::KIND_WEBHOOK),
        ..ChannelFields::default()
    };
    render(&ChannelPage::new(user, form))
}

fn saved_of(view: &ChannelView) -> Saved {
    let secrets = match &view.config {
        Value::Object(config) => fields_of(&view.kind)
            .filter(|f| f.is_secret() && config.get(f.name) == Some(&Value::from(SET)))
            .map(FieldDef::key)
            .collect(),
        _ => Vec::new(),
    };
    Saved {
        id: view.id.clone(),
        name: view.name.clone(),
        kind: view.kind.clone(),
        secrets,
    }
}

/// `GET /channels/{id}`: the form with the channel's settings, secrets empty.
pub(crate) async fn page(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<ChannelId>() else {
        return not_found();
    };
    let view = match service::show(&state, id).await {
        Ok(view) => view,
        Err(NotifyError::NotFound(_)) => return not_found(),
        Err(e) => return store_error(e),
    };
    let mut page = ChannelPage::new(user, ChannelFields::from_view(&view));
    page.saved = Some(saved_of(&view));
    render(&page)
}

/// The posted form: every `(name, value)` pair in order (`kinds` repeats).
type Pairs = Vec<(String, String)>;

fn value<'a>(pairs: &'a Pairs, name: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn read_form(pairs: &Pairs) -> ChannelFields {
    let mut values = BTreeMap::new();
    for f in &FIELDS {
        let key = f.key();
        let typed = value(pairs, &key);
        if !typed.is_empty() {
            values.insert(key, typed.to_owned());
        }
    }
    ChannelFields {
        name: value(pairs, "name").to_owned(),
        kind: value(pairs, "kind").trim().to_owned(),
        selector: value(pairs, "selector").to_owned(),
        kinds: pairs
            .iter()
            .filter(|(k, _)| k == "kinds")
            .map(|(_, v)| v.clone())
            .collect(),
        values,
        cleared: FIELDS
            .iter()
            .filter(|f| f.is_secret() && !f.required)
            .map(FieldDef::key)
            .filter(|key| !value(pairs, &format!("{key}.clear")).is_empty())
            .collect(),
    }
}

/// A refusal: the message and the form field it is about.
#[derive(Debug)]
struct Refusal {
    message: String,
    field: String,
}

/// Recipients typed one per line or comma-separated.
fn recipients(text: &str) -> Vec<String> {
    text.split(['\n', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Turns the form into a request. `editing`: a secret left empty is left
/// out, which keeps the stored one; on a new channel a required one is
/// sent empty so the service names it. An optional secret ticked
/// "remove" (and left empty) is sent as `null`, which removes it.
fn request(form: &ChannelFields, editing: bool) -> Result<ChannelRequest, Refusal> {
    let selector = Labels::parse_pairs("selector", &form.selector)
        .map_err(|e| Refusal {
            message: e.to_string(),
            field: String::from("selector"),
        })?
        .as_map()
        .clone();
    let mut config = Map::new();
    for f in fields_of(&form.kind) {
        let key = f.key();
        let raw = form.values.get(&key).map(String::as_str).unwrap_or("");
        let typed = if f.is_secret() { raw } else { raw.trim() };
        if editing && form.cleared.contains(&key) && typed.is_empty() {
            // `null` removes a stored optional secret.
            config.insert(f.name.to_owned(), Value::Null);
            continue;
        }
        if typed.is_empty() && !(f.required && !(editing && f.is_secret())) {
            continue;
        }
        let v = match f.input {
            Input::Number => Value::from(typed.parse::<u16>().map_err(|_| Refusal {
                message: format!(
                    "`config.{}` must be a port from 1 to 65535, not `{typed}`",
                    f.name
                ),
                field: key.clone(),
            })?),
            Input::Lines => Value::from(recipients(typed)),
            _ => Value::from(typed),
        };
        config.insert(f.name.to_owned(), v);
    }
    Ok(ChannelRequest {
        name: form.name.clone(),
        kind: form.kind.clone(),
        config: Value::Object(config),
        selector,
        kinds: form.kinds.clone(),
    })
}

/// The form field a service message is about: `` `config.url` `` of a
/// webhook is `webhook.url`, `` `config`: missing field `url` `` too,
/// `` `config.to[1]` `` is `email.to`, `` `kinds[0]` `` is `kinds`.
fn refusal_field(kind: &str, message: &str) -> String {
    let mut names = message.split('`').skip(1).step_by(2);
    let Some(first) = names.next() else {
        return String::new();
    };
    let config_field = match first.strip_prefix("config") {
        Some("") => names.next(),
        Some(rest) => rest.strip_prefix('.'),
        None => None,
    };
    if let Some(name) = config_field {
        let name = name.split('[').next().unwrap_or(name);
        return format!("{kind}.{name}");
    }
    first.split('[').next().unwrap_or(first).to_owned()
}

fn service_refusal(kind: &str, e: NotifyError) -> Result<(Refusal, StatusCode), NotifyError> {
    match e {
        NotifyError::Invalid(message) => Ok((
            Refusal {
                field: refusal_field(kind, &message),
                message,
            },
            StatusCode::BAD_REQUEST,
        )),
        NotifyError::Store(StoreError::Conflict(message)) => Ok((
            Refusal {
                field: String::from("name"),
                message,
            },
            StatusCode::CONFLICT,
        )),
        other => Err(other),
    }
}

/// Renders the form again with what was typed (secrets excepted) and the refusal.
async fn refused(
    state: &AppState,
    user: WebUser,
    id: Option<ChannelId>,
    mut form: ChannelFields,
    refusal: Refusal,
    status: StatusCode,
) -> Response {
    let saved = match id {
        Some(id) => match service::show(state, id).await {
            Ok(view) => Some(saved_of(&view)),
            Err(NotifyError::NotFound(_)) => return not_found(),
            Err(e) => return store_error(e),
        },
        None => None,
    };
    // A secret is not written back into the page.
    form.values
        .retain(|key, _| !FIELDS.iter().any(|f| f.is_secret() && f.key() == *key));
    let mut page = ChannelPage::new(user, form);
    page.saved = saved;
    page.error = Some(refusal.message);
    page.error_field = refusal.field;
    let mut response = render(&page);
    if response.status().is_success() {
        *response.status_mut() = status;
    }
    response
}

fn failed(e: NotifyError) -> Response {
    match e {
        NotifyError::NotFound(_) => not_found(),
        other => store_error(other),
    }
}

/// `POST /channels/new`: creates the channel and lists it.
pub(crate) async fn create(
    State(state): State<AppState>,
    user: WebUser,
    client: Client,
    Form(pairs): Form<Pairs>,
) -> Response {
    if !user.csrf_matches(value(&pairs, "csrf")) {
        return forbidden();
    }
    let form = read_form(&pairs);
    let req = match request(&form, false) {
        Ok(req) => req,
        Err(r) => return refused(&state, user, None, form, r, StatusCode::BAD_REQUEST).await,
    };
    let by = Audit::by(&state, &user.operator, &client).await;
    match service::create(&state, &req, Some(&by)).await {
        Ok(_) => Redirect::to("/channels?saved=1").into_response(),
        Err(e) => match service_refusal(&form.kind, e) {
            Ok((r, status)) => refused(&state, user, None, form, r, status).await,
            Err(e) => failed(e),
        },
    }
}

/// `POST /channels/{id}`: replaces the channel's settings with the form's.
pub(crate) async fn update(
    State(state): State<AppState>,
    user: WebUser,
    client: Client,
    Path(id): Path<String>,
    Form(pairs): Form<Pairs>,
) -> Response {
    if !user.csrf_matches(value(&pairs, "csrf")) {
        return forbidden();
    }
    let Ok(id) = id.parse::<ChannelId>() else {
        return not_found();
    };
    let form = read_form(&pairs);
    let req = match request(&form, true) {
        Ok(req) => req,
        Err(r) => return refused(&state, user, Some(id), form, r, StatusCode::BAD_REQUEST).await,
    };
    let by = Audit::by(&state, &user.operator, &client).await;
    match service::update(&state, id, &req, Some(&by)).await {
        Ok(_) => Redirect::to("/channels?saved=1").into_response(),
        Err(e) => match service_refusal(&form.kind, e) {
            Ok((r, status)) => refused(&state, user, Some(id), form, r, status).await,
            Err(e) => failed(e),
        },
    }
}

/// `POST /channels/{id}/delete`: deletes it and what is queued for it.
pub(crate) async fn delete(
    State(state): State<AppState>,
    user: WebUser,
    client: Client,
    Path(id): Path<String>,
    Form(form): Form<super::session::CsrfForm>,
) -> Response {
    if !user.csrf_matches(&form.csrf) {
        return forbidden();
    }
    let Ok(id) = id.parse::<ChannelId>() else {
        return not_found();
    };
    let by = Audit::by(&state, &user.operator, &client).await;
    match service::delete(&state, id, Some(&by)).await {
        Ok(()) => Redirect::to("/channels?deleted=1").into_response(),
        Err(e) => failed(e),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Pairs {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_the_chosen_kinds_fields_are_sent() {
        let posted = pairs(&[
            ("csrf", "x"),
            ("name", "ops"),
            ("kind", "webhook"),
            ("selector", " env=prod, role=web "),
            ("kinds", "backup_stale"),
            ("kinds", "job_failed"),
            ("webhook.url", " https://hooks.example.com/x "),
            ("webhook.secret", " s3cret "),
            ("ntfy.url", "https://ntfy.sh/other"),
            ("email.smtp_host", "smtp.example.com"),
        ]);
        let req = request(&read_form(&posted), false).unwrap();
        assert_eq!(req.name, "ops");
        assert_eq!(req.kind, "webhook");
        assert_eq!(req.selector.len(), 2);
        assert_eq!(req.kinds, ["backup_stale", "job_failed"]);
        assert_eq!(
            req.config,
            json!({"url": "https://hooks.example.com/x", "secret": " s3cret "}),
            "secrets are taken as typed; other kinds' fields are not sent"
        );
    }

    #[test]
    fn an_email_form_becomes_its_config() {
        let posted = pairs(&[
            ("name", "mail"),
            ("kind", "email"),
            ("email.smtp_host", "127.0.0.1"),
            ("email.smtp_port", "2525"),
            ("email.tls", "none"),
            ("email.username", ""),
            ("email.password", ""),
            ("email.from", "Backups <backups@example.com>"),
            (
                "email.to",
                "ops@example.com, oncall@example.com\r\nboss@example.com\n",
            ),
        ]);
        let req = request(&read_form(&posted), false).unwrap();
        assert_eq!(
            req.config,
            json!({"smtp_host": "127.0.0.1", "smtp_port": 2525, "tls": "none",
                   "from": "Backups <backups@example.com>",
                   "to": ["ops@example.com", "oncall@example.com", "boss@example.com"]})
        );
        assert!(req.kinds.is_empty(), "none ticked: every kind");
        let bad = pairs(&[("kind", "email"), ("email.smtp_port", "smtp")]);
        let refusal = request(&read_form(&bad), false).unwrap_err();
        assert_eq!(refusal.field, "email.smtp_port");
    }

    #[test]
    fn an_empty_secret_keeps_the_stored_one_on_edit_and_is_named_when_new() {
        let posted = pairs(&[
            ("name", "chat"),
            ("kind", "slack"),
            ("slack.webhook_url", ""),
        ]);
        let form = read_form(&posted);
        let edit = request(&form, true).unwrap();
        assert_eq!(edit.config, json!({}), "left out: the stored one is kept");
        let new = request(&form, false).unwrap();
        assert_eq!(new.config, json!({"webhook_url": ""}));
        let posted = pairs(&[
            ("name", "hook"),
            ("kind", "webhook"),
            ("webhook.url", "https://x.example"),
            ("webhook.secret.clear", "on"),
        ]);
        let edit = request(&read_form(&posted), true).unwrap();
        assert_eq!(
            edit.config,
            json!({"url": "https://x.example", "secret": null}),
            "ticked remove: the stored secret is removed"
        );
        let posted = pairs(&[
            ("name", "hook"),
            ("kind", "webhook"),
            ("webhook.url", "https://x.example"),
        ]);
        let edit = request(&read_form(&posted), true).unwrap();
        assert_eq!(edit.config, json!({"url": "https://x.example"}));
    }

    #[test]
    fn a_bad_selector_is_refused_naming_it() {
        let posted = pairs(&[("name", "x"), ("kind", "webhook"), ("selector", "env")]);
        let refusal = request(&read_form(&posted), false).unwrap_err();
        assert_eq!(refusal.field, "selector");
        assert!(
            refusal.message.contains("`selector`"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn service_messages_point_at_form_fields() {
        assert_eq!(
            refusal_field("webhook", "`config.url`: relative URL without a base"),
            "webhook.url"
        );
        assert_eq!(
            refusal_field("slack", "`config`: missing field `webhook_url`"),
            "slack.webhook_url"
        );
        assert_eq!(
            refusal_field("email", "`config.to[1]`: \"x\" is not an email address"),
            "email.to"
        );
        assert_eq!(
            refusal_field("email", "`kinds[0]`: `x` is not an alert kind"),
            "kinds"
        );
        assert_eq!(refusal_field("ntfy", "`name` must not be empty"), "name");
        assert_eq!(refusal_field("ntfy", "no field named"), "");
    }

    #[test]
    fn every_kind_has_its_fields_and_every_secret_is_a_secret_input() {
        for kind in KINDS {
            let names: Vec<&str> = fields_of(kind).map(|f| f.name).collect();
            assert!(!names.is_empty(), "{kind}");
            for secret in service::secret_fields(kind) {
                let f = fields_of(kind).find(|f| f.name == *secret).unwrap();
                assert!(f.is_secret(), "{kind}.{secret}");
            }
        }
        assert!(fields_of(service::KIND_EMAIL).any(|f| f.is_tls()));
    }
}
