//! Step 05's NAT model (source and destination NAT, and the router's TTL
//! decrement) on arbitrary packets and addresses: never a panic; a packet
//! it refuses is left as it was; a packet it rewrites carries the new
//! address and port, differs only in the fields NAT owns (an address, a
//! port or echo identifier, the checksums, the TTL), and its checksums
//! still verify exactly when they did before. A checksum that was
//! computed from scratch stays what a recomputation gives (RFC 1624's
//! incremental update is exact), and rewriting back gives the original
//! bytes.
//!
//! Each record is one packet: its op picks the rewrite and the family of
//! the new address; its body is the new address (16 bytes; IPv4 takes the
//! first 4), the new port (2 bytes), then the packet.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use step03_ipv6::checksum::{checksum, transport_checksum, verify_transport};
use step05_full_tunnel::nat::{self, NatError, Protocol, Rewritten};
use tunlab_fuzz::Records;

/// Where the IP header ends and the transport header starts, and the
/// transport protocol, per etherparse. etherparse refuses an IPv6 packet
/// whose hop-by-hop header is not the first extension header (RFC 8200
/// §4.1 wants it first); step 03 walks past it anywhere, as Linux does,
/// so NAT rewrites such a packet, and for it the extension headers are
/// walked here (RFC 8200 §4.3 to §4.6, and the authentication header's
/// length in 4-byte units, RFC 4302 §2.2).
fn transport_start(packet: &[u8]) -> Option<(usize, u8)> {
    if let Ok(ip) = etherparse::IpSlice::from_slice(packet) {
        let start = ip.payload().payload.as_ptr() as usize - packet.as_ptr() as usize;
        return Some((start, ip.payload_ip_number().0));
    }
    if packet.first()? >> 4 != 6 || packet.len() < 40 {
        return None;
    }
    let (mut next, mut at) = (packet[6], 40);
    loop {
        let len = match next {
            0 | 43 | 60 => (usize::from(*packet.get(at + 1)?) + 1) * 8,
            44 => 8,
            51 => (usize::from(*packet.get(at + 1)?) + 2) * 4,
            _ => return Some((at, next)),
        };
        next = *packet.get(at)?;
        at += len;
    }
}

/// The IPv4 header checksum is valid; and whether it is the one a
/// recomputation gives (not only one that verifies).
fn ipv4_header(packet: &[u8]) -> Option<(bool, bool)> {
    if packet.first()? >> 4 != 4 {
        return None;
    }
    let len = usize::from(packet.first()? & 0x0f) * 4;
    let header = packet.get(..len)?;
    let mut zeroed = header.to_vec();
    zeroed[10..12].fill(0);
    let stored = u16::from_be_bytes([header[10], header[11]]);
    Some((checksum(header) == 0, checksum(&zeroed) == stored))
}

/// Whether the stored transport checksum is the recomputed one.
fn canonical(packet: &[u8]) -> bool {
    let Some((start, protocol)) = transport_start(packet) else {
        return false;
    };
    let Some(computed) = transport_checksum(packet) else {
        return false;
    };
    let at = match etherparse::IpNumber(protocol) {
        etherparse::IpNumber::TCP => 16,
        etherparse::IpNumber::UDP => 6,
        _ => 2,
    };
    packet.get(start + at..start + at + 2) == Some(&computed.to_be_bytes()[..])
}

fn address(ipv6: bool, bytes: &[u8; 16]) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

/// The bytes NAT may change: the addresses, the IPv4 header checksum, and
/// the first 18 bytes of the transport header (ports or identifier, and
/// the checksum, which is at most at offset 16).
fn nat_owned(packet: &[u8], at: usize) -> bool {
    let ipv6 = packet[0] >> 4 == 6;
    let addresses = if ipv6 { 8..40 } else { 12..20 };
    let start = transport_start(packet).map_or(usize::MAX, |(start, _)| start);
    addresses.contains(&at)
        || (!ipv6 && (10..12).contains(&at))
        || (start..start.saturating_add(18)).contains(&at)
}

fn check_rewrite(before: &[u8], after: &[u8], r: &Rewritten, to: IpAddr, port: u16) {
    assert_eq!((r.after.addr, r.after.port), (to, port), "{r}");
    let _ = r.to_string();
    for (at, (a, b)) in before.iter().zip(after).enumerate() {
        assert!(
            a == b || nat_owned(before, at),
            "{r}: byte {at} changed from {a:#04x} to {b:#04x}"
        );
    }

    let (ip_before, ip_after) = (ipv4_header(before), ipv4_header(after));
    assert_eq!(
        ip_before.map(|h| h.0),
        ip_after.map(|h| h.0),
        "{r}: IPv4 header checksum validity changed"
    );
    if ip_before.is_some_and(|h| h.1) {
        assert!(
            ip_after.is_some_and(|h| h.1),
            "{r}: the IPv4 header checksum is not the recomputed one"
        );
    }
    // ICMP for IPv4 has no pseudo-header, so its message can be all zero
    // but the checksum, the one corner where an update is not what a
    // recomputation gives (step 03's `update` says why).
    // (The message is the IP payload: bytes after the IPv4 total length
    // are padding, which no checksum covers.)
    let zero_icmp = |p: &[u8]| {
        r.protocol == Protocol::Icmp
            && etherparse::IpSlice::from_slice(p).is_ok_and(|ip| {
                ip.payload()
                    .payload
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == 0 || (2..4).contains(&i))
            })
    };
    if !zero_icmp(before) && !zero_icmp(after) {
        assert_eq!(
            verify_transport(before),
            verify_transport(after),
            "{r}: transport checksum validity changed"
        );
        if canonical(before) {
            assert!(
                canonical(after),
                "{r}: the transport checksum is not the recomputed one"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for (op, body) in Records(data) {
        let Some((addr, rest)) = body.split_first_chunk::<16>() else {
            continue;
        };
        let Some((port, packet)) = rest.split_first_chunk::<2>() else {
            continue;
        };
        let (to, port) = (address(op & 4 != 0, addr), u16::from_be_bytes(*port));
        let mut after = packet.to_vec();
        match op % 4 {
            which @ (0 | 1) => {
                let result = if which == 0 {
                    nat::snat(&mut after, to, port)
                } else {
                    nat::dnat(&mut after, to, port)
                };
                match result {
                    Err(e) => {
                        let _ = e.to_string();
                        assert_eq!(after, packet, "refused ({e}) but changed");
                    }
                    Ok(r) => {
                        check_rewrite(packet, &after, &r, to, port);
                        // Back again: the original, if its checksums were
                        // computed from scratch.
                        let mut back = after.clone();
                        let undo = if which == 0 {
                            nat::snat(&mut back, r.before.addr, r.before.port)
                        } else {
                            nat::dnat(&mut back, r.before.addr, r.before.port)
                        };
                        let undo = undo.unwrap_or_else(|e| panic!("{r}, then refused back ({e})"));
                        assert_eq!(undo.after, r.before);
                        assert_eq!(undo.peer.addr, r.peer.addr);
                        // An echo message's one identifier is both ends'
                        // "port": the peer's is the rewritten one now.
                        if matches!(r.protocol, Protocol::Tcp | Protocol::Udp) {
                            assert_eq!(undo.peer.port, r.peer.port);
                        }
                        let exact =
                            canonical(packet) && canonical(&after) && ipv4_header(packet).is_none_or(|h| h.1);
                        if exact {
                            assert_eq!(back, packet, "{r} and back is not the original");
                        }
                    }
                }
            }
            _ => match nat::forward(&mut after) {
                Err(NatError::TtlExceeded) => assert_eq!(after, packet),
                Err(e) => assert_eq!(after, packet, "refused ({e}) but changed"),
                Ok(f) => {
                    let _ = f.to_string();
                    let (old, new) = f.ttl;
                    assert_eq!(new + 1, old);
                    let ipv6 = packet[0] >> 4 == 6;
                    let ttl_at = if ipv6 { 7 } else { 8 };
                    assert_eq!(after[ttl_at], new);
                    for (at, (a, b)) in packet.iter().zip(&after).enumerate() {
                        assert!(
                            a == b || at == ttl_at || (!ipv6 && (10..12).contains(&at)),
                            "forward changed byte {at}"
                        );
                    }
                    let (b, a) = (ipv4_header(packet), ipv4_header(&after));
                    assert_eq!(
                        b.map(|h| h.0),
                        a.map(|h| h.0),
                        "forward changed the header checksum's validity"
                    );
                    if b.is_some_and(|h| h.1) {
                        assert!(
                            a.is_some_and(|h| h.1),
                            "forward: header checksum not the recomputed one"
                        );
                    }
                }
            },
        }
    }
});
