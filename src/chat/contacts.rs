//! The friends list's writes, batched per commit (PROTOCOL.md section 5).
//!
//! Two users become contacts with their first personal message. Writing a contacts row
//! with every message would double what a message writes, so the pairs seen in an
//! iteration are written once, at its commit, and pairs known to be contacts already are
//! remembered and write nothing (bounded by [`KNOWN_MAX`]; past it the set starts over and
//! refills, one `INSERT OR IGNORE` per pair, as messages flow). The set is dropped when
//! another process changes the database. Only this room writes the contacts table.

use crate::store::{Store, StoreError};
use std::collections::{HashMap, HashSet};

/// Pairs remembered as contacts before the set starts over.
const KNOWN_MAX: usize = 100_000;

#[derive(Default)]
pub struct Contacts {
    /// Pairs (lower id, higher id) that became contacts in this iteration, with the id of
    /// their first message.
    new: HashMap<(i64, i64), i64>,
    /// Pairs known to be contacts already.
    known: HashSet<(i64, i64)>,
}

impl Contacts {
    /// `a` and `b` exchanged message `id`.
    pub fn note(&mut self, a: i64, b: i64, id: i64) {
        let pair = (a.min(b), a.max(b));
        if !self.known.contains(&pair) {
            self.new.entry(pair).or_insert(id);
        }
    }

    /// Writes the iteration's new pairs into the open transaction. A row that breaks a
    /// constraint (an account deleted meanwhile) is lost alone: it must not fail every
    /// message of the iteration with it.
    pub fn write(&self, store: &mut Store) -> Result<(), StoreError> {
        for (&(a, b), &first) in &self.new {
            match store.add_contact(a, b, first) {
                Err(e) if e.is_constraint() => log::warn!("contact {a}-{b} not stored: {e}"),
                r => r?,
            }
        }
        Ok(())
    }

    /// The commit ended: the new pairs are known now if it was stored, forgotten if not.
    pub fn committed(&mut self, stored: bool) {
        if !stored {
            self.new.clear();
            return;
        }
        if self.known.len() >= KNOWN_MAX {
            self.known.clear();
        }
        self.known.extend(self.new.drain().map(|(pair, _)| pair));
    }

    /// Forgets the known pairs (another process changed the database).
    pub fn forget(&mut self) {
        self.known.clear();
    }
}
