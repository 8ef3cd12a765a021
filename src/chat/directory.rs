//! Accounts by email, as every request that names a user looks them up: a cache in front
//! of the store's `users` table.
//!
//! The recipient lookup runs for every personal message, so it must not be an SQLite query
//! each time. Entries are (id, email as registered), keyed by the ASCII-lowercased email
//! (emails are ASCII, PROTOCOL.md section 4). The cache is bounded by [`MAX_ENTRIES`]
//! (past it, it starts over) and dropped whenever another process commits to the database
//! (`natter user del`), which the core notices. Never writes the store.

use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::rc::Rc;

/// Most accounts kept; past it the cache starts over.
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct Directory {
    cache: HashMap<Box<str>, (i64, Rc<str>)>,
    /// The lowercased key of the lookup in progress (kept to reuse its allocation).
    key: String,
}

impl Directory {
    /// The account with this email (case-insensitively) as (id, email as registered).
    pub fn by_email(&mut self, store: &Store, email: &str) -> Result<Option<(i64, Rc<str>)>, StoreError> {
        self.key.clear();
        self.key.push_str(email);
        self.key.make_ascii_lowercase();
        if let Some((id, e)) = self.cache.get(self.key.as_str()) {
            return Ok(Some((*id, Rc::clone(e))));
        }
        let Some(u) = store.user_by_email(email)? else { return Ok(None) };
        if self.cache.len() >= MAX_ENTRIES {
            self.cache.clear();
        }
        let e: Rc<str> = u.email.into();
        self.cache.insert(self.key.as_str().into(), (u.id, Rc::clone(&e)));
        Ok(Some((u.id, e)))
    }

    /// Forgets everything (another process changed the accounts).
    pub fn clear(&mut self) {
        self.cache.clear();
    }
}
