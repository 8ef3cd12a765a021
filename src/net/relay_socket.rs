//! The voice relay's UDP socket, registered in the same poll as everything else.
//!
//! Edge-triggered like the TCP sockets: a readable event is drained until the socket would
//! block, within a per-iteration budget so that a datagram flood cannot starve the TCP
//! clients (the rest waits for the next iteration, which then polls without sleeping).
//! The core decides each datagram's fate; this file only moves bytes. A datagram the
//! kernel cannot take right now (send buffer full) is dropped and counted: late voice is
//! worthless, so there is no send queue.

use crate::chat::relay::MAX_DATAGRAM;
use crate::chat::{Core, Now};
use mio::net::UdpSocket;
use std::io;

/// Datagrams handled per iteration before the loop turns to other work.
const BUDGET: usize = 4096;

pub struct RelaySocket {
    pub socket: UdpSocket,
    buf: Vec<u8>,
    /// Readable edge seen and not yet drained to `WouldBlock`.
    pub readable: bool,
    /// Datagrams to forward that the kernel refused.
    pub send_dropped: u64,
}

impl RelaySocket {
    pub fn new(socket: UdpSocket) -> RelaySocket {
        // One byte more than the largest allowed datagram shows oversize ones.
        RelaySocket { socket, buf: vec![0; MAX_DATAGRAM + 1], readable: false, send_dropped: 0 }
    }

    /// Relays waiting datagrams until the socket would block or the budget is spent.
    pub fn drain(&mut self, core: &mut Core, now: Now) {
        for _ in 0..BUDGET {
            let (n, from) = match self.socket.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors from an earlier send surface here; they are not fatal.
                    log::debug!("relay receive: {e}");
                    continue;
                }
            };
            let Some(to) = core.on_datagram(from, &self.buf[..n], n, now) else { continue };
            match self.socket.send_to(&self.buf[..n], to) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.send_dropped += 1,
                Err(e) => log::debug!("relay send to {to}: {e}"),
            }
        }
    }
}
