//! The account pages: `/users` (list, add, delete, change your own
//! password) and `/tokens` (your API tokens: list, create, revoke).
//!
//! Most actions go through the JSON API from the page's script like every
//! other page. Creating a token is the exception: its secret has to be
//! shown once, so the token form is a plain HTML form posted to
//! `POST /tokens` (guarded by the page's CSRF token in a hidden field),
//! which issues the token through the same code as the API
//! ([`crate::api::tokens::issue`]) and renders the page again with the
//! secret in it. That page is never cached.

use askama::Template;
use axum::extract::{Form, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rm_store::ApiToken;
use serde::Deserialize;

use super::format;
use super::session::{render, store_error, WebUser};
use crate::api::tokens::{self, TokenCreated, TokenError, MAX_NAME_CHARS, MAX_TTL_DAYS};
use crate::api::users::{MAX_USERNAME_CHARS, MIN_PASSWORD_CHARS};
use crate::audit::Client;
use crate::state::AppState;

/// A user as the users page shows them.
pub(crate) struct UserRow {
    pub(crate) id: String,
    pub(crate) username: String,
    pub(crate) created: String,
    pub(crate) is_me: bool,
    pub(crate) role: rm_core::Role,
    /// `key=value,…`; empty: every host.
    pub(crate) scope: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    user: super::session::Who,
    csrf: String,
    users: Vec<UserRow>,
    roles: [rm_core::Role; 3],
    min_password: usize,
    max_username: usize,
}

/// `GET /users`: for an admin every user with their role and scope (and
/// forms to change them); for everyone their own password form.
pub(crate) async fn users(State(state): State<AppState>, user: WebUser) -> Response {
    let users = if user.username.is_admin() {
        match state.store().list_users().await {
            Ok(users) => users,
            Err(e) => return store_error(e),
        }
    } else {
        Vec::new()
    };
    let rows = users
        .into_iter()
        .map(|u| UserRow {
            id: u.id.to_string(),
            is_me: u.id == user.operator.user_id,
            username: u.username,
            created: format::time(u.created_at),
            role: u.role,
            scope: u
                .scope
                .map(|s| s.0.pairs().collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
        })
        .collect();
    render(&UsersPage {
        user: user.username,
        csrf: user.csrf,
        users: rows,
        roles: rm_core::Role::ALL,
        min_password: MIN_PASSWORD_CHARS,
        max_username: MAX_USERNAME_CHARS,
    })
}

/// An API token as the tokens page shows it.
pub(crate) struct TokenRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) created: String,
    pub(crate) expires: String,
    pub(crate) status: &'static str,
    pub(crate) status_class: &'static str,
    pub(crate) revoked: bool,
    /// Its own narrower role, or "as its user".
    pub(crate) role: String,
}

fn token_row(token: &ApiToken, now: DateTime<Utc>) -> TokenRow {
    let (status, status_class) = match (token.revoked_at, token.expires_at) {
        (Some(_), _) => ("revoked", "bad"),
        (None, Some(at)) if at <= now => ("expired", "warn"),
        _ => ("active", "ok"),
    };
    TokenRow {
        id: token.id.to_string(),
        name: token.name.clone(),
        created: format::time(token.created_at),
        expires: token
            .expires_at
            .map(format::time)
            .unwrap_or_else(|| String::from("never")),
        status,
        status_class,
        revoked: token.revoked_at.is_some(),
        role: token
            .role
            .map_or_else(|| String::from("as its user"), |r| r.to_string()),
    }
}

/// A token just created, shown once.
pub(crate) struct NewToken {
    pub(crate) name: String,
    pub(crate) secret: String,
    pub(crate) expires: Option<String>,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    user: super::session::Who,
    csrf: String,
    tokens: Vec<TokenRow>,
    new_token: Option<NewToken>,
    error: Option<String>,
    name: String,
    ttl_days: String,
    max_name: usize,
    max_ttl_days: u32,
}

/// Renders the tokens page of `user` with whatever the form left.
async fn tokens_page(
    state: &AppState,
    user: WebUser,
    new_token: Option<NewToken>,
    error: Option<String>,
    form: Option<TokenForm>,
) -> Response {
    let now = Utc::now();
    let tokens = match state.store().list_api_tokens(user.operator.user_id).await {
        Ok(tokens) => tokens,
        Err(e) => return store_error(e),
    };
    let form = form.unwrap_or_default();
    let page = render(&TokensPage {
        user: user.username,
        csrf: user.csrf,
        tokens: tokens.iter().map(|t| token_row(t, now)).collect(),
        new_token,
        error,
        name: form.name,
        ttl_days: form.ttl_days,
        max_name: MAX_NAME_CHARS,
        max_ttl_days: MAX_TTL_DAYS,
    });
    // The page may hold a secret: never keep it in a cache.
    ([(header::CACHE_CONTROL, "no-store")], page).into_response()
}

/// `GET /tokens`.
pub(crate) async fn tokens(State(state): State<AppState>, user: WebUser) -> Response {
    tokens_page(&state, user, None, None, None).await
}

/// The token form: CSRF token, name, optional lifetime in days.
#[derive(Default, Deserialize)]
pub(crate) struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    ttl_days: String,
    /// A narrower role than the user's; empty: theirs.
    #[serde(default)]
    role: String,
}

/// `POST /tokens`: creates a token and shows its secret once.
pub(crate) async fn create_token(
    State(state): State<AppState>,
    user: WebUser,
    client: Client,
    Form(form): Form<TokenForm>,
) -> Response {
    if !user.csrf_matches(&form.csrf) {
        return (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response();
    }
    let ttl_days = match form.ttl_days.trim() {
        "" => Ok(None),
        raw => raw.parse::<u32>().map(Some).map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                format!("`ttl_days` must be a whole number of days between 1 and {MAX_TTL_DAYS}"),
            )
        }),
    };
    let created = match ttl_days {
        Ok(ttl_days) => tokens::issue(
            &state,
            &user.operator,
            &client,
            &form.name,
            ttl_days,
            Some(&form.role),
        )
        .await
        .map_err(|e| match e {
            TokenError::Invalid(message) => (StatusCode::BAD_REQUEST, message),
            other => {
                tracing::error!(error = %other, "could not create an API token");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    String::from("the server could not create the token; see its log"),
                )
            }
        }),
        Err(refused) => Err(refused),
    };
    match created {
        Ok(TokenCreated {
            token,
            name,
            expires_at,
            ..
        }) => {
            let new_token = NewToken {
                name,
                secret: token,
                expires: expires_at.map(format::time),
            };
            tokens_page(&state, user, Some(new_token), None, None).await
        }
        Err((status, message)) => {
            let mut page = tokens_page(&state, user, None, Some(message), Some(form)).await;
            if page.status().is_success() {
                *page.status_mut() = status;
            }
            page
        }
    }
}
