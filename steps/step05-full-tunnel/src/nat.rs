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
use pnet_packet::ipv4::{Ipv4Packet, MutableIpv4Packet};
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};
use pnet_packet::tcp::MutableTcpPacket;
use pnet_packet::udp::{MutableUdpPacket, UdpPacket};
use step01_ping_tun::counts::{Counts, Reason};
use step03_ipv6::checksum::{update, update_u32};
use step03_ipv6::transport::{self, Fragment};

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

// ANCHOR: snat
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
// ANCHOR_END: snat

// ANCHOR: dnat
/// Destination NAT, as connection tracking does it to a reply to a
/// masqueraded packet: the destination address becomes `to_addr` (the
/// client's), and the destination port (or the echo identifier) `to_port`
/// (the client's own). The checksums are updated to match, as in [`snat`].
pub fn dnat(packet: &mut [u8], to_addr: IpAddr, to_port: u16) -> Result<Rewritten, NatError> {
    rewrite(packet, Side::Destination, Endpoint::new(to_addr, to_port))
}
// ANCHOR_END: dnat

// ANCHOR: rewrite
/// Rewrites one end of `packet` to `new`: the address in the IP header,
/// then the port and the checksums in the transport header.
///
/// Every check comes first ([`locate`], then the views over the two parts),
/// so that a packet is either rewritten whole or not at all.
fn rewrite(packet: &mut [u8], side: Side, new: Endpoint) -> Result<Rewritten, NatError> {
    let found = locate(packet)?;
    if found.ipv6 != new.addr.is_ipv6() {
        return Err(NatError::Family);
    }
    let (header, rest) = packet
        .split_at_mut_checked(found.start)
        .ok_or(NatError::Malformed)?;
    let message = rest.get_mut(..found.len).ok_or(NatError::Malformed)?;
    let mut ip = IpView::new(header, found.ipv6)?;
    let mut transport = TransportView::new(message, found.protocol)?;

    let (old_addr, peer_addr) = match side {
        Side::Source => (ip.source(), ip.destination()),
        Side::Destination => (ip.destination(), ip.source()),
    };
    let (old_port, peer_port) = transport.ports(side);
    let ip_checksum = ip.set_address(side, new.addr);
    let old_checksum = transport.checksum();
    let new_checksum = fix_checksum(
        found.protocol,
        old_checksum,
        (old_addr, new.addr),
        (old_port, new.port),
    );
    transport.set_port(side, new.port);
    transport.set_checksum(new_checksum);

    Ok(Rewritten {
        side,
        protocol: found.protocol,
        before: Endpoint::new(old_addr, old_port),
        after: new,
        peer: Endpoint::new(peer_addr, peer_port),
        ip_checksum,
        checksum: (old_checksum, new_checksum),
    })
}
// ANCHOR_END: rewrite

// ANCHOR: checksums
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
    if protocol == Protocol::Udp && sum == 0 {
        return 0;
    }
    let mut sum = sum;
    if protocol.has_pseudo_header() {
        sum = update_addr(sum, addr.0, addr.1);
    }
    sum = update(sum, port.0, port.1);
    if protocol == Protocol::Udp && sum == 0 {
        0xffff
    } else {
        sum
    }
}

/// The checksum after an address it covers changes: [`update_u32`] over
/// each 32-bit part of it.
fn update_addr(sum: u16, old: IpAddr, new: IpAddr) -> u16 {
    match (old, new) {
        (IpAddr::V4(old), IpAddr::V4(new)) => update_u32(sum, old.to_bits(), new.to_bits()),
        (IpAddr::V6(old), IpAddr::V6(new)) => {
            let (old, new) = (old.to_bits(), new.to_bits());
            (0..4).fold(sum, |sum, i| {
                let shift = 96 - 32 * i;
                update_u32(sum, (old >> shift) as u32, (new >> shift) as u32)
            })
        }
        // `rewrite` checks the families first.
        _ => sum,
    }
}
// ANCHOR_END: checksums

/// Where the transport message of a packet to rewrite is: its protocol,
/// and its offset and length in the packet.
#[derive(Debug)]
struct Located {
    ipv6: bool,
    protocol: Protocol,
    start: usize,
    len: usize,
}

// ANCHOR: locate
/// Checks that `packet` is one whole IP packet whose transport header we can
/// rewrite, and finds that header: the `new_checked` of this module. Once
/// it has said yes, every offset the rewrite uses is inside the packet.
///
/// Step 03's [`transport::locate`] walks the IP header and the IPv6
/// extension headers and checks the TCP data offset and the UDP length
/// against the bytes actually there (pnet's views check only that the
/// fixed part of a header fits); what NAT can rewrite is decided here.
fn locate(packet: &[u8]) -> Result<Located, NatError> {
    let found = transport::locate(packet).map_err(|_| NatError::Malformed)?;
    // The kernel reassembles fragments before NAT. An IPv6 "atomic
    // fragment" (offset 0, M clear) is a whole packet (RFC 6946) and is
    // translated like one.
    if found.fragment != Fragment::Whole {
        return Err(NatError::Fragment);
    }
    if found.routing_pending {
        return Err(NatError::Routing);
    }
    if found.authenticated {
        return Err(NatError::Protocol);
    }
    let ipv6 = found.ipv6;
    let next = IpNextHeaderProtocol(found.protocol.0);
    let range = match next {
        IpNextHeaderProtocols::Tcp | IpNextHeaderProtocols::Udp => {
            found.transport(packet).map_err(|_| NatError::Malformed)?
        }
        _ => found.payload.clone(),
    };
    let message = packet.get(range.clone()).ok_or(NatError::Malformed)?;
    let protocol = match (next, ipv6) {
        (IpNextHeaderProtocols::Tcp, _) => Protocol::Tcp,
        (IpNextHeaderProtocols::Udp, _) => {
            let udp = UdpPacket::new(message).ok_or(NatError::Malformed)?;
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
        start: range.start,
        len: message.len(),
    })
}

/// An IPv4 packet's header length and total length, checked (RFC 791
/// §3.1): the header is IHL 32-bit words, at least 5, and the packet Total
/// Length bytes, header included.
fn ipv4_lengths(packet: &[u8]) -> Result<(Ipv4Packet<'_>, usize, usize), NatError> {
    let ip = Ipv4Packet::new(packet).ok_or(NatError::Malformed)?;
    let header_len = usize::from(ip.get_header_length()) * 4;
    let total_len = usize::from(ip.get_total_length());
    if header_len < Ipv4Packet::minimum_packet_size() || total_len < header_len || total_len > packet.len() {
        return Err(NatError::Malformed);
    }
    Ok((ip, header_len, total_len))
}
// ANCHOR_END: locate

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
        match (self, new) {
            (IpView::V4(ip), IpAddr::V4(new)) => {
                let old = match side {
                    Side::Source => ip.get_source(),
                    Side::Destination => ip.get_destination(),
                };
                let sum = ip.get_checksum();
                let updated = update_u32(sum, old.to_bits(), new.to_bits());
                match side {
                    Side::Source => ip.set_source(new),
                    Side::Destination => ip.set_destination(new),
                }
                ip.set_checksum(updated);
                Some((sum, updated))
            }
            (IpView::V6(ip), IpAddr::V6(new)) => {
                match side {
                    Side::Source => ip.set_source(new),
                    Side::Destination => ip.set_destination(new),
                }
                None
            }
            // `rewrite` checks the families first.
            _ => None,
        }
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

// ANCHOR: forward
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
    let ipv6 = match packet.first().map(|b| b >> 4) {
        Some(4) if ipv4_lengths(packet).is_ok() => false,
        Some(6) if packet.len() >= Ipv6Packet::minimum_packet_size() => true,
        _ => return Err(NatError::Malformed),
    };
    match IpView::new(packet, ipv6)? {
        IpView::V4(mut ip) => {
            let (ttl, protocol) = (ip.get_ttl(), ip.get_next_level_protocol().0);
            if ttl <= 1 {
                return Err(NatError::TtlExceeded);
            }
            // The TTL shares a 16-bit word with the protocol (RFC 791 §3.1),
            // at offset 8 of the header: the word falls by 0x0100.
            let sum = ip.get_checksum();
            let word = |ttl: u8| u16::from_be_bytes([ttl, protocol]);
            let updated = update(sum, word(ttl), word(ttl - 1));
            ip.set_ttl(ttl - 1);
            ip.set_checksum(updated);
            Ok(Forwarded {
                ttl: (ttl, ttl - 1),
                ip_checksum: Some((sum, updated)),
            })
        }
        IpView::V6(mut ip) => {
            let hops = ip.get_hop_limit();
            if hops <= 1 {
                return Err(NatError::TtlExceeded);
            }
            ip.set_hop_limit(hops - 1);
            Ok(Forwarded {
                ttl: (hops, hops - 1),
                ip_checksum: None,
            })
        }
    }
}
// ANCHOR_END: forward

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use etherparse::PacketBuilder;
    use step03_ipv6::checksum::{checksum, transport_checksum, verify, verify_transport};

    use super::*;
    use captured::*;

    /// Pairs of packets recorded on a hand-built copy of lab 05's server
    /// (a `step04-crypto` server with its TUN device recording, forwarding
    /// with `masquerade to :40000-40099` for TCP and UDP and `masquerade
    /// random` for the rest, so that ports and identifiers change, and
    /// tcpdump on its internet side), tx checksum offload off on the
    /// internet host. Ethernet headers removed.
    mod captured {
        /// The SYN of `curl http://198.51.100.2/` from 10.0.0.2 port 37012, as
    /// the server's TUN device read it (TTL 64, MSS 1400: the tunnel's
    /// clamping).
    #[rustfmt::skip]
    pub const SYN_IN: [u8; 60] = [
        0x45, 0x00, 0x00, 0x3c, 0x50, 0x2f, 0x40, 0x00, 0x40, 0x06, 0xb6, 0x55, 0x0a, 0x00, 0x00, 0x02,
        0xc6, 0x33, 0x64, 0x02, 0x90, 0x94, 0x00, 0x50, 0x78, 0x57, 0xb8, 0x65, 0x00, 0x00, 0x00, 0x00,
        0xa0, 0x02, 0xfb, 0x90, 0xde, 0x46, 0x00, 0x00, 0x02, 0x04, 0x05, 0x78, 0x04, 0x02, 0x08, 0x0a,
        0x36, 0x9a, 0x41, 0xee, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
    ];
        /// The same SYN leaving the server: from 198.51.100.1 port 40028, TTL 63.
    #[rustfmt::skip]
    pub const SYN_OUT: [u8; 60] = [
        0x45, 0x00, 0x00, 0x3c, 0x50, 0x2f, 0x40, 0x00, 0x3f, 0x06, 0x97, 0x22, 0xc6, 0x33, 0x64, 0x01,
        0xc6, 0x33, 0x64, 0x02, 0x9c, 0x5c, 0x00, 0x50, 0x78, 0x57, 0xb8, 0x65, 0x00, 0x00, 0x00, 0x00,
        0xa0, 0x02, 0xfb, 0x90, 0xb2, 0x4b, 0x00, 0x00, 0x02, 0x04, 0x05, 0x78, 0x04, 0x02, 0x08, 0x0a,
        0x36, 0x9a, 0x41, 0xee, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
    ];
        /// The internet host's SYN-ACK to 198.51.100.1 port 40028, as it arrived.
    #[rustfmt::skip]
    pub const SYN_ACK_OUT: [u8; 60] = [
        0x45, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0xe6, 0x51, 0xc6, 0x33, 0x64, 0x02,
        0xc6, 0x33, 0x64, 0x01, 0x00, 0x50, 0x9c, 0x5c, 0x47, 0x0b, 0xd0, 0x0a, 0x78, 0x57, 0xb8, 0x66,
        0xa0, 0x12, 0xfe, 0x88, 0x10, 0x3d, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a,
        0xeb, 0x0f, 0x9c, 0xa3, 0x36, 0x9a, 0x41, 0xee, 0x01, 0x03, 0x03, 0x0a,
    ];
        /// The same SYN-ACK as the server's TUN device wrote it: to 10.0.0.2 port
    /// 37012, TTL 63.
    #[rustfmt::skip]
    pub const SYN_ACK_IN: [u8; 60] = [
        0x45, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x40, 0x00, 0x3f, 0x06, 0x07, 0x85, 0xc6, 0x33, 0x64, 0x02,
        0x0a, 0x00, 0x00, 0x02, 0x00, 0x50, 0x90, 0x94, 0x47, 0x0b, 0xd0, 0x0a, 0x78, 0x57, 0xb8, 0x66,
        0xa0, 0x12, 0xfe, 0x88, 0x3c, 0x38, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a,
        0xeb, 0x0f, 0x9c, 0xa3, 0x36, 0x9a, 0x41, 0xee, 0x01, 0x03, 0x03, 0x0a,
    ];
        /// `ping 198.51.100.2` from 10.0.0.2: an echo request with identifier
    /// 26956 (0x694c), as the server's TUN read it.
    #[rustfmt::skip]
    pub const ECHO_IN: [u8; 84] = [
        0x45, 0x00, 0x00, 0x54, 0xe5, 0xc6, 0x40, 0x00, 0x40, 0x01, 0x20, 0xab, 0x0a, 0x00, 0x00, 0x02,
        0xc6, 0x33, 0x64, 0x02, 0x08, 0x00, 0x92, 0xd4, 0x69, 0x4c, 0x00, 0x01, 0xea, 0x65, 0x04, 0x6b,
        0x00, 0x00, 0x00, 0x00, 0x44, 0x3a, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11, 0x12, 0x13,
        0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23,
        0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33,
        0x34, 0x35, 0x36, 0x37,
    ];
        /// The same echo request leaving the server: from 198.51.100.1, identifier
    /// 44402 (0xad72), TTL 63.
    #[rustfmt::skip]
    pub const ECHO_OUT: [u8; 84] = [
        0x45, 0x00, 0x00, 0x54, 0xe5, 0xc6, 0x40, 0x00, 0x3f, 0x01, 0x01, 0x78, 0xc6, 0x33, 0x64, 0x01,
        0xc6, 0x33, 0x64, 0x02, 0x08, 0x00, 0x4e, 0xae, 0xad, 0x72, 0x00, 0x01, 0xea, 0x65, 0x04, 0x6b,
        0x00, 0x00, 0x00, 0x00, 0x44, 0x3a, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11, 0x12, 0x13,
        0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23,
        0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33,
        0x34, 0x35, 0x36, 0x37,
    ];
        /// `ping -6 2001:db8:100::2`: the echo reply to 2001:db8:100::1,
    /// identifier 33171 (0x8193), as it arrived at the server.
    #[rustfmt::skip]
    pub const ECHO6_REPLY_OUT: [u8; 104] = [
        0x60, 0x0d, 0x4b, 0x1d, 0x00, 0x40, 0x3a, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x81, 0x00, 0x93, 0xf6, 0x81, 0x93, 0x00, 0x01,
        0xea, 0x65, 0x04, 0x6b, 0x00, 0x00, 0x00, 0x00, 0x50, 0xe1, 0x0d, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
        0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
        0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
    ];
        /// The same reply as the server's TUN wrote it: to fd00::2, identifier
    /// 26960 (0x6950), hop limit 63.
    #[rustfmt::skip]
    pub const ECHO6_REPLY_IN: [u8; 104] = [
        0x60, 0x0d, 0x4b, 0x1d, 0x00, 0x40, 0x3a, 0x3f, 0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x81, 0x00, 0xdd, 0xf0, 0x69, 0x50, 0x00, 0x01,
        0xea, 0x65, 0x04, 0x6b, 0x00, 0x00, 0x00, 0x00, 0x50, 0xe1, 0x0d, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
        0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
        0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
    ];
        /// A UDP datagram ("udp-hello6\n") from fd00::2 port 51414 to
    /// 2001:db8:100::2 port 9999, as the server's TUN read it.
    #[rustfmt::skip]
    pub const UDP6_IN: [u8; 59] = [
        0x60, 0x0b, 0xbf, 0x1b, 0x00, 0x13, 0x11, 0x40, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xc8, 0xd6, 0x27, 0x0f, 0x00, 0x13, 0xb0, 0x8a,
        0x75, 0x64, 0x70, 0x2d, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x36, 0x0a,
    ];
        /// The same datagram leaving the server: from 2001:db8:100::1 port 40071,
    /// hop limit 63.
    #[rustfmt::skip]
    pub const UDP6_OUT: [u8; 59] = [
        0x60, 0x0b, 0xbf, 0x1b, 0x00, 0x13, 0x11, 0x3f, 0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x9c, 0x87, 0x27, 0x0f, 0x00, 0x13, 0xab, 0x22,
        0x75, 0x64, 0x70, 0x2d, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x36, 0x0a,
    ];
    }

    const PUBLIC_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const PUBLIC_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
    const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

    /// Out through the server: forwarded, then masqueraded.
    fn out(packet: &[u8], addr: impl Into<IpAddr>, port: u16) -> Vec<u8> {
        let mut p = packet.to_vec();
        forward(&mut p).unwrap();
        snat(&mut p, addr.into(), port).unwrap();
        p
    }

    /// Back through the server: de-NATed, then forwarded.
    fn back(packet: &[u8], addr: impl Into<IpAddr>, port: u16) -> Vec<u8> {
        let mut p = packet.to_vec();
        dnat(&mut p, addr.into(), port).unwrap();
        forward(&mut p).unwrap();
        p
    }

    /// What the kernel sent, byte for byte: addresses, ports, identifiers,
    /// TTLs and every checksum.
    #[test]
    fn test_rewrite_as_the_kernel_did() {
        assert_eq!(out(&SYN_IN, PUBLIC_V4, 40028), SYN_OUT);
        assert_eq!(back(&SYN_ACK_OUT, CLIENT_V4, 37012), SYN_ACK_IN);
        assert_eq!(out(&ECHO_IN, PUBLIC_V4, 44402), ECHO_OUT);
        assert_eq!(back(&ECHO6_REPLY_OUT, CLIENT_V6, 26960), ECHO6_REPLY_IN);
        assert_eq!(out(&UDP6_IN, PUBLIC_V6, 40071), UDP6_OUT);
    }

    /// The TTL and the address both change the IPv4 header checksum; each
    /// update gives exactly what recomputation gives, so the order does not
    /// matter.
    #[test]
    fn forward_and_nat_commute() {
        let mut p = SYN_IN;
        snat(&mut p, PUBLIC_V4.into(), 40028).unwrap();
        forward(&mut p).unwrap();
        assert_eq!(p, SYN_OUT);
        let mut p = SYN_ACK_OUT;
        forward(&mut p).unwrap();
        dnat(&mut p, CLIENT_V4.into(), 37012).unwrap();
        assert_eq!(p, SYN_ACK_IN);
    }

    /// Exactly these bytes change: the IPv4 header checksum (10-11), the
    /// source address (12-15), the source port (20-21) and the TCP checksum
    /// (36-37); and for the reply the destination (16-19, 22-23).
    #[test]
    fn only_the_addressed_bytes_change() {
        let changed = |a: &[u8], b: &[u8]| -> Vec<usize> { (0..a.len()).filter(|&i| a[i] != b[i]).collect() };
        let mut p = SYN_IN;
        snat(&mut p, PUBLIC_V4.into(), 40028).unwrap();
        assert_eq!(changed(&SYN_IN, &p), [10, 11, 12, 13, 14, 15, 20, 21, 36, 37]);
        let mut p = SYN_ACK_OUT;
        dnat(&mut p, CLIENT_V4.into(), 37012).unwrap();
        assert_eq!(
            changed(&SYN_ACK_OUT, &p),
            [10, 11, 16, 17, 18, 19, 22, 23, 36, 37]
        );
        let mut p = ECHO_IN;
        snat(&mut p, PUBLIC_V4.into(), 44402).unwrap();
        // ICMP has no pseudo-header: its checksum (22-23) changes with the
        // identifier (24-25) only.
        assert_eq!(changed(&ECHO_IN, &p), [10, 11, 12, 13, 14, 15, 22, 23, 24, 25]);
    }

    #[test]
    fn test_display() {
        let mut p = SYN_IN;
        let nat = snat(&mut p, PUBLIC_V4.into(), 40028).unwrap();
        assert_eq!(
            nat.to_string(),
            "snat TCP 10.0.0.2.37012 > 198.51.100.2.80 => 198.51.100.1.40028 > 198.51.100.2.80, \
             IP sum 0xb655 -> 0x9622, TCP sum 0xde46 -> 0xb24b"
        );
        assert_eq!(
            forward(&mut p).unwrap().to_string(),
            "ttl 64 -> 63, IP sum 0x9622 -> 0x9722"
        );
        let mut p = ECHO6_REPLY_OUT;
        let nat = dnat(&mut p, CLIENT_V6.into(), 26960).unwrap();
        assert_eq!(
            nat.to_string(),
            "dnat ICMP6 2001:db8:100::2 > 2001:db8:100::1 id 33171 => \
             2001:db8:100::2 > fd00::2 id 26960, ICMP6 sum 0x93f6 -> 0xddf0"
        );
        assert_eq!(forward(&mut p).unwrap().to_string(), "hlim 64 -> 63");
        let mut errors = NatErrors::default();
        assert_eq!(format!("not translated {errors}"), "not translated 0");
        errors.increment(NatError::Fragment);
        errors.increment(NatError::Fragment);
        errors.increment(NatError::Protocol);
        assert_eq!(
            format!("not translated {errors}"),
            "not translated 3 (fragment 2, protocol 1)"
        );
    }

    /// The kinds of packet `build` makes.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Kind {
        Tcp,
        Udp,
        EchoRequest,
        EchoReply,
    }

    const KINDS: [Kind; 4] = [Kind::Tcp, Kind::Udp, Kind::EchoRequest, Kind::EchoReply];

    /// A packet from `src` to `dst` built by etherparse, which computes
    /// every checksum from scratch. An echo message takes its identifier
    /// from `src.port`.
    fn build(kind: Kind, src: Endpoint, dst: Endpoint, payload: &[u8]) -> Vec<u8> {
        let ip = match (src.addr, dst.addr) {
            (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
            _ => unreachable!(),
        };
        let ipv6 = src.addr.is_ipv6();
        let mut out = Vec::new();
        match kind {
            Kind::Tcp => ip
                .tcp(src.port, dst.port, 0x0102_0304, 64240)
                .write(&mut out, payload),
            Kind::Udp => ip.udp(src.port, dst.port).write(&mut out, payload),
            Kind::EchoRequest if ipv6 => ip.icmpv6_echo_request(src.port, 1).write(&mut out, payload),
            Kind::EchoReply if ipv6 => ip.icmpv6_echo_reply(src.port, 1).write(&mut out, payload),
            Kind::EchoRequest => ip.icmpv4_echo_request(src.port, 1).write(&mut out, payload),
            Kind::EchoReply => ip.icmpv4_echo_reply(src.port, 1).write(&mut out, payload),
        }
        .unwrap();
        out
    }

    /// A small xorshift generator: the same cases on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }

        fn endpoint(&mut self, ipv6: bool) -> Endpoint {
            let addr = if ipv6 {
                IpAddr::V6(Ipv6Addr::from_bits(
                    u128::from(self.next()) << 64 | u128::from(self.next()),
                ))
            } else {
                IpAddr::V4(Ipv4Addr::from_bits(self.next() as u32))
            };
            Endpoint::new(addr, self.next() as u16)
        }
    }

    /// The IPv4 header checksum recomputed from scratch (RFC 791 §3.1).
    fn recomputed_ip_checksum(packet: &[u8]) -> u16 {
        let mut header = packet[..usize::from(packet[0] & 0xf) * 4].to_vec();
        header[10..12].fill(0);
        checksum(&header)
    }

    fn fix_ip_checksum(packet: &mut [u8]) {
        let sum = recomputed_ip_checksum(packet);
        packet[10..12].copy_from_slice(&sum.to_be_bytes());
    }

    /// Random packets of every kind and family, with payloads of odd and
    /// even lengths, rewritten to random addresses and ports: each is, byte
    /// for byte, the packet etherparse builds with the new address and
    /// port, whose checksums it computed from scratch. So the incremental
    /// updates equal full recomputation, for the IPv4 header, TCP, UDP,
    /// ICMP and ICMPv6. step 03's `transport_checksum` (a second, separate
    /// recomputation) agrees.
    #[test]
    fn rewrite_equals_rebuilding() {
        let mut rng = Rng(0x5eed_0005_0000_0001);
        for case in 0..2000 {
            let ipv6 = case % 2 == 1;
            let kind = KINDS[case / 2 % 4];
            let (src, dst, new) = (rng.endpoint(ipv6), rng.endpoint(ipv6), rng.endpoint(ipv6));
            let n = rng.below(64);
            let payload = rng.bytes(n);
            let echo = |e: Endpoint, id: u16| match kind {
                Kind::EchoRequest | Kind::EchoReply => Endpoint::new(e.addr, id),
                _ => e,
            };

            let mut p = build(kind, src, echo(dst, src.port), &payload);
            let nat = snat(&mut p, new.addr, new.port).unwrap();
            let expected = build(kind, new, echo(dst, new.port), &payload);
            assert_eq!(p, expected, "case {case}: {nat}");
            assert_eq!((nat.before, nat.after), (src, new));

            let mut p = build(kind, src, echo(dst, src.port), &payload);
            let nat = dnat(&mut p, new.addr, new.port).unwrap();
            let expected = build(kind, echo(src, new.port), echo(new, new.port), &payload);
            assert_eq!(p, expected, "case {case}: {nat}");

            let stored = u16::from_be_bytes(match kind {
                Kind::Tcp => [p[p.len() - n - 4], p[p.len() - n - 3]],
                Kind::Udp => [p[p.len() - n - 2], p[p.len() - n - 1]],
                _ => [p[p.len() - n - 6], p[p.len() - n - 5]],
            });
            assert_eq!(transport_checksum(&p), Some(stored), "case {case}: {nat}");
            assert_eq!(nat.checksum.1, stored);
            if !ipv6 {
                assert_eq!(recomputed_ip_checksum(&p), u16::from_be_bytes([p[10], p[11]]));
            }
        }
    }

    /// RFC 768: a UDP checksum of 0 over IPv4 means the sender computed
    /// none. NAT leaves it so; the rest is rewritten as usual.
    #[test]
    fn udp_without_checksum_stays_without() {
        let (src, dst) = (
            Endpoint::new(CLIENT_V4, 5353),
            Endpoint::new([198, 51, 100, 2], 53),
        );
        let mut p = build(Kind::Udp, src, dst, b"query");
        p[26..28].fill(0);
        let nat = snat(&mut p, PUBLIC_V4.into(), 40000).unwrap();
        assert_eq!(nat.checksum, (0, 0));
        assert!(nat.to_string().ends_with("UDP sum 0 (none)"), "{nat}");
        let mut expected = build(Kind::Udp, Endpoint::new(PUBLIC_V4, 40000), dst, b"query");
        expected[26..28].fill(0);
        assert_eq!(p, expected);
        assert_eq!(verify_transport(&p), Some(true));
    }

    /// Over IPv6 a UDP checksum is mandatory: a datagram without one is
    /// dropped, not translated (RFC 8200 §8.1).
    #[test]
    fn udp_over_ipv6_without_checksum_is_refused() {
        let src = Endpoint::new(CLIENT_V6, 5353);
        let mut p = build(Kind::Udp, src, Endpoint::new(PUBLIC_V6, 53), b"query");
        p[46..48].fill(0);
        assert_refused(&p, NatError::UdpNoChecksum);
    }

    /// The packet `make(word)` for the `word` that makes the checksum at
    /// `field` come out as 0x0000 by recomputation after `change`: the one
    /// for which everything else sums to 0xffff. `word` must sit at an
    /// even offset of the summed data, so that it adds to the sum as it
    /// is; then the checksum `change` gives for word 0, the complement of
    /// the sum, is the word to add.
    fn summing_to_all_ones(
        make: impl Fn(u16) -> Vec<u8>,
        change: impl Fn(&mut [u8]),
        field: usize,
    ) -> Vec<u8> {
        let mut probe = make(0);
        change(&mut probe);
        make(u16::from_be_bytes([probe[field], probe[field + 1]]))
    }

    /// RFC 1624's corner: one's complement has two zeros, and a checksum
    /// recomputed over data that sums to 0xffff is 0x0000, never 0xffff.
    /// The update must give that too (RFC 1141's shorter equation gives
    /// 0xffff here; step 03's tests show it with §4's example). UDP is the
    /// exception: there 0 means "no checksum", so it is sent as 0xffff.
    #[test]
    fn checksums_that_come_out_zero() {
        let (src, dst) = (
            Endpoint::new(CLIENT_V4, 33000),
            Endpoint::new([198, 51, 100, 2], 80),
        );
        let new = Endpoint::new(PUBLIC_V4, 40000);
        let masquerade = |p: &mut [u8]| {
            snat(p, new.addr, new.port).unwrap();
        };
        for ipv6 in [false, true] {
            let (src, dst, new) = if ipv6 {
                (
                    Endpoint::new(CLIENT_V6, 33000),
                    Endpoint::new(PUBLIC_V6, 80),
                    Endpoint::new(Ipv6Addr::LOCALHOST, 40000),
                )
            } else {
                (src, dst, new)
            };
            let masquerade = |p: &mut [u8]| {
                snat(p, new.addr, new.port).unwrap();
            };
            let start = if ipv6 { 40 } else { 20 };
            for (kind, field) in [(Kind::Tcp, 16), (Kind::Udp, 6), (Kind::EchoRequest, 2)] {
                // The data's first word is at an even offset in each.
                let make = |word: u16| build(kind, src, dst, &[&word.to_be_bytes()[..], &[7, 7, 7]].concat());
                let mut p = summing_to_all_ones(make, masquerade, start + field);
                masquerade(&mut p);
                let stored = u16::from_be_bytes([p[start + field], p[start + field + 1]]);
                let expected = if kind == Kind::Udp { 0xffff } else { 0x0000 };
                assert_eq!(stored, expected, "{kind:?}, IPv6 {ipv6}");
                assert_eq!(verify_transport(&p), Some(true), "{kind:?}, IPv6 {ipv6}");
                assert_eq!(transport_checksum(&p), Some(expected), "{kind:?}, IPv6 {ipv6}");
            }
        }
        // The IPv4 header checksum, through the identification field, after
        // the address changes and after the TTL is decremented; Linux's
        // ip_decrease_ttl also gives 0x0000.
        let built = build(Kind::Tcp, src, dst, b"");
        let make = |id: u16| {
            let mut p = built.clone();
            p[4..6].copy_from_slice(&id.to_be_bytes());
            fix_ip_checksum(&mut p);
            p
        };
        let mut p = summing_to_all_ones(make, masquerade, 10);
        masquerade(&mut p);
        assert_eq!(&p[10..12], [0, 0]);
        assert_eq!(recomputed_ip_checksum(&p), 0x0000);
        let ttl = |p: &mut [u8]| {
            forward(p).unwrap();
        };
        let mut p = summing_to_all_ones(make, ttl, 10);
        assert_eq!(forward(&mut p).unwrap().ip_checksum.unwrap().1, 0x0000);
        assert_eq!(recomputed_ip_checksum(&p), 0x0000);
    }

    #[test]
    fn forward_decrements_ttl_and_hop_limit() {
        let mut p = SYN_IN;
        let f = forward(&mut p).unwrap();
        assert_eq!(f.ttl, (64, 63));
        assert_eq!(p[8], 63);
        assert_eq!(recomputed_ip_checksum(&p), u16::from_be_bytes([p[10], p[11]]));
        let mut p = UDP6_IN;
        assert_eq!(forward(&mut p).unwrap().ttl, (64, 63));
        assert_eq!(p[7], 63);
        assert_eq!(&p[..7], &UDP6_IN[..7]);
        assert_eq!(&p[8..], &UDP6_IN[8..]);
        // Fragments are forwarded like any packet.
        let mut fragment = SYN_IN;
        fragment[6] |= 0x20;
        assert!(forward(&mut fragment).is_ok());
        for ttl in [0, 1] {
            let mut p = SYN_IN;
            p[8] = ttl;
            let before = p;
            assert_eq!(forward(&mut p), Err(NatError::TtlExceeded));
            assert_eq!(p, before);
            let mut p = UDP6_IN;
            p[7] = ttl;
            assert_eq!(forward(&mut p), Err(NatError::TtlExceeded));
        }
        for bad in [&[][..], &[0x45; 19], &[0x60; 39], &[0x75; 60]] {
            let mut p = bad.to_vec();
            assert_eq!(forward(&mut p), Err(NatError::Malformed));
        }
    }

    /// `snat` and `dnat` refuse `packet` with `reason` and leave it as it is.
    fn assert_refused(packet: &[u8], reason: NatError) {
        let addr = if packet[0] >> 4 == 6 {
            IpAddr::V6(PUBLIC_V6)
        } else {
            IpAddr::V4(PUBLIC_V4)
        };
        for f in [snat, dnat] {
            let mut p = packet.to_vec();
            assert_eq!(f(&mut p, addr, 1).err(), Some(reason), "{packet:02x?}");
            assert_eq!(p, packet);
        }
    }

    /// An IPv6 packet with `ext` (an extension header of type `kind`)
    /// inserted after the fixed header.
    fn with_extension(packet: &[u8], kind: u8, ext: &[u8]) -> Vec<u8> {
        let mut p = packet[..40].to_vec();
        let mut ext = ext.to_vec();
        ext[0] = p[6];
        p[6] = kind;
        let len = u16::from_be_bytes([p[4], p[5]]) + ext.len() as u16;
        p[4..6].copy_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&ext);
        p.extend_from_slice(&packet[40..]);
        p
    }

    /// An IPv4 packet with `options` in its header, the lengths and the
    /// header checksum fixed.
    fn with_options(packet: &[u8], options: &[u8]) -> Vec<u8> {
        let mut p = packet[..20].to_vec();
        p.extend_from_slice(options);
        p.extend_from_slice(&packet[20..]);
        p[0] = 0x40 | ((p[0] & 0xf) + options.len() as u8 / 4);
        let len = u16::from_be_bytes([p[2], p[3]]) + options.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        fix_ip_checksum(&mut p);
        p
    }

    /// Headers around the transport header do not change what NAT does to
    /// it: IPv4 options, IPv6 hop-by-hop and destination options, a routing
    /// header with no segments left, an atomic fragment; nor do bytes after
    /// the packet's end (Ethernet padding), which stay as they are.
    #[test]
    fn headers_in_between_and_padding() {
        let new = Endpoint::new(PUBLIC_V6, 40071);
        let expected_v6 = {
            let mut p = UDP6_IN;
            snat(&mut p, new.addr, new.port).unwrap();
            p
        };
        let hop_by_hop = [0, 0, 1, 4, 0, 0, 0, 0];
        let routing_done = [0, 0, 4, 0, 0, 0, 0, 0];
        let atomic_fragment = [0, 0, 0, 0, 0, 0, 0, 7];
        for (kind, ext) in [
            (0, hop_by_hop),
            (60, hop_by_hop),
            (43, routing_done),
            (44, atomic_fragment),
        ] {
            let mut p = with_extension(&UDP6_IN, kind, &ext);
            snat(&mut p, new.addr, new.port).unwrap();
            assert_eq!(
                p,
                with_extension(&expected_v6, kind, &ext),
                "extension header {kind}"
            );
        }
        let options = [0x94, 0x04, 0, 0]; // router alert
        let mut p = with_options(&SYN_IN, &options);
        snat(&mut p, PUBLIC_V4.into(), 40028).unwrap();
        forward(&mut p).unwrap();
        assert_eq!(p, with_options(&SYN_OUT, &options));
        let mut p = [&ECHO_IN[..], &[0xee; 6]].concat();
        snat(&mut p, PUBLIC_V4.into(), 44402).unwrap();
        forward(&mut p).unwrap();
        assert_eq!(p, [&ECHO_OUT[..], &[0xee; 6]].concat());
    }

    #[test]
    fn what_is_refused() {
        let mut more_fragments = SYN_IN;
        more_fragments[6] |= 0x20;
        fix_ip_checksum(&mut more_fragments);
        assert_refused(&more_fragments, NatError::Fragment);
        let mut later_fragment = ECHO_IN;
        later_fragment[7] = 1;
        assert_refused(&later_fragment, NatError::Fragment);
        let fragment6 = with_extension(&UDP6_IN, 44, &[0, 0, 0, 1, 0, 0, 0, 7]);
        assert_refused(&fragment6, NatError::Fragment);
        let routing = with_extension(&UDP6_IN, 43, &[0, 0, 4, 1, 0, 0, 0, 0]);
        assert_refused(&routing, NatError::Routing);
        // AH (51) in IPv6, ESP (50) and GRE (47) in IPv4.
        assert_refused(
            &with_extension(&UDP6_IN, 51, &[0, 1, 0, 0, 0, 0, 0, 0]),
            NatError::Protocol,
        );
        for protocol in [50, 47] {
            let mut p = SYN_IN;
            p[9] = protocol;
            assert_refused(&p, NatError::Protocol);
        }
        let mut icmpv6_in_ipv4 = ECHO_IN;
        icmpv6_in_ipv4[9] = 58;
        assert_refused(&icmpv6_in_ipv4, NatError::Protocol);
        let mut icmp_in_ipv6 = ECHO6_REPLY_IN;
        icmp_in_ipv6[6] = 1;
        assert_refused(&icmp_in_ipv6, NatError::Protocol);
        // ICMP errors and other ICMP types: destination unreachable (3),
        // time exceeded (11), a timestamp request (13); ICMPv6 packet too
        // big (2) and a neighbor solicitation (135).
        for icmp_type in [3, 11, 13] {
            let mut p = ECHO_IN;
            p[20] = icmp_type;
            assert_refused(&p, NatError::IcmpType);
        }
        for icmp_type in [2, 135] {
            let mut p = ECHO6_REPLY_IN;
            p[40] = icmp_type;
            assert_refused(&p, NatError::IcmpType);
        }
        let mut bad_offset = SYN_IN;
        bad_offset[32] = 0x40; // 4 words
        assert_refused(&bad_offset, NatError::Malformed);
        let mut long_options = SYN_IN;
        long_options[32] = 0xb0; // 11 words, more than the 10 there
        assert_refused(&long_options, NatError::Malformed);
        let mut bad_udp_length = UDP6_IN;
        bad_udp_length[45] = 7;
        assert_refused(&bad_udp_length, NatError::Malformed);
        let mut short_ihl = SYN_IN;
        short_ihl[0] = 0x44;
        assert_refused(&short_ihl, NatError::Malformed);
        assert_refused(&[0x75; 60], NatError::Malformed);
        for (packet, wrong) in [
            (&SYN_IN[..], IpAddr::V6(PUBLIC_V6)),
            (&UDP6_IN, IpAddr::V4(PUBLIC_V4)),
        ] {
            let mut p = packet.to_vec();
            assert_eq!(snat(&mut p, wrong, 1), Err(NatError::Family));
            assert_eq!(p, packet);
        }
    }

    fn samples() -> [&'static [u8]; 10] {
        [
            &SYN_IN,
            &SYN_OUT,
            &SYN_ACK_OUT,
            &SYN_ACK_IN,
            &ECHO_IN,
            &ECHO_OUT,
            &ECHO6_REPLY_OUT,
            &ECHO6_REPLY_IN,
            &UDP6_IN,
            &UDP6_OUT,
        ]
    }

    /// Every function on `packet`: no panic, and a packet it refuses is
    /// left as it was. A packet it rewrites keeps its checksums as right
    /// (or as wrong) as they were.
    fn try_all(packet: &[u8]) {
        let ipv6 = packet.first().is_some_and(|b| b >> 4 == 6);
        let addr = if ipv6 {
            IpAddr::V6(PUBLIC_V6)
        } else {
            IpAddr::V4(PUBLIC_V4)
        };
        let header_ok = |p: &[u8]| (!ipv6 && p.len() >= 20).then(|| verify(&p[..20]));
        for f in [snat, dnat] {
            let mut p = packet.to_vec();
            match f(&mut p, addr, 4242) {
                Ok(_) => {
                    assert_eq!(verify_transport(&p), verify_transport(packet), "{packet:02x?}");
                    assert_eq!(header_ok(&p), header_ok(packet), "{packet:02x?}");
                }
                Err(_) => assert_eq!(p, packet),
            }
        }
        let mut p = packet.to_vec();
        if forward(&mut p).is_err() {
            assert_eq!(p, packet);
        }
    }

    #[test]
    fn cut_anywhere() {
        for packet in samples() {
            for cut in 0..packet.len() {
                try_all(&packet[..cut]);
                // Each length field then points past the end.
                let mut p = packet[..cut].to_vec();
                let addr = if packet[0] >> 4 == 6 {
                    IpAddr::V6(PUBLIC_V6)
                } else {
                    IpAddr::V4(PUBLIC_V4)
                };
                assert_eq!(snat(&mut p, addr, 1).err(), Some(NatError::Malformed));
            }
        }
    }

    #[test]
    fn damaged_and_random_bytes() {
        let mut rng = Rng(0xdead_beef_0005);
        for _ in 0..20_000 {
            let packet = samples()[rng.below(10)];
            let mut p = packet.to_vec();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(p.len());
                p[at] = rng.next() as u8;
            }
            try_all(&p);
        }
        for _ in 0..20_000 {
            let n = rng.below(100);
            let mut p = rng.bytes(n);
            // Mostly IPv4 with or without options, or IPv6.
            if let Some(first) = p.first_mut() {
                *first = [0x45, 0x46, 0x60, *first][rng.below(4)];
            }
            try_all(&p);
        }
    }
}
