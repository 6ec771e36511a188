//! Who may call what: the one table of `(method, route) → role needed` for
//! every `/api/v1` route and every web UI route, and the middleware that
//! enforces it before any handler runs (docs/security.md, "Roles").
//!
//! A route missing from the table is refused (fail closed), so a new route
//! cannot be reachable by accident; the role-matrix test walks this table.
//! Scope: a user limited to a label selector sees a host outside it — or
//! that host's jobs, schedules, alerts, snapshots and repository — exactly
//! as a missing one (404 with the same words), so names do not leak; lists
//! of such things are filtered by the handlers with [`Operator::scope`].

use std::sync::LazyLock;

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use rm_core::{AlertId, HostId, JobId, Labels, Role, ScheduleId, Selector};

use crate::api::ApiError;
use crate::auth::{self, Operator};
use crate::state::AppState;

/// What a route asks of its caller besides a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Nothing about hosts: own account, users, channels, presets.
    Global,
    /// `{id}` is a host: outside the caller's scope it is 404.
    Host,
    /// `{id}` is a job: outside the scope (by its host) it is 404.
    Job,
    /// `{id}` is a schedule: outside the scope (by its host) it is 404.
    Schedule,
    /// `{id}` is an alert: outside the scope (by its host) it is 404.
    Alert,
    /// A list or stream the handler filters by the caller's scope.
    Filtered,
    /// Reaches hosts by selector (policies, silences, enrolment): only
    /// an unscoped user may do it, a scoped one gets 403.
    Fleet,
}

/// One rule of the table.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The HTTP method (`HEAD` follows `GET`).
    pub method: Method,
    /// The route as the router writes it, without the `/api/v1` prefix
    /// for API routes: `/hosts/{id}`.
    pub path: &'static str,
    /// The least role that may call it; `None`: no login needed.
    pub role: Option<Role>,
    /// What the caller's scope means for it.
    pub reach: Reach,
}

const fn rule(method: Method, path: &'static str, role: Role, reach: Reach) -> Rule {
    Rule {
        method,
        path,
        role: Some(role),
        reach,
    }
}

const fn public(method: Method, path: &'static str) -> Rule {
    Rule {
        method,
        path,
        role: None,
        reach: Reach::Global,
    }
}

use Reach::{Alert, Filtered, Fleet, Global, Host, Job, Schedule};
use Role::{Admin, Operator as Op, Viewer};

/// The tables, built once.
static API_RULES: LazyLock<Vec<Rule>> = LazyLock::new(api_table);
static UI_RULES: LazyLock<Vec<Rule>> = LazyLock::new(ui_table);

/// Every `/api/v1` route and who may call it (the role-matrix test walks
/// it; at merge, a test joins it with the router's generated route list).
pub fn api_rules() -> Vec<Rule> {
    API_RULES.clone()
}

/// Every web UI route and who may use it.
pub fn ui_rules() -> Vec<Rule> {
    UI_RULES.clone()
}

/// The API table. Keep it in the router's order.
fn api_table() -> Vec<Rule> {
    vec![
        public(Method::POST, "/auth/login"),
        rule(Method::POST, "/auth/logout", Viewer, Global),
        rule(Method::GET, "/auth/me", Viewer, Global),
        rule(Method::POST, "/enrollment-tokens", Op, Fleet),
        rule(Method::GET, "/enrollment-tokens", Op, Fleet),
        // The agent presents an enrolment token, checked by the handler.
        public(Method::POST, "/agents/enroll"),
        // A scoped operator's selection is cut to their scope (as bulk jobs).
        rule(Method::POST, "/agents/upgrade", Op, Filtered),
        rule(Method::GET, "/hosts", Viewer, Filtered),
        rule(Method::GET, "/hosts/{id}", Viewer, Host),
        rule(Method::DELETE, "/hosts/{id}", Op, Host),
        rule(Method::PATCH, "/hosts/{id}", Op, Host),
        rule(Method::POST, "/hosts/{id}/token/rotate", Op, Host),
        rule(Method::POST, "/hosts/{id}/token/revoke", Op, Host),
        rule(Method::GET, "/hosts/{id}/repository", Viewer, Host),
        rule(Method::PUT, "/hosts/{id}/repository", Op, Host),
        rule(Method::DELETE, "/hosts/{id}/repository", Op, Host),
        rule(Method::GET, "/hosts/{id}/repository/password", Op, Host),
        rule(Method::GET, "/policies", Viewer, Global),
        rule(Method::POST, "/policies", Op, Fleet),
        rule(Method::GET, "/policies/{id}", Viewer, Global),
        rule(Method::PUT, "/policies/{id}", Op, Fleet),
        rule(Method::DELETE, "/policies/{id}", Op, Fleet),
        rule(Method::GET, "/policies/{id}/hosts", Viewer, Filtered),
        rule(Method::GET, "/alerts", Viewer, Filtered),
        rule(Method::GET, "/alerts/{id}", Viewer, Alert),
        rule(Method::POST, "/alerts/{id}/ack", Op, Alert),
        rule(Method::GET, "/silences", Viewer, Global),
        rule(Method::POST, "/silences", Op, Fleet),
        rule(Method::DELETE, "/silences/{id}", Op, Fleet),
        rule(Method::POST, "/hosts/{id}/jobs", Op, Host),
        rule(Method::GET, "/hosts/{id}/snapshots", Viewer, Host),
        rule(
            Method::GET,
            "/hosts/{id}/snapshots/{snapshot_id}/tree",
            Viewer,
            Host,
        ),
        // File contents, not just names: what a restore could bring back,
        // so the role that may restore.
        rule(
            Method::GET,
            "/hosts/{id}/snapshots/{snapshot_id}/download",
            Op,
            Host,
        ),
        rule(Method::GET, "/hosts/{id}/repo-stats", Viewer, Host),
        rule(Method::GET, "/hosts/{id}/verification", Viewer, Host),
        rule(Method::GET, "/hosts/{id}/drills", Viewer, Host),
        rule(Method::GET, "/drills", Viewer, Filtered),
        rule(Method::GET, "/hosts/{id}/schedules", Viewer, Host),
        rule(Method::POST, "/hosts/{id}/schedules", Op, Host),
        rule(Method::PUT, "/schedules/{id}", Op, Schedule),
        rule(Method::DELETE, "/schedules/{id}", Op, Schedule),
        rule(Method::GET, "/retention-presets", Viewer, Global),
        rule(Method::GET, "/events", Viewer, Filtered),
        rule(Method::GET, "/jobs", Viewer, Filtered),
        rule(Method::POST, "/jobs", Op, Filtered),
        rule(Method::GET, "/jobs/{id}", Viewer, Job),
        rule(Method::POST, "/jobs/{id}/cancel", Op, Job),
        rule(Method::GET, "/jobs/{id}/logs", Viewer, Job),
        rule(Method::GET, "/jobs/{id}/events", Viewer, Job),
        rule(Method::GET, "/users", Admin, Global),
        rule(Method::POST, "/users", Admin, Global),
        rule(Method::DELETE, "/users/{id}", Admin, Global),
        rule(Method::PATCH, "/users/{id}", Admin, Global),
        rule(Method::PUT, "/users/me/password", Viewer, Global),
        // Each user's own tokens; the handlers never show another's.
        rule(Method::GET, "/api-tokens", Viewer, Global),
        rule(Method::POST, "/api-tokens", Viewer, Global),
        rule(Method::DELETE, "/api-tokens/{id}", Viewer, Global),
        rule(Method::GET, "/audit", Admin, Global),
        rule(Method::GET, "/notification-channels", Admin, Global),
        rule(Method::POST, "/notification-channels", Admin, Global),
        rule(Method::GET, "/notification-channels/{id}", Admin, Global),
        rule(Method::PUT, "/notification-channels/{id}", Admin, Global),
        rule(Method::DELETE, "/notification-channels/{id}", Admin, Global),
        rule(
            Method::POST,
            "/notification-channels/{id}/test",
            Admin,
            Global,
        ),
        // The API's own description: no data of this server (docs/security.md).
        public(Method::GET, "/openapi.json"),
    ]
}

/// The UI table. Pages only read; their actions go through the API (and
/// its rules) or a form route listed here.
fn ui_table() -> Vec<Rule> {
    vec![
        rule(Method::GET, "/", Viewer, Filtered),
        public(Method::GET, "/login"),
        public(Method::POST, "/login"),
        rule(Method::POST, "/logout", Viewer, Global),
        rule(Method::GET, "/hosts/{id}", Viewer, Host),
        rule(Method::POST, "/hosts/{id}/backup", Op, Host),
        rule(Method::POST, "/hosts/{id}/schedules", Op, Host),
        rule(Method::POST, "/hosts/{id}/settings", Op, Host),
        rule(Method::POST, "/bulk", Op, Filtered),
        rule(Method::POST, "/bulk/upgrade", Op, Filtered),
        rule(Method::GET, "/jobs/{id}", Viewer, Job),
        rule(Method::GET, "/enroll", Op, Fleet),
        rule(Method::POST, "/enroll", Op, Fleet),
        // Everyone's own password form; the user list only for admins.
        rule(Method::GET, "/users", Viewer, Global),
        rule(Method::GET, "/tokens", Viewer, Global),
        rule(Method::POST, "/tokens", Viewer, Global),
        rule(Method::GET, "/restore", Op, Filtered),
        rule(Method::GET, "/policies", Viewer, Global),
        rule(Method::GET, "/policies/new", Op, Fleet),
        rule(Method::POST, "/policies/new", Op, Fleet),
        rule(Method::GET, "/policies/{id}", Viewer, Global),
        rule(Method::POST, "/policies/{id}", Op, Fleet),
        rule(Method::POST, "/policies/{id}/delete", Op, Fleet),
        rule(Method::GET, "/audit", Admin, Global),
        rule(Method::GET, "/alerts", Viewer, Filtered),
        rule(Method::GET, "/drills", Viewer, Filtered),
        rule(Method::GET, "/alerts/firing", Viewer, Filtered),
        rule(Method::POST, "/alerts/silences", Op, Fleet),
        rule(Method::GET, "/channels", Admin, Global),
        rule(Method::GET, "/channels/new", Admin, Global),
        rule(Method::POST, "/channels/new", Admin, Global),
        rule(Method::GET, "/channels/{id}", Admin, Global),
        rule(Method::POST, "/channels/{id}", Admin, Global),
        rule(Method::POST, "/channels/{id}/delete", Admin, Global),
        public(Method::GET, "/assets/{file}"),
    ]
}

/// The rule for `method` on `path` in `rules`.
fn find(rules: &[Rule], method: &Method, path: &str) -> Option<Rule> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    rules
        .iter()
        .find(|r| r.method == method && r.path == path)
        .cloned()
}

/// Why a request found no rule.
enum Unruled {
    /// The path has rules, not for this method: 405, as the router
    /// would answer (a client may try any method on a known path).
    OtherMethod(String),
    /// A route with no rule at all: refused, fail closed (the role-matrix
    /// test keeps every real route in the table, so this is a bug).
    NoRule(String),
}

/// What to answer a request for which `rules` have no rule.
fn unruled(rules: &[Rule], method: &Method, path: &str) -> Unruled {
    let allowed: Vec<&str> = rules
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.method.as_str())
        .collect();
    if allowed.is_empty() {
        tracing::error!(%method, path, "a route without an access rule was refused");
        Unruled::NoRule(format!("no access rule for {method} {path}; refused"))
    } else {
        Unruled::OtherMethod(format!(
            "{method} is not allowed on {path} (allowed: {})",
            allowed.join(", ")
        ))
    }
}

/// The 403 of a role too small, naming the role needed.
pub(crate) fn role_refusal(needed: Role, have: Role) -> String {
    format!("this needs the `{needed}` role (or higher); you have `{have}`")
}

/// The 403 of a scoped user on a fleet-wide action.
pub(crate) const FLEET_REFUSAL: &str =
    "this reaches hosts by label selector and needs a user without a scope";

/// Why the guard refused.
enum Refusal {
    /// 403 with these words.
    Forbidden(String),
    /// 404 with these words (the same a missing thing gets).
    NotFound(String),
}

/// The `/api/v1` guard: finds the route's rule, authenticates (the
/// [`Operator`] extractor's checks, CSRF included), checks role and scope,
/// and hands the operator to the handler in the request's extensions.
pub(crate) async fn api_guard(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(matched) = request.extensions().get::<MatchedPath>().cloned() else {
        // Only the API's own fallback has no route: its 404 runs nothing.
        return next.run(request).await;
    };
    let path = matched.as_str();
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let Some(rule) = find(&API_RULES, request.method(), path) else {
        return match unruled(&API_RULES, request.method(), path) {
            Unruled::OtherMethod(words) => ApiError::method_not_allowed(words).into_response(),
            Unruled::NoRule(words) => ApiError::forbidden(words).into_response(),
        };
    };
    if rule.role.is_none() {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let operator =
        match <Operator as axum::extract::FromRequestParts<AppState>>::from_request_parts(
            &mut parts, &state,
        )
        .await
        {
            Ok(operator) => operator,
            Err(e) => return e.into_response(),
        };
    let params = path_params(&mut parts, &state).await;
    match check(&state, &rule, &operator, params.as_deref()).await {
        Ok(()) => {}
        Err(Refusal::Forbidden(words)) => return ApiError::forbidden(words).into_response(),
        Err(Refusal::NotFound(words)) => return ApiError::not_found(words).into_response(),
    }
    parts.extensions.insert(operator);
    next.run(Request::from_parts(parts, body)).await
}

/// The web UI's guard: like [`api_guard`], but a missing session goes to
/// the login page and refusals are short plain pages.
pub(crate) async fn ui_guard(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(matched) = request.extensions().get::<MatchedPath>().cloned() else {
        return next.run(request).await;
    };
    let Some(rule) = find(&UI_RULES, request.method(), matched.as_str()) else {
        return match unruled(&UI_RULES, request.method(), matched.as_str()) {
            Unruled::OtherMethod(words) => (StatusCode::METHOD_NOT_ALLOWED, words).into_response(),
            Unruled::NoRule(words) => (StatusCode::FORBIDDEN, words).into_response(),
        };
    };
    if rule.role.is_none() {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let Some(cookie) = auth::session_cookie(&parts.headers) else {
        return Redirect::to("/login").into_response();
    };
    let operator = match auth::operator_for(&state, &cookie).await {
        Ok(Some(operator)) if operator.session.is_some() => operator,
        Ok(_) => return Redirect::to("/login").into_response(),
        Err(e) => return crate::ui::store_error(format!("could not check a session: {e}")),
    };
    let params = path_params(&mut parts, &state).await;
    // Pages get a short text; the forms' scripts read the API's error shape.
    let page = parts.method == Method::GET;
    match check(&state, &rule, &operator, params.as_deref()).await {
        Ok(()) => {}
        Err(Refusal::Forbidden(words)) if page => {
            return (StatusCode::FORBIDDEN, words).into_response()
        }
        Err(Refusal::NotFound(words)) if page => {
            return (StatusCode::NOT_FOUND, words).into_response()
        }
        Err(Refusal::Forbidden(words)) => return ApiError::forbidden(words).into_response(),
        Err(Refusal::NotFound(words)) => return ApiError::not_found(words).into_response(),
    }
    // Handed on for pages (`WebUser`) only: the `Operator` the forms use
    // still checks the form's or header's CSRF token itself.
    parts.extensions.insert(CheckedSession(operator));
    next.run(Request::from_parts(parts, body)).await
}

/// The session the UI guard checked for this request, so a page does not
/// read it again. A type of its own: it says nothing about CSRF.
#[derive(Clone)]
pub(crate) struct CheckedSession(pub(crate) Operator);

/// Path parameters as `(name, value)` pairs.
type Params = [(String, String)];

/// The route's path parameters, if any.
async fn path_params(
    parts: &mut axum::http::request::Parts,
    state: &AppState,
) -> Option<Vec<(String, String)>> {
    use axum::extract::FromRequestParts;
    let raw = RawPathParams::from_request_parts(parts, state).await.ok()?;
    Some(
        raw.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// Checks `operator` against `rule`: role first, then scope.
async fn check(
    state: &AppState,
    rule: &Rule,
    operator: &Operator,
    params: Option<&Params>,
) -> Result<(), Refusal> {
    if let Some(needed) = rule.role {
        if operator.role < needed {
            return Err(Refusal::Forbidden(role_refusal(needed, operator.role)));
        }
    }
    let Some(scope) = &operator.scope else {
        return Ok(());
    };
    let id = params
        .and_then(|p| p.iter().find(|(k, _)| k == "id"))
        .map(|(_, v)| v.as_str());
    // The host a per-host rule is about, and the words a missing one gets.
    let owner = match rule.reach {
        Global | Filtered => return Ok(()),
        Fleet => return Err(Refusal::Forbidden(FLEET_REFUSAL.to_owned())),
        // An id that does not parse (or a thing the store cannot read now)
        // is left to the handler's answer.
        Host => id
            .and_then(|raw| raw.parse::<HostId>().ok())
            .map(|host| (host, format!("host `{host}` not found"))),
        Job => match id.and_then(|raw| raw.parse::<JobId>().ok()) {
            Some(job) => state
                .store()
                .job(job)
                .await
                .ok()
                .flatten()
                .map(|record| (record.host_id, format!("job `{job}` not found"))),
            None => None,
        },
        Schedule => match id.and_then(|raw| raw.parse::<ScheduleId>().ok()) {
            Some(schedule) => state
                .store()
                .schedule(schedule)
                .await
                .ok()
                .flatten()
                .map(|record| (record.host_id, format!("schedule `{schedule}` not found"))),
            None => None,
        },
        Alert => match id.and_then(|raw| raw.parse::<AlertId>().ok()) {
            Some(alert) => state
                .store()
                .alert(alert)
                .await
                .ok()
                .flatten()
                .map(|record| (record.host_id, format!("alert `{alert}` not found"))),
            None => None,
        },
    };
    match owner {
        Some((host, missing)) => host_in_scope(state, scope, host, missing).await,
        None => Ok(()),
    }
}

/// 404 (with `missing`'s words, those the handler uses for a missing
/// thing) unless `host` exists and `scope` matches its labels. A store
/// error is left to the handler, which meets it too.
async fn host_in_scope(
    state: &AppState,
    scope: &Selector,
    host: HostId,
    missing: String,
) -> Result<(), Refusal> {
    match state.store().host(host).await {
        Ok(Some(record)) if !scope.matches(&record.labels) => Err(Refusal::NotFound(missing)),
        _ => Ok(()),
    }
}

/// Whether `operator` sees a host with `labels`.
pub(crate) fn sees(operator: &Operator, labels: &Labels) -> bool {
    operator
        .scope
        .as_ref()
        .is_none_or(|scope| scope.matches(labels))
}

/// The selector matching what both `a` and `b` match; `None` when no host
/// can match both (the same key with different values).
pub(crate) fn intersect(a: &Selector, b: &Selector) -> Option<Selector> {
    let mut pairs = a.0.as_map().clone();
    for (key, value) in b.0.as_map() {
        match pairs.get(key) {
            Some(existing) if existing != value => return None,
            _ => {
                pairs.insert(key.clone(), value.clone());
            }
        }
    }
    Some(Selector(Labels::from_stored(pairs)))
}

/// `selector` narrowed to `operator`'s scope; `None` when nothing can match.
pub(crate) fn narrow(operator: &Operator, selector: &Selector) -> Option<Selector> {
    match &operator.scope {
        None => Some(selector.clone()),
        Some(scope) => intersect(scope, selector),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(text: &str) -> Selector {
        Selector(Labels::parse_pairs("s", text).unwrap())
    }

    #[test]
    fn selectors_intersect() {
        assert_eq!(
            intersect(&sel("team=a"), &sel("env=prod")),
            Some(sel("team=a,env=prod"))
        );
        assert_eq!(
            intersect(&sel("team=a"), &sel("team=a")),
            Some(sel("team=a"))
        );
        assert_eq!(intersect(&sel("team=a"), &sel("team=b")), None);
        assert_eq!(
            intersect(&sel("team=a"), &Selector::default()),
            Some(sel("team=a"))
        );
    }

    /// The router's routes are the document's operations (utoipa-axum
    /// registers both from one annotation), so this is what keeps a new
    /// route from skipping the table, and the table from naming a route
    /// that is gone.
    #[test]
    fn the_api_table_has_a_rule_for_exactly_the_documented_operations() {
        use std::collections::BTreeSet;
        let documented: BTreeSet<(String, String)> = crate::api_operations()
            .into_iter()
            .map(|(method, path)| (method.to_string(), path))
            .collect();
        let ruled: BTreeSet<(String, String)> = api_rules()
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_owned()))
            .collect();
        let unruled: Vec<_> = documented.difference(&ruled).collect();
        assert!(
            unruled.is_empty(),
            "routes without an access rule (add them to api_table): {unruled:?}"
        );
        let stale: Vec<_> = ruled.difference(&documented).collect();
        assert!(
            stale.is_empty(),
            "rules for routes the API does not have: {stale:?}"
        );
    }

    #[test]
    fn every_rule_is_listed_once() {
        for rules in [api_rules(), ui_rules()] {
            let mut seen = std::collections::BTreeSet::new();
            for r in &rules {
                assert!(
                    seen.insert((r.method.to_string(), r.path)),
                    "{} {} twice",
                    r.method,
                    r.path
                );
            }
        }
    }
}
