//! The operator JSON API under `/api/v1`: routes, the error shape every
//! handler returns, and the JSON body extractor that turns serde's complaint
//! into that shape.

mod agent_tokens;
mod alerts;
pub(crate) mod audit;
mod auth;
mod channels;
mod deadline;
mod drills;
pub(crate) mod enrollment;
mod error;
mod events;
pub(crate) mod hosts;
pub(crate) mod jobs;
mod openapi;
mod policies;
mod repository;
pub(crate) mod schedules;
pub(crate) mod tokens;
mod upgrades;
pub(crate) mod users;

pub(crate) use deadline::deadline;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) use auth::Operator;
pub(crate) use error::{parse_id, ApiError, ApiJson, ApiPath, ApiQuery};
/// The JSON of an [`ApiError`], as the handlers' OpenAPI annotations name it.
use rm_protocol::api::ApiError as ApiErrorBody;
pub(crate) use upgrades::upgrade as upgrade_agents;

use crate::state::AppState;

/// Request bodies of the operator API are small; refuse anything larger.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// All `/api/v1` routes.
pub(crate) fn router() -> Router<AppState> {
    routes().split_for_parts().0
}

/// The `/api/v1` router and its OpenAPI document, from the same
/// annotations: one `routes!` per path, naming every handler of that path
/// (each carries its `#[utoipa::path]`). A route added to the axum router
/// directly would be served but not documented; a test forbids it.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(users::me))
        .routes(routes!(enrollment::create_token, enrollment::list_pending))
        .routes(routes!(enrollment::enroll))
        .routes(routes!(upgrades::upgrade))
        .routes(routes!(hosts::list))
        .routes(routes!(hosts::show, hosts::delete, hosts::patch))
        .routes(routes!(agent_tokens::rotate))
        .routes(routes!(agent_tokens::revoke))
        .routes(routes!(
            repository::get,
            repository::put,
            repository::delete
        ))
        .routes(routes!(repository::password))
        .routes(routes!(policies::list, policies::create))
        .routes(routes!(policies::show, policies::update, policies::delete))
        .routes(routes!(policies::hosts))
        .routes(routes!(alerts::list))
        .routes(routes!(alerts::show))
        .routes(routes!(alerts::acknowledge))
        .routes(routes!(alerts::silences, alerts::create_silence))
        .routes(routes!(alerts::delete_silence))
        .routes(routes!(jobs::create))
        .routes(routes!(hosts::snapshots))
        .routes(routes!(hosts::tree))
        .routes(routes!(crate::snapshot_downloads::http::download))
        .routes(routes!(hosts::repo_stats))
        .routes(routes!(hosts::verification))
        .routes(routes!(drills::host_drills))
        .routes(routes!(drills::fleet))
        .routes(routes!(schedules::list, schedules::create))
        .routes(routes!(schedules::update, schedules::delete))
        .routes(routes!(schedules::presets))
        .routes(routes!(events::fleet))
        .routes(routes!(jobs::list, jobs::bulk_create))
        .routes(routes!(jobs::show))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::logs))
        .routes(routes!(jobs::events))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::delete, users::patch))
        .routes(routes!(users::change_own_password))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(audit::list))
        .routes(routes!(channels::list, channels::create))
        .routes(routes!(channels::show, channels::update, channels::delete))
        .routes(routes!(channels::test))
        .routes(routes!(openapi::document))
        .fallback(|| async { ApiError::not_found("no such API route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}
