//! The voice relay's UDP socket, registered in the same poll as everything else.
//!
//! Edge-triggered like the TCP sockets: a readable event is drained (up to 32 datagrams per
//! `recvmmsg`, the forwards of each batch in one `sendmmsg`; udp_batch.rs), within a
//! per-iteration budget so that a datagram flood cannot starve the TCP clients (the rest
//! waits for the next iteration, which then polls without sleeping).
//! The core decides each datagram's fate; this file only moves bytes. A datagram the
//! kernel cannot take right now (send buffer full) is dropped and counted: late voice is
//! worthless, so there is no send queue.

use super::udp_batch::{Batch, BATCH};
use crate::chat::relay::MAX_DATAGRAM;
use crate::chat::{Core, Now};
use mio::net::UdpSocket;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Datagrams handled per iteration before the loop turns to other work.
const BUDGET: usize = 4096;

pub struct RelaySocket {
    pub socket: UdpSocket,
    /// The datagrams of one `recvmmsg`, one byte longer than the largest allowed datagram
    /// each, which shows the oversize ones.
    batch: Batch,
    /// The batch's datagrams to forward: (index in the batch, destination).
    out: Vec<(usize, SocketAddr)>,
    /// Readable edge seen and not yet drained.
    pub readable: bool,
    /// Datagrams to forward that the kernel refused.
    pub send_dropped: u64,
}

impl RelaySocket {
    pub fn new(socket: UdpSocket) -> RelaySocket {
        RelaySocket {
            socket,
            batch: Batch::new(MAX_DATAGRAM + 1),
            out: Vec::with_capacity(BATCH),
            readable: false,
            send_dropped: 0,
        }
    }

    /// Relays waiting datagrams, a batch per system call each way, until the socket is
    /// drained or the budget is spent. A batch that came back short means drained: the
    /// next datagram raises a new edge (as with a short TCP read in ingress.rs).
    pub fn drain(&mut self, core: &mut Core, now: Now) {
        let fd = self.socket.as_raw_fd();
        let mut handled = 0;
        while handled < BUDGET {
            let n = match self.batch.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Not fatal, and not expected: without IP_RECVERR an unconnected UDP
                    // socket is not told of ICMP errors. Counted against the budget so that
                    // a stream of them could not hold the loop.
                    log::debug!("relay receive: {e}");
                    handled += 1;
                    continue;
                }
            };
            handled += n;
            self.out.clear();
            for i in 0..n {
                let (Some(from), data) = self.batch.datagram(i) else { continue };
                if let Some(to) = core.on_datagram(from, data, data.len(), now) {
                    self.out.push((i, to));
                }
            }
            if !self.out.is_empty() {
                self.send_dropped += self.batch.send(fd, &self.out);
            }
            if n < BATCH {
                self.readable = false;
                return;
            }
        }
    }
}
