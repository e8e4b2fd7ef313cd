//! The core of step 07: a sans-IO WireGuard device with any number of
//! peers, configured at run time (by the UAPI, see [`crate::uapi`]).
//!
//! It has step 04's shape: [`Device::encapsulate`] seals an inner packet
//! for the peer that owns its destination (starting a handshake first when
//! there is no session), [`Device::decapsulate`] handles the four message
//! types, and [`Device::poll`] runs the timers. Time comes in as an
//! argument and randomness from an [`Entropy`]. What is new is WireGuard's
//! exact behaviour: its timers (one deadline per timer, as in the Linux
//! module and wireguard-go, see [`Timers`]), its session rotation, cookies
//! under load, pre-shared keys, and peers that come and go while it runs.
//!
//! For the fast path of step 08, the per-packet entry points never
//! allocate: [`Device::encapsulate_in_place`] seals a packet where it lies
//! (with room for the header before it and the padding and tag after),
//! and [`Device::decapsulate_in_place`] opens a data message where it
//! lies, so a loop over a batch of buffers calls them back to back.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use step01_ping_tun::counts::{Counts, Reason};
use step02_plain_tunnel::tunnel::ip_packet_len;
use step02_plain_tunnel::{Action, Transmit};
use step03_ipv6::rate::TokenBucket;
use step04_crypto::crypto::{KEY_LEN, TAG_LEN, open, seal};
use step04_crypto::entropy::Entropy;
use step04_crypto::keys::Short;
use step04_crypto::noise::SessionKeys;
use step04_crypto::replay::{Check, ReplayWindow};
use step04_crypto::tunnel::inner_addresses;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

use crate::allowed::AllowedIps;
use crate::cookie::{CookieChecker, CookieJar};
use crate::noise::{self, HandshakeError, Identity, Initiator};
use crate::timers::*;
use crate::wire::{
    self, CookieReply, DATA_HEADER_LEN, DATA_OVERHEAD, Data, Initiation, MessageType, Response,
    emit_data_header, padded_len,
};

// ANCHOR: drop_reason
/// Why a message or packet was dropped. Each reason has its own counter,
/// per peer where the peer is known, else in the device's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than its type needs (or a handshake message of the wrong
    /// length).
    Truncated,
    /// A message type we do not know.
    BadType,
    /// Reserved header bytes that are not zero.
    BadReserved,
    /// The device has no private key yet: it can neither send nor answer.
    NoKey,
    /// A handshake message whose mac1 is wrong: not for our key.
    BadMac,
    /// Under load, a handshake message without a valid mac2: answered
    /// with a cookie reply instead.
    CookieSent,
    /// Under load, a handshake message over its source's rate.
    RateLimited,
    /// A handshake message that did not open: forged, damaged, wrong keys
    /// (or a wrong pre-shared key).
    HandshakeFailed,
    /// An initiation from a static key that is not one of our peers.
    UnknownPeer,
    /// An initiation whose timestamp is not newer than the peer's last:
    /// a replayed (or reordered) initiation.
    HandshakeReplay,
    /// An initiation too soon after the peer's last one.
    HandshakeFlood,
    /// A response or cookie reply for no message of ours in flight.
    UnexpectedResponse,
    /// A cookie reply that did not open.
    BadCookie,
    /// A data message for a session we do not have.
    UnknownIndex,
    /// A data message on a session older than `REJECT_AFTER_TIME`, or one
    /// whose counter is past `REJECT_AFTER_MESSAGES`.
    Expired,
    /// A data message whose counter was seen before.
    Replay,
    /// A data message whose counter is behind the replay window.
    TooOld,
    /// A data message whose tag did not verify: forged or damaged.
    BadTag,
    /// A decrypted payload, or a packet from the TUN device, that is not
    /// one whole IP packet.
    NotIp,
    /// An inner packet whose source the peer may not use.
    SourceNotAllowed,
    /// An inner packet larger than the tunnel MTU.
    TooBig,
    /// An inner packet for a destination no peer is allowed.
    NoRoute,
    /// A peer we have never heard from and have no endpoint for.
    NoEndpoint,
    /// Staged packets pushed out by newer ones while a handshake is slow.
    QueueFull,
    /// The caller's buffer is too small.
    NoRoom,
    /// A staged packet dropped because the handshake got no answer.
    Unanswered,
}

impl Reason for DropReason {
    const ALL: &'static [DropReason] = &[
        DropReason::Truncated,
        DropReason::BadType,
        DropReason::BadReserved,
        DropReason::NoKey,
        DropReason::BadMac,
        DropReason::CookieSent,
        DropReason::RateLimited,
        DropReason::HandshakeFailed,
        DropReason::UnknownPeer,
        DropReason::HandshakeReplay,
        DropReason::HandshakeFlood,
        DropReason::UnexpectedResponse,
        DropReason::BadCookie,
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
        DropReason::Unanswered,
    ];

    fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadType => "bad-type",
            DropReason::BadReserved => "bad-reserved",
            DropReason::NoKey => "no-key",
            DropReason::BadMac => "bad-mac",
            DropReason::CookieSent => "cookie-sent",
            DropReason::RateLimited => "rate-limited",
            DropReason::HandshakeFailed => "handshake-failed",
            DropReason::UnknownPeer => "unknown-peer",
            DropReason::HandshakeReplay => "handshake-replay",
            DropReason::HandshakeFlood => "handshake-flood",
            DropReason::UnexpectedResponse => "unexpected-response",
            DropReason::BadCookie => "bad-cookie",
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
            DropReason::Unanswered => "unanswered",
        }
    }

    fn index(self) -> usize {
        self as usize
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
            HandshakeError::Failed => DropReason::HandshakeFailed,
            HandshakeError::NoRoom => DropReason::NoRoom,
        }
    }
}
// ANCHOR_END: drop_reason

/// Drops by reason.
pub type Drops = Counts<DropReason>;

// ANCHOR: load
/// When the device counts as under load, and what a source may then send.
/// WireGuard leaves the measure to the implementation (section 5.3):
/// wireguard-go looks at the length of its handshake queue. A sans-IO core
/// has no queue, so it counts the handshake messages with a valid mac1
/// that arrived in the last second.
#[derive(Debug, Clone)]
pub struct LoadPolicy {
    /// More handshake messages than this in one second put the device
    /// under load...
    pub handshakes_per_second: u32,
    /// ...for at least this long (wireguard-go's UnderLoadAfterTime).
    pub under_load_for: Duration,
    /// Under load, handshake messages (with a valid mac2) per second from
    /// one source address, and the burst (wireguard-go: 20 and 5).
    pub per_source_rate: u32,
    pub per_source_burst: u32,
}

impl Default for LoadPolicy {
    fn default() -> Self {
        Self {
            handshakes_per_second: 100,
            under_load_for: Duration::from_secs(1),
            per_source_rate: 20,
            per_source_burst: 5,
        }
    }
}
// ANCHOR_END: load

/// How many source addresses the rate limiter remembers.
const MAX_SOURCES: usize = 4096;

/// What a peer has done: `wg show`'s numbers and the drops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Bytes of messages received from and sent to the peer (UDP payload,
    /// handshakes included).
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    pub drops: Drops,
}

// ANCHOR: session
/// One session ("keypair" in the Linux module): a key each way, and the
/// counters that make each nonce unique.
///
/// A session is shared (`Arc`): the device keeps it in a peer's slots,
/// and a multi-core shell (step 08) hands it to its workers, which seal
/// and open data messages with it without taking the device's lock. So
/// what changes per message is safe to share: the send counter is an
/// atomic (each message takes a number no other message gets), and the
/// replay window has a lock of its own, per session.
pub struct Session {
    keys: SessionKeys,
    /// The counter of the next message we send.
    send_counter: AtomicU64,
    window: Mutex<ReplayWindow>,
    created: Instant,
    /// True when we sent the initiation: only the initiator rekeys on time
    /// (section 6.2), so the two ends never rekey at once.
    initiator: bool,
}

impl Session {
    fn new(keys: SessionKeys, now: Instant, initiator: bool) -> Self {
        Self {
            keys,
            send_counter: AtomicU64::new(0),
            window: Mutex::new(ReplayWindow::new()),
            created: now,
            initiator,
        }
    }

    /// The index the peer puts in data messages on this session.
    pub fn local_index(&self) -> u32 {
        self.keys.local_index
    }

    fn is_expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) >= REJECT_AFTER_TIME
    }

    /// Whether a message may still be sent on it (section 6.1: younger
    /// than REJECT_AFTER_TIME, counter below REJECT_AFTER_MESSAGES).
    pub fn can_send(&self, now: Instant) -> bool {
        !self.is_expired(now) && self.send_counter.load(Ordering::Relaxed) < REJECT_AFTER_MESSAGES
    }

    /// Takes `n` consecutive send counters and returns the first, or
    /// `None` when the session may not send that many. One atomic
    /// addition, whoever else is sending on the session: two messages
    /// never get the same counter, so no nonce is ever used twice.
    pub fn reserve(&self, n: u64, now: Instant) -> Option<u64> {
        if self.is_expired(now) {
            return None;
        }
        let first = self.send_counter.fetch_add(n, Ordering::Relaxed);
        (first.checked_add(n)? <= REJECT_AFTER_MESSAGES).then_some(first)
    }

    // ANCHOR: seal
    /// Seals the packet at `buf[16..16 + len]` under `counter` (one taken
    /// with [`Session::reserve`]): the header before it, zero padding to a
    /// multiple of 16 (at most to `mtu`, section 5.4.6) and the tag after.
    /// Returns the message's length, or `None` when `buf` is too short.
    pub fn seal(&self, counter: u64, buf: &mut [u8], len: usize, mtu: usize) -> Option<usize> {
        let padded = padded_len(len, mtu);
        let total = DATA_OVERHEAD + padded;
        let buf = buf.get_mut(..total)?;
        let (header, rest) = buf.split_at_mut(DATA_HEADER_LEN);
        let mut h = [0u8; DATA_HEADER_LEN];
        emit_data_header(&mut h, self.keys.remote_index, counter);
        header.copy_from_slice(&h);
        let (body, tag) = rest.split_at_mut(padded);
        body[len..].fill(0);
        // Section 5.4.6: `AEAD(T_send, counter, P, empty)`: unlike step 04,
        // the header is not associated data (a changed header changes the
        // index or counter, and so the key or nonce, and the tag fails
        // anyway).
        tag.copy_from_slice(&seal(&self.keys.send, counter, &[], body));
        Some(total)
    }
    // ANCHOR_END: seal

    /// Section 6.2: whether the sender of the message with `counter`
    /// should start a new handshake: the initiator after
    /// REKEY_AFTER_TIME, either end after REKEY_AFTER_MESSAGES.
    pub fn wants_rekey(&self, counter: u64, now: Instant) -> bool {
        let age = now.saturating_duration_since(self.created);
        self.initiator && age >= REKEY_AFTER_TIME || counter.saturating_add(1) >= REKEY_AFTER_MESSAGES
    }

    /// Opens a data message's `body` in place (its tag `tag`), under the
    /// replay window: check, decrypt, and only then mark (see step 04's
    /// `replay.rs` for why in this order). The window's lock is held for
    /// the check and for the mark, not while decrypting.
    pub fn open(
        &self,
        counter: u64,
        body: &mut [u8],
        tag: &[u8; TAG_LEN],
        now: Instant,
    ) -> Result<(), DropReason> {
        if self.is_expired(now) || counter >= REJECT_AFTER_MESSAGES {
            return Err(DropReason::Expired);
        }
        // 1. The cheap check, which changes nothing.
        match lock(&self.window).check(counter) {
            Check::Fresh => {}
            Check::Duplicate => return Err(DropReason::Replay),
            Check::TooOld => return Err(DropReason::TooOld),
        }
        // 2. Decrypt and verify the tag (no associated data: section 5.4.6).
        if open(&self.keys.receive, counter, &[], body, tag).is_err() {
            return Err(DropReason::BadTag);
        }
        // 3. Only now, with the message known to be genuine, may it move
        // the window. Another thread may have marked the same counter
        // between 1 and 3 (a duplicate opened twice at once): only one
        // of the two gets through.
        if !lock(&self.window).mark(counter) {
            return Err(DropReason::Replay);
        }
        Ok(())
    }

    /// How old the session is, if we initiated it.
    fn initiator_age(&self, now: Instant) -> Option<Duration> {
        self.initiator
            .then(|| now.saturating_duration_since(self.created))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The window is changed by one call that cannot panic half-way.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
// ANCHOR_END: session

// ANCHOR: timers
/// A peer's timers (whitepaper section 6): each is a deadline, set and
/// cleared by events the way the Linux module's timers.c does it, and
/// checked by [`Device::poll`].
#[derive(Debug, Clone, Default)]
pub struct Timers {
    /// No response to our initiation: send another (REKEY_TIMEOUT +
    /// jitter after each one).
    retransmit_handshake: Option<Instant>,
    /// Data came in and we sent nothing back: send a keepalive
    /// (KEEPALIVE_TIMEOUT after the data).
    send_keepalive: Option<Instant>,
    /// Data went out and nothing came back: start a new handshake
    /// (KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter after the data).
    new_handshake: Option<Instant>,
    /// No new session for a long time: wipe every key (3 x
    /// REJECT_AFTER_TIME after the last session was made).
    zero_key_material: Option<Instant>,
    /// The persistent keepalive, when one is configured.
    persistent_keepalive: Option<Instant>,
    /// Initiations sent for the current handshake, after the first.
    handshake_attempts: u32,
    /// More data came in while a keepalive was already due.
    need_another_keepalive: bool,
    /// The receiving side's rekey (section 6.2) was started.
    sent_last_minute_handshake: bool,
}
// ANCHOR_END: timers

/// Where our own handshake stands.
struct Pending {
    state: Initiator,
}

/// One peer: its configuration, its sessions and its timers.
struct Peer {
    public: PublicKey,
    psk: [u8; KEY_LEN],
    jar: CookieJar,
    endpoint: Option<SocketAddr>,
    /// Seconds between persistent keepalives; 0 for none.
    keepalive: u16,
    handshake: Option<Pending>,
    /// When we last sent an initiation: never more than one per
    /// REKEY_TIMEOUT.
    last_initiation_sent: Option<Instant>,
    /// The session we send on.
    current: Option<Arc<Session>>,
    /// A session we answered, not yet confirmed by the initiator's first
    /// data message.
    next: Option<Arc<Session>>,
    /// The session `current` replaced: still accepted while it lives.
    previous: Option<Arc<Session>>,
    latest_timestamp: Option<[u8; noise::TIMESTAMP_LEN]>,
    latest_initiation_received: Option<Instant>,
    /// Wall-clock time of the last completed handshake.
    last_handshake: Option<Duration>,
    timers: Timers,
    /// A handshake is due (a rekey on sending or receiving): `poll`
    /// starts it.
    want_handshake: bool,
    /// Packets waiting for a session; an empty one is a keepalive.
    staged: VecDeque<Vec<u8>>,
    stats: PeerStats,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.psk.zeroize();
    }
}

impl Peer {
    fn new(public: PublicKey) -> Self {
        Self {
            jar: CookieJar::new(&public),
            public,
            psk: [0; KEY_LEN],
            endpoint: None,
            keepalive: 0,
            handshake: None,
            last_initiation_sent: None,
            current: None,
            next: None,
            previous: None,
            latest_timestamp: None,
            latest_initiation_received: None,
            last_handshake: None,
            timers: Timers::default(),
            want_handshake: false,
            staged: VecDeque::new(),
            stats: PeerStats::default(),
        }
    }

    fn can_send(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|s| s.can_send(now))
    }

    /// Called for any authenticated message sent or received (the timers
    /// of section 6.5).
    fn traversal(&mut self, now: Instant) {
        if self.keepalive > 0 {
            self.timers.persistent_keepalive = Some(now + Duration::from_secs(u64::from(self.keepalive)));
        }
    }

    fn sent_authenticated(&mut self, now: Instant) {
        self.timers.send_keepalive = None;
        self.traversal(now);
    }

    fn received_authenticated(&mut self, now: Instant) {
        self.timers.new_handshake = None;
        self.traversal(now);
    }

    fn handshake_complete(&mut self, wall: Duration) {
        self.timers.retransmit_handshake = None;
        self.timers.handshake_attempts = 0;
        self.timers.sent_last_minute_handshake = false;
        self.last_handshake = Some(wall);
        self.stats.handshakes += 1;
    }
}

/// Which of a peer's sessions (or its handshake) an index names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Handshake,
    Current,
    Next,
    Previous,
}

/// A peer's number in the device, stable while the peer exists.
pub type PeerId = usize;

/// What a peer looks like from the outside: for the UAPI's `get`.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub public: PublicKey,
    pub psk: [u8; KEY_LEN],
    pub endpoint: Option<SocketAddr>,
    pub keepalive: u16,
    pub last_handshake: Option<Duration>,
    pub allowed: Vec<IpNet>,
    pub stats: PeerStats,
}

/// Where [`Device::decapsulate_in_place`] left an inner packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Write the packet in this range of the buffer to the TUN device.
    Packet(Range<usize>),
    /// Send the reply written at the start of `out`.
    Reply(Transmit),
    /// Nothing more to do (a keepalive, a completed handshake...).
    Nothing,
}

// ANCHOR: device
/// A WireGuard interface, without the interface.
pub struct Device {
    identity: Option<Identity>,
    checker: Option<CookieChecker>,
    peers: Vec<Option<Peer>>,
    free: Vec<PeerId>,
    by_key: HashMap<[u8; KEY_LEN], PeerId>,
    /// Our session indices (and those of initiations in flight) to their
    /// peers.
    by_index: HashMap<u32, PeerId>,
    allowed: AllowedIps<PeerId>,
    entropy: Box<dyn Entropy>,
    /// The wall clock at one instant, for timestamps and `wg show`.
    epoch: (Instant, Duration),
    mtu: usize,
    load: LoadPolicy,
    /// Handshake messages seen in the current one-second window.
    load_window: (Instant, u32),
    under_load_until: Option<Instant>,
    sources: HashMap<IpAddr, (TokenBucket, Instant)>,
    /// A small generator for the timers' jitter (no secret depends on it).
    jitter: u64,
    /// The UDP port, as the UAPI set it (0: any); the shell binds it.
    pub listen_port: u16,
    /// The firewall mark of our UDP packets (0: none); the shell sets it.
    pub fwmark: u32,
    /// Drops we cannot pin on a peer.
    drops: Drops,
    cookie_replies: u64,
    /// Counts changes to what the data path reads: keys, peers, their
    /// sessions, endpoints and allowed IPs, the MTU (see
    /// [`Device::generation`]).
    generation: u64,
}
// ANCHOR_END: device

/// Messages the device makes need at most this much more room than their
/// inner packet: the header, the tag, and up to 15 bytes of padding.
pub const MAX_OVERHEAD: usize = DATA_OVERHEAD + 15;

impl Device {
    /// A device with no key and no peers, sending inner packets of up to
    /// `mtu` bytes. `unix_now` is the wall clock at `now`.
    pub fn new(mtu: usize, entropy: Box<dyn Entropy>, now: Instant, unix_now: Duration) -> Self {
        Self {
            identity: None,
            checker: None,
            peers: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            by_index: HashMap::new(),
            allowed: AllowedIps::new(),
            entropy,
            epoch: (now, unix_now),
            mtu,
            load: LoadPolicy::default(),
            load_window: (now, 0),
            under_load_until: None,
            sources: HashMap::new(),
            jitter: (unix_now.as_nanos() as u64) | 1,
            listen_port: 0,
            fwmark: 0,
            drops: Drops::default(),
            cookie_replies: 0,
            generation: 0,
        }
    }

    pub fn with_load_policy(mut self, load: LoadPolicy) -> Self {
        self.load = load;
        self
    }

    pub fn set_load_policy(&mut self, load: LoadPolicy) {
        self.load = load;
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }

    pub fn set_mtu(&mut self, mtu: usize) {
        if mtu != self.mtu {
            self.mtu = mtu;
            self.changed();
        }
    }

    /// A number that changes whenever something the data path reads
    /// changes: our key, a peer, its sessions, endpoint or allowed IPs,
    /// the MTU. A shell that copies that state for its workers (step 08)
    /// copies it again when this moves.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// The wall-clock time at `now`.
    pub fn wall(&self, now: Instant) -> Duration {
        let (at, unix) = self.epoch;
        unix + now.saturating_duration_since(at)
    }

    // ---- configuration ----

    /// Our public key, once a private key is set.
    pub fn public(&self) -> Option<&PublicKey> {
        self.identity.as_ref().map(Identity::public)
    }

    /// Our private key's bytes (for `wg showconf`).
    pub fn private_bytes(&self) -> Option<[u8; KEY_LEN]> {
        self.identity.as_ref().map(|i| i.secret().to_bytes())
    }

    // ANCHOR: set_private_key
    /// Sets (or, with `None`, removes) our private key. A peer with our own
    /// public key is removed; every handshake under way is abandoned, and
    /// the sessions stop sending (they still receive until they expire),
    /// as wireguard-go does.
    pub fn set_private_key(&mut self, secret: Option<StaticSecret>) {
        let identity = secret.map(Identity::new);
        if identity.as_ref().map(|i| i.public().to_bytes()) == self.public().map(|p| p.to_bytes()) {
            return;
        }
        if let Some(id) = identity
            .as_ref()
            .and_then(|i| self.by_key.get(i.public().as_bytes()).copied())
        {
            self.remove_peer(id);
        }
        self.checker = identity.as_ref().map(|i| CookieChecker::new(i.public()));
        // Two devices started at the same moment must not draw the same
        // jitter: mix our public key into the generator.
        if let Some(i) = &identity {
            let mut k = [0u8; 8];
            k.copy_from_slice(&i.public().as_bytes()[..8]);
            self.jitter ^= u64::from_le_bytes(k) | 1;
        }
        self.identity = identity;
        for id in 0..self.peers.len() {
            let Some(peer) = self.peers[id].as_mut() else {
                continue;
            };
            if let Some(p) = peer.handshake.take() {
                self.by_index.remove(&p.state.sender);
            }
            for s in [&peer.current, &peer.next].into_iter().flatten() {
                s.send_counter.store(REJECT_AFTER_MESSAGES, Ordering::Relaxed);
            }
            peer.latest_timestamp = None;
            peer.last_initiation_sent = None;
        }
        self.changed();
    }
    // ANCHOR_END: set_private_key

    /// The peer with this public key.
    pub fn peer_id(&self, public: &PublicKey) -> Option<PeerId> {
        self.by_key.get(public.as_bytes()).copied()
    }

    /// Every peer's id, in the order they were added (ids are reused).
    pub fn peer_ids(&self) -> Vec<PeerId> {
        (0..self.peers.len())
            .filter(|&i| self.peers[i].is_some())
            .collect()
    }

    fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(id).and_then(Option::as_ref)
    }

    fn peer_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        self.peers.get_mut(id).and_then(Option::as_mut)
    }

    /// The peer with `public`, added if it is new. `None` for our own
    /// public key, which cannot be a peer.
    pub fn add_peer(&mut self, public: PublicKey) -> Option<PeerId> {
        if self.public() == Some(&public) {
            return None;
        }
        if let Some(id) = self.peer_id(&public) {
            return Some(id);
        }
        let peer = Peer::new(public);
        let id = match self.free.pop() {
            Some(id) => {
                self.peers[id] = Some(peer);
                id
            }
            None => {
                self.peers.push(Some(peer));
                self.peers.len() - 1
            }
        };
        self.by_key.insert(public.to_bytes(), id);
        self.changed();
        Some(id)
    }

    /// Removes a peer with its sessions, its indices and its allowed IPs.
    pub fn remove_peer(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(id).and_then(Option::take) else {
            return;
        };
        self.by_key.remove(peer.public.as_bytes());
        self.by_index.retain(|_, p| *p != id);
        self.allowed.remove_owner(id);
        self.free.push(id);
        self.changed();
    }

    pub fn remove_all_peers(&mut self) {
        for id in self.peer_ids() {
            self.remove_peer(id);
        }
    }

    pub fn set_preshared_key(&mut self, id: PeerId, psk: [u8; KEY_LEN]) {
        if let Some(p) = self.peer_mut(id) {
            p.psk = psk;
        }
    }

    pub fn set_endpoint(&mut self, id: PeerId, endpoint: SocketAddr) {
        if let Some(p) = self.peer_mut(id) {
            p.endpoint = Some(endpoint);
        }
        self.changed();
    }

    /// Sets the persistent keepalive interval (0: off). Turning it on
    /// sends a keepalive at once (starting a handshake if need be), as
    /// wireguard-go does.
    pub fn set_persistent_keepalive(&mut self, id: PeerId, secs: u16, now: Instant) {
        let Some(p) = self.peer_mut(id) else { return };
        let was = p.keepalive;
        p.keepalive = secs;
        if secs == 0 {
            p.timers.persistent_keepalive = None;
        } else if was == 0 {
            // Due now: `poll` sends it.
            p.timers.persistent_keepalive = Some(now);
        }
    }

    pub fn add_allowed_ip(&mut self, id: PeerId, net: IpNet) {
        if self.peer(id).is_some() {
            self.allowed.insert(net, id);
            self.changed();
        }
    }

    pub fn remove_allowed_ip(&mut self, id: PeerId, net: IpNet) {
        self.allowed.remove(net, id);
        self.changed();
    }

    pub fn clear_allowed_ips(&mut self, id: PeerId) {
        self.allowed.remove_owner(id);
        self.changed();
    }

    /// A peer as `wg show` sees it.
    pub fn peer_info(&self, id: PeerId) -> Option<PeerInfo> {
        let p = self.peer(id)?;
        Some(PeerInfo {
            public: p.public,
            psk: p.psk,
            endpoint: p.endpoint,
            keepalive: p.keepalive,
            last_handshake: p.last_handshake,
            allowed: self.allowed.of(id),
            stats: p.stats.clone(),
        })
    }

    /// True when the peer has a session we can send on.
    pub fn has_session(&self, id: PeerId, now: Instant) -> bool {
        self.peer(id).is_some_and(|p| p.can_send(now))
    }

    /// Drops no peer can be blamed for.
    pub fn drops(&self) -> &Drops {
        &self.drops
    }

    /// Cookie replies sent (each also counted as a `cookie-sent` drop).
    pub fn cookie_replies(&self) -> u64 {
        self.cookie_replies
    }

    /// The peer's drops.
    pub fn peer_stats(&self, id: PeerId) -> Option<&PeerStats> {
        self.peer(id).map(|p| &p.stats)
    }

    fn drop_for(&mut self, peer: Option<PeerId>, reason: DropReason) -> DropReason {
        match peer.and_then(|id| self.peer_mut(id)) {
            Some(p) => p.stats.drops.increment(reason),
            None => self.drops.increment(reason),
        }
        reason
    }

    /// Up to REKEY_TIMEOUT_JITTER_MAX_MS milliseconds, at random
    /// (xorshift64: a timer's jitter needs no secrecy).
    fn jitter(&mut self) -> Duration {
        let mut x = self.jitter;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter = x;
        Duration::from_millis(x % u64::from(REKEY_TIMEOUT_JITTER_MAX_MS))
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

    fn forget(&mut self, session: Option<Arc<Session>>) {
        if let Some(s) = session {
            self.by_index.remove(&s.keys.local_index);
            self.changed();
        }
    }

    /// Which slot of `peer` the index is.
    fn slot(&self, peer: PeerId, index: u32) -> Option<Slot> {
        let p = self.peer(peer)?;
        let is = |s: &Option<Arc<Session>>| s.as_ref().is_some_and(|s| s.keys.local_index == index);
        if p.handshake.as_ref().is_some_and(|h| h.state.sender == index) {
            Some(Slot::Handshake)
        } else if is(&p.current) {
            Some(Slot::Current)
        } else if is(&p.next) {
            Some(Slot::Next)
        } else if is(&p.previous) {
            Some(Slot::Previous)
        } else {
            None
        }
    }

    // ---- sending ----

    // ANCHOR: encapsulate
    /// Seals an IP packet read from the TUN device for the peer that owns
    /// its destination, into `out` (at least the packet's length plus
    /// [`MAX_OVERHEAD`]). Without a session the packet is staged and the
    /// initiation, if one may be sent now, is what goes out.
    pub fn encapsulate(
        &mut self,
        packet: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Option<Transmit>, DropReason> {
        let id = self.route(packet)?;
        if self.peers[id].as_ref().is_some_and(|p| p.can_send(now)) {
            let Some(room) = out.get_mut(DATA_HEADER_LEN..DATA_HEADER_LEN + packet.len()) else {
                return Err(self.drop_for(Some(id), DropReason::NoRoom));
            };
            room.copy_from_slice(packet);
            return self.seal_in(id, out, packet.len(), now).map(Some);
        }
        self.stage(id, packet.to_vec(), now, out)
    }

    /// The same, for a packet already in `buf[16..16 + len]`: it is sealed
    /// where it lies and the message is `buf[..transmit.len]` (`buf` needs
    /// [`MAX_OVERHEAD`] bytes more than the packet). Without a session the
    /// packet is copied to the staging queue and the initiation, if any,
    /// is written to `buf` instead.
    pub fn encapsulate_in_place(
        &mut self,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Result<Option<Transmit>, DropReason> {
        let Some(packet) = buf.get(DATA_HEADER_LEN..DATA_HEADER_LEN + len) else {
            return Err(self.drop_for(None, DropReason::NoRoom));
        };
        let id = self.route(packet)?;
        if self.peers[id].as_ref().is_some_and(|p| p.can_send(now)) {
            return self.seal_in(id, buf, len, now).map(Some);
        }
        let copy = packet.to_vec();
        self.stage(id, copy, now, buf)
    }
    // ANCHOR_END: encapsulate

    /// The peer that gets `packet`: cryptokey routing by destination.
    fn route(&mut self, packet: &[u8]) -> Result<PeerId, DropReason> {
        if self.identity.is_none() {
            return Err(self.drop_for(None, DropReason::NoKey));
        }
        route(&self.allowed, self.mtu, packet).map_err(|why| self.drop_for(None, why))
    }

    /// The table of allowed IPs: which peer owns which prefixes.
    pub fn allowed_ips(&self) -> &AllowedIps<PeerId> {
        &self.allowed
    }

    /// Whether we have a private key (without one, nothing is sent).
    pub fn has_key(&self) -> bool {
        self.identity.is_some()
    }

    /// What the data path needs of a peer: where to send, and the session
    /// to send on and the ones to receive on (for step 08's workers, which
    /// seal and open without the device's lock).
    pub fn peer_sessions(&self, id: PeerId) -> Option<PeerSessions> {
        let p = self.peer(id)?;
        Some(PeerSessions {
            endpoint: p.endpoint,
            current: p.current.clone(),
            receiving: [p.current.clone(), p.next.clone(), p.previous.clone()],
        })
    }

    /// Keeps `packet` until the peer has a session; starts a handshake if
    /// one may start now (its initiation goes in `out`).
    fn stage(
        &mut self,
        id: PeerId,
        packet: Vec<u8>,
        now: Instant,
        out: &mut [u8],
    ) -> Result<Option<Transmit>, DropReason> {
        let Some(peer) = self.peer_mut(id) else {
            return Err(self.drop_for(None, DropReason::NoRoute));
        };
        if peer.endpoint.is_none() {
            // A peer that has never spoken and has no configured endpoint:
            // nowhere to send a handshake.
            return Err(self.drop_for(Some(id), DropReason::NoEndpoint));
        }
        if peer.staged.len() >= MAX_STAGED_PACKETS {
            peer.staged.pop_front();
            peer.stats.drops.increment(DropReason::QueueFull);
        }
        peer.staged.push_back(packet);
        Ok(self.initiate(id, false, now, out))
    }

    // ANCHOR: seal_in
    /// Seals the packet at `buf[16..16 + len]` on the peer's current
    /// session: header before it, zero padding to 16 and the tag after.
    fn seal_in(
        &mut self,
        id: PeerId,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Result<Transmit, DropReason> {
        let mtu = self.mtu;
        let Some(peer) = self.peer(id) else {
            return Err(self.drop_for(None, DropReason::NoRoute));
        };
        let (Some(to), Some(session)) = (peer.endpoint, peer.current.clone()) else {
            return Err(self.drop_for(Some(id), DropReason::NoEndpoint));
        };
        let Some(counter) = session.reserve(1, now) else {
            return Err(self.drop_for(Some(id), DropReason::Expired));
        };
        let Some(total) = session.seal(counter, buf, len, mtu) else {
            return Err(self.drop_for(Some(id), DropReason::NoRoom));
        };
        self.sealed(id, total as u64, len > 0, session.wants_rekey(counter, now), now);
        Ok(Transmit { to, len: total })
    }
    // ANCHOR_END: seal_in

    // ANCHOR: sealed
    /// What sending data messages to a peer changes in the device: its
    /// traffic count, its timers (section 6.5), and a rekey when one is
    /// due (section 6.2: the initiator rekeys after REKEY_AFTER_TIME or
    /// REKEY_AFTER_MESSAGES, when it next sends). `seal_in` calls it for
    /// each message; a shell that seals a batch of messages without the
    /// device's lock (step 08's workers) calls it once for the batch:
    /// `bytes` in all, `data` if any of them carried a packet (not only a
    /// keepalive), `rekey` if any wanted a new handshake.
    pub fn sealed(&mut self, id: PeerId, bytes: u64, data: bool, rekey: bool, now: Instant) {
        let jitter = self.jitter();
        let Some(peer) = self.peer_mut(id) else { return };
        if rekey {
            peer.want_handshake = true;
        }
        peer.stats.tx_bytes += bytes;
        peer.sent_authenticated(now);
        if data && peer.timers.new_handshake.is_none() {
            // Data went out: if nothing comes back in 15 s, the session
            // may be dead (section 6.2).
            peer.timers.new_handshake = Some(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter);
        }
    }
    // ANCHOR_END: sealed

    // ANCHOR: initiate
    /// Sends an initiation to the peer if one may go now (never two within
    /// REKEY_TIMEOUT); a retry counts as one more attempt, anything else
    /// starts the count again.
    fn initiate(&mut self, id: PeerId, retry: bool, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        let jitter = self.jitter();
        let peer = self.peer_mut(id)?;
        if !retry {
            peer.timers.handshake_attempts = 0;
        }
        if peer
            .last_initiation_sent
            .is_some_and(|t| now.saturating_duration_since(t) < REKEY_TIMEOUT)
        {
            return None;
        }
        let Some(to) = peer.endpoint else {
            self.drop_for(Some(id), DropReason::NoEndpoint);
            return None;
        };
        if let Some(old) = self.peer_mut(id).and_then(|p| p.handshake.take()) {
            self.by_index.remove(&old.state.sender);
        }
        let index = self.new_index(id);
        let ephemeral = self.entropy.ephemeral();
        let timestamp = noise::timestamp(self.wall(now));
        let identity = self.identity.as_ref()?;
        let remote = self.peer(id)?.public;
        let state = match noise::initiate(identity, &remote, ephemeral, index, timestamp, out) {
            Ok(state) => state,
            Err(e) => {
                self.by_index.remove(&index);
                self.drop_for(Some(id), e.into());
                return None;
            }
        };
        let peer = self.peer_mut(id)?;
        peer.jar.add_macs(&mut out[..wire::INITIATION_LEN], now);
        peer.handshake = Some(Pending { state });
        peer.last_initiation_sent = Some(now);
        peer.want_handshake = false;
        peer.timers.retransmit_handshake = Some(now + REKEY_TIMEOUT + jitter);
        peer.stats.tx_bytes += wire::INITIATION_LEN as u64;
        peer.sent_authenticated(now);
        log::debug!("handshake initiation to {} ({to})", Short(&peer.public));
        Some(Transmit {
            to,
            len: wire::INITIATION_LEN,
        })
    }
    // ANCHOR_END: initiate

    // ---- receiving ----

    // ANCHOR: decapsulate
    /// Handles a message that arrived from `from`. A data message's packet
    /// is written to the start of `out` (`Action::WriteToTun`); a reply
    /// (response, cookie reply, keepalive) too (`Action::Reply`).
    pub fn decapsulate(
        &mut self,
        from: SocketAddr,
        message: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Action, DropReason> {
        match MessageType::of(message) {
            Some(MessageType::Data) => {
                let msg = Data::new_checked(message).map_err(|e| self.drop_for(None, e.into()))?;
                let n = msg.payload_len();
                let Some(plain) = out.get_mut(..n) else {
                    return Err(self.drop_for(None, DropReason::NoRoom));
                };
                plain.copy_from_slice(msg.ciphertext());
                let header: [u8; DATA_HEADER_LEN] = message[..DATA_HEADER_LEN]
                    .try_into()
                    .map_err(|_| DropReason::Truncated)?;
                match self.on_data(from, &header, plain, &msg.tag(), now)? {
                    Some(len) => Ok(Action::WriteToTun(len)),
                    None => Ok(Action::Nothing),
                }
            }
            Some(MessageType::Initiation) => self.on_initiation(from, message, now, out),
            Some(MessageType::Response) => self.on_response(from, message, now, out),
            Some(MessageType::CookieReply) => self.on_cookie_reply(message, now),
            None if message.is_empty() => Err(self.drop_for(None, DropReason::Truncated)),
            None => Err(self.drop_for(None, DropReason::BadType)),
        }
    }

    /// The same, opening a data message where it lies in `buf`: its packet
    /// is then `buf[range]`. Handshake messages are answered in `out`.
    pub fn decapsulate_in_place(
        &mut self,
        from: SocketAddr,
        buf: &mut [u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Opened, DropReason> {
        if MessageType::of(buf) != Some(MessageType::Data) {
            return match self.decapsulate(from, buf, now, out)? {
                Action::Reply(t) => Ok(Opened::Reply(t)),
                Action::WriteToTun(_) | Action::Nothing => Ok(Opened::Nothing),
            };
        }
        let tag = Data::new_checked(&*buf)
            .map_err(|e| self.drop_for(None, e.into()))?
            .tag();
        let mut header = [0u8; DATA_HEADER_LEN];
        header.copy_from_slice(&buf[..DATA_HEADER_LEN]);
        let end = buf.len() - TAG_LEN;
        let body = &mut buf[DATA_HEADER_LEN..end];
        match self.on_data(from, &header, body, &tag, now)? {
            Some(len) => Ok(Opened::Packet(DATA_HEADER_LEN..DATA_HEADER_LEN + len)),
            None => Ok(Opened::Nothing),
        }
    }
    // ANCHOR_END: decapsulate

    // ANCHOR: on_data
    /// A data message with header `header`, whose sealed body is `body`
    /// (opened in place) and tag `tag`. Returns the inner packet's length
    /// (at the start of `body`), or `None` for a keepalive.
    fn on_data(
        &mut self,
        from: SocketAddr,
        header: &[u8; DATA_HEADER_LEN],
        body: &mut [u8],
        tag: &[u8; TAG_LEN],
        now: Instant,
    ) -> Result<Option<usize>, DropReason> {
        let index = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&header[8..16]);
        let counter = u64::from_le_bytes(counter);
        let Some((id, session)) = self.receiving(index) else {
            return Err(self.drop_for(None, DropReason::UnknownIndex));
        };
        // Check, decrypt, mark: nothing changes unless the tag verified.
        session
            .open(counter, body, tag, now)
            .map_err(|why| self.drop_for(Some(id), why))?;
        let data = u64::from(!body.is_empty());
        self.opened(id, index, from, (DATA_OVERHEAD + body.len()) as u64, data, now);
        if body.is_empty() {
            return Ok(None);
        }
        check_inner(&self.allowed, id, body)
            .map(Some)
            .map_err(|why| self.drop_for(Some(id), why))
    }

    /// The peer and session a data message's receiver index names (not a
    /// handshake in flight).
    fn receiving(&self, index: u32) -> Option<(PeerId, Arc<Session>)> {
        let id = *self.by_index.get(&index)?;
        let peer = self.peer(id)?;
        let session = match self.slot(id, index)? {
            Slot::Current => peer.current.clone(),
            Slot::Next => peer.next.clone(),
            Slot::Previous => peer.previous.clone(),
            Slot::Handshake => None,
        }?;
        Some((id, session))
    }
    // ANCHOR_END: on_data

    // ANCHOR: opened
    /// What authenticated data messages from a peer change in the device,
    /// once they are opened: its traffic count, its endpoint (roaming,
    /// section 2.1), its timers (section 6.5), the rotation to a session
    /// we answered (its first data message confirms it, section 5.4.6),
    /// and the receiving side's rekey (section 6.2). `index` is the
    /// session's (our) index, `bytes` the messages' total length,
    /// `data_messages` how many of them carried a packet. `on_data` calls
    /// it for each message; step 08's workers once per batch.
    pub fn opened(
        &mut self,
        id: PeerId,
        index: u32,
        from: SocketAddr,
        bytes: u64,
        data_messages: u64,
        now: Instant,
    ) {
        let wall = self.wall(now);
        let slot = self.slot(id, index);
        let initiator_age = self.receiving(index).and_then(|(_, s)| s.initiator_age(now));
        let Some(peer) = self.peer_mut(id) else { return };
        peer.stats.rx_bytes += bytes;
        let mut retired = None;
        if slot == Some(Slot::Next) {
            // The initiator used the session we answered with: it becomes
            // the one we send on (section 5.4.6: we may not send on it
            // before this confirmation).
            let confirmed = peer.next.take();
            retired = peer.previous.take();
            peer.previous = std::mem::replace(&mut peer.current, confirmed);
            peer.handshake_complete(wall);
            log::info!("handshake with {} complete (they initiated)", Short(&peer.public));
        }
        let moved = note_endpoint(peer, from);
        peer.received_authenticated(now);
        // Section 6.2: the initiator of the session rekeys when what it
        // receives arrives on a session nearly too old to use.
        if initiator_age.is_some_and(|age| age >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT)
            && !peer.timers.sent_last_minute_handshake
        {
            peer.timers.sent_last_minute_handshake = true;
            peer.want_handshake = true;
        }
        if data_messages > 0 {
            // Data arrived: answer within KEEPALIVE_TIMEOUT, with data or a
            // keepalive (section 6.5).
            if peer.timers.send_keepalive.is_none() {
                peer.timers.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
                peer.timers.need_another_keepalive |= data_messages > 1;
            } else {
                peer.timers.need_another_keepalive = true;
            }
        }
        if slot == Some(Slot::Next) || moved {
            self.changed();
        }
        self.forget(retired);
    }
    // ANCHOR_END: opened

    /// Counts `n` drops for `reason`, on the peer when there is one (for a
    /// shell that found them without the device's lock).
    pub fn count_drops(&mut self, peer: Option<PeerId>, reason: DropReason, n: u64) {
        for _ in 0..n {
            self.drop_for(peer, reason);
        }
    }

    // ANCHOR: under_load
    /// Counts a handshake message (with a valid mac1) and says whether
    /// the device is now under load.
    fn under_load(&mut self, now: Instant) -> bool {
        let (start, count) = &mut self.load_window;
        if now.saturating_duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count > self.load.handshakes_per_second {
            self.under_load_until = Some(now + self.load.under_load_for);
        }
        self.under_load_until.is_some_and(|t| now < t)
    }

    /// Under load: a message without a valid mac2 gets a cookie reply in
    /// `out`; one with it must still fit its source's rate.
    fn admit(
        &mut self,
        msg: &impl wire::HandshakeMessage,
        from: SocketAddr,
        now: Instant,
        out: &mut [u8],
    ) -> Result<(), Result<Action, DropReason>> {
        if !self.under_load(now) {
            return Ok(());
        }
        let Some(checker) = self.checker.as_mut() else {
            return Err(Err(self.drop_for(None, DropReason::NoKey)));
        };
        if !checker.mac2_ok(msg, from, now) {
            let entropy = &mut self.entropy;
            let len = checker.reply(msg, from, now, &mut |buf| entropy.fill(buf), out);
            self.drop_for(None, DropReason::CookieSent);
            return Err(match len {
                Some(len) => {
                    self.cookie_replies += 1;
                    Ok(Action::Reply(Transmit { to: from, len }))
                }
                None => Err(DropReason::NoRoom),
            });
        }
        if !self.allow_source(from.ip(), now) {
            return Err(Err(self.drop_for(None, DropReason::RateLimited)));
        }
        Ok(())
    }

    /// Takes a token from the source's bucket. IPv6 sources are counted
    /// by /64, which one host usually has whole.
    fn allow_source(&mut self, ip: IpAddr, now: Instant) -> bool {
        let key = match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & !((1u128 << 64) - 1)).into()),
        };
        if !self.sources.contains_key(&key) && self.sources.len() >= MAX_SOURCES {
            // Forget the source heard from longest ago.
            if let Some(oldest) = self
                .sources
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(k, _)| *k)
            {
                self.sources.remove(&oldest);
            }
        }
        let (rate, burst) = (self.load.per_source_rate, self.load.per_source_burst);
        let (bucket, seen) = self
            .sources
            .entry(key)
            .or_insert_with(|| (TokenBucket::new(rate, burst), now));
        *seen = now;
        bucket.take(now)
    }
    // ANCHOR_END: under_load

    // ANCHOR: on_initiation
    fn on_initiation(
        &mut self,
        from: SocketAddr,
        message: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Action, DropReason> {
        let msg = Initiation::new_checked(message).map_err(|e| self.drop_for(None, e.into()))?;
        let Some(checker) = self.checker.as_ref() else {
            return Err(self.drop_for(None, DropReason::NoKey));
        };
        // Cheapest first: one hash (mac1), then the load check (one more
        // hash), and only then the Diffie-Hellman operations.
        if !checker.mac1_ok(&msg) {
            return Err(self.drop_for(None, DropReason::BadMac));
        }
        if let Err(answer) = self.admit(&msg, from, now, out) {
            return answer;
        }
        let Some(identity) = self.identity.as_ref() else {
            return Err(self.drop_for(None, DropReason::NoKey));
        };
        let incoming =
            noise::consume_initiation(identity, &msg).map_err(|e| self.drop_for(None, e.into()))?;
        let Some(id) = self.peer_id(&incoming.remote) else {
            return Err(self.drop_for(None, DropReason::UnknownPeer));
        };
        let Some(peer) = self.peer(id) else {
            return Err(self.drop_for(None, DropReason::UnknownPeer));
        };
        // Section 5.4.2: a replayed initiation is refused by its timestamp,
        // and a peer may not make us work more than 50 times a second.
        if peer.latest_timestamp.is_some_and(|t| incoming.timestamp <= t) {
            return Err(self.drop_for(Some(id), DropReason::HandshakeReplay));
        }
        if peer
            .latest_initiation_received
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_INITIATION_INTERVAL)
        {
            return Err(self.drop_for(Some(id), DropReason::HandshakeFlood));
        }
        let psk = peer.psk;
        let index = self.new_index(id);
        let ephemeral = self.entropy.ephemeral();
        let keys = match noise::respond(&incoming, &psk, ephemeral, index, out) {
            Ok(keys) => keys,
            Err(e) => {
                self.by_index.remove(&index);
                return Err(self.drop_for(Some(id), e.into()));
            }
        };
        let Some(peer) = self.peer_mut(id) else {
            return Err(DropReason::UnknownPeer);
        };
        peer.jar.add_macs(&mut out[..wire::RESPONSE_LEN], now);
        // The responder's new session waits in `next`; the previous one
        // goes (the Linux module's rotation for a responder).
        let replaced = peer.next.replace(Arc::new(Session::new(keys, now, false)));
        let retired = peer.previous.take();
        // Answering their handshake abandons ours.
        let abandoned = peer.handshake.take();
        peer.latest_timestamp = Some(incoming.timestamp);
        peer.latest_initiation_received = Some(now);
        peer.stats.rx_bytes += wire::INITIATION_LEN as u64;
        peer.stats.tx_bytes += wire::RESPONSE_LEN as u64;
        note_endpoint(peer, from);
        peer.received_authenticated(now);
        peer.sent_authenticated(now);
        peer.timers.zero_key_material = Some(now + REJECT_AFTER_TIME * 3);
        self.changed();
        self.forget(replaced);
        self.forget(retired);
        if let Some(p) = abandoned {
            self.by_index.remove(&p.state.sender);
        }
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
        let msg = Response::new_checked(message).map_err(|e| self.drop_for(None, e.into()))?;
        let Some(checker) = self.checker.as_ref() else {
            return Err(self.drop_for(None, DropReason::NoKey));
        };
        if !checker.mac1_ok(&msg) {
            return Err(self.drop_for(None, DropReason::BadMac));
        }
        if let Err(answer) = self.admit(&msg, from, now, out) {
            return answer;
        }
        // Only a response to the initiation in flight is worth a DH.
        let Some(id) = self
            .by_index
            .get(&msg.receiver())
            .copied()
            .filter(|&id| self.slot(id, msg.receiver()) == Some(Slot::Handshake))
        else {
            return Err(self.drop_for(None, DropReason::UnexpectedResponse));
        };
        let (Some(identity), Some(peer)) = (self.identity.as_ref(), self.peer(id)) else {
            return Err(self.drop_for(None, DropReason::UnexpectedResponse));
        };
        let Some(pending) = peer.handshake.as_ref() else {
            return Err(self.drop_for(Some(id), DropReason::UnexpectedResponse));
        };
        // A failure leaves the handshake as it was: a forged response
        // cannot cancel the real one.
        let keys = noise::consume_response(identity, &pending.state, &peer.psk, &msg)
            .map_err(|e| self.drop_for(Some(id), e.into()))?;
        let wall = self.wall(now);
        let Some(peer) = self.peer_mut(id) else {
            return Err(DropReason::UnexpectedResponse);
        };
        peer.handshake = None;
        // The initiator's rotation: the new session is current at once; an
        // unconfirmed `next` becomes previous if there is one.
        let new = Some(Arc::new(Session::new(keys, now, true)));
        let (retired_a, retired_b) = match peer.next.take() {
            Some(next) => {
                let old_current = std::mem::replace(&mut peer.current, new);
                (old_current, peer.previous.replace(next))
            }
            None => {
                let old_current = std::mem::replace(&mut peer.current, new);
                (
                    peer.previous.take(),
                    std::mem::replace(&mut peer.previous, old_current),
                )
            }
        };
        peer.stats.rx_bytes += wire::RESPONSE_LEN as u64;
        note_endpoint(peer, from);
        peer.received_authenticated(now);
        peer.timers.zero_key_material = Some(now + REJECT_AFTER_TIME * 3);
        peer.handshake_complete(wall);
        peer.want_handshake = false;
        log::info!("handshake with {} complete (we initiated)", Short(&peer.public));
        self.changed();
        self.forget(retired_a);
        self.forget(retired_b);
        // Confirm the session to the responder at once: with the staged
        // packets (poll sends them) or else a keepalive.
        let Some(peer) = self.peer_mut(id) else {
            return Ok(Action::Nothing);
        };
        if peer.staged.is_empty() {
            return self.seal_in(id, out, 0, now).map(Action::Reply);
        }
        Ok(Action::Nothing)
    }

    fn on_cookie_reply(&mut self, message: &[u8], now: Instant) -> Result<Action, DropReason> {
        let msg = CookieReply::new_checked(message).map_err(|e| self.drop_for(None, e.into()))?;
        let Some(id) = self.by_index.get(&msg.receiver()).copied() else {
            return Err(self.drop_for(None, DropReason::UnexpectedResponse));
        };
        let Some(peer) = self.peer_mut(id) else {
            return Err(self.drop_for(None, DropReason::UnexpectedResponse));
        };
        if !peer.jar.consume_reply(&msg, now) {
            return Err(self.drop_for(Some(id), DropReason::BadCookie));
        }
        log::info!(
            "{} is under load and sent a cookie: the next initiation carries mac2",
            Short(&peer.public)
        );
        Ok(Action::Nothing)
    }

    // ---- timers ----

    // ANCHOR: poll
    /// Runs the timers; returns the next message that is due, if any.
    /// Call it until it returns `None` (a few times a second, and after
    /// each batch of packets).
    pub fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        for id in 0..self.peers.len() {
            if self.peers[id].is_none() {
                continue;
            }
            self.expire(id, now);
            if let Some(t) = self.due(id, now, out) {
                return Some(t);
            }
        }
        None
    }

    /// Drops the peer's sessions that are too old to use.
    fn expire(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peer_mut(id) else { return };
        let old = |s: &Option<Arc<Session>>| s.as_ref().is_some_and(|s| s.is_expired(now));
        // (No allocation: `poll` runs this for every peer, often.)
        let mut gone: [Option<Arc<Session>>; 3] = [None, None, None];
        for (slot, g) in [&mut peer.current, &mut peer.next, &mut peer.previous]
            .into_iter()
            .zip(&mut gone)
        {
            if old(slot) {
                *g = slot.take();
            }
        }
        for s in gone {
            self.forget(s);
        }
    }

    /// The message due for one peer, if any.
    fn due(&mut self, id: PeerId, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        let expired = |t: Option<Instant>| t.is_some_and(|t| now >= t);
        let peer = self.peer_mut(id)?;
        // Nothing new for 3 x REJECT_AFTER_TIME: forget every key.
        if expired(peer.timers.zero_key_material) {
            peer.timers.zero_key_material = None;
            let sessions = [peer.current.take(), peer.next.take(), peer.previous.take()];
            let pending = peer.handshake.take();
            log::info!(
                "{}: no new session for 9 minutes, keys wiped",
                Short(&peer.public)
            );
            for s in sessions {
                self.forget(s);
            }
            if let Some(p) = pending {
                self.by_index.remove(&p.state.sender);
            }
        }
        let peer = self.peer_mut(id)?;
        if expired(peer.timers.retransmit_handshake) {
            peer.timers.retransmit_handshake = None;
            if peer.timers.handshake_attempts > MAX_TIMER_HANDSHAKES {
                // Section 6.4: after REKEY_ATTEMPT_TIME, give up and drop
                // what was waiting.
                log::info!(
                    "handshake with {} did not complete after {} attempts, giving up",
                    Short(&peer.public),
                    MAX_TIMER_HANDSHAKES + 2
                );
                peer.timers.send_keepalive = None;
                let n = peer.staged.len();
                peer.staged.clear();
                for _ in 0..n {
                    peer.stats.drops.increment(DropReason::Unanswered);
                }
                if peer.timers.zero_key_material.is_none() {
                    peer.timers.zero_key_material = Some(now + REJECT_AFTER_TIME * 3);
                }
            } else {
                peer.timers.handshake_attempts += 1;
                log::debug!(
                    "handshake with {} did not complete after 5 s, retrying (try {})",
                    Short(&peer.public),
                    peer.timers.handshake_attempts + 1
                );
                if let Some(t) = self.initiate(id, true, now, out) {
                    return Some(t);
                }
            }
        }
        let peer = self.peer_mut(id)?;
        if expired(peer.timers.send_keepalive) {
            peer.timers.send_keepalive = if std::mem::take(&mut peer.timers.need_another_keepalive) {
                Some(now + KEEPALIVE_TIMEOUT)
            } else {
                None
            };
            if let Some(t) = self.keepalive(id, now, out) {
                return Some(t);
            }
        }
        let peer = self.peer_mut(id)?;
        if expired(peer.timers.new_handshake) {
            peer.timers.new_handshake = None;
            log::debug!(
                "retrying the handshake with {}: nothing came back for 15 s",
                Short(&peer.public)
            );
            if let Some(t) = self.initiate(id, false, now, out) {
                return Some(t);
            }
        }
        let peer = self.peer_mut(id)?;
        if expired(peer.timers.persistent_keepalive) {
            peer.timers.persistent_keepalive = None;
            if peer.keepalive > 0
                && let Some(t) = self.keepalive(id, now, out)
            {
                return Some(t);
            }
        }
        let peer = self.peer_mut(id)?;
        // (Too soon after the last initiation: `initiate` says no, later.)
        if peer.want_handshake
            && peer.endpoint.is_some()
            && let Some(t) = self.initiate(id, false, now, out)
        {
            return Some(t);
        }
        // Packets that waited for a session go out once there is one.
        // Without one, they wait: the retransmit timer (with its jitter)
        // sends the next initiation, never this check, or two peers whose
        // initiations crossed would retry in lockstep.
        let peer = self.peer_mut(id)?;
        if !peer.staged.is_empty() && peer.can_send(now) {
            let packet = peer.staged.pop_front()?;
            let room = out.get_mut(DATA_HEADER_LEN..DATA_HEADER_LEN + packet.len())?;
            room.copy_from_slice(&packet);
            return self.seal_in(id, out, packet.len(), now).ok();
        }
        None
    }

    /// Sends a keepalive: on the current session, or (without one) staged
    /// behind a new handshake.
    fn keepalive(&mut self, id: PeerId, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        let peer = self.peer_mut(id)?;
        if peer.can_send(now) {
            return self.seal_in(id, out, 0, now).ok();
        }
        if peer.staged.is_empty() {
            peer.staged.push_back(Vec::new());
        }
        self.initiate(id, false, now, out)
    }
    // ANCHOR_END: poll

    /// A status line for each peer, then one for drops no peer caused:
    /// what `SIGUSR1` prints.
    pub fn status(&self, now: Instant) -> Vec<String> {
        let wall = self.wall(now);
        let mut lines: Vec<String> = self
            .peers
            .iter()
            .flatten()
            .map(|p| {
                let endpoint = p.endpoint.map_or("none".to_string(), |e| e.to_string());
                let handshake = p.last_handshake.map_or("never".to_string(), |t| {
                    format!("{} s ago", wall.saturating_sub(t).as_secs())
                });
                let s = &p.stats;
                format!(
                    "peer {} endpoint {endpoint} handshake {handshake}: received {} bytes, sent {} bytes, handshakes {}, dropped {}",
                    Short(&p.public),
                    s.rx_bytes,
                    s.tx_bytes,
                    s.handshakes,
                    s.drops
                )
            })
            .collect();
        lines.push(format!(
            "unattributed: dropped {}; cookie replies sent {}",
            self.drops, self.cookie_replies
        ));
        lines
    }
}

/// Follows a peer to the address an authenticated message came from
/// (section 2.1, roaming).
/// Returns true when it moved.
fn note_endpoint(peer: &mut Peer, from: SocketAddr) -> bool {
    if peer.endpoint == Some(from) {
        return false;
    }
    if peer.endpoint.is_some() {
        log::info!("{} roamed to {from}", Short(&peer.public));
    }
    peer.endpoint = Some(from);
    true
}

// ANCHOR: route
/// Cryptokey routing (section 2): the peer whose allowed IPs hold the
/// destination of `packet`, which must be one whole IP packet of at most
/// `mtu` bytes.
pub fn route(allowed: &AllowedIps<PeerId>, mtu: usize, packet: &[u8]) -> Result<PeerId, DropReason> {
    if packet.len() > mtu {
        return Err(DropReason::TooBig);
    }
    let Some((_, destination)) = (ip_packet_len(packet) == Some(packet.len()))
        .then(|| inner_addresses(packet))
        .flatten()
    else {
        return Err(DropReason::NotIp);
    };
    allowed.lookup(destination).ok_or(DropReason::NoRoute)
}

/// The packet a peer sent, opened: one whole IP packet at the start of
/// `body` (its length is returned; the rest is padding), from a source
/// address the peer may use (cryptokey routing, section 2).
pub fn check_inner(allowed: &AllowedIps<PeerId>, id: PeerId, body: &[u8]) -> Result<usize, DropReason> {
    let len = match ip_packet_len(body) {
        Some(len) if len <= body.len() && len > 0 => len,
        _ => return Err(DropReason::NotIp),
    };
    let source = inner_addresses(&body[..len]).map(|(s, _)| s);
    if source.and_then(|s| allowed.lookup(s)) != Some(id) {
        return Err(DropReason::SourceNotAllowed);
    }
    Ok(len)
}
// ANCHOR_END: route

/// What the data path needs of one peer: [`Device::peer_sessions`].
#[derive(Clone)]
pub struct PeerSessions {
    pub endpoint: Option<SocketAddr>,
    /// The session to send on, if any (it may be too old to use:
    /// [`Session::reserve`] says).
    pub current: Option<Arc<Session>>,
    /// The sessions a data message may arrive on: current, next,
    /// previous.
    pub receiving: [Option<Arc<Session>>; 3],
}
