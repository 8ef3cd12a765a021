//! Thread priority: the background threads (checkpoints, password hashing) step aside for
//! the loop when the cores are contended.
//!
//! On a small box the loop, the checkpoint thread and the clients share two cores; a loop
//! that waits for a scheduler slice behind a page copy is a latency spike for every
//! connection. Linux keeps the nice value per thread, so raising it here touches only the
//! calling thread. Must never raise a priority (that needs privileges and is not ours to
//! take), so the step is relative to the value the thread inherited.

/// How much nicer than the loop the background threads run: the scheduler gives a thread
/// 10 nice levels down about a tenth of the CPU of the loop when both want it, and all of it
/// when the loop sleeps.
const BACKGROUND_NICER_BY: libc::c_int = 10;

/// Lowers the calling thread's priority by [`BACKGROUND_NICER_BY`] from where it is (a
/// server started with `nice -n 5` keeps its order: loop 5, background 15); a failure is
/// logged and otherwise ignored.
pub fn lower_this_thread() {
    // SAFETY: gettid, getpriority and setpriority take no pointers; they only read and set
    // the calling thread's scheduling attributes. getpriority may legitimately return -1,
    // so errno is cleared first and read after.
    let tid = unsafe { libc::gettid() } as libc::id_t;
    let current = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, tid)
    };
    let err = std::io::Error::last_os_error();
    if current == -1 && err.raw_os_error().unwrap_or(0) != 0 {
        log::debug!("cannot read the priority of a background thread: {err}");
        return;
    }
    let target = (current + BACKGROUND_NICER_BY).min(19);
    if target <= current {
        return;
    }
    // SAFETY: as above.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, target) } != 0 {
        log::debug!("cannot lower the priority of a background thread: {}", std::io::Error::last_os_error());
    }
}
