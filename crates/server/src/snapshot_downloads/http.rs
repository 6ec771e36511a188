//! The two HTTP ends of a download: the operator's
//! `GET /api/v1/hosts/{id}/snapshots/{snapshot_id}/download` and the
//! agent's `POST /agent/v1/downloads/{id}` (see the module above).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rm_core::DownloadId;
use rm_protocol::downloads::{
    ArchiveFormat, DownloadFailure, FailureCode, KIND_DIR, KIND_ERROR, KIND_FILE, KIND_HEADER,
    MAX_FAILURE_BYTES, SIZE_HEADER,
};
use rm_protocol::{DownloadStart, Frame};

use super::{content_disposition, file_name, Busy, Relay, Upload};
use crate::api::{ApiError, ApiPath, ApiQuery, Operator};
use crate::audit::{Action, Audit, Client, Target};
use crate::state::AppState;

/// How long the agent has to start the upload (it lists the path first).
const UPLOAD_START: Duration = Duration::from_secs(30);

/// Query of the download endpoint.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DownloadQuery {
    /// The file or folder, absolute (`/` for the whole snapshot).
    path: Option<String>,
    /// How a folder is packed: `tar` (default) or `zip`.
    format: Option<String>,
}

/// Download a file or folder of a snapshot.
///
/// `GET /api/v1/hosts/{id}/snapshots/{snapshot_id}/download?path=P&format=tar|zip`:
/// a file as it is, a folder as a `.tar` (or `.zip`), streamed from the
/// host's agent (`restic dump`) as it is read. Audited as
/// `snapshot.download`.
#[utoipa::path(
    get,
    path = "/hosts/{id}/snapshots/{snapshot_id}/download",
    tag = "hosts",
    operation_id = "snapshot_download",
    params(("id" = String, Path, description = "The host's id (ULID)"), ("snapshot_id" = String, Path, description = "The snapshot's id (8 to 64 hex characters)"), DownloadQuery),
    responses(
        (status = 200, description = "The file's bytes, or the folder as an archive (`Content-Disposition: attachment`)", content_type = "application/octet-stream"),
        (status = 400, description = "A malformed snapshot id, path or format", body = rm_protocol::api::ApiError),
        (status = 404, description = "No such host, snapshot or path", body = rm_protocol::api::ApiError),
        (status = 409, description = "The host is offline", body = rm_protocol::api::ApiError),
        (status = 429, description = "Too many downloads running for the host or the server", body = rm_protocol::api::ApiError),
        (status = 502, description = "The agent could not produce the download", body = rm_protocol::api::ApiError),
        (status = 503, description = "This server relays too many downloads, or is not registered in its cluster yet", body = rm_protocol::api::ApiError),
        (status = 504, description = "The agent did not start the upload in time", body = rm_protocol::api::ApiError),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn download(
    State(state): State<AppState>,
    method: axum::http::Method,
    operator: Operator,
    client: Client,
    ApiPath((id, snapshot)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> Result<Response, ApiError> {
    if method == axum::http::Method::HEAD {
        // Every request runs restic on the host and is audited: a link
        // checker's HEAD must not.
        return Err(ApiError::method_not_allowed(
            "a download is only made for GET (each one runs restic on the host)",
        ));
    }
    let host = crate::api::hosts::existing(&state, &id).await?.id;
    rm_protocol::params::snapshot_id(&snapshot)
        .map_err(|problem| ApiError::bad_request(format!("`snapshot_id` {problem}")))?;
    let path = query
        .path
        .ok_or_else(|| ApiError::bad_request("`path` is required (`/` for the whole snapshot)"))?;
    rm_protocol::params::absolute_path(&path)
        .map_err(|problem| ApiError::bad_request(format!("`path` {problem}")))?;
    let format = match query.format.as_deref() {
        None => ArchiveFormat::Tar,
        Some(raw) => ArchiveFormat::parse(raw)
            .map_err(|problem| ApiError::bad_request(format!("`format` {problem}")))?,
    };
    // Here, or (a cluster) on the server holding the agent, which passes
    // `download.start` on with this server's upload URL.
    let conn = state.hub().get(host);
    let relay_base = match &conn {
        Some(_) => None,
        None if crate::cluster::agent_connected(&state, host).await? => {
            match state.cluster().internal_url() {
                Some(base) if crate::cluster::bus::running(&state) => Some(base.to_owned()),
                _ => {
                    return Err(ApiError::unavailable(format!(
                        "host `{host}`'s agent is connected to another server, which this one cannot reach now"
                    ))
                    .with_retry_after(Duration::from_secs(5)))
                }
            }
        }
        None => {
            return Err(ApiError::conflict(format!(
            "host `{host}` is offline; its agent must be connected to download from its snapshots"
        )))
        }
    };
    let (slot, arrival) = state.snapshot_downloads().begin(host).map_err(|busy| {
        let error = match busy {
            Busy::Host(_) => ApiError::too_many_requests(busy.to_string()),
            Busy::Server => ApiError::unavailable(busy.to_string()),
        };
        error.with_retry_after(Duration::from_secs(10))
    })?;
    let download_id = slot.id().to_string();
    let mut start = DownloadStart {
        upload_url: None,
        download_id: download_id.clone(),
        snapshot_id: snapshot.clone(),
        path: path.clone(),
        format,
    };
    match (conn, relay_base) {
        (Some(conn), _) => conn.send(Frame::new(start)).map_err(|e| {
            ApiError::conflict(format!(
                "host `{host}`'s agent could not be asked for the download: {e}"
            ))
        })?,
        (None, Some(base)) => {
            start.upload_url = Some(format!(
                "{base}{}",
                rm_protocol::downloads::upload_path(&download_id)
            ));
            crate::cluster::bus::send(
                &state,
                crate::cluster::bus::Signal::Download { host, start },
            );
        }
        (None, None) => {
            return Err(ApiError::conflict(format!(
            "host `{host}` is offline; its agent must be connected to download from its snapshots"
        )))
        }
    }
    let upload = match tokio::time::timeout(UPLOAD_START, arrival).await {
        Ok(Ok(upload)) => upload,
        Ok(Err(_)) | Err(_) => {
            return Err(ApiError::gateway_timeout(format!(
                "host `{host}`'s agent did not start sending `{path}` within {} s",
                UPLOAD_START.as_secs()
            )))
        }
    };
    let (is_dir, size, body, done) = match upload {
        Upload::Data {
            is_dir,
            size,
            body,
            done,
        } => (is_dir, size, body, done),
        Upload::Failure(failure) => {
            return Err(match failure.code {
                FailureCode::NotFound => ApiError::not_found(format!(
                    "`{path}` is not in snapshot {snapshot} of host `{host}`: {}",
                    failure.message
                )),
                FailureCode::Failed => ApiError::bad_gateway(format!(
                    "host `{host}`'s agent could not send `{path}`: {}",
                    failure.message
                )),
            })
        }
    };
    let entry = Audit::by(&state, &operator, &client).await.entry(
        Action::SnapshotDownload,
        Some(Target::new("host", host)),
        serde_json::json!({
            "snapshot_id": snapshot,
            "path": path,
            "format": if is_dir { format.as_str() } else { "file" },
        }),
    );
    state.store().record_audit(&entry).await?;
    let name = file_name(&path, &snapshot, is_dir, format.as_str());
    let content_type = if is_dir {
        format.content_type()
    } else {
        "application/octet-stream"
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&content_disposition(&name)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Some(size) = size {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let bytes = state.metrics().download_started();
    let body = Body::from_stream(Relay::new(body, done, slot, bytes));
    Ok((StatusCode::OK, headers, body).into_response())
}

/// `POST /agent/v1/downloads/{id}`: an agent's upload of download `id`,
/// authenticated by its agent token. Answered when the browser got it all
/// (`204`) or went away (`410`, which tells the agent to stop restic).
/// Anything else (unknown, used or expired id, another host's) is `404`.
pub(crate) async fn upload(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    request: Request,
) -> Response {
    let host = match crate::agent_ws::authenticate(&state, request.headers()).await {
        Ok(Some(host)) => host,
        Ok(None) => return StatusCode::UNAUTHORIZED.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not check an agent token");
            return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response();
        }
    };
    let not_found = || (StatusCode::NOT_FOUND, "no such download waiting").into_response();
    let Ok(id) = raw_id.parse::<DownloadId>() else {
        return not_found();
    };
    let Some(handoff) = state.snapshot_downloads().claim(id, host) else {
        tracing::info!(%host, download = %id, "an upload for a download nobody waits for (too late?)");
        return not_found();
    };
    let headers = request.headers();
    let kind = headers
        .get(KIND_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let size = headers
        .get(SIZE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = request.into_body();
    let upload_and_done =
        match kind.as_str() {
            KIND_FILE | KIND_DIR => {
                let (done, finished) = tokio::sync::oneshot::channel();
                let upload = Upload::Data {
                    is_dir: kind == KIND_DIR,
                    size: size.filter(|_| kind == KIND_FILE),
                    body,
                    done,
                };
                (upload, Some(finished))
            }
            KIND_ERROR => {
                let failure =
                    match axum::body::to_bytes(body, MAX_FAILURE_BYTES).await {
                        Ok(bytes) => serde_json::from_slice::<DownloadFailure>(&bytes)
                            .unwrap_or_else(|e| DownloadFailure {
                                code: FailureCode::Failed,
                                message: format!("the agent's error report could not be read: {e}"),
                            }),
                        Err(e) => DownloadFailure {
                            code: FailureCode::Failed,
                            message: format!("the agent's error report could not be read: {e}"),
                        },
                    };
                (Upload::Failure(failure), None)
            }
            other => {
                let failure = DownloadFailure {
                    code: FailureCode::Failed,
                    message: format!(
                        "the agent sent `{KIND_HEADER}: {}`, not `file`, `dir` or `error`",
                        other.chars().take(40).collect::<String>().escape_debug()
                    ),
                };
                drop(body);
                (Upload::Failure(failure), None)
            }
        };
    let (upload, finished) = upload_and_done;
    if handoff.send(upload).is_err() {
        // The browser left between the claim and now.
        return (StatusCode::GONE, "the download was abandoned").into_response();
    }
    match finished {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(finished) => match finished.await {
            Ok(true) => StatusCode::NO_CONTENT.into_response(),
            Ok(false) | Err(_) => {
                tracing::info!(%host, download = %id, "download ended before the browser got all of it");
                (StatusCode::GONE, "the download was abandoned").into_response()
            }
        },
    }
}
