//! Rotating verification (DESIGN §10, docs/verification.md): a `check`
//! with `read_data: "rotate"` reads the next `n/N` subset of a
//! repository's pack data, so `N` runs read all of it. The server keeps one
//! record per repository identity (hosts sharing a repository share it, so
//! it is counted once), fed by the end of every rotating check, and picks
//! the subset of each rotating check it dispatches from it, so the hosts of
//! a shared repository go through one cycle together. The cycle's rules
//! are [`rm_core::verification`]'s; the agent keeps a cursor of its own for
//! the runs it starts while the server is away and reports in the job's
//! statistics which subset it read.

use chrono::{DateTime, Duration, Utc};
use rm_core::verification::{RunOutcome, VerificationCycle, VerificationRun};
use rm_core::{CronSchedule, HostId, JobStatus};
use rm_protocol::api::VerificationView;
use rm_protocol::params::{CheckParams, JobParams, MAX_CYCLE};
use rm_protocol::JobKind;
use rm_store::{Host, Job, ScheduleRecord, StoreError};
use serde_json::Value;

use crate::state::AppState;

/// The rotating run a finished job was, if it was one: its cycle and
/// subset as the agent reports them in the statistics (it may have picked
/// the subset itself), else as its params say.
fn run_of(job: &Job) -> Option<VerificationRun> {
    if job.kind != JobKind::Check.as_str() {
        return None;
    }
    let JobParams::Check(params) = JobParams::parse(JobKind::Check, &job.params).ok()? else {
        return None;
    };
    let params_cycle = params.rotation()?;
    // The agent's numbers are input like any other: out of range, ignored.
    let stat = |name: &str| {
        job.stats
            .get(name)
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| (1..=MAX_CYCLE).contains(v))
    };
    let cycle = stat("cycle").unwrap_or(params_cycle);
    let subset = stat("subset").or(params.subset);
    let outcome = match job.status {
        JobStatus::Succeeded => RunOutcome::Passed,
        JobStatus::Failed => RunOutcome::Failed(
            job.error
                .clone()
                .unwrap_or_else(|| String::from("the check failed; see its log")),
        ),
        _ => return None,
    };
    Some(VerificationRun {
        cycle,
        subset,
        finished_at: job.finished_at?,
        outcome,
    })
}

/// Takes a finished job into its repository's record if it was a rotating
/// check. Called once per job end (the store's conditional end makes a
/// replayed `job.finished` change nothing before it gets here; the record
/// counts a run twice as once anyway). Failures are logged: the job's end
/// is stored whatever happens here.
pub(crate) async fn job_ended(state: &AppState, job: &Job) {
    let Some(run) = run_of(job) else {
        return;
    };
    let key = match state.store().repository_key(job.host_id).await {
        Ok(Some(key)) => key,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(job_id = %job.id, "could not read the repository of a rotating check: {e}");
            return;
        }
    };
    match state.store().record_verification(&key, &run).await {
        Ok(record) => tracing::info!(
            job_id = %job.id,
            subset = ?run.subset,
            cycle = run.cycle,
            passed = run.outcome == RunOutcome::Passed,
            coverage_percent = record.percent(),
            "rotating check recorded"
        ),
        Err(e) => {
            tracing::error!(job_id = %job.id, "could not record the rotating check: {e}")
        }
    }
}

/// Fills in the subset of a rotating check about to be dispatched to
/// `host`, from its repository's record, unless the params name one. On a
/// store error the subset is left out and the agent's cursor decides.
pub(crate) async fn choose_subset(state: &AppState, host: HostId, params: &mut CheckParams) {
    let Some(cycle) = params.rotation() else {
        return;
    };
    if params.subset.is_some() {
        return;
    }
    let record = match state.store().repository_key(host).await {
        Ok(Some(key)) => state.store().verification(&key).await,
        Ok(None) => return,
        Err(e) => Err(e),
    };
    match record {
        Ok(record) => {
            params.subset = Some(record.map_or(1, |r| r.next_subset(cycle)));
        }
        Err(e) => {
            tracing::warn!(%host, "rotating check dispatched without a subset (the agent picks): {e}")
        }
    }
}

/// The verification record of `host`'s repository as the API and the
/// host page show it; `schedules` are the host's (for the cycle's period).
pub(crate) async fn view(
    state: &AppState,
    host: &Host,
    schedules: &[ScheduleRecord],
) -> Result<VerificationView, StoreError> {
    let record = match &host.repository_key {
        Some(key) => state.store().verification(key).await?,
        None => None,
    };
    Ok(describe(
        host.repository_key.clone(),
        record.as_ref(),
        schedules,
        Utc::now(),
    ))
}

/// The view of `record` (of the repository `repository`), its full cycle
/// taken from the shortest enabled rotating check schedule of the same
/// cycle among `schedules`.
pub(crate) fn describe(
    repository: Option<String>,
    record: Option<&VerificationCycle>,
    schedules: &[ScheduleRecord],
    now: DateTime<Utc>,
) -> VerificationView {
    let Some(record) = record else {
        return VerificationView {
            repository,
            cycle: None,
            subsets_done: Vec::new(),
            coverage: 0.0,
            coverage_percent: 0,
            cycle_started_at: None,
            last_error: None,
            failed_subset: None,
            next_subset: None,
            last_run_at: None,
            full_cycle: None,
            summary: String::from(
                "no rotating check has run on this repository yet (a check with read_data \"rotate\" reads all of the data over a cycle of runs)",
            ),
        };
    };
    let full_cycle = match schedule_period(schedules, record.cycle, now)
        .and_then(|period| period.checked_mul(i32::try_from(record.cycle).ok()?))
    {
        Some(period) => format!("every {}", duration_words(period)),
        None => format!("every {}", plural(u64::from(record.cycle), "run")),
    };
    VerificationView {
        repository,
        cycle: Some(record.cycle),
        subsets_done: record.subsets_done.iter().copied().collect(),
        coverage: record.coverage(),
        coverage_percent: record.percent(),
        cycle_started_at: record.cycle_started_at,
        last_error: record.last_error.clone(),
        failed_subset: record.failed_subset,
        next_subset: Some(record.next_subset(record.cycle)),
        last_run_at: record.last_run_at,
        summary: format!(
            "{} % of the data read and verified this cycle, full cycle {full_cycle}",
            record.percent()
        ),
        full_cycle: Some(full_cycle),
    }
}

/// The interval of the most frequent enabled schedule of a rotating check
/// of `cycle` runs.
fn schedule_period(
    schedules: &[ScheduleRecord],
    cycle: u32,
    now: DateTime<Utc>,
) -> Option<Duration> {
    schedules
        .iter()
        .filter(|s| s.enabled && s.kind == JobKind::Check.as_str())
        .filter(|s| {
            matches!(
                JobParams::parse(JobKind::Check, &s.params),
                Ok(JobParams::Check(p)) if p.rotation() == Some(cycle)
            )
        })
        .filter_map(|s| {
            CronSchedule::parse(&s.cron, s.timezone.as_deref())
                .ok()?
                .period_at(now)
        })
        .filter(|p| *p > Duration::zero())
        .min()
}

/// A duration in the largest whole unit that says it exactly (days, hours,
/// else minutes), e.g. `30 days`, `36 hours`.
fn duration_words(d: Duration) -> String {
    let minutes = u64::try_from((d.num_seconds() + 30) / 60).unwrap_or(0);
    if minutes > 0 && minutes % (24 * 60) == 0 {
        plural(minutes / (24 * 60), "day")
    } else if minutes > 0 && minutes % 60 == 0 {
        plural(minutes / 60, "hour")
    } else {
        plural(minutes, "minute")
    }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::TimeZone;
    use rm_core::ScheduleId;
    use serde_json::json;

    use super::*;

    fn schedule(cron: &str, params: Value, enabled: bool) -> ScheduleRecord {
        ScheduleRecord {
            id: ScheduleId::new(),
            host_id: HostId::new(),
            kind: String::from("check"),
            cron: cron.to_owned(),
            timezone: Some(String::from("UTC")),
            params,
            enabled,
            jitter_seconds: 0,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            policy: None,
        }
    }

    fn record(cycle: u32, done: impl IntoIterator<Item = u32>) -> VerificationCycle {
        VerificationCycle {
            subsets_done: done.into_iter().collect::<BTreeSet<u32>>(),
            ..VerificationCycle::new(cycle)
        }
    }

    #[test]
    fn the_host_page_sentence_names_coverage_and_the_full_cycle() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let daily = schedule("0 3 * * *", json!({"read_data": "rotate"}), true);
        let thirty = record(30, 1..=13);
        let view = describe(Some("/srv/r".into()), Some(&thirty), &[daily], now);
        assert_eq!(
            view.summary,
            "43 % of the data read and verified this cycle, full cycle every 30 days"
        );
        assert_eq!(view.coverage_percent, 43);
        assert!((view.coverage - 13.0 / 30.0).abs() < 1e-9);
        assert_eq!(view.next_subset, Some(14));

        // No schedule of that cycle (another cycle, disabled, not rotating):
        // counted in runs.
        let others = [
            schedule(
                "0 3 * * *",
                json!({"read_data": "rotate", "cycle": 7}),
                true,
            ),
            schedule("0 * * * *", json!({"read_data": "rotate"}), false),
            schedule("0 * * * *", json!({}), true),
        ];
        let view = describe(None, Some(&thirty), &others, now);
        assert_eq!(view.full_cycle.as_deref(), Some("every 30 runs"));
        // Hourly checks in a cycle of 3: every 3 hours; the most frequent
        // schedule of the cycle decides.
        let hourly = [
            schedule(
                "0 * * * *",
                json!({"read_data": "rotate", "cycle": 3}),
                true,
            ),
            schedule(
                "0 3 * * *",
                json!({"read_data": "rotate", "cycle": 3}),
                true,
            ),
        ];
        let view = describe(None, Some(&record(3, [1, 2, 3])), &hourly, now);
        assert_eq!(
            view.summary,
            "100 % of the data read and verified this cycle, full cycle every 3 hours"
        );
    }

    #[test]
    fn a_repository_without_a_record_says_so() {
        let view = describe(Some("/srv/r".into()), None, &[], Utc::now());
        assert_eq!(view.cycle, None);
        assert_eq!(view.coverage, 0.0);
        assert!(view.subsets_done.is_empty());
        assert!(view.summary.starts_with("no rotating check has run"));
    }

    #[test]
    fn a_finished_rotating_check_is_a_run_of_the_subset_it_reports() {
        let job = |status: JobStatus, params: Value, stats: Value| Job {
            id: rm_core::JobId::new(),
            host_id: HostId::new(),
            kind: String::from("check"),
            params,
            status,
            trigger: rm_core::JobTrigger::Manual,
            schedule_id: None,
            exit_code: Some(0),
            stats,
            error: Some(String::from("Fatal: repository contains errors")),
            created_at: Utc::now(),
            dispatched_at: None,
            started_at: None,
            finished_at: Some(Utc::now()),
        };
        let rotate = json!({"read_data": "rotate", "cycle": 3});
        let run = run_of(&job(
            JobStatus::Succeeded,
            rotate.clone(),
            json!({"subset": 2, "cycle": 3, "errors": false}),
        ))
        .unwrap();
        assert_eq!((run.cycle, run.subset), (3, Some(2)));
        assert_eq!(run.outcome, RunOutcome::Passed);
        let failed = run_of(&job(JobStatus::Failed, rotate.clone(), Value::Null)).unwrap();
        assert_eq!(failed.subset, None);
        assert!(
            matches!(failed.outcome, RunOutcome::Failed(ref e) if e.contains("contains errors"))
        );
        // The server's pick in the params stands when the stats say nothing.
        let picked = json!({"read_data": "rotate", "cycle": 3, "subset": 3});
        assert_eq!(
            run_of(&job(JobStatus::Failed, picked, Value::Null))
                .unwrap()
                .subset,
            Some(3)
        );
        // Nonsense in the stats is not believed.
        let odd = run_of(&job(
            JobStatus::Succeeded,
            rotate.clone(),
            json!({"subset": 0, "cycle": 99999999}),
        ))
        .unwrap();
        assert_eq!((odd.cycle, odd.subset), (3, None));
        assert!(run_of(&job(JobStatus::Succeeded, json!({}), Value::Null)).is_none());
        assert!(run_of(&job(JobStatus::Cancelled, rotate, Value::Null)).is_none());
    }
}
