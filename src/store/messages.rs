//! Personal messages, delivery watermarks and contacts.

use super::{Store, StoreError};
use rusqlite::{params, OptionalExtension};

/// A personal message to store.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub sender: i64,
    pub recipient: i64,
    pub body: &'a str,
    pub media: Option<&'a str>,
    pub client_time: i64,
    pub server_time: i64,
    pub client_id: Option<&'a str>,
}

/// A stored message as read for delivery; strings borrow from the database row.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    pub id: i64,
    pub sender: i64,
    pub sender_email: &'a str,
    pub body: &'a str,
    pub media: Option<&'a str>,
    pub time: i64,
}

/// A message of a conversation, for `history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub id: i64,
    pub sender: i64,
    pub recipient: i64,
    pub body: String,
    pub media: Option<String>,
    pub time: i64,
}

impl Store {
    /// Stores a message in the iteration's transaction and returns its id.
    pub fn insert_message(&mut self, m: &NewMessage) -> Result<i64, StoreError> {
        let id = self.next_message_id()?;
        let mut st = self.write()?.prepare_cached(
            "INSERT INTO messages (recipient_id, id, sender_id, body, media, client_time, server_time, client_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        st.execute(params![m.recipient, id, m.sender, m.body, m.media, m.client_time, m.server_time, m.client_id])?;
        drop(st);
        self.messages_inserted += 1;
        Ok(id)
    }

    /// The id of the message this sender already stored under `client_id`, if any.
    pub fn message_by_client_id(&self, sender: i64, client_id: &str) -> Result<Option<i64>, StoreError> {
        let mut st = self.read().prepare_cached("SELECT id FROM messages WHERE sender_id = ?1 AND client_id = ?2")?;
        Ok(st.query_row(params![sender, client_id], |r| r.get(0)).optional()?)
    }

    /// Calls `f` for up to `limit` messages to `recipient` with ids above `after`, in id
    /// order, until it returns false; returns how many it was called for.
    pub fn messages_after(
        &self,
        recipient: i64,
        after: i64,
        limit: usize,
        mut f: impl FnMut(Stored) -> bool,
    ) -> Result<usize, StoreError> {
        let mut st = self.read().prepare_cached(
            "SELECT m.id, m.sender_id, u.email, m.body, m.media, m.client_time
             FROM messages m JOIN users u ON u.id = m.sender_id
             WHERE m.recipient_id = ?1 AND m.id > ?2 ORDER BY m.id LIMIT ?3",
        )?;
        let mut rows = st.query(params![recipient, after, limit as i64])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            n += 1;
            let more = f(Stored {
                id: r.get(0)?,
                sender: r.get(1)?,
                sender_email: r.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?,
                body: r.get_ref(3)?.as_str().map_err(rusqlite::Error::from)?,
                media: r.get_ref(4)?.as_str_or_null().map_err(rusqlite::Error::from)?,
                time: r.get(5)?,
            });
            if !more {
                break;
            }
        }
        Ok(n)
    }

    /// The messages between `a` and `b` with ids below `before`, newest first, at most `limit`.
    pub fn history(&self, a: i64, b: i64, before: i64, limit: usize) -> Result<Vec<HistoryRow>, StoreError> {
        const COLS: &str = "id, sender_id, recipient_id, body, media, client_time";
        let sql = if a == b {
            format!(
                "SELECT {COLS} FROM messages WHERE sender_id = ?1 AND recipient_id = ?2 AND id < ?3
                 ORDER BY id DESC LIMIT ?4"
            )
        } else {
            // Two index range scans (one per direction) merged, instead of an OR that
            // would scan.
            format!(
                "SELECT * FROM (
                   SELECT * FROM (SELECT {COLS} FROM messages WHERE sender_id = ?1 AND recipient_id = ?2
                                  AND id < ?3 ORDER BY id DESC LIMIT ?4)
                   UNION ALL
                   SELECT * FROM (SELECT {COLS} FROM messages WHERE sender_id = ?2 AND recipient_id = ?1
                                  AND id < ?3 ORDER BY id DESC LIMIT ?4))
                 ORDER BY id DESC LIMIT ?4"
            )
        };
        let mut st = self.read().prepare_cached(&sql)?;
        let rows = st.query_map(params![a, b, before, limit as i64], |r| {
            Ok(HistoryRow {
                id: r.get(0)?,
                sender: r.get(1)?,
                recipient: r.get(2)?,
                body: r.get(3)?,
                media: r.get(4)?,
                time: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The id up to which `user`'s messages count as delivered.
    pub fn watermark(&self, user: i64) -> Result<i64, StoreError> {
        let mut st = self.read().prepare_cached("SELECT delivered_upto FROM users WHERE id = ?1")?;
        Ok(st.query_row([user], |r| r.get(0)).optional()?.unwrap_or(0))
    }

    /// Raises `user`'s delivery watermark (never lowers it).
    pub fn set_watermark(&mut self, user: i64, upto: i64) -> Result<(), StoreError> {
        let mut st = self
            .write()?
            .prepare_cached("UPDATE users SET delivered_upto = ?2 WHERE id = ?1 AND delivered_upto < ?2")?;
        st.execute(params![user, upto])?;
        Ok(())
    }

    /// Records that `a` and `b` exchanged message `last_id` (both directions of the friends
    /// list).
    pub fn touch_contact(&mut self, a: i64, b: i64, last_id: i64) -> Result<(), StoreError> {
        let mut st = self.write()?.prepare_cached(
            "INSERT INTO contacts (user_id, peer_id, last_id) VALUES (?1, ?2, ?3), (?2, ?1, ?3)
             ON CONFLICT (user_id, peer_id) DO UPDATE SET last_id = max(last_id, excluded.last_id)",
        )?;
        st.execute(params![a, b, last_id])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, Store};
    use std::time::Duration;

    fn store() -> (tempfile::TempDir, Store, i64, i64) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("t.db"), Durability::Normal, Duration::from_millis(100)).unwrap();
        let a = s.insert_user("a@x.org", "a", "h", 0).unwrap();
        let b = s.insert_user("b@x.org", "b", "h", 0).unwrap();
        s.commit().unwrap();
        (dir, s, a, b)
    }

    fn msg(sender: i64, recipient: i64, body: &str) -> NewMessage<'_> {
        NewMessage { sender, recipient, body, media: None, client_time: 1, server_time: 2, client_id: None }
    }

    #[test]
    fn history_merges_both_directions_newest_first_and_pages() {
        let (_d, mut s, a, b) = store();
        let mut ids = Vec::new();
        for i in 0..5 {
            let (x, y) = if i % 2 == 0 { (a, b) } else { (b, a) };
            ids.push(s.insert_message(&msg(x, y, &i.to_string())).unwrap());
        }
        s.commit().unwrap();
        let page: Vec<i64> = s.history(a, b, i64::MAX, 3).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(page, vec![ids[4], ids[3], ids[2]]);
        let page: Vec<i64> = s.history(b, a, ids[2], 3).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(page, vec![ids[1], ids[0]]);
    }

    #[test]
    fn messages_after_reads_in_id_order_with_the_sender_email() {
        let (_d, mut s, a, b) = store();
        let m1 = s.insert_message(&msg(a, b, "one")).unwrap();
        let m2 = s.insert_message(&msg(a, b, "two")).unwrap();
        s.insert_message(&msg(b, a, "other way")).unwrap();
        let mut got = Vec::new();
        let n = s
            .messages_after(b, 0, 10, |m| {
                got.push((m.id, m.sender_email.to_owned(), m.body.to_owned()));
                true
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(got, vec![(m1, "a@x.org".into(), "one".into()), (m2, "a@x.org".into(), "two".into())]);
        let n = s.messages_after(b, m1, 10, |_| true).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn watermarks_only_rise_and_client_ids_are_unique_per_sender() {
        let (_d, mut s, a, b) = store();
        s.set_watermark(a, 10).unwrap();
        s.set_watermark(a, 5).unwrap();
        assert_eq!(s.watermark(a).unwrap(), 10);
        let first = s.insert_message(&NewMessage { client_id: Some("c1"), ..msg(a, b, "x") }).unwrap();
        assert_eq!(s.message_by_client_id(a, "c1").unwrap(), Some(first));
        assert_eq!(s.message_by_client_id(b, "c1").unwrap(), None);
        assert!(s.insert_message(&NewMessage { client_id: Some("c1"), ..msg(a, b, "x") }).is_err());
        s.insert_message(&NewMessage { client_id: Some("c1"), ..msg(b, a, "x") }).unwrap();
    }

    #[test]
    fn contacts_order_by_most_recent_in_both_directions() {
        let (_d, mut s, a, b) = store();
        let c = s.insert_user("c@x.org", "c", "h", 0).unwrap();
        s.touch_contact(a, b, 1).unwrap();
        s.touch_contact(c, a, 2).unwrap();
        s.touch_contact(a, b, 1).unwrap();
        s.commit().unwrap();
        let f: Vec<String> = s.friends(a).unwrap().into_iter().map(|(e, _)| e).collect();
        assert_eq!(f, ["c@x.org", "b@x.org"]);
        assert_eq!(s.friends(b).unwrap().len(), 1);
    }
}
