//! Thread priority: the background threads (checkpoints, password hashing) step aside for
//! the loop when the cores are contended.
//!
//! On a small box the loop, the checkpoint thread and the clients share two cores; a loop
//! that waits for a scheduler slice behind a page copy is a latency spike for every
//! connection. Linux keeps the nice value per thread, so raising it here touches only the
//! calling thread. Must never raise a priority (that needs privileges and is not ours to
//! take).

/// The nice value of the background threads: the scheduler gives a nice-10 thread about a
/// tenth of the CPU of a nice-0 one when both want it, and all of it when the loop sleeps.
const BACKGROUND_NICE: libc::c_int = 10;

/// Lowers the calling thread's priority; a failure is logged and otherwise ignored.
pub fn lower_this_thread() {
    // SAFETY: gettid and setpriority take no pointers; they only read and set the calling
    // thread's scheduling attributes.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, BACKGROUND_NICE) };
    if rc != 0 {
        log::debug!("cannot lower the priority of a background thread: {}", std::io::Error::last_os_error());
    }
}
