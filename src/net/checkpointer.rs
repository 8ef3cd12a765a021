//! A thread that checkpoints the SQLite WAL once a second, so the loop's commits never pay
//! for copying the WAL into the database file (and its fsync).
//!
//! It uses a connection of its own and PASSIVE checkpoints, which never block the loop's
//! writes. Ends when its handle is dropped.

use crate::store;
use std::path::PathBuf;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;

const EVERY: Duration = Duration::from_secs(1);

/// Dropping it stops the thread.
pub struct Checkpointer {
    _stop: Sender<()>,
}

pub fn start(db: PathBuf) -> std::io::Result<Checkpointer> {
    let (stop, stopped) = channel::<()>();
    std::thread::Builder::new().name("natter-checkpoint".into()).spawn(move || {
        let conn = match store::open_for_checkpoints(&db) {
            Ok(c) => c,
            Err(e) => {
                log::error!("checkpoint thread cannot open the database: {e}");
                return;
            }
        };
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
            if let Err(e) = store::checkpoint(&conn) {
                log::debug!("checkpoint: {e}");
            }
        }
    })?;
    Ok(Checkpointer { _stop: stop })
}
