//! The call log.

use super::{Store, StoreError};
use rusqlite::params;

/// How a call ended and what the relay carried, for [`Store::end_call`].
#[derive(Debug, Clone, Copy)]
pub struct CallEnd<'a> {
    pub ended_at: i64,
    pub outcome: &'a str,
    /// (datagrams, bytes) relayed from the caller and from the callee.
    pub from_caller: (u64, u64),
    pub from_callee: (u64, u64),
}

impl Store {
    /// Records a call that starts ringing; returns its id.
    pub fn insert_call(&mut self, caller: i64, callee: i64, rang_at: i64) -> Result<i64, StoreError> {
        let conn = self.write()?;
        let mut st = conn.prepare_cached("INSERT INTO calls (caller_id, callee_id, rang_at) VALUES (?1, ?2, ?3)")?;
        st.execute(params![caller, callee, rang_at])?;
        Ok(conn.last_insert_rowid())
    }

    pub fn answer_call(&mut self, id: i64, at: i64) -> Result<(), StoreError> {
        let mut st = self.write()?.prepare_cached("UPDATE calls SET answered_at = ?2 WHERE id = ?1")?;
        st.execute(params![id, at])?;
        Ok(())
    }

    pub fn end_call(&mut self, id: i64, end: &CallEnd) -> Result<(), StoreError> {
        let mut st = self.write()?.prepare_cached(
            "UPDATE calls SET ended_at = ?2, outcome = ?3, caller_datagrams = ?4, caller_bytes = ?5,
             callee_datagrams = ?6, callee_bytes = ?7 WHERE id = ?1",
        )?;
        st.execute(params![
            id,
            end.ended_at,
            end.outcome,
            end.from_caller.0 as i64,
            end.from_caller.1 as i64,
            end.from_callee.0 as i64,
            end.from_callee.1 as i64
        ])?;
        Ok(())
    }
}
