//! The embedded SQLite database: opening, migrating, and the group commit.
//!
//! One [`Store`] is owned by the event loop and used synchronously from it. Writes do not
//! commit one by one: the first write of a loop iteration opens a transaction
//! ([`Store::write`]) and the loop commits it once ([`Store::commit`]) before it writes any
//! answer that depends on it to a socket. Under load a transaction therefore holds every
//! write of one iteration, which is what makes a commit per message affordable.
//!
//! Every statement is a cached prepared statement with bound parameters; no SQL is built
//! from client input. This module never decides protocol rules and never touches sockets.

pub mod backlog;
pub mod blocks;
pub mod calls;
pub mod groups;
pub mod messages;
pub mod reads;
mod schema;
pub mod users;

use rusqlite::{Connection, ErrorCode};
use std::path::Path;
use std::time::Duration;

pub use schema::SCHEMA_VERSION;
pub use users::{Friend, UserRow};

/// How hard a commit tries to reach the disk (SQLite `synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// Survives a crash of the process: the WAL is synced at checkpoints only.
    Normal,
    /// Also survives a crash of the machine: every commit syncs the WAL.
    Full,
}

/// Everything that can go wrong with the database, as one value per cause.
#[derive(Debug)]
pub enum StoreError {
    /// The file exists but holds something other than a natter database.
    NotNatter,
    /// The database was written by a newer natter.
    NewerSchema { found: i64, known: i64 },
    /// Another process holds a lock on the database for longer than we wait.
    Locked,
    /// The disk or the file system refused a write (full, read-only, quota).
    Full,
    /// SQLite abandoned the transaction on its own after a failed statement.
    RolledBack,
    /// Any other SQLite error.
    Sqlite(rusqlite::Error),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotNatter => write!(f, "the file is not a natter database"),
            StoreError::NewerSchema { found, known } => write!(
                f,
                "the database has schema version {found}, newer than the {known} this natter knows; upgrade natter"
            ),
            StoreError::Locked => write!(f, "the database is locked by another process"),
            StoreError::Full => write!(f, "the database could not be written (disk full or read-only)"),
            StoreError::RolledBack => write!(f, "the transaction was rolled back by the database"),
            StoreError::Sqlite(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// A row broke a constraint (a foreign key, a unique index): a fault of that row, not of
    /// the database, so the rest of the transaction can still be stored.
    pub fn is_constraint(&self) -> bool {
        matches!(self, StoreError::Sqlite(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked,
            Some(ErrorCode::DiskFull | ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::SystemIoFailure) => {
                StoreError::Full
            }
            Some(ErrorCode::NotADatabase) => StoreError::NotNatter,
            _ => StoreError::Sqlite(e),
        }
    }
}

/// Copies the WAL into the database file without blocking writers (a PASSIVE checkpoint),
/// on a connection of its own. Returns (frames in the WAL, frames now copied).
pub fn checkpoint(conn: &Connection) -> Result<(i64, i64), StoreError> {
    Ok(conn.prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")?.query_row([], |r| Ok((r.get(1)?, r.get(2)?)))?)
}

/// Personal messages not yet delivered, over all users, on a connection of another thread
/// ([`open_for_checkpoints`]): one index range per user, so its cost grows with the number
/// of accounts (a million take about a second), which is why the loop's own [`Store`] has
/// no such query.
pub fn pending_offline(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.prepare_cached(PENDING_OFFLINE_SQL)?.query_row([], |r| r.get(0))?)
}

pub(crate) const PENDING_OFFLINE_SQL: &str = "SELECT coalesce(sum((SELECT count(*) FROM messages m \
     WHERE m.recipient_id = u.id AND m.id > u.delivered_upto)), 0) FROM users u";

/// A connection for [`checkpoint`] on another thread.
pub fn open_for_checkpoints(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_millis(100))?;
    Ok(conn)
}

/// The database connection and the state of the current group-commit transaction.
pub struct Store {
    conn: Connection,
    in_tx: bool,
    /// The last message id handed out; stored in `meta` with each commit that used one.
    pub(crate) last_message_id: i64,
    /// Ids up to this are reserved in `meta` within the open transaction, or committed.
    reserved_upto: i64,
    /// Ids up to this are reserved by a committed transaction.
    committed_upto: i64,
    /// Messages of the open transaction not yet written (see `insert_message`), and their
    /// client ids by sender.
    staged: messages::StagedRows,
    staged_client_ids: std::collections::HashMap<(i64, String), i64>,
    /// Transactions committed, and messages committed, since the store was opened.
    pub commits: u64,
    pub messages_committed: u64,
    /// Messages inserted into the open transaction.
    pending_inserts: u64,
    /// `PRAGMA data_version` as last read: it changes when another process commits.
    data_version_seen: i64,
    /// Times another process's commits were noticed (for the log at shutdown).
    pub external_changes: u64,
    /// Another process had committed when this iteration's transaction began.
    changed_at_begin: bool,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`. `busy` is how long a
    /// statement waits for another process's lock before failing with [`StoreError::Locked`].
    pub fn open(path: &Path, durability: Durability, busy: Duration) -> Result<Store, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(busy)?;
        // journal_mode answers with a row, so it is queried rather than executed.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::warn!("database journal mode is {mode}, not WAL");
        }
        conn.execute_batch(match durability {
            Durability::Normal => "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
            Durability::Full => "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        })?;
        conn.set_prepared_statement_cache_capacity(64);
        // Plans that do not depend on the values bound. Without it SQLite (3.45 on) reads a
        // bound LIMIT while planning and prepares the statement again whenever that value
        // changes: a backlog's reads of 16, 32, 64 rows parsed their SQL anew each time, a
        // third of the work of reading 10,000 messages over 100 groups.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        schema::migrate(&mut conn)?;
        let last_message_id =
            conn.query_row("SELECT value FROM meta WHERE key = 'last_message_id'", [], |r| r.get(0))?;
        // The first look for other processes' commits compares with the database as opened,
        // not with nothing (which counted one phantom change per start).
        let data_version_seen: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        // Ids are reserved in blocks, so `meta` is written once per block rather than once
        // per commit; a restart skips what was left of the last block.
        Ok(Store {
            conn,
            in_tx: false,
            last_message_id,
            reserved_upto: last_message_id,
            committed_upto: last_message_id,
            staged: messages::StagedRows::default(),
            staged_client_ids: std::collections::HashMap::new(),
            commits: 0,
            messages_committed: 0,
            pending_inserts: 0,
            data_version_seen,
            external_changes: 0,
            changed_at_begin: false,
        })
    }

    /// Takes and releases the write lock once: fails with [`StoreError::Locked`] when
    /// another process holds it for longer than the busy timeout. In WAL mode readers are
    /// never blocked, so without this a server would start on a database it cannot write.
    pub fn probe_write(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK")?;
        Ok(())
    }

    /// How long a statement waits for another process's lock from now on.
    pub fn set_busy_timeout(&self, busy: Duration) -> Result<(), StoreError> {
        self.conn.busy_timeout(busy)?;
        Ok(())
    }

    /// How much memory SQLite may keep of the database: a page cache of `cache_mib` MiB
    /// (SQLite's own default is 2 MiB) and `mmap_mib` MiB of the file mapped (0: read with
    /// system calls). Both are ceilings, not allocations: the cache grows as pages are used.
    pub fn set_memory(&self, cache_mib: u32, mmap_mib: u32) -> Result<(), StoreError> {
        let cache_kib = i64::from(cache_mib.max(1)) * 1024;
        let mmap_bytes = i64::from(mmap_mib) << 20;
        self.conn.execute_batch(&format!("PRAGMA cache_size = -{cache_kib}"))?;
        // mmap_size answers with a row (the size granted).
        let _: i64 = self.conn.query_row(&format!("PRAGMA mmap_size = {mmap_bytes}"), [], |r| r.get(0))?;
        Ok(())
    }

    /// Makes a commit checkpoint the WAL once it holds `pages` pages (SQLite's default is
    /// 1000). This is what bounds the WAL: SQLite restarts the WAL from its beginning only
    /// when a write starts after a complete checkpoint, which a checkpoint on another thread
    /// rarely achieves under a steady stream of commits.
    pub fn set_autocheckpoint(&self, pages: u32) -> Result<(), StoreError> {
        self.conn.execute_batch(&format!("PRAGMA wal_autocheckpoint = {pages}"))?;
        Ok(())
    }

    /// The next message id, inside the open write transaction. Ids increase and are never
    /// reused: they are reserved in `meta` a block at a time, in the same transaction as
    /// the messages that use them, so a crash can only skip ids, never hand one out twice.
    pub(crate) fn next_message_id(&mut self) -> Result<i64, StoreError> {
        const BLOCK: i64 = 1024;
        if self.last_message_id >= self.reserved_upto {
            let upto = self.last_message_id + BLOCK;
            let mut st = self.write()?.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'last_message_id'")?;
            st.execute([upto])?;
            drop(st);
            self.reserved_upto = upto;
        }
        self.last_message_id += 1;
        Ok(self.last_message_id)
    }

    /// Writes a consistent copy of the database to a new file at `to` (the online backup
    /// API in a single step); returns the number of pages copied.
    pub fn backup_to(&self, to: &Path) -> Result<i32, StoreError> {
        let mut dst = Connection::open(to)?;
        let backup = rusqlite::backup::Backup::new(&self.conn, &mut dst)?;
        if backup.step(-1)? != rusqlite::backup::StepResult::Done {
            return Err(StoreError::Locked);
        }
        let pages = backup.progress().pagecount;
        drop(backup);
        // The copy is a plain rollback-journal file; a server opening it switches it to WAL.
        dst.execute_batch("PRAGMA journal_mode = DELETE")?;
        Ok(pages)
    }

    /// Makes sure a write transaction is open; every write of the loop iteration joins it.
    pub fn write(&mut self) -> Result<&Connection, StoreError> {
        if !self.in_tx {
            // Cached statements: at low load every message is an iteration of its own, and
            // parsing BEGIN, COMMIT and the data_version pragma each time cost more than
            // the message's INSERT.
            self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            self.in_tx = true;
            // From here until the commit no other process can write, so what the core
            // checks now against the database (does this user still exist?) stays true
            // for every row it stages in this transaction.
            if self.changed_elsewhere()? {
                self.changed_at_begin = true;
            }
        } else if self.conn.is_autocommit() {
            // SQLite rolled the iteration's transaction back after a failed statement; a
            // write now would commit on its own, outside the group. Refuse until commit().
            return Err(StoreError::RolledBack);
        }
        Ok(&self.conn)
    }

    /// Whether another process (`natter user del`, say) committed since the last call or
    /// since the current write transaction began, whichever came later.
    pub fn changed_elsewhere(&mut self) -> Result<bool, StoreError> {
        let v = self.data_version()?;
        let changed = v != self.data_version_seen || std::mem::take(&mut self.changed_at_begin);
        self.data_version_seen = v;
        self.external_changes += u64::from(changed);
        Ok(changed)
    }

    /// Whether another process committed since [`changed_elsewhere`](Self::changed_elsewhere)
    /// last looked, without taking the news: that call still reports it.
    pub fn changed_elsewhere_since_seen(&self) -> Result<bool, StoreError> {
        Ok(self.data_version()? != self.data_version_seen)
    }

    /// Whether another process had committed when the open transaction began (the check
    /// [`write`](Self::write) makes under the write lock); asking clears it.
    pub fn take_changed_at_begin(&mut self) -> bool {
        std::mem::take(&mut self.changed_at_begin)
    }

    /// The connection for reads. Reads inside an open transaction see its writes, but not
    /// the messages staged for the iteration's multi-row INSERT: a read of the messages
    /// table takes [`read_messages`](Self::read_messages) instead.
    pub fn read(&self) -> &Connection {
        &self.conn
    }

    /// The connection for reads that must see every message of the iteration, staged ones
    /// included (they are written first): the one place where reads meet the staging.
    pub(crate) fn read_messages(&mut self) -> Result<&Connection, StoreError> {
        self.flush_staged()?;
        Ok(&self.conn)
    }

    /// Runs `f`'s reads under one read lock. Outside a transaction every statement takes
    /// and releases the database's shared lock on its own (system calls on the `-shm`
    /// file): a backlog over 500 groups runs a thousand statements. Inside the iteration's
    /// write transaction `f` simply joins it. `f` must not write.
    pub fn reading<T>(&mut self, f: impl FnOnce(&mut Store) -> Result<T, StoreError>) -> Result<T, StoreError> {
        if self.in_tx || !self.conn.is_autocommit() {
            return f(self);
        }
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        let result = f(self);
        // Ending a read transaction only releases the lock; it cannot lose anything.
        let end = self.conn.prepare_cached("COMMIT").and_then(|mut st| st.execute([]));
        if let Err(e) = end {
            log::error!("ending a read transaction: {e}");
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
        }
        result
    }

    /// True while writes are waiting for [`commit`](Self::commit).
    pub fn has_pending_writes(&self) -> bool {
        self.in_tx
    }

    /// Commits the iteration's transaction; on failure rolls it back so that nothing of it
    /// is stored. A no-op when nothing was written.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if !self.in_tx {
            return Ok(());
        }
        let result = self.flush_staged().and_then(|()| {
            if self.conn.is_autocommit() {
                // SQLite already rolled the transaction back (it may, on a full disk or I/O
                // error inside a statement): nothing of this iteration is stored.
                return Err(StoreError::RolledBack);
            }
            self.conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(())
        });
        if let Err(e) = result {
            self.rollback();
            return Err(e);
        }
        self.in_tx = false;
        self.commits += 1;
        self.messages_committed += std::mem::take(&mut self.pending_inserts);
        self.committed_upto = self.reserved_upto;
        Ok(())
    }

    /// Abandons the iteration's writes (a statement or the commit failed): the one place
    /// that forgets the transaction's staged rows and id reservations.
    pub fn rollback(&mut self) {
        self.pending_inserts = 0;
        self.reserved_upto = self.committed_upto;
        self.staged.clear();
        self.staged_client_ids.clear();
        if self.in_tx {
            self.in_tx = false;
            // SQLite may have rolled back already; then there is nothing left to undo.
            if !self.conn.is_autocommit() {
                if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                    log::error!("rollback failed: {e}");
                }
            }
        }
    }
}
