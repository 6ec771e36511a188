//! `GET /metrics`: fleet gauges in the Prometheus text format, so an
//! existing monitoring stack can alert on hosts that drop off.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Renders the gauges. Counting hosts reads the host table; that is cheap at
/// scrape intervals and keeps the numbers exact.
pub(crate) async fn render(State(state): State<AppState>) -> Response {
    let hosts = match state.store().list_hosts().await {
        Ok(hosts) => hosts,
        Err(e) => {
            tracing::error!(error = %e, "metrics: could not list hosts");
            return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response();
        }
    };
    let online = hosts.iter().filter(|h| h.online).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP rm_build_info Version of this server and the protocol it speaks."
    );
    let _ = writeln!(out, "# TYPE rm_build_info gauge");
    let _ = writeln!(
        out,
        "rm_build_info{{version=\"{}\",protocol=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        rm_protocol::CURRENT_PROTOCOL_VERSION
    );
    let _ = writeln!(
        out,
        "# HELP rm_agents_connected Agent WebSocket connections open now."
    );
    let _ = writeln!(out, "# TYPE rm_agents_connected gauge");
    let _ = writeln!(out, "rm_agents_connected {}", state.hub().connected());
    let _ = writeln!(out, "# HELP rm_hosts Enrolled hosts by connection state.");
    let _ = writeln!(out, "# TYPE rm_hosts gauge");
    let _ = writeln!(out, "rm_hosts{{state=\"online\"}} {online}");
    let _ = writeln!(
        out,
        "rm_hosts{{state=\"offline\"}} {}",
        hosts.len() - online
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
