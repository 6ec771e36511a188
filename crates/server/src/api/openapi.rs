//! `GET /api/v1/openapi.json`: the API's OpenAPI 3.1 document, generated
//! from the handlers' annotations ([`crate::openapi`]). No login: it
//! describes the routes, it holds nothing secret.

use axum::extract::State;
use axum::Json;

use crate::state::AppState;

/// The OpenAPI document.
///
/// This API's OpenAPI 3.1 document, with this server's URL. Needs no
/// login. `/api/docs` shows it as a page.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "openapi_document",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)),
)]
pub(crate) async fn document(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(crate::openapi::document(&state.config().public_url))
}
