//! The core of step 01: a sans-IO responder that turns ICMP echo requests
//! into echo replies.
//!
//! [`Responder::handle`] takes the bytes of one IP packet, exactly as read
//! from the TUN device, and writes a reply into a caller-owned buffer or says
//! why there is none. It does no I/O, reads no clock and never allocates, so
//! tests drive it with byte arrays, the golden tests replay recorded captures
//! through it, and a later step's fast I/O loop can call it in a tight loop.

use std::fmt;
use std::net::Ipv4Addr;

use etherparse::err::ipv4::SliceError;
use etherparse::{
    IcmpEchoHeader, Icmpv4Header, Icmpv4Slice, Icmpv4Type, IpDscp, IpNumber, Ipv4Header, Ipv4Slice,
};

use crate::checksum;
use crate::counts::{Counts, Reason};
use ipnet::Ipv4Net;

// ANCHOR: drop_reason
/// Why a packet got no reply. Each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than its headers or than the IPv4 total length says.
    Truncated,
    /// An IPv4 header that cannot be right (IHL below 5). A total length
    /// that does not cover the header, or more than the bytes we have, is
    /// [`DropReason::Truncated`].
    Malformed,
    /// IPv6: the kernel sends router solicitations into the device as soon
    /// as it is up. Step 03 answers IPv6; step 01 does not.
    Ipv6,
    /// The version nibble is neither 4 nor 6.
    NotIp,
    /// RFC 791: the header checksum does not verify.
    BadIpChecksum,
    /// One fragment of a larger datagram (MF set or offset non-zero). We do
    /// not reassemble; the kernel does that for its own traffic.
    Fragment,
    /// The destination is outside our subnet, or is its network or
    /// broadcast address.
    NotForUs,
    /// TCP, UDP or any other protocol but ICMP.
    NotIcmp,
    /// RFC 792: the ICMP checksum does not verify.
    BadIcmpChecksum,
    /// ICMP, but not an echo request (type 8, code 0).
    NotEchoRequest,
    /// The caller's output buffer is too small for the reply.
    NoRoom,
}

impl Reason for DropReason {
    /// Every reason, in the order the counters are printed.
    const ALL: &'static [DropReason] = &[
        DropReason::Truncated,
        DropReason::Malformed,
        DropReason::Ipv6,
        DropReason::NotIp,
        DropReason::BadIpChecksum,
        DropReason::Fragment,
        DropReason::NotForUs,
        DropReason::NotIcmp,
        DropReason::BadIcmpChecksum,
        DropReason::NotEchoRequest,
        DropReason::NoRoom,
    ];

    fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Malformed => "malformed",
            DropReason::Ipv6 => "ipv6",
            DropReason::NotIp => "not-ip",
            DropReason::BadIpChecksum => "bad-ip-checksum",
            DropReason::Fragment => "fragment",
            DropReason::NotForUs => "not-for-us",
            DropReason::NotIcmp => "not-icmp",
            DropReason::BadIcmpChecksum => "bad-icmp-checksum",
            DropReason::NotEchoRequest => "not-echo-request",
            DropReason::NoRoom => "no-room",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
// ANCHOR_END: drop_reason

/// What became of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A reply of this many bytes is at the start of the output buffer.
    Reply(usize),
    /// No reply, for this reason.
    Drop(DropReason),
}

/// How many packets were answered, and how many were dropped for each reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub replies: u64,
    pub drops: Counts<DropReason>,
}

impl fmt::Display for Counters {
    /// `replies 3, dropped 2 (ipv6 2)`, listing only reasons that happened.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replies {}, dropped {}", self.replies, self.drops)
    }
}

/// Answers pings for every address of a subnet except its own.
#[derive(Debug, Clone)]
pub struct Responder {
    subnet: Ipv4Net,
    counters: Counters,
}

/// The TTL of our replies: the Linux default (`net.ipv4.ip_default_ttl`).
pub const REPLY_TTL: u8 = 64;

impl Responder {
    /// A responder for the subnet of the TUN device's address. The kernel
    /// answers pings to the device's own address itself, so they never reach
    /// us; every other unicast address of the subnet is ours to answer.
    pub fn new(subnet: Ipv4Net) -> Self {
        Self {
            subnet,
            counters: Counters::default(),
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    // ANCHOR: handle
    /// Handles one packet read from the TUN device. On [`Outcome::Reply`] the
    /// reply is in `out[..len]`, ready to be written back to the device.
    pub fn handle(&mut self, packet: &[u8], out: &mut [u8]) -> Outcome {
        match self.echo_reply(packet, out) {
            Ok(len) => {
                self.counters.replies += 1;
                Outcome::Reply(len)
            }
            Err(reason) => {
                self.counters.drops.increment(reason);
                Outcome::Drop(reason)
            }
        }
    }
    // ANCHOR_END: handle

    // ANCHOR: echo_reply
    fn echo_reply(&self, packet: &[u8], out: &mut [u8]) -> Result<usize, DropReason> {
        // RFC 791: the version is the first nibble.
        match packet.first().map(|b| b >> 4) {
            None => return Err(DropReason::Truncated),
            Some(4) => {}
            Some(6) => return Err(DropReason::Ipv6),
            Some(_) => return Err(DropReason::NotIp),
        }
        // etherparse checks the IHL and total length against the bytes we
        // have, and gives us the header (with options) and the payload.
        let ip = Ipv4Slice::from_slice(packet).map_err(|e| match e {
            SliceError::Len(_) => DropReason::Truncated,
            SliceError::Header(_) | SliceError::Exts(_) => DropReason::Malformed,
        })?;
        let header = ip.header();
        // RFC 791: "The checksum field is the 16 bit one's complement of the
        // one's complement sum of all 16 bit words in the header." Options
        // are part of the header and so of the sum.
        if !checksum::verify(header.slice()) {
            return Err(DropReason::BadIpChecksum);
        }
        if ip.is_payload_fragmented() {
            return Err(DropReason::Fragment);
        }
        let (src, dst) = (header.source_addr(), header.destination_addr());
        if !self.is_ours(dst) {
            return Err(DropReason::NotForUs);
        }
        if ip.payload_ip_number() != IpNumber::ICMP {
            return Err(DropReason::NotIcmp);
        }
        let message = ip.payload().payload;
        let icmp = Icmpv4Slice::from_slice(message).map_err(|_| DropReason::Truncated)?;
        // RFC 792: "The checksum is the 16-bit ones's complement of the one's
        // complement sum of the ICMP message starting with the ICMP Type."
        if !checksum::verify(message) {
            return Err(DropReason::BadIcmpChecksum);
        }
        let Icmpv4Type::EchoRequest(echo) = icmp.icmp_type() else {
            return Err(DropReason::NotEchoRequest);
        };
        // RFC 792: the echo request is type 8 with code 0.
        if icmp.code_u8() != 0 {
            return Err(DropReason::NotEchoRequest);
        }
        write_echo_reply(dst, src, header.dcp(), echo, icmp.payload(), out)
    }
    // ANCHOR_END: echo_reply

    /// A unicast address of our subnet other than the device's own.
    fn is_ours(&self, dst: Ipv4Addr) -> bool {
        let s = &self.subnet;
        // A /31 (RFC 3021) or /32 has no network or broadcast address.
        let special = s.prefix_len() < 31 && (dst == s.network() || dst == s.broadcast());
        s.contains(&dst) && dst != s.addr() && !special
    }
}

// ANCHOR: write_reply
/// Writes an echo reply from `src` to `dst` into `out` and returns its length.
///
/// RFC 792, Echo Reply: "the source and destination addresses are simply
/// reversed, the type code changed to 0, and the checksum recomputed"; the
/// identifier, sequence number and data are returned unchanged (RFC 1122
/// §3.2.2.6: "Data received in an ICMP Echo Request MUST be entirely
/// included in the resulting Echo Reply").
///
/// The IPv4 header is fresh: no options, TTL 64, the request's DSCP, DF set
/// and identification 0 (a datagram that may not be fragmented needs no
/// unique identification: RFC 6864 §4.1). Both checksums are computed by
/// etherparse as it writes the headers.
fn write_echo_reply(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dscp: IpDscp,
    echo: IcmpEchoHeader,
    data: &[u8],
    out: &mut [u8],
) -> Result<usize, DropReason> {
    let icmp = Icmpv4Header::with_checksum(Icmpv4Type::EchoReply(echo), data);
    let icmp_len = icmp.header_len() + data.len();
    let mut ip = Ipv4Header::new(
        u16::try_from(icmp_len).map_err(|_| DropReason::Malformed)?,
        REPLY_TTL,
        IpNumber::ICMP,
        src.octets(),
        dst.octets(),
    )
    .map_err(|_| DropReason::Malformed)?;
    ip.dscp = dscp;
    ip.dont_fragment = true;
    ip.identification = 0;
    let total = ip.header_len() + icmp_len;
    let Some(out) = out.get_mut(..total) else {
        return Err(DropReason::NoRoom);
    };
    // Writing into a slice of exactly the right size cannot fail.
    let mut cursor: &mut [u8] = out;
    ip.write(&mut cursor).map_err(|_| DropReason::NoRoom)?;
    icmp.write(&mut cursor).map_err(|_| DropReason::NoRoom)?;
    cursor.copy_from_slice(data);
    Ok(total)
}
// ANCHOR_END: write_reply

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{checksum, verify};

    const US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn responder() -> Responder {
        Responder::new("10.0.0.1/24".parse().unwrap())
    }

    /// Builds an echo request byte by byte, independently of etherparse:
    /// `options` go after the fixed header (IHL grows), checksums are right.
    fn request(src: Ipv4Addr, dst: Ipv4Addr, options: &[u8], id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let hlen = 20 + options.len();
        let total = hlen + 8 + data.len();
        let mut p = vec![0u8; total];
        p[0] = 0x40 | (hlen / 4) as u8;
        p[1] = 0xb8; // DSCP 46 (EF), ECN 0
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0xbeefu16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 63;
        p[9] = 1;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        p[20..hlen].copy_from_slice(options);
        let c = checksum(&p[..hlen]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let icmp = &mut p[hlen..];
        icmp[0] = 8;
        icmp[4..6].copy_from_slice(&id.to_be_bytes());
        icmp[6..8].copy_from_slice(&seq.to_be_bytes());
        icmp[8..].copy_from_slice(data);
        let c = checksum(icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn answer(r: &mut Responder, p: &[u8]) -> Vec<u8> {
        let mut out = [0u8; 1600];
        match r.handle(p, &mut out) {
            Outcome::Reply(n) => out[..n].to_vec(),
            Outcome::Drop(why) => panic!("dropped: {why}"),
        }
    }

    fn dropped(p: &[u8]) -> DropReason {
        let mut r = responder();
        let mut out = [0u8; 1600];
        match r.handle(p, &mut out) {
            Outcome::Reply(_) => panic!("answered a packet that should be dropped"),
            Outcome::Drop(why) => {
                assert_eq!(r.counters().drops.get(why), 1);
                assert_eq!(r.counters().replies, 0);
                why
            }
        }
    }

    /// The reply, byte for byte, as RFC 792 and our header choices say.
    #[test]
    fn test_emit_reply() {
        let req = request(US, PEER, &[], 0x1234, 7, b"abcdefgh");
        let reply = answer(&mut responder(), &req);
        #[rustfmt::skip]
        let mut expected = vec![
            0x45, 0xb8, 0x00, 0x24, // v4, IHL 5, DSCP 46, total length 36
            0x00, 0x00, 0x40, 0x00, // identification 0, DF, offset 0
            0x40, 0x01, 0x00, 0x00, // TTL 64, ICMP, checksum (below)
            10, 0, 0, 2,            // source: the address that was pinged
            10, 0, 0, 1,            // destination: the pinger
            0x00, 0x00, 0x00, 0x00, // echo reply, code 0, checksum (below)
            0x12, 0x34, 0x00, 0x07, // identifier and sequence number echoed
            b'a', b'b', b'c', b'd', b'e', b'f', b'g', b'h',
        ];
        let c = checksum(&expected[..20]);
        expected[10..12].copy_from_slice(&c.to_be_bytes());
        let c = checksum(&expected[20..]);
        expected[22..24].copy_from_slice(&c.to_be_bytes());
        assert_eq!(reply, expected);
        assert!(verify(&reply[..20]) && verify(&reply[20..]));
    }

    #[test]
    fn every_payload_size_up_to_the_mtu() {
        let mut r = responder();
        // ping -s 0 through ping -s 1472 on a 1500-byte MTU, and odd sizes
        // whose checksum needs the zero pad byte.
        for size in (0..=1472).step_by(7).chain([1, 1471, 1472]) {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let req = request(PEER, Ipv4Addr::new(10, 0, 0, 9), &[], 1, size as u16, &data);
            let reply = answer(&mut r, &req);
            assert_eq!(reply.len(), req.len());
            assert!(verify(&reply[..20]), "ip checksum, size {size}");
            assert!(verify(&reply[20..]), "icmp checksum, size {size}");
            assert_eq!(&reply[28..], &data[..]);
        }
        assert_eq!(r.counters().drops.total(), 0);
    }

    /// A request with IP options (IHL > 5, here a record-route option) gets
    /// a reply with a plain 20-byte header and the same ICMP message.
    #[test]
    fn request_with_options() {
        let rr = [7, 7, 4, 0, 0, 0, 0, 0]; // record route, room for one address, padded
        let req = request(PEER, Ipv4Addr::new(10, 0, 0, 77), &rr, 9, 1, b"options");
        assert_eq!(req[0] & 0x0f, 7);
        let reply = answer(&mut responder(), &req);
        assert_eq!(reply[0], 0x45);
        assert_eq!(reply.len(), req.len() - rr.len());
        assert_eq!(&reply[12..16], &[10, 0, 0, 77]);
        assert_eq!(&reply[16..20], &PEER.octets());
        assert_eq!(&reply[24..], &req[32..]);
        assert!(verify(&reply[..20]) && verify(&reply[20..]));
    }

    #[test]
    fn trailing_bytes_after_total_length_are_ignored() {
        let mut req = request(US, PEER, &[], 1, 1, b"xyz");
        let want = answer(&mut responder(), &req);
        req.extend_from_slice(&[0xee; 5]);
        assert_eq!(answer(&mut responder(), &req), want);
    }

    #[test]
    fn drops_with_reasons() {
        let good = request(US, PEER, &[], 1, 1, b"data");
        assert_eq!(dropped(&[]), DropReason::Truncated);
        assert_eq!(dropped(&good[..19]), DropReason::Truncated);
        assert_eq!(dropped(&good[..good.len() - 1]), DropReason::Truncated);
        assert_eq!(dropped(&[0x60; 40]), DropReason::Ipv6);
        assert_eq!(dropped(&[0x00; 40]), DropReason::NotIp);

        let mut p = good.clone();
        p[0] = 0x44; // IHL 4
        assert_eq!(dropped(&p), DropReason::Malformed);

        let mut p = good.clone();
        p[8] ^= 1; // TTL changed, checksum not updated
        assert_eq!(dropped(&p), DropReason::BadIpChecksum);

        let mut p = good.clone();
        p[30] ^= 1; // payload changed, ICMP checksum not updated
        assert_eq!(dropped(&p), DropReason::BadIcmpChecksum);
    }

    fn with_header(mut p: Vec<u8>, f: impl FnOnce(&mut [u8])) -> Vec<u8> {
        f(&mut p[..20]);
        p[10] = 0;
        p[11] = 0;
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn fragments_are_dropped() {
        let good = request(US, PEER, &[], 1, 1, b"data");
        let first = with_header(good.clone(), |h| h[6] = 0x20); // MF
        assert_eq!(dropped(&first), DropReason::Fragment);
        let later = with_header(good, |h| h[7] = 0xb9); // offset 185 * 8
        assert_eq!(dropped(&later), DropReason::Fragment);
    }

    #[test]
    fn only_unicast_addresses_of_the_subnet_other_than_ours() {
        for dst in [
            US,                           // the kernel's own address
            Ipv4Addr::new(10, 0, 0, 0),   // network
            Ipv4Addr::new(10, 0, 0, 255), // broadcast
            Ipv4Addr::new(10, 0, 1, 2),   // another subnet
            Ipv4Addr::new(192, 0, 2, 1),  // anywhere else
        ] {
            assert_eq!(
                dropped(&request(PEER, dst, &[], 1, 1, b"")),
                DropReason::NotForUs,
                "{dst}"
            );
        }
        let mut r = Responder::new("10.0.0.0/31".parse().unwrap());
        answer(&mut r, &request(US, Ipv4Addr::new(10, 0, 0, 1), &[], 1, 1, b""));
    }

    #[test]
    fn other_protocols_and_icmp_types() {
        let udp = with_header(request(US, PEER, &[], 1, 1, b"data"), |h| h[9] = 17);
        assert_eq!(dropped(&udp), DropReason::NotIcmp);

        let mut reply = request(US, PEER, &[], 1, 1, b"data");
        reply[20] = 0; // an echo reply must not be answered
        reply[22] = 0;
        reply[23] = 0;
        let c = checksum(&reply[20..]);
        reply[22..24].copy_from_slice(&c.to_be_bytes());
        assert_eq!(dropped(&reply), DropReason::NotEchoRequest);

        let mut odd_code = request(US, PEER, &[], 1, 1, b"data");
        odd_code[21] = 1;
        odd_code[22] = 0;
        odd_code[23] = 0;
        let c = checksum(&odd_code[20..]);
        odd_code[22..24].copy_from_slice(&c.to_be_bytes());
        assert_eq!(dropped(&odd_code), DropReason::NotEchoRequest);

        // An ICMP message shorter than its 8-byte header.
        let short = with_header(request(US, PEER, &[], 1, 1, b"")[..24].to_vec(), |h| h[3] = 24);
        assert_eq!(dropped(&short), DropReason::Truncated);
    }

    #[test]
    fn too_small_output_buffer() {
        let req = request(US, PEER, &[], 1, 1, b"data");
        let mut r = responder();
        let mut out = [0u8; 31];
        assert_eq!(r.handle(&req, &mut out), Outcome::Drop(DropReason::NoRoom));
        let mut out = [0u8; 32];
        assert_eq!(r.handle(&req, &mut out), Outcome::Reply(32));
    }

    #[test]
    fn counters_add_up_and_print() {
        let mut r = responder();
        let mut out = [0u8; 1600];
        r.handle(&request(US, PEER, &[], 1, 1, b""), &mut out);
        r.handle(&request(US, PEER, &[], 1, 2, b""), &mut out);
        r.handle(&[0x60; 48], &mut out);
        r.handle(&[], &mut out);
        assert_eq!(r.counters().replies, 2);
        assert_eq!(r.counters().drops.total(), 2);
        assert_eq!(
            r.counters().to_string(),
            "replies 2, dropped 2 (truncated 1, ipv6 1)"
        );
        assert_eq!(Counters::default().to_string(), "replies 0, dropped 0");
    }

    /// Every prefix and every single-byte corruption of a valid request is
    /// either answered with a reply whose checksums verify, or dropped with
    /// a counted reason; nothing panics.
    #[test]
    fn corrupted_requests_never_panic() {
        let req = request(US, PEER, &[1, 1, 1, 0], 3, 4, b"0123456789");
        let mut r = responder();
        let mut out = [0u8; 1600];
        let mut seen = 0u64;
        let mut check = |r: &mut Responder, p: &[u8]| {
            if let Outcome::Reply(n) = r.handle(p, &mut out) {
                assert!(verify(&out[..20]) && verify(&out[20..n]));
            }
            seen += 1;
        };
        for n in 0..=req.len() {
            check(&mut r, &req[..n]);
        }
        for i in 0..req.len() {
            for bit in 0..8 {
                let mut p = req.clone();
                p[i] ^= 1 << bit;
                check(&mut r, &p);
            }
        }
        assert_eq!(r.counters().replies + r.counters().drops.total(), seen);
    }
}
