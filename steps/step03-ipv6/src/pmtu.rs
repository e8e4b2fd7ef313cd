//! Path MTU signals: telling the sender of a packet too big for the tunnel
//! to send smaller ones.
//!
//! Path MTU discovery (RFC 1191 for IPv4, RFC 8201 for IPv6): a router that
//! cannot forward a packet because the next link is too small drops it and
//! answers with an ICMP error that carries that link's MTU. The sender's
//! kernel remembers it as the path MTU to that destination, and TCP lowers
//! its segment size to match. The tunnel end is such a router, the tunnel
//! is the next link, and its MTU is the tunnel MTU (RFC 4459 §3.2,
//! "signalling the lower MTU to the sources"). We write the error back into
//! the TUN device; to the kernel it comes from a router on the path.
//!
//! Errors about errors could loop forever, and errors to many hosts at once
//! could flood a network, so both families list packets that must never be
//! answered with an ICMP error (RFC 1122 §3.2.2, RFC 4443 §2.4 (e)).
//! Rate-limiting the errors we send (RFC 1812 §4.3.2.8, RFC 4443 §2.4 (f))
//! is left to the caller, which knows the time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, IpDscp, IpNumber, Ipv4Header, Ipv6Header,
    icmpv4::DestUnreachableHeader,
};
use step01_ping_tun::responder::REPLY_TTL;

use crate::transport::{self, Fragment, Located};

/// RFC 791 §3.2: "Every internet module must be able to forward a datagram
/// of 68 octets without further fragmentation."
pub const IPV4_MIN_MTU: u16 = 68;

/// RFC 8200 §5: "IPv6 requires that every link in the Internet have an MTU
/// of 1280 octets or greater."
pub const IPV6_MIN_MTU: u16 = 1280;

/// RFC 1812 §4.3.2.3: an ICMP error SHOULD quote as much of the original
/// datagram as possible "without the length of the ICMP datagram exceeding
/// 576 bytes", the size every host can reassemble. RFC 792 only required
/// the IP header and the first 64 bits of data.
const IPV4_ERROR_MAX: usize = 576;

/// RFC 4443 §2.4 (c): an ICMPv6 error includes as much of the invoking
/// packet as fits "without making the error message packet exceed the
/// minimum IPv6 MTU".
const IPV6_ERROR_MAX: usize = IPV6_MIN_MTU as usize;

/// The fixed headers of our errors: IPv4 without options or IPv6, and the
/// 8-byte ICMP or ICMPv6 header.
const IPV4_HEADERS: usize = Ipv4Header::MIN_LEN + 8;
const IPV6_HEADERS: usize = Ipv6Header::LEN + 8;

const NO_ROOM: &str = "output buffer too small";

/// What to do with a packet read from the TUN device that is larger than the
/// tunnel can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooBig {
    /// Drop the packet, and write the ICMP or ICMPv6 error now in
    /// `out[..len]` back into the TUN device.
    Reply(usize),
    /// Send the packet anyway. The sender allowed fragmentation (IPv4 with
    /// DF clear), or the packet is within the MTU every link must carry (68
    /// or 1280 bytes) and the tunnel must carry it, fragmenting the outer
    /// datagram if need be; the kernel fragments a UDP datagram larger than
    /// the path MTU itself, unless the socket forbids it.
    Forward,
    /// Drop the packet silently, for this reason: the rules forbid an error,
    /// or the packet is malformed.
    Drop(&'static str),
}

// ANCHOR: too_big
/// Decides what to do with `packet`, read from the TUN device and larger
/// than the tunnel MTU `mtu`, and writes the ICMP error, if there is one,
/// into `out` with source address `from`, which must be of the packet's
/// family. The caller chooses it: step 03's `PathPolicy` passes the packet's
/// destination, beyond the tunnel, as a router on the path would (an IPv4
/// error from one of the host's own addresses would be dropped as a
/// martian), and its own tunnel address only for a destination that
/// cannot be a source. Rate-limiting is the caller's too. Never panics,
/// and does not allocate.
///
/// An `mtu` below the family's minimum is reported as that minimum, and a
/// packet within it is [`TooBig::Forward`]: a sender is never told to go
/// below the minimum (RFC 8201 §4 has it discard a Packet Too Big that
/// tries), and a tunnel that is smaller must carry such packets in pieces
/// (RFC 8200 §5: "link-specific fragmentation and reassembly must be
/// provided at a layer below IPv6").
pub fn too_big(packet: &[u8], mtu: u16, from: IpAddr, out: &mut [u8]) -> TooBig {
    let outcome = match (transport::locate(packet), from) {
        (Err(_), _) => Err("malformed"),
        (Ok(ip), IpAddr::V4(from)) if !ip.ipv6 => fragmentation_needed(packet, &ip, mtu, from, out),
        (Ok(ip), IpAddr::V6(from)) if ip.ipv6 => packet_too_big(packet, &ip, mtu, from, out),
        (Ok(_), _) => Err("no source address of the packet's family"),
    };
    outcome.unwrap_or_else(TooBig::Drop)
}
// ANCHOR_END: too_big

// ANCHOR: fragmentation_needed
/// IPv4: ICMP Destination Unreachable, code 4, "fragmentation needed and DF
/// set" (RFC 792), with the MTU of the next hop in the low 16 bits of the
/// second word (RFC 1191 §4).
fn fragmentation_needed(
    packet: &[u8],
    ip: &Located,
    mtu: u16,
    from: Ipv4Addr,
    out: &mut [u8],
) -> Result<TooBig, &'static str> {
    // RFC 791 §2.3: only a datagram marked "don't fragment" (bit 1 of the
    // flags, byte 6) must not be fragmented; any other may be, by any
    // router on its way.
    if packet.get(6).is_none_or(|flags| flags & 0x40 == 0) {
        return Ok(TooBig::Forward);
    }
    let mtu = mtu.max(IPV4_MIN_MTU);
    let datagram = packet.get(..ip.len).ok_or("malformed")?;
    if datagram.len() <= usize::from(mtu) {
        return Ok(TooBig::Forward);
    }
    // RFC 1122 §3.2.2: no ICMP error about an ICMP error, a datagram to a
    // broadcast or multicast address, a fragment other than the first, or
    // a datagram whose source is not a single host.
    if ip.fragment == Fragment::Later {
        return Err("not the first fragment");
    }
    let payload = packet.get(ip.payload.clone()).unwrap_or_default();
    if ip.protocol == IpNumber::ICMP && !is_icmpv4_query(payload) {
        return Err("an ICMP error");
    }
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (ip.source, ip.destination) else {
        return Err("malformed");
    };
    if dst.is_broadcast() || dst.is_multicast() {
        return Err("to a broadcast or multicast address");
    }
    if !is_one_host(src) {
        return Err("from an address that is not one host");
    }
    if !is_one_host(from) {
        return Err("our own address is not one host");
    }

    let quote = datagram.get(..IPV4_ERROR_MAX - IPV4_HEADERS).unwrap_or(datagram);
    let icmp_type =
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu });
    let icmp = Icmpv4Header::with_checksum(icmp_type, quote);
    let icmp_len = u16::try_from(icmp.header_len() + quote.len()).map_err(|_| "malformed")?;
    let mut reply = Ipv4Header::new(icmp_len, REPLY_TTL, IpNumber::ICMP, from.octets(), src.octets())
        .map_err(|_| "malformed")?;
    // RFC 1812 §4.3.2.5: ICMP errors other than source quench SHOULD have
    // precedence 6, "internetwork control" (class selector 6), as Linux's do.
    reply.dscp = IpDscp::CS6;
    // DF and identification 0, like step 01's replies (RFC 6864 §4.1).
    reply.dont_fragment = true;
    reply.identification = 0;
    reply.header_checksum = reply.calc_header_checksum();
    emit(out, &[&reply.to_bytes(), &icmp.to_bytes(), quote])
}
// ANCHOR_END: fragmentation_needed

/// ICMP messages that are queries or replies, not errors (RFC 792, RFC
/// 1256, RFC 950): echo reply and request, router advertisement and
/// solicitation, timestamp, information and address mask requests and
/// replies. Like Linux, we take any other type for an error, and a message
/// too short to have a type too.
fn is_icmpv4_query(message: &[u8]) -> bool {
    matches!(message.first(), Some(0 | 8 | 9 | 10 | 13..=18))
}

/// RFC 1122 §3.2.2: an address that "define[s] a single host", not "a zero
/// address, a loopback address, a broadcast address, a multicast address,
/// or a Class E address". 0.0.0.0/8 are the zero addresses ("this host on
/// this network"), 240.0.0.0/4 is class E and includes the broadcast
/// address 255.255.255.255.
fn is_one_host(addr: Ipv4Addr) -> bool {
    let [first, ..] = addr.octets();
    first != 0 && !addr.is_loopback() && !addr.is_multicast() && first < 240
}

// ANCHOR: packet_too_big
/// IPv6: ICMPv6 Packet Too Big, type 2, code 0, with the MTU of the next
/// hop (RFC 4443 §3.2). Routers never fragment IPv6 packets (RFC 8200 §5),
/// so every packet too big gets one.
fn packet_too_big(
    packet: &[u8],
    ip: &Located,
    mtu: u16,
    from: Ipv6Addr,
    out: &mut [u8],
) -> Result<TooBig, &'static str> {
    let mtu = mtu.max(IPV6_MIN_MTU);
    let datagram = packet.get(..ip.len).ok_or("malformed")?;
    if datagram.len() <= usize::from(mtu) {
        return Ok(TooBig::Forward);
    }
    // RFC 4443 §2.4 (e): no ICMPv6 error about an ICMPv6 error or redirect,
    // or a packet from an address that is not one node. Packets to
    // multicast addresses get no error either, with two exceptions (e.3):
    // Packet Too Big, so that path MTU discovery works for multicast too,
    // and Parameter Problem code 2, which we never send.
    if ip.protocol == IpNumber::IPV6_ICMP {
        // A later fragment of ICMPv6 does not show the message type.
        if ip.fragment == Fragment::Later {
            return Err("a later fragment of an ICMPv6 message");
        }
        if !is_icmpv6_info(packet.get(ip.payload.clone()).unwrap_or_default()) {
            return Err("an ICMPv6 error or redirect");
        }
    }
    let IpAddr::V6(src) = ip.source else {
        return Err("malformed");
    };
    if src.is_unspecified() || src.is_multicast() {
        return Err("from an address that is not one node");
    }
    if from.is_unspecified() || from.is_multicast() {
        return Err("our own address is not one node");
    }

    let quote = datagram.get(..IPV6_ERROR_MAX - IPV6_HEADERS).unwrap_or(datagram);
    let (source, destination) = (from.octets(), src.octets());
    let icmp_type = Icmpv6Type::PacketTooBig { mtu: u32::from(mtu) };
    // RFC 4443 §2.3: the checksum covers the IPv6 pseudo-header too.
    let icmp = Icmpv6Header::with_checksum(icmp_type, source, destination, quote).map_err(|_| "malformed")?;
    let icmp_len = icmp.header_len() + quote.len();
    let reply = Ipv6Header {
        payload_length: u16::try_from(icmp_len).map_err(|_| "malformed")?,
        next_header: IpNumber::IPV6_ICMP,
        // The hop limit of any packet we originate. Not 255: that is for
        // Neighbor Discovery, whose receivers check it (RFC 4861 §7.1.1).
        hop_limit: REPLY_TTL,
        source,
        destination,
        ..Ipv6Header::default()
    };

    emit(out, &[&reply.to_bytes(), &icmp.to_bytes(), quote])
}
// ANCHOR_END: packet_too_big

/// Writes the parts of a reply one after the other at the start of `out`.
fn emit(out: &mut [u8], parts: &[&[u8]]) -> Result<TooBig, &'static str> {
    let mut len = 0;
    for part in parts {
        let room = out.get_mut(len..len + part.len()).ok_or(NO_ROOM)?;
        room.copy_from_slice(part);
        len += part.len();
    }
    Ok(TooBig::Reply(len))
}

/// RFC 4443 §2.1: informational messages have types 128 to 255, errors 0
/// to 127. A redirect (137, RFC 4861 §4.5) is informational but still gets
/// no error (RFC 4443 §2.4 (e.2)).
fn is_icmpv6_info(message: &[u8]) -> bool {
    matches!(message.first(), Some(&t) if t >= 128 && t != 137)
}

#[cfg(test)]
mod tests {
    use etherparse::{IpHeaders, Ipv6Extensions, Ipv6FragmentHeader, PacketBuilder};
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::checksum::{checksum, verify, verify_transport};

    const US4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const HOST4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const FAR4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const US6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    const HOST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    const FAR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);

    /// A TCP segment of `len` bytes in all, from HOST to FAR.
    fn tcp(ipv6: bool, len: usize) -> Vec<u8> {
        let ip = if ipv6 {
            PacketBuilder::ipv6(HOST6.octets(), FAR6.octets(), 64)
        } else {
            PacketBuilder::ipv4(HOST4.octets(), FAR4.octets(), 64)
        };
        let headers = if ipv6 { 60 } else { 40 };
        let data: Vec<u8> = (0..len - headers).map(|i| i as u8).collect();
        let mut out = Vec::new();
        ip.tcp(40000, 443, 1, 1000).write(&mut out, &data).unwrap();
        assert_eq!(out.len(), len);
        out
    }

    /// A 1500-byte IPv4 TCP segment (etherparse sets DF) with its header
    /// edited and the header checksum fixed.
    fn edited_v4(edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut packet = tcp(false, 1500);
        edit(&mut packet[..20]);
        packet[10..12].fill(0);
        let c = checksum(&packet[..20]);
        packet[10..12].copy_from_slice(&c.to_be_bytes());
        packet
    }

    fn answer(packet: &[u8], mtu: u16, from: IpAddr) -> Vec<u8> {
        let mut out = [0u8; 1500];
        match too_big(packet, mtu, from, &mut out) {
            TooBig::Reply(n) => out[..n].to_vec(),
            other => panic!("no reply: {other:?}"),
        }
    }

    fn outcome(packet: &[u8], mtu: u16, from: IpAddr) -> TooBig {
        too_big(packet, mtu, from, &mut [0u8; 1500])
    }

    /// The IPv4 error byte for byte: a 1500-byte TCP segment with DF, into
    /// a tunnel of MTU 1420.
    #[test]
    fn test_emit_fragmentation_needed() {
        let packet = tcp(false, 1500);
        let reply = answer(&packet, 1420, US4.into());
        #[rustfmt::skip]
        let mut expected = vec![
            0x45, 0xc0, 0x02, 0x40, // v4, IHL 5, DSCP CS6, total length 576
            0x00, 0x00, 0x40, 0x00, // identification 0, DF, offset 0
            0x40, 0x01, 0x23, 0xfb, // TTL 64, ICMP, checksum: !(sum of the other words 0xdc04)
            10, 0, 0, 1,            // source: this tunnel end
            10, 0, 0, 2,            // destination: the packet's source
            0x03, 0x04, 0x00, 0x00, // destination unreachable, fragmentation needed, checksum (below)
            0x00, 0x00, 0x05, 0x8c, // unused, next-hop MTU 1420
        ];
        expected.extend_from_slice(&packet[..548]);
        let c = checksum(&expected[20..]);
        expected[22..24].copy_from_slice(&c.to_be_bytes());
        assert_eq!(reply, expected);
        assert!(verify(&reply[..20]));
        assert_eq!(verify_transport(&reply), Some(true));
    }

    /// The IPv6 error byte for byte: a 1500-byte TCP segment into a tunnel
    /// of MTU 1420, quoted to 1232 bytes so that the error is 1280.
    #[test]
    fn test_emit_packet_too_big() {
        let packet = tcp(true, 1500);
        let reply = answer(&packet, 1420, US6.into());
        #[rustfmt::skip]
        let mut expected = vec![
            0x60, 0x00, 0x00, 0x00, // v6, traffic class 0, flow label 0
            0x04, 0xd8, 0x3a, 0x40, // payload length 1240, ICMPv6, hop limit 64
        ];
        expected.extend_from_slice(&US6.octets());
        expected.extend_from_slice(&HOST6.octets());
        #[rustfmt::skip]
        expected.extend_from_slice(&[
            0x02, 0x00, 0x00, 0x00, // packet too big, code 0, checksum (below)
            0x00, 0x00, 0x05, 0x8c, // MTU 1420
        ]);
        expected.extend_from_slice(&packet[..1232]);
        assert_eq!(expected.len(), 1280);
        let c = transport_sum(&expected);
        expected[42..44].copy_from_slice(&c.to_be_bytes());
        assert_eq!(reply, expected);
        assert_eq!(verify_transport(&reply), Some(true));
    }

    /// The ICMPv6 checksum computed independently of the code under test:
    /// pseudo-header and message, field zeroed.
    fn transport_sum(packet: &[u8]) -> u16 {
        use crate::checksum::{fold, pseudo_header_v6, sum};
        let mut message = packet[40..].to_vec();
        message[2..4].fill(0);
        let pseudo = pseudo_header_v6(US6, HOST6, 58, message.len() as u32);
        fold(sum(pseudo, &message))
    }

    #[test]
    fn small_packets_are_quoted_whole() {
        let packet = tcp(false, 548);
        let reply = answer(&packet, 500, US4.into());
        assert_eq!(reply.len(), 576);
        assert_eq!(&reply[28..], &packet[..]);
        let packet = tcp(true, 1282);
        let reply = answer(&packet, 1280, US6.into());
        assert_eq!(reply.len(), 1280);
        assert_eq!(&reply[48..], &packet[..1232]);
    }

    /// Bytes after the IP packet's own length are not part of it.
    #[test]
    fn trailing_bytes_are_not_quoted() {
        let mut packet = tcp(false, 500);
        packet.extend_from_slice(&[0xee; 40]);
        let reply = answer(&packet, 400, US4.into());
        assert_eq!(&reply[28..], &packet[..500]);
    }

    #[test]
    fn mtu_below_the_minimum_is_reported_as_the_minimum() {
        let reply = answer(&tcp(false, 1500), 40, US4.into());
        assert_eq!(&reply[24..28], &[0, 0, 0, 68]);
        let reply = answer(&tcp(true, 1500), 1000, US6.into());
        assert_eq!(&reply[44..48], &[0, 0, 0x05, 0x00]);
        // Within the minimum, the tunnel must carry it anyway.
        assert_eq!(outcome(&tcp(true, 1200), 1000, US6.into()), TooBig::Forward);
        assert_eq!(outcome(&tcp(false, 60), 40, US4.into()), TooBig::Forward);
    }

    #[test]
    fn df_clear_or_small_enough_is_forwarded() {
        assert_eq!(
            outcome(&edited_v4(|h| h[6] &= !0x40), 1420, US4.into()),
            TooBig::Forward
        );
        assert_eq!(outcome(&tcp(false, 1420), 1420, US4.into()), TooBig::Forward);
        assert_eq!(outcome(&tcp(true, 1420), 1420, US6.into()), TooBig::Forward);
    }

    /// An ICMP or ICMPv6 message of `len` bytes in all, of this type.
    fn icmp(ipv6: bool, icmp_type: u8, len: usize) -> Vec<u8> {
        let mut packet = if ipv6 {
            let mut out = Vec::new();
            PacketBuilder::ipv6(HOST6.octets(), FAR6.octets(), 64)
                .icmpv6_raw(icmp_type, 0, [0; 4])
                .write(&mut out, &vec![0; len - 48])
                .unwrap();
            out
        } else {
            let mut out = Vec::new();
            PacketBuilder::ipv4(HOST4.octets(), FAR4.octets(), 64)
                .icmpv4_raw(icmp_type, 0, [0; 4])
                .write(&mut out, &vec![0; len - 28])
                .unwrap();
            out
        };
        packet.truncate(len);
        packet
    }

    #[test]
    fn no_error_about_an_icmp_error() {
        for t in [3, 4, 5, 11, 12, 42] {
            assert_eq!(
                outcome(&icmp(false, t, 1500), 1420, US4.into()),
                TooBig::Drop("an ICMP error")
            );
        }
        for t in [0, 8, 13] {
            assert!(matches!(
                outcome(&icmp(false, t, 1500), 1420, US4.into()),
                TooBig::Reply(_)
            ));
        }
        for t in [1, 2, 3, 4, 127, 137] {
            let expected = TooBig::Drop("an ICMPv6 error or redirect");
            assert_eq!(outcome(&icmp(true, t, 1500), 1420, US6.into()), expected);
        }
        for t in [128, 129, 135] {
            assert!(matches!(
                outcome(&icmp(true, t, 1500), 1420, US6.into()),
                TooBig::Reply(_)
            ));
        }
    }

    #[test]
    fn no_error_to_or_from_groups() {
        let (to_group, not_one) = (
            "to a broadcast or multicast address",
            "from an address that is not one host",
        );
        let cases = [
            (HOST4, Ipv4Addr::new(224, 0, 0, 251), to_group),
            (HOST4, Ipv4Addr::BROADCAST, to_group),
            (Ipv4Addr::UNSPECIFIED, FAR4, not_one),
            (Ipv4Addr::new(0, 1, 2, 3), FAR4, not_one),
            (Ipv4Addr::LOCALHOST, FAR4, not_one),
            (Ipv4Addr::new(239, 1, 1, 1), FAR4, not_one),
            (Ipv4Addr::new(240, 0, 0, 1), FAR4, not_one),
        ];
        for (src, dst, why) in cases {
            let packet = edited_v4(|h| {
                h[12..16].copy_from_slice(&src.octets());
                h[16..20].copy_from_slice(&dst.octets());
            });
            assert_eq!(
                outcome(&packet, 1420, US4.into()),
                TooBig::Drop(why),
                "{src} {dst}"
            );
        }
        let bad_us = IpAddr::V4(Ipv4Addr::BROADCAST);
        assert_eq!(
            outcome(&tcp(false, 1500), 1420, bad_us),
            TooBig::Drop("our own address is not one host")
        );

        let mut multicast_src = tcp(true, 1500);
        multicast_src[8] = 0xff;
        let why = "from an address that is not one node";
        assert_eq!(outcome(&multicast_src, 1420, US6.into()), TooBig::Drop(why));
        let mut unspecified_src = tcp(true, 1500);
        unspecified_src[8..24].fill(0);
        assert_eq!(outcome(&unspecified_src, 1420, US6.into()), TooBig::Drop(why));
        // IPv6: Packet Too Big does go to a sender to a multicast group.
        let mut to_group = tcp(true, 1500);
        to_group[24] = 0xff;
        assert!(matches!(outcome(&to_group, 1420, US6.into()), TooBig::Reply(_)));
    }

    #[test]
    fn fragments() {
        // IPv4, DF with a non-zero offset: not the first fragment.
        let later = edited_v4(|h| h[7] = 0xb9);
        assert_eq!(
            outcome(&later, 1420, US4.into()),
            TooBig::Drop("not the first fragment")
        );
        // IPv6: a first fragment of ICMPv6 shows its type; a later one does not.
        for (offset, expected) in [(0, true), (100, false)] {
            let packet = icmpv6_fragment(offset);
            let got = outcome(&packet, 1420, US6.into());
            assert_eq!(matches!(got, TooBig::Reply(_)), expected, "{got:?}");
        }
    }

    /// A 1500-byte fragment of an ICMPv6 echo request.
    fn icmpv6_fragment(offset: u16) -> Vec<u8> {
        let header = Ipv6Header {
            next_header: IpNumber::IPV6_FRAGMENTATION_HEADER,
            hop_limit: 64,
            source: HOST6.octets(),
            destination: FAR6.octets(),
            ..Ipv6Header::default()
        };
        let fragment = Ipv6FragmentHeader::new(IpNumber::IPV6_ICMP, offset.try_into().unwrap(), true, 7);
        let exts = Ipv6Extensions {
            fragment: Some(fragment),
            ..Ipv6Extensions::default()
        };
        let mut out = Vec::new();
        PacketBuilder::ip(IpHeaders::Ipv6(header, exts))
            .icmpv6_echo_request(1, 1)
            .write(&mut out, &[0; 1500 - 56])
            .unwrap();
        out
    }

    #[test]
    fn wrong_family_malformed_or_no_room() {
        assert_eq!(
            outcome(&tcp(false, 1500), 1420, US6.into()),
            TooBig::Drop("no source address of the packet's family")
        );
        assert_eq!(
            outcome(&tcp(true, 1500), 1420, US4.into()),
            TooBig::Drop("no source address of the packet's family")
        );
        assert_eq!(
            outcome(&tcp(false, 1500)[..1499], 1420, US4.into()),
            TooBig::Drop("malformed")
        );
        assert_eq!(outcome(&[], 1420, US4.into()), TooBig::Drop("malformed"));
        let mut small = [0u8; 575];
        assert_eq!(
            too_big(&tcp(false, 1500), 1420, US4.into(), &mut small),
            TooBig::Drop(NO_ROOM)
        );
        let mut small = [0u8; 1279];
        assert_eq!(
            too_big(&tcp(true, 1500), 1420, US6.into(), &mut small),
            TooBig::Drop(NO_ROOM)
        );
    }

    /// Every prefix of a valid packet, of both families: no panic, and any
    /// reply verifies.
    #[test]
    fn every_prefix() {
        for (packet, from) in [
            (tcp(false, 700), IpAddr::from(US4)),
            (tcp(true, 1400), IpAddr::from(US6)),
        ] {
            for n in 0..=packet.len() {
                let mut out = [0u8; 1500];
                if let TooBig::Reply(len) = too_big(&packet[..n], 500, from, &mut out) {
                    assert_eq!(verify_transport(&out[..len]), Some(true));
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..1600), mtu: u16, v6: bool) {
            let from = if v6 { IpAddr::from(US6) } else { IpAddr::from(US4) };
            let mut out = [0u8; 1500];
            if let TooBig::Reply(len) = too_big(&bytes, mtu, from, &mut out) {
                prop_assert_eq!(verify_transport(&out[..len]), Some(true));
            }
        }

        /// Any size and MTU: the error is at most 576 or 1280 bytes, quotes
        /// the start of the packet, reports at least the minimum MTU, and
        /// verifies.
        #[test]
        fn any_size(ipv6: bool, len in 80usize..1600, mtu: u16) {
            let packet = tcp(ipv6, len);
            let from = if ipv6 { IpAddr::from(US6) } else { IpAddr::from(US4) };
            let (min, max, headers) = if ipv6 { (1280, 1280, 48) } else { (68, 576, 28) };
            let mut out = [0u8; 1500];
            match too_big(&packet, mtu, from, &mut out) {
                TooBig::Reply(n) => {
                    prop_assert!(len > usize::from(mtu.max(min)));
                    prop_assert_eq!(n, (headers + len).min(max));
                    prop_assert_eq!(&out[headers..n], &packet[..n - headers]);
                    let reported = u16::from_be_bytes([out[headers - 2], out[headers - 1]]);
                    prop_assert_eq!(reported, mtu.max(min));
                    prop_assert_eq!(verify_transport(&out[..n]), Some(true));
                }
                other => {
                    prop_assert_eq!(other, TooBig::Forward);
                    prop_assert!(len <= usize::from(mtu.max(min)));
                }
            }
        }
    }
}
