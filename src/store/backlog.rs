//! A user's backlog read in id order across its sources: the personal messages to it, and
//! each group it is or was a member of (within its membership's window), without its own
//! group messages.
//!
//! The sources are merged. Each has a cursor and a buffer of rows read ahead from its
//! index range, and a heap holds the head of each buffer. A row is read once: a batch
//! that stops (the connection's budget, its socket) leaves the rows read ahead in their
//! buffers for the next one. A source's buffer is read again only once emptied, in reads
//! that double (16 rows to start) up to a share of [`READ_AHEAD_ROWS`], so a quiet group
//! costs one short read and a busy one a few long ones; and what is buffered stays within
//! [`READ_AHEAD_BYTES`] (plus a row per source).
//!
//! The first version queried every group with news for every batch and kept only the rows
//! below the lowest end of a full read: 10,000 messages over 499 busy groups took 110 ms
//! against 7.5 ms for one group, 14 times the work per message. The merge reads each row
//! once.
//!
//! Messages only ever get larger ids than every stored one. So a source found drained
//! stays drained until the store hands out a new id, and then only the groups whose
//! `last_id` moved past what was seen are read again (and the personal messages).
//! [`Backlog`] must not outlive a deletion of rows it may have read ahead (a group or an
//! account deleted): the holder drops it and opens a new one from the last id sent.

use super::groups::GROUP_AFTER_SQL;
use super::messages::{stored, Stored};
use super::{Store, StoreError};
use rusqlite::params;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

/// Rows a backlog reads ahead across all its sources: each busy source's reads grow to its
/// share of this (4,096 measured no faster).
pub const READ_AHEAD_ROWS: usize = 1024;

/// Bytes of rows a backlog holds read ahead, at most, plus one row per source (the merge
/// needs every source's next row): a read asks for no more rows than fit, judged by the
/// source's last rows. A row may be 24 KB (text and media at their limits), so the rows
/// alone would not bound it. The rows wait only until the connection's socket drains; as
/// much as the output a catching-up connection may hold. 256 KiB made a catch-up over 499
/// groups 60% slower (reads of one row).
pub const READ_AHEAD_BYTES: usize = 1024 * 1024;

/// The first read of a source, in rows.
const FIRST_READ: usize = 16;

/// Where a user's backlog stands between batches.
#[derive(Debug)]
pub struct Backlog {
    user: i64,
    /// The personal messages first, then one per group membership with news.
    sources: Vec<Source>,
    /// The source of each group in `sources`.
    by_group: HashMap<i64, usize>,
    /// (id, source) of the first buffered row of every source with rows buffered.
    heads: BinaryHeap<Reverse<(i64, usize)>>,
    /// Sources with nothing buffered that may have more: read before a row is chosen.
    empty: Vec<usize>,
    /// The store's last message id when the drained sources were last looked at.
    seen_upto: i64,
    /// Bytes of the rows buffered (see [`READ_AHEAD_BYTES`]).
    bytes: usize,
    /// Rows read from the database and statements run, for the tests that hold the merge
    /// to reading each row once.
    pub rows_read: u64,
    pub reads: u64,
}

/// One index range of the backlog.
#[derive(Debug)]
struct Source {
    /// `None` for the personal messages.
    group: Option<i64>,
    /// The last id read; the next read starts after it.
    after: i64,
    /// The first id it may not read (`i64::MAX` for a member and for personal messages).
    until: i64,
    rows: VecDeque<Row>,
    /// Rows the next read asks for, at most.
    chunk: usize,
    /// Bytes per row in its last read.
    row_bytes: usize,
    /// Its last read was short: nothing more until the store hands out a new id.
    drained: bool,
}

/// A row read ahead.
#[derive(Debug)]
struct Row {
    id: i64,
    sender: i64,
    sender_email: String,
    body: String,
    media: Option<String>,
    time: i64,
}

impl Source {
    fn new(group: Option<i64>, after: i64, until: i64) -> Source {
        Source { group, after, until, rows: VecDeque::new(), chunk: FIRST_READ, row_bytes: 256, drained: false }
    }
}

impl From<Stored<'_>> for Row {
    fn from(m: Stored) -> Row {
        Row {
            id: m.id,
            sender: m.sender,
            sender_email: m.sender_email.to_owned(),
            body: m.body.to_owned(),
            media: m.media.map(str::to_owned),
            time: m.time,
        }
    }
}

impl Row {
    /// What it holds in memory, about.
    fn size(&self) -> usize {
        64 + self.sender_email.len() + self.body.len() + self.media.as_ref().map_or(0, String::len)
    }
}

impl Backlog {
    /// Marks source `i` as worth reading again.
    fn wake(&mut self, i: usize) {
        let s = &mut self.sources[i];
        if s.drained {
            s.drained = false;
            // With rows still buffered it is read again once they are taken.
            if s.rows.is_empty() {
                self.empty.push(i);
            }
        }
    }

    /// It holds rows read ahead.
    pub fn holds_rows(&self) -> bool {
        self.bytes > 0
    }

    /// The personal messages are its only source and nothing is buffered: a batch can be
    /// read in place from the rows.
    fn personal_only(&self) -> bool {
        self.sources.len() == 1 && self.heads.is_empty()
    }
}

impl Store {
    /// Opens the backlog of `user` after message `after`.
    pub fn backlog(&self, user: i64, after: i64) -> Result<Backlog, StoreError> {
        let mut b = Backlog {
            user,
            sources: vec![Source::new(None, after, i64::MAX)],
            by_group: HashMap::new(),
            heads: BinaryHeap::new(),
            empty: vec![0],
            seen_upto: after,
            bytes: 0,
            rows_read: 0,
            reads: 0,
        };
        self.notice_news(&mut b)?;
        Ok(b)
    }

    /// Gives `f` the next messages of the backlog in id order, at most `limit`, until `f`
    /// returns false (it has taken the message it was given). `group` is `None` for a
    /// personal message. Returns false when the backlog is read to its end, true while more
    /// may remain. Must run with no write pending, so that no message can be stored between
    /// the last read and what the caller does on false.
    pub fn read_backlog(
        &mut self,
        b: &mut Backlog,
        limit: usize,
        f: impl FnMut(Stored, Option<i64>) -> bool,
    ) -> Result<bool, StoreError> {
        self.reading(|store| store.read_batch(b, limit, f))
    }

    fn read_batch(
        &mut self,
        b: &mut Backlog,
        limit: usize,
        mut f: impl FnMut(Stored, Option<i64>) -> bool,
    ) -> Result<bool, StoreError> {
        if self.last_message_id != b.seen_upto {
            self.notice_news(b)?;
        }
        if b.personal_only() {
            return self.read_personal_in_place(b, limit, f);
        }
        for _ in 0..limit {
            while let Some(&i) = b.empty.last() {
                self.read_ahead(b, i)?;
                b.empty.pop();
            }
            let Some(Reverse((_, i))) = b.heads.pop() else { return Ok(false) };
            let source = &mut b.sources[i];
            let Some(row) = source.rows.pop_front() else { continue };
            b.bytes -= row.size();
            match source.rows.front() {
                Some(next) => b.heads.push(Reverse((next.id, i))),
                None if !source.drained => b.empty.push(i),
                None => {}
            }
            let m = Stored {
                id: row.id,
                sender: row.sender,
                sender_email: &row.sender_email,
                body: &row.body,
                media: row.media.as_deref(),
                time: row.time,
            };
            if !f(m, source.group) {
                return Ok(true);
            }
        }
        Ok(true)
    }

    /// A batch of a backlog whose only source is the personal messages, read without a copy.
    fn read_personal_in_place(
        &mut self,
        b: &mut Backlog,
        limit: usize,
        mut f: impl FnMut(Stored, Option<i64>) -> bool,
    ) -> Result<bool, StoreError> {
        if b.sources[0].drained {
            return Ok(false);
        }
        let (mut last, mut stopped) = (b.sources[0].after, false);
        let read = self.messages_after(b.user, last, limit, |m| {
            last = m.id;
            stopped = !f(m, None);
            !stopped
        });
        // Before the error is looked at: the rows given to `f` were sent, even when a later
        // row failed, and must not be read again.
        let s = &mut b.sources[0];
        s.after = last;
        let n = read?;
        b.reads += 1;
        b.rows_read += n as u64;
        s.drained = n < limit && !stopped;
        b.empty.clear();
        if !s.drained {
            b.empty.push(0);
        }
        Ok(!s.drained)
    }

    /// Reads the next rows of source `i` into its buffer.
    fn read_ahead(&mut self, b: &mut Backlog, i: usize) -> Result<(), StoreError> {
        let share = (READ_AHEAD_ROWS / b.sources.len()).max(FIRST_READ);
        let room = READ_AHEAD_BYTES.saturating_sub(b.bytes);
        let (user, s) = (b.user, &mut b.sources[i]);
        let want = s.chunk.min(room / s.row_bytes).max(1);
        let before = s.rows.len();
        if let Err(e) = self.read_source(user, s, want) {
            // A read that failed half way leaves nothing behind to be read twice.
            s.rows.truncate(before);
            return Err(e);
        }
        let n = s.rows.len() - before;
        let bytes: usize = s.rows.iter().skip(before).map(Row::size).sum();
        b.bytes += bytes;
        b.reads += 1;
        b.rows_read += n as u64;
        if let Some(per_row) = bytes.checked_div(n) {
            s.row_bytes = per_row.max(1);
        }
        s.drained = n < want;
        if !s.drained && want == s.chunk {
            s.chunk = (s.chunk * 2).min(share);
        }
        if let Some(last) = s.rows.back() {
            s.after = last.id;
        }
        if let Some(first) = s.rows.front() {
            b.heads.push(Reverse((first.id, i)));
        }
        Ok(())
    }

    /// Appends the next rows of one source (at most `want`) to its buffer.
    fn read_source(&mut self, user: i64, s: &mut Source, want: usize) -> Result<(), StoreError> {
        match s.group {
            None => {
                let rows = &mut s.rows;
                self.messages_after(user, s.after, want, |m| {
                    rows.push_back(Row::from(m));
                    true
                })?;
            }
            Some(_) if s.after >= s.until - 1 => {}
            Some(group) => {
                let mut st = self.read().prepare_cached(GROUP_AFTER_SQL)?;
                let mut found = st.query(params![group, s.after, user, want as i64, s.until - 1])?;
                while let Some(r) = found.next()? {
                    s.rows.push_back(Row::from(stored(r)?));
                }
            }
        }
        Ok(())
    }

    /// Wakes the sources that may have messages the backlog has not seen: the personal
    /// messages, and the groups whose `last_id` moved past `seen_upto` (a group joined
    /// since is added). A membership's window is taken as it is now.
    fn notice_news(&self, b: &mut Backlog) -> Result<(), StoreError> {
        let upto = self.last_message_id;
        b.wake(0);
        for (group, from_id, until_id) in self.memberships_with_news(b.user, b.seen_upto)? {
            // Ids before `seen_upto` were read from every group that had any.
            let from = b.seen_upto.max(from_id - 1);
            match b.by_group.get(&group).copied() {
                Some(i) => {
                    let s = &mut b.sources[i];
                    s.until = until_id;
                    s.after = s.after.max(from_id - 1);
                    b.wake(i);
                }
                None => {
                    b.by_group.insert(group, b.sources.len());
                    b.sources.push(Source::new(Some(group), from, until_id));
                    b.empty.push(b.sources.len() - 1);
                }
            }
        }
        b.seen_upto = upto;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Backlog;
    use crate::store::groups::NewGroupMessage;
    use crate::store::messages::NewMessage;
    use crate::store::{Durability, Store};
    use std::time::Duration;

    fn store() -> (tempfile::TempDir, Store, i64, i64) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("t.db"), Durability::Normal, Duration::from_millis(100)).unwrap();
        let me = s.insert_user("me@x.org", "me", "h", 0).unwrap();
        let other = s.insert_user("o@x.org", "o", "h", 0).unwrap();
        (dir, s, me, other)
    }

    fn make_groups(s: &mut Store, n: usize, members: &[i64]) -> Vec<i64> {
        let groups: Vec<i64> = (0..n).map(|i| s.create_group(&format!("g{i}"), members[0], 0).unwrap()).collect();
        for &g in &groups {
            for &m in members {
                s.add_group_member(g, m, 1, 1).unwrap();
            }
        }
        groups
    }

    fn to_group(s: &mut Store, group: i64, sender: i64, body: &str) -> i64 {
        let m = NewGroupMessage { group, sender, body, media: None, client_time: 0, server_time: 0, client_id: None };
        s.insert_group_message(&m).unwrap()
    }

    fn personal(s: &mut Store, sender: i64, recipient: i64, body: &str) -> i64 {
        let m = NewMessage { sender, recipient, body, media: None, client_time: 0, server_time: 0, client_id: None };
        s.insert_message(&m).unwrap()
    }

    /// Reads the whole backlog in batches of `limit`, each stopped by `f` after `stop`
    /// messages; returns the ids and how many batches it took.
    fn drain(s: &mut Store, b: &mut Backlog, limit: usize, stop: usize) -> (Vec<i64>, usize) {
        let (mut got, mut batches) = (Vec::new(), 0);
        loop {
            batches += 1;
            let mut taken = 0;
            let more = s
                .read_backlog(b, limit, |m, _| {
                    got.push(m.id);
                    taken += 1;
                    taken < stop
                })
                .unwrap();
            assert!(taken <= limit);
            if !more {
                return (got, batches);
            }
        }
    }

    /// Each message of a member of 200 busy groups is read from the database once. The
    /// first merge read each group's range for every batch and threw away what passed the
    /// lowest full range: here 11 times the rows.
    #[test]
    fn a_member_of_many_busy_groups_reads_each_row_once() {
        let (_d, mut s, me, other) = store();
        let groups = make_groups(&mut s, 200, &[other, me]);
        let mut expected = Vec::new();
        for i in 0..4000 {
            expected.push(to_group(&mut s, groups[i % 200], other, "m"));
        }
        s.commit().unwrap();
        let mut b = s.backlog(me, 0).unwrap();
        let (got, _) = drain(&mut s, &mut b, 64, usize::MAX);
        assert_eq!(got, expected);
        assert_eq!(b.rows_read, 4000);
        // Each group: 16 rows, then 32 (4 left and a short read), the personal messages once.
        assert_eq!(b.reads, 2 * 200 + 1);
    }

    /// A read's growing LIMIT does not make SQLite prepare the statement again (with the
    /// planner reading bound values, each new size was parsed and planned anew: a third of
    /// the work over 100 groups).
    #[test]
    fn reads_of_growing_size_do_not_prepare_their_statement_again() {
        let (_d, mut s, me, other) = store();
        let groups = make_groups(&mut s, 3, &[other, me]);
        for i in 0..600 {
            to_group(&mut s, groups[i % 3], other, "m");
        }
        s.commit().unwrap();
        let mut b = s.backlog(me, 0).unwrap();
        let (got, _) = drain(&mut s, &mut b, 64, usize::MAX);
        assert_eq!(got.len(), 600);
        let st = s.read().prepare_cached(super::GROUP_AFTER_SQL).unwrap();
        assert_eq!(st.get_status(rusqlite::StatementStatus::RePrepare), 0);
        assert!(st.get_status(rusqlite::StatementStatus::VmStep) > 600);
    }

    /// Rows read ahead stay within their byte budget however large the messages, also
    /// for a reader that takes one message per batch; nothing is lost or repeated.
    #[test]
    fn read_ahead_is_bounded_in_bytes() {
        let (_d, mut s, me, other) = store();
        let groups = make_groups(&mut s, 2, &[other, me]);
        let big = "x".repeat(4000);
        let mut expected = Vec::new();
        for i in 0..1600 {
            expected.push(to_group(&mut s, groups[i % 2], other, &big));
        }
        s.commit().unwrap();
        let mut b = s.backlog(me, 0).unwrap();
        let mut got = Vec::new();
        loop {
            let more = s
                .read_backlog(&mut b, 64, |m, _| {
                    got.push(m.id);
                    false
                })
                .unwrap();
            assert!(b.bytes <= super::READ_AHEAD_BYTES + 3 * 4100, "{} bytes held", b.bytes);
            if !more {
                break;
            }
        }
        assert_eq!(got, expected);
    }

    /// Quiet groups cost a catch-up nothing: with one busy group among 200, the backlog
    /// reads that group and the personal messages, not the other 199.
    #[test]
    fn quiet_groups_cost_a_backlog_nothing() {
        let (_d, mut s, me, other) = store();
        let groups = make_groups(&mut s, 200, &[other, me]);
        to_group(&mut s, groups[3], other, "old");
        let mark = s.last_message_id;
        for _ in 0..100 {
            to_group(&mut s, groups[7], other, "m");
        }
        s.commit().unwrap();
        let mut b = s.backlog(me, mark).unwrap();
        let (got, _) = drain(&mut s, &mut b, 64, usize::MAX);
        assert_eq!(got.len(), 100);
        // The group: 16 rows, 32, then 52 of 64; the personal messages once.
        assert_eq!((b.reads, b.rows_read), (4, 100));
    }

    /// Paging the merged backlog in batches of any size, stopped anywhere, gives every
    /// message once in id order whatever the mix of sources, also with messages and a group
    /// joined while it is read and news in a group read to its end; a member's own group messages and those from before its
    /// joining or after its leaving are not in it.
    #[test]
    fn the_merged_backlog_pages_every_message_once_in_order() {
        for (limit, stop) in [(1, usize::MAX), (5, 3), (37, usize::MAX), (37, 1), (2048, 100)] {
            let (_d, mut s, me, other) = store();
            let groups = make_groups(&mut s, 7, &[other, me]);
            let small = make_groups(&mut s, 1, &[other, me])[0];
            let late = s.create_group("late", other, 0).unwrap();
            s.add_group_member(late, other, 1, 1).unwrap();
            to_group(&mut s, late, other, "before my joining");
            let mut expected = Vec::new();
            let write = |s: &mut Store, expected: &mut Vec<i64>, i: usize, groups: &[i64]| match i % 9 {
                0 | 1 => expected.push(personal(s, other, me, "p")),
                8 => {
                    to_group(s, groups[i % groups.len()], me, "mine");
                }
                k => expected.push(to_group(s, groups[(i * 7 + k) % groups.len()], other, "g")),
            };
            for i in 0..400 {
                write(&mut s, &mut expected, i, &groups);
            }
            // A group read to its end by the first batch, with news after it.
            expected.push(to_group(&mut s, small, other, "s"));
            s.commit().unwrap();
            let mut b = s.backlog(me, 0).unwrap();
            let mut got = Vec::new();
            let mut taken = 0;
            s.read_backlog(&mut b, limit, |m, _| {
                got.push(m.id);
                taken += 1;
                taken < stop
            })
            .unwrap();
            // News while it is read: more messages, a group joined, a group left.
            for i in 400..600 {
                write(&mut s, &mut expected, i, &groups);
            }
            expected.push(to_group(&mut s, small, other, "s"));
            s.add_group_member(late, me, 2, s.next_id_peek()).unwrap();
            s.touch_group(late, s.next_id_peek() - 1).unwrap();
            expected.push(to_group(&mut s, late, other, "after my joining"));
            s.remove_group_member(groups[0], me).unwrap();
            s.touch_group(groups[0], s.next_id_peek() - 1).unwrap();
            to_group(&mut s, groups[0], other, "after my leaving");
            s.commit().unwrap();
            let (rest, _) = drain(&mut s, &mut b, limit, stop);
            got.extend(rest);
            assert_eq!(got, expected, "limit {limit}, stop {stop}");
        }
    }

    /// A backlog of personal messages only is read in place, a batch per statement, and
    /// learns of a group joined while it is read.
    #[test]
    fn personal_messages_alone_are_read_in_place() {
        let (_d, mut s, me, other) = store();
        let mut expected: Vec<i64> = (0..100).map(|_| personal(&mut s, other, me, "p")).collect();
        s.commit().unwrap();
        let mut b = s.backlog(me, 0).unwrap();
        let mut got = Vec::new();
        assert!(s
            .read_backlog(&mut b, 60, |m, _| {
                got.push(m.id);
                true
            })
            .unwrap());
        assert_eq!(b.reads, 1);
        let g = make_groups(&mut s, 1, &[other, me])[0];
        expected.push(to_group(&mut s, g, other, "g"));
        s.commit().unwrap();
        let (rest, _) = drain(&mut s, &mut b, 60, usize::MAX);
        got.extend(rest);
        assert_eq!(got, expected);
        assert_eq!(b.rows_read, 101);
    }
}
