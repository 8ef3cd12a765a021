//! Personal messages, delivery watermarks and contacts.

use super::{Store, StoreError};
use rusqlite::{params, OptionalExtension};
use std::ops::Range;

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

/// A message waiting in memory for the iteration's multi-row INSERT. Its strings are
/// ranges of one text buffer shared by the iteration's rows (no allocation per message).
#[derive(Debug)]
pub(super) struct Staged {
    id: i64,
    recipient: i64,
    sender: i64,
    body: Range<usize>,
    media: Option<Range<usize>>,
    client_time: i64,
    server_time: i64,
    client_id: Option<Range<usize>>,
}

/// The staged rows of an iteration and the text their ranges point into; both keep their
/// capacity from one iteration to the next.
#[derive(Debug, Default)]
pub(super) struct StagedRows {
    rows: Vec<Staged>,
    text: String,
}

impl StagedRows {
    fn put(&mut self, s: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(s);
        start..self.text.len()
    }

    fn text(&self, r: &Range<usize>) -> &str {
        self.text.get(r.clone()).unwrap_or("")
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.rows.clear();
        self.text.clear();
    }
}

/// `INSERT ... VALUES (...)` with `rows` rows of the eight message columns.
fn insert_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<[String; 4]> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        [64, 16, 4, 1].map(|n| {
            let row = "(?, ?, ?, ?, ?, ?, ?, ?)";
            format!(
                "INSERT INTO messages (id, recipient_id, sender_id, body, media, client_time, server_time, client_id) VALUES {}",
                vec![row; n].join(", ")
            )
        })
    });
    match rows {
        64 => &all[0],
        16 => &all[1],
        4 => &all[2],
        _ => &all[3],
    }
}

/// A recipient's messages after its watermark, in id order: a range of `messages_to`
/// (recipient, then the rowid that is the id).
const CATCH_UP_SQL: &str = "SELECT m.id, m.sender_id, u.email, m.body, m.media, m.client_time
     FROM messages m JOIN users u ON u.id = m.sender_id
     WHERE m.recipient_id = ?1 AND m.id > ?2 ORDER BY m.id LIMIT ?3";

/// One conversation newest first: two ranges of `messages_pair` (one per direction) merged,
/// instead of an OR that would scan.
const HISTORY_SQL: &str = "SELECT * FROM (
       SELECT * FROM (SELECT id, sender_id, recipient_id, body, media, client_time FROM messages
                      WHERE sender_id = ?1 AND recipient_id = ?2 AND id < ?3 ORDER BY id DESC LIMIT ?4)
       UNION ALL
       SELECT * FROM (SELECT id, sender_id, recipient_id, body, media, client_time FROM messages
                      WHERE sender_id = ?2 AND recipient_id = ?1 AND id < ?3 ORDER BY id DESC LIMIT ?4))
     ORDER BY id DESC LIMIT ?4";

/// Notes to oneself: one range.
const HISTORY_SELF_SQL: &str = "SELECT id, sender_id, recipient_id, body, media, client_time FROM messages
     WHERE sender_id = ?1 AND recipient_id = ?2 AND id < ?3 ORDER BY id DESC LIMIT ?4";

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

/// The message of a row whose columns are id, sender id, sender email, body, media, time
/// (a catch-up read: personal or group), borrowing its strings from the row.
pub(super) fn stored<'a>(r: &'a rusqlite::Row<'_>) -> Result<Stored<'a>, rusqlite::Error> {
    Ok(Stored {
        id: r.get(0)?,
        sender: r.get(1)?,
        sender_email: r.get_ref(2)?.as_str()?,
        body: r.get_ref(3)?.as_str()?,
        media: r.get_ref(4)?.as_str_or_null()?,
        time: r.get(5)?,
    })
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
    /// Stores a message in the iteration's transaction and returns its id. The row is
    /// staged in memory and written with the others of the iteration in multi-row INSERTs
    /// before the commit (or before any read of the messages table), which costs far less
    /// per row than one INSERT each.
    pub fn insert_message(&mut self, m: &NewMessage) -> Result<i64, StoreError> {
        self.write()?;
        let id = self.next_message_id()?;
        if let Some(cid) = m.client_id {
            self.staged_client_ids.insert((m.sender, cid.to_owned()), id);
        }
        let staged = &mut self.staged;
        let row = Staged {
            id,
            recipient: m.recipient,
            sender: m.sender,
            body: staged.put(m.body),
            media: m.media.map(|s| staged.put(s)),
            client_time: m.client_time,
            server_time: m.server_time,
            client_id: m.client_id.map(|s| staged.put(s)),
        };
        staged.rows.push(row);
        self.pending_inserts += 1;
        Ok(id)
    }

    /// Writes the staged messages into the open transaction.
    pub(super) fn flush_staged(&mut self) -> Result<(), StoreError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let mut staged = std::mem::take(&mut self.staged);
        self.staged_client_ids.clear();
        let result = self.insert_rows(&staged);
        staged.clear();
        self.staged = staged;
        result
    }

    fn insert_rows(&mut self, staged: &StagedRows) -> Result<(), StoreError> {
        let mut rest = staged.rows.as_slice();
        while !rest.is_empty() {
            // A few fixed chunk sizes keep the number of cached statements small.
            let n = [64, 16, 4, 1].into_iter().find(|&n| n <= rest.len()).unwrap_or(1);
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut st = self.write()?.prepare_cached(insert_sql(n))?;
            // Bound one by one with their concrete types (no `dyn ToSql` list to build):
            // this runs for every message.
            for (row, r) in chunk.iter().enumerate() {
                let at = row * 8;
                st.raw_bind_parameter(at + 1, r.id)?;
                st.raw_bind_parameter(at + 2, r.recipient)?;
                st.raw_bind_parameter(at + 3, r.sender)?;
                st.raw_bind_parameter(at + 4, staged.text(&r.body))?;
                st.raw_bind_parameter(at + 5, r.media.as_ref().map(|m| staged.text(m)))?;
                st.raw_bind_parameter(at + 6, r.client_time)?;
                st.raw_bind_parameter(at + 7, r.server_time)?;
                st.raw_bind_parameter(at + 8, r.client_id.as_ref().map(|c| staged.text(c)))?;
            }
            st.raw_execute()?;
        }
        Ok(())
    }

    /// The id of the message this sender already stored under `client_id`, if any.
    pub fn message_by_client_id(&self, sender: i64, client_id: &str) -> Result<Option<i64>, StoreError> {
        if let Some(&id) = self.staged_client_ids.get(&(sender, client_id.to_owned())) {
            return Ok(Some(id));
        }
        let mut st = self.read().prepare_cached("SELECT id FROM messages WHERE sender_id = ?1 AND client_id = ?2")?;
        Ok(st.query_row(params![sender, client_id], |r| r.get(0)).optional()?)
    }

    /// Calls `f` for up to `limit` messages to `recipient` with ids above `after`, in id
    /// order, until it returns false; returns how many it was called for.
    pub fn messages_after(
        &mut self,
        recipient: i64,
        after: i64,
        limit: usize,
        mut f: impl FnMut(Stored) -> bool,
    ) -> Result<usize, StoreError> {
        let mut st = self.read_messages()?.prepare_cached(CATCH_UP_SQL)?;
        let mut rows = st.query(params![recipient, after, limit as i64])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            n += 1;
            let more = f(stored(r)?);
            if !more {
                break;
            }
        }
        Ok(n)
    }

    /// The messages between `a` and `b` with ids below `before`, newest first, at most `limit`.
    pub fn history(&mut self, a: i64, b: i64, before: i64, limit: usize) -> Result<Vec<HistoryRow>, StoreError> {
        let sql = if a == b { HISTORY_SELF_SQL } else { HISTORY_SQL };
        let mut st = self.read_messages()?.prepare_cached(sql)?;
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

    /// Makes `a` and `b` contacts (both directions of the friends list) from message
    /// `first_id` on; nothing changes when they already are.
    pub fn add_contact(&mut self, a: i64, b: i64, first_id: i64) -> Result<(), StoreError> {
        let mut st = self.write()?.prepare_cached(
            "INSERT OR IGNORE INTO contacts (user_id, peer_id, first_id) VALUES (?1, ?2, ?3), (?2, ?1, ?3)",
        )?;
        st.execute(params![a, b, first_id])?;
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

    /// Every query a message or a login runs is an index search, never a scan of the
    /// messages table (the indexes end with the rowid, which is the id).
    #[test]
    fn message_queries_search_the_indexes() {
        let (_d, s, _, _) = store();
        let friends = crate::store::users::FRIENDS_SQL;
        for sql in [CATCH_UP_SQL, HISTORY_SQL, HISTORY_SELF_SQL, friends, crate::store::PENDING_OFFLINE_SQL] {
            let mut st = s.read().prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let args = rusqlite::params_from_iter(1..=st.parameter_count() as i64);
            let plan: Vec<String> = st.query_map(args, |r| r.get(3)).unwrap().collect::<Result<_, _>>().unwrap();
            let text = plan.join("\n");
            assert!(!text.contains("SCAN m"), "{sql}\n{text}");
            // Catch-up pages through backlogs of any length: a sort would read them whole.
            // (The others sort at most `limit` rows, or the user's contacts.)
            assert!(sql != CATCH_UP_SQL || !text.contains("TEMP B-TREE"), "{sql}\n{text}");
            assert!(text.contains("messages_to") || text.contains("messages_pair"), "{sql}\n{text}");
        }
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
        s.insert_message(&NewMessage { client_id: Some("c1"), ..msg(b, a, "x") }).unwrap();
        s.commit().unwrap();
        assert_eq!(s.message_by_client_id(a, "c1").unwrap(), Some(first), "found in the table once written");
        // The unique index refuses a second row; the staged write fails at the commit, and
        // with it the whole iteration (the core looks client ids up first, so never does this).
        s.insert_message(&NewMessage { client_id: Some("c1"), ..msg(a, b, "x") }).unwrap();
        assert!(s.commit().is_err());
        assert_eq!(s.history(a, b, i64::MAX, 10).unwrap().len(), 2);
    }

    #[test]
    fn staged_messages_are_visible_to_reads_before_the_commit() {
        let (_d, mut s, a, b) = store();
        let id = s.insert_message(&msg(a, b, "staged")).unwrap();
        assert_eq!(s.history(a, b, i64::MAX, 10).unwrap()[0].id, id);
        let mut seen = 0;
        s.messages_after(b, 0, 10, |_| {
            seen += 1;
            true
        })
        .unwrap();
        assert_eq!(seen, 1);
        s.rollback();
        assert!(s.history(a, b, i64::MAX, 10).unwrap().is_empty());
    }

    #[test]
    fn contacts_order_by_the_most_recent_message_in_either_direction() {
        let (_d, mut s, a, b) = store();
        let c = s.insert_user("c@x.org", "c", "h", 0).unwrap();
        let first = s.insert_message(&msg(a, b, "1")).unwrap();
        s.add_contact(a, b, first).unwrap();
        let second = s.insert_message(&msg(c, a, "2")).unwrap();
        s.add_contact(c, a, second).unwrap();
        s.commit().unwrap();
        let f: Vec<String> = s.friends(a).unwrap().into_iter().map(|f| f.email).collect();
        assert_eq!(f, ["c@x.org", "b@x.org"]);
        // b answers a: b is the most recent again, though its contact row is older.
        s.insert_message(&msg(b, a, "3")).unwrap();
        s.add_contact(a, b, 99).unwrap();
        s.commit().unwrap();
        let f: Vec<String> = s.friends(a).unwrap().into_iter().map(|f| f.email).collect();
        assert_eq!(f, ["b@x.org", "c@x.org"]);
        assert_eq!(s.friends(b).unwrap().len(), 1);
        assert_eq!(s.friends(c).unwrap().len(), 1);
    }
}
