//! The API's one error type and its JSON form `{"error": {"code", "message"}}`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rm_protocol::api::{ApiError as ApiErrorBody, ApiErrorDetail};
use rm_store::StoreError;
use serde::de::DeserializeOwned;

/// An HTTP error with a stable code and a message naming what was wrong.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for `Retry-After` (429 and 503).
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds `Retry-After`, in whole seconds rounded up.
    pub(crate) fn with_retry_after(mut self, wait: std::time::Duration) -> ApiError {
        self.retry_after = Some((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1));
        self
    }

    /// 503: the server cannot decide now; try again later.
    pub(crate) fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 400: the request is wrong; the message says which field and why.
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 with a message that does not say which part failed.
    pub(crate) fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: authenticated, but the request lacks what protects it.
    pub(crate) fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 413: the request body is over the API's limit.
    pub(crate) fn payload_too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body is larger than the limit of {} bytes",
                super::MAX_BODY_BYTES
            ),
        )
    }

    /// 429.
    pub(crate) fn too_many_requests(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
    }

    /// 405: the path exists, the method does not.
    pub(crate) fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 404.
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the request conflicts with the current state.
    pub(crate) fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 502: an agent answered with an error, or not properly.
    pub(crate) fn bad_gateway(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, "agent_error", message)
    }

    /// 504: an agent did not answer in time.
    pub(crate) fn gateway_timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "agent_timeout", message)
    }

    /// The HTTP status it answers with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// What was wrong, as the client sees it.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// 503: the database cannot be written now (full disk, read-only file
    /// system, I/O error, a lock held elsewhere). Nothing was changed; the
    /// message says why, so whoever sent the request knows it did not
    /// happen and can try again once the operator fixed it.
    pub(crate) fn storage_unavailable(e: &StoreError) -> ApiError {
        tracing::warn!(error = %e, "API request refused: the store cannot write");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            format!("{e}; nothing was changed, try again once it is fixed"),
        )
    }

    /// 503: the request did not finish within the server's request
    /// timeout. Whatever it had not committed was rolled back; what it had
    /// may stand, so callers check before repeating it.
    pub(crate) fn timed_out(limit: std::time::Duration) -> ApiError {
        tracing::warn!(limit_seconds = limit.as_secs(), "API request timed out");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the server did not finish this request within {} s (its database may be \
                 locked by another process or its disk very slow); check whether it took \
                 effect before repeating it",
                limit.as_secs()
            ),
        )
    }

    /// 500; the detail goes to the log, not to the client.
    pub(crate) fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle this request; see the server log",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Conflict(what) => ApiError::conflict(what),
            e @ StoreError::Stale(_) => ApiError::conflict(format!("{e}; try again")),
            e @ StoreError::Unavailable { .. } => ApiError::storage_unavailable(&e),
            other => ApiError::internal(other),
        }
    }
}

impl From<rm_core::CoreError> for ApiError {
    fn from(e: rm_core::CoreError) -> ApiError {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody {
            error: ApiErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// `Json<T>` whose rejection is an [`ApiError`] naming the bad field.
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => ApiError::bad_request(e.body_text()),
                JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(e.body_text()),
                JsonRejection::MissingJsonContentType(e) => ApiError::bad_request(e.body_text()),
                JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::payload_too_large()
                }
                JsonRejection::BytesRejection(e) => {
                    ApiError::new(e.status(), "bad_request", e.body_text())
                }
                other => ApiError::bad_request(other.body_text()),
            }),
        }
    }
}

/// `Query<T>` whose rejection is an [`ApiError`] naming the bad parameter:
/// `query parameter `limit`: invalid digit found in string`.
pub(crate) struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

/// Deserializes a query string, naming the parameter serde complained
/// about.
pub(crate) fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let deserializer =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            // A missing or unknown parameter: serde's message names it.
            ApiError::bad_request(format!("query string: {inner}"))
        } else {
            ApiError::bad_request(format!("query parameter `{path}`: {inner}"))
        }
    })
}

/// `Path<T>` whose rejection is an [`ApiError`] (a path segment that is not
/// valid UTF-8 or not of the expected shape), not axum's plain text.
pub(crate) struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::bad_request(format!(
                "path: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// Parses the id of `what` (`a host`, `an alert`, …) from a path segment;
/// the error names the segment and what was expected.
pub(crate) fn parse_id<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "`{raw}` is not {what} id (expected a 26-character ULID)"
        ))
    })
}
