//! The alerts page (`/alerts`: firing, acknowledged and resolved alerts,
//! filtered by kind and labels, paged; the silences and the form that adds
//! one), and the alert rows the dashboard and the host page show with the
//! same partial. Reads go through [`crate::alerts`]' service, as the API's
//! do; acknowledging and ending a silence are buttons posting to the JSON
//! API, and the silence form goes through the same service, audited alike.

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use rm_core::Labels;
use rm_protocol::api::{AlertView, SilenceRequest, SilenceView};
use serde::Deserialize;

use super::format;
use super::forms::answer;
use super::session::{render, store_error, WebUser};
use crate::alerts::{self, AlertError, AlertKind, AlertQuery};
use crate::api::{ApiError, Operator};
use crate::audit::{Audit, Client};
use crate::state::AppState;

/// Alerts per page of `/alerts`.
const PAGE: u32 = 50;

/// Firing alerts the dashboard's attention section lists at most (the
/// tile counts them all; the alerts page lists the rest).
pub(crate) const DASHBOARD_ALERTS: u32 = 20;

/// Longest silence the form offers, in hours: a year, as the API allows
/// any future time but a typo of a few zeros should not silence forever.
const MAX_SILENCE_HOURS: i64 = 24 * 366;

/// One alert as the tables show it.
pub(crate) struct AlertRow {
    pub(crate) id: String,
    pub(crate) kind: String,
    /// `warn` for a stale backup, `bad` for the others, `idle` once resolved.
    pub(crate) kind_class: &'static str,
    pub(crate) host_id: String,
    pub(crate) host_name: String,
    pub(crate) message: String,
    pub(crate) job_id: Option<String>,
    /// `5 min ago`, and the exact time for its tooltip.
    pub(crate) started: String,
    pub(crate) started_at: String,
    pub(crate) firing: bool,
    /// `resolved 2 h ago: backup … saved a snapshot`, empty while firing.
    pub(crate) resolved: String,
    pub(crate) acknowledged_by: Option<String>,
    pub(crate) acknowledged: String,
    pub(crate) notifications: u64,
}

/// An alert's row.
pub(crate) fn row(view: &AlertView, now: DateTime<Utc>) -> AlertRow {
    let firing = view.state == "firing";
    AlertRow {
        id: view.id.clone(),
        kind: view.kind.clone(),
        kind_class: match (firing, view.kind.as_str()) {
            (false, _) => "idle",
            (true, "backup_stale") => "warn",
            (true, _) => "bad",
        },
        host_id: view.host_id.clone(),
        host_name: if view.host_name.is_empty() {
            view.host_id.clone()
        } else {
            view.host_name.clone()
        },
        message: view.message.clone(),
        job_id: view.job_id.clone(),
        started: format::ago(view.started_at, now),
        started_at: format::time(view.started_at),
        firing,
        resolved: match view.resolved_at {
            Some(at) => match &view.resolved_message {
                Some(why) if !why.is_empty() => format!("resolved {}: {why}", format::ago(at, now)),
                _ => format!("resolved {}", format::ago(at, now)),
            },
            None => String::new(),
        },
        acknowledged_by: view.acknowledged_by.clone(),
        acknowledged: view
            .acknowledged_at
            .map(|at| format::ago(at, now))
            .unwrap_or_default(),
        notifications: view.notifications,
    }
}

/// Rows of the firing alerts `query` narrows down (its `state` is set
/// here), newest first.
pub(crate) async fn firing_rows(
    state: &AppState,
    mut query: AlertQuery,
    scope: Option<&rm_core::Selector>,
    now: DateTime<Utc>,
) -> Result<Vec<AlertRow>, AlertError> {
    query.state = Some(String::from("firing"));
    Ok(alerts::list(state, &query, scope)
        .await?
        .iter()
        .map(|v| row(v, now))
        .collect())
}

/// A page's failure to read alerts (the store's, as the pages' input is
/// checked first).
pub(crate) fn alert_error(e: AlertError) -> Response {
    store_error(e)
}

/// The states the page's tabs offer: (value, label).
const STATES: [(&str, &str); 4] = [
    ("firing", "Firing"),
    ("acknowledged", "Acknowledged"),
    ("resolved", "Resolved"),
    ("all", "All"),
];

/// Query of `/alerts`, as typed (checked by the service, which names the
/// field of a bad one).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PageQuery {
    /// `firing` (default), `acknowledged`, `resolved` or `all`.
    state: String,
    kind: String,
    labels: String,
    before: String,
}

impl PageQuery {
    fn state(&self) -> &str {
        match self.state.trim() {
            "" => "firing",
            other => other,
        }
    }

    /// The service's query for one page (one more than shown, to know
    /// whether an older page exists).
    fn alert_query(&self) -> AlertQuery {
        AlertQuery {
            state: match self.state() {
                "all" => None,
                other => Some(other.to_owned()),
            },
            kind: Some(self.kind.trim().to_owned()),
            labels: Some(self.labels.trim().to_owned()),
            before: Some(self.before.trim().to_owned()),
            limit: Some(PAGE + 1),
            host_id: None,
        }
    }

    /// This page's link with `state` and `before` replaced.
    fn link(&self, state: &str, before: Option<&str>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("state", state);
        for (name, value) in [("kind", &self.kind), ("labels", &self.labels)] {
            if !value.trim().is_empty() {
                query.append_pair(name, value.trim());
            }
        }
        if let Some(before) = before {
            query.append_pair("before", before);
        }
        format!("/alerts?{}", query.finish())
    }
}

/// A silence as listed.
pub(crate) struct SilenceRow {
    pub(crate) id: String,
    pub(crate) selector: String,
    pub(crate) until: String,
    pub(crate) until_in: String,
    pub(crate) reason: String,
    pub(crate) created_by: String,
    pub(crate) created: String,
}

fn silence_row(view: &SilenceView, now: DateTime<Utc>) -> SilenceRow {
    let selector = view
        .selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    SilenceRow {
        id: view.id.clone(),
        selector,
        until: format::time(view.until),
        until_in: time_left(view.until, now),
        reason: view.reason.clone(),
        created_by: view.created_by.clone(),
        created: format::ago(view.created_at, now),
    }
}

/// How long a silence still lasts, to the minute below a day (`in 2 h 59
/// min`: a rounded `in 2 h` would make a three-hour silence look short).
fn time_left(until: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let minutes = (until - now).num_minutes();
    match minutes {
        m if m < 1 => String::from("ending"),
        m if m < 60 => format!("in {m} min"),
        m if m < 24 * 60 => format!("in {} h {} min", m / 60, m % 60),
        _ => format::ago(until, now),
    }
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    user: super::session::Who,
    csrf: String,
    /// The state shown; the tabs as (value, label, link).
    state: String,
    tabs: Vec<(&'static str, &'static str, String)>,
    kinds: [AlertKind; 5],
    kind: String,
    labels: String,
    /// Why the filter was refused (naming the field); firing alerts are
    /// shown meanwhile.
    filter_error: Option<String>,
    alerts: Vec<AlertRow>,
    /// The link to older alerts, when there are any; and back to the newest.
    older: Option<String>,
    newest: Option<String>,
    silences: Vec<SilenceRow>,
}

/// `GET /alerts?state=&kind=&labels=&before=`: alerts newest first, one
/// page at a time, and the silences.
pub(crate) async fn page(
    State(state): State<AppState>,
    user: WebUser,
    Query(query): Query<PageQuery>,
) -> Response {
    let now = Utc::now();
    let (mut views, filter_error) =
        match alerts::list(&state, &query.alert_query(), user.operator.scope.as_ref()).await {
            Ok(views) => (views, None),
            Err(AlertError::Invalid(why)) => {
                let fallback = AlertQuery {
                    state: Some(String::from("firing")),
                    limit: Some(PAGE + 1),
                    ..AlertQuery::default()
                };
                match alerts::list(&state, &fallback, user.operator.scope.as_ref()).await {
                    Ok(views) => (views, Some(why)),
                    Err(e) => return alert_error(e),
                }
            }
            Err(e) => return alert_error(e),
        };
    let older = if views.len() > PAGE as usize {
        views.truncate(PAGE as usize);
        views
            .last()
            .filter(|_| filter_error.is_none())
            .map(|last| query.link(query.state(), Some(&last.id)))
    } else {
        None
    };
    let silences = match alerts::silences(&state, false).await {
        Ok(silences) => silences.iter().map(|s| silence_row(s, now)).collect(),
        Err(e) => return alert_error(e),
    };
    let shown = if filter_error.is_some() {
        "firing"
    } else {
        query.state()
    };
    let mut page = render(&AlertsPage {
        user: user.username,
        csrf: user.csrf,
        state: shown.to_owned(),
        tabs: STATES
            .iter()
            .map(|(value, label)| (*value, *label, query.link(value, None)))
            .collect(),
        kinds: AlertKind::ALL,
        kind: query.kind.trim().to_owned(),
        labels: query.labels.clone(),
        alerts: views.iter().map(|v| row(v, now)).collect(),
        older,
        newest: (!query.before.trim().is_empty()).then(|| query.link(query.state(), None)),
        silences,
        filter_error: filter_error.clone(),
    });
    if filter_error.is_some() && page.status() == StatusCode::OK {
        *page.status_mut() = StatusCode::BAD_REQUEST;
    }
    page
}

/// `GET /alerts/firing`: `{"firing": n}`, how many alerts fire now (one
/// aggregate query), for the badge on every page's "Alerts" link.
pub(crate) async fn firing_count(State(state): State<AppState>, user: WebUser) -> Response {
    let scope = user.operator.scope.unwrap_or_default();
    match super::pages::firing_count(&state, &scope).await {
        Ok(firing) => axum::Json(serde_json::json!({ "firing": firing })).into_response(),
        Err(e) => store_error(e),
    }
}

/// The silence form's fields, as typed.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SilenceForm {
    /// `env=prod,role=web`; empty: every host.
    selector: String,
    /// For how many hours from now (used when `until` is empty).
    hours: String,
    /// An exact end, in UTC: `2026-12-24 18:00` (or `2026-12-24T18:00`).
    until: String,
    reason: String,
}

/// The silence the form asks for, `now` being when it was sent. Refusals
/// name the field; the service checks the rest (an end in the future, a
/// reason) as it does for the API.
fn silence_request(form: &SilenceForm, now: DateTime<Utc>) -> Result<SilenceRequest, ApiError> {
    let selector = Labels::parse_pairs("selector", &form.selector)
        .map_err(|e| ApiError::bad_request(e.to_string()))?
        .as_map()
        .clone();
    let until = match form.until.trim() {
        "" => {
            let text = form.hours.trim();
            let hours: i64 = text.parse().ok().filter(|h| (1..=MAX_SILENCE_HOURS).contains(h)).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`hours` must be a whole number of hours from 1 to {MAX_SILENCE_HOURS}, got `{text}` (or give an exact `until`)"
                ))
            })?;
            now + Duration::hours(hours)
        }
        text => ["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
            .map(|t| t.and_utc())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`until` must be a UTC time as `2026-12-24 18:00`, got `{text}`"
                ))
            })?,
    };
    Ok(SilenceRequest {
        selector,
        until,
        reason: form.reason.clone(),
    })
}

/// `POST /alerts/silences`: a silence from the form → 201 with it.
pub(crate) async fn create_silence(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    Form(form): Form<SilenceForm>,
) -> Response {
    let result = async {
        let request = silence_request(&form, Utc::now())?;
        let by = Audit::by(&state, &operator, &client).await;
        let view = alerts::create_silence(&state, request, &by).await?;
        Ok::<_, ApiError>((StatusCode::CREATED, axum::Json(view)))
    }
    .await;
    answer(result)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn form(selector: &str, hours: &str, until: &str) -> SilenceForm {
        SilenceForm {
            selector: selector.to_owned(),
            hours: hours.to_owned(),
            until: until.to_owned(),
            reason: String::from("maintenance"),
        }
    }

    #[test]
    fn a_silence_lasts_the_hours_given_or_until_an_exact_utc_time() {
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 22, 0, 0).unwrap();
        let req = silence_request(&form(" env=prod , role=web", "2", ""), now).unwrap();
        assert_eq!(req.until, now + Duration::hours(2));
        assert_eq!(req.selector.len(), 2);
        assert_eq!(req.selector["role"], "web");
        assert_eq!(req.reason, "maintenance");
        for until in ["2026-12-24 18:00", "2026-12-24T18:00", " 2026-12-24 18:00 "] {
            let req = silence_request(&form("", "2", until), now).unwrap();
            assert_eq!(
                req.until,
                Utc.with_ymd_and_hms(2026, 12, 24, 18, 0, 0).unwrap(),
                "{until}"
            );
            assert!(req.selector.is_empty());
        }
    }

    #[test]
    fn a_bad_silence_form_is_refused_naming_the_field() {
        let now = Utc::now();
        for (bad, field) in [
            (form("env", "2", ""), "`selector"),
            (form("env=PROD", "2", ""), "`selector"),
            (form("", "", ""), "`hours`"),
            (form("", "0", ""), "`hours`"),
            (form("", "2.5", ""), "`hours`"),
            (form("", "100000", ""), "`hours`"),
            (form("", "2", "tomorrow"), "`until`"),
            (form("", "2", "24.12.2026 18:00"), "`until`"),
        ] {
            let e = silence_request(&bad, now).unwrap_err();
            assert!(e.message().starts_with(field), "{bad:?}: {}", e.message());
        }
    }

    #[test]
    fn a_silence_says_how_long_it_lasts_to_the_minute() {
        let now = Utc::now();
        let left = |minutes| time_left(now + Duration::minutes(minutes), now);
        assert_eq!(left(0), "ending");
        assert_eq!(left(5), "in 5 min");
        assert_eq!(left(179), "in 2 h 59 min");
        assert_eq!(left(3 * 24 * 60 + 30), "in 3 d");
    }

    #[test]
    fn page_links_keep_the_filter() {
        let query = PageQuery {
            state: String::new(),
            kind: String::from("job_failed"),
            labels: String::from(" env=prod "),
            before: String::from("01J"),
        };
        assert_eq!(query.state(), "firing");
        assert_eq!(
            query.link("resolved", Some("01K")),
            "/alerts?state=resolved&kind=job_failed&labels=env%3Dprod&before=01K"
        );
        let service = query.alert_query();
        assert_eq!(service.state.as_deref(), Some("firing"));
        assert_eq!(service.limit, Some(PAGE + 1));
        let all = PageQuery {
            state: String::from("all"),
            ..PageQuery::default()
        };
        assert_eq!(all.alert_query().state, None);
    }
}
