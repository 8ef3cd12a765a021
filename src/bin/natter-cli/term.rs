//! The terminal: whether stdin/stdout are terminals, raw mode for the line editor, and the
//! local clock for timestamps.
//!
//! Owns every libc call of natter-cli. Raw mode is only ever entered through `RawMode`, whose
//! drop restores the saved settings, so the user's shell is never left without echo.

use std::io;
use std::sync::OnceLock;

/// The settings raw mode replaced, for the signal handler (a `kill` must not leave the
/// user's shell without echo).
static SAVED: OnceLock<libc::termios> = OnceLock::new();

/// SIGTERM, SIGHUP, SIGQUIT in raw mode: put the terminal back, then die of the signal as
/// if no handler were installed. Only async-signal-safe calls.
extern "C" fn restore_and_die(sig: libc::c_int) {
    if let Some(t) = SAVED.get() {
        // SAFETY: tcsetattr, signal and raise are async-signal-safe; `t` is a saved termios.
        unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, t) };
    }
    // SAFETY: as above.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

pub fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Columns of the terminal on stdout (80 when it cannot tell).
pub fn width() -> usize {
    // SAFETY: winsize is plain data; the ioctl fills it or fails.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

/// Raw input on stdin for as long as it lives: bytes arrive one keypress at a time, without
/// echo and without the terminal turning Ctrl-C into a signal (the editor handles it).
/// Output processing stays on, so `\n` still moves to the start of the next line.
pub struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    pub fn enter() -> io::Result<RawMode> {
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        raw.c_iflag &= !(libc::IXON | libc::ICRNL);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        let _ = SAVED.set(saved);
        for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            // SAFETY: installs a handler that only makes async-signal-safe calls.
            unsafe { libc::signal(sig, restore_and_die as *const () as libc::sighandler_t) };
        }
        // SAFETY: raw is a valid termios copied from the current settings.
        if unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter`.
        unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, &self.saved) };
    }
}

/// `HH:MM:SS` of a unix time in the local time zone (UTC when the zone is unknown).
pub fn local_hms(unix: i64) -> String {
    // SAFETY: tm is plain data; localtime_r writes it or returns null.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t = unix as libc::time_t;
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        let s = unix.rem_euclid(86_400);
        return format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    }
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}
