//! The policies pages: `/policies` lists every policy with its coverage
//! and drift; `/policies/new` and `/policies/{id}` are its form (no JSON:
//! the selector as `env=prod, role=db`, the repository's fields, schedule
//! rows with their description and next fires, retention, freshness in
//! hours) beside the hosts it covers, each in sync or drifted.
//!
//! The form is a plain HTML form (CSRF token in a hidden field), posted to
//! `POST /policies/new`, `POST /policies/{id}` and
//! `POST /policies/{id}/delete`. Its fields become a [`PolicyRequest`]
//! handed to the same service as the JSON API ([`crate::policies`]), with
//! the same audit entries; a schedule row's fields become params through
//! the host schedule form's [`JobForm`]. A refusal renders the form again
//! with everything typed, the service's message at the top and next to the
//! field it names; nothing is saved.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use rm_core::{Labels, PolicyId};
use rm_protocol::api::{
    PolicyHostView, PolicyRepositoryRequest, PolicyRequest, PolicyScheduleRequest,
    PolicyScheduleView, PolicyView,
};
use rm_protocol::JobKind;
use rm_store::PolicyScheduleRecord;

use super::format;
use super::forms::{self, JobForm};
use super::session::{render, store_error, WebUser};
use crate::audit::{Audit, Client};
use crate::policies::{self, PolicyError};
use crate::state::AppState;

/// Covered hosts a policy's page lists (drifted and offline ones first);
/// a policy over a large fleet keeps a fast page, and the API lists all.
const COVERAGE_ROWS: usize = 200;

/// Blank schedule rows a form offers beyond the policy's own.
const BLANK_ROWS: usize = 2;

/// The kinds a schedule row offers; the empty one means "no schedule".
const KINDS: [&str; 5] = ["backup", "forget", "prune", "check", "drill"];

/// The keep-count fields of a forget row: name and label.
const KEEPS: [(&str, &str); 6] = [
    ("keep_last", "Last"),
    ("keep_hourly", "Hourly"),
    ("keep_daily", "Daily"),
    ("keep_weekly", "Weekly"),
    ("keep_monthly", "Monthly"),
    ("keep_yearly", "Yearly"),
];

/// One policy as the list shows it.
pub(crate) struct PolicyRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) selector: String,
    pub(crate) priority: i32,
    pub(crate) repository: String,
    pub(crate) schedules: Vec<String>,
    pub(crate) freshness: String,
    pub(crate) hosts: u64,
    pub(crate) in_sync: u64,
    pub(crate) drifted: u64,
}

/// A selector as people write it: `env=prod, role=db`, or `every host`.
fn selector_text(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Freshness in hours, as the form takes it (`26`, `0.5`).
fn hours(seconds: u64) -> String {
    let h = seconds as f64 / 3600.0;
    let shown = format!("{h:.2}");
    shown.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn policy_row(p: &PolicyView) -> PolicyRow {
    PolicyRow {
        id: p.id.clone(),
        name: p.name.clone(),
        selector: if p.selector.is_empty() {
            String::from("every host")
        } else {
            selector_text(&p.selector)
        },
        priority: p.priority,
        repository: p
            .repository
            .as_ref()
            .map(|r| r.url.clone())
            .unwrap_or_else(|| String::from("—")),
        schedules: p
            .schedules
            .iter()
            .map(|s| format!("{}: {}", s.kind, s.description))
            .collect(),
        freshness: p
            .freshness_seconds
            .map(|s| format!("{} h", hours(s)))
            .unwrap_or_else(|| String::from("default")),
        hosts: p.hosts,
        in_sync: p.hosts_in_sync,
        drifted: p.hosts.saturating_sub(p.hosts_in_sync),
    }
}

#[derive(Template)]
#[template(path = "policies.html")]
struct PoliciesPage {
    user: super::session::Who,
    csrf: String,
    policies: Vec<PolicyRow>,
    deleted: bool,
}

/// Query of the list: `?deleted=1` after a deletion.
#[derive(serde::Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    deleted: Option<String>,
}

/// `GET /policies`.
pub(crate) async fn list(
    State(state): State<AppState>,
    user: WebUser,
    Query(query): Query<ListQuery>,
) -> Response {
    let policies = match policies::list(&state).await {
        Ok(policies) => policies,
        Err(e) => return store_error(e),
    };
    render(&PoliciesPage {
        user: user.username,
        csrf: user.csrf,
        policies: policies.iter().map(policy_row).collect(),
        deleted: query.deleted.is_some(),
    })
}

/// One schedule row of the form: its fields as typed (or as stored), and
/// for a saved schedule its description and next fires.
pub(crate) struct ScheduleRow {
    pub(crate) index: usize,
    /// The policy schedule's id (kept across edits), empty for a new row.
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) fields: BTreeMap<String, String>,
    pub(crate) description: String,
    pub(crate) next_fires: Vec<String>,
    /// The field of this row the error is about (`cron`, `paths`, …).
    pub(crate) error_field: String,
}

impl ScheduleRow {
    fn blank(index: usize) -> ScheduleRow {
        let mut fields = BTreeMap::new();
        fields.insert(String::from("cron"), String::from("30 2 * * *"));
        fields.insert(String::from("enabled"), String::from("on"));
        fields.insert(String::from("retention"), String::from("standard"));
        fields.insert(String::from("prune"), String::from("on"));
        ScheduleRow {
            index,
            id: String::new(),
            kind: String::new(),
            fields,
            description: String::new(),
            next_fires: Vec::new(),
            error_field: String::new(),
        }
    }

    fn saved(index: usize, s: &PolicyScheduleView) -> ScheduleRow {
        let kind = s.kind.parse::<JobKind>().ok();
        let mut fields: BTreeMap<String, String> = kind
            .map(|k| forms::fields_from_params(k, &s.params))
            .unwrap_or_default()
            .into_iter()
            .collect();
        fields.insert(String::from("cron"), s.cron.clone());
        if let Some(zone) = &s.timezone {
            fields.insert(String::from("timezone"), zone.clone());
        }
        if s.jitter_seconds > 0 {
            fields.insert(String::from("jitter_seconds"), s.jitter_seconds.to_string());
        }
        if s.enabled {
            fields.insert(String::from("enabled"), String::from("on"));
        }
        if kind != Some(JobKind::Forget) {
            // A row switched to forget starts from the usual retention.
            fields.insert(String::from("retention"), String::from("standard"));
            fields.insert(String::from("prune"), String::from("on"));
        }
        ScheduleRow {
            index,
            id: s.id.clone(),
            kind: s.kind.clone(),
            fields,
            description: s.description.clone(),
            next_fires: s.next_fires.iter().map(|at| format::time(*at)).collect(),
            error_field: String::new(),
        }
    }

    /// A field's value, empty when not set.
    pub(crate) fn v(&self, name: &str) -> &str {
        self.fields.get(name).map(String::as_str).unwrap_or("")
    }

    /// Whether a box is ticked.
    pub(crate) fn on(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    /// Whether `field` holds `value` (a chosen option).
    pub(crate) fn is_value(&self, field: &str, value: &str) -> bool {
        self.v(field) == value
    }

    /// Whether this row is of a kind the form has no fields for (one
    /// added to the schedulable kinds later): its params stay as saved.
    pub(crate) fn other_kind(&self) -> bool {
        !self.kind.is_empty() && !KINDS.contains(&self.kind.as_str())
    }

    /// Whether this row is of `kind`.
    pub(crate) fn is(&self, kind: &str) -> bool {
        self.kind == kind
    }

    /// Whether the error is about this row's `field`.
    pub(crate) fn bad(&self, field: &str) -> bool {
        self.error_field == field
    }
}

/// The form's own fields, as typed.
#[derive(Default)]
pub(crate) struct PolicyFields {
    pub(crate) name: String,
    pub(crate) selector: String,
    pub(crate) priority: String,
    pub(crate) repository_url: String,
    pub(crate) repository_password: String,
    pub(crate) repository_env: String,
    pub(crate) freshness_hours: String,
    pub(crate) offline_hours: String,
}

/// A host the policy covers, as its page shows it.
pub(crate) struct CoverageRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) online: bool,
    pub(crate) in_sync: bool,
    pub(crate) labels: String,
}

fn coverage_row(h: PolicyHostView) -> CoverageRow {
    CoverageRow {
        labels: selector_text(&h.labels),
        id: h.host_id,
        name: h.name,
        online: h.online,
        in_sync: h.in_sync,
    }
}

/// What the page knows of a saved policy.
pub(crate) struct Saved {
    pub(crate) id: String,
    pub(crate) name: String,
    /// `given` or `generated`, when it has a repository.
    pub(crate) password: String,
    /// Names of its repository's variables.
    pub(crate) env_keys: String,
    pub(crate) hosts: u64,
    pub(crate) in_sync: u64,
}

#[derive(Template)]
#[template(path = "policy.html")]
struct PolicyPage {
    user: super::session::Who,
    csrf: String,
    saved: Option<Saved>,
    form: PolicyFields,
    rows: Vec<ScheduleRow>,
    coverage: Vec<CoverageRow>,
    /// Covered hosts not listed.
    coverage_more: usize,
    /// The refusal, shown at the top of the form.
    error: Option<String>,
    /// The top-level field it is about (`name`, `selector`, …).
    error_field: String,
    /// `?saved=1`: the policy was just saved.
    just_saved: bool,
    kinds: [&'static str; 5],
    presets: Vec<(&'static str, &'static str)>,
    keeps: [(&'static str, &'static str); 6],
}

impl PolicyPage {
    fn new(user: WebUser, form: PolicyFields, rows: Vec<ScheduleRow>) -> PolicyPage {
        PolicyPage {
            user: user.username,
            csrf: user.csrf,
            saved: None,
            form,
            rows,
            coverage: Vec::new(),
            coverage_more: 0,
            error: None,
            error_field: String::new(),
            just_saved: false,
            kinds: KINDS,
            presets: rm_protocol::params::RETENTION_PRESETS
                .iter()
                .map(|p| (p.name, p.description))
                .collect(),
            keeps: KEEPS,
        }
    }

    /// Whether the error is about the top-level `field`.
    fn bad(&self, field: &str) -> bool {
        self.error_field == field
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "policy not found").into_response()
}

/// `GET /policies/new`: an empty form with one backup row.
pub(crate) async fn new_form(user: WebUser) -> Response {
    let mut rows: Vec<ScheduleRow> = (0..=BLANK_ROWS).map(ScheduleRow::blank).collect();
    if let Some(first) = rows.first_mut() {
        first.kind = String::from("backup");
    }
    render(&PolicyPage::new(user, PolicyFields::default(), rows))
}

/// Query of a policy page: `?saved=1` after a save.
#[derive(serde::Deserialize)]
pub(crate) struct PageQuery {
    #[serde(default)]
    saved: Option<String>,
}

/// Fills a page with a saved policy: its fields, rows, coverage.
async fn saved_page(state: &AppState, user: WebUser, id: PolicyId) -> Result<PolicyPage, Response> {
    let view = match policies::show(state, id).await {
        Ok(view) => view,
        Err(PolicyError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(store_error(e)),
    };
    let mut hosts = match policies::hosts(state, id).await {
        Ok(hosts) => hosts,
        Err(e) => return Err(store_error(e)),
    };
    hosts.sort_by(|a, b| (a.in_sync, a.online, &a.name).cmp(&(b.in_sync, b.online, &b.name)));
    let coverage_more = hosts.len().saturating_sub(COVERAGE_ROWS);
    hosts.truncate(COVERAGE_ROWS);
    let coverage = hosts.into_iter().map(coverage_row).collect();
    let mut rows: Vec<ScheduleRow> = view
        .schedules
        .iter()
        .enumerate()
        .map(|(i, s)| ScheduleRow::saved(i, s))
        .collect();
    let n = rows.len();
    rows.extend((n..n + BLANK_ROWS).map(ScheduleRow::blank));
    let form = PolicyFields {
        name: view.name.clone(),
        selector: selector_text(&view.selector),
        priority: view.priority.to_string(),
        repository_url: view
            .repository
            .as_ref()
            .map(|r| r.url.clone())
            .unwrap_or_default(),
        repository_password: String::new(),
        repository_env: String::new(),
        freshness_hours: view.freshness_seconds.map(hours).unwrap_or_default(),
        offline_hours: view.offline_seconds.map(hours).unwrap_or_default(),
    };
    let mut page = PolicyPage::new(user, form, rows);
    page.coverage = coverage;
    page.coverage_more = coverage_more;
    page.saved = Some(Saved {
        id: view.id.clone(),
        name: view.name.clone(),
        password: view
            .repository
            .as_ref()
            .map(|r| r.password.clone())
            .unwrap_or_default(),
        env_keys: view
            .repository
            .as_ref()
            .map(|r| r.env_keys.join(", "))
            .unwrap_or_default(),
        hosts: view.hosts,
        in_sync: view.hosts_in_sync,
    });
    Ok(page)
}

/// `GET /policies/{id}`: the policy's form, its schedules' next fires and
/// the hosts it covers.
pub(crate) async fn page(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let Ok(id) = id.parse::<PolicyId>() else {
        return not_found();
    };
    match saved_page(&state, user, id).await {
        Ok(mut page) => {
            page.just_saved = query.saved.is_some();
            render(&page)
        }
        Err(response) => response,
    }
}

/// A form refusal: the message and the field it is about (`name`, or
/// `s1.cron` for a schedule row's).
struct Refusal {
    message: String,
    field: Option<String>,
}

impl Refusal {
    fn new(field: &str, message: String) -> Refusal {
        Refusal {
            message,
            field: Some(field.to_owned()),
        }
    }
}

/// The posted form: every `(name, value)` pair in order.
type Pairs = Vec<(String, String)>;

fn field<'a>(pairs: &'a Pairs, name: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// The form's own fields and its schedule rows (`s<index>.<field>`), as
/// typed, rows in index order.
fn read_form(pairs: &Pairs) -> (PolicyFields, Vec<ScheduleRow>) {
    let form = PolicyFields {
        name: field(pairs, "name").to_owned(),
        selector: field(pairs, "selector").to_owned(),
        priority: field(pairs, "priority").to_owned(),
        repository_url: field(pairs, "repository_url").to_owned(),
        repository_password: field(pairs, "repository_password").to_owned(),
        repository_env: field(pairs, "repository_env").to_owned(),
        freshness_hours: field(pairs, "freshness_hours").to_owned(),
        offline_hours: field(pairs, "offline_hours").to_owned(),
    };
    let mut rows: BTreeMap<usize, ScheduleRow> = BTreeMap::new();
    for (name, value) in pairs {
        let Some((index, name)) = name
            .strip_prefix('s')
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(i, name)| Some((i.parse::<usize>().ok()?, name)))
        else {
            continue;
        };
        // A posted form has at most a few dozen rows; anything beyond is
        // not one of this page's.
        if index > 64 {
            continue;
        }
        let row = rows.entry(index).or_insert_with(|| {
            let mut row = ScheduleRow::blank(index);
            row.fields.clear();
            row
        });
        match name {
            "id" => row.id = value.clone(),
            "kind" => row.kind = value.trim().to_owned(),
            other => {
                row.fields.insert(other.to_owned(), value.clone());
            }
        }
    }
    (form, rows.into_values().collect())
}

/// `KEY=VALUE` lines as a map; a line without `=` is refused naming it.
fn env_lines(text: &str) -> Result<BTreeMap<String, String>, Refusal> {
    let mut env = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(Refusal::new(
                "repository_env",
                format!(
                    "`repository.env` line {}: `{}` is not `NAME=value`",
                    n + 1,
                    line.split_whitespace().next().unwrap_or("")
                ),
            ));
        };
        env.insert(key.trim().to_owned(), value.to_owned());
    }
    Ok(env)
}

/// Turns the form into a request. `existing` is the repository of the
/// policy being edited: an empty password or variables field keeps what it
/// has (they are sealed and never shown). `saved` are its schedules: a row
/// of a kind this form has no fields for keeps its saved params.
fn request(
    form: &PolicyFields,
    rows: &[ScheduleRow],
    existing: Option<&policies::Template>,
    saved: &[PolicyScheduleRecord],
) -> Result<(PolicyRequest, Vec<usize>), Refusal> {
    let selector = Labels::parse_pairs("selector", &form.selector)
        .map_err(|e| Refusal::new("selector", e.to_string()))?
        .as_map()
        .clone();
    let priority = match form.priority.trim() {
        "" => None,
        raw => Some(raw.parse::<i32>().map_err(|_| {
            Refusal::new(
                "priority",
                format!("`priority` must be a whole number from -1000 to 1000, not `{raw}`"),
            )
        })?),
    };
    let freshness_seconds = seconds_from_hours("freshness_hours", &form.freshness_hours)?;
    let offline_seconds = seconds_from_hours("offline_hours", &form.offline_hours)?;
    let url = form.repository_url.trim();
    let password = Some(form.repository_password.clone()).filter(|p| !p.is_empty());
    let env = env_lines(&form.repository_env)?;
    let repository = if url.is_empty() {
        if password.is_some() || !env.is_empty() {
            return Err(Refusal::new(
                "repository_url",
                String::from("`repository.url` is needed when a password or variables are given"),
            ));
        }
        None
    } else {
        Some(PolicyRepositoryRequest {
            url: url.to_owned(),
            password: password.or_else(|| existing.and_then(|t| t.password.clone())),
            env: if form.repository_env.trim().is_empty() {
                existing.map(|t| t.env.clone()).unwrap_or_default()
            } else {
                env
            },
            // The form has no fields for a second repository: an edit
            // keeps the one set through the API.
            copy_to: existing.and_then(|t| t.copy_to.as_ref()).map(|c| {
                rm_protocol::api::PolicyCopyRequest {
                    url: c.url.clone(),
                    password: c.password.clone(),
                    env: c.env.clone(),
                }
            }),
        })
    };
    let mut schedules = Vec::new();
    let mut indices = Vec::new();
    for row in rows.iter().filter(|r| !r.kind.is_empty()) {
        let jitter_seconds = match row.v("jitter_seconds").trim() {
            "" => 0,
            raw => raw.parse::<u32>().map_err(|_| {
                Refusal::new(
                    &format!("s{}.jitter_seconds", row.index),
                    format!("`jitter_seconds` must be a whole number of seconds, not `{raw}`"),
                )
            })?,
        };
        let kept = saved
            .iter()
            .find(|s| row.other_kind() && s.id.to_string() == row.id && s.kind == row.kind)
            .map(|s| s.params.clone());
        let job = JobForm::from_fields(row.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        // An unknown kind makes no params; the service names `kind`.
        let params = kept.unwrap_or_else(|| {
            row.kind
                .parse::<JobKind>()
                .map(|kind| job.params(kind))
                .unwrap_or(serde_json::Value::Null)
        });
        let timezone = Some(row.v("timezone").trim().to_owned()).filter(|z| !z.is_empty());
        schedules.push(PolicyScheduleRequest {
            id: Some(row.id.clone()).filter(|id| !id.is_empty()),
            kind: row.kind.clone(),
            cron: row.v("cron").to_owned(),
            timezone,
            params,
            enabled: row.on("enabled"),
            jitter_seconds,
        });
        indices.push(row.index);
    }
    Ok((
        PolicyRequest {
            name: form.name.clone(),
            selector,
            priority,
            repository,
            schedules,
            freshness_seconds,
            offline_seconds,
        },
        indices,
    ))
}

/// The form field a service message is about: its first `` `name` ``,
/// with `schedules[i]` turned into that row's field (`s3.cron`).
fn refusal_field(message: &str, indices: &[usize]) -> Option<String> {
    let (_, rest) = message.split_once('`')?;
    let (name, after) = rest.split_once('`')?;
    if let Some(i) = name
        .strip_prefix("schedules[")
        .and_then(|r| r.split(']').next())
        .and_then(|i| i.parse::<usize>().ok())
    {
        let row = indices.get(i)?;
        let inner = forms::row_field(after);
        let inner = if name.ends_with(".id") {
            "kind"
        } else {
            inner.as_str()
        };
        return Some(format!("s{row}.{inner}"));
    }
    let field = match name {
        "freshness_seconds" => "freshness_hours",
        "offline_seconds" => "offline_hours",
        "repository.url" => "repository_url",
        "repository.password" => "repository_password",
        n if n.starts_with("repository") => "repository_env",
        "schedules" => return None,
        n => n,
    };
    Some(field.to_owned())
}

/// Renders the form again with what was typed and the refusal.
async fn refused(
    state: &AppState,
    user: WebUser,
    id: Option<PolicyId>,
    form: PolicyFields,
    mut rows: Vec<ScheduleRow>,
    refusal: Refusal,
    status: StatusCode,
) -> Response {
    let mut page = match id {
        Some(id) => match saved_page(state, user, id).await {
            Ok(page) => page,
            Err(response) => return response,
        },
        None => PolicyPage::new(user, PolicyFields::default(), Vec::new()),
    };
    let field = refusal.field.unwrap_or_default();
    match field.split_once('.') {
        Some((row, inner)) if row.starts_with('s') => {
            let index = row[1..].parse::<usize>().ok();
            if let Some(r) = rows.iter_mut().find(|r| Some(r.index) == index) {
                r.error_field = inner.to_owned();
            }
        }
        _ => page.error_field = field,
    }
    // Typed rows keep their index; a description belongs to what is saved,
    // so a refused row shows none.
    page.form = form;
    page.rows = rows;
    page.error = Some(refusal.message);
    let mut response = render(&page);
    if response.status().is_success() {
        *response.status_mut() = status;
    }
    response
}

/// The refusal a service error makes; other errors come back as they are.
fn service_refusal(
    e: PolicyError,
    indices: &[usize],
) -> Result<(Refusal, StatusCode), PolicyError> {
    match e {
        PolicyError::Invalid(message) => Ok((
            Refusal {
                field: refusal_field(&message, indices),
                message,
            },
            StatusCode::BAD_REQUEST,
        )),
        PolicyError::Conflict(message) => Ok((Refusal::new("name", message), StatusCode::CONFLICT)),
        other => Err(other),
    }
}

/// The page a service error that is no refusal ends in.
fn failed(e: PolicyError) -> Response {
    match e {
        PolicyError::NotFound(_) => not_found(),
        other => store_error(other),
    }
}

fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response()
}

/// `POST /policies/new`: creates the policy and shows it.
pub(crate) async fn create(
    State(state): State<AppState>,
    user: WebUser,
    client: Client,
    Form(pairs): Form<Pairs>,
) -> Response {
    if !user.csrf_matches(field(&pairs, "csrf")) {
        return forbidden();
    }
    let (form, rows) = read_form(&pairs);
    let (req, indices) = match request(&form, &rows, None, &[]) {
        Ok(made) => made,
        Err(refusal) => {
            return refused(
                &state,
                user,
                None,
                form,
                rows,
                refusal,
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    };
    let by = Audit::by(&state, &user.operator, &client).await;
    match policies::create(&state, &req, Some(&by)).await {
        Ok(view) => Redirect::to(&format!("/policies/{}?saved=1", view.id)).into_response(),
        Err(e) => match service_refusal(e, &indices) {
            Ok((refusal, status)) => refused(&state, user, None, form, rows, refusal, status).await,
            Err(e) => failed(e),
        },
    }
}

/// `POST /policies/{id}`: replaces the policy with the form's.
pub(crate) async fn update(
    State(state): State<AppState>,
    user: WebUser,
    client: Client,
    Path(id): Path<String>,
    Form(pairs): Form<Pairs>,
) -> Response {
    if !user.csrf_matches(field(&pairs, "csrf")) {
        return forbidden();
    }
    let Ok(id) = id.parse::<PolicyId>() else {
        return not_found();
    };
    let existing = match state.store().policy(id).await {
        Ok(Some(policy)) => policy,
        Ok(None) => return not_found(),
        Err(e) => return store_error(e),
    };
    let template = match policies::open_template(&state, &existing) {
        Ok(template) => template,
        Err(e) => return store_error(e),
    };
    let (form, rows) = read_form(&pairs);
    let (req, indices) = match request(&form, &rows, template.as_ref(), &existing.schedules) {
        Ok(made) => made,
        Err(refusal) => {
            return refused(
                &state,
                user,
                Some(id),
                form,
                rows,
                refusal,
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    };
    let by = Audit::by(&state, &user.operator, &client).await;
    match policies::update(&state, id, &req, Some(&by)).await {
        Ok(view) => Redirect::to(&format!("/policies/{}?saved=1", view.id)).into_response(),
        Err(e) => match service_refusal(e, &indices) {
            Ok((refusal, status)) => {
                refused(&state, user, Some(id), form, rows, refusal, status).await
            }
            Err(e) => failed(e),
        },
    }
}

/// `POST /policies/{id}/delete`: deletes it (its hosts lose what it gave).
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
    let Ok(id) = id.parse::<PolicyId>() else {
        return not_found();
    };
    let by = Audit::by(&state, &user.operator, &client).await;
    match policies::delete(&state, id, Some(&by)).await {
        Ok(()) => Redirect::to("/policies?deleted=1").into_response(),
        Err(PolicyError::NotFound(_)) => not_found(),
        Err(e) => store_error(e),
    }
}

/// An optional number of hours from a form field, in seconds (empty: none).
fn seconds_from_hours(name: &str, raw: &str) -> Result<Option<u64>, Refusal> {
    match raw.trim() {
        "" => Ok(None),
        raw => {
            let hours = raw
                .parse::<f64>()
                .ok()
                .filter(|h| h.is_finite() && *h > 0.0)
                .ok_or_else(|| {
                    Refusal::new(
                        name,
                        format!("`{name}` must be a number of hours, not `{raw}`"),
                    )
                })?;
            Ok(Some((hours * 3600.0).round() as u64))
        }
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
    fn a_form_becomes_a_policy_request() {
        let posted = pairs(&[
            ("csrf", "x"),
            ("name", "prod"),
            ("selector", " env=prod, role=db "),
            ("priority", "10"),
            ("freshness_hours", "1.5"),
            ("repository_url", "/srv/restic/{host}"),
            ("repository_password", ""),
            ("repository_env", "RESTIC_COMPRESSION=max\n\n"),
            ("s0.id", ""),
            ("s0.kind", "backup"),
            ("s0.cron", "30 2 * * *"),
            ("s0.enabled", "on"),
            ("s0.paths", "/etc\n/srv"),
            ("s0.excludes", "*.tmp"),
            // A row without a kind is no schedule.
            ("s1.kind", ""),
            ("s1.cron", "30 2 * * *"),
            ("s2.kind", "forget"),
            ("s2.cron", "0 4 * * SUN"),
            ("s2.retention", "standard"),
            ("s2.prune", "on"),
            ("s2.jitter_seconds", "60"),
        ]);
        let (form, rows) = read_form(&posted);
        assert_eq!(rows.len(), 3);
        let (req, indices) = request(&form, &rows, None, &[])
            .map_err(|r| r.message)
            .unwrap();
        assert_eq!(indices, [0, 2]);
        assert_eq!(req.name, "prod");
        assert_eq!(req.priority, Some(10));
        assert_eq!(req.freshness_seconds, Some(5400));
        assert_eq!(req.selector.len(), 2);
        let repository = req.repository.unwrap();
        assert_eq!(repository.url, "/srv/restic/{host}");
        assert_eq!(repository.password, None, "left empty: generated");
        assert_eq!(repository.env["RESTIC_COMPRESSION"], "max");
        assert_eq!(req.schedules.len(), 2);
        assert_eq!(
            req.schedules[0].params,
            json!({"paths": ["/etc", "/srv"], "excludes": ["*.tmp"]})
        );
        assert!(req.schedules[0].enabled);
        assert_eq!(
            req.schedules[1].params,
            json!({"preset": "standard", "prune": true})
        );
        assert_eq!(req.schedules[1].jitter_seconds, 60);
        assert!(!req.schedules[1].enabled, "an unticked box is disabled");
    }

    #[test]
    fn an_edit_keeps_the_sealed_password_and_variables_when_left_empty() {
        let existing = policies::Template {
            url: String::from("/old/{host}"),
            password: Some(String::from("kept secret")),
            env: BTreeMap::from([(String::from("RESTIC_PACK_SIZE"), String::from("32"))]),
            copy_to: None,
        };
        let posted = pairs(&[("name", "p"), ("repository_url", "/new/{host}")]);
        let (form, rows) = read_form(&posted);
        let (req, _) = request(&form, &rows, Some(&existing), &[])
            .map_err(|r| r.message)
            .unwrap();
        let repository = req.repository.unwrap();
        assert_eq!(repository.url, "/new/{host}");
        assert_eq!(repository.password.as_deref(), Some("kept secret"));
        assert_eq!(repository.env, existing.env);
        // No URL: the policy gives no repository.
        let (form, rows) = read_form(&pairs(&[("name", "p")]));
        let (req, _) = request(&form, &rows, Some(&existing), &[])
            .map_err(|r| r.message)
            .unwrap();
        assert!(req.repository.is_none());
    }

    #[test]
    fn a_drill_row_makes_drill_params() {
        let posted = pairs(&[
            ("name", "p"),
            ("s0.kind", "drill"),
            ("s0.cron", "0 4 * * 0"),
            ("s0.enabled", "on"),
            ("s0.sample_files", "50"),
            ("s0.max_bytes", "5000000000"),
            ("s0.limit_download_kib", "1024"),
        ]);
        let (form, rows) = read_form(&posted);
        assert!(!rows[0].other_kind());
        let (req, _) = request(&form, &rows, None, &[])
            .map_err(|r| r.message)
            .unwrap();
        assert_eq!(req.schedules[0].kind, "drill");
        assert_eq!(
            req.schedules[0].params,
            json!({"sample_files": 50, "max_bytes": 5_000_000_000u64, "limit_download_kib": 1024})
        );
    }

    #[test]
    fn a_row_of_a_kind_without_fields_keeps_its_saved_params() {
        let id = rm_core::ScheduleId::new();
        let saved = [PolicyScheduleRecord {
            id,
            kind: String::from("copy"),
            cron: String::from("0 6 * * *"),
            timezone: None,
            params: json!({"to": "second"}),
            enabled: true,
            jitter_seconds: 0,
        }];
        let id = id.to_string();
        let posted = pairs(&[
            ("name", "p"),
            ("s0.id", &id),
            ("s0.kind", "copy"),
            ("s0.cron", "0 7 * * *"),
            ("s0.enabled", "on"),
        ]);
        let (form, rows) = read_form(&posted);
        assert!(rows[0].other_kind());
        let (req, _) = request(&form, &rows, None, &saved)
            .map_err(|r| r.message)
            .unwrap();
        assert_eq!(req.schedules[0].params, json!({"to": "second"}));
        assert_eq!(req.schedules[0].cron, "0 7 * * *", "the cron is the form's");
    }

    #[test]
    fn bad_fields_are_refused_naming_them() {
        let refused = |items: &[(&str, &str)]| {
            let (form, rows) = read_form(&pairs(items));
            match request(&form, &rows, None, &[]) {
                Ok(_) => panic!("{items:?} was accepted"),
                Err(r) => (r.field.unwrap_or_default(), r.message),
            }
        };
        let (field, message) = refused(&[("selector", "env")]);
        assert_eq!(field, "selector");
        assert!(message.contains("`selector`"), "{message}");
        assert_eq!(refused(&[("priority", "high")]).0, "priority");
        assert_eq!(refused(&[("freshness_hours", "-1")]).0, "freshness_hours");
        assert_eq!(
            refused(&[("repository_url", "/r"), ("repository_env", "NOEQUALS")]).0,
            "repository_env"
        );
        assert_eq!(
            refused(&[("repository_password", "pw")]).0,
            "repository_url"
        );
        assert_eq!(
            refused(&[("s3.kind", "backup"), ("s3.jitter_seconds", "soon")]).0,
            "s3.jitter_seconds"
        );
    }

    #[test]
    fn service_messages_point_at_form_fields() {
        // Rows 0 and 4 were sent as schedules 0 and 1.
        let indices = [0, 4];
        let field = |m: &str| refusal_field(m, &indices).unwrap_or_default();
        assert_eq!(field("`schedules[1]`: `cron`/`timezone`: bad"), "s4.cron");
        assert_eq!(
            field("`schedules[0]`: `params.paths` must not be empty"),
            "s0.paths"
        );
        assert_eq!(
            field("`schedules[1]`: `params` must set at least one of keep_last"),
            "s4.retention"
        );
        assert_eq!(field("`schedules[0]`: `kind`: unknown"), "s0.kind");
        assert_eq!(
            field("`freshness_seconds` must be from 60"),
            "freshness_hours"
        );
        assert_eq!(
            field("`repository.url` must not start with `-`"),
            "repository_url"
        );
        assert_eq!(
            field("`repository.env.PATH`: not allowed"),
            "repository_env"
        );
        assert_eq!(field("`name` must not be empty"), "name");
        assert_eq!(refusal_field("`schedules` has 40 entries", &indices), None);
    }

    #[test]
    fn freshness_reads_in_hours() {
        assert_eq!(hours(26 * 3600), "26");
        assert_eq!(hours(5400), "1.5");
        assert_eq!(hours(60), "0.02");
    }
}
