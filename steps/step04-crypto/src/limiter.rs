//! Which handshake messages are worth Diffie-Hellman work.
//!
//! Anyone who knows a server's public key can make initiations whose mac1
//! is right, and each one costs the server two X25519 operations (and
//! three more to answer, for a peer it knows), under the lock that the
//! data path needs too. Source addresses cost an attacker nothing to
//! forge. So the limiter bounds the work three ways, all before any
//! Diffie-Hellman:
//!
//! 1. Per source: a token bucket for each source address (each IPv6 /64,
//!    since one host may hold a whole /64), so one address cannot take
//!    everything. The table of sources has a fixed size; when it is full,
//!    the oldest entry goes (it would be refused otherwise, and with it
//!    every newcomer, a real client included).
//! 2. In all: a budget of handshake messages per second for the whole
//!    tunnel, so the work stays bounded however many addresses a flood
//!    comes from.
//! 3. First contact: a source the limiter has not seen before (or not
//!    for long) may use at most half of the budget. The other half waits
//!    for sources that come back: a real initiator whose first message
//!    got no answer tries again a second later (and a server answers from
//!    where it was asked), while a flood from random addresses rarely
//!    sends twice from one. Under such a flood, a client's retry gets
//!    through, and so does a rekey of an established one. A response
//!    from the address we sent our initiation to counts as coming back.
//!
//! What this cannot do: tell real clients from a flood that repeats its
//! forged addresses. A few hundred addresses, each sending within its own
//! bucket, all count as coming back and can take the whole budget, new
//! clients' and rekeys' share included; coming back costs a forger
//! nothing, since it need not receive anything. WireGuard's answer is the cookie
//! reply (its paper, section 5.4.7): under load, it answers an
//! initiation with a cookie bound to the source address instead of doing
//! any Diffie-Hellman, and only an initiation that returns the cookie
//! (in `mac2`) is worked on, which proves the sender receives at that
//! address. Step 04's message format has no room for it; step 07 has.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use step03_ipv6::rate::TokenBucket;

/// Why a handshake message gets no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source sent more than its own share.
    SourceLimited,
    /// The whole tunnel's budget is spent (for first contacts: their half).
    Overloaded,
}

/// A source as the limiter counts it: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKey {
    V4(Ipv4Addr),
    V6(u64),
}

impl SourceKey {
    fn of(ip: IpAddr) -> Self {
        // An IPv4 client of a dual-stack socket arrives as ::ffff:a.b.c.d:
        // it is that IPv4 address, not a member of ::/64.
        match ip.to_canonical() {
            IpAddr::V4(a) => SourceKey::V4(a),
            IpAddr::V6(a) => SourceKey::V6((u128::from(a) >> 64) as u64),
        }
    }
}

#[derive(Debug)]
struct Source {
    bucket: TokenBucket,
    first_seen: Instant,
}

// ANCHOR: limiter
/// The handshake limiter. Sans-IO: time comes in as an argument.
#[derive(Debug)]
pub struct HandshakeLimiter {
    per_source: (u32, u32),
    sources: HashMap<SourceKey, Source>,
    /// The sources in the order they were added: the oldest goes first.
    order: VecDeque<SourceKey>,
    capacity: usize,
    /// The whole budget, and the half first contacts may use.
    total: TokenBucket,
    first_contact: TokenBucket,
    /// How long after its first message a source counts as coming back.
    return_after: Duration,
}

impl HandshakeLimiter {
    /// `rate` and `burst` per source; `budget` messages a second in all;
    /// at most `capacity` sources remembered; a source counts as coming
    /// back `return_after` after it was first seen.
    pub fn new(rate: u32, burst: u32, budget: u32, capacity: usize, return_after: Duration) -> Self {
        let half = budget.div_ceil(2);
        Self {
            per_source: (rate, burst),
            sources: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            total: TokenBucket::new(budget, budget),
            first_contact: TokenBucket::new(half, half),
            return_after,
        }
    }

    /// May a handshake message from `from` have Diffie-Hellman work now?
    /// `known` says the caller knows the address already (a response from
    /// where we sent our initiation): it counts as coming back.
    pub fn allow(&mut self, from: IpAddr, known: bool, now: Instant) -> Result<(), Refusal> {
        let key = SourceKey::of(from);
        let (rate, burst) = self.per_source;
        let returning = match self.sources.entry(key) {
            Entry::Occupied(e) => {
                let source = e.into_mut();
                if !source.bucket.take(now) {
                    return Err(Refusal::SourceLimited);
                }
                known || now.saturating_duration_since(source.first_seen) >= self.return_after
            }
            Entry::Vacant(e) => {
                let mut bucket = TokenBucket::new(rate, burst);
                let took = bucket.take(now);
                e.insert(Source {
                    bucket,
                    first_seen: now,
                });
                self.order.push_back(key);
                if self.order.len() > self.capacity
                    && let Some(oldest) = self.order.pop_front()
                {
                    self.sources.remove(&oldest);
                }
                if !took {
                    return Err(Refusal::SourceLimited);
                }
                known
            }
        };
        // A first contact needs a token of its half as well; taking it
        // first means a refusal there costs the whole budget nothing.
        if !returning && !self.first_contact.take(now) {
            return Err(Refusal::Overloaded);
        }
        if !self.total.take(now) {
            return Err(Refusal::Overloaded);
        }
        Ok(())
    }

    /// How many sources it remembers.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }
}
// ANCHOR_END: limiter

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn one_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut l = HandshakeLimiter::new(10, 5, 1000, 100, ms(500));
        let from = ip("192.0.2.9");
        let allowed = (0..100).filter(|_| l.allow(from, false, t0).is_ok()).count();
        assert_eq!(allowed, 5);
        assert_eq!(l.allow(from, false, t0), Err(Refusal::SourceLimited));
        // 10 a second: one more after 100 ms.
        assert!(l.allow(from, false, t0 + ms(100)).is_ok());
        assert_eq!(l.allow(from, false, t0 + ms(100)), Err(Refusal::SourceLimited));
        // Another source is not affected.
        assert!(l.allow(ip("192.0.2.10"), false, t0).is_ok());
    }

    #[test]
    fn an_ipv6_source_is_its_64_and_a_mapped_ipv4_source_is_its_address() {
        let t0 = Instant::now();
        let mut l = HandshakeLimiter::new(10, 2, 1000, 100, ms(500));
        assert!(l.allow(ip("2001:db8:1:2::1"), false, t0).is_ok());
        assert!(l.allow(ip("2001:db8:1:2:ffff::9"), false, t0).is_ok());
        assert_eq!(
            l.allow(ip("2001:db8:1:2:1234::"), false, t0),
            Err(Refusal::SourceLimited),
            "the same /64"
        );
        assert!(l.allow(ip("2001:db8:1:3::1"), false, t0).is_ok(), "the next /64");
        assert!(l.allow(ip("::ffff:192.0.2.1"), false, t0).is_ok());
        assert!(l.allow(ip("192.0.2.1"), false, t0).is_ok());
        assert_eq!(l.allow(ip("192.0.2.1"), false, t0), Err(Refusal::SourceLimited));
        assert!(
            l.allow(ip("::ffff:192.0.2.2"), false, t0).is_ok(),
            "not all of ::/64"
        );
        assert_eq!(l.sources(), 4);
    }

    #[test]
    fn a_full_table_forgets_its_oldest_source_and_takes_the_new_one() {
        let t0 = Instant::now();
        let mut l = HandshakeLimiter::new(10, 1, 1_000_000, 3, ms(500));
        for i in 1..=3 {
            assert!(l.allow(ip(&format!("192.0.2.{i}")), false, t0).is_ok());
        }
        // Every source has used its burst; a newcomer is still taken.
        assert!(l.allow(ip("192.0.2.4"), false, t0).is_ok());
        assert_eq!(l.sources(), 3);
        // .1 was the oldest: forgotten, so it starts afresh.
        assert!(l.allow(ip("192.0.2.1"), false, t0).is_ok());
        assert_eq!(l.allow(ip("192.0.2.4"), false, t0), Err(Refusal::SourceLimited));
    }

    #[test]
    fn the_budget_bounds_the_work_however_many_sources() {
        let t0 = Instant::now();
        let mut l = HandshakeLimiter::new(10, 5, 100, 100_000, ms(500));
        // Ten seconds of 5000 first contacts a second, each from a new
        // address.
        let mut allowed = 0;
        for i in 0..50_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i) * 200);
            let from = IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i));
            allowed += usize::from(l.allow(from, false, now).is_ok());
        }
        // Half of 100 a second, and the first burst of that half.
        assert!((500..=560).contains(&allowed), "{allowed}");
    }

    #[test]
    fn a_source_that_comes_back_gets_the_half_the_flood_cannot_use() {
        let t0 = Instant::now();
        let mut l = HandshakeLimiter::new(10, 5, 100, 100_000, ms(500));
        let client = ip("203.0.113.7");
        let mut first_try = None;
        let mut got_in = None;
        for i in 0..50_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i) * 200);
            let from = IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i));
            let _ = l.allow(from, false, now);
            // The client tries at 2 s, and again each second after.
            let at = now.saturating_duration_since(t0);
            if at >= Duration::from_secs(2) && i % 5000 == 0 && got_in.is_none() {
                let result = l.allow(client, false, now);
                first_try.get_or_insert((at, result));
                if result.is_ok() {
                    got_in = Some(at);
                }
            }
        }
        let (at, result) = first_try.unwrap();
        assert_eq!(
            (at, result),
            (Duration::from_secs(2), Err(Refusal::Overloaded)),
            "the first try competes with the flood"
        );
        assert_eq!(got_in, Some(Duration::from_secs(3)), "the retry gets in");
    }

    #[test]
    fn an_address_the_caller_knows_is_no_first_contact() {
        let t0 = Instant::now();
        let mut l = HandshakeLimiter::new(10, 5, 100, 100_000, ms(500));
        for i in 0..1000u32 {
            let _ = l.allow(IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i)), false, t0);
        }
        assert_eq!(l.allow(ip("203.0.113.8"), false, t0), Err(Refusal::Overloaded));
        assert!(l.allow(ip("203.0.113.9"), true, t0).is_ok());
    }
}
