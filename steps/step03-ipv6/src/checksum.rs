//! The checksums of step 03: the transport checksums of TCP, UDP, ICMP and
//! ICMPv6 over both IP versions, and the incremental update that rewrites a
//! field without summing the packet again.
//!
//! All of them are the RFC 1071 Internet checksum of step 01, re-exported
//! here. TCP and UDP (over both IP versions) and ICMPv6 also sum a
//! *pseudo-header*: the addresses, the protocol and the length from the IP
//! header, so that a segment delivered to the wrong address or protocol
//! fails its checksum. ICMP for IPv4 has none.
//!
//! etherparse computes these checksums when it builds a packet, but does not
//! check them when it parses one, and cannot update them in place. The
//! transport header is found by [`crate::transport::locate`] (which walks
//! the IPv6 extension headers), and the sums are done here, independently
//! of the code that wrote them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::IpNumber;

pub use step01_ping_tun::checksum::{checksum, fold, sum, verify};

// ANCHOR: pseudo_headers
/// The running sum of the IPv4 pseudo-header, to which the transport message
/// is then added with [`sum`].
///
/// RFC 9293 §3.1 (TCP) and RFC 768 (UDP): the checksum also covers a 96-bit
/// pseudo-header of the source address, the destination address, a zero
/// byte, the protocol number and the TCP or UDP length (header and data,
/// without the IP header):
///
/// ```text
/// +--------+--------+--------+--------+
/// |           Source Address          |
/// +--------+--------+--------+--------+
/// |         Destination Address       |
/// +--------+--------+--------+--------+
/// |  zero  |  PTCL  |    TCP Length   |
/// +--------+--------+--------+--------+
/// ```
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u32 {
    let acc = sum(0, &src.octets());
    let acc = sum(acc, &dst.octets());
    let [hi, lo] = length.to_be_bytes();
    sum(acc, &[0, protocol, hi, lo])
}

/// The running sum of the IPv6 pseudo-header (RFC 8200 §8.1): the source
/// and destination addresses, the 32-bit upper-layer packet length (the
/// transport header and data, without the IPv6 header and its extension
/// headers), three zero bytes and the next header value of the upper layer
/// (6 for TCP, not that of the first extension header). TCP, UDP and ICMPv6
/// (RFC 4443 §2.3) all use it.
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u32 {
    let acc = sum(0, &src.octets());
    let acc = sum(acc, &dst.octets());
    let acc = sum(acc, &length.to_be_bytes());
    sum(acc, &[0, 0, 0, next_header])
}
// ANCHOR_END: pseudo_headers

// ANCHOR: transport
/// The checksum that the transport header of `packet` should hold, computed
/// with its checksum field taken as zero; the packet is not modified.
///
/// `packet` is a whole IPv4 or IPv6 packet, not a fragment, carrying TCP,
/// UDP, ICMP (over IPv4) or ICMPv6 (over IPv6). Anything else, or a packet
/// that does not parse, gives `None`; so does an IPv6 packet with a routing
/// header still to be processed (segments left not zero), whose pseudo-header
/// would need the final destination from inside that header (RFC 8200 §8.1).
///
/// For UDP a computed 0 is returned as 0xffff, the same number in one's
/// complement: a UDP checksum field of 0 means "no checksum" (RFC 768; RFC
/// 8200 §8.1 for IPv6).
pub fn transport_checksum(packet: &[u8]) -> Option<u16> {
    let transport = Transport::locate(packet)?;
    let (before, _stored, after) = transport.split_at_checksum()?;
    let computed = fold(sum(sum(transport.pseudo, before), after));
    Some(match transport.protocol {
        IpNumber::UDP if computed == 0 => 0xffff,
        _ => computed,
    })
}

/// Whether the transport checksum stored in `packet` is right, or `None` for
/// a packet [`transport_checksum`] does not handle.
///
/// RFC 1071 §1 (3): the receiver sums the message *with* its checksum and
/// the pseudo-header, and a correct one sums to all ones. This accepts both
/// representations of a zero checksum, 0x0000 and 0xffff, as receivers do.
/// A UDP checksum of 0 means the sender computed none: that is allowed over
/// IPv4 (RFC 768), and over IPv6 the packet must be discarded (RFC 8200
/// §8.1: "IPv6 receivers must discard UDP packets containing a zero
/// checksum").
pub fn verify_transport(packet: &[u8]) -> Option<bool> {
    let transport = Transport::locate(packet)?;
    let (_, stored, _) = transport.split_at_checksum()?;
    if transport.protocol == IpNumber::UDP && stored == 0 {
        return Some(!transport.ipv6);
    }
    Some(fold(sum(transport.pseudo, transport.message)) == 0)
}

/// A transport message whose checksum we compute.
struct Transport<'a> {
    /// TCP, UDP, ICMP (only over IPv4) or IPV6_ICMP (only over IPv6).
    protocol: IpNumber,
    ipv6: bool,
    /// The header and data the checksum covers. For UDP, as many bytes as
    /// its Length field says, which is also the length in the pseudo-header.
    message: &'a [u8],
    /// The sum of the pseudo-header; 0 for ICMP, which has none (RFC 792).
    pseudo: u32,
}

impl<'a> Transport<'a> {
    fn locate(packet: &'a [u8]) -> Option<Self> {
        let found = crate::transport::locate(packet).ok()?;
        // `transport` checks the TCP data offset and the UDP length, and
        // refuses fragments, whose message is not all here.
        let message = packet.get(found.transport(packet).ok()?)?;
        let protocol = found.protocol;
        match (protocol, found.ipv6) {
            (IpNumber::TCP | IpNumber::UDP, _) => {}
            // RFC 792 and RFC 4443 §2.1: type, code, checksum, and at least
            // 4 more bytes.
            (IpNumber::ICMP, false) | (IpNumber::IPV6_ICMP, true) if message.len() >= 8 => {}
            _ => return None,
        }
        let length = message.len();
        let pseudo = match (found.source, found.destination) {
            _ if protocol == IpNumber::ICMP => 0,
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                pseudo_header_v4(src, dst, protocol.0, u16::try_from(length).ok()?)
            }
            // With a routing header still to be processed, the destination
            // here is not the final one the pseudo-header needs (RFC 8200
            // §8.1): that one is inside the routing header.
            (IpAddr::V6(_), IpAddr::V6(_)) if found.routing_pending => return None,
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                pseudo_header_v6(src, dst, protocol.0, u32::try_from(length).ok()?)
            }
            _ => return None,
        };
        Some(Self {
            protocol,
            ipv6: found.ipv6,
            message,
            pseudo,
        })
    }

    /// The message before the checksum field, the stored checksum, and the
    /// message after it. The field is at an even offset, so the two parts
    /// sum in the same 16-bit words as the whole message would.
    fn split_at_checksum(&self) -> Option<(&'a [u8], u16, &'a [u8])> {
        let offset = match self.protocol {
            // RFC 9293 §3.1: after ports, sequence and acknowledgment
            // numbers, data offset, flags and window.
            IpNumber::TCP => 16,
            // RFC 768: source port, destination port, length, checksum.
            IpNumber::UDP => 6,
            // RFC 792 and RFC 4443 §2.1: type, code, checksum.
            _ => 2,
        };
        let (before, rest) = self.message.split_at_checked(offset)?;
        let (field, after) = rest.split_first_chunk::<2>()?;
        Some((before, u16::from_be_bytes(*field), after))
    }
}

// ANCHOR_END: transport

// ANCHOR: update
/// The checksum after a 16-bit word of the data it covers changes from `old`
/// to `new`, without summing the data again (RFC 1624 §3, eqn. 3):
///
/// ```text
/// HC' = ~(~HC + ~m + m')
/// ```
///
/// Complementing the stored checksum `HC` gives back the sum of the data;
/// adding `~m` (minus `m` in one's complement) and `m'` changes that sum as
/// if it had been computed over the new data; complementing again gives the
/// new checksum. It is exactly what recomputation does, so it gives exactly
/// what recomputation gives.
///
/// Why not RFC 1141's shorter eqn. 2, `HC' = HC + m + ~m'`? One's complement
/// has two zeros, 0x0000 (+0) and 0xffff (-0). Adding numbers that are not
/// all zero never gives +0, and a pseudo-header or an IPv4 header always
/// has a non-zero word, so a checksum computed from scratch over them (the
/// complement of such a sum) is never 0xffff, but can be 0x0000. Eqn. 2 works on the
/// complemented value and can give 0xffff where recomputation gives 0x0000
/// (RFC 1624 §3; the example of §4 is in the tests). Receivers accept both,
/// but the two results should not differ.
///
/// `old` and `new` must sit at an even offset from the start of the summed
/// data. A field at an odd offset counts in the sum with its bytes swapped
/// (RFC 1071 §2 (B), byte order independence), so pass
/// `old.swap_bytes()` and `new.swap_bytes()`. For a UDP checksum, leave a
/// stored 0 (no checksum) alone and send a result of 0 as 0xffff (RFC 768).
/// A checksum that was wrong stays wrong by the same amount: an incremental
/// update does not hide corruption that happened before it.
pub fn update(checksum: u16, old: u16, new: u16) -> u16 {
    fold(u32::from(!checksum) + u32::from(!old) + u32::from(new))
}

/// [`update`] for a 32-bit field at an even offset, such as an IPv4 address
/// or a TCP sequence number: both of its 16-bit words change at once.
pub fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    let words = |x: u32| [(x >> 16) as u16, x as u16];
    let ([old_hi, old_lo], [new_hi, new_lo]) = (words(old), words(new));
    let acc = u32::from(!checksum) + u32::from(!old_hi) + u32::from(!old_lo);
    fold(acc + u32::from(new_hi) + u32::from(new_lo))
}
// ANCHOR_END: update

#[cfg(test)]
pub(crate) mod captured {
    //! Packets Linux sent between two network namespaces over a veth pair
    //! (192.0.2.1 and 2001:db8::1 to 192.0.2.2 and 2001:db8::2), recorded
    //! by tcpdump on one end, Ethernet header removed. Made with `nc`,
    //! `nc -u` and `ping -6`.
    //!
    //! Both ends had transmit checksum offload turned off first (`ethtool
    //! -K veth0 tx off`). With it on, as it is by default, Linux leaves TCP
    //! and UDP checksums for the network card to finish, a veth has no card
    //! to do it, and tcpdump records them unfinished: such captures do not
    //! verify (see `underlay_udp_is_partial` in the tests).

    /// TCP/IPv4 SYN from `nc`: MSS 1460, SACK permitted, timestamps, NOP, window scale.
    #[rustfmt::skip]
    pub const SYN_V4: [u8; 60] = [
        0x45, 0x00, 0x00, 0x3c, 0xa0, 0xfc, 0x40, 0x00, 0x40, 0x06, 0x15, 0xbc, 0xc0, 0x00, 0x02, 0x01,
        0xc0, 0x00, 0x02, 0x02, 0xe8, 0xce, 0x1e, 0x61, 0x1b, 0xf7, 0x5d, 0xfb, 0x00, 0x00, 0x00, 0x00,
        0xa0, 0x02, 0xfa, 0xf0, 0x9f, 0x5e, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a,
        0x94, 0xca, 0x13, 0xbd, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
    ];
    /// TCP/IPv4 SYN-ACK, the answer: MSS 1460.
    #[rustfmt::skip]
    pub const SYN_ACK_V4: [u8; 60] = [
        0x45, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0xb6, 0xb8, 0xc0, 0x00, 0x02, 0x02,
        0xc0, 0x00, 0x02, 0x01, 0x1e, 0x61, 0xe8, 0xce, 0xb7, 0xa1, 0x84, 0x91, 0x1b, 0xf7, 0x5d, 0xfc,
        0xa0, 0x12, 0xfe, 0x88, 0xda, 0x40, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a,
        0xae, 0x7e, 0xd6, 0xc2, 0x94, 0xca, 0x13, 0xbd, 0x01, 0x03, 0x03, 0x0a,
    ];
    /// TCP/IPv4 data segment "hello\n" with a timestamps option after two NOPs.
    #[rustfmt::skip]
    pub const DATA_V4: [u8; 58] = [
        0x45, 0x00, 0x00, 0x3a, 0xa0, 0xfe, 0x40, 0x00, 0x40, 0x06, 0x15, 0xbc, 0xc0, 0x00, 0x02, 0x01,
        0xc0, 0x00, 0x02, 0x02, 0xe8, 0xce, 0x1e, 0x61, 0x1b, 0xf7, 0x5d, 0xfc, 0xb7, 0xa1, 0x84, 0x92,
        0x80, 0x18, 0x00, 0x3f, 0xc3, 0x6f, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x94, 0xca, 0x13, 0xbd,
        0xae, 0x7e, 0xd6, 0xc2, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x0a,
    ];
    /// TCP/IPv6 SYN: MSS 1440 (1500 - 40 - 20).
    #[rustfmt::skip]
    pub const SYN_V6: [u8; 80] = [
        0x60, 0x04, 0x31, 0xd6, 0x00, 0x28, 0x06, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xd6, 0xa0, 0x1e, 0x61, 0xb8, 0x74, 0x9c, 0x14,
        0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfd, 0x20, 0x1d, 0x5d, 0x00, 0x00, 0x02, 0x04, 0x05, 0xa0,
        0x04, 0x02, 0x08, 0x0a, 0x0c, 0xd9, 0x7b, 0xba, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
    ];
    /// TCP/IPv6 SYN-ACK, MSS 1440.
    #[rustfmt::skip]
    pub const SYN_ACK_V6: [u8; 80] = [
        0x60, 0x0f, 0x27, 0x3f, 0x00, 0x28, 0x06, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x1e, 0x61, 0xd6, 0xa0, 0x98, 0x81, 0x1e, 0x31,
        0xb8, 0x74, 0x9c, 0x15, 0xa0, 0x12, 0xfb, 0x04, 0x17, 0x0e, 0x00, 0x00, 0x02, 0x04, 0x05, 0xa0,
        0x04, 0x02, 0x08, 0x0a, 0xa7, 0xef, 0xa9, 0xb7, 0x0c, 0xd9, 0x7b, 0xba, 0x01, 0x03, 0x03, 0x0a,
    ];
    /// TCP/IPv6 data segment "hello\n".
    #[rustfmt::skip]
    pub const DATA_V6: [u8; 78] = [
        0x60, 0x04, 0x31, 0xd6, 0x00, 0x26, 0x06, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xd6, 0xa0, 0x1e, 0x61, 0xb8, 0x74, 0x9c, 0x15,
        0x98, 0x81, 0x1e, 0x32, 0x80, 0x18, 0x00, 0x40, 0xfc, 0xa3, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a,
        0x0c, 0xd9, 0x7b, 0xba, 0xa7, 0xef, 0xa9, 0xb7, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x0a,
    ];
    /// UDP/IPv4 "udp4\n": 13 bytes of UDP, an odd length, summed with a zero pad byte.
    #[rustfmt::skip]
    pub const UDP_V4: [u8; 33] = [
        0x45, 0x00, 0x00, 0x21, 0xed, 0xd9, 0x40, 0x00, 0x40, 0x11, 0xc8, 0xee, 0xc0, 0x00, 0x02, 0x01,
        0xc0, 0x00, 0x02, 0x02, 0xad, 0x4b, 0x1e, 0x62, 0x00, 0x0d, 0xc0, 0x89, 0x75, 0x64, 0x70, 0x34,
        0x0a,
    ];
    /// UDP/IPv6 "udp6!\n".
    #[rustfmt::skip]
    pub const UDP_V6: [u8; 54] = [
        0x60, 0x08, 0xca, 0x72, 0x00, 0x0e, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xa4, 0xc3, 0x1e, 0x63, 0x00, 0x0e, 0xda, 0x91,
        0x75, 0x64, 0x70, 0x36, 0x21, 0x0a,
    ];
    /// ICMPv6 echo request from `ping -6 -s 8`.
    #[rustfmt::skip]
    pub const ECHO_V6: [u8; 56] = [
        0x60, 0x04, 0xf8, 0x3b, 0x00, 0x10, 0x3a, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x80, 0x00, 0xc3, 0xb3, 0x1c, 0x47, 0x00, 0x01,
        0x74, 0x75, 0x6e, 0x6c, 0x61, 0x62, 0x00, 0x00,
    ];
    /// An MLDv2 report: ICMPv6 behind a hop-by-hop options header, which
    /// etherparse skips; the pseudo-header's next header is 58, not 0.
    #[rustfmt::skip]
    pub const MLD_V6: [u8; 96] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x38, 0x00, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x6c, 0x04, 0x15, 0xff, 0xfe, 0x47, 0x8f, 0x20, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x16, 0x3a, 0x00, 0x05, 0x02, 0x00, 0x00, 0x01, 0x00,
        0x8f, 0x00, 0xd0, 0x1a, 0x00, 0x00, 0x00, 0x02, 0x04, 0x00, 0x00, 0x00, 0xff, 0x02, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x47, 0x8f, 0x20, 0x04, 0x00, 0x00, 0x00,
        0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x00, 0x00, 0x01,
    ];

    /// Every IP packet of the captures in `pcaps/STEP`, with its file's
    /// name: TUN captures as they are, Ethernet captures unwrapped.
    pub fn lab_packets(step: &str) -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../pcaps")
            .join(step);
        let mut packets = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "pcap") {
                continue;
            }
            let (link, records) = step01_ping_tun::pcap::read_any(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            for record in records {
                let ip = match link {
                    step01_ping_tun::pcap::DataLink::ETHERNET => {
                        step01_ping_tun::pcap::ip_in_ethernet(&record.data).map(<[u8]>::to_vec)
                    }
                    _ => Some(record.data),
                };
                packets.extend(ip.map(|ip| (name.clone(), ip)));
            }
        }
        packets
    }
}

#[cfg(test)]
mod tests {
    use etherparse::{IpSlice, PacketBuilder, SlicedPacket, TransportSlice, UdpSlice};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::captured::*;
    use super::*;

    /// RFC 1141's eqn. 2, kept only to show the case it gets wrong.
    fn rfc1141_update(checksum: u16, old: u16, new: u16) -> u16 {
        !fold(u32::from(checksum) + u32::from(old) + u32::from(!new))
    }

    /// RFC 1624 §4: the other words of a header sum to 0xCD7A and a field
    /// changes from 0x5555 to 0x3285. So HC = ~(0xCD7A + 0x5555) = 0xDD2F,
    /// and recomputing gives ~(0xCD7A + 0x3285) = ~0xFFFF = 0x0000. Eqn. 2
    /// gives 0xDD2F + 0x5555 + ~0x3285 = 0xFFFF; eqn. 3 gives 0x0000.
    #[test]
    fn rfc1624_example() {
        assert_eq!(fold(0xcd7a + 0x5555), 0xdd2f);
        assert_eq!(fold(0xcd7a + 0x3285), 0x0000);
        assert_eq!(update(0xdd2f, 0x5555, 0x3285), 0x0000);
        assert_eq!(rfc1141_update(0xdd2f, 0x5555, 0x3285), 0xffff);
    }

    /// The same example on bytes: the checksum, one word standing for all
    /// the others (0xCD7A), and the field.
    #[test]
    fn rfc1624_example_on_bytes() {
        let mut data = [0xdd, 0x2f, 0xcd, 0x7a, 0x55, 0x55];
        assert!(verify(&data));
        let new = update(0xdd2f, 0x5555, 0x3285);
        data[4..6].copy_from_slice(&[0x32, 0x85]);
        data[0..2].copy_from_slice(&new.to_be_bytes());
        assert!(verify(&data));
        assert_eq!(checksum(&data[2..]), new);
    }

    /// A word that does not change leaves the checksum as it is, 0x0000
    /// included (RFC 1624 errata 4782 fears 0xFFFF here, but with end-around
    /// carry ~0x0000 + ~m + m = 0xFFFF + 0xFFFF folds to 0xFFFF, not +0).
    #[test]
    fn unchanged_word_keeps_the_checksum() {
        for hc in [0x0000, 0x1234, 0xfffe] {
            for m in [0x0000, 0x5555, 0xffff] {
                assert_eq!(update(hc, m, m), hc, "{hc:04x} {m:04x}");
            }
        }
    }

    /// NAT rewrites a 32-bit address: here the source of step 01's echo
    /// request, 10.0.0.1, becomes 192.0.2.7 in its IPv4 header.
    #[test]
    fn update_u32_rewrites_an_address() {
        let mut header = [
            0x45, 0x00, 0x00, 0x54, 0x81, 0x1e, 0x40, 0x00, 0x40, 0x01, 0xa5, 0x88, 0x0a, 0x00, 0x00, 0x01,
            0x0a, 0x00, 0x00, 0x02,
        ];
        let new = update_u32(0xa588, 0x0a00_0001, 0xc000_0207);
        header[12..16].copy_from_slice(&[192, 0, 2, 7]);
        header[10..12].copy_from_slice(&new.to_be_bytes());
        assert!(verify(&header));
        header[10..12].fill(0);
        assert_eq!(checksum(&header), new);
    }

    /// A field at an odd offset updates with its bytes swapped.
    #[test]
    fn odd_offset_field_swaps_bytes() {
        let mut data = [0x12, 0x34, 0x56, 0xab, 0xcd, 0x78];
        let hc = checksum(&data);
        data[3..5].copy_from_slice(&[0x05, 0xb4]);
        assert_eq!(
            update(hc, 0xabcd_u16.swap_bytes(), 0x05b4_u16.swap_bytes()),
            checksum(&data)
        );
        assert_ne!(update(hc, 0xabcd, 0x05b4), checksum(&data));
    }

    /// The pseudo-headers word by word: 192.0.2.1 is c000 0201.
    #[test]
    fn pseudo_header_words() {
        let (a, b) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(
            pseudo_header_v4(a, b, 6, 40),
            0xc000 + 0x0201 + 0xc000 + 0x0202 + 0x0006 + 0x0028
        );
        let (a, b) = (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
            Ipv6Addr::LOCALHOST,
        );
        let length = 0x0001_0010; // the upper 16 bits count too
        assert_eq!(
            pseudo_header_v6(a, b, 58, length),
            0x2001 + 0x0db8 + 1 + 1 + 0x0001 + 0x0010 + 58
        );
    }

    fn stored(packet: &[u8]) -> u16 {
        Transport::locate(packet).unwrap().split_at_checksum().unwrap().1
    }

    #[test]
    fn captured_packets_verify() {
        let all: [&[u8]; 10] = [
            &SYN_V4,
            &SYN_ACK_V4,
            &DATA_V4,
            &SYN_V6,
            &SYN_ACK_V6,
            &DATA_V6,
            &UDP_V4,
            &UDP_V6,
            &ECHO_V6,
            &MLD_V6,
        ];
        for (i, packet) in all.into_iter().enumerate() {
            assert_eq!(verify_transport(packet), Some(true), "packet {i}");
            assert_eq!(transport_checksum(packet), Some(stored(packet)), "packet {i}");
            // Any changed byte of the transport message is caught (the
            // hop-by-hop options header of MLD_V6 is not covered).
            let message = Transport::locate(packet).unwrap().message;
            for at in packet.len() - message.len()..packet.len() {
                let mut bad = packet.to_vec();
                bad[at] ^= 0x10;
                assert_ne!(verify_transport(&bad), Some(true), "packet {i}, byte {at}");
            }
        }
        // The values tcpdump printed as "correct".
        assert_eq!(transport_checksum(&SYN_V4), Some(0x9f5e));
        assert_eq!(transport_checksum(&SYN_V6), Some(0x1d5d));
        assert_eq!(transport_checksum(&UDP_V4), Some(0xc089));
        assert_eq!(transport_checksum(&MLD_V6), Some(0xd01a));
    }

    /// Another destination address makes the TCP checksum fail: what the
    /// pseudo-header is for.
    #[test]
    fn pseudo_header_catches_misdelivery() {
        let mut packet = SYN_V4;
        packet[19] = 3; // 192.0.2.3, with the IPv4 header checksum fixed
        packet[10..12].fill(0);
        let c = checksum(&packet[..20]);
        packet[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(verify_transport(&packet), Some(false));
    }

    #[test]
    fn udp_zero_checksum_means_none_over_ipv4_only() {
        let mut v4 = UDP_V4;
        v4[26..28].fill(0);
        assert_eq!(verify_transport(&v4), Some(true));
        assert_eq!(transport_checksum(&v4), Some(0xc089));
        let mut v6 = UDP_V6;
        v6[46..48].fill(0);
        assert_eq!(verify_transport(&v6), Some(false));
    }

    /// A UDP datagram whose checksum computes to 0 carries 0xffff; receivers
    /// accept it (in one's complement, it is the same number).
    #[test]
    fn udp_computed_zero_is_sent_as_all_ones() {
        let mut packet = UDP_V4.to_vec();
        // Choose the last two data bytes so that the sum becomes 0xffff:
        // with those bytes zero the checksum is c, so add the word c.
        packet.push(0); // now 14 bytes of UDP: "udp4\n" and a pad byte
        packet[3] += 1; // IPv4 total length
        packet[25] += 1; // UDP length
        packet[10..12].fill(0);
        let c = checksum(&packet[..20]);
        packet[10..12].copy_from_slice(&c.to_be_bytes());
        packet[32..34].fill(0);
        let c = transport_checksum(&packet).unwrap();
        packet[32..34].copy_from_slice(&c.to_be_bytes());
        assert_eq!(transport_checksum(&packet), Some(0xffff));
        packet[26..28].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(verify_transport(&packet), Some(true));
    }

    #[test]
    fn what_is_not_handled() {
        assert_eq!(transport_checksum(&[]), None);
        assert_eq!(transport_checksum(&SYN_V4[..59]), None, "cut short");
        assert_eq!(transport_checksum(&SYN_V4[..20]), None, "no TCP header");
        let mut fragment = SYN_V4;
        fragment[6] |= 0x20; // more fragments
        assert_eq!(transport_checksum(&fragment), None);
        let mut gre = SYN_V4;
        gre[9] = 47;
        assert_eq!(transport_checksum(&gre), None);
        let mut icmpv6_in_v4 = SYN_V4;
        icmpv6_in_v4[9] = 58;
        assert_eq!(transport_checksum(&icmpv6_in_v4), None);
        let mut icmp_in_v6 = ECHO_V6;
        icmp_in_v6[6] = 1;
        assert_eq!(transport_checksum(&icmp_in_v6), None);
        let mut bad_offset = SYN_V4;
        bad_offset[32] = 0x40; // data offset 4 words
        assert_eq!(transport_checksum(&bad_offset), None);
    }

    /// A routing header with segments left: the pseudo-header would need the
    /// final destination, which is inside it. With none left, the
    /// destination address is the final one and the packet is handled.
    #[test]
    fn routing_header() {
        let mut packet = UDP_V6[..40].to_vec();
        packet[6] = 43; // next header: routing
        packet[5] += 8;
        // next header UDP, length 0 (8 bytes), type 4, segments left 1
        packet.extend_from_slice(&[17, 0, 4, 1, 0, 0, 0, 0]);
        packet.extend_from_slice(&UDP_V6[40..]);
        assert_eq!(transport_checksum(&packet), None);
        packet[43] = 0; // segments left 0
        assert_eq!(transport_checksum(&packet), Some(stored(&UDP_V6)));
    }

    /// Every ICMP and ICMPv6 message recorded in labs 01 and 02 verifies:
    /// Linux's echo requests, router solicitations and MLD reports, and the
    /// replies steps 01 and 02 wrote. UDP is the next test.
    #[test]
    fn lab_captures_verify() {
        let mut icmp = 0;
        for (file, packet) in lab_packets("step01").into_iter().chain(lab_packets("step02")) {
            let sliced = SlicedPacket::from_ip(&packet).unwrap();
            if let Some(TransportSlice::Icmpv4(_) | TransportSlice::Icmpv6(_)) = sliced.transport {
                assert_eq!(verify_transport(&packet), Some(true), "{file}: {packet:02x?}");
                icmp += 1;
            }
        }
        assert!(icmp >= 100, "only {icmp} ICMP messages");
    }

    /// The underlay capture of lab 02 was recorded on a veth with transmit
    /// checksum offload on: Linux sent each UDP datagram with only the
    /// pseudo-header summed into its checksum field (CHECKSUM_PARTIAL), for
    /// a network card to finish, and the veth's peer took the kernel's word
    /// for it. So each datagram either verifies, or holds exactly the folded
    /// pseudo-header sum, uncomplemented: a check of our pseudo-header
    /// against the kernel's.
    #[test]
    fn underlay_udp_is_partial() {
        let (mut partial, mut whole) = (0, 0);
        for (_, packet) in lab_packets("step02") {
            let Ok(IpSlice::Ipv4(ip)) = IpSlice::from_slice(&packet) else {
                continue;
            };
            let Ok(udp) = UdpSlice::from_slice(ip.payload().payload) else {
                continue;
            };
            let h = ip.header();
            let pseudo = pseudo_header_v4(h.source_addr(), h.destination_addr(), 17, udp.length());
            if verify_transport(&packet) == Some(true) {
                whole += 1;
            } else {
                assert_eq!(udp.checksum(), !fold(pseudo));
                partial += 1;
            }
        }
        assert!(partial + whole >= 10, "{partial} + {whole}");
    }

    /// A packet of each kind etherparse builds, with the checksum it wrote.
    fn build(ipv6: bool, kind: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
        let ip = if ipv6 {
            PacketBuilder::ipv6(src, dst, 64)
        } else {
            let v4 = |a: [u8; 16]| [a[0], a[1], a[2], a[3]];
            PacketBuilder::ipv4(v4(src), v4(dst), 64)
        };
        let mut out = Vec::new();
        match kind {
            0 => ip.tcp(40000, 443, 7, 1000).write(&mut out, payload),
            1 => ip.udp(40000, 53).write(&mut out, payload),
            _ if ipv6 => ip.icmpv6_echo_request(1, 2).write(&mut out, payload),
            _ => ip.icmpv4_echo_request(1, 2).write(&mut out, payload),
        }
        .unwrap();
        out
    }

    fn fixed_ipv4_header(packet: &mut [u8]) {
        packet[10..12].fill(0);
        let c = checksum(&packet[..20]);
        packet[10..12].copy_from_slice(&c.to_be_bytes());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Our checksum of what etherparse built equals what it wrote.
        #[test]
        fn agrees_with_etherparse(
            ipv6: bool,
            kind in 0u8..3,
            src: [u8; 16],
            dst: [u8; 16],
            payload in vec(any::<u8>(), 0..1400),
        ) {
            let packet = build(ipv6, kind, src, dst, &payload);
            prop_assert_eq!(transport_checksum(&packet), Some(stored(&packet)));
            prop_assert_eq!(verify_transport(&packet), Some(true));
        }

        /// Changing any 16-bit word of any data: the updated checksum is the
        /// recomputed one, at even offsets and, bytes swapped, at odd ones.
        /// (Unless the new data is all zeros, whose sum is +0: no header or
        /// pseudo-header is.)
        #[test]
        fn update_equals_recomputation(data in vec(any::<u8>(), 2..600), at: Index, new: u16) {
            let at = at.index(data.len() - 1);
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            let mut changed = data.clone();
            changed[at..at + 2].copy_from_slice(&new.to_be_bytes());
            prop_assume!(changed.iter().any(|&b| b != 0));
            let (old, new) = if at % 2 == 0 { (old, new) } else { (old.swap_bytes(), new.swap_bytes()) };
            prop_assert_eq!(update(checksum(&data), old, new), checksum(&changed));
        }

        #[test]
        fn update_u32_equals_recomputation(data in vec(any::<u8>(), 4..600), at: Index, new: u32) {
            let at = at.index(data.len() / 2 - 1) * 2; // even
            prop_assume!(at + 4 <= data.len());
            let old = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            let mut changed = data.clone();
            changed[at..at + 4].copy_from_slice(&new.to_be_bytes());
            prop_assume!(changed.iter().any(|&b| b != 0));
            prop_assert_eq!(update_u32(checksum(&data), old, new), checksum(&changed));
        }

        /// What NAT does to an IPv4 packet: a new source address and port,
        /// with the IPv4 header checksum and the transport checksum (whose
        /// pseudo-header holds the address) both updated, never recomputed.
        #[test]
        fn nat_rewrite_keeps_checksums_right(
            kind in 0u8..2,
            src: [u8; 16],
            dst: [u8; 16],
            payload in vec(any::<u8>(), 0..600),
            new_addr: u32,
            new_port: u16,
        ) {
            let mut packet = build(false, kind, src, dst, &payload);
            let word = |p: &[u8], at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
            let old_addr = u32::from_be_bytes([packet[12], packet[13], packet[14], packet[15]]);
            let old_port = word(&packet, 20);
            let field = if kind == 0 { 36 } else { 26 }; // TCP or UDP checksum

            let ip_sum = update_u32(word(&packet, 10), old_addr, new_addr);
            let t = update_u32(word(&packet, field), old_addr, new_addr);
            let mut t = update(t, old_port, new_port);
            if kind == 1 && t == 0 {
                t = 0xffff; // RFC 768
            }
            packet[10..12].copy_from_slice(&ip_sum.to_be_bytes());
            packet[12..16].copy_from_slice(&new_addr.to_be_bytes());
            packet[20..22].copy_from_slice(&new_port.to_be_bytes());
            packet[field..field + 2].copy_from_slice(&t.to_be_bytes());

            prop_assert!(verify(&packet[..20]));
            prop_assert_eq!(verify_transport(&packet), Some(true));
            let mut recomputed = packet.clone();
            fixed_ipv4_header(&mut recomputed);
            prop_assert_eq!(&recomputed[10..12], &packet[10..12]);
            prop_assert_eq!(transport_checksum(&packet), Some(t));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..200)) {
            let _ = transport_checksum(&bytes);
            let _ = verify_transport(&bytes);
        }
    }
}
