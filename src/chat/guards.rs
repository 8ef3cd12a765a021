//! The abuse limits counted over time (PROTOCOL.md sections 4, 10 and 12): failed logins,
//! OTP mails and call attempts, each a sliding window per key.
//!
//! Owns every [`Throttle`] of the core, so that the rules of who is slowed down, by what
//! key, live in one room: a handler asks whether it may go on (`*_wait`) and reports what
//! happened. Client addresses are keyed by [`address::key`] here, never by the caller.
//! Never decides an answer's wording; never touches the store.

use super::address;
use super::throttle::Throttle;
use crate::config::Limits;
use std::net::IpAddr;

/// Why an OTP mail may not go now, and for how many ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpWait {
    /// The email address had its mails this hour.
    Email(u64),
    /// The client address asked for its mails this hour.
    Address(u64),
}

impl OtpWait {
    /// The `failed` message for it (registration and password reset alike).
    pub fn message(self) -> String {
        match self {
            OtpWait::Email(ms) => format!("too many codes sent to this address; retry in {} s", ms.div_ceil(1000)),
            OtpWait::Address(ms) => {
                format!("too many codes requested from your network address; retry in {} s", ms.div_ceil(1000))
            }
        }
    }
}

pub struct Guards {
    /// Failed logins by (name as sent, client address): 5 a minute. Keyed on the name as
    /// sent, known or not, so a throttled answer tells nothing about which accounts exist;
    /// and per address, so nobody can lock a user out from elsewhere.
    login_by_name: Throttle<(String, IpAddr)>,
    /// Failed logins by client address: 20 a minute.
    login_by_address: Throttle<IpAddr>,
    /// Failed logins by name from every address: 100 an hour (distributed guessing).
    login_by_name_hourly: Throttle<String>,
    /// OTP mails by email and by client address, counted when a request is accepted.
    otp_by_email: Throttle<String>,
    otp_by_address: Throttle<IpAddr>,
    /// Calls placed, by caller.
    calls: Throttle<i64>,
}

const MINUTE: u64 = 60_000;
const HOUR: u64 = 3_600_000;

impl Guards {
    pub fn new(limits: &Limits) -> Guards {
        Guards {
            login_by_name: Throttle::new(MINUTE, limits.login_fails_per_name),
            login_by_address: Throttle::new(MINUTE, limits.login_fails_per_ip),
            login_by_name_hourly: Throttle::new(HOUR, limits.login_fails_per_name_hourly),
            otp_by_email: Throttle::new(HOUR, limits.otp_mails_per_hour),
            otp_by_address: Throttle::new(HOUR, limits.otp_mails_per_ip),
            calls: Throttle::new(MINUTE, limits.call_attempts_per_minute),
        }
    }

    /// `Some(ms)` while a login for `name` (lowercased, as sent) from `peer` must wait.
    pub fn login_wait(&self, name: &str, peer: IpAddr, now_ms: u64) -> Option<u64> {
        let addr = address::key(peer);
        [
            self.login_by_name.blocked(&(name.to_owned(), addr), now_ms),
            self.login_by_address.blocked(&addr, now_ms),
            self.login_by_name_hourly.blocked(&name.to_owned(), now_ms),
        ]
        .into_iter()
        .flatten()
        .max()
    }

    /// A login for `name` from `peer` failed (a throttled attempt is never reported).
    pub fn login_failed(&mut self, name: String, peer: IpAddr, now_ms: u64) {
        let addr = address::key(peer);
        self.login_by_address.record(addr, now_ms);
        self.login_by_name.record((name.clone(), addr), now_ms);
        self.login_by_name_hourly.record(name, now_ms);
    }

    /// A login for `name` from `peer` succeeded: that address's failures for the name are
    /// forgotten; the address's own count and other addresses' stand.
    pub fn login_succeeded(&mut self, name: String, peer: IpAddr) {
        self.login_by_name.clear(&(name, address::key(peer)));
    }

    /// `Some` while an OTP mail to `email` (lowercased) asked from `peer` must wait.
    pub fn otp_wait(&self, email: &str, peer: IpAddr, now_ms: u64) -> Option<OtpWait> {
        if let Some(ms) = self.otp_by_email.blocked(&email.to_owned(), now_ms) {
            return Some(OtpWait::Email(ms));
        }
        self.otp_by_address.blocked(&address::key(peer), now_ms).map(OtpWait::Address)
    }

    /// An OTP mail to `email` from `peer` was accepted: counted now, not when it is sent,
    /// so that requests arriving while earlier ones still hash see them (300 at once
    /// once gave 300 mails).
    pub fn otp_accepted(&mut self, email: String, peer: IpAddr, now_ms: u64) {
        self.otp_by_email.record(email, now_ms);
        self.otp_by_address.record(address::key(peer), now_ms);
    }

    /// `Some(ms)` while `user` may place no call. Otherwise the attempt is counted, whatever
    /// its outcome: `call` then `end` in a loop would ring someone's every device.
    pub fn call_attempt(&mut self, user: i64, now_ms: u64) -> Option<u64> {
        let wait = self.calls.blocked(&user, now_ms);
        if wait.is_none() {
            self.calls.record(user, now_ms);
        }
        wait
    }

    /// Forgets windows that have aged out (the core runs this once a minute).
    pub fn sweep(&mut self, now_ms: u64) {
        self.login_by_name.sweep(now_ms);
        self.login_by_address.sweep(now_ms);
        self.login_by_name_hourly.sweep(now_ms);
        self.otp_by_email.sweep(now_ms);
        self.otp_by_address.sweep(now_ms);
        self.calls.sweep(now_ms);
    }
}
