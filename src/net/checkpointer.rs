//! A thread that copies the SQLite WAL into the database file in the background, so the
//! checkpoints that the loop's commits still run (they bound the WAL, see
//! `Store::set_autocheckpoint`) find little left to copy.
//!
//! It uses a connection of its own and PASSIVE checkpoints, which never block the loop's
//! writes. Ends when its handle is dropped.

use crate::store;
use std::path::PathBuf;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
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

/// Dropping it stops the thread.
pub struct Checkpointer {
    _stop: Sender<()>,
}

pub fn start(db: PathBuf) -> std::io::Result<Checkpointer> {
    let (stop, stopped) = channel::<()>();
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
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(rest) {
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
    Ok(Checkpointer { _stop: stop })
}
