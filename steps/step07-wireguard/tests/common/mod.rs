//! Two (or more) WireGuard devices wired together in memory, with fixed
//! keys, scripted randomness and a clock the test moves.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use step02_plain_tunnel::Action;
use step04_crypto::entropy::Scripted;
use step07_wireguard::device::{Device, MAX_OVERHEAD, PeerId};
use step07_wireguard::wire::INITIATION_LEN;
use x25519_dalek::{PublicKey, StaticSecret};

pub const A: &str = "192.0.2.1:51820";
pub const B: &str = "198.51.100.2:51820";
pub const MTU: usize = 1420;
/// The wall clock at the start of every test.
pub const UNIX_START: Duration = Duration::from_secs(1_800_000_000);

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn secret(byte: u8) -> StaticSecret {
    StaticSecret::from([byte; 32])
}

pub fn public(byte: u8) -> PublicKey {
    PublicKey::from(&secret(byte))
}

/// An IPv4 packet from `src` to `dst` with `payload` (protocol 253, for
/// experiments: the core does not look past the IP header).
pub fn packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let len = 20 + payload.len();
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 253;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..].copy_from_slice(payload);
    p
}

/// A packet from 10.0.0.1 (a's inner address) to 10.0.0.2 (b's).
pub fn a_to_b(n: u32) -> Vec<u8> {
    packet([10, 0, 0, 1], [10, 0, 0, 2], format!("a to b {n}").as_bytes())
}

pub fn b_to_a(n: u32) -> Vec<u8> {
    packet([10, 0, 0, 2], [10, 0, 0, 1], format!("b to a {n}").as_bytes())
}

/// A device with key `key`, its randomness scripted from `seed`.
pub fn device(key: u8, seed: u8, t0: Instant) -> Device {
    let ephemerals: Vec<[u8; 32]> = (0..64).map(|i| [seed.wrapping_add(i); 32]).collect();
    let indices: Vec<u32> = (0..64).map(|i| u32::from(seed) << 16 | i).collect();
    let mut d = Device::new(
        MTU,
        Box::new(Scripted::new(&ephemerals, &indices)),
        t0,
        UNIX_START,
    );
    d.set_private_key(Some(secret(key)));
    d
}

/// What crossed the wire, for tests that look at it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
    /// When it was sent, since the start.
    pub at: Duration,
}

/// Device a (key 1, at A, inner 10.0.0.1) and device b (key 2, at B,
/// inner 10.0.0.2), each the other's peer, a knowing b's endpoint.
pub struct Pair {
    pub a: Device,
    pub b: Device,
    pub a_addr: SocketAddr,
    pub b_addr: SocketAddr,
    pub t0: Instant,
    pub now: Instant,
    /// Messages on the wire, not yet delivered.
    pub wire: VecDeque<Sent>,
    /// Everything ever sent, in order.
    pub log: Vec<Sent>,
    /// Inner packets each device wrote to its TUN device.
    pub a_tun: Vec<Vec<u8>>,
    pub b_tun: Vec<Vec<u8>>,
    /// While false, messages to b are lost.
    pub deliver_to_b: bool,
    pub deliver_to_a: bool,
}

impl Pair {
    pub fn new() -> Self {
        Self::with_psk([0; 32], [0; 32])
    }

    pub fn with_psk(psk_a: [u8; 32], psk_b: [u8; 32]) -> Self {
        let t0 = Instant::now();
        let mut a = device(1, 10, t0);
        let mut b = device(2, 20, t0);
        let pb = a.add_peer(public(2)).unwrap();
        a.add_allowed_ip(pb, "10.0.0.2/32".parse().unwrap());
        a.add_allowed_ip(pb, "fd00::2/128".parse().unwrap());
        a.set_endpoint(pb, addr(B));
        a.set_preshared_key(pb, psk_a);
        let pa = b.add_peer(public(1)).unwrap();
        b.add_allowed_ip(pa, "10.0.0.1/32".parse().unwrap());
        b.set_preshared_key(pa, psk_b);
        Self {
            a,
            b,
            a_addr: addr(A),
            b_addr: addr(B),
            t0,
            now: t0,
            wire: VecDeque::new(),
            log: Vec::new(),
            a_tun: Vec::new(),
            b_tun: Vec::new(),
            deliver_to_b: true,
            deliver_to_a: true,
        }
    }

    /// b's id on a and a's id on b (both 0).
    pub const PEER: PeerId = 0;

    fn put(&mut self, from_a: bool, to: SocketAddr, bytes: Vec<u8>) {
        let from = if from_a { self.a_addr } else { self.b_addr };
        let at = self.now - self.t0;
        let s = Sent { from, to, bytes, at };
        self.log.push(s.clone());
        self.wire.push_back(s);
    }

    /// a reads `packet` from its TUN device.
    pub fn a_sends(&mut self, packet: &[u8]) {
        let mut out = vec![0u8; (packet.len() + MAX_OVERHEAD).max(INITIATION_LEN)];
        if let Ok(Some(t)) = self.a.encapsulate(packet, self.now, &mut out) {
            self.put(true, t.to, out[..t.len].to_vec());
        }
    }

    pub fn b_sends(&mut self, packet: &[u8]) {
        let mut out = vec![0u8; (packet.len() + MAX_OVERHEAD).max(INITIATION_LEN)];
        if let Ok(Some(t)) = self.b.encapsulate(packet, self.now, &mut out) {
            self.put(false, t.to, out[..t.len].to_vec());
        }
    }

    /// Runs both devices' timers once.
    pub fn poll(&mut self) {
        let mut out = vec![0u8; 2048];
        while let Some(t) = self.a.poll(self.now, &mut out) {
            self.put(true, t.to, out[..t.len].to_vec());
        }
        while let Some(t) = self.b.poll(self.now, &mut out) {
            self.put(false, t.to, out[..t.len].to_vec());
        }
    }

    /// Delivers everything on the wire (and what it causes) until the
    /// wire is empty, running the timers between rounds.
    pub fn settle(&mut self) {
        for _ in 0..100 {
            self.poll();
            let Some(m) = self.wire.pop_front() else { return };
            self.deliver(m);
        }
        panic!("the two devices did not stop talking");
    }

    pub fn deliver(&mut self, m: Sent) {
        let mut out = vec![0u8; 2048];
        let to_a = m.to == self.a_addr;
        let to_b = m.to == self.b_addr;
        if to_b && self.deliver_to_b {
            match self.b.decapsulate(m.from, &m.bytes, self.now, &mut out) {
                Ok(Action::WriteToTun(n)) => self.b_tun.push(out[..n].to_vec()),
                Ok(Action::Reply(t)) => self.put(false, t.to, out[..t.len].to_vec()),
                _ => {}
            }
        } else if to_a && self.deliver_to_a {
            match self.a.decapsulate(m.from, &m.bytes, self.now, &mut out) {
                Ok(Action::WriteToTun(n)) => self.a_tun.push(out[..n].to_vec()),
                Ok(Action::Reply(t)) => self.put(true, t.to, out[..t.len].to_vec()),
                _ => {}
            }
        }
    }

    /// Moves the clock by `d` in steps of `step`, running the timers and
    /// delivering at each.
    pub fn run_for(&mut self, d: Duration, step: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += step;
            self.settle();
        }
    }

    /// Messages in the log of type `kind` sent by a (`from_a`) or b.
    pub fn count(&self, from_a: bool, kind: u8) -> usize {
        let from = if from_a { self.a_addr } else { self.b_addr };
        self.log
            .iter()
            .filter(|s| s.from == from && s.bytes.first() == Some(&kind))
            .count()
    }

    /// When (since t0) a (`from_a`) or b sent its messages of type `kind`.
    pub fn times(&self, from_a: bool, kind: u8) -> Vec<Duration> {
        let from = if from_a { self.a_addr } else { self.b_addr };
        self.log
            .iter()
            .filter(|s| s.from == from && s.bytes.first() == Some(&kind))
            .map(|s| s.at)
            .collect()
    }
}

impl Default for Pair {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether tshark is installed. Without it a test that needs it says
/// SKIPPED and passes, except under CI=true, where it fails.
pub fn have_tshark() -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("tshark").is_file()));
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "tshark is not installed (apt-get install tshark); under CI=true it must be"
        );
        eprintln!("SKIPPED: tshark is not installed (apt-get install tshark)");
    }
    found
}
