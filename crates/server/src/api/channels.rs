//! `/api/v1/notification-channels`: notification channels over the
//! service in [`crate::notify::channels`] (DESIGN §7).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rm_core::ChannelId;
use rm_protocol::api::{ChannelRequest, ChannelTestView, ChannelView};

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

/// `GET /api/v1/notification-channels`: every channel, in name order.
pub(crate) async fn list(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<Json<Vec<ChannelView>>, ApiError> {
    Ok(Json(channels::list(&state).await?))
}

/// `POST /api/v1/notification-channels` → 201 with the channel.
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

/// `GET /api/v1/notification-channels/{id}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ChannelView>, ApiError> {
    Ok(Json(channels::show(&state, parse_channel_id(&id)?).await?))
}

/// `PUT /api/v1/notification-channels/{id}`: replaces the settings; a
/// secret left out keeps the stored one.
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

/// `DELETE /api/v1/notification-channels/{id}` → 204, with what was
/// queued for it.
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

/// `POST /api/v1/notification-channels/{id}/test` → `{ok, status,
/// response}`: what the receiver said to a test message sent now.
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
