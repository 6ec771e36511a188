//! Stores job log lines in batches. Every connection hands its `log.stream`
//! lines to one writer task, which gathers whatever is waiting (up to
//! [`MAX_BATCH_LINES`]) into a single transaction. Under load that turns
//! thousands of small inserts into a few large ones; when idle a batch is
//! written as soon as it arrives.
//!
//! The queue is bounded: when the database falls behind, connections wait
//! to hand over their lines, which slows the agents' sockets rather than
//! growing memory without limit.

use std::sync::Arc;
use std::time::Duration;

use rm_store::{LogLineRecord, Store};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Most lines written in one transaction.
pub(crate) const MAX_BATCH_LINES: usize = 5000;
/// Messages waiting for the writer.
const QUEUE: usize = 1024;
/// Attempts at a failing batch before its lines are given up (and logged).
const ATTEMPTS: u32 = 3;

enum Request {
    Lines(Vec<LogLineRecord>),
    Flush(oneshot::Sender<()>),
}

/// A handle for giving lines to the writer.
#[derive(Clone)]
pub(crate) struct LogWriter {
    tx: mpsc::Sender<Request>,
}

impl LogWriter {
    /// Starts the writer task over `store`.
    pub(crate) fn spawn(store: Arc<dyn Store>) -> (LogWriter, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_loop(store, rx));
        (LogWriter { tx }, task)
    }

    /// Queues lines, waiting if the writer is behind.
    pub(crate) async fn write(&self, lines: Vec<LogLineRecord>) {
        if lines.is_empty() {
            return;
        }
        if self.tx.send(Request::Lines(lines)).await.is_err() {
            tracing::error!("log writer has stopped; dropping log lines");
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

async fn write_loop(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Request>) {
    let mut batch: Vec<LogLineRecord> = Vec::new();
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        take(first, &mut batch, &mut waiters);
        while batch.len() < MAX_BATCH_LINES {
            match rx.try_recv() {
                Ok(next) => take(next, &mut batch, &mut waiters),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            store_batch(store.as_ref(), &batch).await;
            batch.clear();
        }
        for waiter in waiters.drain(..) {
            let _ = waiter.send(());
        }
    }
}

fn take(request: Request, batch: &mut Vec<LogLineRecord>, waiters: &mut Vec<oneshot::Sender<()>>) {
    match request {
        Request::Lines(mut lines) => batch.append(&mut lines),
        Request::Flush(done) => waiters.push(done),
    }
}

async fn store_batch(store: &dyn Store, batch: &[LogLineRecord]) {
    for attempt in 1..=ATTEMPTS {
        match store.append_logs(batch).await {
            Ok(_) => return,
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(error = %e, lines = batch.len(), attempt, "could not store log lines; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => {
                tracing::error!(error = %e, lines = batch.len(), "could not store log lines; giving up on this batch");
            }
        }
    }
}
