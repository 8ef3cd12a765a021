//! Personal and global messages, history and receipts (PROTOCOL.md sections 7, 8, 11);
//! group messages are groups.rs's.
//!
//! A personal message is validated, stored in the iteration's transaction, answered `sent`
//! and handed to the recipient's connections that are live; all of these sends wait for the
//! commit, and if it fails the sender gets `failed` and nobody gets the message. A recipient
//! connection still catching up on its backlog is skipped: the message is in the store by
//! the time its backlog read reaches it. Bytes for many receivers are encoded once.

use super::sessions::{ConnId, Feed};
use super::{blocks, delivery, groups, validate, Core, Now, OnCommitFail};
use crate::protocol::response::{self, HistoryItem, PersonalOut};
use crate::protocol::{Conversation, Message};
use crate::store::messages::NewMessage;
use crate::store::StoreError;
use std::rc::Rc;

const T: &str = "message";

pub(super) fn personal(core: &mut Core, conn: ConnId, m: &Message, now: Now) {
    let Some(me) = core.sessions.get(conn).and_then(|s| s.member.clone()) else { return };
    if let Err(rule) = check(m) {
        return core.out.failed(conn, T, rule);
    }
    let Some(to) = m.to.as_deref() else { return core.out.invalid(conn, T, "`to` is required") };
    let peer = if to.eq_ignore_ascii_case(&me.email) {
        Some((me.user_id, Rc::clone(&me.email)))
    } else {
        match core.user_by_email(to) {
            Ok(u) => u,
            Err(e) => return store_failed(core, conn, &e),
        }
    };
    let Some((peer_id, peer_email)) = peer else { return core.out.failed(conn, T, "unknown recipient") };
    if blocks::blocks(core, peer_id, me.user_id) {
        return core.out.failed(conn, T, "not accepted by this recipient");
    }
    if let Some(cid) = m.client_id.as_deref() {
        match core.store.message_by_client_id(me.user_id, cid) {
            Ok(Some(id)) => {
                core.out.send(conn, OnCommitFail::Keep, |b| response::message_sent(b, id));
                return;
            }
            Ok(None) => {}
            Err(e) => return store_failed(core, conn, &e),
        }
    }
    let time = m.time.unwrap_or(now.unix);
    let new = NewMessage {
        sender: me.user_id,
        recipient: peer_id,
        body: &m.message,
        media: m.media.as_deref(),
        client_time: time,
        server_time: now.unix,
        client_id: m.client_id.as_deref(),
    };
    let id = match core.store.insert_message(&new) {
        Ok(id) => id,
        Err(e) => return store_failed(core, conn, &e),
    };
    core.out.send(conn, OnCommitFail::Fail(T), |b| response::message_sent(b, id));
    let out = PersonalOut { id, message: &m.message, media: m.media.as_deref(), from: &me.email, time, to: None };
    if peer_id == me.user_id {
        // To oneself: the other connections get it, with `to`, as a delivery.
        delivery::hold(core, me.user_id, id, conn);
        let bytes = core.out.encode(|b| response::personal(b, &PersonalOut { to: Some(&peer_email), ..out }));
        delivery::deliver_live(core, peer_id, id, bytes, conn);
    } else {
        core.contacts.note(me.user_id, peer_id, id);
        let bytes = core.out.encode(|b| response::personal(b, &out));
        delivery::deliver_live(core, peer_id, id, bytes, conn);
        // The sender's other devices see the conversation too.
        let others: Vec<ConnId> = core.sessions.conns_of(me.user_id).iter().copied().filter(|c| *c != conn).collect();
        if !others.is_empty() {
            let copy = core.out.encode(|b| response::personal(b, &PersonalOut { to: Some(&peer_email), ..out }));
            for c in others {
                core.out.send_again(c, copy.clone(), OnCommitFail::Drop);
            }
        }
    }
    // A connection catching up would read its own message back from the store.
    if let Some(s) = core.sessions.get_mut(conn) {
        if peer_id == me.user_id && matches!(s.feed, Feed::CatchUp { .. }) {
            s.skip.push(id);
        }
    }
}

pub(super) fn global(core: &mut Core, conn: ConnId, m: &Message, now: Now) {
    let Some(from) = core.sessions.get(conn).and_then(|s| s.member.as_ref()).map(|m| Rc::clone(&m.email)) else {
        return;
    };
    if let Err(rule) = check(m) {
        return core.out.failed(conn, T, rule);
    }
    let time = m.time.unwrap_or(now.unix);
    let bytes = core.out.encode(|b| response::global(b, &m.message, m.media.as_deref(), &from, time));
    let receivers: Vec<ConnId> = core.sessions.all_online().filter(|c| *c != conn).collect();
    core.counters.global_deliveries += receivers.len() as u64;
    for c in receivers {
        core.out.send_again(c, bytes.clone(), OnCommitFail::Keep);
    }
}

pub(super) fn history(core: &mut Core, conn: ConnId, of: &Conversation, before: Option<i64>, limit: Option<i64>) {
    const H: &str = "history";
    let Some(me) = core.sessions.get(conn).and_then(|s| s.member.clone()) else { return };
    let limit = match limit {
        None => 50,
        Some(n) if n <= 0 => return core.out.invalid(conn, H, "`limit` must be a positive integer"),
        Some(n) => n.min(200) as usize,
    };
    let with = match of {
        Conversation::With(with) => with,
        Conversation::Group(group) => return groups::history(core, conn, group, before, limit),
    };
    let (peer_id, peer_email) = match core.user_by_email(with) {
        Ok(Some(u)) => u,
        Ok(None) => return core.out.failed(conn, H, "unknown user"),
        Err(e) => {
            log::error!("history lookup failed: {e}");
            return core.out.failed(conn, H, "could not read history now; try again");
        }
    };
    let rows = match core.store.history(me.user_id, peer_id, before.unwrap_or(i64::MAX), limit) {
        Ok(rows) => rows,
        Err(e) => {
            log::error!("history read failed: {e}");
            return core.out.failed(conn, H, "could not read history now; try again");
        }
    };
    let email = |id: i64| if id == me.user_id { &*me.email } else { &*peer_email };
    core.out.send_sized(conn, H, |b, max| {
        response::history(
            b,
            max,
            rows.iter().map(|r| HistoryItem {
                id: r.id,
                from: email(r.sender),
                to: Some(email(r.recipient)),
                group: None,
                message: &r.body,
                media: r.media.as_deref(),
                time: r.time,
            }),
        )
    });
}

pub(super) fn ack(core: &mut Core, conn: ConnId, id: i64, now: Now) {
    let Some(s) = core.sessions.get(conn) else { return };
    if !s.member.as_ref().is_some_and(|m| m.acks) {
        return core.out.invalid(conn, "ack", "this connection did not log in with \"acks\":true");
    }
    // An ack covers only what was sent to this connection.
    let upto = id.min(s.last_sent);
    delivery::advance(core, conn, upto);
    core.schedule_watermarks(now);
}

/// The value rules of section 7 shared by personal, global and group messages.
pub(super) fn check(m: &Message) -> Result<(), &'static str> {
    validate::text(&m.message)?;
    if let Some(media) = m.media.as_deref() {
        validate::media(media)?;
    }
    match m.client_id.as_deref() {
        Some(c) if c.len() > 64 => Err("client_id must be at most 64 bytes"),
        _ => Ok(()),
    }
}

fn store_failed(core: &mut Core, conn: ConnId, e: &StoreError) {
    log::error!("storing a message failed: {e}");
    core.out.failed(conn, T, "could not be stored; try again");
}
