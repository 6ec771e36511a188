//! `GET /api/v1/audit`: the audit log, newest first, filtered and paged.
//! Any authenticated operator may read it.

use axum::extract::State;
use axum::Json;
use rm_protocol::api::AuditPage;
use rm_store::AuditFilter;
use serde::Deserialize;

use super::{ApiError, ApiQuery, Operator};
use crate::audit;
use crate::state::AppState;

/// Default and largest page.
pub(crate) const DEFAULT_ENTRIES: u32 = 50;
pub(crate) const MAX_ENTRIES: u32 = 500;
/// Longest filter value accepted.
const MAX_FILTER_CHARS: usize = 128;

/// The query, all text so every bad value gets a message naming it.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// An action name or prefix (`host.`, `auth.login`).
    pub(crate) action: Option<String>,
    /// A user's id or name, or an API or enrolment token's id.
    pub(crate) actor: Option<String>,
    /// The id of the thing acted on.
    pub(crate) target_id: Option<String>,
    /// Entries older than this entry id (paging: `next_before`).
    #[param(value_type = Option<u64>)]
    pub(crate) before: Option<String>,
    /// At most this many, 1 to 500 (default 50).
    #[param(value_type = Option<u32>)]
    pub(crate) limit: Option<String>,
}

/// A filter value: trimmed, empty means absent, bounded, no control
/// characters.
fn filter_value(field: &str, raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(value) = raw.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > MAX_FILTER_CHARS || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "`{field}` must be at most {MAX_FILTER_CHARS} characters without control characters"
        )));
    }
    Ok(Some(value.to_owned()))
}

/// Checks the query and turns it into a store filter (shared with the
/// audit page).
pub(crate) fn parse(query: &AuditQuery) -> Result<AuditFilter, ApiError> {
    let action_prefix = filter_value("action", query.action.as_deref())?;
    if let Some(action) = &action_prefix {
        if !action
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
        {
            return Err(ApiError::bad_request(format!(
                "`action` `{action}` is not an action name or prefix (lower-case letters, `.` and `_`, e.g. `host.` or `auth.login`)"
            )));
        }
    }
    let before = match filter_value("before", query.before.as_deref())? {
        None => None,
        Some(raw) => Some(raw.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`before` must be an entry id (a positive whole number), not `{raw}`"
            ))
        })?),
    };
    let limit = match filter_value("limit", query.limit.as_deref())? {
        None => DEFAULT_ENTRIES,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_ENTRIES).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("`limit` must be 1 to {MAX_ENTRIES}, not `{raw}`"))
            })?,
    };
    Ok(AuditFilter {
        action_prefix,
        actor: filter_value("actor", query.actor.as_deref())?,
        target_id: filter_value("target_id", query.target_id.as_deref())?,
        before,
        limit,
    })
}

/// Reads one page; `next_before` is set when the page is full (there may
/// be older entries).
pub(crate) async fn page(state: &AppState, filter: &AuditFilter) -> Result<AuditPage, ApiError> {
    let entries = state.store().list_audit(filter).await?;
    let next_before = match entries.last() {
        Some(last) if entries.len() >= filter.limit as usize => Some(last.id),
        _ => None,
    };
    Ok(AuditPage {
        entries: entries.into_iter().map(audit::view).collect(),
        next_before,
    })
}

/// Read the audit log.
///
/// `GET /api/v1/audit?action=&actor=&target_id=&before=&limit=`.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    operation_id = "list_audit",
    params(AuditQuery),
    responses((status = 200, description = "A page of entries, newest first", body = AuditPage)),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    _operator: Operator,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let filter = parse(&query)?;
    Ok(Json(page(&state, &filter).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> AuditQuery {
        let mut q = AuditQuery::default();
        for (k, v) in pairs {
            let v = Some((*v).to_owned());
            match *k {
                "action" => q.action = v,
                "actor" => q.actor = v,
                "target_id" => q.target_id = v,
                "before" => q.before = v,
                "limit" => q.limit = v,
                _ => unreachable!(),
            }
        }
        q
    }

    #[test]
    fn queries_are_checked_field_by_field() {
        let ok = parse(&query(&[
            ("action", " host. "),
            ("limit", "10"),
            ("before", "7"),
        ]))
        .unwrap();
        assert_eq!(ok.action_prefix.as_deref(), Some("host."));
        assert_eq!((ok.limit, ok.before), (10, Some(7)));
        assert_eq!(parse(&query(&[])).unwrap().limit, DEFAULT_ENTRIES);
        assert_eq!(parse(&query(&[("actor", "")])).unwrap().actor, None);
        for (field, value) in [
            ("action", "Host.Delete"),
            ("action", "host%"),
            ("limit", "0"),
            ("limit", "501"),
            ("limit", "ten"),
            ("before", "0"),
            ("before", "-3"),
            ("actor", "a\u{1}b"),
        ] {
            let err = parse(&query(&[(field, value)])).unwrap_err();
            assert!(
                format!("{err:?}").contains(&format!("`{field}`")),
                "{field}={value}: {err:?}"
            );
        }
    }
}
