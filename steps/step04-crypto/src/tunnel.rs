//! The core of step 04: a sans-IO tunnel endpoint with many peers, each
//! known by its static public key.
//!
//! [`Tunnel::encapsulate`] seals an inner packet for the peer whose
//! allowed addresses hold its destination (starting a handshake first when
//! there is no session); [`Tunnel::decapsulate`] handles handshake
//! messages and opens data messages; [`Tunnel::poll`] runs the timers
//! (retries, rekeys, keepalives, expiry). Time comes in as an argument and
//! randomness from an [`Entropy`], so two tunnels wired back to back in a
//! test run a whole session, minutes of timers included, in microseconds.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use step01_ping_tun::counts::{Counts, Reason};
use step02_plain_tunnel::tunnel::ip_packet_len;
use step02_plain_tunnel::{Action, Transmit};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::allowed::AllowedIps;
use crate::crypto::{KEY_LEN, TAG_LEN, open, seal};
use crate::entropy::Entropy;
use crate::keys::Short;
use crate::limiter::{HandshakeLimiter, Refusal};
use crate::noise::{self, HandshakeError, Identity, Initiator, SessionKeys};
use crate::replay::{Check, ReplayWindow};
use crate::wire::{self, DATA_OVERHEAD, DataPacket, DataRepr, InitiationPacket, MessageType, ResponsePacket};

// ANCHOR: limits
/// The timers and limits. The session lifetimes are WireGuard's (its
/// paper, section 6); the retry backoff, the rate limit and the staging
/// queue are this step's own, simpler choices.
#[derive(Debug, Clone)]
pub struct Limits {
    /// After this many messages on a session, the initiator starts a new
    /// handshake.
    pub rekey_after_messages: u64,
    /// No message is sent or accepted with a counter this high: counters
    /// never wrap, so a nonce is never used twice.
    pub reject_after_messages: u64,
    /// After this long, the session's initiator starts a new handshake.
    pub rekey_after_time: Duration,
    /// After this long, a session is dropped: nothing is sent or accepted
    /// on it. The previous session lives on until then, for packets
    /// still in flight when a new one takes over.
    pub reject_after_time: Duration,
    /// The first retry of an unanswered initiation comes after this long,
    /// and each next one after twice as long as the last, up to
    /// `max_retry_interval`.
    pub first_retry: Duration,
    pub max_retry_interval: Duration,
    /// After trying this long, give up: the staged packets are dropped
    /// (`unanswered`). A peer with a keepalive starts a new round at once;
    /// others wait for the next packet.
    pub rekey_attempt_time: Duration,
    /// After receiving data and sending nothing back for this long, send
    /// a keepalive, so the sender knows the session still works.
    pub keepalive_timeout: Duration,
    /// After sending data and hearing nothing back for this long, start a
    /// new handshake: the peer may have restarted and lost the session.
    pub new_handshake_timeout: Duration,
    /// A peer's initiations closer together than this are a flood.
    pub min_initiation_interval: Duration,
    /// Handshake messages worked on per second from one source address
    /// (IPv6: one /64), and the burst.
    pub handshakes_per_second: u32,
    pub handshake_burst: u32,
    /// Handshake messages worked on per second in all, whatever their
    /// sources: the most Diffie-Hellman work a flood can cause. Sources
    /// seen for the first time may use half of it (see [`crate::limiter`]).
    pub handshake_budget: u32,
    /// Source addresses the rate limiter remembers; the oldest goes when
    /// a new one comes.
    pub handshake_sources: usize,
    /// Inner packets kept per peer while a handshake is under way.
    pub max_staged: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rekey_after_messages: 1 << 60,
            reject_after_messages: u64::MAX - (1 << 13),
            rekey_after_time: Duration::from_secs(120),
            reject_after_time: Duration::from_secs(180),
            first_retry: Duration::from_secs(1),
            max_retry_interval: Duration::from_secs(8),
            rekey_attempt_time: Duration::from_secs(90),
            keepalive_timeout: Duration::from_secs(10),
            new_handshake_timeout: Duration::from_secs(15),
            min_initiation_interval: Duration::from_millis(20),
            handshakes_per_second: 10,
            handshake_burst: 5,
            handshake_budget: 100,
            handshake_sources: 16384,
            max_staged: 16,
        }
    }
}
// ANCHOR_END: limits

// ANCHOR: drop_reason
/// Why a message or packet was dropped. Each reason has its own counter,
/// per peer where the peer is known, else in the tunnel's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than its type needs (or a handshake message of the wrong
    /// length).
    Truncated,
    /// A message type we do not know.
    BadType,
    /// Reserved header bytes that are not zero.
    BadReserved,
    /// A handshake message whose mac1 is wrong: not for our key.
    BadMac,
    /// A handshake message over the per-source rate limit.
    RateLimited,
    /// A handshake message over the whole tunnel's budget: a flood.
    Overloaded,
    /// A handshake message that did not open: forged, damaged, wrong keys.
    HandshakeFailed,
    /// An initiation from a static key that is not one of our peers.
    UnknownPeer,
    /// An initiation whose timestamp is not newer than the peer's last:
    /// a replayed (or reordered) initiation.
    HandshakeReplay,
    /// An initiation too soon after the peer's last one.
    HandshakeFlood,
    /// A response to no initiation of ours in flight: late, duplicated or
    /// forged.
    UnexpectedResponse,
    /// A data message for a session we do not have.
    UnknownIndex,
    /// A data message on a session older than `reject_after_time`.
    Expired,
    /// A data message whose counter was seen before.
    Replay,
    /// A data message whose counter is behind the replay window.
    TooOld,
    /// A data message whose tag did not verify: forged or damaged.
    BadTag,
    /// A decrypted payload that is not one whole IP packet.
    NotIp,
    /// An inner packet whose source the peer may not use.
    SourceNotAllowed,
    /// An inner packet larger than the tunnel MTU.
    TooBig,
    /// An inner packet for a destination no peer is allowed.
    NoRoute,
    /// A peer we have never heard from and have no address for.
    NoEndpoint,
    /// Staged packets pushed out by newer ones while a handshake is slow.
    QueueFull,
    /// The caller's output buffer is too small.
    NoRoom,
    /// A session that has used up its counters (never in practice).
    Exhausted,
    /// A staged packet dropped because the handshake got no answer.
    Unanswered,
}

impl Reason for DropReason {
    const ALL: &'static [DropReason] = &[
        DropReason::Truncated,
        DropReason::BadType,
        DropReason::BadReserved,
        DropReason::BadMac,
        DropReason::RateLimited,
        DropReason::Overloaded,
        DropReason::HandshakeFailed,
        DropReason::UnknownPeer,
        DropReason::HandshakeReplay,
        DropReason::HandshakeFlood,
        DropReason::UnexpectedResponse,
        DropReason::UnknownIndex,
        DropReason::Expired,
        DropReason::Replay,
        DropReason::TooOld,
        DropReason::BadTag,
        DropReason::NotIp,
        DropReason::SourceNotAllowed,
        DropReason::TooBig,
        DropReason::NoRoute,
        DropReason::NoEndpoint,
        DropReason::QueueFull,
        DropReason::NoRoom,
        DropReason::Exhausted,
        DropReason::Unanswered,
    ];

    fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadType => "bad-type",
            DropReason::BadReserved => "bad-reserved",
            DropReason::BadMac => "bad-mac",
            DropReason::RateLimited => "rate-limited",
            DropReason::Overloaded => "overloaded",
            DropReason::HandshakeFailed => "handshake-failed",
            DropReason::UnknownPeer => "unknown-peer",
            DropReason::HandshakeReplay => "handshake-replay",
            DropReason::HandshakeFlood => "handshake-flood",
            DropReason::UnexpectedResponse => "unexpected-response",
            DropReason::UnknownIndex => "unknown-index",
            DropReason::Expired => "expired",
            DropReason::Replay => "replay",
            DropReason::TooOld => "too-old",
            DropReason::BadTag => "bad-tag",
            DropReason::NotIp => "not-ip",
            DropReason::SourceNotAllowed => "source-not-allowed",
            DropReason::TooBig => "too-big",
            DropReason::NoRoute => "no-route",
            DropReason::NoEndpoint => "no-endpoint",
            DropReason::QueueFull => "queue-full",
            DropReason::NoRoom => "no-room",
            DropReason::Exhausted => "exhausted",
            DropReason::Unanswered => "unanswered",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<wire::Error> for DropReason {
    fn from(e: wire::Error) -> Self {
        match e {
            wire::Error::Truncated => DropReason::Truncated,
            wire::Error::BadType => DropReason::BadType,
            wire::Error::BadReserved => DropReason::BadReserved,
        }
    }
}

impl From<HandshakeError> for DropReason {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::BadMac => DropReason::BadMac,
            HandshakeError::Failed => DropReason::HandshakeFailed,
        }
    }
}
// ANCHOR_END: drop_reason

/// Drops by reason; printed `dropped {drops}` as `dropped 3 (replay 2,
/// bad-tag 1)`.
pub type Drops = Counts<DropReason>;

/// One peer as configured: its key, the inner addresses it may use (as
/// source, and as destination of what we send it), and what we know of
/// where it is.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub public: PublicKey,
    pub allowed: Vec<IpNet>,
    /// Where to send, until an authenticated message says otherwise.
    pub endpoint: Option<SocketAddr>,
    /// Send a keepalive after this long without sending (and start a
    /// handshake at once instead of waiting for traffic).
    pub keepalive: Option<Duration>,
}

/// What a peer has done: the `show` counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    pub drops: Drops,
}

// ANCHOR: session
/// One session: a key each way, and the counters that make each nonce
/// unique.
struct Session {
    keys: SessionKeys,
    /// The counter of the next message we send.
    send_counter: u64,
    window: ReplayWindow,
    created: Instant,
    /// True when we sent the initiation; only the initiator rekeys on time.
    initiator: bool,
}
// ANCHOR_END: session

/// Where a handshake stands.
enum Handshake {
    None,
    /// We sent an initiation and wait for the response.
    Sent {
        state: Initiator,
        /// When this round of attempts began, and the last one was sent.
        first: Instant,
        last: Instant,
        attempts: u32,
    },
}

struct Peer {
    config: PeerConfig,
    endpoint: Option<SocketAddr>,
    handshake: Handshake,
    /// The session we send on.
    current: Option<Session>,
    /// A session we answered but the initiator has not used yet: it
    /// becomes current with the first data message that arrives on it.
    next: Option<Session>,
    /// The session `current` replaced: still accepted while it lives.
    previous: Option<Session>,
    /// The newest initiation timestamp accepted from this peer.
    latest_timestamp: Option<[u8; noise::TIMESTAMP_LEN]>,
    latest_initiation: Option<Instant>,
    last_handshake: Option<Instant>,
    last_sent: Option<Instant>,
    /// When the first authenticated message since we last sent anything
    /// arrived: the passive keepalive's timer.
    heard_since_sent: Option<Instant>,
    /// When we sent the first data message that nothing has come back
    /// after yet.
    unanswered_since: Option<Instant>,
    /// Inner packets waiting for a session.
    staged: VecDeque<Vec<u8>>,
    /// A rekey is due: `poll` starts it.
    rekey_due: bool,
    stats: PeerStats,
}

impl Peer {
    /// True while a session we answered waits for the peer to confirm it
    /// (with its first data message): starting our own handshake now
    /// would cross it.
    fn confirming(&self, now: Instant, limits: &Limits) -> bool {
        self.next
            .as_ref()
            .is_some_and(|s| now.saturating_duration_since(s.created) < limits.first_retry)
    }

    fn usable(&self, now: Instant, limits: &Limits) -> bool {
        self.current.as_ref().is_some_and(|s| {
            now.saturating_duration_since(s.created) < limits.reject_after_time
                && s.send_counter < limits.reject_after_messages
        })
    }
}

/// Which of a peer's sessions an index names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Handshake,
    Current,
    Next,
    Previous,
}

/// A peer's number in this tunnel.
pub type PeerId = usize;

/// One end of the encrypted tunnel.
pub struct Tunnel {
    identity: Identity,
    peers: Vec<Peer>,
    by_key: HashMap<[u8; KEY_LEN], PeerId>,
    /// Every peer's allowed addresses: cryptokey routing's table.
    allowed: AllowedIps<PeerId>,
    /// Our session indices (and those of initiations in flight) to their
    /// peers.
    by_index: HashMap<u32, PeerId>,
    entropy: Box<dyn Entropy>,
    /// The wall clock at one instant, for handshake timestamps.
    epoch: (Instant, Duration),
    limiter: HandshakeLimiter,
    limits: Limits,
    mtu: usize,
    /// Drops we cannot pin on a peer.
    drops: Drops,
}

/// Messages from `decapsulate` and `poll` need at most this much more room
/// than their inner packet.
pub const MAX_OVERHEAD: usize = DATA_OVERHEAD + 15;

impl Tunnel {
    /// A tunnel with our static key `secret`, sending inner packets of up
    /// to `mtu` bytes. `unix_now` is the wall clock at `now`, for the
    /// handshake timestamps.
    pub fn new(
        secret: StaticSecret,
        mtu: usize,
        entropy: Box<dyn Entropy>,
        now: Instant,
        unix_now: Duration,
    ) -> Self {
        Self {
            identity: Identity::new(secret),
            peers: Vec::new(),
            by_key: HashMap::new(),
            allowed: AllowedIps::new(),
            by_index: HashMap::new(),
            entropy,
            epoch: (now, unix_now),
            limiter: limiter(&Limits::default()),
            limits: Limits::default(),
            mtu,
            drops: Drops::default(),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.set_limits(limits);
        self
    }

    /// New limits; the handshake limiter starts afresh with them.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limiter = limiter(&limits);
        self.limits = limits;
    }

    /// Adds a peer; a key given twice keeps the first. A prefix already
    /// given to another peer now belongs to this one (as with `wg set`).
    pub fn add_peer(&mut self, config: PeerConfig) -> PeerId {
        if let Some(&id) = self.by_key.get(config.public.as_bytes()) {
            return id;
        }
        let id = self.peers.len();
        self.by_key.insert(*config.public.as_bytes(), id);
        for prefix in &config.allowed {
            self.allowed.insert(*prefix, id);
        }
        self.peers.push(Peer {
            endpoint: config.endpoint,
            config,
            handshake: Handshake::None,
            current: None,
            next: None,
            previous: None,
            latest_timestamp: None,
            latest_initiation: None,
            last_handshake: None,
            last_sent: None,
            heard_since_sent: None,
            unanswered_since: None,
            staged: VecDeque::new(),
            rekey_due: false,
            stats: PeerStats::default(),
        });
        id
    }

    pub fn public(&self) -> &PublicKey {
        self.identity.public()
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }

    pub fn peer_stats(&self, id: PeerId) -> Option<&PeerStats> {
        self.peers.get(id).map(|p| &p.stats)
    }

    pub fn peer_endpoint(&self, id: PeerId) -> Option<SocketAddr> {
        self.peers.get(id).and_then(|p| p.endpoint)
    }

    /// True when the peer has a session we can send on.
    pub fn has_session(&self, id: PeerId, now: Instant) -> bool {
        self.peers.get(id).is_some_and(|p| p.usable(now, &self.limits))
    }

    /// Drops no peer can be blamed for.
    pub fn drops(&self) -> &Drops {
        &self.drops
    }

    fn drop_for(&mut self, peer: Option<PeerId>, reason: DropReason) -> DropReason {
        match peer.and_then(|id| self.peers.get_mut(id)) {
            Some(p) => p.stats.drops.increment(reason),
            None => self.drops.increment(reason),
        }
        reason
    }

    fn timestamp(&self, now: Instant) -> [u8; noise::TIMESTAMP_LEN] {
        let (at, unix) = self.epoch;
        noise::tai64n(unix + now.saturating_duration_since(at))
    }

    /// A fresh index no session or handshake of ours uses.
    fn new_index(&mut self, peer: PeerId) -> u32 {
        loop {
            let index = self.entropy.index();
            if let std::collections::hash_map::Entry::Vacant(e) = self.by_index.entry(index) {
                e.insert(peer);
                return index;
            }
        }
    }

    fn forget(&mut self, session: Option<Session>) {
        if let Some(s) = session {
            self.by_index.remove(&s.keys.local_index);
        }
    }

    /// Which slot of `peer` the index is.
    fn slot(&self, peer: PeerId, index: u32) -> Option<Slot> {
        let p = &self.peers[peer];
        let is = |s: &Option<Session>| s.as_ref().is_some_and(|s| s.keys.local_index == index);
        if let Handshake::Sent { state, .. } = &p.handshake
            && state.sender == index
        {
            return Some(Slot::Handshake);
        }
        if is(&p.current) {
            Some(Slot::Current)
        } else if is(&p.next) {
            Some(Slot::Next)
        } else if is(&p.previous) {
            Some(Slot::Previous)
        } else {
            None
        }
    }

    // ANCHOR: encapsulate
    /// Seals an IP packet read from the TUN device for the peer that owns
    /// its destination. Without a session the packet is staged and, when
    /// no handshake is under way, the initiation is what goes out.
    pub fn encapsulate(
        &mut self,
        packet: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Option<Transmit>, DropReason> {
        if packet.len() > self.mtu {
            return Err(self.drop_for(None, DropReason::TooBig));
        }
        let Some(destination) = (ip_packet_len(packet) == Some(packet.len()))
            .then(|| inner_addresses(packet))
            .flatten()
            .map(|(_, d)| d)
        else {
            return Err(self.drop_for(None, DropReason::NotIp));
        };
        let Some(id) = self.route(destination) else {
            return Err(self.drop_for(None, DropReason::NoRoute));
        };
        if self.peers[id].usable(now, &self.limits) {
            return self.seal_for(id, packet, now, out).map(Some);
        }
        let peer = &mut self.peers[id];
        if peer.endpoint.is_none() {
            // A server's client that has never spoken: nowhere to send a
            // handshake, so nothing to wait for.
            return Err(self.drop_for(Some(id), DropReason::NoEndpoint));
        }
        if peer.staged.len() >= self.limits.max_staged {
            peer.staged.pop_front();
            peer.stats.drops.increment(DropReason::QueueFull);
        }
        peer.staged.push_back(packet.to_vec());
        match peer.handshake {
            Handshake::None if !peer.confirming(now, &self.limits) => self.initiate(id, now, out).map(Some),
            _ => Ok(None),
        }
    }
    // ANCHOR_END: encapsulate

    /// The peer whose allowed addresses hold `ip` most specifically.
    fn route(&self, ip: IpAddr) -> Option<PeerId> {
        self.allowed.lookup(ip).copied()
    }

    // ANCHOR: seal
    /// Seals `packet` (empty for a keepalive) on the peer's current
    /// session.
    fn seal_for(
        &mut self,
        id: PeerId,
        packet: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Transmit, DropReason> {
        let limits = &self.limits;
        let peer = &mut self.peers[id];
        let Some(to) = peer.endpoint else {
            return Err(self.drop_for(Some(id), DropReason::NoEndpoint));
        };
        let Some(session) = peer.current.as_mut() else {
            return Err(self.drop_for(Some(id), DropReason::Exhausted));
        };
        if session.send_counter >= limits.reject_after_messages {
            return Err(self.drop_for(Some(id), DropReason::Exhausted));
        }
        // Pad to a multiple of 16 (within the MTU), so the length says
        // less about the content.
        let repr = DataRepr {
            receiver: session.keys.remote_index,
            counter: session.send_counter,
            sealed_len: packet.len().next_multiple_of(16).min(self.mtu.max(packet.len())),
        };
        let len = repr.buffer_len();
        let Some(out) = out.get_mut(..len) else {
            return Err(self.drop_for(Some(id), DropReason::NoRoom));
        };
        session.send_counter += 1;
        let mut message = DataPacket::new_unchecked(out);
        repr.emit(&mut message);
        let (header, body, tag) = message.parts_mut();
        body[..packet.len()].copy_from_slice(packet);
        body[packet.len()..].fill(0);
        tag.copy_from_slice(&seal(&session.keys.send, repr.counter, header, body));
        let rekey = session.initiator
            && now.saturating_duration_since(session.created) >= limits.rekey_after_time
            || session.send_counter >= limits.rekey_after_messages;
        if rekey && matches!(peer.handshake, Handshake::None) {
            peer.rekey_due = true;
        }
        peer.last_sent = Some(now);
        peer.heard_since_sent = None;
        if !packet.is_empty() {
            peer.unanswered_since.get_or_insert(now);
            peer.stats.tx_packets += 1;
            peer.stats.tx_bytes += packet.len() as u64;
        }
        Ok(Transmit { to, len })
    }
    // ANCHOR_END: seal

    // ANCHOR: initiate
    /// Starts (or restarts) a handshake with the peer: the initiation goes
    /// in `out`.
    fn initiate(&mut self, id: PeerId, now: Instant, out: &mut [u8]) -> Result<Transmit, DropReason> {
        let Some(to) = self.peers[id].endpoint else {
            return Err(self.drop_for(Some(id), DropReason::NoEndpoint));
        };
        let (first, attempts) = match &self.peers[id].handshake {
            Handshake::Sent {
                first,
                attempts,
                state,
                ..
            } => {
                // A retry is a new initiation: new ephemeral, new index.
                let old = state.sender;
                self.by_index.remove(&old);
                (*first, attempts + 1)
            }
            Handshake::None => (now, 0),
        };
        let index = self.new_index(id);
        let ephemeral = self.entropy.ephemeral();
        let timestamp = self.timestamp(now);
        let remote = self.peers[id].config.public;
        let state = match noise::initiate(&self.identity, &remote, ephemeral, index, timestamp, out) {
            Ok(state) => state,
            Err(e) => {
                self.by_index.remove(&index);
                self.peers[id].handshake = Handshake::None;
                return Err(self.drop_for(Some(id), e.into()));
            }
        };
        let peer = &mut self.peers[id];
        peer.handshake = Handshake::Sent {
            state,
            first,
            last: now,
            attempts,
        };
        peer.rekey_due = false;
        peer.unanswered_since = None;
        peer.heard_since_sent = None;
        peer.last_sent = Some(now);
        Ok(Transmit {
            to,
            len: wire::INITIATION_LEN,
        })
    }
    // ANCHOR_END: initiate

    // ANCHOR: decapsulate
    /// Handles a message that arrived from `from`.
    pub fn decapsulate(
        &mut self,
        from: SocketAddr,
        message: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Action, DropReason> {
        match MessageType::of(message) {
            Ok(MessageType::Initiation) => self.on_initiation(from, message, now, out),
            Ok(MessageType::Response) => self.on_response(from, message, now, out),
            Ok(MessageType::Data) => self.on_data(from, message, now, out),
            Err(e) => Err(self.drop_for(None, e.into())),
        }
    }
    // ANCHOR_END: decapsulate

    /// Takes a handshake token for `from`'s address.
    /// May a handshake message from `from` have Diffie-Hellman work?
    /// `known`: it comes from where we expect it.
    fn allow_handshake(&mut self, from: SocketAddr, known: bool, now: Instant) -> Result<(), DropReason> {
        self.limiter.allow(from.ip(), known, now).map_err(|refusal| {
            let reason = match refusal {
                Refusal::SourceLimited => DropReason::RateLimited,
                Refusal::Overloaded => DropReason::Overloaded,
            };
            self.drop_for(None, reason)
        })
    }

    // ANCHOR: on_initiation
    fn on_initiation(
        &mut self,
        from: SocketAddr,
        message: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Action, DropReason> {
        let msg = InitiationPacket::new_checked(message).map_err(|e| self.drop_for(None, e.into()))?;
        // Cheapest checks first: one hash, then the rate limit, and only
        // then the Diffie-Hellman operations.
        if !noise::initiation_mac1_ok(&self.identity, &msg) {
            return Err(self.drop_for(None, DropReason::BadMac));
        }
        self.allow_handshake(from, false, now)?;
        let incoming =
            noise::consume_initiation(&self.identity, &msg).map_err(|e| self.drop_for(None, e.into()))?;
        let Some(&id) = self.by_key.get(incoming.remote.as_bytes()) else {
            return Err(self.drop_for(None, DropReason::UnknownPeer));
        };
        let peer = &self.peers[id];
        if peer.latest_timestamp.is_some_and(|t| incoming.timestamp <= t) {
            return Err(self.drop_for(Some(id), DropReason::HandshakeReplay));
        }
        if peer
            .latest_initiation
            .is_some_and(|t| now.saturating_duration_since(t) < self.limits.min_initiation_interval)
        {
            return Err(self.drop_for(Some(id), DropReason::HandshakeFlood));
        }
        let index = self.new_index(id);
        let ephemeral = self.entropy.ephemeral();
        let keys = match noise::respond(&incoming, ephemeral, index, out) {
            Ok(keys) => keys,
            Err(e) => {
                self.by_index.remove(&index);
                return Err(self.drop_for(Some(id), e.into()));
            }
        };
        let replaced = self.peers[id].next.replace(Session {
            keys,
            send_counter: 0,
            window: ReplayWindow::new(),
            created: now,
            initiator: false,
        });
        self.forget(replaced);
        // One handshake at a time: answering theirs abandons ours (as in
        // WireGuard), so the two ends never finish two crossing ones.
        if let Handshake::Sent { state, .. } =
            std::mem::replace(&mut self.peers[id].handshake, Handshake::None)
        {
            self.by_index.remove(&state.sender);
        }
        let peer = &mut self.peers[id];
        // The initiation is authenticated and newer than any before: the
        // peer is where it came from.
        peer.latest_timestamp = Some(incoming.timestamp);
        peer.latest_initiation = Some(now);
        peer.last_sent = Some(now);
        note_endpoint(peer, from);
        Ok(Action::Reply(Transmit {
            to: from,
            len: wire::RESPONSE_LEN,
        }))
    }
    // ANCHOR_END: on_initiation

    fn on_response(
        &mut self,
        from: SocketAddr,
        message: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Action, DropReason> {
        let msg = ResponsePacket::new_checked(message).map_err(|e| self.drop_for(None, e.into()))?;
        if !noise::response_mac1_ok(&self.identity, &msg) {
            return Err(self.drop_for(None, DropReason::BadMac));
        }
        // Only a response to the initiation in flight is worth a DH: a
        // late duplicate names an index we have already moved on from.
        let Some(id) = self
            .by_index
            .get(&msg.receiver())
            .copied()
            .filter(|&id| self.slot(id, msg.receiver()) == Some(Slot::Handshake))
        else {
            return Err(self.drop_for(None, DropReason::UnexpectedResponse));
        };
        // The index is right, which an attacker on the path can see: the
        // same limits as for initiations, before the Diffie-Hellman; from
        // where we sent the initiation, it is no first contact.
        let known = self.peers[id].endpoint == Some(from);
        self.allow_handshake(from, known, now)?;
        let Handshake::Sent { state, .. } = &self.peers[id].handshake else {
            return Err(self.drop_for(Some(id), DropReason::UnexpectedResponse));
        };
        // A failure leaves the handshake as it was: a forged response
        // cannot cancel the real one.
        let keys = noise::consume_response(&self.identity, state, &msg)
            .map_err(|e| self.drop_for(Some(id), e.into()))?;
        let peer = &mut self.peers[id];
        peer.handshake = Handshake::None;
        peer.rekey_due = false;
        let retired = peer.previous.take();
        peer.previous = peer.current.replace(Session {
            keys,
            send_counter: 0,
            window: ReplayWindow::new(),
            created: now,
            initiator: true,
        });
        peer.last_handshake = Some(now);
        peer.stats.handshakes += 1;
        note_endpoint(peer, from);
        log::info!(
            "handshake with {} complete (we initiated)",
            Short(&peer.config.public)
        );
        self.forget(retired);
        // Confirm the session to the responder at once: the staged packets
        // will (poll sends them), or else a keepalive.
        if self.peers[id].staged.is_empty() {
            return self.seal_for(id, &[], now, out).map(Action::Reply);
        }
        Ok(Action::Nothing)
    }

    // ANCHOR: on_data
    fn on_data(
        &mut self,
        from: SocketAddr,
        message: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Action, DropReason> {
        let msg = DataPacket::new_checked(message).map_err(|e| self.drop_for(None, e.into()))?;
        let index = msg.receiver();
        let Some((id, slot)) = self
            .by_index
            .get(&index)
            .and_then(|&id| Some((id, self.slot(id, index)?)))
            .filter(|(_, slot)| *slot != Slot::Handshake)
        else {
            return Err(self.drop_for(None, DropReason::UnknownIndex));
        };
        let limits = &self.limits;
        let peer = &mut self.peers[id];
        let session = match slot {
            Slot::Current => peer.current.as_mut(),
            Slot::Next => peer.next.as_mut(),
            Slot::Previous => peer.previous.as_mut(),
            Slot::Handshake => None,
        };
        let Some(session) = session else {
            return Err(self.drop_for(Some(id), DropReason::UnknownIndex));
        };
        if now.saturating_duration_since(session.created) >= limits.reject_after_time {
            return Err(self.drop_for(Some(id), DropReason::Expired));
        }
        let counter = msg.counter();
        if counter >= limits.reject_after_messages {
            return Err(self.drop_for(Some(id), DropReason::Exhausted));
        }
        // 1. The cheap check, which changes nothing.
        match session.window.check(counter) {
            Check::Fresh => {}
            Check::Duplicate => return Err(self.drop_for(Some(id), DropReason::Replay)),
            Check::TooOld => return Err(self.drop_for(Some(id), DropReason::TooOld)),
        }
        // 2. Decrypt and verify the tag over header and payload.
        let sealed = msg.ciphertext();
        let Some(plain) = out.get_mut(..sealed.len()) else {
            return Err(self.drop_for(Some(id), DropReason::NoRoom));
        };
        plain.copy_from_slice(sealed);
        if open(&session.keys.receive, counter, msg.header(), plain, &msg.tag()).is_err() {
            return Err(self.drop_for(Some(id), DropReason::BadTag));
        }
        // 3. Only now, with the message known to be genuine, does it
        // change anything: the window, the session, the endpoint. (`mark`
        // refuses only what `check` did, so this drop never happens; if it
        // did, the message would be dropped, never delivered twice.)
        if !session.window.mark(counter) {
            return Err(self.drop_for(Some(id), DropReason::Replay));
        }
        if slot == Slot::Next {
            // The initiator used the session we answered with: it is ours.
            let confirmed = peer.next.take();
            let retired = peer.previous.take();
            peer.previous = std::mem::replace(&mut peer.current, confirmed);
            peer.last_handshake = Some(now);
            peer.rekey_due = false;
            peer.stats.handshakes += 1;
            log::info!(
                "handshake with {} complete (they initiated)",
                Short(&peer.config.public)
            );
            self.forget(retired);
        }
        let peer = &mut self.peers[id];
        note_endpoint(peer, from);
        peer.heard_since_sent.get_or_insert(now);
        peer.unanswered_since = None;
        if plain.is_empty() {
            return Ok(Action::Nothing);
        }
        let len = match ip_packet_len(plain) {
            Some(len) if len <= plain.len() && plain.len() - len < 16 => len,
            _ => return Err(self.drop_for(Some(id), DropReason::NotIp)),
        };
        let packet = &out[..len];
        // Cryptokey routing: the peer may only speak from an address that
        // routes back to it (not one of a more specific prefix that is
        // another peer's).
        let allowed = inner_addresses(packet).is_some_and(|(source, _)| self.route(source) == Some(id));
        if !allowed {
            return Err(self.drop_for(Some(id), DropReason::SourceNotAllowed));
        }
        let peer = &mut self.peers[id];
        peer.stats.rx_packets += 1;
        peer.stats.rx_bytes += len as u64;
        Ok(Action::WriteToTun(len))
    }
    // ANCHOR_END: on_data

    // ANCHOR: poll
    /// Runs the timers; returns the next message that is due, if any.
    /// Call it until it returns `None`.
    pub fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        for id in 0..self.peers.len() {
            self.expire(id, now);
            if let Some(t) = self.due(id, now, out) {
                return Some(t);
            }
        }
        None
    }

    /// Drops the peer's sessions that are too old.
    fn expire(&mut self, id: PeerId, now: Instant) {
        let reject = self.limits.reject_after_time;
        let peer = &mut self.peers[id];
        let old = |s: &Option<Session>| {
            s.as_ref()
                .is_some_and(|s| now.saturating_duration_since(s.created) >= reject)
        };
        let mut gone = Vec::new();
        for slot in [&mut peer.current, &mut peer.next, &mut peer.previous] {
            if old(slot) {
                gone.push(slot.take());
            }
        }
        for s in gone {
            self.forget(s);
        }
    }

    /// The message due for one peer, if any.
    fn due(&mut self, id: PeerId, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        let limits = &self.limits;
        let peer = &mut self.peers[id];
        let usable = peer.usable(now, limits);
        match &peer.handshake {
            Handshake::Sent {
                first,
                last,
                attempts,
                ..
            } => {
                if now.saturating_duration_since(*first) >= limits.rekey_attempt_time {
                    log::info!("no answer from {}; giving up for now", Short(&peer.config.public));
                    let Handshake::Sent { state, .. } =
                        std::mem::replace(&mut peer.handshake, Handshake::None)
                    else {
                        return None;
                    };
                    for _ in peer.staged.drain(..) {
                        peer.stats.drops.increment(DropReason::Unanswered);
                    }
                    self.by_index.remove(&state.sender);
                    return None;
                }
                let wait = limits
                    .first_retry
                    .saturating_mul(1 << (*attempts).min(16))
                    .min(limits.max_retry_interval);
                if now.saturating_duration_since(*last) >= wait {
                    log::info!(
                        "no answer from {} after {} ms; sending initiation {}",
                        Short(&peer.config.public),
                        wait.as_millis(),
                        attempts + 2
                    );
                    return self.initiate(id, now, out).ok();
                }
                return None;
            }
            Handshake::None => {}
        }
        let confirming = peer.confirming(now, limits);
        // Data went out and nothing came back for a while: the peer may
        // have lost the session (a restart); a new handshake finds out.
        let unanswered = peer
            .unanswered_since
            .is_some_and(|t| now.saturating_duration_since(t) >= limits.new_handshake_timeout);
        let wants = !confirming
            && (peer.rekey_due
                || unanswered
                || !usable && (!peer.staged.is_empty() || peer.config.keepalive.is_some()));
        if wants && peer.endpoint.is_some() {
            return self.initiate(id, now, out).ok();
        }
        if !usable {
            return None;
        }
        if let Some(packet) = peer.staged.pop_front() {
            return self.seal_for(id, &packet, now, out).ok();
        }
        // A keepalive when one is configured and we have been quiet that
        // long, or when data came in and we sent nothing back for
        // `keepalive_timeout` (so the sender does not think us gone).
        let quiet_for = |d: Duration| {
            peer.last_sent
                .is_none_or(|t| now.saturating_duration_since(t) >= d)
        };
        let persistent = peer.config.keepalive.is_some_and(quiet_for);
        let passive = peer
            .heard_since_sent
            .is_some_and(|t| now.saturating_duration_since(t) >= limits.keepalive_timeout);
        if persistent || passive {
            return self.seal_for(id, &[], now, out).ok();
        }
        None
    }
    // ANCHOR_END: poll

    /// A status line for each peer, then one for drops no peer caused:
    /// what `SIGUSR1` prints.
    pub fn status(&self, now: Instant) -> Vec<String> {
        let mut lines: Vec<String> = self
            .peers
            .iter()
            .map(|p| {
                let endpoint = p.endpoint.map_or("none".to_string(), |e| e.to_string());
                let handshake = p.last_handshake.map_or("never".to_string(), |t| {
                    format!("{} s ago", now.saturating_duration_since(t).as_secs())
                });
                let s = &p.stats;
                format!(
                    "peer {} endpoint {endpoint} handshake {handshake}: sent {} packets ({} bytes), received {} packets ({} bytes), handshakes {}, dropped {}",
                    Short(&p.config.public),
                    s.tx_packets,
                    s.tx_bytes,
                    s.rx_packets,
                    s.rx_bytes,
                    s.handshakes,
                    s.drops
                )
            })
            .collect();
        lines.push(format!("unattributed: dropped {}", self.drops));
        lines
    }
}

/// The handshake limiter for `limits`. A source counts as coming back
/// after half the initiator's first retry interval: its retry does, a
/// burst of copies does not.
fn limiter(limits: &Limits) -> HandshakeLimiter {
    HandshakeLimiter::new(
        limits.handshakes_per_second,
        limits.handshake_burst,
        limits.handshake_budget,
        limits.handshake_sources,
        limits.first_retry / 2,
    )
}

/// Follows a peer to the address an authenticated message came from.
fn note_endpoint(peer: &mut Peer, from: SocketAddr) {
    if peer.endpoint != Some(from) {
        if peer.endpoint.is_some() {
            log::info!("{} roamed to {from}", Short(&peer.config.public));
        }
        peer.endpoint = Some(from);
    }
}

/// The source and destination of an IPv4 or IPv6 packet whose header is
/// whole.
pub fn inner_addresses(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let src: [u8; 4] = packet[12..16].try_into().ok()?;
            let dst: [u8; 4] = packet[16..20].try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst)))
        }
        6 if packet.len() >= 40 => {
            let src: [u8; 16] = packet[8..24].try_into().ok()?;
            let dst: [u8; 16] = packet[24..40].try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst)))
        }
        _ => None,
    }
}

/// Bytes the tag takes (re-exported for the MTU arithmetic).
pub const TAG: usize = TAG_LEN;
