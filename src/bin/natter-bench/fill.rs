//! `natter-bench fill --db FILE`: a database of realistic size for the scale runs (issue 17,
//! BENCHMARKS.md "Scale"), written through natter's own store code (`Store::insert_user`,
//! `insert_message`, `add_contact`, `mark_personal`, `set_watermark`), so the rows, indexes
//! and id blocks are exactly what a server that lived that long would hold.
//!
//! The shape: users `u0..uN` (the bench's own users, password `pw`), each talking with
//! `partners` others (`i ± d` for the first `partners / 2` of 1, 2, 3, 5, 8, 13, ...), and
//! `messages` personal messages spread evenly at random over those conversations, either
//! side sending, with text of `size` bytes. Everything is delivered; nine conversations in
//! ten are read to their last message, the tenth is left unread. A fill adds to what the file
//! holds (users that exist are kept), so 10M and then 40M more make the 50M step.

use crate::rng::Rng;
use crate::server;
use crate::workloads::Report;
use natter::password::HashParams;
use natter::store::messages::NewMessage;
use natter::store::{Durability, Store};
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Params {
    pub users: usize,
    pub messages: u64,
    pub partners: usize,
    pub size: usize,
}

/// Words for message text: not one repeated byte, so pages hold what real text makes of them.
const WORDS: [&str; 16] = [
    "the", "meeting", "moved", "to", "tomorrow", "morning", "see", "you", "there", "thanks", "ok", "lunch", "later",
    "can", "we", "talk",
];

/// The first conversation offsets: user `i` talks with `i ± d` (Fibonacci-spaced, so the
/// pairs do not repeat for any number of users above twice the largest).
fn offsets(partners: usize) -> Vec<usize> {
    let (mut a, mut b) = (1usize, 2usize);
    let mut out = Vec::new();
    while out.len() < partners.div_ceil(2) {
        out.push(a);
        (a, b) = (b, a + b);
    }
    out
}

pub fn run(db: &Path, p: &Params, hash: HashParams) -> Result<Report, String> {
    let mut r = Report::new("fill");
    let offsets = offsets(p.partners);
    if p.users < 2 * offsets.last().copied().unwrap_or(1) + 1 {
        return Err(format!("--fill-users {} is too few for --fill-partners {}", p.users, p.partners));
    }
    let started = Instant::now();
    server::provision(db, p.users, hash)?;
    r.metric("users", p.users as f64, "");
    r.metric("users written in", started.elapsed().as_secs_f64(), "s");

    let started = Instant::now();
    let err = |e: natter::store::StoreError| e.to_string();
    let mut store = Store::open(db, Durability::Normal, Duration::from_secs(5)).map_err(err)?;
    // Inserts land all over the conversation index: with SQLite's default 2 MiB page cache
    // nearly every one reads its pages back from the file. A fill is a one-off; 1 GiB.
    store.set_memory(1024, 0).map_err(err)?;
    let ids = (0..p.users).map(|i| server::user_id(&store, i)).collect::<Result<Vec<_>, _>>()?;
    // Conversation c is between users (c / k, c / k + offsets[c % k]) for k offsets.
    let k = offsets.len();
    let pair = |c: usize| (c / k, (c / k + offsets[c % k]) % p.users);
    let conversations = p.users * k;
    let mut last = vec![0i64; conversations];
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d ^ p.messages.rotate_left(17));
    let mut body = String::with_capacity(p.size + 16);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    for n in 0..p.messages {
        let x = rng.next();
        let c = (x % conversations as u64) as usize;
        let (a, b) = pair(c);
        let (from, to) = if x >> 63 == 0 { (ids[a], ids[b]) } else { (ids[b], ids[a]) };
        body.clear();
        let mut w = x;
        while body.len() < p.size {
            body.push_str(WORDS[(w & 15) as usize]);
            body.push(' ');
            w = w.rotate_right(4);
        }
        body.truncate(p.size);
        // A year of history, oldest first.
        let time = now - 365 * 86_400 + (n as i64 * 365 * 86_400) / p.messages.max(1) as i64;
        let m = NewMessage {
            sender: from,
            recipient: to,
            body: &body,
            media: None,
            client_time: time,
            server_time: time,
            client_id: None,
        };
        let id = store.insert_message(&m).map_err(err)?;
        if last[c] == 0 {
            store.add_contact(from, to, id).map_err(err)?;
        }
        last[c] = id;
        if n % 50_000 == 49_999 {
            store.commit().map_err(err)?;
        }
    }
    store.commit().map_err(err)?;
    let wrote = started.elapsed().as_secs_f64();
    r.metric("messages", p.messages as f64, "");
    r.metric("messages written", p.messages as f64 / wrote.max(1e-9), "msg/s");

    let started = Instant::now();
    let newest = last.iter().copied().max().unwrap_or(0);
    for (c, &id) in last.iter().enumerate() {
        if id == 0 || c % 10 == 9 {
            continue;
        }
        let (a, b) = pair(c);
        store.mark_personal(ids[a], ids[b], id).map_err(err)?;
        store.mark_personal(ids[b], ids[a], id).map_err(err)?;
        if c % 50_000 == 49_999 {
            store.commit().map_err(err)?;
        }
    }
    for (i, &id) in ids.iter().enumerate() {
        store.set_watermark(id, newest).map_err(err)?;
        if i % 50_000 == 49_999 {
            store.commit().map_err(err)?;
        }
    }
    store.commit().map_err(err)?;
    r.metric("marks written in", started.elapsed().as_secs_f64(), "s");
    let bytes = std::fs::metadata(db).map_or(0, |m| m.len());
    r.metric("database size", bytes as f64 / (1 << 20) as f64, "MiB");
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::offsets;

    #[test]
    fn offsets_are_distinct_and_as_many_as_half_the_partners() {
        assert_eq!(offsets(10), vec![1, 2, 3, 5, 8]);
        assert_eq!(offsets(1), vec![1]);
    }
}
