//! Two tunnel cores wired back to back in memory: what one encapsulates,
//! the other decapsulates, with no sockets, devices or clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use step02_plain_tunnel::tunnel::RETRY_INTERVAL;
use step02_plain_tunnel::{Action, DropReason, Role, Transmit, Tunnel};

const MTU: usize = 1468;

fn server_addr() -> SocketAddr {
    "192.0.2.1:51820".parse().unwrap()
}

fn client_addr() -> SocketAddr {
    "192.0.2.2:40000".parse().unwrap()
}

/// An IPv4 packet of `len` bytes (header fields that matter here only).
fn ipv4(len: usize, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

fn pair() -> (Tunnel, Tunnel) {
    let client = Tunnel::new(
        Role::Client {
            server: server_addr(),
        },
        MTU,
        Some(Duration::from_secs(25)),
    );
    let server = Tunnel::new(Role::Server, MTU, None);
    (client, server)
}

/// Sends `packet` from `a` (at `from`) through `b`; returns what `b` writes
/// to its TUN device.
fn carry(a: &mut Tunnel, from: SocketAddr, b: &mut Tunnel, packet: &[u8], now: Instant) -> Vec<u8> {
    let mut wire = [0u8; 2000];
    let mut out = [0u8; 2000];
    let t = a.encapsulate(packet, now, &mut wire).unwrap();
    match b.decapsulate(from, &wire[..t.len], now, &mut out).unwrap() {
        Action::WriteToTun(n) => out[..n].to_vec(),
        other => panic!("expected a packet for the TUN device, got {other:?}"),
    }
}

#[test]
fn packets_cross_both_ways_unchanged() {
    let (mut client, mut server) = pair();
    let now = Instant::now();
    for len in [20, 21, 84, 1400, MTU] {
        let p = ipv4(len, len as u8);
        assert_eq!(carry(&mut client, client_addr(), &mut server, &p, now), p);
        // The server learned where the client is and can answer.
        assert_eq!(server.peer(), Some(client_addr()));
        assert_eq!(carry(&mut server, server_addr(), &mut client, &p, now), p);
    }
    assert_eq!(client.counters().tx_packets, 5);
    assert_eq!(server.counters().rx_packets, 5);
    assert_eq!(server.counters().tx_bytes, client.counters().rx_bytes);
}

#[test]
fn client_pings_until_the_server_answers_then_keeps_alive() {
    let (mut client, mut server) = pair();
    let mut wire = [0u8; 64];
    let mut out = [0u8; 64];
    let t0 = Instant::now();
    // At once, then not again before the retry interval.
    let ping = client.poll(t0, &mut wire).unwrap();
    assert_eq!(
        ping,
        Transmit {
            to: server_addr(),
            len: 4
        }
    );
    assert_eq!(client.poll(t0 + RETRY_INTERVAL / 2, &mut wire), None);
    // Lost; retried after the interval.
    let ping = client.poll(t0 + RETRY_INTERVAL, &mut wire).unwrap();
    let t1 = t0 + RETRY_INTERVAL;
    // The server answers a Ping with a Pong, back to where it came from.
    let pong = match server
        .decapsulate(client_addr(), &wire[..ping.len], t1, &mut out)
        .unwrap()
    {
        Action::Reply(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(pong.to, client_addr());
    assert_eq!(
        client.decapsulate(server_addr(), &out[..pong.len], t1, &mut wire),
        Ok(Action::Nothing)
    );
    assert!(client.connected());
    // Connected: quiet until the keepalive interval has passed without sending.
    assert_eq!(client.poll(t1 + Duration::from_secs(24), &mut wire), None);
    assert!(client.poll(t1 + Duration::from_secs(25), &mut wire).is_some());
    // A server never pings on its own.
    assert_eq!(server.poll(t1 + Duration::from_secs(3600), &mut wire), None);
}

/// Data sent before the server has answered does not stop the client's
/// pings: only an answer does.
#[test]
fn data_does_not_stand_in_for_an_answer() {
    let (mut client, _) = pair();
    let mut wire = [0u8; 2000];
    let t0 = Instant::now();
    client.encapsulate(&ipv4(84, 0), t0, &mut wire).unwrap();
    assert!(
        client.poll(t0, &mut wire).is_some(),
        "the first ping goes out at once"
    );
    client
        .encapsulate(&ipv4(84, 0), t0 + RETRY_INTERVAL, &mut wire)
        .unwrap();
    assert!(
        client.poll(t0 + RETRY_INTERVAL, &mut wire).is_some(),
        "and again after the retry interval"
    );
    assert!(!client.connected());
}

#[test]
fn server_follows_a_client_that_moves() {
    let (mut client, mut server) = pair();
    let now = Instant::now();
    let p = ipv4(60, 1);
    carry(&mut client, client_addr(), &mut server, &p, now);
    let moved: SocketAddr = "198.51.100.7:1234".parse().unwrap();
    carry(&mut client, moved, &mut server, &p, now);
    assert_eq!(server.peer(), Some(moved));
    // But garbage from elsewhere does not move it.
    let mut out = [0u8; 100];
    let elsewhere: SocketAddr = "203.0.113.9:1".parse().unwrap();
    assert_eq!(
        server.decapsulate(elsewhere, &[1, 9, 0, 0], now, &mut out),
        Err(DropReason::UnknownType)
    );
    assert_eq!(server.peer(), Some(moved));
}

/// Every drop reason, each counted once.
#[test]
fn every_drop_reason() {
    let (mut client, mut server) = pair();
    let now = Instant::now();
    let mut out = [0u8; 2000];
    let from = client_addr();
    let cases: &[(&[u8], DropReason)] = &[
        (&[1, 2, 0], DropReason::Truncated),
        (&[7, 2, 0, 0], DropReason::BadVersion),
        (&[1, 42, 0, 0], DropReason::UnknownType),
        (&[1, 2, 1, 0], DropReason::BadReserved),
        (&[1, 1, 0, 0], DropReason::BadLength),
        (&[1, 1, 0, 0, 0x45, 0, 0, 20], DropReason::NotIp),
    ];
    for (message, reason) in cases {
        assert_eq!(
            server.decapsulate(from, message, now, &mut out),
            Err(*reason),
            "{message:?}"
        );
        assert_eq!(server.counters().drops.get(*reason), 1);
    }
    // The server has heard nothing valid, so it has no one to send to.
    assert_eq!(
        server.encapsulate(&ipv4(40, 0), now, &mut out),
        Err(DropReason::NoPeer)
    );
    assert_eq!(server.peer(), None);
    // Too big for the tunnel, either way.
    assert_eq!(
        client.encapsulate(&ipv4(MTU + 1, 0), now, &mut out),
        Err(DropReason::TooBig)
    );
    let mut big = vec![1, 1, 0, 0];
    big.extend_from_slice(&ipv4(MTU + 1, 0));
    assert_eq!(
        server.decapsulate(from, &big, now, &mut out),
        Err(DropReason::TooBig)
    );
    // Not IP from the TUN device.
    assert_eq!(
        client.encapsulate(&[0x00; 40], now, &mut out),
        Err(DropReason::NotIp)
    );
    // A client accepts messages from its server only.
    assert_eq!(
        client.decapsulate(from, &[1, 3, 0, 0], now, &mut out),
        Err(DropReason::UnknownSender)
    );
    // No room for the result.
    assert_eq!(
        client.encapsulate(&ipv4(100, 0), now, &mut out[..50]),
        Err(DropReason::NoRoom)
    );
    let total = server.counters().drops.total() + client.counters().drops.total();
    assert_eq!(total, 12);
    assert!(server.counters().to_string().contains("no-peer 1"));
}

/// A server listening on `[::]` sizes its MTU for IPv6 (1448), an IPv4
/// client for IPv4 (1468): the server must still take the client's largest
/// packets, though it never sends one that large itself.
#[test]
fn a_server_takes_the_largest_packets_of_either_family() {
    let server_addr: SocketAddr = "[::ffff:192.0.2.1]:51820".parse().unwrap();
    let mut client = Tunnel::new(Role::Client { server: server_addr }, 1468, None);
    let mut server = Tunnel::new(Role::Server, 1448, None).accepting_up_to(1468);
    let now = Instant::now();
    let p = ipv4(1468, 3);
    assert_eq!(carry(&mut client, client_addr(), &mut server, &p, now), p);
    let mut out = [0u8; 2000];
    assert_eq!(server.encapsulate(&p, now, &mut out), Err(DropReason::TooBig));
    let mut bigger = vec![1, 1, 0, 0];
    bigger.extend_from_slice(&ipv4(1469, 3));
    assert_eq!(
        server.decapsulate(client_addr(), &bigger, now, &mut out),
        Err(DropReason::TooBig)
    );
}
