//! Logging in and out of the web UI, and the [`WebUser`] extractor that
//! sends anyone without a valid session cookie to the login page.

use askama::Template;
use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::audit::{Action, Audit, Client, Target};
use crate::auth::{self, LoginError, Operator};
use crate::state::AppState;

/// A logged-in operator of the web UI.
pub(crate) struct WebUser {
    /// Who.
    pub(crate) operator: Operator,
    /// Their user name and role, for the header and for hiding what their
    /// role cannot do (the server refuses it anyway: [`crate::access`]).
    pub(crate) username: Who,
    /// The CSRF token pages embed for API calls and forms.
    pub(crate) csrf: String,
}

impl FromRequestParts<AppState> for WebUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let to_login = || Redirect::to("/login").into_response();
        let Some(cookie) = auth::session_cookie(&parts.headers) else {
            return Err(to_login());
        };
        // The access guard checked this request's session already.
        let checked = parts
            .extensions
            .get::<crate::access::CheckedSession>()
            .map(|checked| checked.0.clone());
        let operator = match checked {
            Some(operator) => operator,
            None => match auth::operator_for(state, &cookie).await {
                Ok(Some(operator)) if operator.session.is_some() => operator,
                Ok(_) => return Err(to_login()),
                Err(e) => {
                    return Err(store_error(format!("could not check a session: {e}")));
                }
            },
        };
        let username = Who {
            name: operator.username.clone(),
            role: operator.role,
            scoped: operator.scope.is_some(),
        };
        Ok(WebUser {
            operator,
            username,
            csrf: auth::csrf_token(&cookie),
        })
    }
}

/// The logged-in user as pages see them: shown as their name.
pub(crate) struct Who {
    /// User name.
    pub(crate) name: String,
    /// What they may do.
    pub(crate) role: rm_core::Role,
    /// Whether a scope limits them to some hosts.
    pub(crate) scoped: bool,
}

impl Who {
    /// May run jobs, restore and change hosts.
    pub(crate) fn can_operate(&self) -> bool {
        self.role >= rm_core::Role::Operator
    }

    /// May manage users, channels and read the audit log.
    pub(crate) fn is_admin(&self) -> bool {
        self.role == rm_core::Role::Admin
    }

    /// May change what reaches hosts by selector (policies, silences,
    /// enrolment): an operator without a scope.
    pub(crate) fn fleet_wide(&self) -> bool {
        self.can_operate() && !self.scoped
    }
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl WebUser {
    /// Whether a form's `csrf` field is this session's CSRF token
    /// (constant time, like every secret comparison).
    pub(crate) fn csrf_matches(&self, presented: &str) -> bool {
        rm_core::secret::constant_time_eq(self.csrf.as_bytes(), presented.as_bytes())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct StoreErrorPage;

/// The page shown when the store failed: a 500 that says the server could
/// not read its database (never an empty page that looks like "no data");
/// the error itself goes to the log.
pub(crate) fn store_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "a page could not read the store");
    (StatusCode::INTERNAL_SERVER_ERROR, render(&StoreErrorPage)).into_response()
}

/// Renders a template, or a plain 500 naming the failure in the log.
pub(crate) fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not render a page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
    username: String,
}

/// `GET /login`.
pub(crate) async fn login_page() -> Response {
    render(&LoginPage {
        error: None,
        username: String::new(),
    })
}

/// The login form.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    username: String,
    password: String,
}

/// `POST /login`: sets the session cookie and goes to the dashboard.
pub(crate) async fn login_form(
    State(state): State<AppState>,
    client: Client,
    Form(form): Form<LoginForm>,
) -> Response {
    match auth::login(&state, &form.username, &form.password, &client).await {
        Ok((token, _)) => {
            let cookie = auth::session_cookie_header(&state, &token, state.config().session_ttl);
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Err(e) => {
            // A wrong password re-shows the form with its message; the page
            // itself loaded fine, so it is not an HTTP error.
            let retry_after = e.retry_after();
            let status = match &e {
                LoginError::Invalid => StatusCode::OK,
                LoginError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                LoginError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                LoginError::Store(store) if store.fault().is_some() => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                LoginError::Store(_) | LoginError::Core(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let message = match e {
                // A storage fault says what is wrong: the operator can fix it.
                LoginError::Store(store) if store.fault().is_some() => {
                    tracing::warn!(error = %store, "login refused: the store cannot write");
                    format!("{store}; you were not logged in, try again once it is fixed")
                }
                LoginError::Store(_) | LoginError::Core(_) => {
                    tracing::error!(error = %e, "login failed");
                    String::from("the server could not log you in; see its log")
                }
                other => other.to_string(),
            };
            let page = render(&LoginPage {
                error: Some(message),
                username: form.username,
            });
            let mut response = (status, page).into_response();
            if let Some(wait) = retry_after {
                let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, seconds.into());
            }
            response
        }
    }
}

/// A form that carries only the CSRF token (delete buttons).
#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

/// The logout form carries the CSRF token.
#[derive(Deserialize)]
pub(crate) struct LogoutForm {
    csrf: String,
}

/// `POST /logout`.
pub(crate) async fn logout_form(
    State(state): State<AppState>,
    user: WebUser,
    client: Client,
    Form(form): Form<LogoutForm>,
) -> Response {
    if !user.csrf_matches(&form.csrf) {
        return (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response();
    }
    if let Some(session) = user.operator.session {
        let entry = Audit::by(&state, &user.operator, &client).await.entry(
            Action::AuthLogout,
            Some(Target::new("user", user.operator.user_id)),
            serde_json::json!({}),
        );
        match state.store().delete_session(session, Some(&entry)).await {
            Ok(()) => state.credentials_ended(auth::Ended::Credential(session)),
            Err(e) => tracing::error!(error = %e, "could not end a session"),
        }
    }
    (
        [(header::SET_COOKIE, auth::cleared_cookie_header())],
        Redirect::to("/login"),
    )
        .into_response()
}
