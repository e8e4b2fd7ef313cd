//! Two tunnel ends wired back to back in memory, with fixed keys and
//! randomness, and packets to send through them.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use step02_plain_tunnel::{Action, Transmit};
use step04_crypto::entropy::Scripted;
use step04_crypto::{PeerConfig, Tunnel};
use x25519_dalek::{PublicKey, StaticSecret};

pub const SERVER: &str = "192.0.2.1:51820";
pub const CLIENT: &str = "192.0.2.2:40000";
pub const MTU: usize = 1440;

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn secret(byte: u8) -> StaticSecret {
    StaticSecret::from([byte; 32])
}

pub fn public(byte: u8) -> PublicKey {
    PublicKey::from(&secret(byte))
}

/// A server (key 2) that accepts the client with key `client_key` at
/// 10.0.0.2, and a client (key 1) of it.
pub struct Pair {
    pub server: Tunnel,
    pub client: Tunnel,
    pub t0: Instant,
    pub now: Instant,
}

pub fn server(t0: Instant, clients: &[(u8, &str)]) -> Tunnel {
    let mut server = Tunnel::new(
        secret(2),
        MTU,
        Box::new(Scripted::new(
            &[[20; 32], [21; 32], [22; 32], [23; 32]],
            &[0x200, 0x201, 0x202, 0x203],
        )),
        t0,
        Duration::from_secs(1_800_000_000),
    );
    for (key, cidr) in clients {
        server.add_peer(PeerConfig {
            public: public(*key),
            allowed: vec![cidr.parse().unwrap()],
            endpoint: None,
            keepalive: None,
        });
    }
    server
}

pub fn client(t0: Instant, key: u8, keepalive: Option<Duration>) -> Tunnel {
    let mut client = Tunnel::new(
        secret(key),
        MTU,
        Box::new(Scripted::new(
            &[[10; 32], [11; 32], [12; 32], [13; 32]],
            &[0x100, 0x101, 0x102, 0x103],
        )),
        t0,
        Duration::from_secs(1_800_000_000),
    );
    client.add_peer(PeerConfig {
        public: public(2),
        allowed: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
        endpoint: Some(addr(SERVER)),
        keepalive,
    });
    client
}

impl Default for Pair {
    fn default() -> Self {
        Self::new()
    }
}

impl Pair {
    pub fn new() -> Self {
        let t0 = Instant::now();
        Self {
            server: server(t0, &[(1, "10.0.0.2/32")]),
            client: client(t0, 1, None),
            t0,
            now: t0,
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Sends a packet from the client and carries every message that
    /// results between the two ends until both are quiet; returns the
    /// packets the server wrote to its TUN device.
    pub fn client_sends(&mut self, packet: &[u8]) -> Vec<Vec<u8>> {
        let mut out = vec![0u8; 2048];
        let first = self.client.encapsulate(packet, self.now, &mut out).unwrap();
        let mut wire = Vec::new();
        if let Some(t) = first {
            wire.push((true, out[..t.len].to_vec()));
        }
        self.exchange(wire).0
    }

    /// Carries `wire` messages (`true`: from the client) back and forth,
    /// with both ends' timers, until quiet. Returns what each TUN device
    /// got: (server's, client's).
    pub fn exchange(&mut self, mut wire: Vec<(bool, Vec<u8>)>) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let (mut to_server_tun, mut to_client_tun) = (Vec::new(), Vec::new());
        let mut out = vec![0u8; 2048];
        for _ in 0..1000 {
            for (from_client, t) in [(true, &mut self.client), (false, &mut self.server)].map(|(c, tun)| {
                let mut v = Vec::new();
                while let Some(Transmit { len, .. }) = tun.poll(self.now, &mut out) {
                    v.push(out[..len].to_vec());
                }
                (c, v)
            }) {
                wire.extend(t.into_iter().map(|m| (from_client, m)));
            }
            if wire.is_empty() {
                return (to_server_tun, to_client_tun);
            }
            for (from_client, message) in std::mem::take(&mut wire) {
                let (receiver, from) = if from_client {
                    (&mut self.server, addr(CLIENT))
                } else {
                    (&mut self.client, addr(SERVER))
                };
                match receiver.decapsulate(from, &message, self.now, &mut out) {
                    Ok(Action::WriteToTun(n)) => if from_client {
                        &mut to_server_tun
                    } else {
                        &mut to_client_tun
                    }
                    .push(out[..n].to_vec()),
                    Ok(Action::Reply(t)) => wire.push((!from_client, out[..t.len].to_vec())),
                    Ok(Action::Nothing) => {}
                    Err(_) => {}
                }
            }
        }
        panic!("the two ends never went quiet");
    }

    /// Sends a packet and returns the message the sender produced,
    /// without delivering it.
    pub fn seal(tunnel: &mut Tunnel, packet: &[u8], now: Instant) -> Vec<u8> {
        let mut out = vec![0u8; 2048];
        let t = tunnel
            .encapsulate(packet, now, &mut out)
            .unwrap()
            .expect("a session");
        out[..t.len].to_vec()
    }
}

/// An IPv4 ICMP echo request from `src` to `dst` with `payload`.
pub fn ping(src: [u8; 4], dst: [u8; 4], seq: u16, payload: &[u8]) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ipv4(src, dst, 64).icmpv4_echo_request(7, seq);
    let mut packet = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut packet, payload).unwrap();
    packet
}

pub fn client_ping(seq: u16) -> Vec<u8> {
    ping([10, 0, 0, 2], [10, 0, 0, 1], seq, b"tunlab tunlab tunlab")
}

pub fn server_ping(seq: u16) -> Vec<u8> {
    ping([10, 0, 0, 1], [10, 0, 0, 2], seq, b"tunlab tunlab tunlab")
}
