//! Golden tests of `nat` against what Linux did, over the flow recorded in
//! lab 05 (`pcaps/step05/`): client 10.0.0.2 fetches a page from the
//! internet host 198.51.100.2 with curl and pings it, through the tunnel,
//! and the server forwards with nftables `masquerade`.
//!
//! - `server-tun.pcap` (LINKTYPE_RAW): what the server's TUN device read
//!   from the tunnel (the client's packets, before NAT) and wrote into it
//!   (the replies, after NAT).
//! - `internet.pcap` (Ethernet): tcpdump on the server's internet-side
//!   veth, the same flow as the internet saw it, from and to 198.51.100.1.
//!
//! Every packet the TUN read for the internet host is paired with its
//! twin in `internet.pcap` (same protocol, same destination, and every
//! transport byte NAT leaves alone: sequence numbers, flags, options,
//! payload, ICMP sequence), which tells us the port masquerade chose. Then
//! `snat` and `forward` on the inside packet must give the outside packet,
//! byte for byte. Each reply from the internet host is then rewritten with
//! `dnat` to the client's address and port, as the pairs above map them
//! (conntrack's part), and `forward`ed: it must be, byte for byte, a packet
//! the TUN wrote. No packet may be left over on either side.
//!
//! To try another recording before copying it to `pcaps/step05/`, set
//! `STEP05_PCAPS` to its directory (the snapshot then shows what changed).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use etherparse::{IpNumber, IpSlice, TransportSlice};
use step01_ping_tun::Summary;
use step01_ping_tun::pcap::{self, DataLink};
use step03_ipv6::checksum::{fold, pseudo_header_v4, pseudo_header_v6, verify, verify_transport};
use step05_full_tunnel::nat::{self, Endpoint};

/// The server's address on the internet side, which masquerade gives.
const PUBLIC_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PUBLIC_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);

fn public(family_of: IpAddr) -> IpAddr {
    match family_of {
        IpAddr::V4(_) => PUBLIC_V4.into(),
        IpAddr::V6(_) => PUBLIC_V6.into(),
    }
}

/// In the tunnel's prefixes, 10.0.0.0/24 and fd00::/64.
fn in_tunnel(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.octets()[..3] == [10, 0, 0],
        IpAddr::V6(a) => a.segments()[..4] == [0xfd00, 0, 0, 0],
    }
}

fn fixture(name: &str) -> PathBuf {
    let dir = match std::env::var_os("STEP05_PCAPS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../pcaps/step05"),
    };
    dir.join(name)
}

/// One recorded IP packet.
struct Recorded {
    time: Duration,
    data: Vec<u8>,
}

fn server_tun() -> Vec<Recorded> {
    let path = fixture("server-tun.pcap");
    let packets = pcap::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    packets
        .into_iter()
        .map(|p| Recorded {
            time: p.timestamp,
            data: p.data,
        })
        .collect()
}

/// The IP packets of the internet-side capture (Ethernet frames).
fn internet() -> Vec<Recorded> {
    let path = fixture("internet.pcap");
    let (link, frames) = pcap::read_any(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(link, DataLink::ETHERNET, "{}", path.display());
    frames
        .iter()
        .filter_map(|f| {
            pcap::ip_in_ethernet(&f.data).map(|ip| Recorded {
                time: f.timestamp,
                data: ip.to_vec(),
            })
        })
        .collect()
}

/// What identifies a packet of the flow on both sides of the NAT.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Flow {
    /// The IP protocol number.
    protocol: u8,
    src: Endpoint,
    dst: Endpoint,
    /// The transport message with the bytes NAT may change (ports or echo
    /// identifier, and checksum) zeroed: what must be the same on both
    /// sides.
    invariant: Vec<u8>,
}

/// The flow of a TCP segment, UDP datagram or echo message; `None` for
/// anything else (neighbour discovery, MLD, ICMP errors).
fn flow(packet: &[u8]) -> Option<Flow> {
    let ip = IpSlice::from_slice(packet).ok()?;
    let (src, dst) = (ip.source_addr(), ip.destination_addr());
    // The ports (an echo message's identifier stands for both), the
    // message, and where in it the ports and the checksum are.
    let echo = |message: &[u8]| -> Option<(u16, u16)> {
        let id = u16::from_be_bytes([*message.get(4)?, *message.get(5)?]);
        Some((id, id))
    };
    let (ports, message, masked): ((u16, u16), &[u8], [std::ops::Range<usize>; 2]) =
        match etherparse::SlicedPacket::from_ip(packet).ok()?.transport? {
            TransportSlice::Tcp(t) => ((t.source_port(), t.destination_port()), t.slice(), [0..4, 16..18]),
            TransportSlice::Udp(u) => ((u.source_port(), u.destination_port()), u.slice(), [0..4, 6..8]),
            TransportSlice::Icmpv4(i) if matches!(i.type_u8(), 0 | 8) => {
                (echo(i.slice())?, i.slice(), [2..4, 4..6])
            }
            TransportSlice::Icmpv6(i) if matches!(i.type_u8(), 128 | 129) => {
                (echo(i.slice())?, i.slice(), [2..4, 4..6])
            }
            _ => return None,
        };
    let mut invariant = message.to_vec();
    for range in masked {
        invariant[range].fill(0);
    }
    Some(Flow {
        protocol: ip.payload_ip_number().0,
        src: Endpoint::new(src, ports.0),
        dst: Endpoint::new(dst, ports.1),
        invariant,
    })
}

/// Whether `packet` is ICMPv6 (or ICMP), and its type.
fn icmp_type(packet: &[u8]) -> Option<(bool, u8)> {
    match etherparse::SlicedPacket::from_ip(packet).ok()?.transport? {
        TransportSlice::Icmpv4(i) => Some((false, i.type_u8())),
        TransportSlice::Icmpv6(i) => Some((true, i.type_u8())),
        _ => None,
    }
}

/// Packets of a recording, by index, with their flows.
type Flows = Vec<(usize, Flow)>;

/// What the TUN device read from the client for the internet, and what it
/// wrote to the client from the internet; packets to and from the server's
/// own tunnel addresses and link-local ones are left out.
fn tun_sides(packets: &[Recorded]) -> (Flows, Flows) {
    let (mut read, mut written) = (Vec::new(), Vec::new());
    for (i, p) in packets.iter().enumerate() {
        let Some(f) = flow(&p.data) else { continue };
        let global = |a: IpAddr| match a {
            IpAddr::V4(a) => !a.is_multicast() && !a.is_broadcast(),
            IpAddr::V6(a) => !a.is_multicast() && !a.is_unicast_link_local(),
        };
        if in_tunnel(f.src.addr) && !in_tunnel(f.dst.addr) && global(f.dst.addr) {
            read.push((i, f));
        } else if in_tunnel(f.dst.addr) && !in_tunnel(f.src.addr) && global(f.src.addr) {
            written.push((i, f));
        }
    }
    (read, written)
}

/// conntrack's table, as far as this flow needs it: each (protocol,
/// client end, remote end) and the public port masquerade chose for it.
#[derive(Default)]
struct Mappings {
    out: HashMap<(u8, Endpoint, Endpoint), u16>,
    /// (protocol, remote end, public end) to the client's end.
    back: HashMap<(u8, Endpoint, Endpoint), Endpoint>,
}

impl Mappings {
    fn learn(&mut self, protocol: u8, client: Endpoint, remote: Endpoint, port: u16) {
        let public = Endpoint::new(public(client.addr), port);
        // An echo reply carries the one identifier as both "ports".
        let remote_back = if is_echo(protocol) {
            Endpoint::new(remote.addr, port)
        } else {
            remote
        };
        let known = self.out.insert((protocol, client, remote), port);
        assert!(
            known.is_none_or(|p| p == port),
            "{client:?} to {remote:?} was given port {port} after {known:?}"
        );
        let other = self.back.insert((protocol, remote_back, public), client);
        assert!(
            other.is_none_or(|c| c == client),
            "{public:?} stands for {client:?} and {other:?}"
        );
    }
}

fn is_echo(protocol: u8) -> bool {
    protocol == IpNumber::ICMP.0 || protocol == IpNumber::IPV6_ICMP.0
}

/// The part of a packet's summary after the addresses: flags, sequence
/// numbers and lengths, or the echo type and sequence.
fn tail(packet: &[u8]) -> String {
    let line = Summary(packet).to_string();
    let after_ports = line.split_once(": ").map_or(line.as_str(), |(_, rest)| rest);
    // The echo line repeats the identifier, which NAT changes: the NAT
    // line shows both.
    match after_ports.split_once(", id ") {
        Some((kind, rest)) => format!("{kind}, {}", rest.split_once(", ").map_or(rest, |(_, r)| r)),
        None => after_ports.to_string(),
    }
}

#[test]
fn our_rewrite_is_the_kernels_byte_for_byte() {
    let tun = server_tun();
    let wire = internet();
    let (read, written) = tun_sides(&tun);
    let from_public: Flows = wire
        .iter()
        .enumerate()
        .filter_map(|(i, p)| flow(&p.data).map(|f| (i, f)))
        .filter(|(_, f)| f.src.addr == public(f.src.addr))
        .collect();

    let mut lines: Vec<(Duration, String)> = Vec::new();
    let mut mappings = Mappings::default();
    let mut used = vec![false; wire.len()];
    let (mut out_tcp, mut out_echo) = (0, 0);
    for (i, inside) in &read {
        let line = Summary(&tun[*i].data).to_string();
        // The twin: the first unused packet from the public address with
        // the same protocol, destination and invariant bytes.
        let twin = from_public.iter().find(|(j, f)| {
            !used[*j]
                && f.protocol == inside.protocol
                && f.dst.addr == inside.dst.addr
                && (is_echo(f.protocol) || f.dst.port == inside.dst.port)
                && f.invariant == inside.invariant
        });
        let Some((j, outside)) = twin else {
            panic!("the server's TUN read this, and it never left for the internet: {line}");
        };
        used[*j] = true;
        let port = outside.src.port;
        mappings.learn(inside.protocol, inside.src, inside.dst, port);

        // The kernel decrements the TTL (ip_forward) before masquerade
        // runs (postrouting); each update is exact, so the order changes
        // nothing, and NAT first reads better.
        let mut packet = tun[*i].data.clone();
        let rewritten =
            nat::snat(&mut packet, public(inside.src.addr), port).unwrap_or_else(|e| panic!("{e}: {line}"));
        let forwarded = nat::forward(&mut packet).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(
            packet,
            wire[*j].data,
            "{rewritten}, {forwarded}\n  ours:   {}\n  kernel: {}",
            Summary(&packet),
            Summary(&wire[*j].data)
        );
        lines.push((
            wire[*j].time,
            format!("{rewritten}, {forwarded}: {}", tail(&packet)),
        ));
        match inside.protocol {
            6 => out_tcp += 1,
            1 | 58 => out_echo += 1,
            _ => {}
        }
    }
    if let Some((j, _)) = from_public.iter().find(|(j, _)| !used[*j]) {
        panic!(
            "the kernel sent this, and the server's TUN never read it: {}",
            Summary(&wire[*j].data)
        );
    }

    // The replies: everything from the internet host to the public address
    // that is not neighbour discovery.
    let mut done = vec![false; tun.len()];
    let (mut back_tcp, mut back_echo) = (0, 0);
    for p in &wire {
        let Ok(ip) = IpSlice::from_slice(&p.data) else {
            continue;
        };
        let (src, dst) = (ip.source_addr(), ip.destination_addr());
        if dst != public(dst) || src == dst {
            continue;
        }
        let line = Summary(&p.data).to_string();
        let Some(outside) = flow(&p.data) else {
            match icmp_type(&p.data) {
                // Neighbour discovery, between the two veths.
                Some((true, 133..=137)) => {}
                // An ICMP error quotes the packet it is about, and the
                // kernel rewrites that quote too (RFC 5508 §4); our
                // model does not, so the snapshot shows it as such.
                Some((false, 3 | 4 | 5 | 11 | 12) | (true, 1..=4)) => {
                    lines.push((p.time, format!("not modelled: {line}")));
                }
                _ => panic!("a packet from the internet our NAT does not translate: {line}"),
            }
            continue;
        };
        // The kernel finishes a partial checksum before the TUN device
        // gets the packet; from a capture that holds one, no rewrite can
        // give what the TUN wrote.
        if let Some(problem) = checksum_problem(&p.data) {
            panic!("{problem} in internet.pcap (see internet_capture_has_whole_checksums): {line}");
        }
        let Some(client) = mappings.back.get(&(outside.protocol, outside.src, outside.dst)) else {
            panic!("a reply to nothing the client sent: {line}");
        };
        let mut packet = p.data.clone();
        let rewritten =
            nat::dnat(&mut packet, client.addr, client.port).unwrap_or_else(|e| panic!("{e}: {line}"));
        let forwarded = nat::forward(&mut packet).unwrap_or_else(|e| panic!("{e}: {line}"));
        let Some((i, _)) = written.iter().find(|(i, _)| !done[*i] && tun[*i].data == packet) else {
            let near = written
                .iter()
                .filter(|(_, f)| f.invariant == outside.invariant)
                .map(|(i, _)| format!("\n  kernel: {}", Summary(&tun[*i].data)))
                .collect::<String>();
            panic!(
                "{rewritten}, {forwarded}: not what the server's TUN wrote\n  ours:   {}{near}",
                Summary(&packet)
            );
        };
        done[*i] = true;
        lines.push((p.time, format!("{rewritten}, {forwarded}: {}", tail(&packet))));
        match outside.protocol {
            6 => back_tcp += 1,
            1 | 58 => back_echo += 1,
            _ => {}
        }
    }
    if let Some((i, _)) = written.iter().find(|(i, _)| !done[*i]) {
        panic!(
            "the server's TUN wrote this, and it never came from the internet: {}",
            Summary(&tun[*i].data)
        );
    }

    // An HTTP fetch (a handshake, a request, a response, two FINs) and a
    // ping, both ways.
    assert!(
        out_tcp >= 4 && back_tcp >= 4,
        "TCP: {out_tcp} out, {back_tcp} back"
    );
    assert!(
        out_echo >= 1 && back_echo >= 1,
        "echo: {out_echo} out, {back_echo} back"
    );

    lines.sort_by_key(|(t, _)| *t);
    let text = lines.iter().fold(String::new(), |mut s, (_, l)| {
        writeln!(s, "{l}").unwrap();
        s
    });
    insta::assert_snapshot!("nat_pairs", text);
}

/// What is wrong with a stored transport checksum that does not verify:
/// "partial" when it holds the folded pseudo-header sum, uncomplemented,
/// as Linux leaves it for a network card to finish (CHECKSUM_PARTIAL).
fn checksum_problem(packet: &[u8]) -> Option<String> {
    let sliced = etherparse::SlicedPacket::from_ip(packet).ok()?;
    let ip = IpSlice::from_slice(packet).ok()?;
    let (name, stored, len) = match sliced.transport? {
        TransportSlice::Tcp(t) => ("TCP", t.checksum(), t.slice().len()),
        TransportSlice::Udp(u) => ("UDP", u.checksum(), usize::from(u.length())),
        TransportSlice::Icmpv4(i) => ("ICMP", i.checksum(), i.slice().len()),
        TransportSlice::Icmpv6(i) => ("ICMP6", i.checksum(), i.slice().len()),
        _ => return None,
    };
    if verify_transport(packet) != Some(false) {
        return None;
    }
    let protocol = ip.payload_ip_number().0;
    let pseudo = match &ip {
        IpSlice::Ipv4(v4) => {
            let h = v4.header();
            pseudo_header_v4(h.source_addr(), h.destination_addr(), protocol, len as u16)
        }
        IpSlice::Ipv6(v6) => {
            let h = v6.header();
            pseudo_header_v6(h.source_addr(), h.destination_addr(), protocol, len as u32)
        }
    };
    let kind = if stored == !fold(pseudo) {
        "partial (pseudo-header only)"
    } else {
        "wrong"
    };
    Some(format!("{name} checksum {kind}"))
}

/// Every checksum in the internet-side capture is whole and right. With
/// transmit checksum offload on (the default on a veth), Linux leaves the
/// TCP and UDP checksums of what a host sends for the card to finish, and
/// a capture on the other end of the veth records them unfinished: the
/// internet host's veth must have it off (`ethtool -K veth0 tx off`), or
/// the replies cannot match what the server's TUN wrote (the kernel
/// finishes the checksum before handing a packet to a TUN device).
#[test]
fn internet_capture_has_whole_checksums() {
    let mut problems: HashMap<String, usize> = HashMap::new();
    for p in internet() {
        let Ok(ip) = IpSlice::from_slice(&p.data) else {
            continue;
        };
        let direction = format!("{} > {}", ip.source_addr(), ip.destination_addr());
        if let IpSlice::Ipv4(v4) = &ip
            && !verify(v4.header().slice())
        {
            *problems
                .entry(format!("{direction}: IPv4 header checksum wrong"))
                .or_default() += 1;
        }
        if let Some(problem) = checksum_problem(&p.data) {
            *problems.entry(format!("{direction}: {problem}")).or_default() += 1;
        }
    }
    let mut report: Vec<String> = problems
        .iter()
        .map(|(k, n)| format!("{k}: {n} packets"))
        .collect();
    report.sort();
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// Every checksum the server's TUN device read and wrote is right too:
/// the client's kernel computed them, and our server's kernel finished or
/// updated them.
#[test]
fn server_tun_has_whole_checksums() {
    for p in server_tun() {
        assert_eq!(checksum_problem(&p.data), None, "{}", Summary(&p.data));
    }
}
