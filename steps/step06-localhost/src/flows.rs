//! The server's UDP flows: which visitor address is which stream, and
//! when a flow has been quiet long enough to forget. Sans-IO: addresses,
//! lengths and times in, decisions out.
//!
//! UDP has no connections, so the server makes them up, the way a NAT
//! does (RFC 4787 section 4.3): every source address that sends to the
//! public port is a *flow*, a flow is one stream to the client, and a
//! flow with no datagram either way for [`IDLE_TIMEOUT`] is forgotten
//! (its stream reset). The next datagram from that address starts a new
//! flow. Flows are bounded in number, so a spoofed flood of source
//! addresses costs the server a fixed amount of memory: beyond the bound,
//! datagrams from new addresses are dropped and counted.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::datagram::MAX_DATAGRAM;
use crate::policy::source_key;

// ANCHOR: limits
/// A flow with no datagram either way for this long is forgotten. RFC
/// 4787 asks NATs for at least two minutes; a tunnel for one service can
/// be quicker, and the visitor's next datagram simply starts a new flow.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Flows at once on one public port.
pub const MAX_FLOWS: usize = 128;
/// Flows at once on one public port from one address (an IPv6 /64): a
/// host sending from many source ports must not take every flow.
pub const MAX_FLOWS_PER_SOURCE: usize = MAX_FLOWS / 4;
// ANCHOR_END: limits

/// Limits of the UDP flows of one public port.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub idle_timeout: Duration,
    pub max_flows: usize,
    /// Flows from one address (see [`crate::policy::source_key`]).
    pub max_flows_per_source: usize,
    /// Longer datagrams are dropped.
    pub max_datagram: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            idle_timeout: IDLE_TIMEOUT,
            max_flows: MAX_FLOWS,
            max_flows_per_source: MAX_FLOWS_PER_SOURCE,
            max_datagram: MAX_DATAGRAM,
        }
    }
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Longer than [`Config::max_datagram`].
    TooLong,
    /// From a new address with [`Config::max_flows`] flows open.
    TooManyFlows,
    /// From a new port of an address with
    /// [`Config::max_flows_per_source`] flows open.
    TooManyFromSource,
    /// Its flow's stream has no credit or buffer left: the other end is
    /// not keeping up. UDP may lose datagrams; waiting would stall every
    /// other flow behind this one.
    NoCredit,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::TooLong => "too-long",
            DropReason::TooManyFlows => "too-many-flows",
            DropReason::TooManyFromSource => "too-many-from-source",
            DropReason::NoCredit => "no-credit",
        })
    }
}

/// Counted events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub opened: u64,
    pub expired: u64,
    pub too_long: u64,
    pub too_many_flows: u64,
    pub too_many_from_source: u64,
    pub no_credit: u64,
}

impl Counters {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Counters) {
        self.opened += other.opened;
        self.expired += other.expired;
        self.too_long += other.too_long;
        self.too_many_flows += other.too_many_flows;
        self.too_many_from_source += other.too_many_from_source;
        self.no_credit += other.no_credit;
    }

    /// Counts a dropped datagram.
    pub fn drop(&mut self, reason: DropReason) {
        match reason {
            DropReason::TooLong => self.too_long += 1,
            DropReason::TooManyFlows => self.too_many_flows += 1,
            DropReason::TooManyFromSource => self.too_many_from_source += 1,
            DropReason::NoCredit => self.no_credit += 1,
        }
    }
}

/// What to do with a datagram from a visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it on this flow's stream.
    Forward(u32),
    /// A new visitor: open a stream, [`FlowTable::insert`] it, then send.
    Open,
    /// Drop it (already counted).
    Drop(DropReason),
}

#[derive(Debug)]
struct Flow {
    stream: u32,
    last: Instant,
}

// ANCHOR: table
/// The flows of one public port.
#[derive(Debug)]
pub struct FlowTable {
    config: Config,
    flows: HashMap<SocketAddr, Flow>,
    by_stream: HashMap<u32, SocketAddr>,
    pub counters: Counters,
}
// ANCHOR_END: table

impl FlowTable {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            flows: HashMap::new(),
            by_stream: HashMap::new(),
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Flows open.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    // ANCHOR: on_datagram
    /// A datagram of `len` bytes from `from` reached the public port.
    pub fn on_datagram(&mut self, from: SocketAddr, len: usize, now: Instant) -> Verdict {
        let verdict = if len > self.config.max_datagram {
            Verdict::Drop(DropReason::TooLong)
        } else if let Some(flow) = self.flows.get_mut(&from) {
            flow.last = now;
            Verdict::Forward(flow.stream)
        } else if self.flows.len() >= self.config.max_flows {
            Verdict::Drop(DropReason::TooManyFlows)
        } else if self.flows_of_source(from) >= self.config.max_flows_per_source {
            Verdict::Drop(DropReason::TooManyFromSource)
        } else {
            Verdict::Open
        };
        if let Verdict::Drop(reason) = verdict {
            self.counters.drop(reason);
        }
        verdict
    }
    // ANCHOR_END: on_datagram

    /// Flows open from `from`'s address (any port).
    fn flows_of_source(&self, from: SocketAddr) -> usize {
        let source = source_key(from.ip());
        self.flows.keys().filter(|a| source_key(a.ip()) == source).count()
    }

    /// Records the stream opened for a new visitor (after
    /// [`Verdict::Open`]).
    pub fn insert(&mut self, from: SocketAddr, stream: u32, now: Instant) {
        self.counters.opened += 1;
        if let Some(old) = self.flows.insert(from, Flow { stream, last: now }) {
            self.by_stream.remove(&old.stream);
        }
        self.by_stream.insert(stream, from);
    }

    /// A reply went out on `stream`'s flow: it is not idle.
    pub fn touch(&mut self, stream: u32, now: Instant) {
        if let Some(flow) = self.by_stream.get(&stream).and_then(|a| self.flows.get_mut(a)) {
            flow.last = now;
        }
    }

    /// Forgets the flow of `stream` (its stream ended); its address.
    pub fn remove_stream(&mut self, stream: u32) -> Option<SocketAddr> {
        let from = self.by_stream.remove(&stream)?;
        self.flows.remove(&from);
        Some(from)
    }

    // ANCHOR: expire
    /// Forgets the flows idle for the timeout at `now`; their addresses
    /// and streams, for the shell to reset.
    pub fn expire(&mut self, now: Instant) -> Vec<(SocketAddr, u32)> {
        let timeout = self.config.idle_timeout;
        let idle: Vec<(SocketAddr, u32)> = self
            .flows
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.last) >= timeout)
            .map(|(&a, f)| (a, f.stream))
            .collect();
        for (from, stream) in &idle {
            self.flows.remove(from);
            self.by_stream.remove(stream);
            self.counters.expired += 1;
        }
        idle
    }
    // ANCHOR_END: expire

    /// When the next flow will be idle for the timeout, if any flow is
    /// open.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.flows
            .values()
            .map(|f| f.last + self.config.idle_timeout)
            .min()
    }

    /// Every flow's stream, for closing them all.
    pub fn streams(&self) -> Vec<u32> {
        self.by_stream.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 7], port))
    }

    fn table(max_flows: usize) -> FlowTable {
        FlowTable::new(Config {
            idle_timeout: Duration::from_secs(30),
            max_flows,
            max_flows_per_source: max_flows,
            max_datagram: 1000,
        })
    }

    #[test]
    fn one_address_takes_at_most_its_share_of_the_flows() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(Config {
            max_flows: 8,
            max_flows_per_source: 3,
            ..Config::default()
        });
        for port in 1..=3 {
            assert_eq!(t.on_datagram(addr(port), 10, t0), Verdict::Open);
            t.insert(addr(port), u32::from(port), t0);
        }
        assert_eq!(
            t.on_datagram(addr(4), 10, t0),
            Verdict::Drop(DropReason::TooManyFromSource)
        );
        // Its open flows go on; another address opens its own.
        assert_eq!(t.on_datagram(addr(2), 10, t0), Verdict::Forward(2));
        let other = SocketAddr::from(([192, 0, 2, 8], 4));
        assert_eq!(t.on_datagram(other, 10, t0), Verdict::Open);
        assert_eq!(t.counters.too_many_from_source, 1);
    }

    #[test]
    fn each_visitor_address_is_one_flow() {
        let t0 = Instant::now();
        let mut t = table(8);
        assert_eq!(t.on_datagram(addr(1), 10, t0), Verdict::Open);
        t.insert(addr(1), 2, t0);
        assert_eq!(t.on_datagram(addr(1), 10, t0), Verdict::Forward(2));
        // Another port of the same host is another visitor.
        assert_eq!(t.on_datagram(addr(2), 10, t0), Verdict::Open);
        t.insert(addr(2), 4, t0);
        assert_eq!(t.on_datagram(addr(2), 10, t0), Verdict::Forward(4));
        assert_eq!((t.len(), t.counters.opened), (2, 2));
    }

    #[test]
    fn idle_flows_expire_and_traffic_either_way_keeps_them() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = table(8);
        for (port, stream) in [(1, 2), (2, 4), (3, 6)] {
            assert_eq!(t.on_datagram(addr(port), 1, t0), Verdict::Open);
            t.insert(addr(port), stream, t0);
        }
        assert_eq!(t.next_expiry(), Some(t0 + 30 * s));
        // Flow 1 hears from its visitor, flow 2 sends a reply.
        assert_eq!(t.on_datagram(addr(1), 1, t0 + 20 * s), Verdict::Forward(2));
        t.touch(4, t0 + 25 * s);
        assert_eq!(t.expire(t0 + 30 * s - Duration::from_nanos(1)), []);
        assert_eq!(t.expire(t0 + 30 * s), [(addr(3), 6)]);
        assert_eq!(t.next_expiry(), Some(t0 + 50 * s));
        assert_eq!(t.expire(t0 + 50 * s), [(addr(1), 2)]);
        assert_eq!(t.expire(t0 + 55 * s), [(addr(2), 4)]);
        assert!(t.is_empty());
        assert_eq!(t.next_expiry(), None);
        assert_eq!(t.counters.expired, 3);
        // The same visitor again is a new flow.
        assert_eq!(t.on_datagram(addr(3), 1, t0 + 61 * s), Verdict::Open);
    }

    #[test]
    fn flows_are_bounded_and_long_datagrams_dropped_all_counted() {
        let t0 = Instant::now();
        let mut t = table(2);
        for port in 1..=2 {
            assert_eq!(t.on_datagram(addr(port), 1000, t0), Verdict::Open);
            t.insert(addr(port), u32::from(port) * 2, t0);
        }
        assert_eq!(
            t.on_datagram(addr(3), 1, t0),
            Verdict::Drop(DropReason::TooManyFlows)
        );
        assert_eq!(
            t.on_datagram(addr(1), 1001, t0),
            Verdict::Drop(DropReason::TooLong)
        );
        // Known flows still pass while the table is full.
        assert_eq!(t.on_datagram(addr(2), 1000, t0), Verdict::Forward(4));
        assert_eq!(t.remove_stream(2), Some(addr(1)));
        assert_eq!(t.on_datagram(addr(3), 1, t0), Verdict::Open);
        t.counters.drop(DropReason::NoCredit);
        assert_eq!(
            t.counters,
            Counters {
                opened: 2,
                expired: 0,
                too_long: 1,
                too_many_flows: 1,
                too_many_from_source: 0,
                no_credit: 1,
            }
        );
    }
}
