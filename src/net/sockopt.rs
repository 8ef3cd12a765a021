//! Socket options that neither std nor mio exposes.

use std::io;
use std::os::fd::AsRawFd;

fn set(fd: &impl AsRawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the fd is open for the lifetime of the borrow; the value is a plain int.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// TCP keepalive: first probe after 60 s idle, then 3 probes 10 s apart (PROTOCOL.md
/// section 2), so a peer that vanished without a FIN is noticed within about 90 s.
pub fn keepalive(fd: &impl AsRawFd) -> io::Result<()> {
    set(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 60)?;
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10)?;
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3)
}

/// Asks for a receive buffer of `bytes` (the kernel caps it at net.core.rmem_max).
pub fn recv_buffer(fd: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    set(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes.min(i32::MAX as usize) as libc::c_int)
}

/// Raises a listening socket's accept queue to the system's cap (`net.core.somaxconn`;
/// Linux applies a second `listen` to a listening socket). mio, like std, listens with
/// 128: when thousands of clients reconnect at once (after a restart), the queue overflowed,
/// the kernel dropped their SYNs and each waited a full second to retry.
pub fn listen_backlog_max(fd: &impl AsRawFd) -> io::Result<()> {
    // More than any system's cap: the kernel lowers it to `net.core.somaxconn`.
    const BACKLOG: libc::c_int = 65535;
    // SAFETY: the fd is a bound, listening socket for the lifetime of the borrow.
    if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
