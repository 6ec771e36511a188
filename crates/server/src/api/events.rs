//! `GET /api/v1/events`: a Server-Sent Events stream that says "changed"
//! whenever something about the fleet changed (a host came or went, a job
//! moved, schedules or statistics arrived). Dashboards re-read what they
//! show when they hear it; the event carries no data, so a slow reader that
//! misses some loses nothing. The stream ends when the session or API token
//! it was opened with ends (logout, revocation, password change, deletion).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::Operator;
use crate::state::AppState;

/// Follow the fleet's changes.
///
/// `GET /api/v1/events`.
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    operation_id = "fleet_events",
    responses((status = 200, description = "Server-Sent Events: `changed` (data `{}`) whenever the fleet changed", content_type = "text/event-stream", body = String)),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn fleet(
    State(state): State<AppState>,
    operator: Operator,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = state.fleet_changes();
    // The stream ends with the credential it was opened with.
    let ended = crate::auth::credential_ended(state.clone(), operator);
    let stream = futures_util::stream::unfold(changes, |mut changes| async move {
        match changes.recv().await {
            Ok(()) | Err(RecvError::Lagged(_)) => {
                Some((Ok(Event::default().event("changed").data("{}")), changes))
            }
            Err(RecvError::Closed) => None,
        }
    })
    .take_until(ended);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
