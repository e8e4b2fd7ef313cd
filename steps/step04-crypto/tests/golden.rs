//! Golden tests.
//!
//! 1. The session recorded in lab 04 (`pcaps/step04/`, made with the
//!    test-only keys stored beside it and the server's key log): a server
//!    core with the same static key and the same ephemeral key replays the
//!    underlay capture. Its handshake response must be byte for byte the
//!    recorded one, every data message from the client must open to the
//!    very packet the server's TUN recorded, and every packet the server's
//!    TUN read for the client must seal to the very message on the wire,
//!    which the client's TUN recorded as it came out.
//! 2. A handshake with fixed keys, ephemerals, indices and clock: its bytes
//!    are pinned by a snapshot, so any change to the protocol shows.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use step01_ping_tun::Summary;
use step01_ping_tun::pcap::{self, Captured, DataLink};
use step02_plain_tunnel::Action;
use step02_plain_tunnel::wire::udp_payload;
use step04_crypto::entropy::Scripted;
use step04_crypto::keys;
use step04_crypto::run::read_keylog;
use step04_crypto::tunnel::{DropReason, inner_addresses};
use step04_crypto::wire::{DataPacket, MessageSummary, MessageType, ResponsePacket};
use step04_crypto::{PeerConfig, Tunnel};
use x25519_dalek::{PublicKey, StaticSecret};

const PORT: u16 = 51820;
const MTU: usize = 1440;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../pcaps/step04")
        .join(name)
}

/// A test-only key stored beside the captures. Git does not keep file
/// modes, so these are read as text, not through `read_key_file` (which
/// would rightly refuse a key file others can read).
fn key(name: &str) -> StaticSecret {
    keys::parse_secret(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

/// The UDP datagrams of the tunnel in the underlay capture, in order:
/// (time, from, to, payload).
fn underlay() -> Vec<(Duration, SocketAddr, SocketAddr, Vec<u8>)> {
    let (link, frames) = pcap::read_any(&fixture("underlay.pcap")).unwrap();
    assert_eq!(link, DataLink::ETHERNET);
    frames
        .iter()
        .filter_map(|f| {
            let ip = pcap::ip_in_ethernet(&f.data)?;
            let (sport, dport, payload) = udp_payload(ip)?;
            let (src, dst) = inner_addresses(ip)?;
            (sport == PORT || dport == PORT).then(|| {
                (
                    f.timestamp,
                    SocketAddr::new(src, sport),
                    SocketAddr::new(dst, dport),
                    payload.to_vec(),
                )
            })
        })
        .collect()
}

fn tun(name: &str) -> Vec<Captured> {
    pcap::read(&fixture(name)).unwrap()
}

/// The client's tunnel addresses, as the lab gives them to the server.
fn client_allowed() -> Vec<ipnet::IpNet> {
    vec!["10.0.0.2/32".parse().unwrap(), "fd00::2/128".parse().unwrap()]
}

fn from_client(packet: &[u8]) -> bool {
    inner_addresses(packet).is_some_and(|(src, _)| client_allowed().iter().any(|c| c.contains(&src)))
}

/// One event on the server, in time order.
enum Event {
    /// A datagram reached the server's socket.
    Datagram(SocketAddr, Vec<u8>),
    /// The server's TUN device gave it a packet.
    TunRead(Vec<u8>),
}

#[test]
fn the_recorded_session_replays_byte_for_byte() {
    let wire = underlay();
    let server_addr: SocketAddr = format!("192.0.2.1:{PORT}").parse().unwrap();
    // What the server sent, in order: its responses, and its data
    // messages (by counter).
    let mut responses: VecDeque<Vec<u8>> = wire
        .iter()
        .filter(|(_, from, _, m)| *from == server_addr && m[0] == MessageType::Response.to_u8())
        .map(|(_, _, _, m)| m.clone())
        .collect();
    let mut sent_data: Vec<Vec<u8>> = wire
        .iter()
        .filter(|(_, from, _, m)| *from == server_addr && m[0] == MessageType::Data.to_u8())
        .map(|(_, _, _, m)| m.clone())
        .collect();
    sent_data.sort_by_key(|m| DataPacket::new_checked(&m[..]).unwrap().counter());
    let mut sent_data: VecDeque<Vec<u8>> = sent_data.into();
    assert_eq!(responses.len(), 1, "one handshake in the recording");
    // The server drew, in order, an index and an ephemeral key for its
    // response: the index is on the wire, the key in the key log.
    let index = ResponsePacket::new_checked(&responses[0][..]).unwrap().sender();
    let ephemerals = read_keylog(&std::fs::read_to_string(fixture("server.keylog")).unwrap());
    assert_eq!(ephemerals.len(), 1);
    let t0 = Instant::now();
    let start = wire[0].0;
    let mut server = Tunnel::new(
        key("test-only-server.key"),
        MTU,
        Box::new(Scripted::new(&ephemerals, &[index])),
        t0,
        start,
    );
    server.add_peer(PeerConfig {
        public: PublicKey::from(&key("test-only-client.key")),
        allowed: client_allowed(),
        endpoint: None,
        keepalive: None,
    });

    let server_tun = tun("server-tun.pcap");
    let mut written: VecDeque<Vec<u8>> = server_tun
        .iter()
        .filter(|p| from_client(&p.data))
        .map(|p| p.data.clone())
        .collect();
    let mut events: Vec<(Duration, Event)> = wire
        .iter()
        .filter(|(_, _, to, _)| *to == server_addr)
        .map(|(t, from, _, m)| (*t, Event::Datagram(*from, m.clone())))
        .chain(
            server_tun
                .iter()
                .filter(|p| !from_client(&p.data))
                .map(|p| (p.timestamp, Event::TunRead(p.data.clone()))),
        )
        .collect();
    events.sort_by_key(|(t, _)| *t);

    let client_tun = tun("client-tun.pcap");
    let mut out = vec![0u8; 65535];
    let (mut opened, mut sealed) = (0, 0);
    for (t, event) in events {
        let now = t0 + t.saturating_sub(start);
        match event {
            Event::Datagram(from, message) => {
                let line = MessageSummary(&message).to_string();
                match server.decapsulate(from, &message, now, &mut out) {
                    Ok(Action::Reply(r)) => {
                        assert_eq!(Some(&out[..r.len]), responses.pop_front().as_deref(), "{line}")
                    }
                    Ok(Action::WriteToTun(n)) => {
                        assert_eq!(Some(&out[..n]), written.pop_front().as_deref(), "{line}");
                        opened += 1;
                    }
                    Ok(Action::Nothing) => {}
                    // The client's router solicitation (from fe80::/10)
                    // is not one of its addresses.
                    Err(DropReason::SourceNotAllowed) => {}
                    Err(reason) => panic!("a recorded message was dropped ({reason}): {line}"),
                }
            }
            Event::TunRead(packet) => match server.encapsulate(&packet, now, &mut out) {
                Ok(Some(t)) => {
                    assert_eq!(
                        Some(&out[..t.len]),
                        sent_data.pop_front().as_deref(),
                        "{}",
                        Summary(&packet)
                    );
                    assert!(
                        client_tun.iter().any(|c| c.data == packet),
                        "the client's TUN never got {}",
                        Summary(&packet)
                    );
                    sealed += 1;
                }
                // Multicast from the server's TUN goes to no peer.
                Err(DropReason::NoRoute) => {}
                other => panic!("{other:?} for {}", Summary(&packet)),
            },
        }
    }
    assert!(responses.is_empty() && written.is_empty() && sent_data.is_empty());
    // Three pings each way, and two ping -6 from the client, at least.
    assert!(opened >= 8 && sealed >= 8, "opened {opened}, sealed {sealed}");
}

#[test]
fn decoded_captures() {
    let underlay: String = underlay()
        .iter()
        .map(|(_, from, to, m)| format!("{from} > {to}: {}\n", MessageSummary(m)))
        .collect();
    insta::assert_snapshot!("underlay", underlay);
    for name in ["server-tun", "client-tun"] {
        let text: String = tun(&format!("{name}.pcap"))
            .iter()
            .map(|p| format!("{}\n", Summary(&p.data)))
            .collect();
        insta::assert_snapshot!(name, text);
    }
}

fn hex_lines(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, row)| {
            let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:04x}  {}\n", i * 16, hex.join(" "))
        })
        .collect()
}

#[test]
fn a_handshake_with_fixed_keys_has_fixed_bytes() {
    let t0 = Instant::now();
    let clock = Duration::from_secs(1_800_000_000);
    let secret = |b: u8| StaticSecret::from([b; 32]);
    let mut server = Tunnel::new(
        secret(2),
        MTU,
        Box::new(Scripted::new(&[[4; 32]], &[0x0b0b_0b0b])),
        t0,
        clock,
    );
    let mut client = Tunnel::new(
        secret(1),
        MTU,
        Box::new(Scripted::new(&[[3; 32]], &[0x0a0a_0a0a])),
        t0,
        clock,
    );
    server.add_peer(PeerConfig {
        public: PublicKey::from(&secret(1)),
        allowed: vec!["10.0.0.2/32".parse().unwrap()],
        endpoint: None,
        keepalive: None,
    });
    client.add_peer(PeerConfig {
        public: PublicKey::from(&secret(2)),
        allowed: vec!["0.0.0.0/0".parse().unwrap()],
        endpoint: Some("192.0.2.1:51820".parse().unwrap()),
        keepalive: Some(Duration::from_secs(25)),
    });
    let from: SocketAddr = "192.0.2.2:40000".parse().unwrap();
    let mut out = vec![0u8; 2048];
    let mut text = String::new();
    let t = client.poll(t0, &mut out).expect("an initiation");
    let initiation = out[..t.len].to_vec();
    let Ok(Action::Reply(r)) = server.decapsulate(from, &initiation, t0, &mut out) else {
        panic!("no response");
    };
    let response = out[..r.len].to_vec();
    let Ok(Action::Reply(k)) = client.decapsulate(t.to, &response, t0, &mut out) else {
        panic!("no keepalive");
    };
    let keepalive = out[..k.len].to_vec();
    assert_eq!(
        server.decapsulate(from, &keepalive, t0, &mut out),
        Ok(Action::Nothing)
    );
    let ping = {
        let b = etherparse::PacketBuilder::ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64).icmpv4_echo_request(1, 1);
        let mut p = Vec::new();
        b.write(&mut p, b"tunlab").unwrap();
        p
    };
    let d = client.encapsulate(&ping, t0, &mut out).unwrap().unwrap();
    let data = out[..d.len].to_vec();
    assert!(
        matches!(server.decapsulate(from, &data, t0, &mut out), Ok(Action::WriteToTun(n)) if out[..n] == ping[..])
    );
    for (name, bytes) in [
        ("initiation", &initiation),
        ("response", &response),
        ("keepalive", &keepalive),
        ("data", &data),
    ] {
        text += &format!("{name}: {}\n{}", MessageSummary(bytes), hex_lines(bytes));
    }
    insta::assert_snapshot!("fixed_handshake", text);
}

/// The recorded session read as `tunlab decode --keylog` reads it, from
/// the server's side alone: its static key and its key log give the
/// session keys ([`Session::derive`]), which open every data message on
/// the wire, both ways. What each opens to is a packet both TUN devices
/// recorded, and in the order the server's TUN recorded them.
#[test]
fn the_key_log_opens_every_data_message_both_ways() {
    use step04_crypto::decrypt::{Direction, Session};
    use step04_crypto::noise::Identity;

    let wire = underlay();
    let of_type = |t: u8| {
        wire.iter()
            .find(|(_, _, _, m)| m[0] == t)
            .map(|(_, _, _, m)| m.clone())
    };
    let (initiation, response) = (
        of_type(MessageType::Initiation.to_u8()).unwrap(),
        of_type(MessageType::Response.to_u8()).unwrap(),
    );
    let keylog = read_keylog(&std::fs::read_to_string(fixture("server.keylog")).unwrap());
    let server = Identity::new(key("test-only-server.key"));
    let session = Session::derive(&server, &keylog, None, &initiation, &response).unwrap();

    let mut out = vec![0u8; 65535];
    let mut opened: Vec<(Direction, Vec<u8>)> = Vec::new();
    for (_, _, _, m) in wire
        .iter()
        .filter(|(_, _, _, m)| m[0] == MessageType::Data.to_u8())
    {
        let o = session
            .open(m, &mut out)
            .unwrap_or_else(|e| panic!("{}: {e}", MessageSummary(m)));
        opened.push((o.direction, out[..o.len].to_vec()));
    }
    let client_tun = tun("client-tun.pcap");
    let server_tun = tun("server-tun.pcap");
    for (direction, packet) in &opened {
        assert!(
            client_tun.iter().any(|c| c.data == *packet),
            "{direction:?}: the client's TUN never saw {}",
            Summary(packet)
        );
    }
    // The server's TUN saw every packet but the client's router
    // solicitation (dropped: fe80::/10 is not the client's), and read its
    // own router solicitation, which went to no peer: the link-local ones.
    let link_local = |p: &[u8]| p[0] >> 4 == 6 && p[8] == 0xfe && p[9] & 0xc0 == 0x80;
    let opened_routed: Vec<&Vec<u8>> = opened.iter().map(|(_, p)| p).filter(|p| !link_local(p)).collect();
    let server_routed: Vec<&Vec<u8>> = server_tun
        .iter()
        .map(|c| &c.data)
        .filter(|p| !link_local(p))
        .collect();
    assert_eq!(opened_routed, server_routed);
    let both_ways = |d: Direction| opened.iter().filter(|(o, p)| *o == d && !p.is_empty()).count();
    // Three pings each way and two ping -6 are 8 packets each way; the
    // client also sent its router solicitation.
    assert_eq!(
        (
            both_ways(Direction::ToResponder),
            both_ways(Direction::ToInitiator)
        ),
        (9, 8)
    );
}
