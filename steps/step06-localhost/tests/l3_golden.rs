//! Golden test of the layer-3 design (`l3`) against what Linux did, over
//! the fetch recorded in lab 06 (`pcaps/step06/`): a visitor, 198.51.100.2,
//! fetches http://198.51.100.1:18080/ from the server, which runs
//! `vpn-server --forward 18080=10.0.0.2:8080`: its nftables table DNATs the
//! public port to the client's tunnel address and masquerades the
//! connection into the TUN device.
//!
//! - `l3-outside.pcap` (Ethernet): tcpdump on the server's internet-side
//!   veth, `tcp port 18080`: the connection as the visitor saw it.
//! - `l3-server-tun.pcap` (LINKTYPE_RAW): what the server's TUN device
//!   wrote (the visitor's packets, after DNAT to 10.0.0.2:8080 and
//!   masquerade to 10.0.0.1) and read (the client's replies, before the
//!   kernel undid both).
//!
//! Each packet is paired with its twin on the other side by the bytes NAT
//! leaves alone: the whole TCP segment but its ports and checksum
//! (sequence and acknowledgment numbers, flags, window, options, payload).
//! The twin of a visitor's packet tells us the port masquerade chose; then
//! step 05's `dnat`, `forward` and `snat` must turn the one into the other
//! byte for byte, both ways, and nothing may be left over on either side.
//!
//! The order is the kernel's, in both directions: the prerouting hook
//! rewrites the destination (the DNAT rule for a visitor's packet;
//! conntrack undoing the masquerade for a reply), `ip_forward` decrements
//! the TTL, and the postrouting hook rewrites the source (the masquerade;
//! conntrack undoing the DNAT). Each checksum update is exact, so every
//! other order gives the same bytes: the test checks that too.
//!
//! To try another recording before copying it to `pcaps/step06/`, set
//! `STEP06_PCAPS` to its directory (the snapshot then shows what changed).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use step01_ping_tun::Summary;
use step01_ping_tun::pcap::{self, DataLink};
use step03_ipv6::checksum::{verify, verify_transport};
use step05_full_tunnel::nat::{self, NatError};

/// The server's internet-side address, and the public port it forwards.
const PUBLIC: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 18080);
/// Where `--forward 18080=10.0.0.2:8080` sends it: the client's service.
const SERVICE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 8080);
/// The server's tunnel address, which masquerade gives the visitor.
const SERVER_TUN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn fixture(name: &str) -> PathBuf {
    let dir = match std::env::var_os("STEP06_PCAPS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../pcaps/step06"),
    };
    dir.join(name)
}

/// One recorded IP packet.
struct Recorded {
    time: Duration,
    data: Vec<u8>,
}

fn missing(path: &std::path::Path, e: std::io::Error) -> ! {
    panic!(
        "{}: {e} (lab 06 records it: `cargo run -p tunlab -- lab 06`; see pcaps/README.md)",
        path.display()
    )
}

/// The IP packets of the server's internet side (Ethernet frames).
fn outside() -> Vec<Recorded> {
    let path = fixture("l3-outside.pcap");
    let (link, frames) = pcap::read_any(&path).unwrap_or_else(|e| missing(&path, e));
    assert_eq!(link, DataLink::ETHERNET, "{}", path.display());
    frames
        .iter()
        .map(|f| {
            let ip = pcap::ip_in_ethernet(&f.data)
                .unwrap_or_else(|| panic!("a frame that is not IP in {}", path.display()));
            Recorded {
                time: f.timestamp,
                data: ip.to_vec(),
            }
        })
        .collect()
}

/// What the server's TUN device read and wrote.
fn server_tun() -> Vec<Recorded> {
    let path = fixture("l3-server-tun.pcap");
    let packets = pcap::read(&path).unwrap_or_else(|e| missing(&path, e));
    packets
        .into_iter()
        .map(|p| Recorded {
            time: p.timestamp,
            data: p.data,
        })
        .collect()
}

/// A TCP segment over IPv4: its ends, and what NAT leaves alone.
#[derive(Debug)]
struct Segment {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    /// The TCP segment with the ports (bytes 0 to 3) and the checksum (16
    /// and 17) zeroed: the same on both sides of the NAT.
    invariant: Vec<u8>,
    /// The payload's length.
    data_len: usize,
}

fn segment(packet: &[u8]) -> Option<Segment> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(tcp))) = (sliced.net, sliced.transport) else {
        return None;
    };
    let h = ip.header();
    let mut invariant = tcp.slice().to_vec();
    invariant[0..4].fill(0);
    invariant[16..18].fill(0);
    Some(Segment {
        src: SocketAddrV4::new(h.source_addr(), tcp.source_port()),
        dst: SocketAddrV4::new(h.destination_addr(), tcp.destination_port()),
        invariant,
        data_len: tcp.payload().len(),
    })
}

/// What a TUN device sends of its own accord once it is up, which has
/// nothing to do with the forwarded connection: an IPv6 router
/// solicitation (ICMPv6 type 133, RFC 4861 §4.1) and MLDv2 listener
/// reports (143, RFC 3810 §5.2) for the groups it joins.
fn tun_chatter(packet: &[u8]) -> Option<&'static str> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let Some(NetSlice::Ipv6(ip)) = &sliced.net else {
        return None;
    };
    if !ip.header().source_addr().is_unicast_link_local() {
        return None;
    }
    match sliced.transport? {
        TransportSlice::Icmpv6(i) if i.type_u8() == 133 => Some("router solicitation"),
        TransportSlice::Icmpv6(i) if i.type_u8() == 143 => Some("MLDv2 report"),
        _ => None,
    }
}

/// Packets of a recording, by index, with their segments.
type Segments = Vec<(usize, Segment)>;

/// The three rewrites of a forwarded packet, in the kernel's order:
/// prerouting's destination rewrite, `ip_forward`'s TTL, postrouting's
/// source rewrite.
#[derive(Debug, Clone, Copy)]
struct Rewrites {
    dnat: SocketAddrV4,
    snat: SocketAddrV4,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Dnat,
    Forward,
    Snat,
}

impl Rewrites {
    /// `packet` after the three rewrites in `order`, and what each did.
    fn apply(self, packet: &[u8], order: [Op; 3]) -> Result<(Vec<u8>, Vec<String>), NatError> {
        let mut p = packet.to_vec();
        let mut said = Vec::new();
        for op in order {
            said.push(match op {
                Op::Dnat => nat::dnat(&mut p, (*self.dnat.ip()).into(), self.dnat.port())?.to_string(),
                Op::Forward => nat::forward(&mut p)?.to_string(),
                Op::Snat => nat::snat(&mut p, (*self.snat.ip()).into(), self.snat.port())?.to_string(),
            });
        }
        Ok((p, said))
    }

    /// `packet` rewritten in the kernel's order, and one line saying what
    /// changed; every other order must give the same bytes.
    fn as_the_kernel_does(self, packet: &[u8]) -> (Vec<u8>, String) {
        let line = Summary(packet).to_string();
        let (ours, said) = self
            .apply(packet, [Op::Dnat, Op::Forward, Op::Snat])
            .unwrap_or_else(|e| panic!("{e}: {line}"));
        for order in [
            [Op::Dnat, Op::Snat, Op::Forward],
            [Op::Forward, Op::Dnat, Op::Snat],
            [Op::Forward, Op::Snat, Op::Dnat],
            [Op::Snat, Op::Dnat, Op::Forward],
            [Op::Snat, Op::Forward, Op::Dnat],
        ] {
            let (other, _) = self
                .apply(packet, order)
                .unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(other, ours, "{order:?} gives other bytes: {line}");
        }
        (ours, said.join(", "))
    }
}

/// The part of a packet's summary after the addresses: flags, sequence
/// numbers and lengths.
fn tail(packet: &[u8]) -> String {
    let line = Summary(packet).to_string();
    line.split_once(": ")
        .map_or(line.as_str(), |(_, rest)| rest)
        .to_string()
}

/// The first packet of `candidates` not yet `used` with the invariant
/// bytes of `segment`, marked used.
fn twin<'a>(candidates: &'a Segments, used: &mut [bool], segment: &Segment) -> Option<&'a (usize, Segment)> {
    let found = candidates
        .iter()
        .find(|(i, s)| !used[*i] && s.invariant == segment.invariant)?;
    used[found.0] = true;
    Some(found)
}

#[test]
fn the_kernels_dnat_and_masquerade_are_ours_both_ways_byte_for_byte() {
    let wire = outside();
    let tun = server_tun();

    // The visitor's packets for the public port, and the server's replies.
    let (mut inbound, mut outbound): (Segments, Segments) = (Vec::new(), Vec::new());
    for (i, p) in wire.iter().enumerate() {
        let line = Summary(&p.data);
        let s = segment(&p.data).unwrap_or_else(|| panic!("not TCP over IPv4 in l3-outside.pcap: {line}"));
        if s.dst == PUBLIC {
            inbound.push((i, s));
        } else if s.src == PUBLIC {
            outbound.push((i, s));
        } else {
            panic!("neither to nor from {PUBLIC} in l3-outside.pcap: {line}");
        }
    }
    // What the TUN wrote to the client's service, and read back from it.
    let (mut written, mut read): (Segments, Segments) = (Vec::new(), Vec::new());
    for (i, p) in tun.iter().enumerate() {
        let line = Summary(&p.data);
        if tun_chatter(&p.data).is_some() {
            continue;
        }
        let s = segment(&p.data).unwrap_or_else(|| {
            panic!("the server's TUN carried this, and it is not the forwarded connection: {line}")
        });
        if *s.src.ip() == SERVER_TUN && s.dst == SERVICE {
            written.push((i, s));
        } else if s.src == SERVICE && *s.dst.ip() == SERVER_TUN {
            read.push((i, s));
        } else {
            panic!("neither from {SERVER_TUN} to {SERVICE} nor back in l3-server-tun.pcap: {line}");
        }
    }

    let mut lines: Vec<(Duration, String)> = Vec::new();
    // conntrack's table, as far as this needs it: the port masquerade gave
    // each visitor's end, and back.
    let mut port_of: HashMap<SocketAddrV4, u16> = HashMap::new();
    let mut visitor_of: HashMap<u16, SocketAddrV4> = HashMap::new();

    // In: the visitor's packet, DNATed to the service and masqueraded.
    let mut used = vec![false; tun.len()];
    for (i, visitor) in &inbound {
        let line = Summary(&wire[*i].data);
        let Some((j, inside)) = twin(&written, &mut used, visitor) else {
            panic!("the visitor sent this, and the server's TUN never wrote it: {line}");
        };
        let port = inside.src.port();
        let known = port_of.insert(visitor.src, port);
        assert!(
            known.is_none_or(|k| k == port),
            "{} was given port {port} after {known:?}",
            visitor.src
        );
        let other = visitor_of.insert(port, visitor.src);
        assert!(
            other.is_none_or(|o| o == visitor.src),
            "port {port} stands for {} and {other:?}",
            visitor.src
        );

        let to = Rewrites {
            dnat: SERVICE,
            snat: SocketAddrV4::new(SERVER_TUN, port),
        };
        let (ours, said) = to.as_the_kernel_does(&wire[*i].data);
        assert_eq!(
            ours,
            tun[*j].data,
            "{said}\n  ours:   {}\n  kernel: {}",
            Summary(&ours),
            Summary(&tun[*j].data)
        );
        lines.push((wire[*i].time, format!("{said}: {}", tail(&ours))));
    }
    if let Some((j, _)) = written.iter().find(|(j, _)| !used[*j]) {
        panic!(
            "the server's TUN wrote this, and no visitor sent it: {}",
            Summary(&tun[*j].data)
        );
    }

    // Back: the service's reply, with both rewrites undone.
    let mut used = vec![false; wire.len()];
    for (i, inside) in &read {
        let line = Summary(&tun[*i].data);
        let Some(visitor) = visitor_of.get(&inside.dst.port()) else {
            panic!("a reply on a port masquerade never gave: {line}");
        };
        let Some((j, _)) = twin(&outbound, &mut used, inside) else {
            panic!("the server's TUN read this, and the visitor never got it: {line}");
        };
        let to = Rewrites {
            dnat: *visitor,
            snat: PUBLIC,
        };
        let (ours, said) = to.as_the_kernel_does(&tun[*i].data);
        assert_eq!(
            ours,
            wire[*j].data,
            "{said}\n  ours:   {}\n  kernel: {}",
            Summary(&ours),
            Summary(&wire[*j].data)
        );
        lines.push((tun[*i].time, format!("{said}: {}", tail(&ours))));
    }
    if let Some((j, _)) = outbound.iter().find(|(j, _)| !used[*j]) {
        panic!(
            "the server sent the visitor this, and its TUN never read it: {}",
            Summary(&wire[*j].data)
        );
    }

    // A whole HTTP fetch: a handshake, a request, a response, two FINs.
    assert!(
        inbound.len() >= 4 && read.len() >= 4,
        "{} in, {} back",
        inbound.len(),
        read.len()
    );
    assert!(inbound.iter().any(|(_, s)| s.data_len > 0), "no request");
    assert!(read.iter().any(|(_, s)| s.data_len > 0), "no response");

    lines.sort_by_key(|(t, _)| *t);
    let text = lines.iter().fold(String::new(), |mut s, (_, l)| {
        writeln!(s, "{l}").unwrap();
        s
    });
    insta::assert_snapshot!("l3_pairs", text);
}

/// Every checksum in both recordings is whole and right: the IPv4 header
/// checksum and the TCP or ICMPv6 one. Transmit checksum offload was off on
/// the veths, so no capture holds a partial checksum a card would have
/// finished; otherwise no rewrite could give the bytes on the other side.
#[test]
fn every_checksum_in_both_captures_verifies() {
    let mut problems = Vec::new();
    for (name, packets) in [
        ("l3-outside.pcap", outside()),
        ("l3-server-tun.pcap", server_tun()),
    ] {
        for p in &packets {
            let line = Summary(&p.data);
            if let Ok(SlicedPacket {
                net: Some(NetSlice::Ipv4(ip)),
                ..
            }) = SlicedPacket::from_ip(&p.data)
                && !verify(ip.header().slice())
            {
                problems.push(format!("{name}: IPv4 header checksum wrong: {line}"));
            }
            match verify_transport(&p.data) {
                Some(true) => {}
                Some(false) => problems.push(format!("{name}: transport checksum wrong: {line}")),
                None => problems.push(format!("{name}: no transport checksum to check: {line}")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
