//! Two fast-path ends on loopback: real workers, real UDP sockets (with
//! recvmmsg, GSO and GRO as asked), and a datagram socket pair standing in
//! for each TUN device, so the tests need no root. The test moves the
//! workers itself (`wake`), in one thread.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use step04_crypto::entropy::OsEntropy;
use step07_wireguard::Device;
use step07_wireguard::uapi::Sockets;
use step08_fast_path::counters::Totals;
use step08_fast_path::tun::Queue;
use step08_fast_path::udp::{Features, Net};
use step08_fast_path::worker::{Shared, Worker};
use x25519_dalek::{PublicKey, StaticSecret};

pub const MTU: usize = 1420;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One end: its worker, and the test's side of its "TUN device".
pub struct End {
    pub shared: Arc<Shared>,
    pub worker: Worker,
    pub tun: UnixDatagram,
    pub port: u16,
    pub inner: [u8; 4],
}

impl End {
    fn new(key: u8, inner: [u8; 4], features: Features) -> Self {
        let mut device = Device::new(
            MTU,
            Box::new(OsEntropy),
            Instant::now(),
            Duration::from_secs(1_800_000_000),
        );
        device.set_private_key(Some(StaticSecret::from([key; 32])));
        let mut net = Net::new(1, features);
        let port = net.bind(0).unwrap();
        device.listen_port = port;
        let shared = Arc::new(Shared::new(device, net, 1, features, None, None));
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let worker = Worker::new(0, Arc::clone(&shared), Queue::socket(ours).unwrap());
        Self {
            shared,
            worker,
            tun: theirs,
            port,
            inner,
        }
    }

    /// Makes `other` (key `key`) this end's peer.
    fn peer(&mut self, key: u8, other: &End, endpoint: bool) {
        let mut device = lock(&self.shared.device);
        let id = device
            .add_peer(PublicKey::from(&StaticSecret::from([key; 32])))
            .unwrap();
        let [a, b, c, d] = other.inner;
        device.add_allowed_ip(id, format!("{a}.{b}.{c}.{d}/32").parse().unwrap());
        if endpoint {
            device.set_endpoint(id, SocketAddr::from(([127, 0, 0, 1], other.port)));
        }
        self.shared.publish(&device);
    }

    pub fn totals(&self) -> Totals {
        self.shared.totals()
    }
}

/// End `a` (10.0.0.1, knows where `b` is) and end `b` (10.0.0.2).
pub fn pair(features: Features) -> (End, End) {
    let mut a = End::new(1, [10, 0, 0, 1], features);
    let mut b = End::new(2, [10, 0, 0, 2], features);
    a.peer(2, &b, true);
    b.peer(1, &a, false);
    (a, b)
}

/// An IPv4 packet of `len` bytes from `src` to `dst` carrying `seq` in its
/// first payload bytes (protocol 253, for experiments).
pub fn packet(src: [u8; 4], dst: [u8; 4], seq: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(24)];
    let len = p.len();
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 253;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..24].copy_from_slice(&seq.to_be_bytes());
    p
}

pub fn seq(packet: &[u8]) -> u32 {
    u32::from_be_bytes([packet[20], packet[21], packet[22], packet[23]])
}

/// Runs both workers until `done` says so (or 10 s pass).
pub fn pump(a: &mut End, b: &mut End, mut done: impl FnMut(&mut End, &mut End) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(a, b) {
        assert!(Instant::now() < deadline, "nothing moved for 10 s");
        a.worker.wake(Instant::now()).unwrap();
        b.worker.wake(Instant::now()).unwrap();
    }
}

/// Reads every packet waiting on `end`'s TUN side into `into` (returns
/// how many, each written to `into[i][..len]` with `lens[i]`).
pub fn drain(end: &End, into: &mut [Vec<u8>], lens: &mut [usize], from: usize) -> usize {
    let mut n = from;
    while n < into.len() {
        match end.tun.recv(&mut into[n]) {
            Ok(len) => {
                lens[n] = len;
                n += 1;
            }
            Err(_) => break,
        }
    }
    n
}
