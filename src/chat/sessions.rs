//! Who is connected, as whom, and what each connection is waiting for.
//!
//! A session exists for every open TCP connection, indexed by the connection's slab slot.
//! The generation in [`ConnId`] tells a connection from an earlier one in the same slot, so a
//! late worker result or timer for a closed connection is never applied to its successor.

use super::address;
use crate::protocol::Subscriptions;
use crate::store::UserRow;
use crate::timer_wheel::TimerId;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::rc::Rc;

/// A connection: its slab slot (the mio token) and the generation of that slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub slot: u32,
    pub generation: u32,
}

/// A registration between its request and its verification.
#[derive(Debug)]
pub struct Pending {
    pub email: String,
    pub username: String,
    /// Set once the worker has hashed the password.
    pub hash: Option<String>,
    pub otp: String,
    pub tries_left: u32,
    pub expires_ms: u64,
    pub timer: Option<TimerId>,
}

/// A worker job this connection waits for. While set, its frames are not read.
#[derive(Debug)]
pub enum Busy {
    /// Hashing the password, then mailing the OTP.
    Registering(Pending),
    /// Checking a password. `user` is `None` when the name matched no account.
    LoggingIn { user: Option<UserRow>, name_key: String, acks: bool, subscribe: Subscriptions },
    /// A logged-in user's password change or account deletion (self_service.rs).
    SelfService(super::self_service::Step),
}

/// A logged-in connection's user.
#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: i64,
    /// Shared, so that handlers can hold it while they change the session registry.
    pub email: Rc<str>,
    /// Logged in with `"acks":true` (PROTOCOL.md section 11).
    pub acks: bool,
    /// The events of section 15 it asked for at login.
    pub subscribe: Subscriptions,
}

/// How personal messages reach a logged-in connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Reading the backlog from the store after this id, paced by the socket. New
    /// messages are not sent live meanwhile: they are stored, so the backlog reaches them.
    CatchUp { cursor: i64 },
    /// Up to date: new messages are sent as they are stored.
    Live,
}

#[derive(Debug)]
pub struct Session {
    pub peer: IpAddr,
    pub local: IpAddr,
    pub member: Option<Member>,
    /// A verified-OTP-able registration (anonymous connections only).
    /// Boxed, like `busy`: rare, and a logged-in idle session should stay small.
    pub pending: Option<Box<Pending>>,
    pub busy: Option<Box<Busy>>,
    /// The anonymous idle deadline; `None` while logged in.
    pub auth_timer: Option<TimerId>,
    pub feed: Feed,
    /// The highest message id sent to this connection (an `ack` cannot go past it).
    pub last_sent: i64,
    /// Messages to oneself sent from this connection while it catches up: the backlog
    /// must not echo them back to it.
    pub skip: Vec<i64>,
}

impl Session {
    /// Every deadline this session holds, to cancel when it goes.
    pub fn timers(&self) -> impl Iterator<Item = TimerId> {
        let otp = self.pending.as_ref().and_then(|p| p.timer);
        self.auth_timer.into_iter().chain(otp)
    }
}

/// A user with at least one logged-in connection.
#[derive(Debug, Default)]
pub struct Online {
    pub conns: Vec<ConnId>,
    /// Every message to this user with an id at or below this has been delivered.
    pub watermark: i64,
    /// Messages to oneself not yet delivered to another connection, with the connection
    /// that sent them: the watermark may not pass them on that connection's word.
    pub holds: BTreeMap<i64, ConnId>,
}

/// Open connections from one client address ([`address::key`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AddressCount {
    pub total: u32,
    pub anonymous: u32,
}

/// Sessions by connection, connections by logged-in user, and counts by client address.
#[derive(Default)]
pub struct Sessions {
    slots: Vec<Option<(u32, Session)>>,
    online: HashMap<i64, Online>,
    by_address: HashMap<IpAddr, AddressCount>,
    /// Sessions open, and connections logged in (kept so that a scrape does not count).
    open: usize,
    logged_in: usize,
}

impl Sessions {
    pub fn open(&mut self, id: ConnId, peer: IpAddr, local: IpAddr, auth_timer: TimerId) {
        let slot = id.slot as usize;
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, || None);
        }
        let s = Session {
            peer,
            local,
            member: None,
            pending: None,
            busy: None,
            auth_timer: Some(auth_timer),
            feed: Feed::Live,
            last_sent: 0,
            skip: Vec::new(),
        };
        if self.slots[slot].replace((id.generation, s)).is_none() {
            self.open += 1;
        }
        let count = self.by_address.entry(address::key(peer)).or_default();
        count.total += 1;
        count.anonymous += 1;
    }

    /// The client behind a trusted proxy is at `peer`, and reached the server at `local`
    /// (a PROXY header): the connection counts at that address from now on.
    pub fn readdress(&mut self, id: ConnId, peer: IpAddr, local: IpAddr) {
        let Some(s) = self.get_mut(id) else { return };
        let (old, anonymous) = (s.peer, i32::from(s.member.is_none()));
        s.peer = peer;
        s.local = local;
        self.count(old, -anonymous, -1);
        let count = self.by_address.entry(address::key(peer)).or_default();
        count.total += 1;
        count.anonymous = count.anonymous.saturating_add_signed(anonymous);
    }

    /// The connections open from `peer`'s client address.
    pub fn at_address(&self, peer: IpAddr) -> AddressCount {
        self.by_address.get(&address::key(peer)).copied().unwrap_or_default()
    }

    /// Adds `anonymous` to the anonymous count of `peer`'s address and `total` to its
    /// total; forgets the address when no connection is left.
    fn count(&mut self, peer: IpAddr, anonymous: i32, total: i32) {
        let key = address::key(peer);
        if let Some(c) = self.by_address.get_mut(&key) {
            c.anonymous = c.anonymous.saturating_add_signed(anonymous);
            c.total = c.total.saturating_add_signed(total);
            if c.total == 0 {
                self.by_address.remove(&key);
            }
        }
    }

    pub fn get(&self, id: ConnId) -> Option<&Session> {
        match self.slots.get(id.slot as usize) {
            Some(Some((g, s))) if *g == id.generation => Some(s),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Session> {
        match self.slots.get_mut(id.slot as usize) {
            Some(Some((g, s))) if *g == id.generation => Some(s),
            _ => None,
        }
    }

    /// Removes the session, logging it out first.
    pub fn close(&mut self, id: ConnId) -> Option<Session> {
        self.logout(id);
        let slot = self.slots.get_mut(id.slot as usize)?;
        let s = match slot {
            Some((g, _)) if *g == id.generation => slot.take().map(|(_, s)| s),
            _ => None,
        }?;
        self.open -= 1;
        self.count(s.peer, -1, -1);
        Some(s)
    }

    /// Marks the connection as logged in as `member`. `watermark` is used when the user
    /// was not online yet.
    pub fn login(&mut self, id: ConnId, member: Member, watermark: i64) {
        let user = member.user_id;
        let Some(s) = self.get_mut(id) else { return };
        let was_anonymous = s.member.is_none();
        s.member = Some(member);
        s.last_sent = 0;
        let peer = s.peer;
        if was_anonymous {
            self.count(peer, -1, 0);
        }
        let online = self.online.entry(user).or_insert_with(|| Online { watermark, ..Online::default() });
        online.conns.push(id);
        self.logged_in += 1;
        let cursor = online.watermark;
        if let Some(s) = self.get_mut(id) {
            s.feed = Feed::CatchUp { cursor };
        }
    }

    /// Returns the connection to anonymous; gives back who it was.
    pub fn logout(&mut self, id: ConnId) -> Option<Member> {
        let s = self.get_mut(id)?;
        let member = s.member.take()?;
        s.feed = Feed::Live;
        s.skip = Vec::new();
        let peer = s.peer;
        self.count(peer, 1, 0);
        if let Some(online) = self.online.get_mut(&member.user_id) {
            let before = online.conns.len();
            online.conns.retain(|c| *c != id);
            self.logged_in -= before - online.conns.len();
            if online.conns.is_empty() {
                self.online.remove(&member.user_id);
            }
        }
        Some(member)
    }

    /// The connections logged in as `user`, oldest first.
    pub fn conns_of(&self, user: i64) -> &[ConnId] {
        self.online.get(&user).map_or(&[], |o| o.conns.as_slice())
    }

    /// The connections of `user` that subscribed at login to what `pick` chooses.
    pub fn subscribed(&self, user: i64, pick: impl Fn(&Subscriptions) -> bool) -> Vec<ConnId> {
        self.conns_of(user)
            .iter()
            .copied()
            .filter(|c| self.get(*c).and_then(|s| s.member.as_ref()).is_some_and(|m| pick(&m.subscribe)))
            .collect()
    }

    /// The delivery state of an online user.
    pub fn online(&self, user: i64) -> Option<&Online> {
        self.online.get(&user)
    }

    pub fn online_mut(&mut self, user: i64) -> Option<&mut Online> {
        self.online.get_mut(&user)
    }

    /// (anonymous connections, logged-in connections, users online).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.open - self.logged_in, self.logged_in, self.online.len())
    }

    /// Every user with a logged-in connection.
    pub fn online_users(&self) -> impl Iterator<Item = i64> + '_ {
        self.online.keys().copied()
    }

    /// Every logged-in connection.
    pub fn all_online(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.online.values().flat_map(|o| o.conns.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::{ConnId, Member, Sessions};
    use crate::timer_wheel::TimerWheel;
    use std::net::{IpAddr, Ipv4Addr};

    /// The counts a scrape shows are kept, not counted, and stay equal to a recount
    /// through opens, logins (two connections of one user), logouts and closes.
    #[test]
    fn kept_counts_equal_a_recount() {
        let mut timers = TimerWheel::new(10, 64);
        let mut s = Sessions::default();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let id = |slot| ConnId { slot, generation: 1 };
        let member =
            |user| Member { user_id: user, email: "x@x.org".into(), acks: false, subscribe: Default::default() };
        let recount = |s: &Sessions| {
            let open = s.slots.iter().filter(|x| x.is_some()).count();
            let logged_in: usize = s.online.values().map(|o| o.conns.len()).sum();
            (open - logged_in, logged_in, s.online.len())
        };
        for slot in 0..6 {
            s.open(id(slot), ip, ip, timers.insert(1000, ()));
        }
        s.login(id(0), member(7), 0);
        s.login(id(1), member(7), 0);
        s.login(id(2), member(8), 0);
        assert_eq!(s.counts(), (3, 3, 2));
        s.logout(id(1));
        s.logout(id(1));
        assert_eq!(s.counts(), (4, 2, 2));
        s.close(id(2));
        s.close(id(3));
        s.close(id(3));
        assert_eq!(s.counts(), (3, 1, 1));
        assert_eq!(s.counts(), recount(&s));
    }
}
