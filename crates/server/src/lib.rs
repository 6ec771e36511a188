//! The restic-manager server: the operator JSON API under `/api/v1`, the
//! agent WebSocket endpoint `/ws/agent`, the in-memory hub of live agent
//! connections, and `/healthz`, `/readyz` and `/metrics` for monitoring.
//!
//! [`app`] builds the router from an [`AppState`]; [`serve`] runs it on a
//! listener until shut down, [`serve_tls`] the same over HTTPS/WSS. The store is any [`rm_store::Store`], so this
//! crate knows nothing about SQL.

pub mod access;
pub mod agent_tokens;
mod agent_ws;
pub mod alerts;
mod api;
pub mod audit;
mod auth;
mod bootstrap;
pub mod browse;
pub mod cluster;
pub mod config;
pub mod downloads;
mod drills;
pub mod enrollment;
mod fd_limit;
pub mod hosts;
mod hub;
pub mod jobs;
mod keyfile;
mod liveness;
mod metrics;
pub mod notify;
mod openapi;
pub mod policies;
pub mod repositories;
pub mod rpc;
pub mod schedules;
pub mod sealing;
pub mod snapshot_downloads;
mod state;
mod storage;
mod throttle;
pub mod tls;
mod tree_cache;
mod ui;
pub mod upgrades;
mod verification;

use std::future::Future;
use std::time::Duration;

use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;

pub use bootstrap::{ensure_first_admin, FirstAdmin};
pub use config::ServerConfig;
pub use fd_limit::{raise_open_files_limit, OpenFilesLimit};
pub use hub::Hub;
pub use keyfile::KEY_FILE;
pub use metrics::{InvalidMetricsToken, MetricsToken};
pub use openapi::api_operations;
pub use state::AppState;
pub use tls::{TlsError, TlsIdentity};

/// The crate's error type, for start-up and serving failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A store call failed.
    #[error(transparent)]
    Store(#[from] rm_store::StoreError),
    /// Creating a secret failed.
    #[error(transparent)]
    Core(#[from] rm_core::CoreError),
    /// Serving HTTP, or reading a file, failed.
    #[error("I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The sealing key file is unusable.
    #[error("the key file {path} is unusable: {problem}")]
    KeyFile {
        /// Where it is.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

/// The whole HTTP surface: API, agent endpoint, health and docs.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(storage::readyz))
        .route("/metrics", get(metrics::render))
        .route("/docs/upgrading", get(docs_upgrading))
        .route("/ws/agent", get(agent_ws::upgrade))
        .route(
            "/agent/v1/downloads/{id}",
            // The body is streamed to the browser, never buffered: no limit.
            axum::routing::post(snapshot_downloads::http::upload)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .nest(
            "/api/v1",
            api::router()
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    access::api_guard,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    api::deadline,
                )),
        )
        .merge(downloads::router())
        .merge(openapi::viewer_router())
        .merge(ui::router(state.clone()))
        .with_state(state)
}

async fn docs_upgrading() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/markdown; charset=utf-8",
        )],
        include_str!("../../../docs/upgrading.md"),
    )
}

/// Serves `state` on `listener` until `shutdown` completes, then closes every
/// agent connection with "going away" (so agents reconnect with jitter) and
/// writes out pending last-seen times.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_on(listener, "http", state, shutdown).await
}

/// [`serve`] over TLS: HTTPS for browsers and the API, WSS for agents.
pub async fn serve_tls(
    listener: TcpListener,
    identity: &TlsIdentity,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let listener = tls::TlsListener::new(listener, identity)?;
    serve_on(listener, "https", state, shutdown).await
}

async fn serve_on<L>(
    listener: L,
    scheme: &str,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    let internal_url = match &state.config().internal_url {
        Some(url) => url.clone(),
        None => format!("{scheme}://{}", listener.local_addr()?),
    };
    let cluster_tasks = cluster::start(&state, internal_url).await?;
    // Settings stored before the current rules (the `env` allow-list) are
    // marked refused before any agent can fetch them.
    match repositories::check_stored(&state).await {
        Ok(0) => {}
        Ok(refused) => tracing::warn!(
            refused,
            "some hosts' stored repository settings break the current rules and are not used; see each host's page"
        ),
        Err(e) => tracing::error!("could not check the stored repository settings: {e}"),
    }
    match repositories::fill_keys(&state).await {
        Ok(0) => {}
        Ok(filled) => tracing::info!(filled, "recorded the identity of older repository settings"),
        Err(e) => tracing::error!("could not record repository identities: {e}"),
    }
    // A change interrupted by a stop (labels stored, policy not yet
    // applied) is finished now; otherwise this changes nothing.
    if let Err(e) = policies::reconcile(&state, None, None, None).await {
        tracing::error!("could not apply the fleet policies: {e}");
    }
    let evaluator = alerts::spawn(&state);
    let flusher = liveness::spawn_flusher(state.clone());
    let probe = storage::spawn_probe(state.clone());
    let notifications = notify::outbox::spawn(state.clone());
    // The first installer or upgrade request should not wait for a hash.
    let hashes = downloads::spawn_warm_up(state.clone());
    let router = app(state.clone());
    // Peer addresses feed the per-address login rate limit.
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    // `tap_io` wraps any listener in the type axum derives
    // `ConnectInfo<SocketAddr>` for, plain TCP and TLS alike.
    axum::serve(listener.tap_io(|_| {}), service)
        .with_graceful_shutdown(shutdown)
        .await?;
    state.stop();
    state
        .hub()
        .close_all(rm_protocol::close_code::GOING_AWAY, "server shutting down");
    state.hub().wait_empty(Duration::from_secs(5)).await;
    cluster::stop(&state).await;
    for task in cluster_tasks {
        task.abort();
    }
    flusher.abort();
    probe.abort();
    if let Some(evaluator) = evaluator {
        evaluator.abort();
    }
    notifications.abort();
    hashes.abort();
    state.flush_last_seen().await;
    state.flush_logs().await;
    Ok(())
}
