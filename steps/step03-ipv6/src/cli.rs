//! Parsers for the command-line values step 03 adds: addresses of either
//! family.

use std::net::Ipv6Addr;

use ipnet::{IpNet, Ipv6Net};
use step01_ping_tun::cli::ipv4_net;

/// Parses `ADDRESS/PREFIX` of either family, such as `10.0.0.1/24` or
/// `fd00::1/64`, for clap's `value_parser`. The address is kept as given:
/// `fd00::1/64` is the address fd00::1 on the prefix fd00::/64. The error
/// names the value and what is wrong with it.
pub fn ip_net(s: &str) -> Result<IpNet, String> {
    if !s.contains(':') {
        return ipv4_net(s).map(IpNet::V4);
    }
    let err = |why: &str| format!("`{s}` is not an ADDRESS/PREFIX such as 10.0.0.1/24 or fd00::1/64: {why}");
    let (address, prefix) = s.split_once('/').ok_or_else(|| err("the /PREFIX is missing"))?;
    let address: Ipv6Addr = address.parse().map_err(|_| err("bad IPv6 address"))?;
    let prefix_len: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
    Ipv6Net::new(address, prefix_len)
        .map(IpNet::V6)
        .map_err(|_| err("the prefix length is at most 128"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_both_families() {
        let v6 = ip_net("fd00::1/64").unwrap();
        let IpNet::V6(c) = v6 else { panic!() };
        assert_eq!(c.addr(), "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert!(c.contains(&"fd00::2".parse::<Ipv6Addr>().unwrap()));
        assert!(!c.contains(&"fd00:0:0:1::2".parse::<Ipv6Addr>().unwrap()));
        assert_eq!(c.network().to_string(), "fd00::");
        assert_eq!(v6.to_string(), "fd00::1/64");
        assert_eq!(ip_net("10.0.0.1/24").unwrap().to_string(), "10.0.0.1/24");
        let all = Ipv6Net::new(Ipv6Addr::LOCALHOST, 0).unwrap();
        assert!(all.contains(&"2001:db8::1".parse::<Ipv6Addr>().unwrap()));
    }

    #[test]
    fn rejects_bad_input_saying_why() {
        for (bad, why) in [
            ("fd00::1", "the /PREFIX is missing"),
            ("fd00::1/129", "the prefix length is at most 128"),
            ("fd00::g/64", "bad IPv6 address"),
            ("fd00::1/x", "bad prefix length"),
        ] {
            assert_eq!(
                ip_net(bad).unwrap_err(),
                format!("`{bad}` is not an ADDRESS/PREFIX such as 10.0.0.1/24 or fd00::1/64: {why}")
            );
        }
        assert!(ip_net("10.0.0.1/33").unwrap_err().contains("at most 32"));
    }
}
