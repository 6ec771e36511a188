//! The SQLite write transaction: `BEGIN IMMEDIATE` on a pooled connection
//! while holding the writer's turn, and retiring a connection whose
//! transaction did not end cleanly.

// Every SQL text built at run time here is made of this crate's constant
// column lists, table names and `?` placeholder counts; values are always
// bound, never formatted in, so each such text is asserted safe.
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use tokio::sync::OwnedMutexGuard;

use crate::read_only_handles::ReadOnlyOpens;

/// The statement that opens every write transaction: takes the writer lock
/// immediately, so a transaction never has to upgrade from reading.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// A write transaction that holds the writer's turn until it ends.
///
/// It runs `BEGIN IMMEDIATE`, `COMMIT` and `ROLLBACK` itself on a pooled
/// connection instead of using sqlx's `Transaction`, because sqlx counts
/// transaction depth on its own and that count goes wrong when SQLite ends
/// a transaction by itself: on a full disk or an I/O error SQLite rolls
/// back, sqlx's later `ROLLBACK` then fails ("no transaction is active"),
/// its depth stays at 1, and the connection goes back to the pool unable
/// to begin another transaction ("attempted to call begin_with at non-zero
/// transaction depth") until the process restarts. Here a transaction that
/// does not end cleanly, by `COMMIT` or `ROLLBACK` succeeding, never goes
/// back to the pool: its connection is closed (SQLite rolls back whatever
/// was left open) and the pool opens a fresh one.
pub(crate) struct WriteTx {
    /// `None` only once `Drop` has handed it off.
    conn: Option<PoolConnection<sqlx::Sqlite>>,
    /// `BEGIN` succeeded and neither `COMMIT` nor `ROLLBACK` has.
    open: bool,
    /// An in-memory database lives in its one connection, which must not
    /// be closed; a failed transaction there is rolled back instead.
    memory: bool,
    turn: Option<OwnedMutexGuard<()>>,
    /// Told when the transaction fails, for connections a fault may have
    /// left read-only.
    read_only: Option<Arc<ReadOnlyOpens>>,
}

impl WriteTx {
    /// Starts a write transaction on `conn` while holding `turn`.
    ///
    /// The `BEGIN` runs in a task of its own: if the caller gives up while
    /// it waits for SQLite's lock (a request timing out), a `BEGIN` that
    /// succeeds afterwards must not leave a pooled connection inside a
    /// transaction nobody ends. The unclaimed transaction drops as still
    /// open, which retires its connection.
    pub(crate) async fn begin(
        mut conn: PoolConnection<sqlx::Sqlite>,
        turn: OwnedMutexGuard<()>,
        memory: bool,
        read_only: Option<Arc<ReadOnlyOpens>>,
    ) -> Result<WriteTx, sqlx::Error> {
        let (hand_over, claimed) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let begun = sqlx::query(BEGIN_WRITE).execute(&mut *conn).await;
            let tx = WriteTx {
                conn: Some(conn),
                open: true,
                memory,
                turn: Some(turn),
                read_only,
            };
            // On failure `tx` drops as still open, retiring its connection.
            let _ = hand_over.send(begun.map(|_| tx));
        });
        claimed.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }

    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("COMMIT").execute(&mut *self).await?;
        self.open = false;
        Ok(())
    }

    pub(crate) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("ROLLBACK").execute(&mut *self).await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        if let Some(read_only) = &self.read_only {
            read_only.noted();
        }
        let (Some(mut conn), turn) = (self.conn.take(), self.turn.take()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            conn.close_on_drop();
            return;
        };
        let memory = self.memory;
        // The writer's turn goes with the connection, so the next writer
        // starts only once this transaction is gone.
        runtime.spawn(async move {
            if memory {
                if let Err(e) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
                    tracing::debug!(error = %e, "rolling back an abandoned transaction");
                }
            } else if let Err(e) = conn.close().await {
                tracing::debug!(error = %e, "closing the connection of a failed transaction");
            }
            drop(turn);
        });
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::SqliteConnection;

    #[allow(clippy::expect_used)] // `conn` is taken only in `drop`
    fn deref(&self) -> &sqlx::SqliteConnection {
        self.conn
            .as_deref()
            .expect("a live write transaction has its connection")
    }
}

impl std::ops::DerefMut for WriteTx {
    #[allow(clippy::expect_used)] // `conn` is taken only in `drop`
    fn deref_mut(&mut self) -> &mut sqlx::SqliteConnection {
        self.conn
            .as_deref_mut()
            .expect("a live write transaction has its connection")
    }
}
