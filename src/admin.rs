//! `natter user add|list|del` and `natter backup`: administration straight on the database
//! file.
//!
//! Safe while a server runs on the same file: SQLite's locking serialises the writes (we
//! wait up to five seconds for the server's transaction), and the server reads accounts
//! from the database at every login, so it sees the change at the next one.

use crate::chat::validate;
use crate::cli::UserCommand;
use crate::password::{self, HashParams};
use crate::store::{Durability, Store};
use std::path::Path;
use std::time::Duration;

/// Runs one user command; `Err` is the one line to print.
pub fn user(db: &Path, cmd: UserCommand, params: HashParams) -> Result<(), String> {
    let mut store = Store::open(db, Durability::Full, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    match cmd {
        UserCommand::Add { email, username, password } => {
            validate::email(&email).and(validate::username(&username))?;
            if let Some(taken) = store.name_taken(&email, &username).map_err(|e| e.to_string())? {
                return Err(format!("{taken:?} already registered").to_lowercase());
            }
            let password = match password {
                Some(p) => p,
                None => read_password()?,
            };
            if password.is_empty() {
                return Err("the password must not be empty".into());
            }
            let hash = password::hash(params, &password::md5_hex(&password)).map_err(|e| e.to_string())?;
            let unix =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            let id = store.insert_user(&email, &username, &hash, unix).map_err(|e| e.to_string())?;
            store.commit().map_err(|e| e.to_string())?;
            println!("added user {id}: {username} <{email}>");
        }
        UserCommand::List => {
            for (username, email) in store.list_users().map_err(|e| e.to_string())? {
                println!("{username}\t{email}");
            }
        }
        UserCommand::Del { email } => {
            let existed = store.delete_user(&email).map_err(|e| e.to_string())?;
            store.commit().map_err(|e| e.to_string())?;
            if !existed {
                return Err(format!("no user with email {email}"));
            }
            println!("deleted {email}");
        }
    }
    Ok(())
}

/// The password for `natter user add` when no flag gave it: NATTER_PASSWORD, else asked on
/// the terminal without echo, else the first line of stdin.
fn read_password() -> Result<String, String> {
    if let Ok(p) = std::env::var("NATTER_PASSWORD") {
        return Ok(p);
    }
    let stdin = std::io::stdin();
    let tty = std::io::IsTerminal::is_terminal(&stdin);
    if tty {
        eprint!("password: ");
    }
    let _echo = if tty { EchoOff::new() } else { None };
    let mut line = String::new();
    let n =
        std::io::BufRead::read_line(&mut stdin.lock(), &mut line).map_err(|e| format!("reading the password: {e}"))?;
    if tty {
        eprintln!();
    }
    if n == 0 {
        return Err("no password: give --password, NATTER_PASSWORD or one line on stdin".into());
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// The terminal on stdin with echo turned off, restored when dropped.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: termios is plain data that tcgetattr fills; both calls only read or set
        // the settings of descriptor 0.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            (libc::tcsetattr(0, libc::TCSANOW, &t) == 0).then_some(EchoOff(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.0);
        }
    }
}

/// Copies the database at `db` to `to` with SQLite's online backup API. The copy is taken
/// in one step, inside one read transaction, so it is a consistent snapshot even while a
/// server keeps writing (a step-by-step copy would restart on every write it sees).
///
/// The target is refused when it is the database or one of its companion files (a copy
/// over the live `-wal` once reported success and corrupted the database), and when it
/// exists unless `force`. The copy is written to a uniquely named temporary file beside
/// the target and renamed over it only once complete, so nothing that exists is touched
/// before then and a failed backup leaves no partial file.
pub fn backup(db: &Path, to: &Path, force: bool) -> Result<(), String> {
    if !db.exists() {
        return Err(format!("no database at {}", db.display()));
    }
    check_backup_target(db, to, force)?;
    let src = Store::open(db, Durability::Normal, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let (tmp, _file) = temporary_beside(to)?;
    let result = src.backup_to(&tmp).map_err(|e| format!("backup failed: {e}")).and_then(|pages| {
        std::fs::rename(&tmp, to).map_err(|e| format!("cannot move the copy to {}: {e}", to.display()))?;
        Ok(pages)
    });
    match result {
        Ok(pages) => {
            println!("backed up {} ({pages} pages) to {}", db.display(), to.display());
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// The files SQLite and natter keep beside a database: writing any of them corrupts it.
const COMPANIONS: [&str; 5] = ["", "-wal", "-shm", "-journal", ".lock"];

/// Refuses a backup target that is the database or a companion of it (also through
/// symlinks and `..`), and an existing file unless `force`.
fn check_backup_target(db: &Path, to: &Path, force: bool) -> Result<(), String> {
    let db = std::fs::canonicalize(db).map_err(|e| format!("cannot resolve {}: {e}", db.display()))?;
    let target = resolve(to)?;
    for suffix in COMPANIONS {
        let mut companion = db.clone().into_os_string();
        companion.push(suffix);
        if target == Path::new(&companion) {
            return Err(format!(
                "refusing to back up onto {}: it is the database{} itself",
                to.display(),
                if suffix.is_empty() { String::new() } else { format!("'s {suffix} file") }
            ));
        }
    }
    if to.symlink_metadata().is_ok() && !force {
        return Err(format!("{} exists; pass --force to replace it", to.display()));
    }
    if to.is_dir() {
        return Err(format!("{} is a directory", to.display()));
    }
    Ok(())
}

/// `to` with its folder and every symlink resolved; `to` itself need not exist.
fn resolve(to: &Path) -> Result<std::path::PathBuf, String> {
    if let Ok(p) = std::fs::canonicalize(to) {
        return Ok(p);
    }
    let name = to.file_name().ok_or_else(|| format!("{} names no file", to.display()))?;
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(parent).map_err(|e| format!("cannot use folder {}: {e}", parent.display()))?;
    Ok(dir.join(name))
}

/// Creates a new, uniquely named file in `to`'s folder (never one that exists) for the
/// copy to be written to before it is renamed to `to`.
fn temporary_beside(to: &Path) -> Result<(std::path::PathBuf, std::fs::File), String> {
    let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for _ in 0..16 {
        let tag = crate::secret::token(6).map_err(|e| format!("OS random source: {e}"))?;
        let tmp = to.with_file_name(format!(".{name}.{tag}.partial"));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create a file beside {}: {e}", to.display())),
        }
    }
    Err(format!("cannot find a free temporary name beside {}", to.display()))
}
