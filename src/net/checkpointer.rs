//! A thread that copies the SQLite WAL into the database file in the background, so the
//! checkpoints that the loop's commits still run (they bound the WAL, see
//! `Store::set_autocheckpoint`) find little left to copy.
//!
//! It uses a connection of its own and PASSIVE checkpoints, which never block the loop's
//! writes. Ends when its handle and every [`PendingCount`] are dropped.
//!
//! On the same connection it counts the messages pending delivery for a metrics scrape
//! ([`PendingCount`]): that count reads one index range per account, about a second for a
//! million, and must never run on the loop.

use crate::store;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

/// Rest when the WAL is empty.
const IDLE: Duration = Duration::from_millis(20);
/// Rest after a checkpoint that copied everything there was, under load.
const BUSY: Duration = Duration::from_millis(1);
/// Rest after a checkpoint that found only a few new pages: at low load every commit adds a
/// handful, and checkpointing each handful costs two fsyncs whose writeback stalls the
/// loop's own WAL writes (seen as the p99 of the `latency` workload).
const SPARSE: Duration = Duration::from_millis(50);
/// Fewer new pages than this in a pass count as sparse.
const SPARSE_PAGES: i64 = 256;
/// Rest when a checkpoint could copy nothing (another connection held it up).
const BLOCKED: Duration = Duration::from_millis(2);

/// Dropping it (and every [`PendingCount`]) stops the thread.
pub struct Checkpointer {
    pub pending: PendingCount,
}

/// The messages pending delivery as last counted: a scrape shows the count its previous
/// scrape asked for, and asks for the next.
#[derive(Clone)]
pub struct PendingCount {
    ask: Sender<()>,
    /// -1 until the first count.
    value: Arc<AtomicI64>,
}

impl PendingCount {
    /// The last count, and a new one asked for.
    pub fn latest_and_ask(&self) -> Option<i64> {
        let _ = self.ask.send(());
        Some(self.value.load(Ordering::Relaxed)).filter(|&v| v >= 0)
    }
}

pub fn start(db: PathBuf) -> std::io::Result<Checkpointer> {
    let (ask, asked) = channel::<()>();
    let value = Arc::new(AtomicI64::new(-1));
    let counted = Arc::clone(&value);
    std::thread::Builder::new().name("natter-checkpoint".into()).spawn(move || {
        super::priority::lower_this_thread();
        let conn = match store::open_for_checkpoints(&db) {
            Ok(c) => c,
            Err(e) => {
                log::error!("checkpoint thread cannot open the database: {e}");
                return;
            }
        };
        let mut rest = IDLE;
        let mut last = (0, 0);
        loop {
            match asked.recv_timeout(rest) {
                Ok(()) => {
                    // Asks that came meanwhile are answered by this one count.
                    while asked.try_recv().is_ok() {}
                    match store::pending_offline(&conn) {
                        Ok(n) => counted.store(n, Ordering::Relaxed),
                        Err(e) => log::warn!("counting messages pending delivery: {e}"),
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            rest = match store::checkpoint(&conn) {
                // Nothing new since the last pass (or an empty WAL): rest longer.
                Ok(now) if now == last || now.0 == 0 => IDLE,
                Ok((log, done)) => {
                    // The WAL restarts from its beginning after a complete checkpoint.
                    let copied = if log >= last.0 { done - last.1 } else { done };
                    last = (log, done);
                    if done < log {
                        BLOCKED
                    } else if copied < SPARSE_PAGES {
                        SPARSE
                    } else {
                        BUSY
                    }
                }
                Err(e) => {
                    log::debug!("checkpoint: {e}");
                    IDLE
                }
            };
        }
    })?;
    Ok(Checkpointer { pending: PendingCount { ask, value } })
}
