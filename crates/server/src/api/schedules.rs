//! Schedules over HTTP: a host's list, create, change, delete, and the
//! retention presets a `forget` schedule may name.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rm_core::ScheduleId;
use rm_protocol::api::{RetentionPreset, ScheduleRequest, ScheduleView};
use rm_protocol::params::RETENTION_PRESETS;
use rm_store::ScheduleRecord;

use super::hosts::parse_host_id;
use super::ApiErrorBody;
use super::{ApiError, ApiJson, ApiPath, Operator};
use crate::audit::{Action, Audit, Client, Target};
use crate::schedules::{self, ScheduleError};
use crate::state::AppState;

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> ApiError {
        match e {
            ScheduleError::Invalid(message) => ApiError::bad_request(message),
            ScheduleError::HostNotFound(_) | ScheduleError::NotFound(_) => {
                ApiError::not_found(e.to_string())
            }
            ScheduleError::FromPolicy(..) => ApiError::conflict(e.to_string()),
            ScheduleError::Store(e) => e.into(),
        }
    }
}

fn parse_schedule_id(raw: &str) -> Result<ScheduleId, ApiError> {
    super::parse_id(raw, "a schedule")
}

/// List a host's schedules.
///
/// `GET /api/v1/hosts/{id}/schedules`.
#[utoipa::path(
    get,
    path = "/hosts/{id}/schedules",
    tag = "schedules",
    operation_id = "list_schedules",
    params(("id" = String, Path, description = "The host's id (ULID)")),
    responses(
        (status = 200, description = "The host's schedules, its own and its policy's", body = [ScheduleView]),
        (status = 404, description = "No such host", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(host): ApiPath<String>,
) -> Result<Json<Vec<ScheduleView>>, ApiError> {
    let host_id = parse_host_id(&host)?;
    if state.store().host(host_id).await?.is_none() {
        return Err(ScheduleError::HostNotFound(host_id).into());
    }
    let (_, records) = state.store().schedule_set(host_id).await?;
    Ok(Json(records.iter().map(schedules::view).collect()))
}

/// Create a schedule.
///
/// `POST /api/v1/hosts/{id}/schedules` → 201.
#[utoipa::path(
    post,
    path = "/hosts/{id}/schedules",
    tag = "schedules",
    operation_id = "create_schedule",
    params(("id" = String, Path, description = "The host's id (ULID)")),
    request_body = ScheduleRequest,
    responses(
        (status = 201, description = "The schedule with its description and next fire time", body = ScheduleView),
        (status = 404, description = "No such host", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(host): ApiPath<String>,
    ApiJson(req): ApiJson<ScheduleRequest>,
) -> Result<(StatusCode, Json<ScheduleView>), ApiError> {
    let host_id = parse_host_id(&host)?;
    let by = Audit::by(&state, &operator, &client).await;
    let entry_for = |record: &ScheduleRecord| {
        by.entry(
            Action::ScheduleCreate,
            Some(Target::new("schedule", record.id)),
            audit_details(record),
        )
    };
    let record = schedules::create(&state, host_id, &req, Some(&entry_for)).await?;
    tracing::info!(schedule = %record.id, by = %operator.user_id, "schedule created by operator");
    Ok((StatusCode::CREATED, Json(schedules::view(&record))))
}

/// Change a schedule.
///
/// `PUT /api/v1/schedules/{id}`.
#[utoipa::path(
    put,
    path = "/schedules/{id}",
    tag = "schedules",
    operation_id = "update_schedule",
    params(("id" = String, Path, description = "The schedule's id (ULID)")),
    request_body = ScheduleRequest,
    responses(
        (status = 200, description = "The changed schedule", body = ScheduleView),
        (status = 404, description = "No such schedule", body = ApiErrorBody),
        (status = 409, description = "A policy gives it: change the policy", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ScheduleRequest>,
) -> Result<Json<ScheduleView>, ApiError> {
    let id = parse_schedule_id(&id)?;
    let by = Audit::by(&state, &operator, &client).await;
    let entry_for = |record: &ScheduleRecord| {
        by.entry(
            Action::ScheduleUpdate,
            Some(Target::new("schedule", record.id)),
            audit_details(record),
        )
    };
    let record = schedules::update(&state, id, &req, Some(&entry_for)).await?;
    tracing::info!(schedule = %id, by = %operator.user_id, "schedule changed by operator");
    Ok(Json(schedules::view(&record)))
}

/// Delete a schedule.
///
/// `DELETE /api/v1/schedules/{id}` → 204.
#[utoipa::path(
    delete,
    path = "/schedules/{id}",
    tag = "schedules",
    operation_id = "delete_schedule",
    params(("id" = String, Path, description = "The schedule's id (ULID)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such schedule", body = ApiErrorBody),
        (status = 409, description = "A policy gives it: change the policy", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_schedule_id(&id)?;
    let by = Audit::by(&state, &operator, &client).await;
    let entry_for = |record: &ScheduleRecord| {
        by.entry(
            Action::ScheduleDelete,
            Some(Target::new("schedule", record.id)),
            audit_details(record),
        )
    };
    schedules::delete(&state, id, Some(&entry_for)).await?;
    tracing::info!(schedule = %id, by = %operator.user_id, "schedule deleted by operator");
    Ok(StatusCode::NO_CONTENT)
}

/// What the audit log keeps of a schedule (its parameters hold no secret).
fn audit_details(record: &ScheduleRecord) -> serde_json::Value {
    serde_json::json!({
        "host_id": record.host_id.to_string(),
        "kind": record.kind,
        "cron": record.cron,
        "timezone": record.timezone,
        "enabled": record.enabled,
        "params": record.params,
    })
}

/// List the retention presets.
///
/// `GET /api/v1/retention-presets`.
#[utoipa::path(
    get,
    path = "/retention-presets",
    tag = "schedules",
    operation_id = "retention_presets",
    responses((status = 200, description = "The presets a `forget` may name", body = [RetentionPreset])),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn presets(_operator: Operator) -> Json<Vec<RetentionPreset>> {
    Json(
        RETENTION_PRESETS
            .iter()
            .map(|p| RetentionPreset {
                name: p.name.to_owned(),
                description: p.description.to_owned(),
                params: serde_json::to_value(p.params()).unwrap_or_default(),
            })
            .collect(),
    )
}
