//! The repository report's refresh, off the job's critical path: after a
//! job that changed the repository the agent lists its snapshots and
//! measures it in the background, stopping for any job that arrives and
//! running again after it.

use super::*;

/// The repository report's refresh: the full snapshot list and statistics,
/// gathered after a job that changed the repository instead of before its
/// end. At most one runs; a job that starts stops it (it runs again after
/// that job), and a listing taken before a job started is never sent, so
/// it cannot undo what that job reported.
#[derive(Debug, Default)]
pub(super) struct Refresh {
    /// The repository to refresh, while a refresh is due.
    pub(super) due: Option<Repository>,
    /// The repository refreshed last, for the daily refresh; set once the
    /// first refresh was asked for, which also starts the daily timer.
    pub(super) last: Option<Repository>,
    /// The refresh running now: its number and what stops it.
    pub(super) running: Option<(u64, CancellationToken)>,
    /// Numbers refreshes.
    pub(super) runs: u64,
    /// Counts jobs started.
    pub(super) jobs_started: u64,
}

impl JobRunner {
    /// A job starts: a refresh running now stops (and runs again after the
    /// job), and none gathered before it may be sent.
    pub(super) fn yield_refresh(&self) {
        if let Ok(mut refresh) = self.inner.refresh.lock() {
            refresh.jobs_started += 1;
            if let Some((_, stop)) = refresh.running.take() {
                tracing::info!("a job starts: the repository refresh stops and runs after it");
                stop.cancel();
            }
        }
    }

    /// Starts the refresh of `repository` (or of the one still due) unless
    /// a job or a refresh runs; a job's end calls this again.
    pub(super) fn refresh_soon(&self, repository: Option<Repository>) {
        let Ok(mut refresh) = self.inner.refresh.lock() else {
            return;
        };
        if let Some(repository) = repository {
            if refresh.last.is_none() {
                self.refresh_daily();
            }
            refresh.last = Some(repository.clone());
            refresh.due = Some(repository);
        }
        let Some(repository) = refresh.due.clone() else {
            return;
        };
        if refresh.running.is_some() || self.busy() {
            return;
        }
        refresh.runs += 1;
        let run = refresh.runs;
        let stop = CancellationToken::new();
        refresh.running = Some((run, stop.clone()));
        let jobs_started = refresh.jobs_started;
        drop(refresh);
        let runner = self.clone();
        tokio::spawn(async move {
            runner
                .run_refresh(repository, run, jobs_started, stop)
                .await;
        });
    }

    /// Asks for a refresh of the last refreshed repository every
    /// [`REFRESH_EVERY`], for as long as the agent runs.
    pub(super) fn refresh_daily(&self) {
        let runner = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                let last = runner
                    .inner
                    .refresh
                    .lock()
                    .ok()
                    .and_then(|r| r.last.clone());
                runner.refresh_soon(last);
            }
        });
    }

    /// One refresh: lists and measures, then sends both reports as live
    /// frames if no job started meanwhile.
    pub(super) async fn run_refresh(
        &self,
        repository: Repository,
        run: u64,
        jobs_started: u64,
        stop: CancellationToken,
    ) {
        let report = match self.restic().await {
            Ok(restic) => {
                self.repository_report(&restic, &repository, &stop, None)
                    .await
            }
            Err(e) => Err(format!("restic is not usable on this host: {e}")),
        };
        {
            let Ok(mut refresh) = self.inner.refresh.lock() else {
                return;
            };
            if refresh.running.as_ref().is_some_and(|(r, _)| *r == run) {
                refresh.running = None;
            }
            let current = refresh.jobs_started == jobs_started && !stop.is_cancelled();
            match report {
                Ok(messages) if current && !self.busy() => {
                    refresh.due = None;
                    for message in messages {
                        let kind = message.kind().to_owned();
                        if let Err(e) = self.inner.outbox.try_send(Frame::new(message)) {
                            tracing::warn!(%kind, "the refreshed repository report was not sent: {e}");
                        }
                    }
                    tracing::info!("repository report refreshed");
                }
                Ok(_) => tracing::debug!("a job started during the refresh; it runs again after"),
                Err(e) if !current => {
                    tracing::debug!("the refresh stopped for a job ({e}); it runs again after")
                }
                Err(e) => {
                    // Not retried in a loop: the next job that changes the
                    // repository (or a `snapshots` job) tries again.
                    refresh.due = None;
                    tracing::warn!("could not refresh the repository report: {e}");
                }
            }
        }
        // Still due (a job came and went while this ran): again.
        self.refresh_soon(None);
    }
}
