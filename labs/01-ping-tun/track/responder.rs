//! Build track, step 01: write [`Responder::handle`] and the checks and reply behind it yourself.
//!
//! This file is `steps/step01-ping-tun/src/responder.rs` with those bodies taken out
//! (each says `todo!()`). `cargo run -p tunlab -- track 01` copies the
//! step's crate to `target/track/step01/`, puts this file in place of
//! `src/responder.rs` (with the original's unit tests appended), and runs the
//! crate's own tests, golden captures included; once they pass, it runs the
//! micro-benchmark `step01/responder`: yours must be within 3 times the
//! reference's time per packet.
//! Everything else here is as in the step: change it if you like, but
//! keep the public names and what the tests use. The book's "Build track"
//! page says more.
//!
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

    /// Handles one packet read from the TUN device. On [`Outcome::Reply`] the
    /// reply is in `out[..len]`, ready to be written back to the device.
    pub fn handle(&mut self, packet: &[u8], out: &mut [u8]) -> Outcome {
        // Ask `echo_reply` for a reply; count a reply in `self.counters.replies`,
        // or the reason of a drop in `self.counters.drops` (`increment`).
        todo!("answer one packet, and count it")
    }

    fn echo_reply(&self, packet: &[u8], out: &mut [u8]) -> Result<usize, DropReason> {
        // The checks, each with its DropReason: the version nibble (4, 6, or
        // neither); the header and total length (etherparse's `Ipv4Slice`); the
        // header checksum (`checksum::verify`, RFC 791); fragments; the
        // destination (`is_ours`); the protocol (ICMP); the ICMP checksum (RFC
        // 792); an echo request, type 8 code 0. Then `write_echo_reply`.
        todo!("check the request, in the order of DropReason, and write the reply")
    }

    /// A unicast address of our subnet other than the device's own.
    fn is_ours(&self, dst: Ipv4Addr) -> bool {
        // In the subnet, not the device's own address, and (for prefixes up to
        // /30) neither the network nor the broadcast address (RFC 3021 for /31).
        todo!("is `dst` an address of the subnet that we answer for?")
    }
}

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
    // An ICMP echo reply with the request's identifier, sequence number and
    // data (etherparse's `Icmpv4Header::with_checksum`), in a fresh IPv4
    // header: TTL REPLY_TTL, the request's DSCP, DF set, identification 0.
    // Not enough room in `out` is DropReason::NoRoom.
    todo!("write the echo reply into `out`")
}
