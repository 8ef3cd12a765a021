//! SIGINT, SIGTERM and SIGHUP as a readable pipe in the poll loop (the self-pipe trick).
//!
//! The handler only writes the signal's number as one byte to a non-blocking pipe, which
//! is async-signal-safe; the loop sees the read end become readable and shuts down in
//! order (SIGINT, SIGTERM) or reloads the TLS certificate (SIGHUP).

use mio::unix::pipe;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) and errno access are async-signal-safe; the buffer is on the
        // handler's stack and outlives the call.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// What the signals that arrived ask for.
#[derive(Debug, Default, Clone, Copy)]
pub struct Received {
    pub stop: bool,
    pub reload: bool,
}

/// The read end of the signal pipe; register it with the poll.
pub struct Signals {
    pub receiver: pipe::Receiver,
    _sender: pipe::Sender,
}

impl Signals {
    /// Installs the handlers for SIGINT, SIGTERM and SIGHUP.
    pub fn install() -> io::Result<Signals> {
        let (sender, receiver) = pipe::new()?;
        WRITE_FD.store(sender.as_raw_fd(), Ordering::Relaxed);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: a zeroed sigaction is valid; the handler is an extern "C" fn that only
            // does async-signal-safe work.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                act.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut act.sa_mask);
                if libc::sigaction(sig, &act, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(Signals { receiver, _sender: sender })
    }

    /// Empties the pipe and says what the signals in it ask for.
    pub fn drain(&mut self) -> Received {
        let mut buf = [0u8; 64];
        let mut got = Received::default();
        while let Ok(n) = self.receiver.read(&mut buf) {
            if n == 0 {
                break;
            }
            for &sig in &buf[..n] {
                if i32::from(sig) == libc::SIGHUP {
                    got.reload = true;
                } else {
                    got.stop = true;
                }
            }
        }
        got
    }
}
