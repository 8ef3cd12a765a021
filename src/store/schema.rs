//! Applies `schema.sql`, a list of versioned migrations, to a database.

use super::StoreError;
use rusqlite::Connection;

const SCHEMA: &str = include_str!("../../schema.sql");
const APPLICATION_ID: i64 = 0x4e41_5454; // "NATT"

/// The newest schema version this binary knows (the last section of `schema.sql`).
pub const SCHEMA_VERSION: i64 = 9;

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
        // Said first: a migration that rebuilds an index takes a while on a large database.
        if version > 0 {
            log::info!("migrating the database schema from version {} to {n}", n - 1);
        }
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

    /// Every column that names an account (a foreign key to `users`) leads an index, so
    /// that deleting an account finds its rows by search, never by reading a whole table
    /// (which cost a deletion 0.12 s at 100,000 accounts, growing with them).
    #[test]
    fn every_reference_to_an_account_is_indexed() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c).unwrap();
        let tables: Vec<String> = c
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut checked = 0;
        for t in &tables {
            let refs: Vec<(String, String)> = c
                .prepare(&format!("SELECT \"table\", \"from\" FROM pragma_foreign_key_list('{t}')"))
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for (parent, column) in refs.into_iter().filter(|(p, _)| p == "users") {
                // The first column of some index (the primary key of a WITHOUT ROWID table
                // included).
                let led: i64 = c
                    .query_row(
                        &format!(
                            "SELECT count(*) FROM pragma_index_list('{t}') l
                             WHERE (SELECT name FROM pragma_index_info(l.name) WHERE seqno = 0) = ?1"
                        ),
                        [&column],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert!(led > 0, "{t}.{column} references {parent} without an index leading with it");
                checked += 1;
            }
        }
        assert!(checked >= 10, "found only {checked} references to users");
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
    fn version_3_contacts_keep_their_rows_and_order_by_messages_in_version_4() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        {
            let c = Connection::open(&path).unwrap();
            for (n, body) in sections().filter(|(n, _)| *n <= 3) {
                c.execute_batch(body).unwrap();
                c.execute_batch(&format!("PRAGMA user_version = {n}")).unwrap();
            }
            c.execute_batch(
                "INSERT INTO users (id, email, username, password_hash, created_at) VALUES
                   (1, 'a@x.org', 'a', 'h', 0), (2, 'b@x.org', 'b', 'h', 0), (3, 'c@x.org', 'c', 'h', 0);
                 INSERT INTO messages (id, recipient_id, sender_id, body, client_time, server_time) VALUES
                   (1, 2, 1, 'to b', 0, 0), (2, 1, 3, 'from c', 0, 0), (3, 1, 2, 'from b', 0, 0);
                 INSERT INTO contacts (user_id, peer_id, last_id) VALUES (1, 2, 3), (2, 1, 3), (1, 3, 2), (3, 1, 2);",
            )
            .unwrap();
        }
        let mut s =
            crate::store::Store::open(&path, crate::store::Durability::Normal, std::time::Duration::from_secs(1))
                .unwrap();
        let f: Vec<String> = s.friends(1).unwrap().into_iter().map(|f| f.email).collect();
        assert_eq!(f, ["b@x.org", "c@x.org"]);
        let f = s.friends(3).unwrap();
        assert_eq!((f.len(), f[0].email.as_str(), f[0].username.as_str()), (1, "a@x.org", "a"));
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
