//! `POST /api/v1/agents/upgrade`: upgrade the agents of a label selection
//! to the server's version (see `crate::upgrades`).

use axum::extract::State;
use axum::Json;
use rm_protocol::api::{AgentUpgradeRequest, AgentUpgradeResult};

use super::{ApiError, ApiErrorBody, ApiJson, Operator};
use crate::audit::{Action, Audit, Client};
use crate::state::AppState;
use crate::upgrades::{self, UpgradeError};

impl From<UpgradeError> for ApiError {
    fn from(e: UpgradeError) -> ApiError {
        match e {
            UpgradeError::Invalid(message) => ApiError::bad_request(message),
            UpgradeError::NotFound(_) => ApiError::not_found(e.to_string()),
            UpgradeError::Store(e) => e.into(),
            UpgradeError::Download(e) => ApiError::internal(e),
        }
    }
}

/// Upgrade agents to the server's version.
///
/// `POST /api/v1/agents/upgrade {selector}` (`{}` selects every host) or
/// `{host_id}`: connected agents older than the server are sent
/// `agent.upgrade` now, offline ones at their next connection.
#[utoipa::path(
    post,
    path = "/agents/upgrade",
    tag = "enrolment",
    operation_id = "upgrade_agents",
    request_body = AgentUpgradeRequest,
    responses(
        (status = 200, description = "The agents sent the upgrade, and the hosts left out with the reason", body = AgentUpgradeResult),
        (status = 404, description = "The host named by `host_id` does not exist", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiJson(req): ApiJson<AgentUpgradeRequest>,
) -> Result<Json<AgentUpgradeResult>, ApiError> {
    let by = Audit::by(&state, &operator, &client).await;
    let selector = req.selector.as_ref().map(|selector| {
        selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    });
    let entry_for = |sent: usize, pending: usize| {
        by.entry(
            Action::AgentUpgrade,
            None,
            serde_json::json!({
                "selector": selector,
                "host_id": req.host_id,
                "version": upgrades::server_version(),
                "sent": sent,
                "pending": pending,
            }),
        )
    };
    Ok(Json(
        upgrades::request(&state, &req, operator.scope.as_ref(), Some(&entry_for)).await?,
    ))
}
