//! The table of open connections and the loop's three lists over it: the connections to
//! read and handle this iteration, those with output to write, and those marked for
//! closing. Each connection is on each list at most once (its `queued`, `dirty` and
//! `closing` marks say so).
//!
//! Owns slots and generations: a [`ConnId`] names one connection for its whole life, and a
//! stale id (its slot reused) finds nothing. Never reads, writes or closes a socket; the
//! loop's phases do that, and only `reap` removes a connection.

use super::conn::{CloseWhy, Conn};
use crate::chat::ConnId;
use slab::Slab;

#[derive(Default)]
pub(super) struct Connections {
    slab: Slab<Conn>,
    generations: Vec<u32>,
    /// Connections to read and handle this iteration.
    pub work: Vec<usize>,
    /// Connections with output to write.
    pub dirty: Vec<usize>,
    /// Connections marked for closing.
    pub closing: Vec<usize>,
}

impl Connections {
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Adds the connection `make` builds for the id of the next free slot; `make` returns
    /// `None` when it cannot (the slot stays free).
    pub fn insert_with(&mut self, make: impl FnOnce(ConnId) -> Option<Conn>) -> Option<ConnId> {
        let entry = self.slab.vacant_entry();
        let key = entry.key();
        if self.generations.len() <= key {
            self.generations.resize(key + 1, 0);
        }
        self.generations[key] = self.generations[key].wrapping_add(1);
        let id = ConnId { slot: key as u32, generation: self.generations[key] };
        entry.insert(make(id)?);
        Some(id)
    }

    pub fn get(&self, key: usize) -> Option<&Conn> {
        self.slab.get(key)
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut Conn> {
        self.slab.get_mut(key)
    }

    /// The connection `id` names, if it is still open.
    pub fn live(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.slab.get_mut(id.slot as usize).filter(|c| c.id == id)
    }

    pub fn is_live(&self, id: ConnId) -> bool {
        self.slab.get(id.slot as usize).is_some_and(|c| c.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &Conn)> {
        self.slab.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut Conn)> {
        self.slab.iter_mut()
    }

    /// Open connections by transport, in the order of `metrics::TRANSPORTS` (for a scrape:
    /// one pass over the table).
    pub fn count_by_transport(&self) -> [u64; super::metrics::TRANSPORTS.len()] {
        let mut n = [0; super::metrics::TRANSPORTS.len()];
        for (_, c) in self.slab.iter() {
            let i = super::metrics::TRANSPORTS.iter().position(|t| *t == c.transport_name()).unwrap_or(0);
            n[i] += 1;
        }
        n
    }

    /// Puts a connection on this iteration's work list, once.
    pub fn schedule(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            if !conn.queued {
                conn.queued = true;
                self.work.push(key);
            }
        }
    }

    /// Puts a connection on the flush list, once.
    pub fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Marks a connection for the reap phase; the first reason given is the one logged.
    pub fn close(&mut self, key: usize, why: CloseWhy) {
        if let Some(conn) = self.slab.get_mut(key) {
            if conn.closing.is_none() {
                conn.closing = Some(why);
            }
            self.closing.push(key);
        }
    }

    /// Takes a connection out of the table (the reap phase only).
    pub fn remove(&mut self, key: usize) -> Option<Conn> {
        self.slab.try_remove(key)
    }
}
