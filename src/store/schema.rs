//! Applies `schema.sql`, a list of versioned migrations, to a database.

use super::StoreError;
use rusqlite::Connection;

const SCHEMA: &str = include_str!("../../schema.sql");
const APPLICATION_ID: i64 = 0x4e41_5454; // "NATT"

/// The newest schema version this binary knows (the last section of `schema.sql`).
pub const SCHEMA_VERSION: i64 = 3;

/// Splits `schema.sql` at its `-- version: N` lines.
fn sections() -> impl Iterator<Item = (i64, &'static str)> {
    SCHEMA.split("\n-- version: ").skip(1).filter_map(|s| {
        let (num, body) = s.split_once('\n')?;
        Some((num.trim().parse().ok()?, body))
    })
}

/// Brings the database to [`SCHEMA_VERSION`], refusing files that are not ours or newer.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let app_id: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if app_id != APPLICATION_ID {
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        if tables > 0 || version != 0 {
            return Err(StoreError::NotNatter);
        }
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { found: version, known: SCHEMA_VERSION });
    }
    for (n, body) in sections().filter(|(n, _)| *n > version) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(body)?;
        tx.execute_batch(&format!("PRAGMA user_version = {n}"))?;
        tx.commit()?;
        log::info!("database schema migrated to version {n}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_numbered_in_order_up_to_the_known_version() {
        let nums: Vec<i64> = sections().map(|(n, _)| n).collect();
        assert_eq!(nums, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    }

    #[test]
    fn a_foreign_database_is_refused_and_left_alone() {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t(x)").unwrap();
        assert!(matches!(migrate(&mut c), Err(StoreError::NotNatter)));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c).unwrap();
        c.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1)).unwrap();
        assert!(matches!(migrate(&mut c), Err(StoreError::NewerSchema { .. })));
    }

    #[test]
    fn migrating_twice_changes_nothing() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c).unwrap();
        migrate(&mut c).unwrap();
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }
}
