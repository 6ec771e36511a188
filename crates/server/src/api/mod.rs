//! The operator JSON API under `/api/v1`: routes, the error shape every
//! handler returns, and the JSON body extractor that turns serde's complaint
//! into that shape.

mod agent_tokens;
mod alerts;
pub(crate) mod audit;
mod auth;
mod channels;
mod deadline;
pub(crate) mod enrollment;
mod error;
mod events;
pub(crate) mod hosts;
pub(crate) mod jobs;
mod policies;
mod repository;
pub(crate) mod schedules;
pub(crate) mod tokens;
pub(crate) mod users;

pub(crate) use deadline::deadline;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;

pub(crate) use auth::Operator;
pub(crate) use error::{parse_id, ApiError, ApiJson, ApiPath, ApiQuery};

use crate::state::AppState;

/// Request bodies of the operator API are small; refuse anything larger.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// All `/api/v1` routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(auth::login))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/me", get(users::me))
        .route(
            "/enrollment-tokens",
            post(enrollment::create_token).get(enrollment::list_pending),
        )
        .route("/agents/enroll", post(enrollment::enroll))
        .route("/hosts", get(hosts::list))
        .route(
            "/hosts/{id}",
            get(hosts::show).delete(hosts::delete).patch(hosts::patch),
        )
        .route("/hosts/{id}/token/rotate", post(agent_tokens::rotate))
        .route("/hosts/{id}/token/revoke", post(agent_tokens::revoke))
        .route(
            "/hosts/{id}/repository",
            get(repository::get)
                .put(repository::put)
                .delete(repository::delete),
        )
        .route("/hosts/{id}/repository/password", get(repository::password))
        .route("/policies", get(policies::list).post(policies::create))
        .route(
            "/policies/{id}",
            get(policies::show)
                .put(policies::update)
                .delete(policies::delete),
        )
        .route("/policies/{id}/hosts", get(policies::hosts))
        .route("/alerts", get(alerts::list))
        .route("/alerts/{id}", get(alerts::show))
        .route("/alerts/{id}/ack", post(alerts::acknowledge))
        .route(
            "/silences",
            get(alerts::silences).post(alerts::create_silence),
        )
        .route("/silences/{id}", delete(alerts::delete_silence))
        .route("/hosts/{id}/jobs", post(jobs::create))
        .route("/hosts/{id}/snapshots", get(hosts::snapshots))
        .route("/hosts/{id}/snapshots/{snapshot_id}/tree", get(hosts::tree))
        .route("/hosts/{id}/repo-stats", get(hosts::repo_stats))
        .route(
            "/hosts/{id}/schedules",
            get(schedules::list).post(schedules::create),
        )
        .route(
            "/schedules/{id}",
            axum::routing::put(schedules::update).delete(schedules::delete),
        )
        .route("/retention-presets", get(schedules::presets))
        .route("/events", get(events::fleet))
        .route("/jobs", get(jobs::list).post(jobs::bulk_create))
        .route("/jobs/{id}", get(jobs::show))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/logs", get(jobs::logs))
        .route("/jobs/{id}/events", get(jobs::events))
        .route("/users", get(users::list).post(users::create))
        .route(
            "/users/{id}",
            axum::routing::delete(users::delete).patch(users::patch),
        )
        .route(
            "/users/me/password",
            axum::routing::put(users::change_own_password),
        )
        .route("/api-tokens", get(tokens::list).post(tokens::create))
        .route("/api-tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/audit", get(audit::list))
        .route(
            "/notification-channels",
            get(channels::list).post(channels::create),
        )
        .route(
            "/notification-channels/{id}",
            get(channels::show)
                .put(channels::update)
                .delete(channels::delete),
        )
        .route("/notification-channels/{id}/test", post(channels::test))
        .fallback(|| async { ApiError::not_found("no such API route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}
