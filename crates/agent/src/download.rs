//! Answering `download.start`: `restic dump` of a file or folder of a
//! snapshot, posted as the body of one HTTP request to the server's
//! upload endpoint for that download (docs/downloads.md).
//!
//! The data goes over HTTP rather than WebSocket frames so that TCP's own
//! flow control carries back-pressure from the browser to restic: the body
//! is read from restic's pipe only as fast as the server takes it, and the
//! server takes it only as fast as the browser reads. Memory stays one
//! chunk per download. When the server ends the upload (the browser went
//! away), reqwest drops the body, which drops the [`Dump`] and kills
//! restic.
//!
//! The upload carries the agent token like the WebSocket does, and goes
//! through the same TLS trust: to this agent's own server, or — in a
//! cluster, when the browser's request is held by another server — to the
//! `upload_url` the message names, taken only with the own server's scheme
//! and exactly this download's upload path
//! ([`ServerUrl::other_upload_url`]).

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use rm_core::{DownloadId, SnapshotId};
use rm_protocol::downloads::{
    ArchiveFormat, DownloadFailure, FailureCode, KIND_DIR, KIND_ERROR, KIND_FILE, KIND_HEADER,
    SIZE_HEADER,
};
use rm_protocol::RepositoryConfig;
use rm_restic::{Archive, Dump, Limits, NodeType, Repository, ResticError};
use tokio::io::AsyncReadExt;

use crate::jobs::JobRunner;
use crate::server_url::ServerUrl;
use crate::state::StateDir;
use crate::tls::Trust;

/// How long listing the path may take before the dump starts (the server
/// waits 30 s for the upload to begin).
const LIST_LIMIT: Duration = Duration::from_secs(25);

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read from restic's pipe per chunk of the upload.
const CHUNK_BYTES: usize = 64 * 1024;

/// Downloads this agent sends at once, whatever the servers ask (each
/// server limits its own; in a cluster they do not add up here).
const AT_ONCE: usize = 4;

/// A `download.start` with its ids parsed ([`crate::inbound`]).
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// The one-time upload id.
    pub(crate) id: DownloadId,
    /// The snapshot.
    pub(crate) snapshot_id: SnapshotId,
    /// An absolute, normalised path inside it.
    pub(crate) path: String,
    /// How a folder is packed.
    pub(crate) format: ArchiveFormat,
    /// Another server's upload URL (a cluster), checked before use.
    pub(crate) upload_url: Option<String>,
}

/// Posts downloads to this agent's server; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Downloader {
    server: ServerUrl,
    state: StateDir,
    auth: HeaderValue,
    client: Result<reqwest::Client, String>,
    runner: JobRunner,
    running: std::sync::Arc<tokio::sync::Semaphore>,
}

/// What the agent sends: the data, or why there is none.
enum Upload {
    Data {
        kind: &'static str,
        size: Option<u64>,
        // Boxed: a running process is much larger than a failure.
        dump: Box<Dump>,
    },
    Failure(DownloadFailure),
}

impl Downloader {
    /// A downloader posting to `server` with `trust`, authenticated by the
    /// agent token in `state` (re-read at each upload, so a rotated token
    /// is used at once; `auth` if it cannot be read).
    pub(crate) fn new(
        server: ServerUrl,
        trust: &Trust,
        state: StateDir,
        auth: HeaderValue,
        runner: JobRunner,
    ) -> Downloader {
        let client = trust.http_client(reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT));
        Downloader {
            server,
            state,
            auth,
            client,
            runner,
            running: std::sync::Arc::new(tokio::sync::Semaphore::new(AT_ONCE)),
        }
    }

    /// Starts answering `request` in the background from `repository`
    /// (or with the reason the host's settings were refused).
    pub(crate) fn start(
        &self,
        request: Request,
        repository: Result<Option<RepositoryConfig>, String>,
    ) {
        let this = self.clone();
        tokio::spawn(async move { this.serve(request, repository).await });
    }

    async fn serve(&self, request: Request, repository: Result<Option<RepositoryConfig>, String>) {
        let client = match &self.client {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(download = %request.id, "cannot upload a download: {e}");
                return;
            }
        };
        let target = match &request.upload_url {
            None => self.server.upload_url(&request.id),
            Some(url) => match self.server.other_upload_url(url, &request.id) {
                Ok(url) => url,
                Err(e) => {
                    tracing::warn!(download = %request.id, "refusing the download's upload URL: {e}");
                    return;
                }
            },
        };
        // Held until the upload ends (restic stopped with it).
        let permit = self.running.clone().try_acquire_owned();
        let prepared = match &permit {
            Ok(_) => self.prepare(&request, repository).await,
            Err(_) => Err(DownloadFailure {
                code: FailureCode::Failed,
                message: format!(
                    "this agent already sends {AT_ONCE} downloads; try again when one ended"
                ),
            }),
        };
        let upload = match prepared {
            Ok(upload) => upload,
            Err(failure) => {
                tracing::info!(download = %request.id, snapshot = %request.snapshot_id, path = %request.path,
                    "download refused: {}", failure.message);
                Upload::Failure(failure)
            }
        };
        let bearer = crate::rotation::current_bearer(&self.state, &self.auth);
        let post = client.post(target).header(AUTHORIZATION, bearer);
        let (post, pid) = match upload {
            Upload::Data { kind, size, dump } => {
                let mut post = post.header(KIND_HEADER, kind);
                if let Some(size) = size {
                    post = post.header(SIZE_HEADER, size.to_string());
                }
                let pid = dump.pid();
                (
                    post.body(reqwest::Body::wrap_stream(chunks(*dump))),
                    Some(pid),
                )
            }
            Upload::Failure(failure) => {
                let body = serde_json::to_vec(&failure).unwrap_or_default();
                (
                    post.header(KIND_HEADER, KIND_ERROR)
                        .header(CONTENT_TYPE, "application/json")
                        .body(body),
                    None,
                )
            }
        };
        tracing::info!(download = %request.id, snapshot = %request.snapshot_id, path = %request.path, restic_pid = ?pid, "uploading a download");
        // However this ends, the body (and with it restic) is dropped here.
        match post.send().await {
            Ok(response) if response.status().is_success() => {
                tracing::info!(download = %request.id, "download delivered");
            }
            Ok(response) => tracing::info!(
                download = %request.id,
                status = %response.status(),
                "the server ended the download (the browser went away?); restic stopped"
            ),
            Err(e) => tracing::info!(
                download = %request.id,
                "the download's upload ended early; restic stopped: {}",
                crate::tls::describe(&e)
            ),
        }
        drop(permit);
    }

    /// Lists the path (file or folder, and a file's size), then starts
    /// `restic dump`.
    async fn prepare(
        &self,
        request: &Request,
        repository: Result<Option<RepositoryConfig>, String>,
    ) -> Result<Upload, DownloadFailure> {
        let failed = |message: String| DownloadFailure {
            code: FailureCode::Failed,
            message,
        };
        let repository = repository
            .map_err(failed)?
            .ok_or_else(|| failed(String::from("this agent has no repository settings yet")))?;
        crate::jobs::check_repository(&repository).map_err(failed)?;
        let restic = self
            .runner
            .restic()
            .await
            .map_err(|e| failed(format!("restic is not usable on this host: {e}")))?;
        let repo = Repository {
            url: repository.url,
            password: repository.password,
            env: repository.env,
        };
        // Reading only: no lock another host's prune would trip over.
        let limits = Limits::new(LIST_LIMIT).without_lock();
        let snapshot = request.snapshot_id.as_str();
        let node = restic
            .node(&repo, snapshot, &request.path, &limits)
            .await
            .map_err(refusal)?;
        let kind = match node.node_type {
            NodeType::File => KIND_FILE,
            NodeType::Dir => KIND_DIR,
            other => {
                return Err(failed(format!(
                    "`{}` is a {other:?} in snapshot {snapshot}; only files and folders can be downloaded",
                    request.path
                )))
            }
        };
        let archive = match request.format {
            ArchiveFormat::Tar => Archive::Tar,
            ArchiveFormat::Zip => Archive::Zip,
        };
        // restic's spelling of the path (no trailing `/`), as listed.
        let dump = restic
            .dump(&repo, snapshot, &node.path, archive, &limits)
            .map_err(refusal)?;
        Ok(Upload::Data {
            kind,
            size: (kind == KIND_FILE).then_some(node.size).flatten(),
            dump: Box::new(dump),
        })
    }
}

/// A restic error as the server's answer: a missing snapshot or path is
/// `not_found`.
fn refusal(error: ResticError) -> DownloadFailure {
    let missing = matches!(error, ResticError::PathNotFound { .. })
        || error.failure_kind() == Some(rm_restic::FailureKind::SnapshotNotFound);
    DownloadFailure {
        code: if missing {
            FailureCode::NotFound
        } else {
            FailureCode::Failed
        },
        message: error.to_string(),
    }
}

/// restic's output as a stream of chunks, read only when the next one is
/// wanted. At the end restic's exit is checked: a failure becomes an error
/// of the stream, so the upload is cut short instead of looking complete.
fn chunks(
    dump: Dump,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(Some(dump), |state| async move {
        let mut dump = state?;
        let mut buf = Vec::with_capacity(CHUNK_BYTES);
        match dump.read_buf(&mut buf).await {
            Ok(0) => match dump.finish().await {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!("restic dump failed mid-way: {e}");
                    Some((Err(std::io::Error::other(e.to_string())), None))
                }
            },
            Ok(_) => Some((Ok(buf), Some(dump))),
            // Dropping the dump here stops restic.
            Err(e) => Some((Err(e), None)),
        }
    })
}
