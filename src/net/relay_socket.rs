//! The voice relay's UDP socket, registered in the same poll as everything else.
//!
//! Edge-triggered like the TCP sockets: every readable event drains the socket until it
//! would block. Datagrams nobody is owed are counted and dropped.

use mio::net::UdpSocket;
use std::io;

/// Largest datagram accepted; anything longer is truncated by the kernel and dropped.
const MAX_DATAGRAM: usize = 1500;

pub struct RelaySocket {
    pub socket: UdpSocket,
    buf: Vec<u8>,
    /// Datagrams dropped because no call expects them.
    pub dropped: u64,
}

impl RelaySocket {
    pub fn new(socket: UdpSocket) -> RelaySocket {
        RelaySocket { socket, buf: vec![0; MAX_DATAGRAM + 1], dropped: 0 }
    }

    /// Reads every waiting datagram.
    pub fn drain(&mut self) {
        loop {
            match self.socket.recv_from(&mut self.buf) {
                Ok(_) => self.dropped += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP errors from an earlier send surface here; they are not fatal.
                    log::debug!("relay receive: {e}");
                }
            }
        }
    }
}
