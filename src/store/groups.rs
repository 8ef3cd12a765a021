//! Groups: the groups, their members, their messages (PROTOCOL.md section 14; schema
//! version 6). One row per group message whatever the member count; what a member has
//! received is its user's watermark, as for personal messages.

use super::{Store, StoreError};
use rusqlite::{params, OptionalExtension};

/// A group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub id: i64,
    pub name: String,
    pub owner: i64,
}

/// A member as stored, in joining order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub user: i64,
    pub email: String,
    pub joined: i64,
}

/// A group message to store.
#[derive(Debug, Clone, Copy)]
pub struct NewGroupMessage<'a> {
    pub group: i64,
    pub sender: i64,
    pub body: &'a str,
    pub media: Option<&'a str>,
    pub client_time: i64,
    pub server_time: i64,
    pub client_id: Option<&'a str>,
}

/// A group message of `history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHistoryRow {
    pub id: i64,
    pub sender_email: String,
    pub body: String,
    pub media: Option<String>,
    pub time: i64,
}

/// One group's messages after an id, for a member: a range of `group_messages_by_group`.
pub(super) const GROUP_AFTER_SQL: &str = "SELECT g.id, g.sender_id, u.email, g.body, g.media, g.client_time
     FROM group_messages g JOIN users u ON u.id = g.sender_id
     WHERE g.group_id = ?1 AND g.id > ?2 AND g.id <= ?5 AND g.sender_id != ?3 ORDER BY g.id LIMIT ?4";

/// One group's messages before an id, newest first, from a member's joining on.
const GROUP_HISTORY_SQL: &str = "SELECT g.id, u.email, g.body, g.media, g.client_time
     FROM group_messages g JOIN users u ON u.id = g.sender_id
     WHERE g.group_id = ?1 AND g.id >= ?2 AND g.id < ?3 ORDER BY g.id DESC LIMIT ?4";

impl Store {
    /// Creates a group owned by `owner` (members are added separately); returns its id.
    pub fn create_group(&mut self, name: &str, owner: i64, now: i64) -> Result<i64, StoreError> {
        let conn = self.write()?;
        conn.prepare_cached("INSERT INTO groups (name, owner_id, created_at) VALUES (?1, ?2, ?3)")?
            .execute(params![name, owner, now])?;
        Ok(conn.last_insert_rowid())
    }

    pub fn group(&self, id: i64) -> Result<Option<GroupRow>, StoreError> {
        let mut st = self.read().prepare_cached("SELECT id, name, owner_id FROM groups WHERE id = ?1")?;
        Ok(st.query_row([id], |r| Ok(GroupRow { id: r.get(0)?, name: r.get(1)?, owner: r.get(2)? })).optional()?)
    }

    /// A group's members in joining order.
    pub fn group_members(&self, id: i64) -> Result<Vec<MemberRow>, StoreError> {
        let mut st = self.read().prepare_cached(
            "SELECT m.user_id, u.email, m.joined FROM group_members m JOIN users u ON u.id = m.user_id
             WHERE m.group_id = ?1 AND m.until_id IS NULL ORDER BY m.joined",
        )?;
        let rows = st.query_map([id], |r| Ok(MemberRow { user: r.get(0)?, email: r.get(1)?, joined: r.get(2)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds a member who may read the group's messages from `from_id` on.
    pub fn add_group_member(&mut self, group: i64, user: i64, joined: i64, from_id: i64) -> Result<(), StoreError> {
        let mut st = self.write()?.prepare_cached(
            "INSERT INTO group_members (group_id, user_id, joined, from_id) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (group_id, user_id) DO UPDATE SET joined = ?3, from_id = ?4, until_id = NULL
             WHERE until_id IS NOT NULL",
        )?;
        st.execute(params![group, user, joined, from_id])?;
        Ok(())
    }

    /// Ends a membership: what was sent before now still reaches the member at its next
    /// login (its row keeps the window), nothing after.
    pub fn remove_group_member(&mut self, group: i64, user: i64) -> Result<(), StoreError> {
        let until = self.next_id_peek();
        let mut st = self.write()?.prepare_cached(
            "UPDATE group_members SET until_id = ?3 WHERE group_id = ?1 AND user_id = ?2 AND until_id IS NULL",
        )?;
        st.execute(params![group, user, until])?;
        Ok(())
    }

    pub fn rename_group(&mut self, group: i64, name: &str) -> Result<(), StoreError> {
        let mut st = self.write()?.prepare_cached("UPDATE groups SET name = ?2 WHERE id = ?1")?;
        st.execute(params![group, name])?;
        Ok(())
    }

    pub fn set_group_owner(&mut self, group: i64, owner: i64) -> Result<(), StoreError> {
        let mut st = self.write()?.prepare_cached("UPDATE groups SET owner_id = ?2 WHERE id = ?1")?;
        st.execute(params![group, owner])?;
        Ok(())
    }

    /// Deletes a group, its members and its messages.
    pub fn delete_group(&mut self, group: i64) -> Result<(), StoreError> {
        let conn = self.write()?;
        conn.prepare_cached("DELETE FROM group_messages WHERE group_id = ?1")?.execute([group])?;
        conn.prepare_cached("DELETE FROM groups WHERE id = ?1")?.execute([group])?;
        Ok(())
    }

    /// Notes activity in a group (message `id`, or a change at the id sequence's end).
    pub fn touch_group(&mut self, group: i64, id: i64) -> Result<(), StoreError> {
        let mut st = self.write()?.prepare_cached("UPDATE groups SET last_id = max(last_id, ?2) WHERE id = ?1")?;
        st.execute(params![group, id])?;
        Ok(())
    }

    /// A user's groups, most recently active first.
    pub fn groups_of(&self, user: i64) -> Result<Vec<i64>, StoreError> {
        let mut st = self.read().prepare_cached(
            "SELECT g.id FROM group_members m JOIN groups g ON g.id = m.group_id
             WHERE m.user_id = ?1 AND m.until_id IS NULL ORDER BY g.last_id DESC, g.id DESC",
        )?;
        let rows = st.query_map([user], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A user's memberships, past ones included, as (group, the first message id it may
    /// read, the first it may not: `i64::MAX` while it is a member).
    pub fn memberships(&self, user: i64) -> Result<Vec<(i64, i64, i64)>, StoreError> {
        let mut st = self.read().prepare_cached(
            "SELECT group_id, from_id, coalesce(until_id, 9223372036854775807) FROM group_members WHERE user_id = ?1",
        )?;
        let rows = st.query_map([user], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// [`memberships`](Self::memberships) of groups with activity after message `after`.
    pub(super) fn memberships_with_news(&self, user: i64, after: i64) -> Result<Vec<(i64, i64, i64)>, StoreError> {
        let mut st = self.read().prepare_cached(
            "SELECT m.group_id, m.from_id, coalesce(m.until_id, 9223372036854775807)
             FROM group_members m JOIN groups g ON g.id = m.group_id WHERE m.user_id = ?1 AND g.last_id > ?2",
        )?;
        let rows = st.query_map([user, after], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many groups `user` is in.
    pub fn group_count(&self, user: i64) -> Result<usize, StoreError> {
        let mut st =
            self.read().prepare_cached("SELECT count(*) FROM group_members WHERE user_id = ?1 AND until_id IS NULL")?;
        Ok(st.query_row([user], |r| r.get::<_, i64>(0))? as usize)
    }

    /// The id the next message will get: where a member added now starts reading.
    pub fn next_id_peek(&self) -> i64 {
        self.last_message_id + 1
    }

    /// Stores a group message in the iteration's transaction; returns its id.
    pub fn insert_group_message(&mut self, m: &NewGroupMessage) -> Result<i64, StoreError> {
        let id = self.next_message_id()?;
        let mut st = self.write()?.prepare_cached(
            "INSERT INTO group_messages (id, group_id, sender_id, body, media, client_time, server_time, client_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        st.execute(params![id, m.group, m.sender, m.body, m.media, m.client_time, m.server_time, m.client_id])?;
        drop(st);
        self.touch_group(m.group, id)?;
        Ok(id)
    }

    /// The id of the group message this sender already stored under `client_id`, if any.
    pub fn group_message_by_client_id(&self, sender: i64, client_id: &str) -> Result<Option<i64>, StoreError> {
        let mut st =
            self.read().prepare_cached("SELECT id FROM group_messages WHERE sender_id = ?1 AND client_id = ?2")?;
        Ok(st.query_row(params![sender, client_id], |r| r.get(0)).optional()?)
    }

    /// A group's messages with ids in `from_id..before`, newest first, at most `limit`.
    pub fn group_history(
        &self,
        group: i64,
        from_id: i64,
        before: i64,
        limit: usize,
    ) -> Result<Vec<GroupHistoryRow>, StoreError> {
        let mut st = self.read().prepare_cached(GROUP_HISTORY_SQL)?;
        let rows = st.query_map(params![group, from_id, before, limit as i64], |r| {
            Ok(GroupHistoryRow {
                id: r.get(0)?,
                sender_email: r.get(1)?,
                body: r.get(2)?,
                media: r.get(3)?,
                time: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The first message id `user` may read in `group`, when it is a member.
    pub fn member_from(&self, group: i64, user: i64) -> Result<Option<i64>, StoreError> {
        let mut st = self.read().prepare_cached(
            "SELECT from_id FROM group_members WHERE group_id = ?1 AND user_id = ?2 AND until_id IS NULL",
        )?;
        Ok(st.query_row(params![group, user], |r| r.get(0)).optional()?)
    }

    /// Takes a user out of every group as `leave` would (an account being deleted): the
    /// earliest-joined remaining member becomes owner of the groups it owned, and a group
    /// left empty is deleted. Also deletes the group messages it sent. Returns the groups
    /// it was in.
    pub fn leave_all_groups(&mut self, user: i64) -> Result<Vec<i64>, StoreError> {
        let groups: Vec<i64> =
            self.memberships(user)?.into_iter().filter(|m| m.2 == i64::MAX).map(|(g, _, _)| g).collect();
        for &g in &groups {
            self.remove_group_member(g, user)?;
            let members = self.group_members(g)?;
            match members.first() {
                None => self.delete_group(g)?,
                Some(first) => {
                    if self.group(g)?.is_some_and(|row| row.owner == user) {
                        self.set_group_owner(g, first.user)?;
                    }
                }
            }
        }
        self.write()?.prepare_cached("DELETE FROM group_messages WHERE sender_id = ?1")?.execute([user])?;
        Ok(groups)
    }
}
