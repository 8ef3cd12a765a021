//! Accounts and the friends list.

use super::{Store, StoreError};
use rusqlite::{params, OptionalExtension, Row};

/// One account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub username: String,
    /// argon2id PHC string over the md5 digest the client sends.
    pub password_hash: String,
}

/// One entry of a friends list. The id comes with it so that the presence code needs no
/// lookup per friend (a user may have thousands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Friend {
    pub id: i64,
    pub email: String,
    pub username: String,
}

/// Which of the unique names of a new account is already taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Email,
    Username,
}

fn user_row(r: &Row) -> rusqlite::Result<UserRow> {
    Ok(UserRow { id: r.get(0)?, email: r.get(1)?, username: r.get(2)?, password_hash: r.get(3)? })
}

/// A user's contacts, the most recent conversation first: the order is the newest message
/// either way, two index seeks in `messages_pair` per contact.
pub(super) const FRIENDS_SQL: &str = "SELECT u.id, u.email, u.username FROM contacts c JOIN users u ON u.id = c.peer_id
     WHERE c.user_id = ?1 AND c.peer_id != ?1
     ORDER BY max(c.first_id,
         coalesce((SELECT max(id) FROM messages WHERE sender_id = ?1 AND recipient_id = c.peer_id), 0),
         coalesce((SELECT max(id) FROM messages WHERE sender_id = c.peer_id AND recipient_id = ?1), 0)) DESC";

pub(crate) const USERS_AFTER_SQL: &str =
    "SELECT username, email FROM users WHERE username > ?1 ORDER BY username LIMIT ?2";

impl Store {
    /// The account with this email (case-insensitive).
    pub fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        let mut st =
            self.read().prepare_cached("SELECT id, email, username, password_hash FROM users WHERE email = ?1")?;
        Ok(st.query_row([email], user_row).optional()?)
    }

    /// The account with this username (case-insensitive).
    pub fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        let mut st =
            self.read().prepare_cached("SELECT id, email, username, password_hash FROM users WHERE username = ?1")?;
        Ok(st.query_row([username], user_row).optional()?)
    }

    /// The account with this id, if it still exists.
    pub fn user_by_id(&self, id: i64) -> Result<Option<UserRow>, StoreError> {
        let mut st =
            self.read().prepare_cached("SELECT id, email, username, password_hash FROM users WHERE id = ?1")?;
        Ok(st.query_row([id], user_row).optional()?)
    }

    /// Whether a new account with this email and username would collide, and on what.
    pub fn name_taken(&self, email: &str, username: &str) -> Result<Option<Taken>, StoreError> {
        if self.user_by_email(email)?.is_some() {
            return Ok(Some(Taken::Email));
        }
        if self.user_by_username(username)?.is_some() {
            return Ok(Some(Taken::Username));
        }
        Ok(None)
    }

    /// Creates an account inside the iteration's transaction. A collision that slipped
    /// past [`name_taken`](Self::name_taken) comes back as the unique-constraint error.
    pub fn insert_user(&mut self, email: &str, username: &str, hash: &str, now_unix: i64) -> Result<i64, StoreError> {
        let conn = self.write()?;
        let mut st = conn
            .prepare_cached("INSERT INTO users (email, username, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)")?;
        st.execute(params![email, username, hash, now_unix])?;
        Ok(conn.last_insert_rowid())
    }

    /// Deletes an account and (by cascade) everything that belongs to it. Returns whether
    /// it existed.
    /// Replaces a user's password hash.
    pub fn set_password(&mut self, user: i64, hash: &str) -> Result<(), StoreError> {
        let mut st = self.write()?.prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1")?;
        st.execute(rusqlite::params![user, hash])?;
        Ok(())
    }

    pub fn delete_user(&mut self, email: &str) -> Result<bool, StoreError> {
        let Some(user) = self.user_by_email(email)? else { return Ok(false) };
        self.flush_staged()?;
        self.leave_all_groups(user.id)?;
        let conn = self.write()?;
        conn.execute("DELETE FROM messages WHERE recipient_id = ?1", [user.id])?;
        conn.execute("DELETE FROM messages WHERE sender_id = ?1", [user.id])?;
        Ok(conn.execute("DELETE FROM users WHERE id = ?1", [user.id])? > 0)
    }

    /// A number that changes whenever another connection (another process) commits to the
    /// database: the signal to drop what we cache from it.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self.read().prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))?)
    }

    /// Every account as (username, email), ordered by username case-insensitively.
    pub fn list_users(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut st = self.read().prepare_cached("SELECT username, email FROM users ORDER BY username")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Calls `f` with (username, email) of up to `limit` accounts whose usernames come
    /// after `after` (case-insensitively, as `users` lists them): one search of the
    /// username index, so a listing of any length is read a slice at a time.
    pub fn users_after(&self, after: &str, limit: usize, mut f: impl FnMut(&str, &str)) -> Result<(), StoreError> {
        let mut st = self.read().prepare_cached(USERS_AFTER_SQL)?;
        let mut rows = st.query(params![after, limit as i64])?;
        while let Some(r) = rows.next()? {
            let (username, email): (String, String) = (r.get(0)?, r.get(1)?);
            f(&username, &email);
        }
        Ok(())
    }

    /// The friends of a user, most recent contact first.
    pub fn friends(&mut self, user_id: i64) -> Result<Vec<Friend>, StoreError> {
        let mut st = self.read_messages()?.prepare_cached(FRIENDS_SQL)?;
        let rows = st.query_map([user_id], |r| Ok(Friend { id: r.get(0)?, email: r.get(1)?, username: r.get(2)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{Durability, Store};
    use std::time::Duration;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db"), Durability::Normal, Duration::from_millis(100)).unwrap();
        (dir, s)
    }

    #[test]
    fn names_are_unique_case_insensitively() {
        let (_d, mut s) = store();
        s.insert_user("Ann@X.org", "Ann", "h", 0).unwrap();
        s.commit().unwrap();
        assert_eq!(s.name_taken("ann@x.ORG", "other").unwrap(), Some(super::Taken::Email));
        assert_eq!(s.name_taken("b@x.org", "aNN").unwrap(), Some(super::Taken::Username));
        assert!(s.insert_user("ANN@x.org", "z", "h", 0).is_err());
        assert_eq!(s.user_by_username("ANN").unwrap().unwrap().email, "Ann@X.org");
    }

    #[test]
    fn users_are_listed_by_username_ignoring_case() {
        let (_d, mut s) = store();
        for (e, u) in [("c@x.org", "carol"), ("b@x.org", "Bob"), ("a@x.org", "alice")] {
            s.insert_user(e, u, "h", 0).unwrap();
        }
        s.commit().unwrap();
        let names: Vec<String> = s.list_users().unwrap().into_iter().map(|(u, _)| u).collect();
        assert_eq!(names, ["alice", "Bob", "carol"]);
    }

    #[test]
    fn a_rolled_back_iteration_stores_nothing() {
        let (_d, mut s) = store();
        s.insert_user("a@x.org", "a", "h", 0).unwrap();
        s.rollback();
        assert!(s.user_by_email("a@x.org").unwrap().is_none());
    }
}
