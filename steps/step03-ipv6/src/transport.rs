//! Where the transport header of an IP packet is: the one place that walks
//! the IPv4 header and IPv6's extension headers.
//!
//! Every part of the course that looks past the IP header needs the same
//! answer: the transport checksums ([`crate::checksum`]), MSS clamping
//! ([`crate::clamp`]), the path MTU errors ([`crate::pmtu`], which must not
//! answer an ICMP error or a later fragment) and step 05's NAT, which
//! rewrites ports. [`locate`] gives it once, from the bytes alone, checking
//! every length against the bytes that are there, so that no offset it
//! returns can be out of bounds.
//!
//! ```text
//! IPv4:  | header (IHL x 4 bytes) | [AH] | transport header | data |
//! IPv6:  | header (40 bytes) | [extension headers ...] | transport header | data |
//!                                                      ^ Located::transport
//! ```
//!
//! etherparse's `IpSlice` walks the same headers, and the tests check that
//! the two agree; this walk is our own because it reports what each caller
//! needs to decide for itself, instead of failing or skipping: whether the
//! packet is a fragment (the first or a later one), whether a routing
//! header is still to be processed, and whether an authentication header
//! covers it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use etherparse::IpNumber;

/// Whether a packet is a whole datagram or a fragment of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// A whole datagram. An IPv6 "atomic fragment" (a fragment header with
    /// offset 0 and no more fragments, RFC 6946) is one too.
    Whole,
    /// The first fragment (offset 0, more to come): it starts with the
    /// transport header, but not all of the message is here.
    First,
    /// A later fragment: only data, no transport header.
    Later,
}

/// Where the transport message of an IP packet is, and what stands in
/// front of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub ipv6: bool,
    pub source: IpAddr,
    /// The destination in the IP header. With [`Located::routing_pending`]
    /// it is not the final one.
    pub destination: IpAddr,
    /// The upper-layer protocol: what follows the last extension header
    /// (for a later fragment, the fragment header's next header).
    pub protocol: IpNumber,
    /// Bytes of the IP header itself, options included: IHL x 4 for IPv4,
    /// 40 for IPv6.
    pub header_len: usize,
    /// The IP packet's own length: the IPv4 total length, or 40 plus the
    /// IPv6 payload length. Bytes after it (padding) are not the packet's.
    pub len: usize,
    /// From the transport header to the end of the packet. For a whole
    /// packet, [`Located::transport`] checks the transport header's own
    /// lengths and gives its message.
    pub payload: Range<usize>,
    pub fragment: Fragment,
    /// An IPv6 routing header with segments left: the destination address
    /// is not the final one, which is inside that header (RFC 8200 §4.4).
    pub routing_pending: bool,
    /// An IPsec authentication header (RFC 4302) sits in front of the
    /// transport header: its integrity check covers the addresses and the
    /// transport header, so a rewrite breaks it.
    pub authenticated: bool,
}

/// Bytes that are not an IPv4 or IPv6 packet whose headers add up: too
/// short, a version other than 4 or 6, an IHL below 5, a length beyond
/// the bytes there, an extension header that runs past the packet, or a
/// transport header whose own length fields do not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an IP packet whose headers add up")
    }
}

impl std::error::Error for Malformed {}

/// IPv6 extension headers we walk past (RFC 8200 §4), and IPsec's
/// authentication header, which IPv4 may carry too.
mod next {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AUTH: u8 = 51;
    pub const DESTINATION_OPTIONS: u8 = 60;
}

// ANCHOR: locate
/// Finds the transport header of `packet`, a whole IPv4 or IPv6 packet as
/// read from a TUN device (or a fragment of one). Never panics; every range
/// in the answer lies inside `packet`.
pub fn locate(packet: &[u8]) -> Result<Located, Malformed> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => locate_in_ipv4(packet),
        Some(6) => locate_in_ipv6(packet),
        _ => Err(Malformed),
    }
}

/// RFC 791 §3.1: the header is IHL 32-bit words, at least 5, and the
/// packet is Total Length bytes, header included. A fragment's offset is in
/// 8-byte units, and MF says more follow.
fn locate_in_ipv4(packet: &[u8]) -> Result<Located, Malformed> {
    let header = packet.get(..20).ok_or(Malformed)?;
    let header_len = usize::from(header[0] & 0x0f) * 4;
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if header_len < 20 || len < header_len || len > packet.len() {
        return Err(Malformed);
    }
    let flags_offset = u16::from_be_bytes([header[6], header[7]]);
    let fragment = match (flags_offset & 0x1fff, flags_offset & 0x2000 != 0) {
        (0, false) => Fragment::Whole,
        (0, true) => Fragment::First,
        _ => Fragment::Later,
    };
    let mut located = Located {
        ipv6: false,
        source: IpAddr::V4(Ipv4Addr::new(header[12], header[13], header[14], header[15])),
        destination: IpAddr::V4(Ipv4Addr::new(header[16], header[17], header[18], header[19])),
        protocol: IpNumber(header[9]),
        header_len,
        len,
        payload: header_len..len,
        fragment,
        routing_pending: false,
        authenticated: false,
    };
    // A later fragment holds only data; an AH is in the first (RFC 4302 §3.3.3).
    if fragment != Fragment::Later && located.protocol.0 == next::AUTH {
        let (following, at) = skip_auth(packet, header_len, len)?;
        located.protocol = IpNumber(following);
        located.payload = at..len;
        located.authenticated = true;
    }
    Ok(located)
}

/// RFC 8200 §3 and §4: a 40-byte header, Payload Length bytes after it,
/// starting with the extension headers, each of which names the next.
fn locate_in_ipv6(packet: &[u8]) -> Result<Located, Malformed> {
    let header = packet.get(..40).ok_or(Malformed)?;
    let len = 40 + usize::from(u16::from_be_bytes([header[4], header[5]]));
    if len > packet.len() {
        return Err(Malformed);
    }
    let address = |at: usize| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&header[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    let mut located = Located {
        ipv6: true,
        source: address(8),
        destination: address(24),
        protocol: IpNumber(header[6]),
        header_len: 40,
        len,
        payload: 40..len,
        fragment: Fragment::Whole,
        routing_pending: false,
        authenticated: false,
    };
    let mut at = 40;
    loop {
        let this = located.protocol.0;
        let (following, end) = match this {
            next::AUTH => {
                located.authenticated = true;
                skip_auth(packet, at, len)?
            }
            // RFC 8200 §4.3 to §4.6: the next header, then the length in
            // 8-byte units not counting the first 8; the fragment header is
            // always 8 bytes. (Linux skips a hop-by-hop header anywhere, and
            // so do we; RFC 8200 §4.1 wants it first.)
            next::HOP_BY_HOP | next::ROUTING | next::DESTINATION_OPTIONS | next::FRAGMENT => {
                let ext = packet.get(at..len).ok_or(Malformed)?;
                let (&following, &units) = ext.first().zip(ext.get(1)).ok_or(Malformed)?;
                let ext_len = if this == next::FRAGMENT {
                    8
                } else {
                    8 + usize::from(units) * 8
                };
                let ext = ext.get(..ext_len).ok_or(Malformed)?;
                match this {
                    // Routing type, then Segments Left.
                    next::ROUTING if ext[3] != 0 => located.routing_pending = true,
                    // Fragment Offset (13 bits), 2 reserved bits, the M flag.
                    next::FRAGMENT => {
                        let field = u16::from_be_bytes([ext[2], ext[3]]);
                        located.fragment = match (field >> 3, field & 1 != 0) {
                            (0, false) => Fragment::Whole,
                            (0, true) => Fragment::First,
                            _ => Fragment::Later,
                        };
                    }
                    _ => {}
                }
                (following, at + ext_len)
            }
            _ => break,
        };
        located.protocol = IpNumber(following);
        at = end;
        located.payload = at..len;
        // After a later fragment's header come only data.
        if located.fragment == Fragment::Later {
            break;
        }
    }
    Ok(located)
}

/// RFC 4302 §2: an authentication header is the next header, then its
/// length in 32-bit words minus 2. Returns the next header and where it
/// starts.
fn skip_auth(packet: &[u8], at: usize, len: usize) -> Result<(u8, usize), Malformed> {
    let ext = packet.get(at..len).ok_or(Malformed)?;
    let (&following, &words) = ext.first().zip(ext.get(1)).ok_or(Malformed)?;
    let ext_len = (usize::from(words) + 2) * 4;
    if ext_len > ext.len() {
        return Err(Malformed);
    }
    Ok((following, at + ext_len))
}
// ANCHOR_END: locate

impl Located {
    /// The transport message of a whole packet, header and data, after the
    /// checks its header's own length fields need: a TCP data offset of at
    /// least 5 words within the segment (RFC 9293 §3.1), a UDP length of
    /// at least 8 within the payload (RFC 768; the message is as long as
    /// that length says, and a length of 0, a jumbogram's, is not one).
    /// Other protocols get the whole payload. A fragment has no whole
    /// message: `Err` too. `packet` is the packet this was located in.
    pub fn transport(&self, packet: &[u8]) -> Result<Range<usize>, Malformed> {
        if self.fragment != Fragment::Whole {
            return Err(Malformed);
        }
        let payload = packet.get(self.payload.clone()).ok_or(Malformed)?;
        let start = self.payload.start;
        let word = |at: usize| payload.get(at..at + 2).map(|w| u16::from_be_bytes([w[0], w[1]]));
        match self.protocol {
            IpNumber::TCP => {
                // The data offset is the high nibble of byte 12.
                let header_len = payload.get(12).map_or(0, |b| usize::from(b >> 4) * 4);
                if header_len < 20 || header_len > payload.len() {
                    return Err(Malformed);
                }
                Ok(self.payload.clone())
            }
            IpNumber::UDP => {
                let length = usize::from(word(4).ok_or(Malformed)?);
                if length < 8 || length > payload.len() {
                    return Err(Malformed);
                }
                Ok(start..start + length)
            }
            _ => Ok(self.payload.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use etherparse::{IpSlice, PacketBuilder};
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::checksum::captured::*;

    /// Captured packets from Linux: where the transport header is, and
    /// how long the message is.
    #[test]
    fn captured_packets() {
        let cases: [(&[u8], bool, u8, Range<usize>); 10] = [
            (&SYN_V4, false, 6, 20..60),
            (&SYN_ACK_V4, false, 6, 20..60),
            (&DATA_V4, false, 6, 20..58),
            (&SYN_V6, true, 6, 40..80),
            (&SYN_ACK_V6, true, 6, 40..80),
            (&DATA_V6, true, 6, 40..78),
            (&UDP_V4, false, 17, 20..33),
            (&UDP_V6, true, 17, 40..54),
            (&ECHO_V6, true, 58, 40..56),
            // MLD behind an 8-byte hop-by-hop options header.
            (&MLD_V6, true, 58, 48..96),
        ];
        for (i, (packet, ipv6, protocol, message)) in cases.into_iter().enumerate() {
            let found = locate(packet).unwrap();
            assert_eq!(found.ipv6, ipv6, "packet {i}");
            assert_eq!(found.protocol, IpNumber(protocol), "packet {i}");
            assert_eq!(found.fragment, Fragment::Whole, "packet {i}");
            assert_eq!(found.len, packet.len(), "packet {i}");
            assert!(!found.routing_pending && !found.authenticated, "packet {i}");
            assert_eq!(found.transport(packet), Ok(message), "packet {i}");
        }
        let syn = locate(&SYN_V4).unwrap();
        assert_eq!(syn.source, IpAddr::from([192, 0, 2, 1]));
        assert_eq!(syn.destination, IpAddr::from([192, 0, 2, 2]));
        assert_eq!(syn.header_len, 20);
    }

    /// Bytes after the packet's own length are not part of it.
    #[test]
    fn trailing_bytes_are_not_the_packets() {
        let mut padded = UDP_V4.to_vec();
        padded.extend_from_slice(&[0; 13]);
        let found = locate(&padded).unwrap();
        assert_eq!(found.len, UDP_V4.len());
        assert_eq!(found.transport(&padded), Ok(20..33));
    }

    /// A UDP/IPv6 packet with these extension headers (type, body without
    /// the next-header byte) in front of UDP_V6's datagram.
    fn with_extensions(exts: &[Ext]) -> Vec<u8> {
        let mut packet = UDP_V6[..40].to_vec();
        let mut chain: Vec<u8> = exts.iter().map(|e| e.0).collect();
        chain.push(17);
        packet[6] = chain[0];
        for (i, (_, body)) in exts.iter().enumerate() {
            packet.push(chain[i + 1]);
            packet.extend_from_slice(body);
        }
        packet.extend_from_slice(&UDP_V6[40..]);
        let payload = u16::try_from(packet.len() - 40).unwrap();
        packet[4..6].copy_from_slice(&payload.to_be_bytes());
        packet
    }

    /// An extension header: its type, and its body after the next-header byte.
    type Ext = (u8, &'static [u8]);

    const HOP_BY_HOP: (u8, &[u8]) = (0, &[0, 1, 4, 0, 0, 0, 0]); // PadN, 8 bytes in all
    const DEST_OPTS_16: (u8, &[u8]) = (60, &[1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    const ROUTING_DONE: (u8, &[u8]) = (43, &[0, 4, 0, 0, 0, 0, 0]); // segments left 0
    const ROUTING_PENDING: (u8, &[u8]) = (43, &[0, 4, 1, 0, 0, 0, 0]); // segments left 1
    const ATOMIC: (u8, &[u8]) = (44, &[0, 0, 0, 0, 0, 0, 7]); // offset 0, M clear
    const FIRST: (u8, &[u8]) = (44, &[0, 0, 1, 0, 0, 0, 7]); // offset 0, M set
    const LATER: (u8, &[u8]) = (44, &[0, 0, 0xb8, 0, 0, 0, 7]); // offset 23 (184 bytes)
    const AUTH_12: (u8, &[u8]) = (51, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // 3 words: (1 + 2) * 4

    #[test]
    fn ipv6_extension_headers() {
        let cases: [(&[Ext], usize, Fragment, bool, bool); 9] = [
            (&[HOP_BY_HOP], 48, Fragment::Whole, false, false),
            (&[HOP_BY_HOP, DEST_OPTS_16], 64, Fragment::Whole, false, false),
            (&[ROUTING_DONE], 48, Fragment::Whole, false, false),
            (&[ROUTING_PENDING], 48, Fragment::Whole, true, false),
            (&[ATOMIC], 48, Fragment::Whole, false, false),
            (&[HOP_BY_HOP, FIRST], 56, Fragment::First, false, false),
            (&[AUTH_12], 52, Fragment::Whole, false, true),
            (
                &[HOP_BY_HOP, ROUTING_PENDING, AUTH_12, DEST_OPTS_16],
                84,
                Fragment::Whole,
                true,
                true,
            ),
            // Hop-by-hop out of place: Linux walks past it, and so do we.
            (&[DEST_OPTS_16, HOP_BY_HOP], 64, Fragment::Whole, false, false),
        ];
        for (exts, start, fragment, routing_pending, authenticated) in cases {
            let packet = with_extensions(exts);
            let found = locate(&packet).unwrap();
            assert_eq!(found.protocol, IpNumber::UDP, "{exts:?}");
            assert_eq!(found.payload, start..packet.len(), "{exts:?}");
            assert_eq!(found.fragment, fragment, "{exts:?}");
            assert_eq!(found.routing_pending, routing_pending, "{exts:?}");
            assert_eq!(found.authenticated, authenticated, "{exts:?}");
            let transport = found.transport(&packet);
            if fragment == Fragment::Whole {
                assert_eq!(transport, Ok(start..packet.len()), "{exts:?}");
                assert_eq!(&packet[start..], &UDP_V6[40..]);
            } else {
                assert_eq!(transport, Err(Malformed), "{exts:?}");
            }
        }
    }

    /// A later fragment holds only data: the walk stops at its fragment
    /// header, and the protocol is the one the fragment header names.
    #[test]
    fn a_later_fragment_stops_the_walk() {
        let packet = with_extensions(&[LATER, DEST_OPTS_16]);
        let found = locate(&packet).unwrap();
        assert_eq!(found.fragment, Fragment::Later);
        assert_eq!(found.protocol, IpNumber(60));
        assert_eq!(found.payload, 48..packet.len());
    }

    #[test]
    fn ipv4_fragments_and_auth() {
        let edited = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut p = UDP_V4.to_vec();
            edit(&mut p);
            p
        };
        let first = edited(&|p| p[6] = 0x20);
        assert_eq!(locate(&first).unwrap().fragment, Fragment::First);
        let later = edited(&|p| p[7] = 0x10);
        assert_eq!(locate(&later).unwrap().fragment, Fragment::Later);
        // DF alone is a whole packet.
        assert_eq!(locate(&UDP_V4).unwrap().fragment, Fragment::Whole);

        // An authentication header of 12 bytes between IPv4 and UDP.
        let mut auth = UDP_V4[..20].to_vec();
        auth[9] = 51;
        auth.extend_from_slice(&[17, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        auth.extend_from_slice(&UDP_V4[20..]);
        let total = auth.len() as u16;
        auth[2..4].copy_from_slice(&total.to_be_bytes());
        let found = locate(&auth).unwrap();
        assert!(found.authenticated);
        assert_eq!(found.protocol, IpNumber::UDP);
        assert_eq!(found.transport(&auth), Ok(32..45));
    }

    #[test]
    fn malformed() {
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x45],
            SYN_V4[..59].to_vec(), // shorter than its total length
            SYN_V6[..79].to_vec(), // shorter than its payload length
            vec![0x00; 40],        // version 0
        ];
        let mut ihl4 = SYN_V4.to_vec();
        ihl4[0] = 0x44;
        cases.push(ihl4);
        let mut total_below_header = SYN_V4.to_vec();
        total_below_header[2..4].copy_from_slice(&19u16.to_be_bytes());
        cases.push(total_below_header);
        // An extension header longer than the payload.
        let mut long_ext = with_extensions(&[HOP_BY_HOP]);
        long_ext[41] = 3; // 32 bytes, in a payload of 22
        cases.push(long_ext);
        // An extension header cut after its next-header byte.
        let mut cut = UDP_V6[..40].to_vec();
        cut[6] = 0;
        cut.push(17);
        cut[4..6].copy_from_slice(&1u16.to_be_bytes());
        cases.push(cut);
        // An authentication header longer than what is left.
        let mut long_auth = with_extensions(&[AUTH_12]);
        long_auth[41] = 200;
        cases.push(long_auth);
        for packet in &cases {
            assert_eq!(locate(packet), Err(Malformed), "{packet:02x?}");
        }
    }

    #[test]
    fn transport_length_rules() {
        let mut offset_4 = SYN_V4;
        offset_4[32] = 0x40; // data offset 4 words
        let found = locate(&offset_4).unwrap();
        assert_eq!(found.transport(&offset_4), Err(Malformed));
        let mut offset_15 = SYN_V4;
        offset_15[32] = 0xf0; // 60 bytes of header in a 40-byte segment
        assert_eq!(locate(&offset_15).unwrap().transport(&offset_15), Err(Malformed));
        let mut udp = UDP_V4;
        udp[25] = 7; // UDP length 7
        assert_eq!(locate(&udp).unwrap().transport(&udp), Err(Malformed));
        udp[25] = 14; // one byte more than there is
        assert_eq!(locate(&udp).unwrap().transport(&udp), Err(Malformed));
        udp[25] = 0; // a jumbogram's length, in a packet that is none
        assert_eq!(locate(&udp).unwrap().transport(&udp), Err(Malformed));
        udp[25] = 9; // shorter than the payload: the message is 9 bytes
        assert_eq!(locate(&udp).unwrap().transport(&udp), Ok(20..29));
        // A TCP segment too short for its fixed header.
        let mut short = SYN_V4[..30].to_vec();
        short[2..4].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(locate(&short).unwrap().transport(&short), Err(Malformed));
    }

    /// Where etherparse finds the transport header of a whole packet, if
    /// it parses it.
    fn etherparse_start(packet: &[u8]) -> Option<(usize, u8)> {
        match IpSlice::from_slice(packet).ok()? {
            IpSlice::Ipv4(v4) => {
                let auth = v4.extensions().auth.map_or(0, |a| a.slice().len());
                Some((v4.header().slice().len() + auth, v4.payload().ip_number.0))
            }
            IpSlice::Ipv6(v6) => Some((40 + v6.extensions().slice().len(), v6.payload().ip_number.0)),
        }
    }

    #[test]
    fn agrees_with_etherparse_on_the_cases() {
        let exts: [&[Ext]; 5] = [
            &[HOP_BY_HOP],
            &[HOP_BY_HOP, DEST_OPTS_16],
            &[ROUTING_PENDING],
            &[AUTH_12],
            &[HOP_BY_HOP, ROUTING_DONE, AUTH_12, DEST_OPTS_16],
        ];
        for e in exts {
            let packet = with_extensions(e);
            let found = locate(&packet).unwrap();
            assert_eq!(
                etherparse_start(&packet),
                Some((found.payload.start, found.protocol.0)),
                "{e:?}"
            );
        }
    }

    /// Every packet recorded in the labs of steps 01 to 06, TUN devices
    /// and underlays: we find the transport header where etherparse does.
    #[test]
    fn agrees_with_etherparse_on_every_capture() {
        let mut compared = 0;
        for step in ["step01", "step02", "step03", "step04", "step05", "step06"] {
            for (file, packet) in lab_packets(step) {
                let theirs = etherparse_start(&packet);
                let ours = locate(&packet).ok().filter(|f| f.fragment == Fragment::Whole);
                if let (Some(theirs), Some(ours)) = (theirs, &ours) {
                    assert_eq!(theirs, (ours.payload.start, ours.protocol.0), "{file}");
                    compared += 1;
                }
                assert_eq!(theirs.is_some(), ours.is_some(), "{file}: {packet:02x?}");
            }
        }
        assert!(compared > 200, "only {compared} packets");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the bytes: no panic, and every range inside them.
        #[test]
        fn arbitrary_bytes(bytes in vec(any::<u8>(), 0..200)) {
            if let Ok(found) = locate(&bytes) {
                prop_assert!(found.payload.start <= found.payload.end);
                prop_assert!(found.payload.end <= bytes.len());
                prop_assert_eq!(found.payload.end, found.len);
                if let Ok(t) = found.transport(&bytes) {
                    prop_assert!(t.start >= found.payload.start && t.end <= found.payload.end);
                }
            }
        }

        /// IP headers of a real shape with random contents after them:
        /// when etherparse parses a whole packet, it finds the transport
        /// header where we do.
        #[test]
        fn agrees_with_etherparse(
            ipv6: bool,
            next in prop_oneof![Just(0u8), Just(6), Just(17), Just(43), Just(51), Just(58), Just(60)],
            rest in vec(any::<u8>(), 0..120),
        ) {
            let mut packet = Vec::new();
            let ip = if ipv6 {
                PacketBuilder::ipv6([1; 16], [2; 16], 64)
            } else {
                PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            };
            ip.udp(1, 2).write(&mut packet, &rest).unwrap();
            if ipv6 { packet[6] = next } else { packet[9] = next }
            let ours = locate(&packet).ok().filter(|f| f.fragment == Fragment::Whole);
            if let (Some(theirs), Some(ours)) = (etherparse_start(&packet), ours) {
                prop_assert_eq!(theirs, (ours.payload.start, ours.protocol.0));
            }
        }
    }
}
