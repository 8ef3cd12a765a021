//! The client address that per-address limits and throttles are keyed on.
//!
//! An IPv4 address (also when it arrives IPv4-mapped on an IPv6 socket) stands for itself.
//! An IPv6 client counts by its /64: one host usually holds a whole /64 (SLAAC, privacy
//! addresses), so keying on the full address would give one attacker 2^64 fresh keys.

use std::net::{IpAddr, Ipv6Addr};

/// The key of `ip` for per-address limits.
pub fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_stands_for_itself_and_v6_counts_by_its_slash_64() {
        let v4: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(key(v4), v4);
        assert_eq!(key("::ffff:127.0.0.2".parse().unwrap()), v4);
        let a = key("2001:db8:1:2:aaaa::1".parse().unwrap());
        assert_eq!(a, key("2001:db8:1:2:bbbb::9".parse().unwrap()));
        assert_ne!(a, key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(a, "2001:db8:1:2::".parse::<IpAddr>().unwrap());
    }
}
