//! A worker: one thread, one TUN queue, one UDP socket per family. It
//! sleeps in `poll(2)` until one of them is readable, then takes batches
//! from both until neither has anything left, and only then sleeps
//! again. Every batch is sealed or opened with the [`Plane`], without a
//! lock any other worker takes; once per wake-up the worker visits the
//! device (its lock) to hand over its [`Ledger`] and run the timers.

#![forbid(unsafe_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use step01_ping_tun::Summary;
use step01_ping_tun::pcap::Recorder;
use step02_plain_tunnel::run::send_waiting;
use step07_wireguard::Device;
use step07_wireguard::device::MAX_OVERHEAD;
use step07_wireguard::keylog::KeyLog;
use step07_wireguard::run::Control;
use step07_wireguard::uapi;
use step07_wireguard::wire::MessageSummary;
use zeroize::Zeroizing;

use crate::counters::{Counters, Totals};
use crate::plane::{Batch, Fate, Ledger, OFFSET, Opened, Plane};
use crate::sys::{Incoming, MAX_MESSAGES, Outgoing};
use crate::tun::{MAX_PACKET, Queue};
use crate::udp::{self, Features, Net};

/// Packets read from the TUN device in one batch.
pub const TUN_BATCH: usize = 128;
/// Messages received from a socket in one call (each up to 64 KB: with
/// GRO, one message holds many datagrams).
pub const UDP_BATCH: usize = 32;
/// Rounds (a batch from each side) in one wake-up before the worker
/// visits the device, even if there is more to read.
const ROUNDS: usize = 16;
/// How long a worker sleeps at most, and how often the timers run.
pub const TICK: Duration = Duration::from_millis(100);
/// A buffer: the header's room, the largest packet, padding and tag.
pub const BUF_LEN: usize = OFFSET + MAX_PACKET + MAX_OVERHEAD;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every method finishes its changes before returning, so a panic
    // elsewhere cannot leave the state half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ANCHOR: shared
/// What the workers, the UAPI threads and the signal thread share.
pub struct Shared {
    /// The control plane: step 07's device.
    pub device: Mutex<Device>,
    pub net: Mutex<Net>,
    /// The latest copy of the data plane, and its device generation.
    plane: Mutex<Arc<Plane>>,
    plane_generation: AtomicU64,
    net_generation: AtomicU64,
    recorder: Option<Mutex<Recorder>>,
    /// `--keylog`: step 07's key log, shown each handshake message the
    /// device makes.
    keylog: Option<Mutex<KeyLog>>,
    /// One per worker.
    pub counters: Vec<Arc<Counters>>,
    pub features: Features,
}
// ANCHOR_END: shared

impl Shared {
    pub fn new(
        device: Device,
        net: Net,
        workers: usize,
        features: Features,
        recorder: Option<Recorder>,
        keylog: Option<KeyLog>,
    ) -> Self {
        let shared = Self {
            plane: Mutex::new(Arc::new(Plane::of(&device))),
            plane_generation: AtomicU64::new(device.generation()),
            net_generation: AtomicU64::new(net.generation),
            device: Mutex::new(device),
            net: Mutex::new(net),
            recorder: recorder.map(Mutex::new),
            keylog: keylog.map(Mutex::new),
            counters: (0..workers.max(1))
                .map(|_| Arc::new(Counters::default()))
                .collect(),
            features,
        };
        shared.publish_net(&lock(&shared.net));
        shared
    }

    // ANCHOR: publish
    /// Makes a new copy of the data plane if the device changed since the
    /// last one. Called with the device locked, after anything that may
    /// change it; the workers pick the copy up at their next batch.
    pub fn publish(&self, device: &Device) {
        if self.plane_generation.load(Ordering::Acquire) == device.generation() {
            return;
        }
        let plane = Arc::new(Plane::of(device));
        *lock(&self.plane) = plane;
        self.plane_generation
            .store(device.generation(), Ordering::Release);
    }
    // ANCHOR_END: publish

    /// Shows a message the device made to the key log, if there is one:
    /// only initiations (1) and responses (2) carry an ephemeral key.
    fn log_keys(&self, device: &Device, message: &[u8]) {
        if let Some(keylog) = &self.keylog
            && matches!(message.first(), Some(1 | 2))
        {
            lock(keylog).sent(device, message);
        }
    }

    pub fn publish_net(&self, net: &Net) {
        self.net_generation.store(net.generation, Ordering::Release);
    }

    fn record(&self, packet: &[u8]) {
        if let Some(recorder) = &self.recorder {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            if let Err(e) = lock(recorder).record(now, packet) {
                log::error!("writing the pcap file failed: {e}");
            }
        }
    }

    /// Every worker's counters, summed.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for c in &self.counters {
            t.add(c);
        }
        t
    }
}

impl Control for Shared {
    fn get(&self) -> Zeroizing<String> {
        uapi::get(&lock(&self.device))
    }

    fn set(&self, ops: Vec<uapi::Op>, now: Instant) -> Result<(), uapi::Errno> {
        let mut device = lock(&self.device);
        let mut net = lock(&self.net);
        let result = uapi::apply(&mut device, ops, &mut *net, now);
        self.publish(&device);
        self.publish_net(&net);
        result
    }
}

/// An address as the peer sees it: IPv4 as IPv4 even when it came as an
/// IPv4-mapped IPv6 address.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, a.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// A worker's UDP sockets, and whether GSO still works on each.
struct Sockets {
    v4: Option<Arc<UdpSocket>>,
    v6: Option<Arc<UdpSocket>>,
    gso_v4: bool,
    gso_v6: bool,
    generation: u64,
}

impl Sockets {
    /// Sends one message from the device (a handshake, a keepalive, a
    /// staged packet).
    fn send(&self, message: &[u8], to: SocketAddr, counters: &Counters) {
        let socket = if to.is_ipv4() { &self.v4 } else { &self.v6 };
        match socket {
            Some(s) => {
                counters.udp_send_calls.add(1);
                counters.udp_datagrams_out.add(1);
                send_waiting(s, to, || s.send_to(message, to))
            }
            None => log::debug!("no socket for {to}: a message dropped"),
        }
    }
}

/// What `poll(2)` said is readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ready {
    tun: bool,
    v4: bool,
    v6: bool,
}

impl Ready {
    const ALL: Ready = Ready {
        tun: true,
        v4: true,
        v6: true,
    };
    const NONE: Ready = Ready {
        tun: false,
        v4: false,
        v6: false,
    };

    fn any(&self) -> bool {
        self.tun || self.v4 || self.v6
    }
}

// ANCHOR: worker
/// One worker's state: its queue and sockets, and buffers allocated once.
pub struct Worker {
    index: usize,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    plane: Arc<Plane>,
    queue: Queue,
    sockets: Sockets,
    /// Packets from the TUN device, sealed where they lie.
    tx: Batch,
    /// Where each sealed message goes.
    to: Vec<Option<SocketAddr>>,
    plan: Vec<Outgoing>,
    /// Messages from the sockets.
    rx: Vec<Vec<u8>>,
    rx_meta: Vec<Incoming>,
    /// Packets for the TUN device, opened where they lie.
    out: Vec<Vec<u8>>,
    out_n: usize,
    ledger: Ledger,
    /// Handshake messages and timer messages from the device.
    scratch: Vec<u8>,
    last_timers: Instant,
    last_mtu: Instant,
}
// ANCHOR_END: worker

impl Worker {
    /// Worker `index` (from 0) of `shared`, with its TUN queue.
    pub fn new(index: usize, shared: Arc<Shared>, queue: Queue) -> Self {
        let counters = Arc::clone(&shared.counters[index % shared.counters.len()]);
        let plane = Arc::clone(&lock(&shared.plane));
        let (v4, v6) = lock(&shared.net).sockets(index);
        let generation = shared.net_generation.load(Ordering::Acquire);
        let gso = shared.features.gso;
        let now = Instant::now();
        Self {
            index,
            counters,
            plane,
            queue,
            sockets: Sockets {
                v4,
                v6,
                gso_v4: gso,
                gso_v6: gso,
                generation,
            },
            tx: Batch::new(TUN_BATCH, BUF_LEN),
            to: vec![None; TUN_BATCH],
            plan: Vec::with_capacity(MAX_MESSAGES),
            rx: vec![vec![0; MAX_PACKET]; UDP_BATCH],
            rx_meta: vec![Incoming::default(); UDP_BATCH],
            out: (0..TUN_BATCH).map(|_| Vec::with_capacity(BUF_LEN)).collect(),
            out_n: 0,
            ledger: Ledger::new(),
            scratch: vec![0; BUF_LEN],
            last_timers: now,
            last_mtu: now,
            shared,
        }
    }

    /// Takes the newest data plane and sockets, if they changed (two
    /// atomic loads when they did not). Returns true for new sockets.
    fn refresh(&mut self) -> bool {
        if self.shared.plane_generation.load(Ordering::Acquire) != self.plane.generation {
            self.plane = Arc::clone(&lock(&self.shared.plane));
        }
        if self.shared.net_generation.load(Ordering::Acquire) != self.sockets.generation {
            let net = lock(&self.shared.net);
            let (v4, v6) = net.sockets(self.index);
            self.sockets.v4 = v4;
            self.sockets.v6 = v6;
            self.sockets.generation = net.generation;
            return true;
        }
        false
    }

    // ANCHOR: run
    /// Runs until `stop` says so: sleep until something is readable, take
    /// everything, sleep again.
    pub fn run(&mut self, stop: impl Fn() -> bool) -> io::Result<()> {
        let mut ready = Ready::ALL;
        while !stop() {
            let busy = self.wake_with(Instant::now(), ready)?;
            ready = if busy { Ready::ALL } else { self.wait()? };
        }
        Ok(())
    }

    /// One wake-up as if everything were readable (for tests, which move
    /// the workers themselves). Returns true when there was more to read.
    pub fn wake(&mut self, now: Instant) -> io::Result<bool> {
        self.wake_with(now, Ready::ALL)
    }

    /// One wake-up: batches from whatever is readable until nothing is
    /// (or [`ROUNDS`] of them), then the visit to the device. A socket
    /// found empty is not read again in this wake-up (only the network
    /// fills it: the next `poll` will say); the TUN queue is read again
    /// after each write to it, because the kernel may have answered at
    /// once (a ping's reply is waiting there when the write returns).
    fn wake_with(&mut self, now: Instant, mut ready: Ready) -> io::Result<bool> {
        let mut busy = false;
        for round in 0..ROUNDS {
            if self.refresh() {
                // New sockets (`wg set listen-port`): read them at once,
                // they may have waited since the last `poll`.
                ready.v4 = true;
                ready.v6 = true;
            }
            if !ready.any() {
                break;
            }
            if ready.tun {
                ready.tun = self.seal_from_tun(now)?;
            }
            let wrote = self.open_from_udp(now, &mut ready);
            ready.tun |= wrote;
            busy = round + 1 == ROUNDS && ready.any();
        }
        self.visit_device(now);
        Ok(busy)
    }
    // ANCHOR_END: run

    /// Sleeps in `poll(2)` until the TUN queue or a socket is readable,
    /// for one [`TICK`] at most, and says which are.
    fn wait(&mut self) -> io::Result<Ready> {
        let tun = self.queue.fd();
        let v4 = self.sockets.v4.as_ref().map_or(tun, |s| s.as_fd());
        let v6 = self.sockets.v6.as_ref().map_or(tun, |s| s.as_fd());
        // (A missing socket polls the TUN queue twice: no harm, no
        // allocation.)
        let mut fds = [
            PollFd::new(tun, PollFlags::POLLIN),
            PollFd::new(v4, PollFlags::POLLIN),
            PollFd::new(v6, PollFlags::POLLIN),
        ];
        self.counters.polls.add(1);
        let timeout = PollTimeout::try_from(TICK).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) => Ok(Ready::NONE),
            Ok(_) => {
                self.counters.wakeups.add(1);
                let readable = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                Ok(Ready {
                    tun: readable(&fds[0]),
                    v4: self.sockets.v4.is_some() && readable(&fds[1]),
                    v6: self.sockets.v6.is_some() && readable(&fds[2]),
                })
            }
            Err(nix::errno::Errno::EINTR) => Ok(Ready::NONE),
            Err(e) => Err(e.into()),
        }
    }

    // ANCHOR: seal_from_tun
    /// A batch from the TUN queue: read, seal in place, send. Returns
    /// whether the queue may hold more (the batch was full).
    fn seal_from_tun(&mut self, now: Instant) -> io::Result<bool> {
        let (n, emptied) = self
            .queue
            .read(&mut self.tx.bufs, &mut self.tx.sizes, 0, &self.counters)?;
        if n == 0 {
            return Ok(false);
        }
        self.tx.n = n;
        for i in 0..n {
            self.shared
                .record(&self.tx.bufs[i][OFFSET..OFFSET + self.tx.sizes[i]]);
            if log::log_enabled!(log::Level::Debug) {
                log::debug!(
                    "from the TUN device: {}",
                    Summary(&self.tx.bufs[i][OFFSET..OFFSET + self.tx.sizes[i]])
                );
            }
        }
        let drops = self.ledger.drop_count();
        self.plane.seal(&mut self.tx, &mut self.ledger, now);
        self.counters.drops.add(self.ledger.drop_count() - drops);
        if self.tx.fates[..n].contains(&Fate::Device) {
            self.hand_to_device(now);
        }
        for i in 0..n {
            self.to[i] = match self.tx.fates[i] {
                Fate::Send(to) => Some(to),
                _ => None,
            };
        }
        let (bufs, lens, to) = (&self.tx.bufs[..n], &self.tx.lens[..n], &self.to[..n]);
        let mmsg = self.shared.features.mmsg;
        if let Some(s) = &self.sockets.v4 {
            udp::send(
                s,
                false,
                bufs,
                lens,
                to,
                &mut self.sockets.gso_v4,
                mmsg,
                &mut self.plan,
                &self.counters,
            );
        }
        if let Some(s) = &self.sockets.v6 {
            udp::send(
                s,
                true,
                bufs,
                lens,
                to,
                &mut self.sockets.gso_v6,
                mmsg,
                &mut self.plan,
                &self.counters,
            );
        }
        Ok(!emptied)
    }
    // ANCHOR_END: seal_from_tun

    /// Packets whose peer has no session: the device stages them and
    /// starts a handshake (its initiation takes the packet's place in the
    /// batch), or seals them if a session came up since the plane was
    /// copied.
    fn hand_to_device(&mut self, now: Instant) {
        self.counters.device_visits.add(1);
        let mut device = lock(&self.shared.device);
        for i in 0..self.tx.n {
            if self.tx.fates[i] != Fate::Device {
                continue;
            }
            self.tx.fates[i] = match device.encapsulate_in_place(&mut self.tx.bufs[i], self.tx.sizes[i], now)
            {
                Ok(Some(t)) => {
                    self.tx.lens[i] = t.len;
                    self.shared.log_keys(&device, &self.tx.bufs[i][..t.len]);
                    Fate::Send(t.to)
                }
                Ok(None) => Fate::Dropped, // staged: it leaves later
                Err(_) => Fate::Dropped,   // counted by the device
            };
        }
        self.shared.publish(&device);
    }

    // ANCHOR: open_from_udp
    /// A batch from each readable socket: receive, open in place, write to
    /// the TUN device. A socket found empty is marked so in `ready`.
    /// Returns whether anything was written to the TUN device.
    fn open_from_udp(&mut self, now: Instant, ready: &mut Ready) -> bool {
        for v6 in [false, true] {
            let readable = if v6 { &mut ready.v6 } else { &mut ready.v4 };
            if !*readable {
                continue;
            }
            let socket = if v6 { &self.sockets.v6 } else { &self.sockets.v4 };
            let Some(socket) = socket.clone() else {
                *readable = false;
                continue;
            };
            let m = match udp::recv(
                &socket,
                &mut self.rx,
                &mut self.rx_meta,
                self.shared.features.mmsg,
                &self.counters,
            ) {
                Ok(m) => m,
                Err(e) => {
                    log::debug!("receiving on the UDP socket failed: {e}");
                    0
                }
            };
            // A batch that was not full emptied the socket.
            *readable = m == self.rx.len();
            for k in 0..m {
                let meta = self.rx_meta[k];
                let Some(from) = meta.from.map(canonical) else {
                    continue;
                };
                if meta.truncated {
                    self.ledger.drop(None, step07_wireguard::DropReason::Truncated);
                    self.counters.drops.add(1);
                    continue;
                }
                if meta.segment.is_some_and(|s| usize::from(s) < meta.len) {
                    self.counters.udp_gro_in.add(1);
                }
                let rx = std::mem::take(&mut self.rx[k]);
                for datagram in udp::datagrams(&rx, &meta) {
                    self.counters.udp_datagrams_in.add(1);
                    self.open(datagram, from, now);
                }
                self.rx[k] = rx;
            }
        }
        self.flush_tun()
    }
    // ANCHOR_END: open_from_udp

    /// Opens one datagram into the next TUN buffer (writing the buffers
    /// out when they are all full), or hands a handshake message to the
    /// device.
    fn open(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) {
        if self.out_n == self.out.len() {
            self.flush_tun();
        }
        let drops = self.ledger.drop_count();
        let opened = self
            .plane
            .open(datagram, from, &mut self.out[self.out_n], &mut self.ledger, now);
        self.counters.drops.add(self.ledger.drop_count() - drops);
        match opened {
            Opened::Packet => self.out_n += 1,
            Opened::Keepalive | Opened::Dropped => {}
            Opened::Device => self.handshake(datagram, from, now),
        }
    }

    /// A handshake message: the device answers it (under its lock), and
    /// what it sends goes out at once. The plane is copied again if the
    /// handshake changed it, so the next data message finds its session.
    fn handshake(&mut self, message: &[u8], from: SocketAddr, now: Instant) {
        self.counters.device_visits.add(1);
        let mut device = lock(&self.shared.device);
        match device.decapsulate(from, message, now, &mut self.scratch) {
            Ok(step02_plain_tunnel::Action::Reply(t)) => {
                self.shared.log_keys(&device, &self.scratch[..t.len]);
                self.sockets.send(&self.scratch[..t.len], t.to, &self.counters)
            }
            Ok(_) => {}
            Err(why) => log::debug!("drop ({why}) from {from}: {}", MessageSummary(message)),
        }
        // A completed handshake releases staged packets: send them now.
        while let Some(t) = device.poll(now, &mut self.scratch) {
            self.shared.log_keys(&device, &self.scratch[..t.len]);
            self.sockets.send(&self.scratch[..t.len], t.to, &self.counters);
        }
        self.shared.publish(&device);
        drop(device);
        self.refresh();
    }

    /// Writes the opened packets to the TUN device; returns whether there
    /// were any.
    fn flush_tun(&mut self) -> bool {
        if self.out_n == 0 {
            return false;
        }
        for buf in &self.out[..self.out_n] {
            self.shared.record(&buf[OFFSET..]);
        }
        self.queue.write(&mut self.out, self.out_n, &self.counters);
        self.out_n = 0;
        true
    }

    // ANCHOR: visit
    /// The visit to the device at the end of a wake-up: the ledger, and
    /// every [`TICK`] the timers (and the MTU, which `ip link` may have
    /// changed). Skipped when there is nothing to do, so an idle worker
    /// and a busy one that has nothing to report take no lock.
    fn visit_device(&mut self, now: Instant) {
        let timers = now.saturating_duration_since(self.last_timers) >= TICK;
        if self.ledger.is_empty() && !timers {
            return;
        }
        self.counters.device_visits.add(1);
        let mut device = lock(&self.shared.device);
        self.ledger.settle(&mut device, now);
        if timers {
            self.last_timers = now;
            while let Some(t) = device.poll(now, &mut self.scratch) {
                log::debug!("timer: to {}: {}", t.to, MessageSummary(&self.scratch[..t.len]));
                self.shared.log_keys(&device, &self.scratch[..t.len]);
                self.sockets.send(&self.scratch[..t.len], t.to, &self.counters);
            }
            if self.index == 0 && now.saturating_duration_since(self.last_mtu) >= Duration::from_secs(1) {
                self.last_mtu = now;
                if let Some(mtu) = self.queue.mtu()
                    && device.mtu() != usize::from(mtu)
                {
                    log::info!("the MTU is now {mtu}");
                    device.set_mtu(usize::from(mtu));
                }
            }
        }
        self.shared.publish(&device);
    }
    // ANCHOR_END: visit
}
