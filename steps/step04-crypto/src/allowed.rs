//! Cryptokey routing's table: which peer an inner address belongs to, by
//! longest-prefix match.
//!
//! One table answers both questions the tunnel asks of every packet: to
//! which peer does a packet for this destination go (the most specific
//! prefix that holds it wins, as in any routing table), and may this peer
//! send from this source (only if the source would route back to it:
//! WireGuard's rule, from its paper, section 2).
//!
//! How: for each family, one hash map per prefix length in use, from the
//! network address (the address with the host bits cleared) to the value;
//! the lengths are kept longest first. A lookup clears the host bits for
//! each length in turn and stops at the first hit, so it costs one hash
//! lookup per distinct prefix length, not one test per prefix: a server
//! with a thousand clients at /32 and /128 does two or three, where
//! scanning every peer's prefixes would do two thousand. Inserting and
//! removing are one hash operation each. (WireGuard's own table,
//! `allowedips.c`, is a binary trie with path compression, which does the
//! same job with more code.)

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An address family's bits.
trait Bits: Copy + Eq + Hash {
    /// Keeps the first `len` bits.
    fn prefix(self, len: u8) -> Self;
}

impl Bits for u32 {
    fn prefix(self, len: u8) -> Self {
        // A shift by 32 (a /0) is no shift at all for `<<`: no bits kept.
        self & u32::MAX.checked_shl(u32::from(32 - len.min(32))).unwrap_or(0)
    }
}

impl Bits for u128 {
    fn prefix(self, len: u8) -> Self {
        self & u128::MAX.checked_shl(u32::from(128 - len.min(128))).unwrap_or(0)
    }
}

/// The prefixes of one family: for each length in use, longest first,
/// the network addresses of that length.
#[derive(Debug, Clone)]
struct Family<B, T> {
    by_len: Vec<(u8, HashMap<B, T>)>,
}

impl<B: Bits, T> Default for Family<B, T> {
    fn default() -> Self {
        Self { by_len: Vec::new() }
    }
}

impl<B: Bits, T> Family<B, T> {
    fn insert(&mut self, network: B, len: u8, value: T) -> Option<T> {
        let at = match self.by_len.binary_search_by(|(l, _)| len.cmp(l)) {
            Ok(at) => at,
            Err(at) => {
                self.by_len.insert(at, (len, HashMap::new()));
                at
            }
        };
        self.by_len[at].1.insert(network.prefix(len), value)
    }

    fn remove(&mut self, network: B, len: u8) -> Option<T> {
        let at = self.by_len.binary_search_by(|(l, _)| len.cmp(l)).ok()?;
        let removed = self.by_len[at].1.remove(&network.prefix(len));
        if self.by_len[at].1.is_empty() {
            self.by_len.remove(at);
        }
        removed
    }

    /// The value of the longest prefix that holds `address`, and that
    /// prefix's length.
    fn lookup(&self, address: B) -> Option<(u8, &T)> {
        self.by_len
            .iter()
            .find_map(|(len, map)| map.get(&address.prefix(*len)).map(|v| (*len, v)))
    }

    fn retain(&mut self, mut keep: impl FnMut(B, u8, &T) -> bool) {
        for (len, map) in &mut self.by_len {
            map.retain(|network, value| keep(*network, *len, value));
        }
        self.by_len.retain(|(_, map)| !map.is_empty());
    }

    fn len(&self) -> usize {
        self.by_len.iter().map(|(_, map)| map.len()).sum()
    }

    fn iter(&self) -> impl Iterator<Item = (B, u8, &T)> {
        self.by_len
            .iter()
            .flat_map(|(len, map)| map.iter().map(move |(n, v)| (*n, *len, v)))
    }
}

// ANCHOR: allowed_ips
/// Prefixes of both families, each with a value (in the tunnel, the peer
/// it belongs to), looked up by longest-prefix match.
#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    v4: Family<u32, T>,
    v6: Family<u128, T>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self {
            v4: Family::default(),
            v6: Family::default(),
        }
    }
}

impl<T> AllowedIps<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `prefix` (its host bits ignored: 10.0.0.1/24 is 10.0.0.0/24)
    /// with `value`; returns the value it had, which it no longer has: a
    /// prefix belongs to one peer, the last one given it.
    pub fn insert(&mut self, prefix: IpNet, value: T) -> Option<T> {
        match prefix {
            IpNet::V4(n) => self.v4.insert(u32::from(n.addr()), n.prefix_len(), value),
            IpNet::V6(n) => self.v6.insert(u128::from(n.addr()), n.prefix_len(), value),
        }
    }

    /// Removes exactly `prefix` (not the prefixes inside or around it).
    pub fn remove(&mut self, prefix: IpNet) -> Option<T> {
        match prefix {
            IpNet::V4(n) => self.v4.remove(u32::from(n.addr()), n.prefix_len()),
            IpNet::V6(n) => self.v6.remove(u128::from(n.addr()), n.prefix_len()),
        }
    }

    /// The value of the most specific prefix that holds `address`.
    pub fn lookup(&self, address: IpAddr) -> Option<&T> {
        self.lookup_prefix(address).map(|(_, v)| v)
    }

    /// The most specific prefix that holds `address`, and its value.
    pub fn lookup_prefix(&self, address: IpAddr) -> Option<(IpNet, &T)> {
        match address {
            IpAddr::V4(a) => {
                let (len, v) = self.v4.lookup(u32::from(a))?;
                Some((IpNet::V4(Ipv4Net::new(a, len).ok()?.trunc()), v))
            }
            IpAddr::V6(a) => {
                let (len, v) = self.v6.lookup(u128::from(a))?;
                Some((IpNet::V6(Ipv6Net::new(a, len).ok()?.trunc()), v))
            }
        }
    }

    /// Keeps only the prefixes for which `keep` says so: how every prefix
    /// of one peer goes when the peer does.
    pub fn retain(&mut self, mut keep: impl FnMut(IpNet, &T) -> bool) {
        self.v4
            .retain(|n, len, v| Ipv4Net::new(n.into(), len).is_ok_and(|net| keep(IpNet::V4(net), v)));
        self.v6
            .retain(|n, len, v| Ipv6Net::new(n.into(), len).is_ok_and(|net| keep(IpNet::V6(net), v)));
    }

    /// Every prefix (as a network address) and its value, IPv4 first,
    /// longest prefixes first within each family.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &T)> {
        let v4 = self
            .v4
            .iter()
            .filter_map(|(n, len, v)| Some((IpNet::V4(Ipv4Net::new(n.into(), len).ok()?), v)));
        let v6 = self
            .v6
            .iter()
            .filter_map(|(n, len, v)| Some((IpNet::V6(Ipv6Net::new(n.into(), len).ok()?), v)));
        v4.chain(v6)
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
// ANCHOR_END: allowed_ips

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The same question answered by testing every prefix: the definition
    /// the table must agree with.
    fn scan(prefixes: &[(IpNet, char)], address: IpAddr) -> Option<&char> {
        prefixes
            .iter()
            .filter(|(n, _)| n.contains(&address))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, v)| v)
    }

    #[test]
    fn the_most_specific_prefix_wins() {
        let mut t = AllowedIps::new();
        t.insert(net("0.0.0.0/0"), 'd');
        t.insert(net("10.0.0.0/8"), 'a');
        t.insert(net("10.1.0.0/16"), 'b');
        t.insert(net("10.1.2.3/32"), 'c');
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&'c'));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(&'b'));
        assert_eq!(t.lookup(ip("10.2.0.1")), Some(&'a'));
        assert_eq!(t.lookup(ip("192.0.2.1")), Some(&'d'));
        assert_eq!(t.lookup_prefix(ip("10.1.9.9")), Some((net("10.1.0.0/16"), &'b')));
        // No IPv6 prefix: no IPv6 route, whatever IPv4 has.
        assert_eq!(t.lookup(ip("::ffff:10.1.2.3")), None);
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn both_families_and_their_edges() {
        let mut t = AllowedIps::new();
        t.insert(net("fd00::/64"), 'a');
        t.insert(net("fd00::2/128"), 'b');
        t.insert(net("::/0"), 'c');
        t.insert(net("10.0.0.2/32"), 'v');
        assert_eq!(t.lookup(ip("fd00::2")), Some(&'b'));
        assert_eq!(t.lookup(ip("fd00::3")), Some(&'a'));
        assert_eq!(t.lookup(ip("fd00::ffff:ffff:ffff:ffff")), Some(&'a'));
        assert_eq!(t.lookup(ip("fd00:0:0:1::")), Some(&'c'));
        assert_eq!(t.lookup(ip("10.0.0.2")), Some(&'v'));
        assert_eq!(t.lookup(ip("10.0.0.3")), None, "::/0 is not an IPv4 route");
        // The host bits of what is inserted do not matter.
        t.insert(net("192.0.2.77/24"), 'h');
        assert_eq!(t.lookup(ip("192.0.2.1")), Some(&'h'));
        assert!(t.iter().any(|(n, v)| n == net("192.0.2.0/24") && *v == 'h'));
    }

    #[test]
    fn a_prefix_belongs_to_the_last_peer_given_it() {
        let mut t = AllowedIps::new();
        assert_eq!(t.insert(net("10.0.0.0/24"), 1), None);
        assert_eq!(t.insert(net("10.0.0.0/24"), 2), Some(1));
        assert_eq!(t.lookup(ip("10.0.0.9")), Some(&2));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn removal_uncovers_the_shorter_prefix_and_forgets_empty_lengths() {
        let mut t = AllowedIps::new();
        t.insert(net("10.0.0.0/8"), 'a');
        t.insert(net("10.0.0.0/24"), 'b');
        t.insert(net("fd00::/64"), 'c');
        assert_eq!(t.remove(net("10.0.0.0/16")), None, "only the exact prefix");
        assert_eq!(t.remove(net("10.0.0.7/24")), Some('b'));
        assert_eq!(t.lookup(ip("10.0.0.1")), Some(&'a'));
        assert_eq!(t.v4.by_len.len(), 1, "no empty /24 map left to search");
        t.retain(|_, v| *v != 'a');
        assert_eq!(t.lookup(ip("10.0.0.1")), None);
        assert_eq!(t.lookup(ip("fd00::1")), Some(&'c'));
        assert_eq!(t.remove(net("fd00::/64")), Some('c'));
        assert!(t.is_empty());
    }

    #[test]
    fn it_agrees_with_a_scan_of_every_prefix() {
        // Prefixes of every length around a few addresses, and addresses
        // near their edges, in both families (a fixed pseudo-random walk).
        let mut prefixes = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..300 {
            let value = char::from(b'a' + (i % 26) as u8);
            let net = if i % 2 == 0 {
                let a = std::net::Ipv4Addr::from(0x0a00_0000 | (next() as u32 & 0x00ff_ffff));
                IpNet::V4(Ipv4Net::new(a, (next() % 33) as u8).unwrap().trunc())
            } else {
                let a = std::net::Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(next() as u16));
                IpNet::V6(Ipv6Net::new(a, 96 + (next() % 33) as u8).unwrap().trunc())
            };
            // A prefix given twice keeps its last value, as the table does.
            prefixes.retain(|(n, _)| *n != net);
            prefixes.push((net, value));
        }
        let mut t = AllowedIps::new();
        for (n, v) in &prefixes {
            t.insert(*n, *v);
        }
        assert_eq!(t.len(), prefixes.len());
        for _ in 0..5000 {
            let a = if next() % 2 == 0 {
                IpAddr::from(std::net::Ipv4Addr::from(
                    0x0a00_0000 | (next() as u32 & 0x00ff_ffff),
                ))
            } else {
                IpAddr::from(std::net::Ipv6Addr::from(
                    0xfd00_u128 << 112 | u128::from(next() as u16),
                ))
            };
            assert_eq!(t.lookup(a), scan(&prefixes, a), "{a}");
        }
    }
}
