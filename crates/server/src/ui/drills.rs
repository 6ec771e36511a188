//! Restore drills in the web UI: the rows of the host page's drills
//! section (each drill with its per-file evidence) and the fleet page
//! `/drills` (which hosts had a successful drill within N days). The data
//! is [`crate::drills`]'s, as the API serves it.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rm_core::HostId;
use rm_protocol::drill::{DrillResult, DrillView, VerifiedBy};
use serde::Deserialize;

use super::format;
use super::session::{render, store_error, WebUser};
use crate::drills::{self, DEFAULT_WITHIN_DAYS, MAX_WITHIN_DAYS};
use crate::state::AppState;

/// Drills the host page shows.
const HOST_PAGE_DRILLS: u32 = 5;

/// One sampled file of a drill, as the host page lists it.
pub(crate) struct EvidenceRow {
    pub(crate) path: String,
    pub(crate) size: String,
    pub(crate) sha256: String,
    pub(crate) verified_by: &'static str,
    pub(crate) result: &'static str,
    pub(crate) class: &'static str,
    pub(crate) error: String,
}

/// One drill on the host page.
pub(crate) struct DrillRow {
    pub(crate) job_id: String,
    pub(crate) when: String,
    pub(crate) status: String,
    pub(crate) class: &'static str,
    pub(crate) snapshot: String,
    pub(crate) summary: String,
    pub(crate) rate: String,
    pub(crate) error: String,
    pub(crate) evidence: Vec<EvidenceRow>,
}

fn status_class(status: &str) -> &'static str {
    match status {
        "succeeded" => "ok",
        "failed" => "bad",
        "running" | "dispatched" | "queued" => "warn",
        _ => "idle",
    }
}

fn rate(bytes_per_second: f64) -> String {
    if bytes_per_second > 0.0 {
        // Whole bytes are plenty for a planning figure.
        format!("{}/s", format::bytes(bytes_per_second.round() as u64))
    } else {
        String::from("—")
    }
}

fn row(drill: DrillView, now: DateTime<Utc>) -> DrillRow {
    let job = drill.job;
    let at = job.finished_at.unwrap_or(job.created_at);
    let (snapshot, summary, rate_text, evidence) = match drill.drill {
        Some(stats) => (
            stats.snapshot_id.chars().take(8).collect(),
            format!(
                "{} of {} files verified ({}), {} compared with the live file",
                stats.files_verified,
                stats.files_sampled,
                format::bytes(stats.bytes_verified),
                stats.files_compared_live
            ),
            rate(stats.restore_bytes_per_second),
            stats
                .evidence
                .into_iter()
                .map(|e| EvidenceRow {
                    path: e.path,
                    size: format::bytes(e.size),
                    sha256: e.sha256.unwrap_or_default(),
                    verified_by: match e.verified_by {
                        VerifiedBy::ResticVerify => "restic --verify",
                        VerifiedBy::ResticVerifyAndLive => "restic --verify + live file",
                    },
                    result: match e.result {
                        DrillResult::Ok => "ok",
                        DrillResult::Mismatch => "mismatch",
                        DrillResult::Unreadable => "unreadable",
                    },
                    class: match e.result {
                        DrillResult::Ok => "ok",
                        _ => "bad",
                    },
                    error: e.error.unwrap_or_default(),
                })
                .collect(),
        ),
        None => (
            String::new(),
            String::from("—"),
            String::from("—"),
            Vec::new(),
        ),
    };
    DrillRow {
        when: format::ago(at, now),
        class: status_class(&job.status),
        status: job.status,
        job_id: job.id,
        snapshot,
        summary,
        rate: rate_text,
        error: job.error.unwrap_or_default(),
        evidence,
    }
}

/// The host page's drills, newest first.
pub(crate) async fn host_rows(
    state: &AppState,
    host: HostId,
    now: DateTime<Utc>,
) -> Result<Vec<DrillRow>, rm_store::StoreError> {
    Ok(drills::of_host(state, host, None, HOST_PAGE_DRILLS)
        .await?
        .into_iter()
        .map(|d| row(d, now))
        .collect())
}

/// Query of the fleet page.
#[derive(Debug, Deserialize)]
pub(crate) struct FleetQuery {
    within_days: Option<String>,
}

/// One host on the fleet page.
struct FleetRow {
    host_id: String,
    host_name: String,
    drilled: bool,
    last: String,
    job_id: String,
    files: String,
    rate: String,
}

#[derive(Template)]
#[template(path = "drills.html")]
struct FleetPage {
    user: super::session::Who,
    csrf: String,
    within_days: u32,
    drilled: u64,
    not_drilled: u64,
    rows: Vec<FleetRow>,
}

/// `GET /drills?within_days=N`.
pub(crate) async fn fleet_page(
    State(state): State<AppState>,
    user: WebUser,
    Query(query): Query<FleetQuery>,
) -> Response {
    let within_days = match query.within_days.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_WITHIN_DAYS,
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=MAX_WITHIN_DAYS).contains(&n) => n,
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("`within_days` must be 1 to {MAX_WITHIN_DAYS}"),
                )
                    .into_response()
            }
        },
    };
    let now = Utc::now();
    let view = match drills::fleet(&state, user.operator.scope.as_ref(), within_days, now).await {
        Ok(view) => view,
        Err(e) => return store_error(e),
    };
    render(&FleetPage {
        user: user.username,
        csrf: user.csrf,
        within_days,
        drilled: view.drilled,
        not_drilled: view.not_drilled,
        rows: view
            .hosts
            .into_iter()
            .map(|h| FleetRow {
                drilled: h.drilled,
                last: h
                    .last_success_at
                    .map(|at| format::ago(at, now))
                    .unwrap_or_else(|| String::from("never")),
                job_id: h.last_success_job_id.unwrap_or_default(),
                files: h
                    .files_verified
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| String::from("—")),
                rate: h
                    .restore_bytes_per_second
                    .map_or_else(|| String::from("—"), rate),
                host_id: h.host_id,
                host_name: h.host_name,
            })
            .collect(),
    })
}
