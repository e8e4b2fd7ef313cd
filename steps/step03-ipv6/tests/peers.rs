//! Two tunnel ends with step 03's path policy, wired back to back in
//! memory: MSS clamping both ways and the ICMP errors for packets too big,
//! as the running program does them, with no sockets, devices or clock.
//!
//! The tunnel carries inner packets of up to 1348 bytes (a 1400-byte
//! underlay path over IPv4: 1400 - 20 - 8 - 4), while the TUN devices have
//! an MTU of 1500, so the hosts' kernels send larger packets than fit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use etherparse::{IpSlice, PacketBuilder, TcpOptionElement, TcpSlice};
use step02_plain_tunnel::run::{Core, Outgoing};
use step02_plain_tunnel::{Action, Role, Tunnel};
use step03_ipv6::checksum::verify_transport;
use step03_ipv6::hook::{ERROR_BURST, PathDrop, PathEvent, PathPolicy};

const LIMIT: u16 = 1348;
const DEVICE_MTU: usize = 1500;
const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const SERVER4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);

fn server_addr() -> SocketAddr {
    "192.0.2.1:51820".parse().unwrap()
}

fn client_addr() -> SocketAddr {
    "192.0.2.2:40000".parse().unwrap()
}

type End = PathPolicy<Tunnel>;

fn tunnel(role: Role) -> Tunnel {
    Tunnel::new(role, DEVICE_MTU, None)
}

/// A client and a server with the policy, the server knowing where the
/// client is (the client's first Ping has arrived).
fn pair(now: Instant) -> (End, End) {
    let client = PathPolicy::new(
        tunnel(Role::Client {
            server: server_addr(),
        }),
        LIMIT,
        Some(CLIENT4),
        Some(CLIENT6),
    );
    let mut server = PathPolicy::new(tunnel(Role::Server), LIMIT, Some(SERVER4), Some(SERVER6));
    let mut out = [0u8; 64];
    let ping = [1, 2, 0, 0];
    server.decapsulate(client_addr(), &ping, now, &mut out).unwrap();
    (client, server)
}

/// What `b` writes to its TUN device when `a` sends `packet` (from `from`),
/// or what `a` answers into its own TUN device instead.
#[derive(Debug, PartialEq)]
enum Fate {
    Delivered(Vec<u8>),
    Answered(Vec<u8>),
}

fn send<A: Core, B: Core>(a: &mut A, from: SocketAddr, b: &mut B, packet: &[u8], now: Instant) -> Fate
where
    A::Drop: std::fmt::Debug,
    B::Drop: std::fmt::Debug,
{
    let mut packet = packet.to_vec();
    let (mut wire, mut out) = ([0u8; 2000], [0u8; 2000]);
    match a.encapsulate(&mut packet, now, &mut wire).unwrap() {
        Outgoing::Send(t) => match b.decapsulate(from, &wire[..t.len], now, &mut out).unwrap() {
            Action::WriteToTun(n) => Fate::Delivered(out[..n].to_vec()),
            other => panic!("expected a packet for the TUN device, got {other:?}"),
        },
        Outgoing::Answer(n) => Fate::Answered(wire[..n].to_vec()),
        Outgoing::Held => panic!("held"),
    }
}

fn delivered(fate: Fate) -> Vec<u8> {
    match fate {
        Fate::Delivered(p) => p,
        Fate::Answered(p) => panic!("answered instead: {p:02x?}"),
    }
}

/// A SYN (or SYN-ACK) announcing `mss`, as Linux sends it: MSS, SACK
/// permitted, timestamps, window scale.
fn syn(src: IpAddr, dst: IpAddr, mss: u16, ack: bool) -> Vec<u8> {
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!(),
    };
    let mut tcp = ip.tcp(40000, 80, 7, 64240).syn();
    if ack {
        tcp = tcp.ack(8);
    }
    let mut out = Vec::new();
    tcp.options(&[
        TcpOptionElement::MaximumSegmentSize(mss),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Timestamp(1, 0),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(7),
    ])
    .unwrap()
    .write(&mut out, &[])
    .unwrap();
    out
}

fn mss(packet: &[u8]) -> u16 {
    let ip = IpSlice::from_slice(packet).unwrap();
    let tcp = TcpSlice::from_slice(ip.payload().payload).unwrap();
    tcp.options_iterator()
        .find_map(|o| match o {
            Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
            _ => None,
        })
        .unwrap()
}

/// A UDP packet of `len` bytes in all, with DF (etherparse sets it) unless
/// `fragmentable`.
fn udp(src: IpAddr, dst: IpAddr, len: usize, fragmentable: bool) -> Vec<u8> {
    let (ip, headers) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (PacketBuilder::ipv4(s.octets(), d.octets(), 64), 28),
        (IpAddr::V6(s), IpAddr::V6(d)) => (PacketBuilder::ipv6(s.octets(), d.octets(), 64), 48),
        _ => unreachable!(),
    };
    let mut out = Vec::new();
    ip.udp(5000, 5001)
        .write(&mut out, &vec![0x5a; len - headers])
        .unwrap();
    if fragmentable {
        out[6] &= !0x40;
        out[10..12].fill(0);
        let c = step01_ping_tun::checksum::checksum(&out[..20]);
        out[10..12].copy_from_slice(&c.to_be_bytes());
    }
    out
}

/// A SYN from the client's kernel and the SYN-ACK from the server's, both
/// announcing what their 1500-byte devices allow, reach the other side
/// announcing what the tunnel carries: 1348 - 40 over IPv4, 1348 - 60 over
/// IPv6. Each is clamped by the end that reads it from its TUN device; the
/// checksum still verifies.
#[test]
fn syns_are_clamped_both_ways() {
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    for (c, s, from, to) in [
        (IpAddr::V4(CLIENT4), IpAddr::V4(SERVER4), 1460, 1308),
        (IpAddr::V6(CLIENT6), IpAddr::V6(SERVER6), 1440, 1288),
    ] {
        let got = delivered(send(
            &mut client,
            client_addr(),
            &mut server,
            &syn(c, s, from, false),
            now,
        ));
        assert_eq!(mss(&got), to);
        assert_eq!(verify_transport(&got), Some(true));
        let got = delivered(send(
            &mut server,
            server_addr(),
            &mut client,
            &syn(s, c, from, true),
            now,
        ));
        assert_eq!(mss(&got), to);
        assert_eq!(verify_transport(&got), Some(true));
    }
    assert_eq!(client.counts().get(PathEvent::Clamped), 2);
    assert_eq!(server.counts().get(PathEvent::Clamped), 2);
    // A SYN that already fits is left alone.
    let small = syn(IpAddr::V4(CLIENT4), IpAddr::V4(SERVER4), 1200, false);
    assert_eq!(
        delivered(send(&mut client, client_addr(), &mut server, &small, now)),
        small
    );
    assert_eq!(client.counts().get(PathEvent::Clamped), 2);
}

/// A peer that does not clamp (a plain step 02 server): the SYN-ACK it
/// sends is clamped as it comes out of the tunnel at our end.
#[test]
fn syns_from_a_peer_that_does_not_clamp_are_clamped_on_the_way_in() {
    let now = Instant::now();
    let (mut client, _) = pair(now);
    let mut plain = tunnel(Role::Server);
    let mut out = [0u8; 64];
    plain
        .decapsulate(client_addr(), &[1, 2, 0, 0], now, &mut out)
        .unwrap();
    let synack = syn(IpAddr::V4(SERVER4), IpAddr::V4(CLIENT4), 1460, true);
    let got = delivered(send(&mut plain, server_addr(), &mut client, &synack, now));
    assert_eq!(mss(&got), 1308);
    assert_eq!(verify_transport(&got), Some(true));
    assert_eq!(client.counts().get(PathEvent::Clamped), 1);
}

/// A packet too big for the tunnel never reaches the peer: its sender gets
/// "fragmentation needed" (IPv4) or "packet too big" (IPv6) with the
/// tunnel's MTU, from the address it was sending to, back into its TUN
/// device. One that may be fragmented (DF clear) is carried.
#[test]
fn packets_too_big_are_answered_with_the_tunnel_mtu() {
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    let far4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    let Fate::Answered(error) = send(
        &mut client,
        client_addr(),
        &mut server,
        &udp(IpAddr::V4(CLIENT4), far4, 1400, false),
        now,
    ) else {
        panic!("not answered")
    };
    // ICMP type 3 code 4, next-hop MTU in the second word, from the
    // destination, to the sender.
    assert_eq!((error[20], error[21]), (3, 4));
    assert_eq!(u16::from_be_bytes([error[26], error[27]]), LIMIT);
    assert_eq!(&error[12..16], &[198, 51, 100, 7]);
    assert_eq!(&error[16..20], &CLIENT4.octets());
    assert_eq!(verify_transport(&error), Some(true));

    let far6 = IpAddr::V6("2001:db8::7".parse().unwrap());
    let Fate::Answered(error) = send(
        &mut client,
        client_addr(),
        &mut server,
        &udp(IpAddr::V6(CLIENT6), far6, 1400, false),
        now,
    ) else {
        panic!("not answered")
    };
    // ICMPv6 type 2, the MTU in the second word.
    assert_eq!(error[40], 2);
    assert_eq!(
        u32::from_be_bytes([error[44], error[45], error[46], error[47]]),
        u32::from(LIMIT)
    );
    assert_eq!(verify_transport(&error), Some(true));
    assert_eq!(client.counts().get(PathEvent::TooBig), 2);
    assert_eq!(server.core().counters().rx_packets, 0, "nothing crossed");

    // DF clear: a router may fragment it, so the tunnel carries it.
    let fragmentable = udp(IpAddr::V4(CLIENT4), far4, 1400, true);
    let got = delivered(send(&mut client, client_addr(), &mut server, &fragmentable, now));
    assert_eq!(got, fragmentable);
    assert_eq!(client.counts().get(PathEvent::TooBig), 2);
}

/// RFC 4443 §2.4 (f): a burst of errors, then the rate, with time passed
/// in; the packets over the limit are dropped, counted, and said why.
#[test]
fn errors_are_rate_limited_by_the_time_passed_in() {
    let t0 = Instant::now();
    let (mut client, _) = pair(t0);
    let big = udp(IpAddr::V4(CLIENT4), IpAddr::V4(SERVER4), 1400, false);
    let mut out = [0u8; 2000];
    let mut answer = |client: &mut End, at: Instant| client.encapsulate(&mut big.clone(), at, &mut out);
    for _ in 0..ERROR_BURST {
        assert!(matches!(answer(&mut client, t0), Ok(Outgoing::Answer(_))));
    }
    for _ in 0..5 {
        let refused = answer(&mut client, t0).unwrap_err();
        assert_eq!(
            refused,
            PathDrop::TooBig("too big, and over the ICMP error rate limit")
        );
        assert_eq!(refused.to_string(), "too big, and over the ICMP error rate limit");
    }
    // 10 ms earn one error at 100 a second.
    let later = t0 + Duration::from_millis(10);
    assert!(matches!(answer(&mut client, later), Ok(Outgoing::Answer(_))));
    assert!(answer(&mut client, later).is_err());
    assert_eq!(client.counts().get(PathEvent::TooBig), u64::from(ERROR_BURST) + 1);
    assert_eq!(client.counts().get(PathEvent::RateLimited), 6);
    assert_eq!(
        client.summary(),
        "clamped 0 TCP MSS, sent 21 too-big errors (6 more held back by the rate limit)"
    );
    // The status the shell logs on SIGUSR1: the tunnel's, then ours.
    let status = client.status();
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with("peer 192.0.2.1:51820; sent 0 packets"),
        "{status}"
    );
    assert_eq!(lines[1], client.summary());
}

/// Only the errors sent draw on the rate limit: a flood of packets too big
/// but without DF, which the tunnel carries (fragmented outside), leaves the
/// bucket full, and the packets with DF after it still get their errors.
#[test]
fn forwarded_packets_do_not_spend_the_error_budget() {
    let t0 = Instant::now();
    let (mut client, mut server) = pair(t0);
    let fragmentable = udp(IpAddr::V4(CLIENT4), IpAddr::V4(SERVER4), 1400, true);
    for _ in 0..1000 {
        let got = delivered(send(&mut client, client_addr(), &mut server, &fragmentable, t0));
        assert_eq!(got, fragmentable);
    }
    let big = udp(IpAddr::V4(CLIENT4), IpAddr::V4(SERVER4), 1400, false);
    for _ in 0..ERROR_BURST {
        let fate = send(&mut client, client_addr(), &mut server, &big, t0);
        assert!(matches!(fate, Fate::Answered(_)), "{fate:?}");
    }
    assert_eq!(client.counts().get(PathEvent::TooBig), u64::from(ERROR_BURST));
    assert_eq!(client.counts().get(PathEvent::RateLimited), 0);
}

/// An ICMP error too big for the tunnel gets no error in answer (RFC 1122
/// §3.2.2): dropped, counted, and the rate limit untouched.
#[test]
fn no_error_about_an_error() {
    let now = Instant::now();
    let (mut client, _) = pair(now);
    let mut error = Vec::new();
    PacketBuilder::ipv4(CLIENT4.octets(), SERVER4.octets(), 64)
        .icmpv4_raw(3, 1, [0; 4])
        .write(&mut error, &[0; 1400])
        .unwrap();
    let mut out = [0u8; 2000];
    let refused = client.encapsulate(&mut error, now, &mut out).unwrap_err();
    assert_eq!(refused.to_string(), "an ICMP error");
    assert_eq!(client.counts().get(PathEvent::Unanswered), 1);
    assert_eq!(client.counts().get(PathEvent::RateLimited), 0);
}
