//! The agent's own clock for schedules: backups happen on time whether or
//! not the server is reachable.
//!
//! Connected, a due schedule becomes a `schedule.fire` and the server makes
//! and dispatches the job as for any other. Not connected, the agent runs
//! the job itself under its own job id and spools the fire and the job's
//! reports for when the server is back. A fire that comes while a job is
//! still running is skipped, and recorded as skipped. At start-up a fire
//! missed while the agent itself was down is run once, if it was missed by
//! less than the schedule's own period.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rm_core::schedule::{jittered, missed_fire, Clock, CronSchedule};
use rm_core::JobId;
use rm_protocol::{Frame, Schedule, ScheduleFire, ScheduleSet};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::inbound::Run;
use crate::jobs::JobRunner;
use crate::state::StateDir;

/// Longest sleep between looks at the clock, so a wall-clock jump (NTP,
/// suspend) is noticed within this.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// One upcoming fire.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Due {
    /// The schedule.
    pub(crate) schedule: Schedule,
    /// The time the cron names.
    pub(crate) scheduled_at: DateTime<Utc>,
    /// When to act: `scheduled_at` plus jitter.
    pub(crate) fire_at: DateTime<Utc>,
}

/// The next fire of every enabled schedule after `now`. Schedules whose
/// cron no longer parses are left out (and logged).
pub(crate) fn upcoming(
    set: &ScheduleSet,
    now: DateTime<Utc>,
    random: &mut impl FnMut() -> u64,
) -> Vec<Due> {
    set.schedules
        .iter()
        .filter(|s| s.enabled)
        .filter_map(|s| {
            let cron = match CronSchedule::parse(&s.cron, s.timezone.as_deref()) {
                Ok(cron) => cron,
                Err(e) => {
                    tracing::error!(schedule = %s.id, "ignoring a schedule whose cron cannot be used: {e}");
                    return None;
                }
            };
            let scheduled_at = cron.next_after(now)?;
            Some(Due {
                schedule: s.clone(),
                scheduled_at,
                fire_at: jittered(scheduled_at, s.jitter_seconds, random()),
            })
        })
        .collect()
}

/// Brings the pending fires in line with `set`: fires of schedules that
/// are gone, disabled or changed are dropped; schedules without a pending
/// fire get their next one after `now`. A pending fire whose cron time has
/// passed but whose jittered time has not stays as it is.
pub(crate) fn refresh_pending(
    pending: &mut HashMap<String, Due>,
    set: &ScheduleSet,
    now: DateTime<Utc>,
    random: &mut impl FnMut() -> u64,
) {
    pending.retain(|id, due| {
        set.schedules
            .iter()
            .any(|s| s.id == *id && s.enabled && *s == due.schedule)
    });
    for due in upcoming(set, now, random) {
        pending.entry(due.schedule.id.clone()).or_insert(due);
    }
}

/// The fires missed while the agent was down that should run now (one per
/// schedule at most), given each schedule's last recorded fire.
pub(crate) fn catch_ups(
    set: &ScheduleSet,
    last_fires: &BTreeMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
    window: Option<chrono::Duration>,
) -> Vec<(Schedule, DateTime<Utc>)> {
    set.schedules
        .iter()
        .filter(|s| s.enabled)
        .filter_map(|s| {
            let cron = CronSchedule::parse(&s.cron, s.timezone.as_deref()).ok()?;
            let missed = missed_fire(&cron, last_fires.get(&s.id).copied(), now, window)?;
            Some((s.clone(), missed))
        })
        .collect()
}

/// Fires schedules from the agent's clock.
pub(crate) struct Scheduler {
    clock: Arc<dyn Clock>,
    state: StateDir,
    runner: JobRunner,
    outbox: mpsc::Sender<Frame>,
    connected: Arc<AtomicBool>,
    last_fires: BTreeMap<String, DateTime<Utc>>,
    catch_up_window: Option<chrono::Duration>,
}

impl Scheduler {
    /// A scheduler sending to `outbox`, running offline jobs with `runner`.
    pub(crate) fn new(
        clock: Arc<dyn Clock>,
        state: StateDir,
        runner: JobRunner,
        outbox: mpsc::Sender<Frame>,
        connected: Arc<AtomicBool>,
        catch_up_window: Option<chrono::Duration>,
    ) -> Scheduler {
        let last_fires = state.load_fires().unwrap_or_else(|e| {
            tracing::warn!("starting without the record of past fires: {e}");
            BTreeMap::new()
        });
        Scheduler {
            clock,
            state,
            runner,
            outbox,
            connected,
            last_fires,
            catch_up_window,
        }
    }

    /// Runs until `shutdown`, following every new set from `schedules`.
    pub(crate) async fn run(
        mut self,
        mut schedules: watch::Receiver<ScheduleSet>,
        shutdown: CancellationToken,
    ) {
        let set = schedules.borrow_and_update().clone();
        for (schedule, missed) in catch_ups(
            &set,
            &self.last_fires,
            self.clock.now(),
            self.catch_up_window,
        ) {
            tracing::info!(schedule = %schedule.id, %missed, "running a fire missed while the agent was down");
            self.fire(&schedule, missed, true).await;
        }
        let mut random = rand::random::<u64>;
        // The next fire of each schedule, kept across passes: recomputing it
        // from "now" after the cron time but before the jittered fire time
        // would jump to the following occurrence and lose this one.
        let mut pending: HashMap<String, Due> = HashMap::new();
        loop {
            let set = schedules.borrow_and_update().clone();
            let now = self.clock.now();
            refresh_pending(&mut pending, &set, now, &mut random);
            let wait = pending
                .values()
                .map(|d| (d.fire_at - now).to_std().unwrap_or(Duration::ZERO))
                .min()
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = schedules.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
                _ = tokio::time::sleep(wait) => {}
            }
            let now = self.clock.now();
            let mut due: Vec<Due> = pending
                .values()
                .filter(|d| d.fire_at <= now)
                .cloned()
                .collect();
            due.sort_by_key(|d| d.fire_at);
            for due in due {
                pending.remove(&due.schedule.id);
                self.fire(&due.schedule, due.scheduled_at, false).await;
            }
        }
    }

    /// Acts on one fire: tells the server, or runs (or skips) the job
    /// itself when the server is away.
    async fn fire(&mut self, schedule: &Schedule, scheduled_at: DateTime<Utc>, catch_up: bool) {
        if self.runner.held() {
            // The agent is about to re-execute itself: a fire sent now
            // could be lost with the connection. Not recorded as fired, it
            // is caught up by the restarted agent instead.
            tracing::info!(schedule = %schedule.id, "schedule fired while the agent restarts for an upgrade; the new agent catches it up");
            return;
        }
        self.last_fires.insert(schedule.id.clone(), scheduled_at);
        if let Err(e) = self.state.save_fires(&self.last_fires) {
            tracing::warn!("could not record the fire time: {e}");
        }
        let mut fire = ScheduleFire {
            schedule_id: schedule.id.clone(),
            scheduled_at,
            job_id: None,
            skipped: false,
            catch_up,
        };
        if self.connected.load(Ordering::SeqCst) {
            tracing::info!(schedule = %schedule.id, kind = %schedule.kind, "schedule fired");
            self.send(Frame::new(fire)).await;
            return;
        }
        let job_id = JobId::new();
        fire.job_id = Some(job_id.to_string());
        let spool = self.runner.spool();
        if self.runner.busy() {
            tracing::warn!(schedule = %schedule.id, "schedule fired while a job is still running; skipped");
            fire.skipped = true;
            spool.append(job_id, &Frame::new(fire));
            return;
        }
        tracing::info!(schedule = %schedule.id, %job_id, "schedule fired while the server is away; running it here");
        // The fire goes first so the server knows the job before its reports.
        spool.append(job_id, &Frame::new(fire));
        let repository = self
            .state
            .load_config()
            .ok()
            .flatten()
            .and_then(|c| c.repository);
        let answer = self.runner.start(
            Run {
                job_id,
                kind: schedule.kind,
                params: schedule.params.clone(),
                repository: None,
            },
            repository,
        );
        spool.append(job_id, &answer);
    }

    async fn send(&self, frame: Frame) {
        if self.outbox.send(frame).await.is_err() {
            tracing::error!("the agent's outbox is closed; a schedule report was lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rm_protocol::JobKind;

    use super::*;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, h, m, 0)
            .single()
            .unwrap()
    }

    fn schedule(id: &str, cron: &str, enabled: bool, jitter: u32) -> Schedule {
        Schedule {
            id: id.to_owned(),
            kind: JobKind::Backup,
            cron: cron.to_owned(),
            timezone: Some(String::from("UTC")),
            params: serde_json::json!({"paths": ["/srv"]}),
            enabled,
            jitter_seconds: jitter,
        }
    }

    fn set(schedules: Vec<Schedule>) -> ScheduleSet {
        ScheduleSet {
            version: 1,
            schedules,
        }
    }

    #[test]
    fn only_enabled_schedules_come_up_at_their_next_time() {
        let set = set(vec![
            schedule("a", "30 2 * * *", true, 0),
            schedule("b", "0 * * * *", false, 0),
            schedule("c", "not a cron", true, 0),
        ]);
        let due = upcoming(&set, at(1, 0), &mut || 0);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].schedule.id, "a");
        assert_eq!(due[0].scheduled_at, at(2, 30));
        assert_eq!(due[0].fire_at, at(2, 30));
    }

    #[test]
    fn jitter_delays_the_fire_but_not_the_scheduled_time() {
        let set = set(vec![schedule("a", "0 3 * * *", true, 600)]);
        let due = upcoming(&set, at(1, 0), &mut || 299);
        assert_eq!(due[0].scheduled_at, at(3, 0));
        assert!(due[0].fire_at >= at(3, 0) && due[0].fire_at <= at(3, 10));
    }

    #[test]
    fn a_jittered_fire_is_kept_until_it_happens() {
        let set = set(vec![schedule("a", "0 3 * * *", true, 600)]);
        let mut pending = HashMap::new();
        refresh_pending(&mut pending, &set, at(2, 59), &mut || 599);
        let planned = pending["a"].clone();
        assert_eq!(planned.scheduled_at, at(3, 0));
        assert!(planned.fire_at > at(3, 9));
        // Past the cron time, before the jittered one: still today's fire.
        refresh_pending(&mut pending, &set, at(3, 5), &mut || 0);
        assert_eq!(pending["a"], planned);
        // A changed schedule is planned afresh; a removed one is dropped.
        let changed = ScheduleSet {
            version: 2,
            schedules: vec![schedule("a", "0 4 * * *", true, 0)],
        };
        refresh_pending(&mut pending, &changed, at(3, 5), &mut || 0);
        assert_eq!(pending["a"].scheduled_at, at(4, 0));
        refresh_pending(&mut pending, &ScheduleSet::default(), at(3, 5), &mut || 0);
        assert!(pending.is_empty());
    }

    #[test]
    fn a_fire_missed_within_the_period_is_caught_up_once() {
        let set = set(vec![
            schedule("a", "0 2 * * *", true, 0),
            schedule("new", "0 2 * * *", true, 0),
        ]);
        let yesterday = at(2, 0) - chrono::Duration::days(1);
        let last: BTreeMap<String, DateTime<Utc>> = [(String::from("a"), yesterday)].into();
        // Down from before 02:00 until 10:00: today's 02:00 was missed.
        let caught = catch_ups(&set, &last, at(10, 0), None);
        assert_eq!(
            caught.len(),
            1,
            "a schedule that never fired is not caught up"
        );
        assert_eq!(caught[0].0.id, "a");
        assert_eq!(caught[0].1, at(2, 0));
        // Already fired today: nothing to catch up.
        let last: BTreeMap<String, DateTime<Utc>> = [(String::from("a"), at(2, 0))].into();
        assert!(catch_ups(&set, &last, at(10, 0), None).is_empty());
        // With a one-hour window, a fire missed by eight hours is let go.
        let last: BTreeMap<String, DateTime<Utc>> = [(String::from("a"), yesterday)].into();
        assert!(catch_ups(&set, &last, at(10, 0), Some(chrono::Duration::hours(1))).is_empty());
    }

    fn cached_repository(state: &StateDir) {
        state
            .save_config(&rm_protocol::ConfigUpdate {
                repository: Some(rm_protocol::RepositoryConfig {
                    url: "/nonexistent/repo".into(),
                    password: "pw".into(),
                    env: Default::default(),
                    copy_to: None,
                }),
                settings: Default::default(),
            })
            .unwrap();
    }

    fn runner(dir: &tempfile::TempDir, restic: &str) -> JobRunner {
        let (job_tx, _) = mpsc::channel(64);
        let spool = crate::spool::Spool::open(&dir.path().join("state")).unwrap();
        JobRunner::new(restic.into(), dir.path().join("cache"), None, job_tx, spool)
    }

    /// Everything in the spool now, as a fresh connection would send it.
    async fn spooled(runner: &JobRunner) -> Vec<Frame> {
        let mut reader = runner.spool().reader();
        let mut all = Vec::new();
        loop {
            let next = reader.next_frames().await;
            if next.is_empty() {
                return all;
            }
            all.extend(next);
        }
    }

    fn fires(frames: &[Frame]) -> Vec<ScheduleFire> {
        frames
            .iter()
            .filter_map(|f| match &f.message {
                Message::ScheduleFire(fire) => Some(fire.clone()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn offline_fires_run_the_job_here_and_a_busy_agent_skips() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        cached_repository(&state);
        // A restic that is slow to answer keeps the first job running
        // while we fire again.
        let slow = dir.path().join("slow-restic");
        std::fs::write(&slow, "#!/bin/sh\nsleep 5\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
        let runner = runner(&dir, &slow.display().to_string());
        let (tx, mut outbox) = mpsc::channel(64);
        let clock = Arc::new(rm_core::schedule::ManualClock::new(at(2, 0)));
        let connected = Arc::new(AtomicBool::new(false));
        let mut scheduler = Scheduler::new(
            clock,
            state.clone(),
            runner.clone(),
            tx,
            connected.clone(),
            None,
        );
        let backup = schedule("a", "0 2 * * *", true, 0);

        scheduler.fire(&backup, at(2, 0), false).await;
        let frames = spooled(&runner).await;
        let first = fires(&frames).remove(0);
        assert!(first.job_id.is_some() && !first.skipped);
        assert!(
            matches!(&frames[1].message, Message::CommandResult(r) if r.accepted),
            "the fire first, then the agent's own answer: {frames:?}"
        );

        scheduler.fire(&backup, at(2, 5), false).await;
        let all = fires(&spooled(&runner).await);
        assert_eq!(all.len(), 2);
        let second = &all[1];
        assert!(second.skipped, "a fire while a job runs is skipped");
        assert_ne!(second.job_id, first.job_id);

        // Connected, the fire goes to the server as is.
        connected.store(true, Ordering::SeqCst);
        scheduler.fire(&backup, at(2, 10), false).await;
        let Message::ScheduleFire(online) = outbox.recv().await.unwrap().message else {
            panic!("expected a fire");
        };
        assert_eq!(online.job_id, None);
        assert_eq!(state.load_fires().unwrap().get("a"), Some(&at(2, 10)));
    }

    #[tokio::test]
    async fn a_finished_job_whose_end_is_still_spooled_does_not_block_the_next_fire() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        cached_repository(&state);
        let runner = runner(&dir, "/nonexistent/restic");
        let (tx, _outbox) = mpsc::channel(64);
        let clock = Arc::new(rm_core::schedule::ManualClock::new(at(2, 0)));
        let mut scheduler = Scheduler::new(
            clock,
            state,
            runner.clone(),
            tx,
            Arc::new(AtomicBool::new(false)),
            None,
        );
        let backup = schedule("a", "0 2 * * *", true, 0);

        scheduler.fire(&backup, at(2, 0), false).await;
        // The job ends at once (restic is missing); its end waits, unsent.
        while runner.busy() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            runner.spool().jobs().len(),
            1,
            "still listed for the next hello"
        );
        scheduler.fire(&backup, at(2, 5), false).await;
        let fires = fires(&spooled(&runner).await);
        assert_eq!(fires.len(), 2);
        assert!(
            fires.iter().all(|f| !f.skipped),
            "the second fire ran: {fires:?}"
        );
    }

    use rm_protocol::Message;
}
