//! The audit page `/audit`: who changed what, when and from where, newest
//! first, filtered by action (and, from links, by actor or target), with an
//! "older" link per page. Reads through the same query checks as
//! `GET /api/v1/audit`.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rm_protocol::api::AuditEntryView;

use super::format;
use super::session::{render, store_error, WebUser};
use crate::api::audit::{self as api, AuditQuery};
use crate::audit::Action;
use crate::state::AppState;

/// An entry as the page shows it.
pub(crate) struct AuditRow {
    pub(crate) time: String,
    pub(crate) who: String,
    pub(crate) how: String,
    pub(crate) action: String,
    pub(crate) failed: bool,
    pub(crate) target: String,
    pub(crate) target_link: Option<String>,
    pub(crate) ip: String,
    /// Shortened for the table; the whole (stored) one is its title.
    pub(crate) user_agent: String,
    pub(crate) user_agent_full: String,
    /// `(field, value)`, values as compact JSON unless plain strings.
    pub(crate) details: Vec<(String, String)>,
}

/// User-Agent characters shown in the table.
const SHOWN_USER_AGENT_CHARS: usize = 40;

/// One choice of the action filter.
pub(crate) struct ActionOption {
    pub(crate) value: String,
    pub(crate) label: String,
    pub(crate) selected: bool,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPageTemplate {
    user: super::session::Who,
    csrf: String,
    actions: Vec<ActionOption>,
    rows: Vec<AuditRow>,
    filtered_by: String,
    older: Option<String>,
    paged: bool,
}

fn row(entry: AuditEntryView) -> AuditRow {
    let actor = entry.actor;
    let who = actor
        .username
        .clone()
        .or_else(|| actor.token_name.clone())
        .unwrap_or_else(|| actor.kind.replace('_', " "));
    let how = match actor.kind.as_str() {
        "user" => String::new(),
        "api_token" => format!(
            "API token {}",
            actor.token_name.unwrap_or_else(|| String::from("(gone)"))
        ),
        "enrollment_token" => String::from("enrolment token"),
        other => other.replace('_', " "),
    };
    let target_link = match (entry.target_type.as_deref(), entry.target_id.as_deref()) {
        (Some("host"), Some(id)) => Some(format!("/hosts/{id}")),
        (Some("job"), Some(id)) => Some(format!("/jobs/{id}")),
        _ => None,
    };
    let target = match (entry.target_type, entry.target_id) {
        (Some(kind), Some(id)) => format!("{} {id}", kind.replace('_', " ")),
        (Some(kind), None) => kind,
        _ => String::new(),
    };
    let details = match entry.details {
        serde_json::Value::Object(map) => map
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| {
                let shown = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k.replace('_', " "), shown)
            })
            .collect(),
        serde_json::Value::Null => Vec::new(),
        other => vec![(String::new(), other.to_string())],
    };
    let user_agent_full = entry.user_agent.unwrap_or_default();
    let mut user_agent: String = user_agent_full
        .chars()
        .take(SHOWN_USER_AGENT_CHARS)
        .collect();
    if user_agent.len() < user_agent_full.len() {
        user_agent.push('…');
    }
    AuditRow {
        time: format::time(entry.at),
        who,
        how,
        failed: entry.action.ends_with("_failed"),
        action: entry.action,
        target,
        target_link,
        ip: entry.ip.unwrap_or_default(),
        user_agent,
        user_agent_full,
        details,
    }
}

/// The action filter's choices: everything, each area, each action.
fn action_options(chosen: Option<&str>) -> Vec<ActionOption> {
    let mut areas: Vec<&str> = Vec::new();
    for action in Action::ALL {
        if let Some((area, _)) = action.as_str().split_once('.') {
            if !areas.contains(&area) {
                areas.push(area);
            }
        }
    }
    let mut options = vec![ActionOption {
        value: String::new(),
        label: String::from("all actions"),
        selected: chosen.is_none(),
    }];
    for area in areas {
        let prefix = format!("{area}.");
        options.push(ActionOption {
            selected: chosen == Some(prefix.as_str()),
            label: format!("{prefix}*"),
            value: prefix,
        });
    }
    for action in Action::ALL {
        options.push(ActionOption {
            value: action.as_str().to_owned(),
            label: action.as_str().to_owned(),
            selected: chosen == Some(action.as_str()),
        });
    }
    options
}

/// Percent-encodes a query value (everything but unreserved characters).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /audit?action=&actor=&target_id=&before=`.
pub(crate) async fn page(
    State(state): State<AppState>,
    user: WebUser,
    Query(query): Query<AuditQuery>,
) -> Response {
    let filter = match api::parse(&query) {
        Ok(filter) => filter,
        Err(e) => return (StatusCode::BAD_REQUEST, e.message().to_owned()).into_response(),
    };
    let page = match api::page(&state, &filter).await {
        Ok(page) => page,
        Err(e) => return store_error(e.message()),
    };
    // The filters travel with the "older" link.
    let mut kept = String::new();
    for (name, value) in [
        ("action", &filter.action_prefix),
        ("actor", &filter.actor),
        ("target_id", &filter.target_id),
    ] {
        if let Some(value) = value {
            kept.push_str(&format!("{name}={}&", encode(value)));
        }
    }
    let filtered_by = [
        filter.actor.as_ref().map(|a| format!("actor {a}")),
        filter.target_id.as_ref().map(|t| format!("target {t}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    render(&AuditPageTemplate {
        user: user.username,
        csrf: user.csrf,
        actions: action_options(filter.action_prefix.as_deref()),
        rows: page.entries.into_iter().map(row).collect(),
        filtered_by,
        older: page
            .next_before
            .map(|before| format!("/audit?{kept}before={before}")),
        paged: filter.before.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("host.delete"), "host.delete");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn the_chosen_filter_is_selected_once() {
        let options = action_options(Some("host."));
        assert_eq!(options.iter().filter(|o| o.selected).count(), 1);
        assert!(options.iter().any(|o| o.value == "auth.login_failed"));
        assert!(action_options(None)[0].selected);
    }
}
