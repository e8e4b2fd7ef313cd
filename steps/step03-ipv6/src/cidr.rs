//! Interface addresses of either family, as in `10.0.0.1/24` or `fd00::1/64`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

pub use step01_ping_tun::Ipv4Cidr;
use step01_ping_tun::cidr::ParseCidrError;

/// An IPv6 interface address and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Cidr {
    address: Ipv6Addr,
    prefix_len: u8,
}

impl Ipv6Cidr {
    /// `None` when `prefix_len` is larger than 128.
    pub fn new(address: Ipv6Addr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 128).then_some(Self { address, prefix_len })
    }

    pub fn address(&self) -> Ipv6Addr {
        self.address
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    fn mask(&self) -> u128 {
        u128::MAX
            .checked_shl(128 - u32::from(self.prefix_len))
            .unwrap_or(0)
    }

    /// True when `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        ip.to_bits() & self.mask() == self.address.to_bits() & self.mask()
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// An address of either family with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpCidr {
    V4(Ipv4Cidr),
    V6(Ipv6Cidr),
}

impl IpCidr {
    pub fn address(&self) -> IpAddr {
        match self {
            IpCidr::V4(c) => IpAddr::V4(c.address()),
            IpCidr::V6(c) => IpAddr::V6(c.address()),
        }
    }

    pub fn prefix_len(&self) -> u8 {
        match self {
            IpCidr::V4(c) => c.prefix_len(),
            IpCidr::V6(c) => c.prefix_len(),
        }
    }

    /// True when `ip` (of the same family) lies inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (IpCidr::V4(c), IpAddr::V4(ip)) => c.contains(ip),
            (IpCidr::V6(c), IpAddr::V6(ip)) => c.contains(ip),
            _ => false,
        }
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpCidr::V4(c) => c.fmt(f),
            IpCidr::V6(c) => c.fmt(f),
        }
    }
}

/// Why a string is not an `ADDRESS/PREFIX` of either family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIpCidrError(String);

impl fmt::Display for ParseIpCidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseIpCidrError {}

impl From<ParseCidrError> for ParseIpCidrError {
    fn from(e: ParseCidrError) -> Self {
        Self(e.to_string())
    }
}

impl FromStr for IpCidr {
    type Err = ParseIpCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.contains(':') {
            return Ok(IpCidr::V4(s.parse()?));
        }
        let err = |why: &str| {
            ParseIpCidrError(format!(
                "`{s}` is not an ADDRESS/PREFIX such as 10.0.0.1/24 or fd00::1/64: {why}"
            ))
        };
        let (address, prefix) = s.split_once('/').ok_or_else(|| err("the /PREFIX is missing"))?;
        let address: Ipv6Addr = address.parse().map_err(|_| err("bad IPv6 address"))?;
        let prefix_len: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
        Ipv6Cidr::new(address, prefix_len)
            .map(IpCidr::V6)
            .ok_or_else(|| err("the prefix length is at most 128"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_both_families() {
        let v6: IpCidr = "fd00::1/64".parse().unwrap();
        let IpCidr::V6(c) = v6 else { panic!() };
        assert!(c.contains("fd00::2".parse().unwrap()));
        assert!(!c.contains("fd00:0:0:1::2".parse().unwrap()));
        assert_eq!(v6.to_string(), "fd00::1/64");
        assert_eq!(
            "10.0.0.1/24".parse::<IpCidr>().unwrap().to_string(),
            "10.0.0.1/24"
        );
        let all: Ipv6Cidr = Ipv6Cidr::new(Ipv6Addr::LOCALHOST, 0).unwrap();
        assert!(all.contains("2001:db8::1".parse().unwrap()));
        for bad in ["fd00::1", "fd00::1/129", "fd00::g/64", "10.0.0.1/33"] {
            assert!(
                bad.parse::<IpCidr>()
                    .unwrap_err()
                    .to_string()
                    .contains("ADDRESS/PREFIX"),
                "{bad}"
            );
        }
    }
}
