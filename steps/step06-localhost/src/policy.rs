//! The server's rules, sans-IO: who may hold a handshake slot, which
//! initiation is a replay, what one control connection may ask and in what
//! order, which ports a key may claim, and what visitors may cost. The
//! shell ([`crate::server`]) asks, and does what it is told; the tests here
//! drive every rule without a socket, a thread or a clock.
//!
//! Each limit answers one way a single host could otherwise take the
//! server from everyone else:
//!
//! | limit | stops |
//! |---|---|
//! | [`HandshakeLimits::max_pending`], [`HandshakeLimits::per_source`] | connections that never finish the handshake holding every slot |
//! | the newest timestamp per key ([`Handshakes::admit`]) | one recorded initiation replayed over new connections |
//! | [`Session`] | a client asking out of order, or for many ports on one connection |
//! | [`PortRules`] | a key claiming ports it was not given, below 1024, or without end |
//! | [`VisitorLimits`] | idle or non-reading visitors of an exposed port taking every stream and pinning memory |

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use step04_crypto::noise::TIMESTAMP_LEN;

use crate::conn::SessionFrame;
use crate::mux::INITIAL_WINDOW;
use crate::wire::{ErrorCode, Protos, VERSION};

// ANCHOR: source_key
/// The address a per-source limit counts by: an IPv4 address, or the /64
/// of an IPv6 one (one host usually has a whole /64 to pick addresses
/// from, RFC 4291 section 2.5.1), with IPv4-mapped IPv6 addresses taken
/// as the IPv4 address they are.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}
// ANCHOR_END: source_key

/// Counts per source address, for the limits that have one.
#[derive(Debug, Default)]
struct PerSource(HashMap<IpAddr, usize>);

impl PerSource {
    fn get(&self, ip: IpAddr) -> usize {
        self.0.get(&source_key(ip)).copied().unwrap_or(0)
    }
    fn add(&mut self, ip: IpAddr) {
        *self.0.entry(source_key(ip)).or_default() += 1;
    }
    fn remove(&mut self, ip: IpAddr) {
        let key = source_key(ip);
        if let Some(n) = self.0.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&key);
            }
        }
    }
}

// ---------------------------------------------------------------------
// Handshakes
// ---------------------------------------------------------------------

/// The limits on connections that have not finished their handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Connections from accept to Hello at once; more are closed at once.
    pub max_pending: usize,
    /// The same from one source address (an IPv6 /64).
    pub per_source: usize,
    /// Ephemeral keys of accepted initiations remembered, so that a
    /// replay of one is refused before any Diffie-Hellman.
    pub remembered: usize,
    /// How long a new connection has to send its initiation.
    pub first_record: Duration,
    /// How long it has, from accept, to finish the handshake and say Hello.
    pub until_hello: Duration,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            max_pending: 64,
            per_source: 8,
            remembered: 4096,
            first_record: Duration::from_secs(2),
            until_hello: Duration::from_secs(5),
        }
    }
}

/// Why a connection was closed in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRefusal {
    /// [`HandshakeLimits::max_pending`] handshakes are under way.
    Busy,
    /// [`HandshakeLimits::per_source`] of them are from this source.
    BusySource,
    /// An initiation the server has seen before, or older than the newest
    /// it accepted from the same key.
    Replay,
}

impl fmt::Display for HandshakeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeRefusal::Busy => "too many handshakes under way",
            HandshakeRefusal::BusySource => "too many handshakes under way from this address",
            HandshakeRefusal::Replay => "a replayed initiation (its timestamp is not newer than the last)",
        })
    }
}

impl std::error::Error for HandshakeRefusal {}

/// What [`Handshakes`] refused, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandshakeCounters {
    pub busy: u64,
    pub busy_source: u64,
    /// Replays refused before any Diffie-Hellman: the initiation's
    /// ephemeral key is one we accepted before.
    pub replays_seen: u64,
    /// Replays refused after opening the initiation (two Diffie-Hellman
    /// operations): its timestamp is not newer than the last.
    pub replays_old: u64,
}

// ANCHOR: handshakes
/// The handshakes of one server: slots for those under way, and for each
/// client key the newest TAI64N timestamp it sent.
///
/// A recorded initiation is a valid initiation: its mac1 is right and it
/// opens. Over UDP, WireGuard refuses a replay by its timestamp (the
/// whitepaper, section 5.1: the responder keeps "the greatest timestamp
/// received per peer" and discards initiations that are not newer). Over
/// TCP each replay would also cost a connection, a thread and, if
/// answered, two more Diffie-Hellman operations for a response no one can
/// read. So: the timestamp must be newer than the newest accepted from
/// that key, and an initiation whose ephemeral key we accepted recently is
/// refused before even the first Diffie-Hellman.
#[derive(Debug, Default)]
pub struct Handshakes {
    limits: HandshakeLimits,
    pending: usize,
    per_source: PerSource,
    newest: HashMap<[u8; 32], [u8; TIMESTAMP_LEN]>,
    recent: VecDeque<[u8; 32]>,
    recent_set: HashSet<[u8; 32]>,
    pub counters: HandshakeCounters,
}
// ANCHOR_END: handshakes

impl Handshakes {
    pub fn new(limits: HandshakeLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn limits(&self) -> &HandshakeLimits {
        &self.limits
    }

    /// Handshakes under way.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// A connection from `source` was accepted: it gets a slot, held until
    /// its Hello or its end ([`end`](Self::end)), or is refused.
    pub fn begin(&mut self, source: IpAddr) -> Result<(), HandshakeRefusal> {
        if self.pending >= self.limits.max_pending {
            self.counters.busy += 1;
            return Err(HandshakeRefusal::Busy);
        }
        if self.per_source.get(source) >= self.limits.per_source {
            self.counters.busy_source += 1;
            return Err(HandshakeRefusal::BusySource);
        }
        self.pending += 1;
        self.per_source.add(source);
        Ok(())
    }

    /// The slot of a connection from `source` is free again.
    pub fn end(&mut self, source: IpAddr) {
        self.pending = self.pending.saturating_sub(1);
        self.per_source.remove(source);
    }

    /// Whether an initiation with this ephemeral key was accepted before:
    /// a replay, refused before any Diffie-Hellman (counted).
    pub fn seen(&mut self, ephemeral: &[u8; 32]) -> bool {
        let seen = self.recent_set.contains(ephemeral);
        if seen {
            self.counters.replays_seen += 1;
        }
        seen
    }

    // ANCHOR: admit
    /// An initiation from `peer`, sent at `timestamp` (TAI64N, whose
    /// big-endian bytes compare as the times do), with `ephemeral` in it:
    /// accepted only if newer than every earlier one of that key.
    pub fn admit(
        &mut self,
        peer: &[u8; 32],
        timestamp: [u8; TIMESTAMP_LEN],
        ephemeral: [u8; 32],
    ) -> Result<(), HandshakeRefusal> {
        if self.newest.get(peer).is_some_and(|newest| timestamp <= *newest) {
            self.counters.replays_old += 1;
            return Err(HandshakeRefusal::Replay);
        }
        self.newest.insert(*peer, timestamp);
        if self.limits.remembered > 0 && self.recent_set.insert(ephemeral) {
            self.recent.push_back(ephemeral);
            while self.recent.len() > self.limits.remembered {
                if let Some(old) = self.recent.pop_front() {
                    self.recent_set.remove(&old);
                }
            }
        }
        Ok(())
    }
    // ANCHOR_END: admit
}

// ---------------------------------------------------------------------
// One control connection
// ---------------------------------------------------------------------

/// What the server does with a session frame, as [`Session`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A Hello with our version: the session starts.
    Start,
    /// Claim this port ([`Ports::claim`]), and tell the session how it
    /// went ([`Session::exposed`]).
    Expose { port: u16, protos: Protos },
    /// Answer with this Error; the connection stays.
    Refuse(ErrorCode, String),
    /// Answer with this Error, then close the connection.
    Close(ErrorCode, String),
}

// ANCHOR: session
/// The order of one control connection, server side: a Hello with our
/// version first, then one Expose; anything else is refused, and what
/// breaks the protocol ends the connection.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Session {
    started: bool,
    exposed: bool,
}

impl Session {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the Hello came.
    pub fn started(&self) -> bool {
        self.started
    }

    /// What to do with `frame`.
    pub fn on_frame(&mut self, frame: &SessionFrame) -> Step {
        match (self.started, frame) {
            (false, SessionFrame::Hello { version: VERSION }) => {
                self.started = true;
                Step::Start
            }
            (false, SessionFrame::Hello { version }) => Step::Close(
                ErrorCode::Unsupported,
                format!("version {version} is not spoken here (this is {VERSION})"),
            ),
            (false, other) => Step::Close(ErrorCode::Protocol, format!("{other:?} before Hello")),
            (true, SessionFrame::Expose { .. }) if self.exposed => {
                Step::Refuse(ErrorCode::Unsupported, "one port per connection".into())
            }
            (true, &SessionFrame::Expose { port, protos }) => Step::Expose { port, protos },
            (true, other) => Step::Close(ErrorCode::Protocol, format!("unexpected {other:?}")),
        }
    }

    /// The port asked for by the last [`Step::Expose`] is exposed.
    pub fn exposed(&mut self) {
        self.exposed = true;
    }
}
// ANCHOR_END: session

// ---------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------

/// Ports a key may claim: `8000`, `8000-8099`, or several of these
/// separated by commas (`--peer KEY=8000-8099,9000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSet(Vec<RangeInclusive<u16>>);

impl PortSet {
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|r| r.contains(&port))
    }

    /// The ports, in the order given.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().flat_map(|r| r.clone())
    }

    /// The lowest port.
    pub fn lowest(&self) -> Option<u16> {
        self.0.iter().map(|r| *r.start()).min()
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

impl FromStr for PortSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("`{p}` is not a port from 1 to 65535")),
        };
        let ranges = s
            .split(',')
            .map(|part| match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (port(a)?, port(b)?);
                    if a > b {
                        return Err(format!("`{part}` is not a range (from low to high)"));
                    }
                    Ok(a..=b)
                }
                None => port(part).map(|p| p..=p),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PortSet(ranges))
    }
}

/// `--peer PUBKEY[=PORTS]`: a client key the server accepts, and the
/// ports it may claim (without `=PORTS`: any from 1024). The key's base64
/// ends in `=` itself, so the ports start after the last `=`:
/// `KEY==8000-8099`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub key: step04_crypto::PublicKey,
    pub ports: Option<PortSet>,
}

impl FromStr for PeerSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (key, ports) = match s.rsplit_once('=') {
            Some((key, ports)) if !ports.is_empty() => (key, Some(ports)),
            _ => (s, None),
        };
        let key = step04_crypto::keys::parse_public(key.trim())
            .map_err(|e| format!("`{}` is not a public key ({e})", key.trim()))?;
        let ports = ports
            .map(|p| p.parse::<PortSet>())
            .transpose()
            .map_err(|e| format!("{e} (PUBKEY=PORTS, for example KEY=8000-8099,9000)"))?;
        Ok(PeerSpec { key, ports })
    }
}

// ANCHOR: port_rules
/// Which ports each key may claim. A key with no [`PortSet`] may claim
/// any port from 1024; ports below 1024 (the ones the system reserves for
/// its own services: a key that claims 22 or 443 could pose as this
/// server's SSH or web server) only with `allow_low`, and then only those
/// a key's set names. No key holds more than `max_per_key` ports at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRules {
    pub allow_low: bool,
    pub max_per_key: usize,
    sets: HashMap<[u8; 32], PortSet>,
}
// ANCHOR_END: port_rules

/// The lowest port a key may claim without `allow_low`.
pub const FIRST_UNPRIVILEGED: u16 = 1024;
/// Ports one key may hold at once, by default.
pub const MAX_PORTS_PER_KEY: usize = 4;

impl Default for PortRules {
    fn default() -> Self {
        Self::new(false, MAX_PORTS_PER_KEY)
    }
}

impl PortRules {
    /// Rules with no key restricted yet.
    pub fn new(allow_low: bool, max_per_key: usize) -> Self {
        Self {
            allow_low,
            max_per_key,
            sets: HashMap::new(),
        }
    }

    /// `key` may claim only the ports of `set`.
    pub fn restrict(&mut self, key: [u8; 32], set: PortSet) {
        self.sets.insert(key, set);
    }

    /// Whether `key` may hold `port`, or why not.
    pub fn check(&self, key: &[u8; 32], port: u16) -> Result<(), String> {
        if port < FIRST_UNPRIVILEGED && !self.allow_low {
            return Err(format!(
                "port {port} is below {FIRST_UNPRIVILEGED}, which this server does not give out"
            ));
        }
        match self.sets.get(key) {
            Some(set) if !set.contains(port) => Err(format!("port {port} is not one of this key's ({set})")),
            None if port < FIRST_UNPRIVILEGED => Err(format!(
                "port {port} is below {FIRST_UNPRIVILEGED}: only ports listed for the key (--peer KEY=PORTS) are given out there"
            )),
            _ => Ok(()),
        }
    }

    /// The ports to try, in order, for a claim of port 0 ("any"): the
    /// key's own set, or `[0]` (the system picks one).
    pub fn candidates(&self, key: &[u8; 32]) -> Vec<u16> {
        match self.sets.get(key) {
            Some(set) => set
                .ports()
                .filter(|&p| self.check(key, p).is_ok())
                .take(MAX_CANDIDATES)
                .collect(),
            None => vec![0],
        }
    }
}

/// Ports tried for one claim of "any port".
const MAX_CANDIDATES: usize = 64;

/// What a claim needs the shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim<C> {
    /// Bind the first of these that is free (0: any the system gives),
    /// then call [`Ports::bound`].
    Bind(Vec<u16>),
    /// The same key's connection `from` holds the port: close that
    /// exposure, then bind `port` and call [`Ports::bound`].
    Takeover { port: u16, from: C },
}

// ANCHOR: ports
/// The public ports held, each by a key and one of its connections (`C`,
/// the shell's name for a connection).
#[derive(Debug)]
pub struct Ports<C> {
    rules: PortRules,
    held: HashMap<u16, ([u8; 32], C)>,
}
// ANCHOR_END: ports

impl<C: Clone + PartialEq> Ports<C> {
    pub fn new(rules: PortRules) -> Self {
        Self {
            rules,
            held: HashMap::new(),
        }
    }

    pub fn rules(&self) -> &PortRules {
        &self.rules
    }

    /// Who holds `port`.
    pub fn holder(&self, port: u16) -> Option<&C> {
        self.held.get(&port).map(|(_, c)| c)
    }

    fn held_by_key(&self, key: &[u8; 32]) -> usize {
        self.held.values().filter(|(k, _)| k == key).count()
    }

    /// `key`, on connection `conn`, asks for `port` (0: any).
    pub fn claim(&self, key: &[u8; 32], port: u16) -> Result<Claim<C>, (ErrorCode, String)> {
        let unavailable = |text: String| (ErrorCode::PortUnavailable, text);
        if port == 0 {
            if self.held_by_key(key) >= self.rules.max_per_key {
                return Err(unavailable(self.cap_text()));
            }
            let free: Vec<u16> = self
                .rules
                .candidates(key)
                .into_iter()
                .filter(|p| *p == 0 || !self.held.contains_key(p))
                .collect();
            if free.is_empty() {
                return Err(unavailable("none of this key's ports is free".into()));
            }
            return Ok(Claim::Bind(free));
        }
        self.rules.check(key, port).map_err(unavailable)?;
        match self.held.get(&port) {
            Some((holder, _)) if holder != key => Err((
                ErrorCode::PortInUse,
                format!("port {port} is exposed by another client"),
            )),
            Some((_, from)) => Ok(Claim::Takeover {
                port,
                from: from.clone(),
            }),
            None if self.held_by_key(key) >= self.rules.max_per_key => Err(unavailable(self.cap_text())),
            None => Ok(Claim::Bind(vec![port])),
        }
    }

    fn cap_text(&self) -> String {
        format!(
            "this key holds {} ports already, the most it may",
            self.rules.max_per_key
        )
    }

    /// `port` is bound for `key`'s connection `conn` (after a takeover,
    /// instead of the old one). Refused when the system gave a port the
    /// rules do not allow (for a claim of any port).
    pub fn bound(&mut self, key: &[u8; 32], conn: C, port: u16) -> Result<(), (ErrorCode, String)> {
        self.rules
            .check(key, port)
            .map_err(|text| (ErrorCode::PortUnavailable, text))?;
        self.held.insert(port, (*key, conn));
        Ok(())
    }

    /// `port` is free again.
    pub fn release(&mut self, port: u16) {
        self.held.remove(&port);
    }

    /// Every port `conn` holds, now free.
    pub fn release_conn(&mut self, conn: &C) -> Vec<u16> {
        let mine: Vec<u16> = self
            .held
            .iter()
            .filter(|(_, (_, c))| c == conn)
            .map(|(&p, _)| p)
            .collect();
        for p in &mine {
            self.held.remove(p);
        }
        mine
    }
}

// ---------------------------------------------------------------------
// Visitors
// ---------------------------------------------------------------------

/// The most a stream buffers: a window each way (see [`crate::mux`]).
pub const STREAM_COST: usize = 2 * INITIAL_WINDOW as usize;

/// The limits on visitors of exposed ports, over the whole server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisitorLimits {
    /// TCP visitors' streams from one source address (an IPv6 /64) at
    /// once: half of what the default budget holds, so that one host
    /// cannot take them all.
    pub per_source: usize,
    /// The bytes all streams may buffer, each counted at the most it can
    /// hold, [`STREAM_COST`]: a stream that cannot get its share is
    /// refused.
    pub budget: usize,
    /// A visitor's stream with no byte moving either way for this long is
    /// reset (a visitor that neither sends nor reads holds nothing for
    /// ever).
    pub idle_timeout: Duration,
}

impl Default for VisitorLimits {
    fn default() -> Self {
        Self {
            per_source: 64,
            budget: 64 << 20,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Why a visitor was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitorRefusal {
    /// [`VisitorLimits::per_source`] streams from this source.
    Source,
    /// The [`VisitorLimits::budget`] is spent.
    Budget,
}

impl fmt::Display for VisitorRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VisitorRefusal::Source => "too many streams from this address",
            VisitorRefusal::Budget => "the server's buffer budget is spent",
        })
    }
}

/// Visitors refused, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VisitorCounters {
    pub admitted: u64,
    pub refused_source: u64,
    pub refused_budget: u64,
    /// Streams reset for [`VisitorLimits::idle_timeout`].
    pub idle: u64,
}

// ANCHOR: visitors
/// The visitors of every exposed port: how many streams each source has,
/// and how many bytes all of them may buffer at most.
#[derive(Debug, Default)]
pub struct Visitors {
    limits: VisitorLimits,
    per_source: PerSource,
    reserved: usize,
    peak: usize,
    pub counters: VisitorCounters,
}
// ANCHOR_END: visitors

impl Visitors {
    pub fn new(limits: VisitorLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn limits(&self) -> &VisitorLimits {
        &self.limits
    }

    /// A visitor from `source` wants a stream: it gets one (and its share
    /// of the budget) or is refused. Every admitted visitor must
    /// [`leave`](Self::leave).
    pub fn admit(&mut self, source: IpAddr) -> Result<(), VisitorRefusal> {
        if self.per_source.get(source) >= self.limits.per_source {
            self.counters.refused_source += 1;
            return Err(VisitorRefusal::Source);
        }
        if self.reserved + STREAM_COST > self.limits.budget {
            self.counters.refused_budget += 1;
            return Err(VisitorRefusal::Budget);
        }
        self.per_source.add(source);
        self.reserved += STREAM_COST;
        self.peak = self.peak.max(self.reserved);
        self.counters.admitted += 1;
        Ok(())
    }

    /// The stream of a visitor from `source` is gone.
    pub fn leave(&mut self, source: IpAddr) {
        self.per_source.remove(source);
        self.reserved = self.reserved.saturating_sub(STREAM_COST);
    }

    /// Bytes reserved now: the most all visitor streams can buffer.
    pub fn reserved(&self) -> usize {
        self.reserved
    }

    /// The most ever reserved at once.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Streams of `source` now.
    pub fn streams_of(&self, source: IpAddr) -> usize {
        self.per_source.get(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sources_are_addresses_or_ipv6_slash_64s() {
        assert_eq!(source_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(source_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn handshake_slots_are_capped_in_all_and_per_source() {
        let mut h = Handshakes::new(HandshakeLimits {
            max_pending: 3,
            per_source: 2,
            ..HandshakeLimits::default()
        });
        h.begin(ip("192.0.2.1")).unwrap();
        h.begin(ip("192.0.2.1")).unwrap();
        assert_eq!(h.begin(ip("192.0.2.1")), Err(HandshakeRefusal::BusySource));
        // A /64 is one source.
        h.begin(ip("2001:db8::1")).unwrap();
        assert_eq!(h.begin(ip("198.51.100.1")), Err(HandshakeRefusal::Busy));
        h.end(ip("2001:db8::1"));
        assert_eq!(h.begin(ip("2001:db8::ffff")), Ok(()));
        h.end(ip("2001:db8::ffff"));
        h.begin(ip("2001:db8::2")).unwrap();
        assert_eq!(h.begin(ip("2001:db8::3")), Err(HandshakeRefusal::Busy));
        assert_eq!(h.pending(), 3);
        assert_eq!(
            h.counters,
            HandshakeCounters {
                busy: 2,
                busy_source: 1,
                ..HandshakeCounters::default()
            }
        );
    }

    fn t(secs: u64, nanos: u32) -> [u8; TIMESTAMP_LEN] {
        step04_crypto::noise::tai64n(Duration::new(secs, nanos))
    }

    #[test]
    fn only_a_newer_timestamp_of_a_key_is_admitted() {
        let mut h = Handshakes::default();
        let (a, b) = ([1; 32], [2; 32]);
        h.admit(&a, t(100, 5), [10; 32]).unwrap();
        // The same initiation again, and an older one: replays.
        assert_eq!(h.admit(&a, t(100, 5), [11; 32]), Err(HandshakeRefusal::Replay));
        assert_eq!(
            h.admit(&a, t(99, 999_999_999), [12; 32]),
            Err(HandshakeRefusal::Replay)
        );
        // One nanosecond later is new; another key has its own clock.
        h.admit(&a, t(100, 6), [13; 32]).unwrap();
        h.admit(&b, t(1, 0), [14; 32]).unwrap();
        assert_eq!(h.counters.replays_old, 2);
        // A seen ephemeral is known without opening anything.
        assert!(h.seen(&[10; 32]));
        assert!(h.seen(&[13; 32]));
        assert!(!h.seen(&[11; 32]), "refused ones are not remembered");
        assert_eq!(h.counters.replays_seen, 2);
    }

    #[test]
    fn remembered_ephemerals_are_bounded() {
        let mut h = Handshakes::new(HandshakeLimits {
            remembered: 2,
            ..HandshakeLimits::default()
        });
        for i in 0..5u8 {
            h.admit(&[1; 32], t(u64::from(i) + 1, 0), [i; 32]).unwrap();
        }
        assert!(!h.seen(&[2; 32]));
        assert!(h.seen(&[3; 32]) && h.seen(&[4; 32]));
        assert_eq!(h.recent.len(), 2);
        assert_eq!(h.recent_set.len(), 2);
    }

    #[test]
    fn a_session_is_hello_then_one_expose() {
        let mut s = Session::new();
        let expose = SessionFrame::Expose {
            port: 8080,
            protos: Protos::TCP,
        };
        assert!(matches!(s.on_frame(&expose), Step::Close(ErrorCode::Protocol, _)));
        assert_eq!(s.on_frame(&SessionFrame::Hello { version: VERSION }), Step::Start);
        assert_eq!(
            s.on_frame(&expose),
            Step::Expose {
                port: 8080,
                protos: Protos::TCP
            }
        );
        // A refused Expose may be asked again; an exposed one may not.
        assert_eq!(
            s.on_frame(&expose),
            Step::Expose {
                port: 8080,
                protos: Protos::TCP
            }
        );
        s.exposed();
        assert_eq!(
            s.on_frame(&expose),
            Step::Refuse(ErrorCode::Unsupported, "one port per connection".into())
        );
        assert!(matches!(
            s.on_frame(&SessionFrame::Hello { version: VERSION }),
            Step::Close(ErrorCode::Protocol, _)
        ));
        let mut s = Session::new();
        assert_eq!(
            s.on_frame(&SessionFrame::Hello { version: VERSION + 1 }),
            Step::Close(
                ErrorCode::Unsupported,
                format!("version {} is not spoken here (this is {VERSION})", VERSION + 1)
            )
        );
        assert!(!s.started());
    }

    #[test]
    fn port_sets_parse_and_say_what_is_wrong() {
        let set: PortSet = "8000-8002, 9000".parse().unwrap();
        assert_eq!(set.ports().collect::<Vec<_>>(), [8000, 8001, 8002, 9000]);
        assert_eq!(set.to_string(), "8000-8002,9000");
        assert_eq!(set.lowest(), Some(8000));
        for bad in ["", "0", "70000", "8002-8000", "http", "80,", "1-2-3"] {
            assert!(bad.parse::<PortSet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn peer_specs_are_a_key_and_maybe_its_ports() {
        let key = step04_crypto::keys::public_to_string(&step04_crypto::PublicKey::from(
            &step04_crypto::StaticSecret::from([1; 32]),
        ));
        assert!(key.ends_with('='));
        let bare: PeerSpec = key.parse().unwrap();
        assert_eq!(bare.ports, None);
        let with: PeerSpec = format!("{key}=8000-8001").parse().unwrap();
        assert_eq!(with.key, bare.key);
        assert_eq!(with.ports.unwrap().ports().count(), 2);
        assert!(
            format!("{key}=80x")
                .parse::<PeerSpec>()
                .unwrap_err()
                .contains("`80x` is not a port")
        );
        assert!(
            "nokey=8000"
                .parse::<PeerSpec>()
                .unwrap_err()
                .contains("is not a public key")
        );
    }

    #[test]
    fn keys_claim_only_their_ports_and_no_more_than_the_cap() {
        let (a, b, c) = ([1; 32], [2; 32], [3; 32]);
        let mut rules = PortRules::new(false, 2);
        rules.restrict(a, "8000-8001,80".parse().unwrap());
        let mut ports: Ports<u32> = Ports::new(rules);
        // Below 1024 only with allow_low, and then only listed ports.
        assert_eq!(ports.claim(&a, 80).unwrap_err().0, ErrorCode::PortUnavailable);
        assert_eq!(ports.claim(&b, 22).unwrap_err().0, ErrorCode::PortUnavailable);
        assert_eq!(ports.claim(&a, 9000).unwrap_err().0, ErrorCode::PortUnavailable);
        assert_eq!(ports.claim(&a, 8000), Ok(Claim::Bind(vec![8000])));
        ports.bound(&a, 1, 8000).unwrap();
        // Another key: in use; the same key again: a takeover.
        assert_eq!(ports.claim(&c, 8000).unwrap_err().0, ErrorCode::PortInUse);
        assert_eq!(ports.claim(&a, 8000), Ok(Claim::Takeover { port: 8000, from: 1 }));
        // Any port: the key's own free ones.
        assert_eq!(ports.claim(&a, 0), Ok(Claim::Bind(vec![8001])));
        ports.bound(&a, 2, 8001).unwrap();
        assert!(
            ports
                .claim(&a, 0)
                .unwrap_err()
                .1
                .contains("holds 2 ports already")
        );
        // Unrestricted keys: any port from 1024; the system's pick checked.
        assert_eq!(ports.claim(&b, 0), Ok(Claim::Bind(vec![0])));
        assert!(ports.bound(&b, 3, 1023).is_err());
        ports.bound(&b, 3, 40000).unwrap();
        assert_eq!(ports.release_conn(&1), [8000]);
        assert_eq!(ports.holder(8001), Some(&2));
        assert_eq!(ports.claim(&c, 8000), Ok(Claim::Bind(vec![8000])));

        let mut low = PortRules::new(true, MAX_PORTS_PER_KEY);
        low.restrict(a, "80,443".parse().unwrap());
        assert!(low.check(&a, 80).is_ok());
        assert!(low.check(&a, 22).is_err());
        assert!(low.check(&b, 22).is_err(), "only listed ports below 1024");
        assert!(low.check(&b, 2222).is_ok());
    }

    #[test]
    fn visitors_are_capped_per_source_and_by_the_budget() {
        let mut v = Visitors::new(VisitorLimits {
            per_source: 3,
            budget: 5 * STREAM_COST,
            idle_timeout: Duration::from_secs(1),
        });
        for _ in 0..3 {
            v.admit(ip("192.0.2.1")).unwrap();
        }
        assert_eq!(v.admit(ip("192.0.2.1")), Err(VisitorRefusal::Source));
        v.admit(ip("192.0.2.2")).unwrap();
        v.admit(ip("2001:db8::1")).unwrap();
        assert_eq!(v.admit(ip("192.0.2.3")), Err(VisitorRefusal::Budget));
        assert_eq!(v.reserved(), 5 * STREAM_COST);
        v.leave(ip("192.0.2.1"));
        assert_eq!(v.streams_of(ip("192.0.2.1")), 2);
        v.admit(ip("192.0.2.3")).unwrap();
        assert_eq!(v.peak(), 5 * STREAM_COST);
        assert_eq!(
            v.counters,
            VisitorCounters {
                admitted: 6,
                refused_source: 1,
                refused_budget: 1,
                idle: 0
            }
        );
    }
}
