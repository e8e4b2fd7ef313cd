//! Reading packets for people: one tcpdump-like line per IP packet.
//!
//! [`Summary`] decodes any bytes (a packet from the TUN device, a capture, or
//! garbage) into one line, the way `tcpdump -n` would print it. The log lines
//! of every step, the `--pcap` decoder and the snapshot tests all use it.
//! Parsing is etherparse's; nothing here can panic, whatever the bytes.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{
    IcmpEchoHeader, Icmpv4Slice, Icmpv4Type, Icmpv6Slice, Icmpv6Type, IpNumber, IpPayloadSlice, Ipv4Slice,
    Ipv6Slice, TcpSlice, UdpSlice,
};

// ANCHOR: summary
/// One line describing an IP packet, e.g.
/// `IP 10.0.0.1 > 10.0.0.2: ICMP echo request, id 7, seq 1, length 64`.
pub struct Summary<'a>(pub &'a [u8]);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        match bytes.first().map(|b| b >> 4) {
            None => f.write_str("[empty packet]"),
            Some(4) => match Ipv4Slice::from_slice(bytes) {
                Ok(ip) => {
                    let h = ip.header();
                    let (src, dst) = (h.source_addr(), h.destination_addr());
                    f.write_str("IP ")?;
                    if h.ihl() > 5 {
                        write!(f, "(options {} bytes) ", usize::from(h.ihl() - 5) * 4)?;
                    }
                    if ip.is_payload_fragmented() {
                        write!(f, "{src} > {dst}: ")?;
                        return fragment(
                            f,
                            h.identification(),
                            h.fragments_offset().value() * 8,
                            h.more_fragments(),
                            ip.payload(),
                        );
                    }
                    transport(f, Addrs::V4(src, dst), ip.payload())
                }
                Err(e) => write!(f, "[bad IPv4 packet, {} bytes: {e}]", bytes.len()),
            },
            Some(6) => match Ipv6Slice::from_slice(bytes) {
                Ok(ip) => {
                    let h = ip.header();
                    write!(f, "IP6 ")?;
                    if ip.is_payload_fragmented() {
                        write!(f, "{} > {}: ", h.source_addr(), h.destination_addr())?;
                        return write!(
                            f,
                            "fragment, proto {}, length {}",
                            proto_name(ip.payload().ip_number),
                            ip.payload().payload.len()
                        );
                    }
                    transport(f, Addrs::V6(h.source_addr(), h.destination_addr()), ip.payload())
                }
                Err(e) => write!(f, "[bad IPv6 packet, {} bytes: {e}]", bytes.len()),
            },
            Some(v) => write!(f, "[not IP: version {v}, {} bytes]", bytes.len()),
        }
    }
}
// ANCHOR_END: summary

enum Addrs {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

impl Addrs {
    /// `a > b`, or with ports `a.p > b.q` as tcpdump writes them.
    fn write(&self, f: &mut fmt::Formatter<'_>, ports: Option<(u16, u16)>) -> fmt::Result {
        match (self, ports) {
            (Addrs::V4(s, d), None) => write!(f, "{s} > {d}: "),
            (Addrs::V6(s, d), None) => write!(f, "{s} > {d}: "),
            (Addrs::V4(s, d), Some((sp, dp))) => write!(f, "{s}.{sp} > {d}.{dp}: "),
            (Addrs::V6(s, d), Some((sp, dp))) => write!(f, "{s}.{sp} > {d}.{dp}: "),
        }
    }
}

fn fragment(
    f: &mut fmt::Formatter<'_>,
    id: u16,
    offset: u16,
    more: bool,
    payload: &IpPayloadSlice<'_>,
) -> fmt::Result {
    write!(
        f,
        "fragment id {id}, offset {offset}{}, proto {}, length {}",
        if more { ", more fragments" } else { "" },
        proto_name(payload.ip_number),
        payload.payload.len()
    )
}

fn proto_name(n: IpNumber) -> String {
    match n {
        IpNumber::ICMP => "ICMP".into(),
        IpNumber::IPV6_ICMP => "ICMP6".into(),
        IpNumber::TCP => "TCP".into(),
        IpNumber::UDP => "UDP".into(),
        other => format!("ip-proto-{}", other.0),
    }
}

fn transport(f: &mut fmt::Formatter<'_>, addrs: Addrs, payload: &IpPayloadSlice<'_>) -> fmt::Result {
    let data = payload.payload;
    match payload.ip_number {
        IpNumber::ICMP => {
            addrs.write(f, None)?;
            match Icmpv4Slice::from_slice(data) {
                Ok(icmp) => icmpv4(f, &icmp),
                Err(_) => write!(f, "ICMP [truncated], length {}", data.len()),
            }
        }
        IpNumber::IPV6_ICMP => {
            addrs.write(f, None)?;
            match Icmpv6Slice::from_slice(data) {
                Ok(icmp) => icmpv6(f, &icmp),
                Err(_) => write!(f, "ICMP6 [truncated], length {}", data.len()),
            }
        }
        IpNumber::TCP => match TcpSlice::from_slice(data) {
            Ok(tcp) => {
                addrs.write(f, Some((tcp.source_port(), tcp.destination_port())))?;
                let flags: String = [
                    (tcp.syn(), 'S'),
                    (tcp.fin(), 'F'),
                    (tcp.rst(), 'R'),
                    (tcp.psh(), 'P'),
                    (tcp.ack(), '.'),
                ]
                .iter()
                .filter_map(|&(on, c)| on.then_some(c))
                .collect();
                write!(f, "Flags [{flags}], seq {}", tcp.sequence_number())?;
                if tcp.ack() {
                    write!(f, ", ack {}", tcp.acknowledgment_number())?;
                }
                write!(f, ", win {}, length {}", tcp.window_size(), tcp.payload().len())
            }
            Err(_) => {
                addrs.write(f, None)?;
                write!(f, "TCP [truncated], length {}", data.len())
            }
        },
        IpNumber::UDP => match UdpSlice::from_slice(data) {
            Ok(udp) => {
                addrs.write(f, Some((udp.source_port(), udp.destination_port())))?;
                write!(f, "UDP, length {}", udp.payload().len())
            }
            Err(_) => {
                addrs.write(f, None)?;
                write!(f, "UDP [truncated], length {}", data.len())
            }
        },
        other => {
            addrs.write(f, None)?;
            write!(f, "{}, length {}", proto_name(other), data.len())
        }
    }
}

fn echo(f: &mut fmt::Formatter<'_>, family: &str, what: &str, e: IcmpEchoHeader, len: usize) -> fmt::Result {
    write!(
        f,
        "{family} echo {what}, id {}, seq {}, length {len}",
        e.id, e.seq
    )
}

fn icmpv4(f: &mut fmt::Formatter<'_>, icmp: &Icmpv4Slice<'_>) -> fmt::Result {
    let len = icmp.slice().len();
    match icmp.icmp_type() {
        Icmpv4Type::EchoRequest(e) => echo(f, "ICMP", "request", e, len),
        Icmpv4Type::EchoReply(e) => echo(f, "ICMP", "reply", e, len),
        Icmpv4Type::DestinationUnreachable(_) => write!(
            f,
            "ICMP destination unreachable (code {}), length {len}",
            icmp.code_u8()
        ),
        Icmpv4Type::TimeExceeded(_) => {
            write!(f, "ICMP time exceeded (code {}), length {len}", icmp.code_u8())
        }
        _ => write!(
            f,
            "ICMP type {} code {}, length {len}",
            icmp.type_u8(),
            icmp.code_u8()
        ),
    }
}

fn icmpv6(f: &mut fmt::Formatter<'_>, icmp: &Icmpv6Slice<'_>) -> fmt::Result {
    let len = icmp.slice().len();
    let name = match icmp.icmp_type() {
        Icmpv6Type::EchoRequest(e) => return echo(f, "ICMP6,", "request", e, len),
        Icmpv6Type::EchoReply(e) => return echo(f, "ICMP6,", "reply", e, len),
        Icmpv6Type::DestinationUnreachable(_) => "destination unreachable",
        Icmpv6Type::PacketTooBig { .. } => "packet too big",
        Icmpv6Type::TimeExceeded(_) => "time exceeded",
        Icmpv6Type::ParameterProblem(_) => "parameter problem",
        Icmpv6Type::RouterSolicitation => "router solicitation",
        Icmpv6Type::RouterAdvertisement(_) => "router advertisement",
        Icmpv6Type::NeighborSolicitation => "neighbor solicitation",
        Icmpv6Type::NeighborAdvertisement(_) => "neighbor advertisement",
        Icmpv6Type::Redirect => "redirect",
        Icmpv6Type::Unknown { type_u8, .. } => match type_u8 {
            // RFC 2710 and RFC 3810: Multicast Listener Discovery.
            130 => "multicast listener query",
            131 => "multicast listener report",
            132 => "multicast listener done",
            143 => "multicast listener report v2",
            _ => {
                return write!(f, "ICMP6, type {type_u8} code {}, length {len}", icmp.code_u8());
            }
        },
    };
    write!(f, "ICMP6, {name}, length {len}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(bytes: &[u8]) -> String {
        Summary(bytes).to_string()
    }

    #[test]
    fn echo_request() {
        // 10.0.0.1 > 10.0.0.2, ICMP echo request id 0x1234 seq 1, payload "hi".
        let p = [
            0x45, 0, 0, 30, 0, 0, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, //
            8, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i',
        ];
        assert_eq!(
            line(&p),
            "IP 10.0.0.1 > 10.0.0.2: ICMP echo request, id 4660, seq 1, length 10"
        );
    }

    #[test]
    fn udp_and_tcp() {
        let udp = [
            0x45, 0, 0, 29, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, //
            0x13, 0x88, 0, 53, 0, 9, 0, 0, 0xaa,
        ];
        assert_eq!(line(&udp), "IP 10.0.0.1.5000 > 10.0.0.2.53: UDP, length 1");
        let tcp = [
            0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, //
            0x9c, 0x40, 0, 80, 0, 0, 0, 7, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0,
        ];
        assert_eq!(
            line(&tcp),
            "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 7, win 64240, length 0"
        );
    }

    #[test]
    fn fragment_and_options() {
        // More-fragments set, offset 0, with a 4-byte option (IHL 6).
        let p = [
            0x46, 0, 0, 32, 0, 9, 0x20, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 1, 1, 1, 0, //
            8, 0, 0, 0, 0, 1, 0, 1,
        ];
        assert_eq!(
            line(&p),
            "IP (options 4 bytes) 10.0.0.1 > 10.0.0.2: fragment id 9, offset 0, more fragments, proto ICMP, length 8"
        );
    }

    #[test]
    fn router_solicitation() {
        let mut p = vec![0x60, 0, 0, 0, 0, 8, 58, 255];
        p.extend_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"ff02::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[133, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            line(&p),
            "IP6 fe80::1 > ff02::2: ICMP6, router solicitation, length 8"
        );
    }

    #[test]
    fn garbage_never_panics() {
        assert_eq!(line(&[]), "[empty packet]");
        assert_eq!(line(&[0x00, 1, 2]), "[not IP: version 0, 3 bytes]");
        assert!(line(&[0x45, 0, 0]).starts_with("[bad IPv4 packet, 3 bytes"));
        assert!(line(&[0x60, 0]).starts_with("[bad IPv6 packet, 2 bytes"));
        // Every prefix of a valid packet, and every single-byte corruption of it.
        let p = [
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0, 80, 0, 80, 0, 0, 0, 1,
        ];
        for n in 0..=p.len() {
            let _ = line(&p[..n]);
        }
        for i in 0..p.len() {
            for v in [0x00, 0x0f, 0x4f, 0xff] {
                let mut q = p;
                q[i] = v;
                let _ = line(&q);
            }
        }
    }
}
