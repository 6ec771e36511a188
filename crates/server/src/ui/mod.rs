//! The web UI: server-rendered pages (askama templates compiled into the
//! binary) with a little plain JavaScript for live updates and actions.
//! Every asset is embedded, so the UI works with no internet and asks no
//! other host for anything.
//!
//! Pages read through the store directly; actions go through the JSON API
//! (same origin, session cookie plus the page's CSRF token), so there is
//! one implementation of every operation.

mod accounts;
mod alerts;
mod assets;
mod audit;
mod channels;
mod drills;
mod fleet;
mod format;
mod forms;
mod pages;
mod policies;
mod restore;
mod session;

use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;

pub(crate) use session::store_error;

/// The UI's routes.
pub(crate) fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(pages::dashboard))
        .route("/login", get(session::login_page).post(session::login_form))
        .route("/logout", post(session::logout_form))
        .route("/hosts/{id}", get(pages::host))
        .route("/hosts/{id}/backup", post(forms::backup))
        .route("/hosts/{id}/schedules", post(forms::schedule))
        .route("/hosts/{id}/settings", post(fleet::host_settings))
        .route("/bulk", post(fleet::bulk))
        .route("/bulk/upgrade", post(fleet::bulk_upgrade))
        .route("/jobs/{id}", get(pages::job))
        .route("/enroll", get(pages::enroll).post(fleet::enroll))
        .route("/users", get(accounts::users))
        .route(
            "/tokens",
            get(accounts::tokens).post(accounts::create_token),
        )
        .route("/restore", get(restore::wizard))
        .route("/policies", get(policies::list))
        .route(
            "/policies/new",
            get(policies::new_form).post(policies::create),
        )
        .route("/policies/{id}", get(policies::page).post(policies::update))
        .route("/policies/{id}/delete", post(policies::delete))
        .route("/audit", get(audit::page))
        .route("/alerts", get(alerts::page))
        .route("/drills", get(drills::fleet_page))
        .route("/alerts/firing", get(alerts::firing_count))
        .route("/alerts/silences", post(alerts::create_silence))
        .route("/channels", get(channels::list))
        .route(
            "/channels/new",
            get(channels::new_form).post(channels::create),
        )
        .route("/channels/{id}", get(channels::page).post(channels::update))
        .route("/channels/{id}/delete", post(channels::delete))
        .route("/assets/{file}", get(assets::serve))
        .layer(axum::middleware::from_fn_with_state(
            state,
            crate::access::ui_guard,
        ))
        // No page may be framed by another site (clickjacking).
        .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            axum::http::header::X_FRAME_OPTIONS,
            axum::http::HeaderValue::from_static("DENY"),
        ))
}
