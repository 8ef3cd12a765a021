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

/// Copies the database at `db` to `to` with SQLite's online backup API. The copy is taken
/// in one step, inside one read transaction, so it is a consistent snapshot even while a
/// server keeps writing (a step-by-step copy would restart on every write it sees).
pub fn backup(db: &Path, to: &Path) -> Result<(), String> {
    if !db.exists() {
        return Err(format!("no database at {}", db.display()));
    }
    let src = Store::open(db, Durability::Normal, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let tmp = to.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    let pages = src.backup_to(&tmp).map_err(|e| format!("backup failed: {e}"))?;
    std::fs::rename(&tmp, to).map_err(|e| format!("cannot move the copy to {}: {e}", to.display()))?;
    println!("backed up {} ({pages} pages) to {}", db.display(), to.display());
    Ok(())
}
