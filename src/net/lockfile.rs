//! One server per database: an exclusive `flock` on `<db>.lock`, held while the server
//! runs. Two servers on one file would hand out the same message ids and fight over
//! deliveries; admin commands and backups do not take this lock and keep working.

use super::ServeError;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Held for as long as the server runs; the kernel releases it when the process ends.
pub struct LockFile {
    _file: File,
}

pub fn acquire(db: &Path) -> Result<LockFile, ServeError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = std::path::PathBuf::from(name);
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
    // SAFETY: flock on a descriptor we own for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            return Err(ServeError::AlreadyRunning(path));
        }
        return Err(ServeError::Io(err));
    }
    Ok(LockFile { _file: file })
}
