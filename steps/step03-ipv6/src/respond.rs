//! The `respond` mode: step 01's ping responder, for both families.
//!
//! IPv4 echo requests go to step 01's [`Responder`]; ICMPv6 echo requests
//! (type 128) get echo replies (type 129) here. Neighbour discovery, router
//! solicitations and MLD, which the kernel sends into every fresh device,
//! are counted and ignored: nobody is on the other side of a TUN device to
//! answer them, and nobody needs an answer.

use std::fmt;
use std::net::Ipv6Addr;

use etherparse::{Icmpv6Header, Icmpv6Slice, Icmpv6Type, IpNumber, Ipv6Header, Ipv6Slice};
use step01_ping_tun::counts::{Counts, Reason};
use step01_ping_tun::run::Handler;
use step01_ping_tun::{DropReason, Responder};

use crate::checksum;
use ipnet::Ipv6Net;

// ANCHOR: drop6
/// Why an IPv6 packet got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drop6 {
    /// No IPv6 address was given, so IPv6 is not ours to answer.
    NoIpv6,
    /// Shorter than its headers or than its payload length says.
    Truncated,
    /// Not for an address of our prefix other than our own.
    NotForUs,
    /// One fragment of a larger packet (RFC 8200 §4.5). We do not
    /// reassemble.
    Fragment,
    /// Not ICMPv6 (TCP, UDP, ...).
    NotIcmpv6,
    /// RFC 4443 §2.3: the checksum, over the pseudo-header, does not verify.
    BadChecksum,
    /// Router or neighbour solicitation or advertisement (RFC 4861).
    NeighbourDiscovery,
    /// Multicast listener discovery (RFC 2710, RFC 3810).
    Mld,
    /// Any other ICMPv6 message that is not an echo request.
    NotEchoRequest,
    /// The caller's output buffer is too small.
    NoRoom,
}
// ANCHOR_END: drop6

impl Reason for Drop6 {
    const ALL: &'static [Drop6] = &[
        Drop6::NoIpv6,
        Drop6::Truncated,
        Drop6::NotForUs,
        Drop6::Fragment,
        Drop6::NotIcmpv6,
        Drop6::BadChecksum,
        Drop6::NeighbourDiscovery,
        Drop6::Mld,
        Drop6::NotEchoRequest,
        Drop6::NoRoom,
    ];

    fn name(self) -> &'static str {
        match self {
            Drop6::NoIpv6 => "no-ipv6",
            Drop6::Truncated => "truncated",
            Drop6::NotForUs => "not-for-us",
            Drop6::Fragment => "fragment",
            Drop6::NotIcmpv6 => "not-icmpv6",
            Drop6::BadChecksum => "bad-icmpv6-checksum",
            Drop6::NeighbourDiscovery => "neighbour-discovery",
            Drop6::Mld => "mld",
            Drop6::NotEchoRequest => "not-echo-request",
            Drop6::NoRoom => "no-room",
        }
    }
}

impl fmt::Display for Drop6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a packet of either family got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    V4(DropReason),
    V6(Drop6),
}

impl fmt::Display for Drop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drop::V4(r) => r.fmt(f),
            Drop::V6(r) => write!(f, "ipv6 {r}"),
        }
    }
}

/// Replies counted per family, and IPv6 drops by reason (IPv4 drops are
/// counted by step 01's responder).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters6 {
    pub replies: u64,
    pub drops: Counts<Drop6>,
}

/// Answers pings of both families.
#[derive(Debug, Clone)]
pub struct DualResponder {
    v4: Option<Responder>,
    v6: Option<Ipv6Net>,
    counters6: Counters6,
}

/// The hop limit of our replies: Linux's default (`net.ipv6.conf.*.hop_limit`).
pub const REPLY_HOP_LIMIT: u8 = 64;

impl DualResponder {
    pub fn new(v4: Option<Responder>, v6: Option<Ipv6Net>) -> Self {
        Self {
            v4,
            v6,
            counters6: Counters6::default(),
        }
    }

    pub fn counters_v4(&self) -> Option<&step01_ping_tun::Counters> {
        self.v4.as_ref().map(Responder::counters)
    }

    pub fn counters_v6(&self) -> &Counters6 {
        &self.counters6
    }

    fn count6(&mut self, reason: Drop6) -> Drop {
        self.counters6.drops.increment(reason);
        Drop::V6(reason)
    }

    // ANCHOR: echo6
    fn echo_reply6(&self, packet: &[u8], out: &mut [u8]) -> Result<usize, Drop6> {
        let prefix = self.v6.ok_or(Drop6::NoIpv6)?;
        let ip = Ipv6Slice::from_slice(packet).map_err(|_| Drop6::Truncated)?;
        let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
        if ip.is_payload_fragmented() {
            return Err(Drop6::Fragment);
        }
        if ip.payload().ip_number != IpNumber::IPV6_ICMP {
            return Err(Drop6::NotIcmpv6);
        }
        let icmp = Icmpv6Slice::from_slice(ip.payload().payload).map_err(|_| Drop6::Truncated)?;
        // RFC 4443 §2.3: the checksum covers the pseudo-header (RFC 8200
        // §8.1) and the whole ICMPv6 message.
        if checksum::verify_transport(packet) != Some(true) {
            return Err(Drop6::BadChecksum);
        }
        let echo = match icmp.icmp_type() {
            Icmpv6Type::EchoRequest(echo) => echo,
            Icmpv6Type::RouterSolicitation
            | Icmpv6Type::RouterAdvertisement(_)
            | Icmpv6Type::NeighborSolicitation
            | Icmpv6Type::NeighborAdvertisement(_)
            | Icmpv6Type::Redirect => return Err(Drop6::NeighbourDiscovery),
            Icmpv6Type::Unknown {
                type_u8: 130..=132 | 143,
                ..
            } => return Err(Drop6::Mld),
            _ => return Err(Drop6::NotEchoRequest),
        };
        // Checked after the type, so neighbour discovery and MLD (sent to
        // multicast groups) are counted as what they are.
        if !prefix.contains(&dst) || dst == prefix.addr() || dst.is_multicast() {
            return Err(Drop6::NotForUs);
        }
        write_echo_reply6(dst, src, echo, icmp.payload(), out)
    }
    // ANCHOR_END: echo6
}

/// RFC 4443 §4.2: the echo reply returns the identifier, sequence number
/// and data of the request, from the address the request was sent to.
fn write_echo_reply6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    echo: etherparse::IcmpEchoHeader,
    data: &[u8],
    out: &mut [u8],
) -> Result<usize, Drop6> {
    let icmp = Icmpv6Header::with_checksum(Icmpv6Type::EchoReply(echo), src.octets(), dst.octets(), data)
        .map_err(|_| Drop6::Truncated)?;
    let payload_len = icmp.header_len() + data.len();
    let ip = Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: u16::try_from(payload_len).map_err(|_| Drop6::Truncated)?,
        next_header: IpNumber::IPV6_ICMP,
        hop_limit: REPLY_HOP_LIMIT,
        source: src.octets(),
        destination: dst.octets(),
    };
    let total = Ipv6Header::LEN + payload_len;
    let out = out.get_mut(..total).ok_or(Drop6::NoRoom)?;
    let mut cursor: &mut [u8] = out;
    ip.write(&mut cursor).map_err(|_| Drop6::NoRoom)?;
    icmp.write(&mut cursor).map_err(|_| Drop6::NoRoom)?;
    cursor.copy_from_slice(data);
    Ok(total)
}

impl Handler for DualResponder {
    type Drop = Drop;

    fn handle(&mut self, packet: &[u8], out: &mut [u8]) -> Result<usize, Drop> {
        match packet.first().map(|b| b >> 4) {
            Some(6) => match self.echo_reply6(packet, out) {
                Ok(n) => {
                    self.counters6.replies += 1;
                    Ok(n)
                }
                Err(reason) => Err(self.count6(reason)),
            },
            _ => match self.v4.as_mut() {
                Some(v4) => Handler::handle(v4, packet, out).map_err(Drop::V4),
                // No IPv4 address: count it where IPv4 drops are counted.
                None => Err(Drop::V4(DropReason::NotForUs)),
            },
        }
    }
}

impl fmt::Display for DualResponder {
    /// `ipv4: replies 3, dropped 0; ipv6: replies 3, dropped 2 (mld 2)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v4) = self.counters_v4() {
            write!(f, "ipv4: {v4}; ")?;
        }
        let c = &self.counters6;
        write!(f, "ipv6: replies {}, dropped {}", c.replies, c.drops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const US: &str = "fd00::1";
    const PEER: &str = "fd00::2";

    fn responder() -> DualResponder {
        let v6 = Ipv6Net::new(US.parse().unwrap(), 64).unwrap();
        DualResponder::new(Some(Responder::new("10.0.0.1/24".parse().unwrap())), Some(v6))
    }

    fn icmpv6(src: &str, dst: &str, kind: Icmpv6Type, payload: &[u8]) -> Vec<u8> {
        let src: Ipv6Addr = src.parse().unwrap();
        let dst: Ipv6Addr = dst.parse().unwrap();
        let builder = PacketBuilder::ipv6(src.octets(), dst.octets(), 64).icmpv6(kind);
        let mut p = Vec::new();
        builder.write(&mut p, payload).unwrap();
        p
    }

    fn echo(seq: u16) -> Icmpv6Type {
        Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader { id: 7, seq })
    }

    #[test]
    fn answers_an_echo_request_for_another_address_of_the_prefix() {
        let mut r = responder();
        let req = icmpv6(US, PEER, echo(1), b"hello");
        let mut out = [0u8; 200];
        let n = r.handle(&req, &mut out).unwrap();
        let want = icmpv6(
            PEER,
            US,
            Icmpv6Type::EchoReply(etherparse::IcmpEchoHeader { id: 7, seq: 1 }),
            b"hello",
        );
        assert_eq!(&out[..n], &want[..]);
        assert_eq!(checksum::verify_transport(&out[..n]), Some(true));
        assert_eq!(r.counters_v6().replies, 1);
    }

    #[test]
    fn drops_with_reasons() {
        let cases = [
            (icmpv6(US, US, echo(1), b""), Drop6::NotForUs),
            (icmpv6(US, "fd00:0:0:1::2", echo(1), b""), Drop6::NotForUs),
            (
                icmpv6("fe80::1", "ff02::2", Icmpv6Type::RouterSolicitation, &[0; 4]),
                Drop6::NeighbourDiscovery,
            ),
            (
                icmpv6(
                    "::",
                    "ff02::16",
                    Icmpv6Type::Unknown {
                        type_u8: 143,
                        code_u8: 0,
                        bytes5to8: [0; 4],
                    },
                    &[],
                ),
                Drop6::Mld,
            ),
            (
                icmpv6(
                    US,
                    PEER,
                    Icmpv6Type::EchoReply(etherparse::IcmpEchoHeader { id: 1, seq: 1 }),
                    b"",
                ),
                Drop6::NotEchoRequest,
            ),
        ];
        for (packet, reason) in cases {
            let mut r = responder();
            assert_eq!(r.handle(&packet, &mut [0u8; 200]), Err(Drop::V6(reason)));
            assert_eq!(r.counters_v6().drops.get(reason), 1);
        }
        let mut bad = icmpv6(US, PEER, echo(1), b"data");
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            responder().handle(&bad, &mut [0u8; 200]),
            Err(Drop::V6(Drop6::BadChecksum))
        );
        assert_eq!(
            responder().handle(&bad[..30], &mut [0u8; 200]),
            Err(Drop::V6(Drop6::Truncated))
        );
        // A first fragment: a fragment header (next header 44) before ICMPv6.
        let whole = icmpv6(US, PEER, echo(1), b"data");
        let mut frag = whole[..40].to_vec();
        frag[6] = 44;
        frag.extend_from_slice(&[58, 0, 0, 1, 0, 0, 0, 9]); // more fragments, id 9
        frag.extend_from_slice(&whole[40..]);
        let len = (frag.len() - 40) as u16;
        frag[4..6].copy_from_slice(&len.to_be_bytes());
        assert_eq!(
            responder().handle(&frag, &mut [0u8; 200]),
            Err(Drop::V6(Drop6::Fragment))
        );
        let v6_only = DualResponder::new(None, None).handle(&icmpv6(US, PEER, echo(1), b""), &mut [0u8; 200]);
        assert_eq!(v6_only, Err(Drop::V6(Drop6::NoIpv6)));
    }

    #[test]
    fn ipv4_goes_to_step_01s_responder_and_counters_print() {
        let mut r = responder();
        let mut req = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut req, b"x")
            .unwrap();
        assert!(r.handle(&req, &mut [0u8; 200]).is_ok());
        let _ = r.handle(
            &icmpv6("fe80::1", "ff02::2", Icmpv6Type::RouterSolicitation, &[0; 4]),
            &mut [0u8; 200],
        );
        assert_eq!(
            r.to_string(),
            "ipv4: replies 1, dropped 0; ipv6: replies 0, dropped 1 (neighbour-discovery 1)"
        );
    }

    /// Every prefix and single-bit corruption of a request: a reply that
    /// verifies, or a counted drop; never a panic.
    #[test]
    fn corrupted_requests_never_panic() {
        let req = icmpv6(US, PEER, echo(9), b"0123456789");
        let mut r = responder();
        let mut out = [0u8; 200];
        let mut seen = 0u64;
        for n in 0..=req.len() {
            if let Ok(len) = r.handle(&req[..n], &mut out) {
                assert_eq!(checksum::verify_transport(&out[..len]), Some(true));
            }
            seen += 1;
        }
        for i in 0..req.len() {
            for bit in 0..8 {
                let mut p = req.clone();
                p[i] ^= 1 << bit;
                if let Ok(len) = r.handle(&p, &mut out) {
                    assert!(matches!(
                        checksum::verify_transport(&out[..len]),
                        Some(true) | None
                    ));
                }
                seen += 1;
            }
        }
        let v4 = r.counters_v4().unwrap();
        let handled = v4.replies + v4.drops.total() + r.counters_v6().replies + r.counters_v6().drops.total();
        assert_eq!(handled, seen);
    }
}
