//! Cryptokey routing's table (whitepaper section 2): which peer owns which
//! inner addresses. Sending, the peer whose prefix holds a packet's
//! destination most specifically gets it; receiving, a peer's packet is
//! accepted only if the peer owns its source.
//!
//! A prefix belongs to one peer at a time: giving it to another moves it,
//! as `wg set` does. Lookups are longest-prefix matches: one hash look-up
//! per prefix length in use, longest first, so the cost grows with the
//! number of distinct lengths (a handful), not with the number of peers.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// One family's prefixes: for each length, the masked address to its
/// owner.
#[derive(Debug, Clone)]
struct Family<T> {
    by_len: Vec<HashMap<u128, T>>,
    /// The lengths that have entries, longest first.
    lens: Vec<u8>,
}

impl<T: Copy + Eq> Family<T> {
    fn new(bits: u8) -> Self {
        Self {
            by_len: (0..=bits).map(|_| HashMap::new()).collect(),
            lens: Vec::new(),
        }
    }

    fn mask(bits: u8, addr: u128, len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            let width = u32::from(bits);
            let keep = (!0u128 >> (128 - width)) & !((1u128 << (width - u32::from(len))) - 1);
            addr & keep
        }
    }

    fn relist(&mut self) {
        self.lens = (0..self.by_len.len())
            .rev()
            .filter(|&l| !self.by_len[l].is_empty())
            .map(|l| l as u8)
            .collect();
    }
}

/// Prefixes of both families and their owners.
#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    v4: Family<T>,
    v6: Family<T>,
}

impl<T: Copy + Eq> Default for AllowedIps<T> {
    fn default() -> Self {
        Self::new()
    }
}

fn parts(net: &IpNet) -> (bool, u128, u8) {
    match net {
        IpNet::V4(n) => (false, u128::from(u32::from(n.network())), n.prefix_len()),
        IpNet::V6(n) => (true, u128::from(n.network()), n.prefix_len()),
    }
}

impl<T: Copy + Eq> AllowedIps<T> {
    pub fn new() -> Self {
        Self {
            v4: Family::new(32),
            v6: Family::new(128),
        }
    }

    fn family(&mut self, v6: bool) -> (&mut Family<T>, u8) {
        if v6 {
            (&mut self.v6, 128)
        } else {
            (&mut self.v4, 32)
        }
    }

    /// Gives `net` (its host bits ignored, as `wg` does) to `owner`,
    /// taking it from any other owner.
    pub fn insert(&mut self, net: IpNet, owner: T) {
        let (v6, addr, len) = parts(&net);
        let (family, bits) = self.family(v6);
        let key = Family::<T>::mask(bits, addr, len);
        family.by_len[usize::from(len)].insert(key, owner);
        family.relist();
    }

    /// Takes `net` from `owner`; nothing happens if another owns it.
    pub fn remove(&mut self, net: IpNet, owner: T) {
        let (v6, addr, len) = parts(&net);
        let (family, bits) = self.family(v6);
        let key = Family::<T>::mask(bits, addr, len);
        let map = &mut family.by_len[usize::from(len)];
        if map.get(&key) == Some(&owner) {
            map.remove(&key);
            family.relist();
        }
    }

    /// Takes every prefix from `owner`.
    pub fn remove_owner(&mut self, owner: T) {
        for family in [&mut self.v4, &mut self.v6] {
            for map in &mut family.by_len {
                map.retain(|_, o| *o != owner);
            }
            family.relist();
        }
    }

    // ANCHOR: lookup
    /// The owner of the longest prefix holding `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<T> {
        let (family, bits, addr) = match ip {
            IpAddr::V4(a) => (&self.v4, 32, u128::from(u32::from(a))),
            IpAddr::V6(a) => (&self.v6, 128, u128::from(a)),
        };
        family.lens.iter().find_map(|&len| {
            family.by_len[usize::from(len)]
                .get(&Family::<T>::mask(bits, addr, len))
                .copied()
        })
    }
    // ANCHOR_END: lookup

    /// The prefixes `owner` has, IPv4 first, longest first.
    pub fn of(&self, owner: T) -> Vec<IpNet> {
        let mut out = Vec::new();
        for (family, bits) in [(&self.v4, 32u8), (&self.v6, 128u8)] {
            for &len in &family.lens {
                let mut nets: Vec<u128> = family.by_len[usize::from(len)]
                    .iter()
                    .filter(|(_, o)| **o == owner)
                    .map(|(k, _)| *k)
                    .collect();
                nets.sort_unstable();
                for k in nets {
                    let net = if bits == 32 {
                        Ipv4Net::new((k as u32).into(), len).map(IpNet::V4)
                    } else {
                        Ipv6Net::new(k.into(), len).map(IpNet::V6)
                    };
                    if let Ok(net) = net {
                        out.push(net);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = AllowedIps::new();
        t.insert(net("0.0.0.0/0"), 1);
        t.insert(net("10.0.0.0/8"), 2);
        t.insert(net("10.0.0.0/24"), 3);
        t.insert(net("10.0.0.7/32"), 4);
        t.insert(net("::/0"), 5);
        t.insert(net("fd00::/64"), 6);
        assert_eq!(t.lookup(ip("10.0.0.7")), Some(4));
        assert_eq!(t.lookup(ip("10.0.0.8")), Some(3));
        assert_eq!(t.lookup(ip("10.1.0.8")), Some(2));
        assert_eq!(t.lookup(ip("192.0.2.1")), Some(1));
        assert_eq!(t.lookup(ip("fd00::1")), Some(6));
        assert_eq!(t.lookup(ip("2001:db8::1")), Some(5));
        assert_eq!(t.of(3), vec![net("10.0.0.0/24")]);
    }

    #[test]
    fn a_prefix_has_one_owner_and_host_bits_are_ignored() {
        let mut t = AllowedIps::new();
        t.insert(net("10.0.0.1/24"), 1);
        assert_eq!(t.of(1), vec![net("10.0.0.0/24")]);
        t.insert(net("10.0.0.0/24"), 2);
        assert_eq!(t.of(1), vec![]);
        assert_eq!(t.lookup(ip("10.0.0.9")), Some(2));
        // Removing it from a peer that does not own it changes nothing.
        t.remove(net("10.0.0.0/24"), 1);
        assert_eq!(t.lookup(ip("10.0.0.9")), Some(2));
        t.remove(net("10.0.0.0/24"), 2);
        assert_eq!(t.lookup(ip("10.0.0.9")), None);
    }

    #[test]
    fn removing_an_owner_removes_all_its_prefixes() {
        let mut t = AllowedIps::new();
        t.insert(net("10.0.0.2/32"), 1);
        t.insert(net("fd00::2/128"), 1);
        t.insert(net("10.0.0.3/32"), 2);
        t.remove_owner(1);
        assert_eq!(t.lookup(ip("10.0.0.2")), None);
        assert_eq!(t.lookup(ip("fd00::2")), None);
        assert_eq!(t.lookup(ip("10.0.0.3")), Some(2));
    }

    #[test]
    fn many_peers_each_with_its_own_address() {
        let mut t = AllowedIps::new();
        for i in 0..5000u32 {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            t.insert(IpNet::V4(Ipv4Net::new(a, 32).unwrap()), i);
        }
        assert_eq!(t.lookup(ip("10.0.19.135")), Some(19 * 256 + 135));
        assert_eq!(t.lookup(ip("10.1.0.0")), None);
    }
}
