//! Many datagrams per system call (`recvmmsg`, `sendmmsg`) for the voice relay, and the
//! conversions between `sockaddr` and `SocketAddr` they need.
//!
//! At the relay's peak the loop spends nearly all its time in the kernel, two system calls
//! per datagram; batching takes the calls' own cost off every datagram but the first of a
//! batch. This file owns the relay's FFI and only moves bytes and addresses: which datagram
//! goes where is the core's business (chat/relay.rs). It must never keep a pointer past the
//! call that uses it.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per call.
pub const BATCH: usize = 32;

/// Receive slots for one batch, each `slot` bytes long.
pub struct Batch {
    slot: usize,
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
}

impl Batch {
    /// `slot` bytes per datagram: a longer datagram is cut to `slot` bytes, so a slot one
    /// byte longer than the largest allowed datagram shows the oversize ones.
    pub fn new(slot: usize) -> Batch {
        Batch { slot, bufs: vec![0; slot * BATCH], lens: [0; BATCH], from: [None; BATCH] }
    }

    /// The `i`th datagram of the last [`recv`](Self::recv) and its sender (`None` for an
    /// address family other than IPv4 and IPv6, which a UDP socket never reports).
    pub fn datagram(&self, i: usize) -> (Option<SocketAddr>, &[u8]) {
        let start = i * self.slot;
        (self.from[i], &self.bufs[start..start + self.lens[i]])
    }

    /// Receives up to [`BATCH`] waiting datagrams without blocking; `WouldBlock` when none
    /// is waiting. Fewer than `BATCH` means the socket's queue was empty when the call ended
    /// (a datagram arriving later raises a new readiness edge).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, chunk) in self.bufs.chunks_exact_mut(self.slot).enumerate() {
            iovs[i] = libc::iovec { iov_base: chunk.as_mut_ptr().cast(), iov_len: self.slot };
        }
        link(&mut hdrs, &mut iovs, &mut names);
        for hdr in &mut hdrs {
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: every header points into `names`, `iovs` and `self.bufs`, which outlive the
        // call and are not touched during it; the lengths are those of the buffers.
        let n = unsafe {
            libc::recvmmsg(fd, hdrs.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = (hdrs[i].msg_len as usize).min(self.slot);
            self.from[i] = to_std(&names[i], hdrs[i].msg_hdr.msg_namelen);
        }
        Ok(n)
    }

    /// Sends datagrams of the last batch: `(slot index, destination)`, at most [`BATCH`].
    /// Returns how many the kernel refused because the send buffer was full (late voice is
    /// worthless, so they are dropped, not queued); any other failure skips that one
    /// datagram and is logged.
    pub fn send(&self, fd: RawFd, out: &[(usize, SocketAddr)]) -> u64 {
        let out = &out[..out.len().min(BATCH)];
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, &(slot, to)) in out.iter().enumerate() {
            let start = slot * self.slot;
            // The kernel only reads through this pointer (sendmmsg).
            iovs[i] = libc::iovec { iov_base: self.bufs[start..].as_ptr().cast_mut().cast(), iov_len: self.lens[slot] };
            hdrs[i].msg_hdr.msg_namelen = from_std(&to, &mut names[i]);
        }
        link(&mut hdrs, &mut iovs, &mut names);
        let mut dropped = 0;
        let mut next = 0;
        while next < out.len() {
            let todo = out.len() - next;
            // SAFETY: headers `next..out.len()` point into `names`, `iovs` and `self.bufs`,
            // which outlive the call; the kernel only reads them.
            let sent = unsafe { libc::sendmmsg(fd, hdrs[next..].as_mut_ptr(), todo as libc::c_uint, 0) };
            if sent > 0 {
                next += sent as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    dropped += todo as u64;
                    break;
                }
                _ => {
                    log::debug!("relay send to {}: {e}", out[next].1);
                    next += 1;
                }
            }
        }
        dropped
    }
}

/// Points each header at its own buffer and address slot (one buffer per datagram). The
/// pointers are valid while the three arrays stay where they are: for the one call.
fn link(
    hdrs: &mut [libc::mmsghdr; BATCH],
    iovs: &mut [libc::iovec; BATCH],
    names: &mut [libc::sockaddr_storage; BATCH],
) {
    for ((hdr, iov), name) in hdrs.iter_mut().zip(iovs.iter_mut()).zip(names.iter_mut()) {
        hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
    }
}

/// The address in `s`, when it is IPv4 or IPv6.
fn to_std(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in; sockaddr_storage is
            // large and aligned enough for every sockaddr.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

/// Writes `a` into `s`; returns the length the kernel is to read.
fn from_std(a: &SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match a {
        SocketAddr::V4(v) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*v.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for every sockaddr.
            unsafe { (s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v.port().to_be(),
                // As std does: the flow label is kept as given, not byte-swapped.
                sin6_flowinfo: v.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: v.ip().octets() },
                sin6_scope_id: v.scope_id(),
            };
            // SAFETY: as above.
            unsafe { (s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn addresses_survive_the_round_trip() {
        for a in [
            "127.0.0.1:5050",
            "10.1.2.3:1",
            "0.0.0.0:65535",
            "[::1]:5050",
            "[2001:db8::7]:443",
            "[::ffff:127.0.0.1]:9",
            "[fe80::1%3]:7",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut s: libc::sockaddr_storage = unsafe { zeroed() };
            let len = from_std(&a, &mut s);
            assert_eq!(to_std(&s, len), Some(a));
        }
        // SAFETY: as above.
        let s: libc::sockaddr_storage = unsafe { zeroed() };
        assert_eq!(to_std(&s, size_of::<libc::sockaddr_storage>() as libc::socklen_t), None);
    }

    #[test]
    fn a_batch_receives_and_sends_real_datagrams() {
        batch_through_the_kernel("127.0.0.1:0");
        // IPv6 through the kernel too, where the machine has it (the round trip above
        // cannot catch a mistake made the same way in both directions).
        if UdpSocket::bind("[::1]:0").is_ok() {
            batch_through_the_kernel("[::1]:0");
        }
    }

    fn batch_through_the_kernel(any_port: &str) {
        let relay = UdpSocket::bind(any_port).unwrap();
        relay.set_nonblocking(true).unwrap();
        let a = UdpSocket::bind(any_port).unwrap();
        let b = UdpSocket::bind(any_port).unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut batch = Batch::new(8);
        assert_eq!(batch.recv(relay.as_raw_fd()).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let sent: Vec<Vec<u8>> = (0..BATCH + 3).map(|i| vec![i as u8; i % 10]).collect();
        for d in &sent {
            a.send_to(d, relay.local_addr().unwrap()).unwrap();
        }
        // A full batch first, then the rest; datagrams longer than the slot are cut to it.
        let n = batch.recv(relay.as_raw_fd()).unwrap();
        assert_eq!(n, BATCH);
        let mut out = Vec::new();
        for (i, d) in sent.iter().take(n).enumerate() {
            let (from, got) = batch.datagram(i);
            assert_eq!(from, Some(a.local_addr().unwrap()));
            assert_eq!(got, &d[..d.len().min(8)]);
            out.push((i, b.local_addr().unwrap()));
        }
        assert_eq!(batch.send(relay.as_raw_fd(), &out), 0);
        let mut buf = [0u8; 64];
        for d in sent.iter().take(n) {
            let (len, from) = b.recv_from(&mut buf).unwrap();
            assert_eq!(from, relay.local_addr().unwrap());
            assert_eq!(&buf[..len], &d[..d.len().min(8)]);
        }
        assert_eq!(batch.recv(relay.as_raw_fd()).unwrap(), 3);
    }
}
