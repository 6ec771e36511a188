//! The alert rules (DESIGN §7), pure: from what the store knows of a host
//! or a job, when a timed condition becomes true and what a job's end
//! fires or resolves. No I/O and no clock of their own — the evaluator
//! passes `now` — so every rule is unit-tested with a chosen time.

use chrono::{DateTime, Duration, Utc};
use rm_core::JobStatus;
use rm_store::{Host, Job, PolicyRecord};

use crate::policies::effective;

/// The kinds of alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    /// No backup saved a snapshot within the host's freshness.
    BackupStale,
    /// A backup, forget, prune or check job failed.
    JobFailed,
    /// The host has been offline longer than its offline threshold.
    HostOffline,
    /// `restic check` found errors in the repository.
    CheckFailed,
    /// A restore drill failed: a sampled file did not restore or verify.
    DrillFailed,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 5] = [
        AlertKind::BackupStale,
        AlertKind::JobFailed,
        AlertKind::HostOffline,
        AlertKind::CheckFailed,
        AlertKind::DrillFailed,
    ];

    /// The wire and stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BackupStale => "backup_stale",
            AlertKind::JobFailed => "job_failed",
            AlertKind::HostOffline => "host_offline",
            AlertKind::CheckFailed => "check_failed",
            AlertKind::DrillFailed => "drill_failed",
        }
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AlertKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AlertKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown alert kind `{s}` (backup_stale, job_failed, host_offline, check_failed or drill_failed)")
            })
    }
}

/// The timed conditions: the two kinds that fire on the server's clock
/// alone, with no event from the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timed {
    /// `backup_stale`.
    Stale,
    /// `host_offline`.
    Offline,
}

impl Timed {
    /// Its alert kind.
    pub fn kind(self) -> AlertKind {
        match self {
            Timed::Stale => AlertKind::BackupStale,
            Timed::Offline => AlertKind::HostOffline,
        }
    }
}

/// What the timed rules need to know of a host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    /// Enrolled (a host that never backed up is stale from here).
    pub enrolled_at: DateTime<Utc>,
    /// Connected now.
    pub online: bool,
    /// Last heard of.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The last backup that saved a snapshot.
    pub last_backup_success_at: Option<DateTime<Utc>>,
    /// Effective freshness, seconds.
    pub freshness_seconds: u64,
    /// Effective offline threshold, seconds.
    pub offline_seconds: u64,
}

impl HostFacts {
    /// The facts of `host`, whose policy (if any) is `policy`.
    pub fn of(host: &Host, policy: Option<&PolicyRecord>) -> HostFacts {
        HostFacts {
            enrolled_at: host.enrolled_at,
            online: host.online,
            last_seen_at: host.last_seen_at,
            last_backup_success_at: host.last_backup_success_at,
            freshness_seconds: effective::freshness(host.freshness_seconds, policy).0,
            offline_seconds: effective::offline_after(host.offline_seconds, policy).0,
        }
    }
}

fn seconds(s: u64) -> Duration {
    Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
}

/// When `condition` becomes true for a host with `facts`, if the facts
/// alone can make it true. `watching_since` is when this server began to
/// watch (its start): what happened while no server ran is unknown, so
/// nothing that depends on it fires before the host had a chance to
/// report (agents reconnect and replay within a minute) — a server back
/// after a day away does not page for every host at once.
pub fn deadline(
    condition: Timed,
    facts: &HostFacts,
    watching_since: DateTime<Utc>,
    grace: Duration,
) -> Option<DateTime<Utc>> {
    let earliest = watching_since + grace;
    match condition {
        Timed::Stale => {
            let from = facts.last_backup_success_at.unwrap_or(facts.enrolled_at);
            Some((from + seconds(facts.freshness_seconds)).max(earliest))
        }
        Timed::Offline => {
            if facts.online {
                return None;
            }
            let since = facts
                .last_seen_at
                .unwrap_or(facts.enrolled_at)
                .max(watching_since);
            Some(since + seconds(facts.offline_seconds))
        }
    }
}

/// Whether a firing `condition` has ended at `now`, and why (for the
/// resolution): its plain deadline (without any grace) is gone or later
/// than `now`.
pub fn ended(condition: Timed, facts: &HostFacts, now: DateTime<Utc>) -> Option<&'static str> {
    let plain = deadline(condition, facts, DateTime::<Utc>::MIN_UTC, Duration::zero());
    match (condition, plain) {
        (_, Some(at)) if at <= now => None,
        (Timed::Stale, _) if facts.last_backup_success_at.is_some() => Some("a backup succeeded"),
        (Timed::Stale, _) => Some("its freshness was raised"),
        (Timed::Offline, None) => Some("the host is back online"),
        (Timed::Offline, Some(_)) => Some("its offline threshold was raised"),
    }
}

/// Whether `condition` holds at `now`.
pub fn holds(
    condition: Timed,
    facts: &HostFacts,
    now: DateTime<Utc>,
    watching_since: DateTime<Utc>,
    grace: Duration,
) -> bool {
    deadline(condition, facts, watching_since, grace).is_some_and(|at| at <= now)
}

/// The message of a firing timed alert.
pub fn timed_message(condition: Timed, facts: &HostFacts, now: DateTime<Utc>) -> String {
    match condition {
        Timed::Stale => match facts.last_backup_success_at {
            Some(at) => format!(
                "no successful backup for {} (the last one finished {}; freshness {})",
                span(now - at),
                at.format("%Y-%m-%d %H:%M UTC"),
                span(seconds(facts.freshness_seconds))
            ),
            None => format!(
                "never backed up successfully ({} since enrolment; freshness {})",
                span(now - facts.enrolled_at),
                span(seconds(facts.freshness_seconds))
            ),
        },
        Timed::Offline => match facts.last_seen_at {
            Some(since) => format!(
                "offline for {} (last seen {})",
                span(now - since),
                since.format("%Y-%m-%d %H:%M UTC")
            ),
            None => format!(
                "its agent never connected ({} since enrolment on {})",
                span(now - facts.enrolled_at),
                facts.enrolled_at.format("%Y-%m-%d %H:%M UTC")
            ),
        },
    }
}

/// What a job's end does to the alerts of its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobVerdict {
    /// Alerts to fire: (kind, subject, message).
    pub fire: Vec<(AlertKind, String, String)>,
    /// Alerts to resolve: (kind, subject).
    pub resolve: Vec<(AlertKind, String)>,
}

/// Job kinds whose failure fires `job_failed`.
const WATCHED_KINDS: [&str; 4] = ["backup", "forget", "prune", "check"];

/// The `job_failed` subject of a job: its kind and its schedule (or
/// `manual`), so a failing nightly backup and a failed manual run are
/// separate alerts, each resolved by the next success of its own.
pub fn job_subject(job: &Job) -> String {
    match job.schedule_id {
        Some(schedule) => format!("{}:{schedule}", job.kind),
        None => format!("{}:manual", job.kind),
    }
}

/// What `job`'s end fires and resolves. A cancelled job changes nothing;
/// a partial backup saved a snapshot and counts as a success.
pub fn job_verdict(job: &Job) -> JobVerdict {
    let mut verdict = JobVerdict {
        fire: Vec::new(),
        resolve: Vec::new(),
    };
    if job.kind == "drill" {
        drill_verdict(job, &mut verdict);
        return verdict;
    }
    if !WATCHED_KINDS.contains(&job.kind.as_str()) {
        return verdict;
    }
    let subject = job_subject(job);
    let found_errors = job.kind == "check" && job.stats.get("errors") == Some(&true.into());
    match job.status {
        JobStatus::Succeeded | JobStatus::Partial => {
            // A job started by hand that failed is answered by any later
            // success of its kind (else nothing would ever resolve it on a
            // host whose schedules work).
            let manual = format!("{}:manual", job.kind);
            if subject != manual {
                verdict.resolve.push((AlertKind::JobFailed, manual));
            }
            verdict.resolve.push((AlertKind::JobFailed, subject));
            if job.kind == "check" {
                verdict
                    .resolve
                    .push((AlertKind::CheckFailed, String::new()));
            }
        }
        JobStatus::Failed if found_errors => {
            // A rotating check names the part it read: that subset is
            // read again by the next run until it passes.
            let part = job
                .stats
                .get("read_data_subset")
                .and_then(|s| s.as_str())
                .map(|s| format!(" reading subset {s} of the data"))
                .unwrap_or_default();
            let message = format!(
                "restic check found errors in the repository{part} ({})",
                job.error.as_deref().unwrap_or("see the job's log")
            );
            verdict
                .fire
                .push((AlertKind::CheckFailed, String::new(), message));
        }
        JobStatus::Failed => {
            let what = match job.schedule_id {
                Some(_) => format!("the scheduled {} failed", job.kind),
                None => format!("a {} started by hand failed", job.kind),
            };
            let message = match &job.error {
                Some(error) => format!("{what}: {error}"),
                None => what,
            };
            verdict.fire.push((AlertKind::JobFailed, subject, message));
        }
        JobStatus::Queued
        | JobStatus::Dispatched
        | JobStatus::Running
        | JobStatus::Cancelled
        | JobStatus::Skipped => {}
    }
    verdict
}

/// A drill that failed — a file that did not restore or verify, or no
/// restore at all — fires `drill_failed` (one per host: the last drill is
/// what says whether restores work); a successful drill resolves it. A
/// cancelled drill proves nothing either way and changes nothing.
fn drill_verdict(job: &Job, verdict: &mut JobVerdict) {
    match job.status {
        JobStatus::Succeeded => verdict
            .resolve
            .push((AlertKind::DrillFailed, String::new())),
        JobStatus::Failed | JobStatus::Partial => {
            let what = match job.schedule_id {
                Some(_) => "a scheduled restore drill failed",
                None => "a restore drill started by hand failed",
            };
            let message = match &job.error {
                Some(error) => format!("{what}: {error}"),
                None => format!("{what} (see job {})", job.id),
            };
            verdict
                .fire
                .push((AlertKind::DrillFailed, String::new(), message));
        }
        JobStatus::Queued
        | JobStatus::Dispatched
        | JobStatus::Running
        | JobStatus::Cancelled
        | JobStatus::Skipped => {}
    }
}

/// A duration for a person: `3 d 4 h`, `26 h`, `5 min`, `40 s`.
pub fn span(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    if s >= 3 * 86400 {
        format!("{} d {} h", s / 86400, (s % 86400) / 3600)
    } else if s >= 3600 {
        let (h, m) = (s / 3600, (s % 3600) / 60);
        if m == 0 {
            format!("{h} h")
        } else {
            format!("{h} h {m} min")
        }
    } else if s >= 60 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rm_core::{schedule::Clock, HostId, JobId, JobTrigger, ScheduleId};

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, h, m, 0)
            .single()
            .unwrap_or_default()
    }

    fn facts() -> HostFacts {
        HostFacts {
            enrolled_at: at(0, 0),
            online: true,
            last_seen_at: Some(at(1, 0)),
            last_backup_success_at: None,
            freshness_seconds: 3600,
            offline_seconds: 600,
        }
    }

    const NO_GRACE: Duration = Duration::zero();

    #[test]
    fn a_host_that_never_backed_up_is_stale_one_freshness_after_enrolment() {
        let f = facts();
        assert_eq!(
            deadline(Timed::Stale, &f, at(0, 0), NO_GRACE),
            Some(at(1, 0))
        );
        assert!(!holds(Timed::Stale, &f, at(0, 59), at(0, 0), NO_GRACE));
        assert!(holds(Timed::Stale, &f, at(1, 0), at(0, 0), NO_GRACE));
        assert!(timed_message(Timed::Stale, &f, at(2, 0)).starts_with("never backed up"));
    }

    #[test]
    fn a_successful_backup_moves_the_stale_deadline() {
        let mut f = facts();
        f.last_backup_success_at = Some(at(5, 30));
        assert_eq!(
            deadline(Timed::Stale, &f, at(0, 0), NO_GRACE),
            Some(at(6, 30))
        );
        let message = timed_message(Timed::Stale, &f, at(8, 0));
        assert!(
            message.contains("no successful backup for 2 h 30 min"),
            "{message}"
        );
    }

    #[test]
    fn offline_counts_from_the_last_contact_and_never_fires_while_online() {
        let mut f = facts();
        assert_eq!(deadline(Timed::Offline, &f, at(0, 0), NO_GRACE), None);
        f.online = false;
        assert_eq!(
            deadline(Timed::Offline, &f, at(0, 0), NO_GRACE),
            Some(at(1, 10))
        );
        assert!(holds(Timed::Offline, &f, at(1, 10), at(0, 0), NO_GRACE));
    }

    #[test]
    fn a_server_that_was_away_gives_hosts_time_to_report_before_paging() {
        let mut f = facts();
        f.online = false;
        // The server starts at 9:00 after a night away: every host looks
        // offline since 1:00 and stale since 1:00.
        let start = at(9, 0);
        let grace = Duration::seconds(90);
        assert_eq!(deadline(Timed::Offline, &f, start, grace), Some(at(9, 10)));
        assert_eq!(
            deadline(Timed::Stale, &f, start, grace),
            Some(start + grace)
        );
    }

    #[test]
    fn thresholds_follow_the_host_then_its_policy() {
        use rm_core::Labels;
        let clock = rm_core::schedule::SystemClock;
        let now = clock.now();
        let host = Host {
            id: HostId::new(),
            name: String::from("web-01"),
            hostname: String::from("web-01"),
            enrolled_at: now,
            last_seen_at: None,
            online: false,
            agent_version: None,
            restic_version: None,
            restic_error: None,
            protocol_version: None,
            os: None,
            arch: None,
            last_backup_at: None,
            last_backup_status: None,
            last_backup_success_at: None,
            repo_size_bytes: None,
            snapshot_count: None,
            has_repository: false,
            repository_refused: None,
            schedule_version: 0,
            schedule_applied_version: None,
            token_rotated_at: None,
            token_rotation_pending: false,
            agent_revoked_at: None,
            hooks: Vec::new(),
            hooks_refused: Vec::new(),
            labels: Labels::default(),
            freshness_seconds: None,
            offline_seconds: Some(120),
            policy_id: None,
            repository_policy_id: None,
            repository_key: None,
            repository_shared_with: 0,
            has_schedules: false,
            platform: None,
            upgrade: Default::default(),
        };
        let f = HostFacts::of(&host, None);
        assert_eq!(f.freshness_seconds, effective::DEFAULT_FRESHNESS_SECONDS);
        assert_eq!(f.offline_seconds, 120);
    }

    fn job(kind: &str, status: JobStatus, schedule: Option<ScheduleId>) -> Job {
        Job {
            id: JobId::new(),
            host_id: HostId::new(),
            kind: kind.to_owned(),
            params: serde_json::json!({}),
            status,
            trigger: if schedule.is_some() {
                JobTrigger::Schedule
            } else {
                JobTrigger::Manual
            },
            schedule_id: schedule,
            exit_code: None,
            stats: serde_json::json!({}),
            error: Some(String::from("Fatal: unable to open config file")),
            created_at: at(0, 0),
            dispatched_at: None,
            started_at: None,
            finished_at: Some(at(0, 1)),
        }
    }

    #[test]
    fn a_failed_drill_fires_drill_failed_and_a_passing_one_resolves_it() {
        let failed = job("drill", JobStatus::Failed, Some(ScheduleId::new()));
        let v = job_verdict(&failed);
        assert_eq!(v.fire.len(), 1, "{v:?}");
        assert_eq!(v.fire[0].0, AlertKind::DrillFailed);
        assert!(
            v.fire[0]
                .2
                .starts_with("a scheduled restore drill failed: "),
            "{v:?}"
        );
        assert!(v.resolve.is_empty());
        let passed = job_verdict(&job("drill", JobStatus::Succeeded, None));
        assert!(passed.fire.is_empty());
        assert_eq!(passed.resolve, [(AlertKind::DrillFailed, String::new())]);
        let cancelled = job_verdict(&job("drill", JobStatus::Cancelled, None));
        assert!(cancelled.fire.is_empty() && cancelled.resolve.is_empty());
        assert_eq!(
            "drill_failed".parse::<AlertKind>(),
            Ok(AlertKind::DrillFailed)
        );
    }

    #[test]
    fn a_failed_scheduled_backup_fires_job_failed_for_its_schedule() {
        let schedule = ScheduleId::new();
        let v = job_verdict(&job("backup", JobStatus::Failed, Some(schedule)));
        assert_eq!(v.fire.len(), 1);
        let (kind, subject, message) = &v.fire[0];
        assert_eq!(*kind, AlertKind::JobFailed);
        assert_eq!(subject, &format!("backup:{schedule}"));
        assert!(message.contains("unable to open config file"), "{message}");
        assert!(v.resolve.is_empty());
    }

    #[test]
    fn the_next_success_of_that_kind_and_schedule_resolves_it() {
        let schedule = ScheduleId::new();
        let v = job_verdict(&job("backup", JobStatus::Partial, Some(schedule)));
        assert_eq!(
            v.resolve,
            [
                (AlertKind::JobFailed, String::from("backup:manual")),
                (AlertKind::JobFailed, format!("backup:{schedule}"))
            ],
            "a scheduled success also answers a failed run by hand"
        );
        let v = job_verdict(&job("backup", JobStatus::Succeeded, None));
        assert_eq!(
            v.resolve,
            [(AlertKind::JobFailed, String::from("backup:manual"))]
        );
    }

    #[test]
    fn a_check_that_finds_errors_fires_check_failed_and_a_clean_one_resolves_it() {
        let mut corrupt = job("check", JobStatus::Failed, None);
        corrupt.stats = serde_json::json!({"errors": true});
        let v = job_verdict(&corrupt);
        assert_eq!(v.fire.len(), 1);
        assert_eq!(v.fire[0].0, AlertKind::CheckFailed);
        let clean = job("check", JobStatus::Succeeded, None);
        assert!(job_verdict(&clean)
            .resolve
            .contains(&(AlertKind::CheckFailed, String::new())));
        // A check that could not run (a lock, a network error) is a failed
        // job, not a damaged repository.
        let v = job_verdict(&job("check", JobStatus::Failed, None));
        assert_eq!(v.fire[0].0, AlertKind::JobFailed);
        // A rotating check's message names the subset that failed.
        corrupt.stats = serde_json::json!({"errors": true, "read_data_subset": "2/3"});
        let v = job_verdict(&corrupt);
        assert_eq!(v.fire[0].0, AlertKind::CheckFailed);
        assert!(
            v.fire[0].2.contains("reading subset 2/3 of the data"),
            "{v:?}"
        );
    }

    #[test]
    fn cancelled_jobs_and_other_kinds_change_nothing() {
        let none = JobVerdict {
            fire: Vec::new(),
            resolve: Vec::new(),
        };
        assert_eq!(
            job_verdict(&job("backup", JobStatus::Cancelled, None)),
            none
        );
        assert_eq!(job_verdict(&job("restore", JobStatus::Failed, None)), none);
        assert_eq!(job_verdict(&job("unlock", JobStatus::Failed, None)), none);
    }

    #[test]
    fn kinds_round_trip_and_unknown_ones_are_named() {
        for kind in AlertKind::ALL {
            assert_eq!(kind.as_str().parse::<AlertKind>(), Ok(kind));
        }
        let err = "stale".parse::<AlertKind>().unwrap_err();
        assert!(err.contains("`stale`"), "{err}");
    }

    #[test]
    fn spans_read_well() {
        assert_eq!(span(Duration::seconds(40)), "40 s");
        assert_eq!(span(Duration::seconds(300)), "5 min");
        assert_eq!(span(Duration::seconds(26 * 3600)), "26 h");
        assert_eq!(span(Duration::seconds(3 * 86400 + 4 * 3600)), "3 d 4 h");
    }
}
