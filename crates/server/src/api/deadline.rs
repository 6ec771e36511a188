//! The API's own time limit: a request that cannot finish (a database
//! locked by another process, a very slow disk, writers queued behind one
//! that waits) is answered `503` within `--request-timeout` instead of
//! hanging its caller. Live event streams are meant to last and are exempt.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::state::AppState;

/// Runs the request, or answers `503 timeout` once the limit passes. The
/// handler's future is dropped then: an open write transaction rolls back.
pub(crate) async fn deadline(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().ends_with("/events") {
        return next.run(request).await;
    }
    let limit = state.config().request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timed_out(limit).into_response(),
    }
}
