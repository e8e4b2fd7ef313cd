//! Build track, step 05: write the NAT rewrite ([`snat`], [`dnat`] and [`forward`]) yourself.
//!
//! This file is `steps/step05-full-tunnel/src/nat.rs` with those bodies taken out
//! (each says `todo!()`). `cargo run -p tunlab -- track 05` copies the
//! step's crate to `target/track/step05/`, puts this file in place of
//! `src/nat.rs` (with the original's unit tests appended), and runs the
//! crate's own tests, golden captures included; once they pass, it runs the
//! micro-benchmark `step05/nat`: yours must be within 3 times the
//! reference's time per packet.
//! Everything else here is as in the step: change it if you like, but
//! keep the public names and what the tests use. The book's "Build track"
//! page says more.
//!
//! NAT: what the server's kernel does to the packets it forwards between the
//! tunnel and the internet, modelled byte for byte.
//!
//! The clients' tunnel addresses (10.0.0.0/24, fd00::/64) mean nothing on
//! the internet: no host there has a route back to them. So the server
//! forwards their packets with nftables' `masquerade`, a form of source NAT
//! (RFC 3022 §2.2, "NAPT"; RFC 4787 for how it should behave): on the way
//! out, the source address becomes the server's own (198.51.100.1,
//! 2001:db8:100::1), and the source port too if another connection already
//! uses it. Linux's connection tracking remembers the pair, and rewrites the
//! destination of each reply back to the client (destination NAT). Linux
//! does this for IPv6 just the same (NAT66). RFC 4864 argues that IPv6
//! networks do not need NAT, but a tunnel that hands out the private
//! fd00::/64 does.
//!
//! This module does no tracking: it is the rewrite itself, given the new
//! address and port. [`snat`] rewrites the source of an outgoing packet,
//! [`dnat`] the destination of a reply, and [`forward`] decrements the TTL
//! or hop limit as any router does. They work in place, on the packet's own
//! bytes, through pnet's mutable packet views; the checksums that cover the
//! changed bytes are updated with RFC 1624's incremental update (step 03's
//! [`update`]), exactly as the kernel does, so that the result is
//! byte for byte what the kernel sends (`tests/nat_golden.rs` checks that
//! against a recording). Which bytes change:
//!
//! - the address, in the IPv4 or IPv6 header;
//! - the IPv4 header checksum, which covers the address (IPv6 has none);
//! - the port, in the TCP or UDP header; for ICMP and ICMPv6 echo messages,
//!   which have no ports, the identifier plays the part of one (RFC 3022
//!   §2.2 translates ICMP query identifiers as it does ports; RFC 5508
//!   §3.1), so conntrack rewrites that;
//! - the TCP, UDP or ICMPv6 checksum, which covers the port and, through
//!   the pseudo-header, both addresses; the ICMP checksum (IPv4) covers the
//!   identifier but has no pseudo-header (RFC 792).
//!
//! Nothing else: the IPv4 identification, the flags, the TTL (that is
//! [`forward`]'s), the TCP sequence numbers and the payload are untouched.
//!
//! What this leaves out, and the kernel does: fragments (conntrack
//! reassembles them first, `nf_defrag_ipv4`/`nf_defrag_ipv6`), ICMP errors
//! (the kernel also rewrites the copy of the offending packet inside them,
//! RFC 5508 §4), and protocols other than TCP, UDP, ICMP and ICMPv6. Such
//! packets give a [`NatError`], as do packets that do not parse. No packet
//! can make these functions panic, and a packet they refuse is left exactly
//! as it was.

use std::fmt;
use std::net::IpAddr;

use pnet_packet::icmp::{IcmpPacket, echo_reply as echo_reply_v4, echo_request as echo_request_v4};
use pnet_packet::icmpv6::{Icmpv6Packet, echo_reply as echo_reply_v6, echo_request as echo_request_v6};
use pnet_packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet_packet::ipv4::{Ipv4Flags, Ipv4Packet, MutableIpv4Packet};
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};
use pnet_packet::tcp::{MutableTcpPacket, TcpPacket};
use pnet_packet::udp::{MutableUdpPacket, UdpPacket};
use step01_ping_tun::counts::{Counts, Reason};
use step03_ipv6::checksum::{update, update_u32};

/// The transport protocols [`snat`] and [`dnat`] rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    /// ICMP echo request or reply, over IPv4.
    Icmp,
    /// ICMPv6 echo request or reply.
    Icmpv6,
}

impl Protocol {
    /// Whether the checksum also covers the IP addresses, through the
    /// pseudo-header: TCP (RFC 9293 §3.1), UDP (RFC 768) and ICMPv6 (RFC
    /// 4443 §2.3) do; ICMP for IPv4 does not (RFC 792).
    pub fn has_pseudo_header(self) -> bool {
        self != Protocol::Icmp
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Icmp => "ICMP",
            Protocol::Icmpv6 => "ICMP6",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which end of a packet a rewrite changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Source NAT: the outgoing packet gets the server's address.
    Source,
    /// Destination NAT: the reply gets the client's address back.
    Destination,
}

/// One end of a flow: an address and a port, or, for ICMP and ICMPv6 echo
/// messages, an address and the echo identifier, which NAT treats as a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
}

impl Endpoint {
    pub fn new(addr: impl Into<IpAddr>, port: u16) -> Self {
        Self {
            addr: addr.into(),
            port,
        }
    }
}

/// What [`snat`] or [`dnat`] changed in a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub side: Side,
    pub protocol: Protocol,
    /// The end that was rewritten, before and after.
    pub before: Endpoint,
    pub after: Endpoint,
    /// The other end, unchanged: the destination for [`snat`], the source
    /// for [`dnat`]. An echo message has one identifier for both ends:
    /// `peer.port` is that identifier as it was.
    pub peer: Endpoint,
    /// The IPv4 header checksum before and after; `None` for IPv6, whose
    /// header has none.
    pub ip_checksum: Option<(u16, u16)>,
    /// The transport checksum before and after. A UDP checksum of 0 over
    /// IPv4 ("no checksum") stays 0.
    pub checksum: (u16, u16),
}

impl Rewritten {
    /// The (source, destination) of the packet before and after.
    fn flows(&self) -> ((Endpoint, Endpoint), (Endpoint, Endpoint)) {
        match self.side {
            Side::Source => ((self.before, self.peer), (self.after, self.peer)),
            Side::Destination => ((self.peer, self.before), (self.peer, self.after)),
        }
    }
}

impl fmt::Display for Rewritten {
    /// One line, e.g. `snat TCP 10.0.0.2.37012 > 198.51.100.2.80 =>
    /// 198.51.100.1.40028 > 198.51.100.2.80, IP sum 0xb655 -> 0x9622, TCP
    /// sum 0xde46 -> 0xb24b`, or for an echo message `dnat ICMP6
    /// 2001:db8:100::2 > 2001:db8:100::1 id 33171 => 2001:db8:100::2 >
    /// fd00::2 id 26960, ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.protocol;
        let ((s, d), (s2, d2)) = self.flows();
        let what = match self.side {
            Side::Source => "snat",
            Side::Destination => "dnat",
        };
        write!(f, "{what} {p} ")?;
        match p {
            Protocol::Tcp | Protocol::Udp => write!(
                f,
                "{}.{} > {}.{} => {}.{} > {}.{}",
                s.addr, s.port, d.addr, d.port, s2.addr, s2.port, d2.addr, d2.port
            )?,
            Protocol::Icmp | Protocol::Icmpv6 => write!(
                f,
                "{} > {} id {} => {} > {} id {}",
                s.addr, d.addr, self.before.port, s2.addr, d2.addr, self.after.port
            )?,
        }
        if let Some((old, new)) = self.ip_checksum {
            write!(f, ", IP sum {old:#06x} -> {new:#06x}")?;
        }
        match self.checksum {
            (0, 0) if p == Protocol::Udp => write!(f, ", UDP sum 0 (none)"),
            (old, new) => write!(f, ", {p} sum {old:#06x} -> {new:#06x}"),
        }
    }
}

/// Why a packet was not rewritten. The packet is then left exactly as it
/// was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatError {
    /// Not a whole IPv4 or IPv6 packet, or a TCP, UDP or ICMP header that
    /// does not parse (cut short, a TCP data offset below 5 words, a UDP
    /// length that does not fit).
    Malformed,
    /// A fragment: its transport header, if any, is only in the first
    /// fragment. The kernel reassembles fragments before NAT.
    Fragment,
    /// A protocol other than TCP, UDP, ICMP over IPv4 and ICMPv6 over IPv6
    /// (ICMPv6 in IPv4 and ICMP in IPv6 count here), or an IPsec
    /// authentication header, whose integrity check covers the addresses
    /// and which NAT therefore always breaks (RFC 3715 §2.1).
    Protocol,
    /// An ICMP or ICMPv6 message other than an echo request or reply: it
    /// has no identifier, and an error message would need the packet it
    /// quotes rewritten too (RFC 5508 §4).
    IcmpType,
    /// A new address of the other IP version than the packet's.
    Family,
    /// A UDP datagram over IPv6 with a checksum of 0, which receivers must
    /// discard (RFC 8200 §8.1).
    UdpNoChecksum,
    /// An IPv6 packet with a routing header still to be processed: its
    /// destination address is not the final one, which is inside that
    /// header (RFC 8200 §4.4).
    Routing,
    /// [`forward`]: a TTL or hop limit of 0 or 1, which would reach 0 here.
    /// A router drops the packet and sends an ICMP time exceeded (RFC 1812
    /// §5.3.1; RFC 8200 §3).
    TtlExceeded,
}

impl Reason for NatError {
    const ALL: &'static [NatError] = &[
        NatError::Malformed,
        NatError::Fragment,
        NatError::Protocol,
        NatError::IcmpType,
        NatError::Family,
        NatError::UdpNoChecksum,
        NatError::Routing,
        NatError::TtlExceeded,
    ];

    fn name(self) -> &'static str {
        match self {
            NatError::Malformed => "malformed",
            NatError::Fragment => "fragment",
            NatError::Protocol => "protocol",
            NatError::IcmpType => "icmp-type",
            NatError::Family => "family",
            NatError::UdpNoChecksum => "udp-no-checksum",
            NatError::Routing => "routing-header",
            NatError::TtlExceeded => "ttl-exceeded",
        }
    }
}

impl fmt::Display for NatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for NatError {}

/// Packets not rewritten, by reason; printed `not translated {errors}`
/// as `not translated 3 (fragment 2, protocol 1)`.
pub type NatErrors = Counts<NatError>;

/// Source NAT, as nftables' `masquerade` does it to a packet leaving for
/// the internet: the source address becomes `to_addr`, and the source port
/// (or the echo identifier) `to_port`. The IPv4 header checksum and the
/// transport checksum are updated to match.
///
/// `packet` is a whole IPv4 or IPv6 packet carrying TCP, UDP, an ICMP echo
/// request or reply, or an ICMPv6 one. The TTL is not touched: that is
/// [`forward`]'s part.
pub fn snat(packet: &mut [u8], to_addr: IpAddr, to_port: u16) -> Result<Rewritten, NatError> {
    rewrite(packet, Side::Source, Endpoint::new(to_addr, to_port))
}

/// Destination NAT, as connection tracking does it to a reply to a
/// masqueraded packet: the destination address becomes `to_addr` (the
/// client's), and the destination port (or the echo identifier) `to_port`
/// (the client's own). The checksums are updated to match, as in [`snat`].
pub fn dnat(packet: &mut [u8], to_addr: IpAddr, to_port: u16) -> Result<Rewritten, NatError> {
    rewrite(packet, Side::Destination, Endpoint::new(to_addr, to_port))
}

/// Rewrites one end of `packet` to `new`: the address in the IP header,
/// then the port and the checksums in the transport header.
///
/// Every check comes first ([`locate`], then the views over the two parts),
/// so that a packet is either rewritten whole or not at all.
fn rewrite(packet: &mut [u8], side: Side, new: Endpoint) -> Result<Rewritten, NatError> {
    // `locate` the transport header (it checks everything first); refuse a
    // family mismatch; split the packet there and take an `IpView` and a
    // `TransportView`; write the new address (`set_address`) and port, and
    // the transport checksum from `fix_checksum`. Fill in `Rewritten`.
    todo!("rewrite one end of `packet` to `new`")
}

/// The transport checksum after the address changes from `addr.0` to
/// `addr.1` and the port (or echo identifier) from `port.0` to `port.1`.
///
/// Each is one application of RFC 1624 §3, eqn. 3, per 16-bit word that
/// changes: the two words of an IPv4 address or the eight of an IPv6 one
/// (in the pseudo-header, for TCP, UDP and ICMPv6), and the port. All of
/// them sit at even offsets of the summed data (the pseudo-header is 12 or
/// 40 bytes long, the ports and the identifier are at offsets 0, 2 and 4).
/// Linux does the same (`inet_proto_csum_replace4`, `_replace16`,
/// `_replace2`), so the bytes come out the same as the kernel's.
///
/// UDP over IPv4 may carry no checksum at all, written as 0 (RFC 768): it
/// stays 0, since making one up now would vouch for data no one checked.
/// A UDP checksum that comes out as 0 is sent as 0xffff, the same number in
/// one's complement, because 0 would mean "none" (RFC 768; RFC 1624 §3 on
/// the two zeros). Linux does both (`udp_manip_pkt`, `CSUM_MANGLED_0`).
fn fix_checksum(protocol: Protocol, sum: u16, addr: (IpAddr, IpAddr), port: (u16, u16)) -> u16 {
    // RFC 1624 (step 03's `update`, `update_u32`): the address, through the
    // pseudo-header, for protocols that have one; then the port. UDP over
    // IPv4 with no checksum (0) stays 0; a UDP result of 0 is sent as 0xffff.
    todo!("update the transport checksum for the new address and port")
}

/// The checksum after an address it covers changes: [`update_u32`] over
/// each 32-bit part of it.
fn update_addr(sum: u16, old: IpAddr, new: IpAddr) -> u16 {
    // An IPv4 address is one u32; an IPv6 address four of them.
    todo!("update `sum` for an address that changed")
}

/// Where the transport message of a packet to rewrite is: its protocol,
/// and its offset and length in the packet.
#[derive(Debug)]
struct Located {
    ipv6: bool,
    protocol: Protocol,
    start: usize,
    len: usize,
}

/// Checks that `packet` is one whole IP packet whose transport header we can
/// rewrite, and finds that header: the `new_checked` of this module. Once
/// it has said yes, every offset the rewrite uses is inside the packet.
///
/// pnet's views check only that the fixed part of a header fits in the
/// buffer, and read whatever the length fields say; the length rules are
/// checked here, each against the bytes actually there.
fn locate(packet: &[u8]) -> Result<Located, NatError> {
    let (start, end, next, ipv6) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let (start, end, next) = locate_in_ipv4(packet)?;
            (start, end, next, false)
        }
        Some(6) => {
            let (start, end, next) = locate_in_ipv6(packet)?;
            (start, end, next, true)
        }
        _ => return Err(NatError::Malformed),
    };
    let message = packet.get(start..end).ok_or(NatError::Malformed)?;
    let protocol = match (next, ipv6) {
        (IpNextHeaderProtocols::Tcp, _) => {
            // RFC 9293 §3.1: the data offset counts 32-bit words, at least 5.
            let tcp = TcpPacket::new(message).ok_or(NatError::Malformed)?;
            let header_len = usize::from(tcp.get_data_offset()) * 4;
            if header_len < TcpPacket::minimum_packet_size() || header_len > message.len() {
                return Err(NatError::Malformed);
            }
            Protocol::Tcp
        }
        (IpNextHeaderProtocols::Udp, _) => {
            // RFC 768: the length counts the 8-byte header and the data.
            let udp = UdpPacket::new(message).ok_or(NatError::Malformed)?;
            let length = usize::from(udp.get_length());
            if length < UdpPacket::minimum_packet_size() || length > message.len() {
                return Err(NatError::Malformed);
            }
            if ipv6 && udp.get_checksum() == 0 {
                return Err(NatError::UdpNoChecksum);
            }
            Protocol::Udp
        }
        (IpNextHeaderProtocols::Icmp, false) => {
            // RFC 792: type, code, checksum, then for an echo message the
            // identifier and sequence number, which the echo view checks.
            let icmp = IcmpPacket::new(message).ok_or(NatError::Malformed)?;
            if !matches!(
                icmp.get_icmp_type().0,
                icmp_type::ECHO_REQUEST | icmp_type::ECHO_REPLY
            ) {
                return Err(NatError::IcmpType);
            }
            Protocol::Icmp
        }
        (IpNextHeaderProtocols::Icmpv6, true) => {
            let icmp = Icmpv6Packet::new(message).ok_or(NatError::Malformed)?;
            if !matches!(
                icmp.get_icmpv6_type().0,
                icmpv6_type::ECHO_REQUEST | icmpv6_type::ECHO_REPLY
            ) {
                return Err(NatError::IcmpType);
            }
            Protocol::Icmpv6
        }
        _ => return Err(NatError::Protocol),
    };
    Ok(Located {
        ipv6,
        protocol,
        start,
        len: message.len(),
    })
}

/// The transport message's start, end and protocol in an IPv4 packet
/// (RFC 791 §3.1): the header is IHL 32-bit words, at least 5, and the
/// packet Total Length bytes, header included. Bytes after that (an
/// Ethernet frame's padding) are not part of it.
fn locate_in_ipv4(packet: &[u8]) -> Result<(usize, usize, IpNextHeaderProtocol), NatError> {
    let (ip, header_len, total_len) = ipv4_lengths(packet)?;
    if ip.get_flags() & Ipv4Flags::MoreFragments != 0 || ip.get_fragment_offset() != 0 {
        return Err(NatError::Fragment);
    }
    Ok((header_len, total_len, ip.get_next_level_protocol()))
}

/// An IPv4 packet's header length and total length, checked.
fn ipv4_lengths(packet: &[u8]) -> Result<(Ipv4Packet<'_>, usize, usize), NatError> {
    let ip = Ipv4Packet::new(packet).ok_or(NatError::Malformed)?;
    let header_len = usize::from(ip.get_header_length()) * 4;
    let total_len = usize::from(ip.get_total_length());
    if header_len < Ipv4Packet::minimum_packet_size() || total_len < header_len || total_len > packet.len() {
        return Err(NatError::Malformed);
    }
    Ok((ip, header_len, total_len))
}

/// The transport message's start, end and protocol in an IPv6 packet: after
/// the 40-byte header and the extension headers (RFC 8200 §4), within
/// Payload Length bytes.
fn locate_in_ipv6(packet: &[u8]) -> Result<(usize, usize, IpNextHeaderProtocol), NatError> {
    let ip = Ipv6Packet::new(packet).ok_or(NatError::Malformed)?;
    let end = Ipv6Packet::minimum_packet_size() + usize::from(ip.get_payload_length());
    if end > packet.len() {
        return Err(NatError::Malformed);
    }
    let mut next = ip.get_next_header();
    let mut at = Ipv6Packet::minimum_packet_size();
    loop {
        // Every extension header starts with the type of the next header,
        // then its own length in 8-byte units, not counting the first 8;
        // the fragment header is always 8 bytes (RFC 8200 §4.3 to §4.6).
        let fixed_len = match next {
            IpNextHeaderProtocols::Hopopt
            | IpNextHeaderProtocols::Ipv6Opts
            | IpNextHeaderProtocols::Ipv6Route => None,
            IpNextHeaderProtocols::Ipv6Frag => Some(8),
            _ => return Ok((at, end, next)),
        };
        let rest = packet.get(at..end).unwrap_or_default();
        let (Some(&following), Some(&len_field)) = (rest.first(), rest.get(1)) else {
            return Err(NatError::Malformed);
        };
        let len = fixed_len.unwrap_or(8 + usize::from(len_field) * 8);
        let header = rest.get(..len).ok_or(NatError::Malformed)?;
        match next {
            // Routing type, then Segments Left.
            IpNextHeaderProtocols::Ipv6Route if header.get(3) != Some(&0) => return Err(NatError::Routing),
            // Fragment Offset (13 bits), 2 reserved bits, the M flag. An
            // "atomic fragment" (offset 0, M clear) is a whole packet (RFC
            // 6946) and is translated like one.
            IpNextHeaderProtocols::Ipv6Frag => {
                let field = header.get(2..).and_then(<[u8]>::first_chunk::<2>);
                if field.is_none_or(|f| u16::from_be_bytes(*f) & 0xfff9 != 0) {
                    return Err(NatError::Fragment);
                }
            }
            _ => {}
        }
        at += len;
        next = IpNextHeaderProtocol(following);
    }
}

/// ICMP message types (RFC 792).
mod icmp_type {
    pub const ECHO_REPLY: u8 = 0;
    pub const ECHO_REQUEST: u8 = 8;
}

/// ICMPv6 message types (RFC 4443 §4).
mod icmpv6_type {
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
}

/// The IP header of a packet being rewritten, as a pnet view.
enum IpView<'a> {
    V4(MutableIpv4Packet<'a>),
    V6(MutableIpv6Packet<'a>),
}

impl<'a> IpView<'a> {
    /// pnet's `new` checks only that the fixed header fits; [`locate`] has
    /// checked the rest.
    fn new(header: &'a mut [u8], ipv6: bool) -> Result<Self, NatError> {
        let view = if ipv6 {
            MutableIpv6Packet::new(header).map(IpView::V6)
        } else {
            MutableIpv4Packet::new(header).map(IpView::V4)
        };
        view.ok_or(NatError::Malformed)
    }

    fn source(&self) -> IpAddr {
        match self {
            IpView::V4(ip) => ip.get_source().into(),
            IpView::V6(ip) => ip.get_source().into(),
        }
    }

    fn destination(&self) -> IpAddr {
        match self {
            IpView::V4(ip) => ip.get_destination().into(),
            IpView::V6(ip) => ip.get_destination().into(),
        }
    }

    /// Writes the new address of `side`, and for IPv4 updates the header
    /// checksum, which covers it (RFC 791 §3.1); returns that checksum
    /// before and after. The addresses are at offsets 12 and 16 of the
    /// header, even, and are two 16-bit words each.
    fn set_address(&mut self, side: Side, new: IpAddr) -> Option<(u16, u16)> {
        // IPv4: the header checksum covers the address (update_u32); return
        // it before and after. IPv6 has no header checksum: None.
        todo!("write the new address, and update the IPv4 header checksum")
    }
}

/// The transport header of a packet being rewritten, as a pnet view.
enum TransportView<'a> {
    Tcp(MutableTcpPacket<'a>),
    Udp(MutableUdpPacket<'a>),
    EchoRequestV4(echo_request_v4::MutableEchoRequestPacket<'a>),
    EchoReplyV4(echo_reply_v4::MutableEchoReplyPacket<'a>),
    EchoRequestV6(echo_request_v6::MutableEchoRequestPacket<'a>),
    EchoReplyV6(echo_reply_v6::MutableEchoReplyPacket<'a>),
}

impl<'a> TransportView<'a> {
    /// pnet's `new` checks that the fixed header fits (20 bytes of TCP, 8
    /// of UDP or of an echo message); [`locate`] has checked the type.
    fn new(message: &'a mut [u8], protocol: Protocol) -> Result<Self, NatError> {
        let kind = message.first().copied();
        let view = match (protocol, kind) {
            (Protocol::Tcp, _) => MutableTcpPacket::new(message).map(Self::Tcp),
            (Protocol::Udp, _) => MutableUdpPacket::new(message).map(Self::Udp),
            (Protocol::Icmp, Some(icmp_type::ECHO_REQUEST)) => {
                echo_request_v4::MutableEchoRequestPacket::new(message).map(Self::EchoRequestV4)
            }
            (Protocol::Icmp, Some(icmp_type::ECHO_REPLY)) => {
                echo_reply_v4::MutableEchoReplyPacket::new(message).map(Self::EchoReplyV4)
            }
            (Protocol::Icmpv6, Some(icmpv6_type::ECHO_REQUEST)) => {
                echo_request_v6::MutableEchoRequestPacket::new(message).map(Self::EchoRequestV6)
            }
            (Protocol::Icmpv6, Some(icmpv6_type::ECHO_REPLY)) => {
                echo_reply_v6::MutableEchoReplyPacket::new(message).map(Self::EchoReplyV6)
            }
            _ => None,
        };
        view.ok_or(NatError::Malformed)
    }

    /// The port of `side` and of the other side. An echo message has one
    /// identifier for both.
    fn ports(&self, side: Side) -> (u16, u16) {
        let (source, destination) = match self {
            Self::Tcp(t) => (t.get_source(), t.get_destination()),
            Self::Udp(u) => (u.get_source(), u.get_destination()),
            Self::EchoRequestV4(e) => (e.get_identifier(), e.get_identifier()),
            Self::EchoReplyV4(e) => (e.get_identifier(), e.get_identifier()),
            Self::EchoRequestV6(e) => (e.get_identifier(), e.get_identifier()),
            Self::EchoReplyV6(e) => (e.get_identifier(), e.get_identifier()),
        };
        match side {
            Side::Source => (source, destination),
            Side::Destination => (destination, source),
        }
    }

    fn set_port(&mut self, side: Side, port: u16) {
        match (self, side) {
            (Self::Tcp(t), Side::Source) => t.set_source(port),
            (Self::Tcp(t), Side::Destination) => t.set_destination(port),
            (Self::Udp(u), Side::Source) => u.set_source(port),
            (Self::Udp(u), Side::Destination) => u.set_destination(port),
            (Self::EchoRequestV4(e), _) => e.set_identifier(port),
            (Self::EchoReplyV4(e), _) => e.set_identifier(port),
            (Self::EchoRequestV6(e), _) => e.set_identifier(port),
            (Self::EchoReplyV6(e), _) => e.set_identifier(port),
        }
    }

    fn checksum(&self) -> u16 {
        match self {
            Self::Tcp(t) => t.get_checksum(),
            Self::Udp(u) => u.get_checksum(),
            Self::EchoRequestV4(e) => e.get_checksum(),
            Self::EchoReplyV4(e) => e.get_checksum(),
            Self::EchoRequestV6(e) => e.get_checksum(),
            Self::EchoReplyV6(e) => e.get_checksum(),
        }
    }

    fn set_checksum(&mut self, sum: u16) {
        match self {
            Self::Tcp(t) => t.set_checksum(sum),
            Self::Udp(u) => u.set_checksum(sum),
            Self::EchoRequestV4(e) => e.set_checksum(sum),
            Self::EchoReplyV4(e) => e.set_checksum(sum),
            Self::EchoRequestV6(e) => e.set_checksum(sum),
            Self::EchoReplyV6(e) => e.set_checksum(sum),
        }
    }
}

/// What [`forward`] changed: the TTL (IPv4) or hop limit (IPv6), and the
/// IPv4 header checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    pub ttl: (u8, u8),
    /// `None` for IPv6.
    pub ip_checksum: Option<(u16, u16)>,
}

impl fmt::Display for Forwarded {
    /// `ttl 64 -> 63, IP sum 0x5a6e -> 0x5b6e`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (old, new) = self.ttl;
        match self.ip_checksum {
            Some((a, b)) => write!(f, "ttl {old} -> {new}, IP sum {a:#06x} -> {b:#06x}"),
            None => write!(f, "hlim {old} -> {new}"),
        }
    }
}

/// What every router does to a packet it forwards, NAT or not: decrement
/// the IPv4 TTL (RFC 1812 §5.3.1) or the IPv6 hop limit (RFC 8200 §3), and
/// update the IPv4 header checksum, which covers the TTL.
///
/// This is separate from [`snat`] and [`dnat`] because it is separate in
/// the kernel: `ip_forward` decrements the TTL between the prerouting hook
/// (where a reply is de-NATed) and the postrouting hook (where masquerade
/// runs). The order does not change the result: each update gives exactly
/// the checksum a recomputation would.
///
/// A packet whose TTL would reach 0 here is refused with
/// [`NatError::TtlExceeded`], unchanged: a router drops it, and answers
/// with an ICMP time exceeded. Fragments are forwarded like any packet, so
/// only the IP header is checked.
pub fn forward(packet: &mut [u8]) -> Result<Forwarded, NatError> {
    // Check the IP header (`ipv4_lengths`, or 40 bytes of IPv6); a TTL or
    // hop limit of 1 or less is TtlExceeded, unchanged. IPv4: the TTL shares
    // a 16-bit word with the protocol, and the header checksum covers it.
    todo!("decrement the TTL or hop limit")
}
