//! The drill routes: a host's restore drills with their evidence, and the
//! fleet's view of which hosts had a successful drill lately. The reading
//! itself is [`crate::drills`]'s, shared with the web UI.

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use rm_protocol::drill::{DrillView, FleetDrills};
use serde::Deserialize;

use super::hosts::existing;
use super::ApiErrorBody;
use super::{ApiError, ApiPath, ApiQuery, Operator};
use crate::drills::{self, DEFAULT_WITHIN_DAYS, MAX_WITHIN_DAYS};
use crate::state::AppState;

/// Query of a host's drill list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HostDrillsQuery {
    /// Drills older than this job id (paging).
    before: Option<String>,
    /// At most this many, 1 to 500 (default 50).
    limit: Option<u32>,
}

/// List a host's restore drills.
///
/// `GET /api/v1/hosts/{id}/drills`: its `drill` jobs, newest first, each
/// with its statistics and per-file evidence once it ended.
#[utoipa::path(
    get,
    path = "/hosts/{id}/drills",
    tag = "drills",
    operation_id = "list_host_drills",
    params(("id" = String, Path, description = "The host's id (ULID)"), HostDrillsQuery),
    responses(
        (status = 200, description = "The host's drills, newest first", body = [DrillView]),
        (status = 400, description = "A bad `before` or `limit`", body = ApiErrorBody),
        (status = 404, description = "No such host", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn host_drills(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<HostDrillsQuery>,
) -> Result<Json<Vec<DrillView>>, ApiError> {
    let host = existing(&state, &id).await?;
    let (before, limit) = super::jobs::page(query.before.as_deref(), query.limit)?;
    Ok(Json(drills::of_host(&state, host.id, before, limit).await?))
}

/// Query of the fleet's drill view.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FleetQuery {
    /// The window in days, 1 to 3650 (default 30).
    within_days: Option<u32>,
}

/// Which hosts had a successful restore drill lately.
///
/// `GET /api/v1/drills?within_days=N`: every host the caller may see, each
/// with its last successful drill and whether that ended within the last
/// `N` days; hosts without one first.
#[utoipa::path(
    get,
    path = "/drills",
    tag = "drills",
    operation_id = "fleet_drills",
    params(FleetQuery),
    responses(
        (status = 200, description = "Per host, the last successful drill", body = FleetDrills),
        (status = 400, description = "A bad `within_days`", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn fleet(
    State(state): State<AppState>,
    operator: Operator,
    ApiQuery(query): ApiQuery<FleetQuery>,
) -> Result<Json<FleetDrills>, ApiError> {
    let within_days = match query.within_days {
        None => DEFAULT_WITHIN_DAYS,
        Some(n) if (1..=MAX_WITHIN_DAYS).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "`within_days` must be 1 to {MAX_WITHIN_DAYS}"
            )))
        }
    };
    let view = drills::fleet(&state, operator.scope.as_ref(), within_days, Utc::now()).await?;
    Ok(Json(view))
}
