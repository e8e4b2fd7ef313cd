//! Step 04's handshake in both roles, and the sessions it makes, through a
//! network the fuzzer controls: a client core and a server core with the
//! test-only keys of `pcaps/step04/` and fixed entropy, and between them a
//! list of datagrams in flight that the fuzzer delivers, drops, duplicates,
//! reorders, damages, or adds junk to, while time passes and each end sends
//! packets. The seeds are the packets the lab's two TUN devices carried.
//!
//! Never a panic; each end writes to its TUN device only packets the other
//! end sent, each at most as often as it was sent (no forgery, no replay);
//! a damaged message never delivers anything or completes a handshake; and
//! once the network behaves (everything delivered, time passing), the two
//! ends reach each other again within three minutes, whatever came before.
//!
//! Records: op 0 the client sends its body as an inner packet, 1 the server
//! does; 2 delivers a datagram in flight (the body's first byte picks it), 3
//! delivers it damaged (a bit the next bytes pick), 4 duplicates it, 5
//! drops it, 6 sends the body as junk to one end, 7 lets time pass (up to a
//! minute) and runs both ends' timers.
#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use step02_plain_tunnel::{Action, Transmit};
use step04_crypto::entropy::Scripted;
use step04_crypto::{PeerConfig, PublicKey, Tunnel};
use tunlab_fuzz::{Records, key};

const MTU: usize = 1420;
const MAX_IN_FLIGHT: usize = 64;

struct Datagram {
    to_server: bool,
    from: SocketAddr,
    bytes: Vec<u8>,
}

struct World {
    client: Tunnel,
    server: Tunnel,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    in_flight: Vec<Datagram>,
    /// Inner packets each end sent and the other has not delivered yet,
    /// with how many times.
    from_client: HashMap<Vec<u8>, usize>,
    from_server: HashMap<Vec<u8>, usize>,
    t0: Instant,
    elapsed: Duration,
    out: Vec<u8>,
}

/// Fixed ephemeral keys and indices, different for each end.
fn entropy(base: u8) -> Box<Scripted> {
    let ephemerals: Vec<[u8; 32]> = (0..64u8).map(|i| [base.wrapping_add(i); 32]).collect();
    let indices: Vec<u32> = (0..64u32).map(|i| (u32::from(base) << 24) | i).collect();
    Box::new(Scripted::new(&ephemerals, &indices))
}

impl World {
    fn new() -> Self {
        let t0 = Instant::now();
        let unix = Duration::from_secs(1_700_000_000);
        let (client_key, server_key) = (
            key("step04/test-only-client.key"),
            key("step04/test-only-server.key"),
        );
        let (client_public, server_public) = (PublicKey::from(&client_key), PublicKey::from(&server_key));
        let server_addr: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let client_addr: SocketAddr = "192.0.2.2:40000".parse().unwrap();
        let mut client = Tunnel::new(client_key, MTU, entropy(0x10), t0, unix);
        client.add_peer(PeerConfig {
            public: server_public,
            allowed: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            endpoint: Some(server_addr),
            keepalive: None,
        });
        let mut server = Tunnel::new(server_key, MTU, entropy(0x80), t0, unix);
        server.add_peer(PeerConfig {
            public: client_public,
            allowed: vec!["10.0.0.2/32".parse().unwrap(), "fd00::2/128".parse().unwrap()],
            endpoint: None,
            keepalive: None,
        });
        Self {
            client,
            server,
            client_addr,
            server_addr,
            in_flight: Vec::new(),
            from_client: HashMap::new(),
            from_server: HashMap::new(),
            t0,
            elapsed: Duration::ZERO,
            out: vec![0u8; 4096],
        }
    }

    fn now(&self) -> Instant {
        self.t0 + self.elapsed
    }

    fn send(&mut self, to_server: bool, transmit: Transmit) {
        assert_eq!(
            transmit.to,
            if to_server {
                self.server_addr
            } else {
                self.client_addr
            }
        );
        let from = if to_server {
            self.client_addr
        } else {
            self.server_addr
        };
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.in_flight.remove(0);
        }
        self.in_flight.push(Datagram {
            to_server,
            from,
            bytes: self.out[..transmit.len].to_vec(),
        });
    }

    /// An end sends an inner packet.
    fn inner(&mut self, client: bool, packet: &[u8]) {
        let now = self.now();
        let end = if client {
            &mut self.client
        } else {
            &mut self.server
        };
        if let Ok(Some(t)) = end.encapsulate(packet, now, &mut self.out) {
            self.send(client, t);
        }
        let sent = if client {
            &mut self.from_client
        } else {
            &mut self.from_server
        };
        *sent.entry(packet.to_vec()).or_default() += 1;
    }

    /// Hands a datagram to its end; returns the delivered packet, if any.
    fn deliver(&mut self, d: &Datagram, damaged: bool) -> Option<Vec<u8>> {
        let now = self.now();
        let (end, sent) = if d.to_server {
            (&mut self.server, &mut self.from_client)
        } else {
            (&mut self.client, &mut self.from_server)
        };
        let handshakes = end.peer_stats(0).map(|s| s.handshakes);
        let result = end.decapsulate(d.from, &d.bytes, now, &mut self.out);
        if damaged {
            assert!(result.is_err(), "a damaged message was taken: {result:?}");
            assert_eq!(
                end.peer_stats(0).map(|s| s.handshakes),
                handshakes,
                "a damaged message completed a handshake"
            );
            return None;
        }
        match result {
            Ok(Action::WriteToTun(n)) => {
                let packet = self.out[..n].to_vec();
                let left = sent.get_mut(&packet).filter(|n| **n > 0);
                let left = left.unwrap_or_else(|| {
                    panic!("delivered a packet the other end did not send (or more often): {packet:02x?}")
                });
                *left -= 1;
                Some(packet)
            }
            Ok(Action::Reply(t)) => {
                self.send(!d.to_server, t);
                None
            }
            Ok(Action::Nothing) | Err(_) => None,
        }
    }

    fn pick(&self, body: &[u8]) -> Option<usize> {
        let i = usize::from(*body.first()?);
        (!self.in_flight.is_empty()).then(|| i % self.in_flight.len())
    }

    /// Runs both ends' timers.
    fn poll(&mut self) {
        for client in [true, false] {
            for _ in 0..32 {
                let now = self.now();
                let end = if client {
                    &mut self.client
                } else {
                    &mut self.server
                };
                let Some(t) = end.poll(now, &mut self.out) else {
                    break;
                };
                self.send(client, t);
            }
        }
    }
}

/// An IPv4 packet from `src` to `dst` (10.0.0.x) carrying `marker`.
fn packet(src: u8, dst: u8, marker: u32) -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 24, 0, 0, 0, 0, 64, 253, 0, 0, 10, 0, 0, src, 10, 0, 0, dst,
    ];
    p.extend_from_slice(&marker.to_be_bytes());
    p
}

fuzz_target!(|data: &[u8]| {
    let mut w = World::new();
    for (op, body) in Records(data) {
        match op % 8 {
            0 => w.inner(true, body),
            1 => w.inner(false, body),
            op @ (2..=5) => {
                let Some(i) = w.pick(body) else { continue };
                match op {
                    2 => {
                        let d = w.in_flight.remove(i);
                        w.deliver(&d, false);
                    }
                    3 => {
                        let mut d = w.in_flight.remove(i);
                        let bit = usize::from(u16::from_be_bytes([
                            body.get(1).copied().unwrap_or(0),
                            body.get(2).copied().unwrap_or(0),
                        ]));
                        let bit = bit % (d.bytes.len() * 8);
                        d.bytes[bit / 8] ^= 1 << (bit % 8);
                        w.deliver(&d, true);
                    }
                    4 => {
                        let d = &w.in_flight[i];
                        let copy = Datagram {
                            to_server: d.to_server,
                            from: d.from,
                            bytes: d.bytes.clone(),
                        };
                        if w.in_flight.len() < MAX_IN_FLIGHT {
                            w.in_flight.push(copy);
                        }
                    }
                    _ => {
                        w.in_flight.remove(i);
                    }
                }
            }
            6 => {
                let to_server = body.first().is_some_and(|b| b & 1 == 0);
                let from = match body.first().map(|b| b >> 1 & 3) {
                    Some(0) => w.client_addr,
                    Some(1) => w.server_addr,
                    _ => "198.51.100.9:4000".parse().unwrap(),
                };
                let junk = Datagram {
                    to_server,
                    from,
                    bytes: body.get(1..).unwrap_or_default().to_vec(),
                };
                w.deliver(&junk, false);
            }
            _ => {
                let ms = u64::from(u16::from_be_bytes([
                    body.first().copied().unwrap_or(0),
                    body.get(1).copied().unwrap_or(0),
                ]));
                w.elapsed += Duration::from_millis(ms);
                w.poll();
            }
        }
    }
    // ANCHOR: liveness
    // Now the network behaves: everything in flight arrives, in order,
    // and time passes a second at a time. Each end keeps sending a packet
    // that is new (its marker); both must get one through.
    let (mut client_got, mut server_got) = (false, false);
    for second in 0..180u32 {
        let from_client = packet(2, 1, 0xc000_0000 | second);
        let from_server = packet(1, 2, 0x5000_0000 | second);
        w.inner(true, &from_client);
        w.inner(false, &from_server);
        for _ in 0..16 {
            if w.in_flight.is_empty() {
                break;
            }
            for d in std::mem::take(&mut w.in_flight) {
                if let Some(p) = w.deliver(&d, false) {
                    server_got |= d.to_server && p[19] == 1 && p[20] == 0xc0;
                    client_got |= !d.to_server && p[19] == 2 && p[20] == 0x50;
                }
            }
            w.poll();
        }
        if client_got && server_got {
            return;
        }
        w.elapsed += Duration::from_secs(1);
        w.poll();
    }
    panic!(
        "the two ends did not reach each other in three minutes (client got {client_got}, server got {server_got})"
    );
    // ANCHOR_END: liveness
});
