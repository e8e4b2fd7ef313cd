//! The core of step 02: a sans-IO tunnel endpoint.
//!
//! [`Tunnel::encapsulate`] turns an IP packet read from the TUN device into a
//! message for the peer; [`Tunnel::decapsulate`] turns a message from the
//! peer into an IP packet for the TUN device, or into a reply. Timers (the
//! client's retries and keepalives) run in [`Tunnel::poll`]. Time comes in
//! as an argument; the core never reads a clock, touches a socket or
//! allocates, so tests wire two tunnels back to back in memory.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use step01_ping_tun::counts::{Counts, Reason};

use crate::wire::{self, Repr};

/// How often the client sends a Ping until the server first answers.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

// ANCHOR: drop_reason
/// Why a packet or message was dropped. Each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A message shorter than the 4-byte header.
    Truncated,
    /// A message of a version we do not speak.
    BadVersion,
    /// A message type we do not know.
    UnknownType,
    /// Reserved header bytes that are not zero.
    BadReserved,
    /// A Ping or Pong with a payload, or an empty Data message.
    BadLength,
    /// A payload (or a packet from the TUN device) that is not a whole IPv4
    /// or IPv6 packet.
    NotIp,
    /// An inner packet larger than the tunnel MTU.
    TooBig,
    /// The server has not heard from a client yet, so has nowhere to send.
    NoPeer,
    /// The client got a datagram from someone other than its server.
    UnknownSender,
    /// The caller's output buffer is too small.
    NoRoom,
}

impl Reason for DropReason {
    const ALL: &'static [DropReason] = &[
        DropReason::Truncated,
        DropReason::BadVersion,
        DropReason::UnknownType,
        DropReason::BadReserved,
        DropReason::BadLength,
        DropReason::NotIp,
        DropReason::TooBig,
        DropReason::NoPeer,
        DropReason::UnknownSender,
        DropReason::NoRoom,
    ];

    fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadVersion => "bad-version",
            DropReason::UnknownType => "unknown-type",
            DropReason::BadReserved => "bad-reserved",
            DropReason::BadLength => "bad-length",
            DropReason::NotIp => "not-ip",
            DropReason::TooBig => "too-big",
            DropReason::NoPeer => "no-peer",
            DropReason::UnknownSender => "unknown-sender",
            DropReason::NoRoom => "no-room",
        }
    }
}

impl From<wire::Error> for DropReason {
    fn from(e: wire::Error) -> Self {
        match e {
            wire::Error::Truncated => DropReason::Truncated,
            wire::Error::BadVersion => DropReason::BadVersion,
            wire::Error::UnknownType => DropReason::UnknownType,
            wire::Error::BadReserved => DropReason::BadReserved,
            wire::Error::BadLength => DropReason::BadLength,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
// ANCHOR_END: drop_reason

/// Packets and bytes each way, and drops by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// IP packets sent into the tunnel, and their bytes.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// IP packets that came out of the tunnel, and their bytes.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub drops: Counts<DropReason>,
}

impl fmt::Display for Counters {
    /// `sent 3 packets (252 bytes), received 3 packets (252 bytes), dropped 0`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} packets ({} bytes), received {} packets ({} bytes), dropped {}",
            self.tx_packets, self.tx_bytes, self.rx_packets, self.rx_bytes, self.drops
        )
    }
}

/// A message to send: `len` bytes at the start of the output buffer, to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub len: usize,
}

/// What to do with a message received from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write the IP packet of `len` bytes at the start of the output buffer
    /// to the TUN device.
    WriteToTun(usize),
    /// Send this reply.
    Reply(Transmit),
    /// Nothing more to do (a Pong arrived).
    Nothing,
}

/// Which end of the tunnel this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Knows its server's address and starts the conversation.
    Client { server: SocketAddr },
    /// Learns its client's address from the client's messages.
    Server,
}

// ANCHOR: tunnel
/// One end of the tunnel.
#[derive(Debug, Clone)]
pub struct Tunnel {
    role: Role,
    /// Largest inner packet we send, in bytes: the TUN device's MTU.
    mtu: usize,
    /// Largest inner packet we accept from the peer. The peer computed its
    /// MTU for its own underlay family: an IPv4 client of a server that
    /// listens on `[::]` sends 20 bytes more than the server would.
    max_received: usize,
    keepalive: Option<Duration>,
    /// Where messages for the peer go: the server for a client; for a
    /// server, the address its client's messages last came from.
    peer: Option<SocketAddr>,
    /// When we last heard from the peer (any valid message).
    last_heard: Option<Instant>,
    /// When we last sent anything to the peer.
    last_sent: Option<Instant>,
    /// When the client last sent a Ping.
    last_ping: Option<Instant>,
    counters: Counters,
}
// ANCHOR_END: tunnel

impl Tunnel {
    pub fn new(role: Role, mtu: usize, keepalive: Option<Duration>) -> Self {
        let peer = match role {
            Role::Client { server } => Some(server),
            Role::Server => None,
        };
        Self {
            role,
            mtu,
            max_received: mtu,
            keepalive,
            peer,
            last_heard: None,
            last_sent: None,
            last_ping: None,
            counters: Counters::default(),
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The largest inner packet we send, in bytes.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Accepts inner packets of up to `max` bytes from the peer (at least
    /// our own MTU).
    pub fn accepting_up_to(mut self, max: usize) -> Self {
        self.max_received = max.max(self.mtu);
        self
    }

    /// The largest inner packet we accept from the peer, in bytes.
    pub fn max_received(&self) -> usize {
        self.max_received
    }

    /// Where messages for the peer go now, if anywhere.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// True once the peer has been heard from.
    pub fn connected(&self) -> bool {
        self.last_heard.is_some()
    }

    fn drop(&mut self, reason: DropReason) -> DropReason {
        self.counters.drops.increment(reason);
        reason
    }

    // ANCHOR: encapsulate
    /// Wraps an IP packet read from the TUN device in a Data message for the
    /// peer, written to the start of `out`.
    pub fn encapsulate(
        &mut self,
        packet: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Transmit, DropReason> {
        if packet.len() > self.mtu {
            return Err(self.drop(DropReason::TooBig));
        }
        if ip_packet_len(packet) != Some(packet.len()) {
            return Err(self.drop(DropReason::NotIp));
        }
        let Some(to) = self.peer else {
            return Err(self.drop(DropReason::NoPeer));
        };
        let Some(len) = Repr::Data(packet).emit(out) else {
            return Err(self.drop(DropReason::NoRoom));
        };
        self.counters.tx_packets += 1;
        self.counters.tx_bytes += packet.len() as u64;
        self.last_sent = Some(now);
        Ok(Transmit { to, len })
    }
    // ANCHOR_END: encapsulate

    // ANCHOR: decapsulate
    /// Handles a message that arrived from `from`.
    pub fn decapsulate(
        &mut self,
        from: SocketAddr,
        message: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Action, DropReason> {
        if let Role::Client { server } = self.role
            && from != server
        {
            return Err(self.drop(DropReason::UnknownSender));
        }
        let repr = Repr::parse_bytes(message).map_err(|e| self.drop(e.into()))?;
        if let Repr::Data(packet) = repr {
            // Check the packet before it counts as a sign of life.
            if packet.len() > self.max_received {
                return Err(self.drop(DropReason::TooBig));
            }
            if ip_packet_len(packet) != Some(packet.len()) {
                return Err(self.drop(DropReason::NotIp));
            }
        }
        // A valid message: the peer is alive, and (for a server) this is
        // where it is now. Following the address lets a client move, or sit
        // behind a NAT whose mapping changed.
        if self.last_heard.is_none() && self.role != Role::Server {
            log::info!("the server at {from} answered");
        }
        self.last_heard = Some(now);
        if self.role == Role::Server && self.peer != Some(from) {
            log::info!("the client is at {from}");
            self.peer = Some(from);
        }
        match repr {
            Repr::Data(packet) => {
                let Some(out) = out.get_mut(..packet.len()) else {
                    return Err(self.drop(DropReason::NoRoom));
                };
                out.copy_from_slice(packet);
                self.counters.rx_packets += 1;
                self.counters.rx_bytes += packet.len() as u64;
                Ok(Action::WriteToTun(packet.len()))
            }
            Repr::Ping => {
                let Some(len) = Repr::Pong.emit(out) else {
                    return Err(self.drop(DropReason::NoRoom));
                };
                self.last_sent = Some(now);
                Ok(Action::Reply(Transmit { to: from, len }))
            }
            Repr::Pong => Ok(Action::Nothing),
        }
    }
    // ANCHOR_END: decapsulate

    // ANCHOR: poll
    /// Runs the timers: returns a Ping to send when one is due. A client
    /// pings at once, then every [`RETRY_INTERVAL`] until the server first
    /// answers, then (with a keepalive) whenever it has sent nothing for
    /// that long, so a NAT on the path keeps its mapping. A server never
    /// pings. Call it often (the I/O loop does, several times a second).
    pub fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        let Role::Client { server } = self.role else {
            return None;
        };
        let due = if self.connected() {
            self.last_sent? + self.keepalive?
        } else {
            self.last_ping.map_or(now, |sent| sent + RETRY_INTERVAL)
        };
        if now < due {
            return None;
        }
        let len = Repr::Ping.emit(out)?;
        self.last_sent = Some(now);
        self.last_ping = Some(now);
        Some(Transmit { to: server, len })
    }
    // ANCHOR_END: poll
}

/// The length an IP packet says it has, if `packet` starts with a whole
/// IPv4 (RFC 791: total length) or IPv6 (RFC 8200: 40 + payload length)
/// header.
pub fn ip_packet_len(packet: &[u8]) -> Option<usize> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 && usize::from(packet[0] & 0x0f) >= 5 => {
            Some(usize::from(u16::from_be_bytes([packet[2], packet[3]])))
        }
        6 if packet.len() >= 40 => Some(40 + usize::from(u16::from_be_bytes([packet[4], packet[5]]))),
        _ => None,
    }
}
