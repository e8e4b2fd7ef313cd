//! An interface address with its prefix length, as in `10.0.0.1/24`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 interface address and the length of its network prefix.
///
/// `10.0.0.1/24` is the address 10.0.0.1 on the network 10.0.0.0/24, whose
/// broadcast address is 10.0.0.255.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    address: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// `None` when `prefix_len` is larger than 32.
    pub fn new(address: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 32).then_some(Self { address, prefix_len })
    }

    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The netmask: `prefix_len` one bits followed by zero bits.
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = u32::MAX.checked_shl(32 - u32::from(self.prefix_len)).unwrap_or(0);
        Ipv4Addr::from(bits)
    }

    /// The network address (all host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.address.to_bits() & self.netmask().to_bits())
    }

    /// The directed broadcast address (all host bits one).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.address.to_bits() | !self.netmask().to_bits())
    }

    /// True when `ip` lies inside the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        ip.to_bits() & self.netmask().to_bits() == self.network().to_bits()
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// Why a string is not an `ADDRESS/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseCidrError(String);

impl fmt::Display for ParseCidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseCidrError {}

impl FromStr for Ipv4Cidr {
    type Err = ParseCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| {
            ParseCidrError(format!(
                "`{s}` is not an IPv4 ADDRESS/PREFIX such as 10.0.0.1/24: {why}"
            ))
        };
        let (address, prefix) = s.split_once('/').ok_or_else(|| err("the /PREFIX is missing"))?;
        let address: Ipv4Addr = address.parse().map_err(|_| err("bad address"))?;
        let prefix_len: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
        Self::new(address, prefix_len).ok_or_else(|| err("the prefix length is at most 32"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_derive() {
        let c: Ipv4Cidr = "10.0.0.1/24".parse().unwrap();
        assert_eq!(c.address(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(c.prefix_len(), 24);
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.network(), Ipv4Addr::new(10, 0, 0, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 0, 0, 255));
        assert!(c.contains(Ipv4Addr::new(10, 0, 0, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 0, 1, 2)));
        assert_eq!(c.to_string(), "10.0.0.1/24");
    }

    #[test]
    fn edge_prefixes() {
        let all: Ipv4Cidr = "10.1.2.3/0".parse().unwrap();
        assert_eq!(all.netmask(), Ipv4Addr::UNSPECIFIED);
        assert!(all.contains(Ipv4Addr::new(192, 0, 2, 1)));
        let host: Ipv4Cidr = "10.1.2.3/32".parse().unwrap();
        assert_eq!(host.network(), host.broadcast());
        assert!(!host.contains(Ipv4Addr::new(10, 1, 2, 4)));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "10.0.0/24",
            "fd00::1/64",
            "10.0.0.1/x",
            "",
        ] {
            let err = bad.parse::<Ipv4Cidr>().unwrap_err();
            assert!(err.to_string().contains("ADDRESS/PREFIX"), "{bad}: {err}");
        }
    }
}
