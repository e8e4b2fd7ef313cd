//! What step 03 does to inner packets on their way through the tunnel: a
//! policy that wraps the tunnel's core.
//!
//! [`PathPolicy`] is a [`Core`] around any other core (step 02's tunnel,
//! step 04's): it looks at each inner packet before the core sees it, and
//! at each packet the core takes out of the tunnel, and passes everything
//! else through. It is sans-IO like the core it wraps: time comes in as an
//! argument, its counters are a [`Counts`], and it logs nothing; the I/O
//! shell logs what it decides. So two policies wired back to back in a
//! test clamp and answer exactly as the running program does.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use step01_ping_tun::counts::{Counts, Reason};
use step02_plain_tunnel::run::{Core, Outgoing};
use step02_plain_tunnel::{Action, Transmit};

use crate::clamp::{self, Clamp};
use crate::pmtu::{self, TooBig};
use crate::rate::TokenBucket;

/// ICMP errors per second the policy sends at most, on average, and how
/// many it may send at once. Linux's own limit is 1000 a second in bursts
/// of 50 (`net.ipv4.icmp_msgs_per_sec`, `icmp_msgs_burst`); one tunnel end
/// needs far fewer: each error makes its sender lower its path MTU at once.
pub const ERRORS_PER_SECOND: u32 = 100;
pub const ERROR_BURST: u32 = 20;

/// What the policy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathEvent {
    /// A SYN or SYN-ACK whose MSS was lowered, either way.
    Clamped,
    /// A packet too big for the tunnel, answered with an ICMP error.
    TooBig,
    /// A packet too big, not answered: over the ICMP error rate limit.
    RateLimited,
    /// A packet too big, dropped without an answer: the rules forbid one
    /// (an ICMP error about an ICMP error, say), or we have no address of
    /// its family to answer from.
    Unanswered,
}

impl Reason for PathEvent {
    const ALL: &'static [PathEvent] = &[
        PathEvent::Clamped,
        PathEvent::TooBig,
        PathEvent::RateLimited,
        PathEvent::Unanswered,
    ];

    fn name(self) -> &'static str {
        match self {
            PathEvent::Clamped => "clamped",
            PathEvent::TooBig => "too-big",
            PathEvent::RateLimited => "rate-limited",
            PathEvent::Unanswered => "too-big-unanswered",
        }
    }
}

/// Why a packet read from the TUN device went nowhere: the wrapped core's
/// reason, or ours for a packet too big that got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathDrop<D> {
    Core(D),
    TooBig(&'static str),
}

impl<D: fmt::Display> fmt::Display for PathDrop<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathDrop::Core(reason) => reason.fmt(f),
            PathDrop::TooBig(why) => f.write_str(why),
        }
    }
}

// ANCHOR: path_hook
/// Keeps TCP segments and all other packets within what the tunnel can
/// carry, around the tunnel's core `C`:
///
/// - TCP SYN and SYN-ACK segments, both ways, get their MSS option lowered
///   to fit the tunnel (so TCP never sends a segment that is too big);
/// - any other packet read from the TUN device that is larger than the
///   tunnel can carry is answered with an ICMP "fragmentation needed"
///   (IPv4, DF set) or ICMPv6 "packet too big", so the sender's kernel
///   lowers its path MTU and sends smaller packets.
pub struct PathPolicy<C> {
    core: C,
    /// The largest inner packet the tunnel carries.
    limit: u16,
    /// Our tunnel addresses: the sources of our ICMP errors when the
    /// packet's destination cannot be.
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
    limiter: TokenBucket,
    counts: Counts<PathEvent>,
}
// ANCHOR_END: path_hook

impl<C> PathPolicy<C> {
    /// `core` carrying inner packets of at most `limit` bytes, answering
    /// from `v4` or `v6` when a packet's destination cannot be the source.
    pub fn new(core: C, limit: u16, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> Self {
        Self {
            core,
            limit,
            v4,
            v6,
            limiter: TokenBucket::new(ERRORS_PER_SECOND, ERROR_BURST),
            counts: Counts::new(),
        }
    }

    /// The wrapped core.
    pub fn core(&self) -> &C {
        &self.core
    }

    pub fn core_mut(&mut self) -> &mut C {
        &mut self.core
    }

    pub fn counts(&self) -> &Counts<PathEvent> {
        &self.counts
    }

    /// `clamped 1 TCP MSS, sent 2 too-big errors (0 more held back by the
    /// rate limit)`: the line each end prints when it stops.
    pub fn summary(&self) -> String {
        format!(
            "clamped {} TCP MSS, sent {} too-big errors ({} more held back by the rate limit)",
            self.counts.get(PathEvent::Clamped),
            self.counts.get(PathEvent::TooBig),
            self.counts.get(PathEvent::RateLimited)
        )
    }

    /// The source of our ICMP error about `packet`: the address the packet
    /// was going to, which lies beyond the tunnel, as a router on the path
    /// would. Not our own tunnel address: Linux drops an IPv4 packet that
    /// arrives with one of the host's own addresses as its source (a
    /// "martian"), so the error would never reach the sender. A destination
    /// that cannot be a source (multicast, say) falls back to our own
    /// address of the family.
    fn error_source(&self, packet: &[u8]) -> Option<IpAddr> {
        let dst = crate::transport::locate(packet).ok()?.destination;
        let usable = match dst {
            IpAddr::V4(a) => !(a.is_multicast() || a.is_broadcast() || a.is_unspecified() || a.is_loopback()),
            IpAddr::V6(a) => !(a.is_multicast() || a.is_unspecified() || a.is_loopback()),
        };
        if usable {
            return Some(dst);
        }
        match dst {
            IpAddr::V4(_) => self.v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.v6.map(IpAddr::V6),
        }
    }

    fn clamp(&mut self, packet: &mut [u8]) {
        let ipv6 = packet.first().is_some_and(|b| b >> 4 == 6);
        if let Clamp::Clamped { .. } = clamp::clamp_mss(packet, clamp::max_mss(self.limit, ipv6)) {
            self.counts.increment(PathEvent::Clamped);
        }
    }

    // ANCHOR: outbound
    /// A packet read from the TUN device at `now`: `Ok(None)` to send it
    /// on (clamped if it is a SYN), `Ok(Some(len))` to answer it with the
    /// ICMP error now in `out[..len]`, `Err` to drop it.
    fn outbound(
        &mut self,
        packet: &mut [u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Option<usize>, &'static str> {
        if packet.len() <= usize::from(self.limit) {
            self.clamp(packet);
            return Ok(None);
        }
        let Some(from) = self.error_source(packet) else {
            self.counts.increment(PathEvent::Unanswered);
            return Err("too big, and no address of its family to answer from");
        };
        match pmtu::too_big(packet, self.limit, from, out) {
            TooBig::Forward => Ok(None),
            TooBig::Drop(why) => {
                self.counts.increment(PathEvent::Unanswered);
                Err(why)
            }
            // RFC 4443 §2.4 (f): an ICMPv6 error source MUST limit its rate
            // (RFC 1812 §4.3.2.8 says the same for IPv4).
            TooBig::Reply(_) if !self.limiter.take(now) => {
                self.counts.increment(PathEvent::RateLimited);
                Err("too big, and over the ICMP error rate limit")
            }
            TooBig::Reply(n) => {
                self.counts.increment(PathEvent::TooBig);
                Ok(Some(n))
            }
        }
    }
    // ANCHOR_END: outbound
}

// ANCHOR: policy_core
impl<C: Core> Core for PathPolicy<C> {
    type Drop = PathDrop<C::Drop>;

    fn encapsulate(
        &mut self,
        packet: &mut [u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Outgoing, Self::Drop> {
        match self.outbound(packet, now, out).map_err(PathDrop::TooBig)? {
            Some(n) => Ok(Outgoing::Answer(n)),
            None => self.core.encapsulate(packet, now, out).map_err(PathDrop::Core),
        }
    }

    /// What comes out of the tunnel is clamped too: the other end may not
    /// clamp (or may be told a larger limit).
    fn decapsulate(
        &mut self,
        from: SocketAddr,
        message: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Action, Self::Drop> {
        let action = self
            .core
            .decapsulate(from, message, now, out)
            .map_err(PathDrop::Core)?;
        if let Action::WriteToTun(len) = action
            && let Some(packet) = out.get_mut(..len)
        {
            self.clamp(packet);
        }
        Ok(action)
    }

    fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        self.core.poll(now, out)
    }

    fn max_message(&self) -> usize {
        self.core.max_message()
    }

    /// The core's status, and a line of our counters.
    fn status(&self) -> String {
        format!("{}\n{}", self.core.status(), self.summary())
    }

    fn summary(message: &[u8]) -> String {
        C::summary(message)
    }
}
// ANCHOR_END: policy_core
