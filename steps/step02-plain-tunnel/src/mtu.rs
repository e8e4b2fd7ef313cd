//! How large an inner packet may be.
//!
//! Every inner packet travels inside an outer one, which must fit the
//! underlay link's MTU without fragmentation. So the TUN device's MTU is
//! the underlay MTU less everything we put in front:
//!
//! ```text
//! UDP over IPv4:  1500 - 20 (IPv4) - 8 (UDP) - 4 (our header) = 1468
//! UDP over IPv6:  1500 - 40 (IPv6) - 8 (UDP) - 4 (our header) = 1448
//! ```
//!
//! Over TCP the kernel cuts the stream into segments itself, so no inner
//! packet is ever too large for the path; we still use the same MTU, so
//! both transports carry the same packets.

use std::net::SocketAddr;

use crate::wire;

/// The transport protocol of the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Bytes of an IPv4 header without options (RFC 791 §3.1: the IHL is 5
/// 32-bit words when there are none, and we send none).
pub const IPV4_HEADER_LEN: u16 = 20;
/// Bytes of the fixed IPv6 header (RFC 8200 §3); we add no extension
/// headers.
pub const IPV6_HEADER_LEN: u16 = 40;
/// Bytes of a UDP header (RFC 768).
pub const UDP_HEADER_LEN: u16 = 8;

// ANCHOR: tun_mtu
/// The TUN MTU for an underlay path of `underlay_mtu` bytes to `peer`.
pub fn tun_mtu(underlay_mtu: u16, peer: SocketAddr) -> u16 {
    let ip_header = if peer.is_ipv4() {
        IPV4_HEADER_LEN
    } else {
        IPV6_HEADER_LEN
    };
    underlay_mtu.saturating_sub(ip_header + UDP_HEADER_LEN + wire::HEADER_LEN as u16)
}
// ANCHOR_END: tun_mtu

/// The largest inner packet a peer can send over an underlay path of
/// `underlay_mtu` bytes in either family: the IPv4 figure, since IPv4's
/// header is the smaller. A receiver accepts this much whatever its own
/// family.
pub fn max_inner(underlay_mtu: u16) -> u16 {
    tun_mtu(underlay_mtu, SocketAddr::from(([0, 0, 0, 0], 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        assert_eq!(tun_mtu(1500, "192.0.2.1:51820".parse().unwrap()), 1468);
        assert_eq!(tun_mtu(1500, "[2001:db8::1]:51820".parse().unwrap()), 1448);
        assert_eq!(tun_mtu(10, "192.0.2.1:1".parse().unwrap()), 0);
        assert_eq!(max_inner(1500), 1468);
    }
}
