//! Stores job log lines in batches. Every connection hands its `log.stream`
//! lines to one writer task, which gathers whatever is waiting (up to
//! [`MAX_BATCH_LINES`]) into a single transaction. Under load that turns
//! thousands of small inserts into a few large ones; when idle a batch is
//! written as soon as it arrives.
//!
//! The queue is bounded: when the database falls behind, connections wait
//! to hand over their lines, which slows the agents' sockets rather than
//! growing memory without limit.
//!
//! Lines may come with a [`Stored`] callback, called once their batch is
//! committed (or given up): that is when the server may tell the agent to
//! drop them from its spool.

use std::sync::Arc;
use std::time::Duration;

use rm_store::prelude::*;
use rm_store::LogLineRecord;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::storage::StorageHealth;

/// Most lines written in one transaction.
pub(crate) const MAX_BATCH_LINES: usize = 5000;
/// Messages waiting for the writer.
const QUEUE: usize = 1024;
/// Attempts at a failing batch before its lines are given up (and logged).
const ATTEMPTS: u32 = 3;

/// Told whether lines were stored (`true`) or given up after retries.
pub(crate) type Stored = Box<dyn FnOnce(bool) + Send>;

enum Request {
    Lines(Vec<LogLineRecord>, Option<Stored>),
    Flush(oneshot::Sender<()>),
}

/// A handle for giving lines to the writer.
#[derive(Clone)]
pub(crate) struct LogWriter {
    tx: mpsc::Sender<Request>,
}

impl LogWriter {
    /// Starts the writer task over `store`.
    pub(crate) fn spawn(
        store: Arc<dyn Store>,
        health: Arc<StorageHealth>,
    ) -> (LogWriter, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_loop(store, health, rx));
        (LogWriter { tx }, task)
    }

    /// Queues lines, waiting if the writer is behind; `then` hears how
    /// their batch went.
    pub(crate) async fn write(&self, lines: Vec<LogLineRecord>, then: Option<Stored>) {
        if lines.is_empty() {
            if let Some(then) = then {
                then(true);
            }
            return;
        }
        if let Err(mpsc::error::SendError(request)) =
            self.tx.send(Request::Lines(lines, then)).await
        {
            tracing::error!("log writer has stopped; dropping log lines");
            if let Request::Lines(_, Some(then)) = request {
                then(false);
            }
        }
    }

    /// Resolves once every line queued before this call is stored.
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Request::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_loop(
    store: Arc<dyn Store>,
    health: Arc<StorageHealth>,
    mut rx: mpsc::Receiver<Request>,
) {
    let mut batch = Batch::default();
    while let Some(first) = rx.recv().await {
        batch.take(first);
        while batch.lines.len() < MAX_BATCH_LINES {
            match rx.try_recv() {
                Ok(next) => batch.take(next),
                Err(_) => break,
            }
        }
        let stored =
            batch.lines.is_empty() || store_batch(store.as_ref(), &health, &batch.lines).await;
        batch.lines.clear();
        for then in batch.callbacks.drain(..) {
            then(stored);
        }
        for waiter in batch.waiters.drain(..) {
            let _ = waiter.send(());
        }
    }
}

/// What one transaction gathers.
#[derive(Default)]
struct Batch {
    lines: Vec<LogLineRecord>,
    callbacks: Vec<Stored>,
    waiters: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn take(&mut self, request: Request) {
        match request {
            Request::Lines(mut lines, then) => {
                self.lines.append(&mut lines);
                self.callbacks.extend(then);
            }
            Request::Flush(done) => self.waiters.push(done),
        }
    }
}

/// Stores a batch, retrying; returns whether it was stored.
async fn store_batch(store: &dyn Store, health: &StorageHealth, batch: &[LogLineRecord]) -> bool {
    for attempt in 1..=ATTEMPTS {
        match store.append_logs(batch).await {
            Ok(_) => {
                health.succeeded();
                return true;
            }
            Err(e) if attempt < ATTEMPTS && e.fault().is_none() => {
                tracing::warn!(error = %e, lines = batch.len(), attempt, "could not store log lines; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => {
                // A storage fault will not pass in a second: the agents'
                // connections close instead and they resend the lines.
                health.failed(
                    "storing job log lines (agents resend what was not acknowledged)",
                    &e,
                );
                break;
            }
        }
    }
    false
}
