//! Blocks (PROTOCOL.md section 16; schema version 7).

use super::{Store, StoreError};
use rusqlite::params;

impl Store {
    /// Every block as (blocker, blocked).
    pub fn all_blocks(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut st = self.read().prepare_cached("SELECT user_id, blocked_id FROM blocks")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn block(&mut self, user: i64, blocked: i64) -> Result<(), StoreError> {
        let mut st = self.write()?.prepare_cached(
            "INSERT INTO blocks (user_id, blocked_id) VALUES (?1, ?2) ON CONFLICT (user_id, blocked_id) DO NOTHING",
        )?;
        st.execute(params![user, blocked])?;
        Ok(())
    }

    pub fn unblock(&mut self, user: i64, blocked: i64) -> Result<(), StoreError> {
        let mut st = self.write()?.prepare_cached("DELETE FROM blocks WHERE user_id = ?1 AND blocked_id = ?2")?;
        st.execute(params![user, blocked])?;
        Ok(())
    }

    /// The emails `user` blocks, in order.
    pub fn blocked_by(&self, user: i64) -> Result<Vec<String>, StoreError> {
        let mut st = self.read().prepare_cached(
            "SELECT u.email FROM blocks b JOIN users u ON u.id = b.blocked_id WHERE b.user_id = ?1 ORDER BY u.email",
        )?;
        let rows = st.query_map([user], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
