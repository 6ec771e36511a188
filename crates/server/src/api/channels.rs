//! `/api/v1/notification-channels`: notification channels over the
//! service in [`crate::notify::channels`] (DESIGN §7).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rm_core::ChannelId;
use rm_protocol::api::{ChannelRequest, ChannelTestView, ChannelView};

use super::ApiErrorBody;
use super::{ApiError, ApiJson, ApiPath, Operator};
use crate::audit::{Audit, Client};
use crate::notify::{channels, NotifyError};
use crate::state::AppState;

impl From<NotifyError> for ApiError {
    fn from(e: NotifyError) -> ApiError {
        match e {
            NotifyError::Invalid(message) => ApiError::bad_request(message),
            NotifyError::NotFound(_) => ApiError::not_found(e.to_string()),
            NotifyError::Sealing(_) => ApiError::internal(e),
            NotifyError::Store(e) => e.into(),
        }
    }
}

fn parse_channel_id(raw: &str) -> Result<ChannelId, ApiError> {
    super::parse_id(raw, "a channel")
}

/// List notification channels.
///
/// `GET /api/v1/notification-channels`: every channel, in name order.
#[utoipa::path(
    get,
    path = "/notification-channels",
    tag = "notifications",
    operation_id = "list_channels",
    responses((status = 200, description = "Every channel, in name order", body = [ChannelView])),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<Json<Vec<ChannelView>>, ApiError> {
    Ok(Json(channels::list(&state).await?))
}

/// Create a notification channel.
///
/// `POST /api/v1/notification-channels` → 201 with the channel.
#[utoipa::path(
    post,
    path = "/notification-channels",
    tag = "notifications",
    operation_id = "create_channel",
    request_body = ChannelRequest,
    responses(
        (status = 201, description = "The channel, secrets shown as `<set>`", body = ChannelView),
        (status = 409, description = "The name is taken", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiJson(req): ApiJson<ChannelRequest>,
) -> Result<(StatusCode, Json<ChannelView>), ApiError> {
    let by = Audit::by(&state, &operator, &client).await;
    let view = channels::create(&state, &req, Some(&by)).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Show a notification channel.
///
/// `GET /api/v1/notification-channels/{id}`.
#[utoipa::path(
    get,
    path = "/notification-channels/{id}",
    tag = "notifications",
    operation_id = "show_channel",
    params(("id" = String, Path, description = "The channel's id (ULID)")),
    responses(
        (status = 200, description = "The channel", body = ChannelView),
        (status = 404, description = "No such channel", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ChannelView>, ApiError> {
    Ok(Json(channels::show(&state, parse_channel_id(&id)?).await?))
}

/// Replace a notification channel.
///
/// `PUT /api/v1/notification-channels/{id}`: replaces the settings; a
/// secret left out keeps the stored one.
#[utoipa::path(
    put,
    path = "/notification-channels/{id}",
    tag = "notifications",
    operation_id = "update_channel",
    params(("id" = String, Path, description = "The channel's id (ULID)")),
    request_body = ChannelRequest,
    responses(
        (status = 200, description = "The changed channel", body = ChannelView),
        (status = 404, description = "No such channel", body = ApiErrorBody),
        (status = 409, description = "The name is taken", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ChannelRequest>,
) -> Result<Json<ChannelView>, ApiError> {
    let id = parse_channel_id(&id)?;
    let by = Audit::by(&state, &operator, &client).await;
    Ok(Json(channels::update(&state, id, &req, Some(&by)).await?))
}

/// Delete a notification channel.
///
/// `DELETE /api/v1/notification-channels/{id}` → 204, with what was
/// queued for it.
#[utoipa::path(
    delete,
    path = "/notification-channels/{id}",
    tag = "notifications",
    operation_id = "delete_channel",
    params(("id" = String, Path, description = "The channel's id (ULID)")),
    responses(
        (status = 204, description = "Deleted, with what was queued for it"),
        (status = 404, description = "No such channel", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_channel_id(&id)?;
    let by = Audit::by(&state, &operator, &client).await;
    channels::delete(&state, id, Some(&by)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a test notification.
///
/// `POST /api/v1/notification-channels/{id}/test` → `{ok, status,
/// response}`: what the receiver said to a test message sent now.
#[utoipa::path(
    post,
    path = "/notification-channels/{id}/test",
    tag = "notifications",
    operation_id = "test_channel",
    params(("id" = String, Path, description = "The channel's id (ULID)")),
    responses(
        (status = 200, description = "What the receiver answered", body = ChannelTestView),
        (status = 404, description = "No such channel", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn test(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ChannelTestView>, ApiError> {
    let id = parse_channel_id(&id)?;
    let by = Audit::by(&state, &operator, &client).await;
    Ok(Json(channels::test(&state, id, Some(&by)).await?))
}
