//! Build track, step 02: write [`Tunnel::encapsulate`] and [`Tunnel::decapsulate`] yourself.
//!
//! This file is `steps/step02-plain-tunnel/src/tunnel.rs` with those bodies taken out
//! (each says `todo!()`). `cargo run -p tunlab -- track 02` copies the
//! step's crate to `target/track/step02/`, puts this file in place of
//! `src/tunnel.rs` (with the original's unit tests appended), and runs the
//! crate's own tests, golden captures included; once they pass, it runs the
//! micro-benchmark `step02/tunnel`: yours must be within 3 times the
//! reference's time per packet.
//! Everything else here is as in the step: change it if you like, but
//! keep the public names and what the tests use. The book's "Build track"
//! page says more.
//!
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

    /// Wraps an IP packet read from the TUN device in a Data message for the
    /// peer, written to the start of `out`.
    pub fn encapsulate(
        &mut self,
        packet: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Transmit, DropReason> {
        // Refuse (and count, with `self.drop`) a packet larger than the MTU,
        // one that is not a whole IP packet (`ip_packet_len`), and one with no
        // peer to send to; emit `Repr::Data(packet)` into `out` (too small:
        // NoRoom); count it, remember when you sent, and say where it goes.
        todo!("wrap `packet` in a Data message for the peer")
    }

    /// Handles a message that arrived from `from`.
    pub fn decapsulate(
        &mut self,
        from: SocketAddr,
        message: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Action, DropReason> {
        // A client takes messages only from its server. Parse the message
        // (`Repr::parse_bytes`); a Data message must carry a whole IP packet no
        // larger than `max_received`, checked before the message counts as a
        // sign of life. Then remember when you heard from the peer (a server also
        // follows its client to `from`), and: Data -> copy the packet to `out`,
        // WriteToTun; Ping -> reply with a Pong; Pong -> Nothing.
        todo!("handle one message from `from`")
    }

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
