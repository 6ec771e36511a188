//! Live job events for Server-Sent Events subscribers: an in-memory fan-out
//! with one bounded broadcast channel per watched job.
//!
//! A channel exists only while someone watches the job, so events of
//! unwatched jobs cost a map lookup. A subscriber that falls behind loses
//! the oldest events (it is told how many) instead of slowing the agent
//! connection that publishes them.

use std::collections::HashMap;
use std::sync::Mutex;

use rm_core::JobId;
use rm_protocol::api::JobView;
use rm_protocol::{JobProgress, LogLine};
use tokio::sync::broadcast;

/// Events buffered per job for slow subscribers.
const BUFFER: usize = 512;

/// One live event of a job.
#[derive(Debug, Clone)]
pub(crate) enum JobEvent {
    /// The job's status or fields changed.
    Status(Box<JobView>),
    /// A progress sample.
    Progress(JobProgress),
    /// New output lines.
    Log(Vec<LogLine>),
    /// Lines up to this `seq` are stored (an agent connected to another
    /// server sent them): watchers read what they have not seen.
    Stored(u64),
    /// The job ended; its final state. No events follow.
    Finished(Box<JobView>),
}

/// The fan-out hub.
#[derive(Default)]
pub(crate) struct JobEvents {
    channels: Mutex<HashMap<JobId, broadcast::Sender<JobEvent>>>,
}

impl JobEvents {
    /// Starts receiving `job`'s events.
    pub(crate) fn subscribe(&self, job: JobId) -> Option<broadcast::Receiver<JobEvent>> {
        let mut channels = self.channels.lock().ok()?;
        let sender = channels
            .entry(job)
            .or_insert_with(|| broadcast::channel(BUFFER).0);
        Some(sender.subscribe())
    }

    /// Publishes to `job`'s watchers, if any. A `Finished` event closes the
    /// job's channel after it is delivered.
    pub(crate) fn publish(&self, job: JobId, event: JobEvent) {
        let Ok(mut channels) = self.channels.lock() else {
            return;
        };
        let finished = matches!(event, JobEvent::Finished(_));
        if let Some(sender) = channels.get(&job) {
            if sender.send(event).is_err() || finished {
                // No receivers left, or nothing more will come.
                channels.remove(&job);
            }
        }
    }

    /// Whether anyone watches `job` here.
    pub(crate) fn is_watched(&self, job: JobId) -> bool {
        self.channels
            .lock()
            .map(|c| c.contains_key(&job))
            .unwrap_or(false)
    }

    /// The jobs watched here.
    pub(crate) fn watched_jobs(&self) -> Vec<JobId> {
        self.channels
            .lock()
            .map(|c| c.keys().copied().collect())
            .unwrap_or_default()
    }

    /// How many jobs are being watched.
    #[cfg(test)]
    pub(crate) fn watched(&self) -> usize {
        self.channels.lock().map(|c| c.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(percent: f64) -> JobEvent {
        JobEvent::Progress(JobProgress {
            percent,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn events_reach_every_subscriber_and_finished_closes_the_channel() {
        let events = JobEvents::default();
        let job = JobId::new();
        let mut a = events.subscribe(job).unwrap();
        let mut b = events.subscribe(job).unwrap();
        events.publish(job, progress(10.0));
        assert!(matches!(a.recv().await, Ok(JobEvent::Progress(_))));
        assert!(matches!(b.recv().await, Ok(JobEvent::Progress(_))));
        assert_eq!(events.watched(), 1);
        events.publish(job, JobEvent::Log(Vec::new()));
        drop(b);
        assert!(matches!(a.recv().await, Ok(JobEvent::Log(_))));
    }

    #[tokio::test]
    async fn a_slow_subscriber_lags_instead_of_blocking() {
        let events = JobEvents::default();
        let job = JobId::new();
        let mut slow = events.subscribe(job).unwrap();
        for i in 0..(BUFFER + 10) {
            events.publish(job, progress(i as f64));
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(10))
        ));
    }

    #[test]
    fn unwatched_jobs_keep_no_channel() {
        let events = JobEvents::default();
        events.publish(JobId::new(), progress(1.0));
        assert_eq!(events.watched(), 0);
    }
}
