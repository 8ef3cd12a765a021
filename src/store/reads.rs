//! Read marks and unread counts (PROTOCOL.md section 15; schema version 8). Every query
//! is an index range: a conversation's messages after a mark, never a scan.

use super::{Store, StoreError};
use rusqlite::{params, OptionalExtension};

/// Unread counts stop here (the protocol's "exact up to 10,000").
pub const UNREAD_CAP: i64 = 10_000;

/// One conversation with unread messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unread {
    /// The other user's email, or the group's id.
    pub with: Option<String>,
    pub group: Option<i64>,
    pub count: i64,
    pub last: i64,
}

impl Store {
    /// The newest message id between `a` and `b` (either way); 0 when none.
    pub fn newest_between(&mut self, a: i64, b: i64) -> Result<i64, StoreError> {
        let mut st = self.read_messages()?.prepare_cached(
            "SELECT max(m) FROM (SELECT max(id) AS m FROM messages WHERE sender_id = ?1 AND recipient_id = ?2
                                 UNION ALL SELECT max(id) FROM messages WHERE sender_id = ?2 AND recipient_id = ?1)",
        )?;
        Ok(st.query_row(params![a, b], |r| r.get::<_, Option<i64>>(0))?.unwrap_or(0))
    }

    /// The newest message id of a group; 0 when none.
    pub fn newest_in_group(&self, group: i64) -> Result<i64, StoreError> {
        let mut st = self.read().prepare_cached("SELECT max(id) FROM group_messages WHERE group_id = ?1")?;
        Ok(st.query_row([group], |r| r.get::<_, Option<i64>>(0))?.unwrap_or(0))
    }

    /// Moves `user`'s mark of its conversation with `peer` forward to `upto`; returns the
    /// stored mark (which may be further).
    pub fn mark_personal(&mut self, user: i64, peer: i64, upto: i64) -> Result<i64, StoreError> {
        let conn = self.write()?;
        conn.prepare_cached(
            "INSERT INTO read_personal (user_id, peer_id, upto) VALUES (?1, ?2, ?3)
             ON CONFLICT (user_id, peer_id) DO UPDATE SET upto = max(upto, excluded.upto)",
        )?
        .execute(params![user, peer, upto])?;
        let mut st = conn.prepare_cached("SELECT upto FROM read_personal WHERE user_id = ?1 AND peer_id = ?2")?;
        Ok(st.query_row(params![user, peer], |r| r.get(0))?)
    }

    /// Likewise for a group.
    pub fn mark_group(&mut self, user: i64, group: i64, upto: i64) -> Result<i64, StoreError> {
        let conn = self.write()?;
        conn.prepare_cached(
            "INSERT INTO read_groups (user_id, group_id, upto) VALUES (?1, ?2, ?3)
             ON CONFLICT (user_id, group_id) DO UPDATE SET upto = max(upto, excluded.upto)",
        )?
        .execute(params![user, group, upto])?;
        let mut st = conn.prepare_cached("SELECT upto FROM read_groups WHERE user_id = ?1 AND group_id = ?2")?;
        Ok(st.query_row(params![user, group], |r| r.get(0))?)
    }

    /// Every conversation of `user` with messages to it after its mark: personal ones (one
    /// range of `messages_pair` per contact) and its groups (one range of
    /// `group_messages_by_group` per membership, from its joining), newest first.
    pub fn unread(&mut self, user: i64) -> Result<Vec<Unread>, StoreError> {
        let mut out = Vec::new();
        let peers: Vec<(i64, String, i64)> = {
            let mut st = self.read_messages()?.prepare_cached(
                "SELECT c.peer_id, u.email, coalesce(r.upto, 0) FROM contacts c JOIN users u ON u.id = c.peer_id
                 LEFT JOIN read_personal r ON r.user_id = c.user_id AND r.peer_id = c.peer_id
                 WHERE c.user_id = ?1",
            )?;
            let rows = st.query_map([user], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut count_personal = self.read().prepare_cached(
            "SELECT count(*), max(id) FROM (SELECT id FROM messages WHERE sender_id = ?1 AND recipient_id = ?2
                                            AND id > ?3 ORDER BY id LIMIT ?4)",
        )?;
        for (peer, email, mark) in peers {
            let (count, last): (i64, Option<i64>) =
                count_personal.query_row(params![peer, user, mark, UNREAD_CAP], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if let (true, Some(last)) = (count > 0, last) {
                out.push(Unread { with: Some(email), group: None, count, last });
            }
        }
        drop(count_personal);
        let groups: Vec<(i64, i64)> = {
            let mut st = self.read().prepare_cached(
                "SELECT m.group_id, max(m.from_id - 1, coalesce(r.upto, 0)) FROM group_members m
                 LEFT JOIN read_groups r ON r.user_id = m.user_id AND r.group_id = m.group_id
                 WHERE m.user_id = ?1 AND m.until_id IS NULL",
            )?;
            let rows = st.query_map([user], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut count_group = self.read().prepare_cached(
            "SELECT count(*), max(id) FROM (SELECT id FROM group_messages WHERE group_id = ?1 AND id > ?2
                                            AND sender_id != ?3 ORDER BY id LIMIT ?4)",
        )?;
        for (group, mark) in groups {
            let (count, last): (i64, Option<i64>) =
                count_group.query_row(params![group, mark, user, UNREAD_CAP], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if let (true, Some(last)) = (count > 0, last) {
                out.push(Unread { with: None, group: Some(group), count, last });
            }
        }
        out.sort_by_key(|u| std::cmp::Reverse(u.last));
        Ok(out)
    }

    /// `user`'s mark of its conversation with `peer` (0 when none).
    pub fn personal_mark(&self, user: i64, peer: i64) -> Result<i64, StoreError> {
        let mut st =
            self.read().prepare_cached("SELECT upto FROM read_personal WHERE user_id = ?1 AND peer_id = ?2")?;
        Ok(st.query_row(params![user, peer], |r| r.get(0)).optional()?.unwrap_or(0))
    }
}
