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

/// (year, month, day, hour, minute, second) of a unix time in the local time zone (UTC
/// when the zone is unknown).
fn local(unix: i64) -> (i64, u32, u32, u32, u32, u32) {
    // SAFETY: tm is plain data; localtime_r writes it or returns null.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t = unix as libc::time_t;
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
        let (days, s) = (unix.div_euclid(86_400), unix.rem_euclid(86_400) as u32);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        return (year, month, day, s / 3600, s / 60 % 60, s % 60);
    }
    let (h, m, s) = (tm.tm_hour as u32, tm.tm_min as u32, tm.tm_sec as u32);
    (i64::from(tm.tm_year) + 1900, tm.tm_mon as u32 + 1, tm.tm_mday as u32, h, m, s)
}

/// A message time for the screen: `HH:MM:SS` when it is `today`'s (a unix time of the same
/// local day), else `YYYY-MM-DD HH:MM:SS`, so that a history of several days reads in order.
pub fn local_stamp(unix: i64, today: i64) -> String {
    let (y, mo, d, h, mi, s) = local(unix);
    let (ty, tmo, td, ..) = local(today);
    if (y, mo, d) == (ty, tmo, td) {
        format!("{h:02}:{mi:02}:{s:02}")
    } else {
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
    }
}
