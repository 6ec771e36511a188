//! `/api/v1/alerts` and `/api/v1/silences` (DESIGN §7) over the service in
//! [`crate::alerts`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rm_core::{AlertId, SilenceId};
use rm_protocol::api::{AlertView, SilenceRequest, SilenceView};

use super::ApiErrorBody;
use super::{ApiError, ApiJson, ApiPath, ApiQuery, Operator};
use crate::alerts::{self, AlertError, AlertQuery};
use crate::audit::{Audit, Client};
use crate::state::AppState;

impl From<AlertError> for ApiError {
    fn from(e: AlertError) -> ApiError {
        match e {
            AlertError::Invalid(message) => ApiError::bad_request(message),
            AlertError::NotFound(_) => ApiError::not_found(e.to_string()),
            AlertError::Conflict(message) => ApiError::conflict(message),
            AlertError::Store(e) => e.into(),
        }
    }
}

fn parse_alert_id(raw: &str) -> Result<AlertId, ApiError> {
    super::parse_id(raw, "an alert")
}

/// List alerts.
///
/// `GET /api/v1/alerts?state=firing|acknowledged|resolved&host_id=&kind=&labels=&limit=&before=`:
/// newest first.
#[utoipa::path(
    get,
    path = "/alerts",
    tag = "alerts",
    operation_id = "list_alerts",
    params(AlertQuery),
    responses((status = 200, description = "Alerts, newest first", body = [AlertView])),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    operator: Operator,
    ApiQuery(query): ApiQuery<AlertQuery>,
) -> Result<Json<Vec<AlertView>>, ApiError> {
    Ok(Json(
        alerts::list(&state, &query, operator.scope.as_ref()).await?,
    ))
}

/// Show an alert.
///
/// `GET /api/v1/alerts/{id}`.
#[utoipa::path(
    get,
    path = "/alerts/{id}",
    tag = "alerts",
    operation_id = "show_alert",
    params(("id" = String, Path, description = "The alert's id (ULID)")),
    responses(
        (status = 200, description = "The alert", body = AlertView),
        (status = 404, description = "No such alert", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AlertView>, ApiError> {
    Ok(Json(alerts::show(&state, parse_alert_id(&id)?).await?))
}

/// Acknowledge an alert.
///
/// `POST /api/v1/alerts/{id}/ack`: no more repeats of a firing alert (its
/// resolution is still sent). 409 when it is resolved or acknowledged.
#[utoipa::path(
    post,
    path = "/alerts/{id}/ack",
    tag = "alerts",
    operation_id = "acknowledge_alert",
    params(("id" = String, Path, description = "The alert's id (ULID)")),
    responses(
        (status = 200, description = "The acknowledged alert", body = AlertView),
        (status = 404, description = "No such alert", body = ApiErrorBody),
        (status = 409, description = "It is resolved or acknowledged already", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn acknowledge(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AlertView>, ApiError> {
    let id = parse_alert_id(&id)?;
    let by = Audit::by(&state, &operator, &client).await;
    Ok(Json(alerts::acknowledge(&state, id, &by).await?))
}

/// `GET /api/v1/silences?all=true`: silences that have not ended (with
/// `all`, the ended ones too).
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SilenceQuery {
    /// Include the silences that ended.
    #[serde(default)]
    all: bool,
}

/// List silences.
///
/// `GET /api/v1/silences`.
#[utoipa::path(
    get,
    path = "/silences",
    tag = "alerts",
    operation_id = "list_silences",
    params(SilenceQuery),
    responses((status = 200, description = "Silences that have not ended (with `all`, every one)", body = [SilenceView])),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn silences(
    State(state): State<AppState>,
    _operator: Operator,
    ApiQuery(query): ApiQuery<SilenceQuery>,
) -> Result<Json<Vec<SilenceView>>, ApiError> {
    Ok(Json(alerts::silences(&state, query.all).await?))
}

/// Create a silence.
///
/// `POST /api/v1/silences` `{selector, until, reason}` → 201: notifications
/// for matching hosts are held back until `until` (alerts still fire).
#[utoipa::path(
    post,
    path = "/silences",
    tag = "alerts",
    operation_id = "create_silence",
    request_body = SilenceRequest,
    responses((status = 201, description = "The silence", body = SilenceView)),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn create_silence(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiJson(req): ApiJson<SilenceRequest>,
) -> Result<(StatusCode, Json<SilenceView>), ApiError> {
    let by = Audit::by(&state, &operator, &client).await;
    let view = alerts::create_silence(&state, req, &by).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// End a silence.
///
/// `DELETE /api/v1/silences/{id}` → 204: ends it now; what it held back
/// is sent at once.
#[utoipa::path(
    delete,
    path = "/silences/{id}",
    tag = "alerts",
    operation_id = "delete_silence",
    params(("id" = String, Path, description = "The silence's id (ULID)")),
    responses(
        (status = 204, description = "Ended; what it held back is sent"),
        (status = 404, description = "No such silence", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn delete_silence(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id: SilenceId = super::parse_id(&id, "a silence")?;
    let by = Audit::by(&state, &operator, &client).await;
    alerts::delete_silence(&state, id, &by).await?;
    Ok(StatusCode::NO_CONTENT)
}
