//! A userspace bad link: a relay that forwards UDP datagrams or TCP streams
//! between clients and one upstream address and, on the way, drops, delays,
//! jitters, duplicates, reorders and corrupts them.
//!
//! # Why a relay
//!
//! The usual tool, `tc qdisc add ... netem`, needs the kernel's `sch_netem`,
//! and the kernels of the lab machines do not have it. So a lab that wants a
//! bad link puts this relay on a middle host: the client talks to the relay,
//! the relay talks to the server, and the [`Impairments`] happen in between.
//!
//! # UDP: what netem would do
//!
//! [`UdpRelay`] treats each datagram in each direction on its own: it may be
//! dropped (`loss`), sent twice (`dup`), held for `delay` ± a uniform
//! `jitter`, and held one `delay` + 1 ms longer still (`reorder`) so the
//! datagrams behind it overtake it. That is what a bad IP path does to the
//! packets of a UDP tunnel: the TCP connections inside the tunnel see real
//! loss and recover from it end to end.
//!
//! `corrupt` flips one bit of a datagram, at a uniformly chosen place. A
//! bit error on a real link is caught by the link's CRC or by the UDP
//! checksum, and the datagram is dropped before any program sees it; this
//! relay sends the changed datagram on with a fresh, valid checksum, which
//! is what a man in the middle (or a middlebox with a bug) does. A tunnel
//! must then drop it: an encrypted one because its authentication tag
//! fails. [`UdpRelay::set_impairments`] changes the impairments of a
//! running relay (`tunlab-relay` does on SIGUSR1 and SIGUSR2), so a test
//! can stop them and watch the tunnel recover.
//!
//! # TCP: what a lossy path does to one TCP connection
//!
//! [`TcpRelay`] relays byte streams, and a stream cannot lose bytes: dropping
//! a chunk would hand the receiver a corrupt stream, which no real path does.
//! On a real lossy path the sender's TCP retransmits the lost segment, and the
//! receiving application gets the same bytes in the same order, only late,
//! and everything behind the lost segment waits for it (head-of-line
//! blocking). So the relay reads each stream in chunks of about one segment
//! ([`TCP_CHUNK`]); every chunk waits `delay` ± `jitter`, a chunk hit by
//! `loss` waits one retransmission timeout more ([`TCP_RTO`], the Linux
//! minimum), and no chunk overtakes the one before it. `dup` and `reorder` do
//! not apply: the receiving TCP discards duplicates and restores the order,
//! so the application never sees them.
//!
//! The model is rough: it always pays a full RTO where a real TCP often
//! recovers in one round trip (fast retransmit); losses less than one RTO
//! apart overlap, as losses in one window are repaired together; and it does
//! not shrink a congestion window (only a full queue slows the sender down,
//! see below). What it keeps is the point of lab 02: a TCP transport
//! turns loss into *delay of everything behind it*, the TCP connection inside
//! the tunnel takes that delay for loss and retransmits, and the
//! retransmissions queue up behind the same stall (TCP-over-TCP meltdown).
//!
//! # Determinism and bounds
//!
//! Every decision comes from a PRNG seeded by [`Impairments::seed`], one
//! stream per direction (and per TCP connection), and each datagram or chunk
//! takes the same number of draws whatever is decided. The same seed and the
//! same input order give the same decisions (for TCP, a chunk is what one
//! read returns, which depends on timing, so it is the decisions per chunk
//! that repeat). Queues hold at most
//! [`MAX_QUEUE_BYTES`]: a full UDP queue drops (and counts it), a full TCP
//! queue stops reading, so the sender's TCP feels backpressure. Every blocking
//! call has a timeout of [`TICK`], after which the thread checks whether the
//! relay is stopping.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The extra wait of a TCP chunk hit by loss: Linux's minimum retransmission
/// timeout (`TCP_RTO_MIN`, 200 ms).
pub const TCP_RTO: Duration = Duration::from_millis(200);
/// The TCP relay's read size: one Ethernet MSS with timestamps, so `loss`
/// strikes about one segment's worth of bytes at a time.
pub const TCP_CHUNK: usize = 1448;
/// The most bytes waiting in one queue (the UDP relay's, or one direction of
/// one TCP connection).
pub const MAX_QUEUE_BYTES: usize = 4 << 20;
/// The most UDP clients at once; datagrams from more are dropped (overflowed).
pub const MAX_UDP_CLIENTS: usize = 64;
/// A UDP client with no datagram either way for this long is forgotten.
pub const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest `delay` or `jitter`: no link is slower, and it keeps the
/// `Instant` arithmetic far from overflow.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// How often a blocked thread wakes up to check whether the relay stops.
pub const TICK: Duration = Duration::from_millis(100);

/// What the relay does to the traffic. Parse one from a spec such as
/// `loss=0.02,delay=20ms,jitter=5ms,dup=0.01,reorder=0.05,corrupt=0.01,seed=7`;
/// missing keys are zero, and `""` or `"none"` is a clean link.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Impairments {
    /// Probability (0 to 1) that a datagram is dropped (UDP), or that a chunk
    /// waits one [`TCP_RTO`] more (TCP).
    pub loss: f64,
    /// How long each datagram or chunk is held.
    pub delay: Duration,
    /// Each hold is `delay` plus a uniform amount in `-jitter..=jitter`.
    pub jitter: Duration,
    /// Probability that a datagram is sent twice (UDP only).
    pub duplicate: f64,
    /// Probability that a datagram is held `delay` + 1 ms longer, so later
    /// ones overtake it (UDP only).
    pub reorder: f64,
    /// Probability that one bit of a datagram is flipped (UDP only).
    pub corrupt: f64,
    /// Seed of the decisions: same seed, same input order, same decisions.
    pub seed: u64,
}

/// A spec string that [`Impairments`] could not parse, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError(String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad impairment spec: {}", self.0)
    }
}

impl std::error::Error for SpecError {}

impl FromStr for Impairments {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let mut imp = Impairments::default();
        if spec.trim().is_empty() || spec.trim() == "none" {
            return Ok(imp);
        }
        for item in spec.split(',') {
            let Some((key, value)) = item.split_once('=') else {
                return Err(SpecError(format!("`{}` is not KEY=VALUE", item.trim())));
            };
            let (key, value) = (key.trim(), value.trim());
            match key {
                "loss" => imp.loss = probability(key, value)?,
                "dup" | "duplicate" => imp.duplicate = probability(key, value)?,
                "reorder" => imp.reorder = probability(key, value)?,
                "corrupt" => imp.corrupt = probability(key, value)?,
                "delay" => imp.delay = duration(key, value)?,
                "jitter" => imp.jitter = duration(key, value)?,
                "seed" => {
                    imp.seed = value
                        .parse()
                        .map_err(|_| SpecError(format!("seed={value}: want an unsigned integer")))?;
                }
                _ => {
                    return Err(SpecError(format!(
                        "unknown key `{key}`; the keys are loss, delay, jitter, dup, reorder, corrupt, seed"
                    )));
                }
            }
        }
        Ok(imp)
    }
}

fn probability(key: &str, value: &str) -> Result<f64, SpecError> {
    match value.parse::<f64>() {
        // NaN fails `contains`, so it is rejected too.
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(SpecError(format!(
            "{key}={value}: want a probability between 0 and 1, e.g. {key}=0.02"
        ))),
    }
}

/// `20ms`, `1.5s`, `250us`. Computed in whole nanoseconds, so `20ms` is
/// exactly `Duration::from_millis(20)`.
fn duration(key: &str, value: &str) -> Result<Duration, SpecError> {
    let bad = || {
        SpecError(format!(
            "{key}={value}: want a duration from 0 to {}s with a unit (us, ms or s), e.g. {key}=20ms",
            MAX_DELAY.as_secs()
        ))
    };
    let split = value.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(bad)?;
    let (number, unit) = value.split_at(split);
    let nanos_per_unit = match unit {
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return Err(bad()),
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n >= 0.0 && n * nanos_per_unit <= MAX_DELAY.as_nanos() as f64 => {
            Ok(Duration::from_nanos((n * nanos_per_unit).round() as u64))
        }
        _ => Err(bad()),
    }
}

impl fmt::Display for Impairments {
    /// The spec form, which parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_nanos() as f64 / 1e6;
        write!(
            f,
            "loss={},delay={}ms,jitter={}ms,dup={},reorder={},corrupt={},seed={}",
            self.loss,
            ms(self.delay),
            ms(self.jitter),
            self.duplicate,
            self.reorder,
            self.corrupt,
            self.seed
        )
    }
}

/// SplitMix64 (Steele, Lea and Flood, "Fast Splittable Pseudorandom Number
/// Generators", OOPSLA 2014), transcribed from Sebastiano Vigna's public
/// domain <https://prng.di.unimi.it/splitmix64.c>: a counter stepped by the
/// golden ratio, scrambled by two xor-shift-multiplies. Small and good enough
/// for coin flips; never for keys.
struct SplitMix64(u64);

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix64 {
    /// Stream `n` of `seed`: seeded with output `n` of `SplitMix64(seed)`, so
    /// streams start at unrelated points of the sequence.
    fn stream(seed: u64, n: u64) -> Self {
        SplitMix64(SplitMix64(seed.wrapping_add(n.wrapping_mul(GOLDEN_GAMMA))).next_u64())
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0.0..1.0`: the top 53 bits as a double's mantissa (the
    /// conversion Vigna's page recommends). `unit() < p` is a coin with
    /// probability `p`, never true for 0 and always for 1.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What happens to one datagram or chunk.
#[derive(Debug, PartialEq)]
struct Fate {
    lost: bool,
    duplicated: bool,
    reordered: bool,
    delay: Duration,
}

/// Makes the decisions for one stream of datagrams or chunks.
struct Decider {
    imp: Impairments,
    rng: SplitMix64,
    /// Corruption draws from a stream of its own, so that adding it left
    /// every other decision of a seed as it was.
    corruption: SplitMix64,
}

/// The streams of corruption decisions start after those of the others.
const CORRUPTION_STREAMS: u64 = 1 << 32;

impl Decider {
    fn new(imp: Impairments, stream: u64) -> Self {
        let mut decider = Decider {
            imp,
            rng: SplitMix64::stream(imp.seed, stream),
            corruption: SplitMix64::stream(imp.seed, CORRUPTION_STREAMS + stream),
        };
        decider.set(imp);
        decider
    }

    /// New impairments from the next decision on; the draws go on where
    /// they were.
    fn set(&mut self, mut imp: Impairments) {
        imp.delay = imp.delay.min(MAX_DELAY);
        imp.jitter = imp.jitter.min(MAX_DELAY);
        self.imp = imp;
    }

    /// Which bit of a datagram of `len` bytes to flip, if any. Always two
    /// draws.
    fn corruption(&mut self, len: usize) -> Option<usize> {
        let [coin, place] = [(); 2].map(|()| self.corruption.unit());
        (coin < self.imp.corrupt && len > 0).then(|| ((place * (len * 8) as f64) as usize).min(len * 8 - 1))
    }

    /// A UDP datagram's fate. Always four draws, so one datagram's outcome
    /// never shifts the decisions about the next.
    fn datagram(&mut self) -> Fate {
        let [loss, dup, reorder, jitter] = [(); 4].map(|()| self.rng.unit());
        let reordered = reorder < self.imp.reorder;
        let mut delay = self.jittered(jitter);
        if reordered {
            delay += self.imp.delay + Duration::from_millis(1);
        }
        let (lost, duplicated) = (loss < self.imp.loss, dup < self.imp.duplicate);
        Fate {
            lost,
            duplicated,
            reordered,
            delay,
        }
    }

    /// A TCP chunk's fate: loss costs one [`TCP_RTO`]. Always two draws.
    fn chunk(&mut self) -> Fate {
        let [loss, jitter] = [(); 2].map(|()| self.rng.unit());
        let lost = loss < self.imp.loss;
        let delay = self.jittered(jitter) + if lost { TCP_RTO } else { Duration::ZERO };
        Fate {
            lost,
            duplicated: false,
            reordered: false,
            delay,
        }
    }

    /// `delay` moved by `(2u - 1) * jitter`, and never below zero.
    fn jittered(&self, u: f64) -> Duration {
        let secs = self.imp.delay.as_secs_f64() + self.imp.jitter.as_secs_f64() * (2.0 * u - 1.0);
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// What happened in one direction. Invariant once the queues are empty:
/// `received + duplicated = forwarded + dropped + overflowed` (UDP, when no
/// send failed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams (UDP) or chunks (TCP) read.
    pub received: u64,
    /// Datagrams or chunks sent on, counting duplicates.
    pub forwarded: u64,
    /// Bytes sent on.
    pub bytes: u64,
    /// Datagrams dropped by `loss` (UDP).
    pub dropped: u64,
    /// Datagrams sent twice (UDP).
    pub duplicated: u64,
    /// Datagrams held back so later ones overtake them (UDP).
    pub reordered: u64,
    /// Datagrams sent on with one bit flipped (UDP).
    pub corrupted: u64,
    /// Datagrams dropped because the queue was full or there were too many
    /// clients (UDP).
    pub overflowed: u64,
    /// Chunks hit by `loss`, delivered one [`TCP_RTO`] late (TCP).
    pub retransmitted: u64,
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received {} forwarded {} ({} bytes) dropped {} duplicated {} reordered {} corrupted {} overflowed {} retransmitted {}",
            self.received,
            self.forwarded,
            self.bytes,
            self.dropped,
            self.duplicated,
            self.reordered,
            self.corrupted,
            self.overflowed,
            self.retransmitted
        )
    }
}

/// The counters of both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// From the clients to the upstream.
    pub up: Counters,
    /// From the upstream back to the clients.
    pub down: Counters,
}

impl Stats {
    fn get(&mut self, dir: Dir) -> &mut Counters {
        match dir {
            Dir::Up => &mut self.up,
            Dir::Down => &mut self.down,
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client->upstream: {}\nupstream->client: {}",
            self.up, self.down
        )
    }
}

#[derive(Clone, Copy)]
enum Dir {
    Up,
    Down,
}

/// Locks, and keeps going if another thread panicked holding the lock: the
/// data here (queues, counters) stays usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wait<'a, T>(cond: &Condvar, guard: MutexGuard<'a, T>, timeout: Duration) -> MutexGuard<'a, T> {
    cond.wait_timeout(guard, timeout)
        .unwrap_or_else(PoisonError::into_inner)
        .0
}

/// A socket call that timed out (`TICK`) or was interrupted: just try again.
fn again(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name.into()).spawn(f)
}

/// Relays UDP between clients and one upstream address. Each client gets its
/// own socket towards the upstream, so the upstream sees one address per
/// client and its replies come back to the right one.
pub struct UdpRelay {
    local: SocketAddr,
    shared: Arc<UdpShared>,
    threads: Vec<JoinHandle<()>>,
}

struct UdpShared {
    /// The listening socket; the scheduler also sends replies from it.
    front: UdpSocket,
    upstream: SocketAddr,
    stop: AtomicBool,
    stats: Mutex<Stats>,
    /// One decision stream per direction (index: `Dir as usize`).
    deciders: [Mutex<Decider>; 2],
    schedule: Mutex<Schedule>,
    /// Signalled when something is queued, and on stop.
    wake: Condvar,
}

/// The datagrams waiting for their time, earliest first.
#[derive(Default)]
struct Schedule {
    heap: BinaryHeap<Reverse<Due>>,
    bytes: usize,
    seq: u64,
}

/// A datagram and when to send it. Ordered by time, then by arrival (`seq`),
/// so datagrams due at the same instant keep their order.
struct Due {
    at: Instant,
    seq: u64,
    bytes: Vec<u8>,
    to: Dest,
}

#[derive(Clone)]
enum Dest {
    /// Up, through this client's own socket.
    Upstream(Arc<UdpSocket>),
    /// Down, from the listening socket to this client.
    Client(SocketAddr),
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Due {}

impl UdpRelay {
    /// Binds `listen` and starts relaying to `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr, impair: Impairments) -> io::Result<Self> {
        let front = UdpSocket::bind(listen)?;
        front.set_read_timeout(Some(TICK))?;
        let shared = Arc::new(UdpShared {
            front,
            upstream,
            stop: AtomicBool::new(false),
            stats: Mutex::default(),
            deciders: [0, 1].map(|stream| Mutex::new(Decider::new(impair, stream))),
            schedule: Mutex::default(),
            wake: Condvar::new(),
        });
        // If a spawn fails, dropping `relay` stops the threads already started.
        let mut relay = UdpRelay {
            local: shared.front.local_addr()?,
            shared,
            threads: Vec::new(),
        };
        let shared = relay.shared.clone();
        relay
            .threads
            .push(spawn("relay-udp-front", move || run_front(&shared))?);
        let shared = relay.shared.clone();
        relay
            .threads
            .push(spawn("relay-udp-sched", move || run_scheduler(&shared))?);
        Ok(relay)
    }

    /// The address it listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        *lock(&self.shared.stats)
    }

    /// From the next datagram on, impairs as `imp` says (its seed is
    /// ignored: the decisions go on from where they were). Datagrams
    /// already queued keep the fate they were given.
    pub fn set_impairments(&self, imp: Impairments) {
        for decider in &self.shared.deciders {
            lock(decider).set(imp);
        }
    }

    /// Stops all threads (within about one [`TICK`]); what is still queued is
    /// dropped. Dropping the relay does the same.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        self.shared.wake.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

impl UdpShared {
    /// Decides one datagram's fate and queues what survives.
    fn impair(&self, dir: Dir, bytes: &[u8], to: Dest) {
        let (fate, flip) = {
            let mut decider = lock(&self.deciders[dir as usize]);
            (decider.datagram(), decider.corruption(bytes.len()))
        };
        let at = Instant::now() + fate.delay;
        // Counted before it is queued, so `forwarded` never runs ahead. Lock
        // order: stats, then schedule (the scheduler never holds both).
        let mut stats = lock(&self.stats);
        let counters = stats.get(dir);
        counters.received += 1;
        if fate.lost {
            counters.dropped += 1;
            return;
        }
        counters.duplicated += u64::from(fate.duplicated);
        counters.reordered += u64::from(fate.reordered);
        counters.corrupted += u64::from(flip.is_some());
        let changed: Vec<u8>;
        let bytes = match flip {
            Some(bit) => {
                let mut copy = bytes.to_vec();
                copy[bit / 8] ^= 1 << (bit % 8);
                changed = copy;
                &changed[..]
            }
            None => bytes,
        };
        let mut schedule = lock(&self.schedule);
        for _ in 0..1 + u8::from(fate.duplicated) {
            if schedule.bytes + bytes.len() > MAX_QUEUE_BYTES {
                counters.overflowed += 1;
                continue;
            }
            schedule.bytes += bytes.len();
            schedule.seq += 1;
            let due = Due {
                at,
                seq: schedule.seq,
                bytes: bytes.to_vec(),
                to: to.clone(),
            };
            schedule.heap.push(Reverse(due));
        }
        self.wake.notify_all();
    }

    /// Waits until the earliest datagram is due and takes it; `None` on stop.
    fn next_due(&self) -> Option<Due> {
        let mut schedule = lock(&self.schedule);
        loop {
            if self.stop.load(Relaxed) {
                return None;
            }
            let now = Instant::now();
            let timeout = match schedule.heap.peek().map(|Reverse(due)| due.at) {
                Some(at) if at <= now => {
                    let Reverse(due) = schedule.heap.pop()?;
                    schedule.bytes -= due.bytes.len();
                    return Some(due);
                }
                Some(at) => (at - now).min(TICK),
                None => TICK,
            };
            schedule = wait(&self.wake, schedule, timeout);
        }
    }
}

/// The scheduler thread: sends each datagram when it is due. A send that
/// fails (say, the upstream is not up yet) is not counted as forwarded.
fn run_scheduler(shared: &UdpShared) {
    while let Some(due) = shared.next_due() {
        let (dir, sent) = match &due.to {
            Dest::Upstream(socket) => (Dir::Up, socket.send(&due.bytes)),
            Dest::Client(addr) => (Dir::Down, shared.front.send_to(&due.bytes, addr)),
        };
        if let Ok(n) = sent {
            let mut stats = lock(&shared.stats);
            stats.get(dir).forwarded += 1;
            stats.get(dir).bytes += n as u64;
        }
    }
}

/// A client, known by its source address.
struct Client {
    /// Connected to the upstream.
    socket: Arc<UdpSocket>,
    last_seen: Arc<Mutex<Instant>>,
    /// Set by the client's thread when it ends (idle, or an error).
    gone: Arc<AtomicBool>,
}

/// The front thread: reads datagrams from clients, finds or makes each
/// client's upstream socket, and hands the datagram to [`UdpShared::impair`].
fn run_front(shared: &Arc<UdpShared>) {
    let mut clients: HashMap<SocketAddr, Client> = HashMap::new();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut buf = vec![0; 65536];
    while !shared.stop.load(Relaxed) {
        let (n, from) = match shared.front.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if again(&e) => continue,
            // Nothing else is expected on an unconnected UDP socket.
            Err(_) => break,
        };
        clients.retain(|_, client| !client.gone.load(Relaxed));
        threads.retain(|thread| !thread.is_finished());
        if !clients.contains_key(&from) {
            let opened = (clients.len() < MAX_UDP_CLIENTS).then(|| open_client(shared, from));
            match opened {
                Some(Ok((client, thread))) => {
                    clients.insert(from, client);
                    threads.push(thread);
                }
                _ => {
                    lock(&shared.stats).up.overflowed += 1;
                    continue;
                }
            }
        }
        let Some(client) = clients.get(&from) else {
            continue;
        };
        *lock(&client.last_seen) = Instant::now();
        shared.impair(Dir::Up, &buf[..n], Dest::Upstream(client.socket.clone()));
    }
    for thread in threads {
        let _ = thread.join();
    }
}

/// Makes a client's socket towards the upstream and its reply thread.
fn open_client(shared: &Arc<UdpShared>, addr: SocketAddr) -> io::Result<(Client, JoinHandle<()>)> {
    let any: SocketAddr = match shared.upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any)?;
    socket.connect(shared.upstream)?;
    socket.set_read_timeout(Some(TICK))?;
    let client = Client {
        socket: Arc::new(socket),
        last_seen: Arc::new(Mutex::new(Instant::now())),
        gone: Arc::new(AtomicBool::new(false)),
    };
    let (shared, socket) = (shared.clone(), client.socket.clone());
    let (last_seen, gone) = (client.last_seen.clone(), client.gone.clone());
    let thread = spawn("relay-udp-client", move || {
        let mut buf = vec![0; 65536];
        while !shared.stop.load(Relaxed) {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    *lock(&last_seen) = Instant::now();
                    shared.impair(Dir::Down, &buf[..n], Dest::Client(addr));
                }
                Err(e) if again(&e) => {
                    if lock(&last_seen).elapsed() > UDP_IDLE_TIMEOUT {
                        break;
                    }
                }
                // An ICMP port unreachable from an upstream not (yet) listening.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(_) => break,
            }
        }
        gone.store(true, Relaxed);
    })?;
    Ok((client, thread))
}

/// Relays TCP connections to one upstream address, one upstream connection
/// per client connection. See the module docs for what `loss` means here.
pub struct TcpRelay {
    local: SocketAddr,
    shared: Arc<TcpShared>,
    threads: Vec<JoinHandle<()>>,
}

struct TcpShared {
    upstream: SocketAddr,
    impair: Impairments,
    stop: AtomicBool,
    stats: Mutex<Stats>,
}

impl TcpRelay {
    /// Listens on `listen` and starts relaying to `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr, impair: Impairments) -> io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        // std cannot interrupt a blocking accept(), so the listener is
        // non-blocking and polled every 20 ms, which costs nothing measurable.
        listener.set_nonblocking(true)?;
        let shared = Arc::new(TcpShared {
            upstream,
            impair,
            stop: AtomicBool::new(false),
            stats: Mutex::default(),
        });
        let mut relay = TcpRelay {
            local: listener.local_addr()?,
            shared,
            threads: Vec::new(),
        };
        let shared = relay.shared.clone();
        relay.threads.push(spawn("relay-tcp-accept", move || {
            run_acceptor(&shared, &listener)
        })?);
        Ok(relay)
    }

    /// The address it listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The counters so far, over all connections.
    pub fn stats(&self) -> Stats {
        *lock(&self.shared.stats)
    }

    /// Closes all connections and stops all threads (within about one
    /// [`TICK`]). Dropping the relay does the same.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_acceptor(shared: &Arc<TcpShared>, listener: &TcpListener) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    let mut next = 0;
    while !shared.stop.load(Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                connections.retain(|thread| !thread.is_finished());
                let (shared, n) = (shared.clone(), next);
                next += 1;
                if let Ok(thread) = spawn("relay-tcp-conn", move || serve(&shared, client, n)) {
                    connections.push(thread);
                }
            }
            // WouldBlock: no one is connecting; anything else (say, out of
            // file descriptors) may pass, so wait and try again.
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
    for thread in connections {
        let _ = thread.join();
    }
}

/// Relays connection number `n`: this thread carries the way up, a second
/// one the way down. If the upstream cannot be reached, dropping `client`
/// closes it.
fn serve(shared: &Arc<TcpShared>, client: TcpStream, n: u64) {
    let Ok(server) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5)) else {
        return;
    };
    let setup = |s: &TcpStream| {
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?; // send each chunk when it is due, not batched
        s.set_read_timeout(Some(TICK))?;
        s.set_write_timeout(Some(TICK))?;
        s.try_clone()
    };
    let (Ok(client2), Ok(server2)) = (setup(&client), setup(&server)) else {
        return;
    };
    let down_shared = shared.clone();
    let down = spawn("relay-tcp-down", move || {
        pipe(&down_shared, Dir::Down, server2, client2, 2 * n + 1)
    });
    let Ok(down) = down else { return };
    pipe(shared, Dir::Up, client, server, 2 * n);
    let _ = down.join();
}

/// One direction of a TCP connection, in order. Empty chunks mark the end of
/// the stream (a read never returns an empty chunk otherwise).
#[derive(Default)]
struct ChunkQueue {
    state: Mutex<Chunks>,
    changed: Condvar,
}

#[derive(Default)]
struct Chunks {
    queue: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
    /// When the last queued chunk is due: no later chunk may be due earlier.
    last_at: Option<Instant>,
    /// The writer gave up (the receiver is gone).
    closed: bool,
}

impl ChunkQueue {
    /// Queues `bytes` to be delivered `delay` from now, but not before the
    /// chunk ahead of it. Waits while the queue is full: that is the
    /// backpressure. False when the writer is gone or the relay stops.
    fn push(&self, stop: &AtomicBool, bytes: &[u8], delay: Duration) -> bool {
        let mut chunks = lock(&self.state);
        while chunks.bytes >= MAX_QUEUE_BYTES && !chunks.closed && !stop.load(Relaxed) {
            chunks = wait(&self.changed, chunks, TICK);
        }
        if chunks.closed || stop.load(Relaxed) {
            return false;
        }
        let now = Instant::now();
        let at = (now + delay).max(chunks.last_at.unwrap_or(now));
        chunks.last_at = Some(at);
        chunks.bytes += bytes.len();
        chunks.queue.push_back((at, bytes.to_vec()));
        self.changed.notify_all();
        true
    }

    /// Waits for the next chunk to be due and takes it; `None` on stop.
    fn pop(&self, stop: &AtomicBool) -> Option<Vec<u8>> {
        let mut chunks = lock(&self.state);
        loop {
            if stop.load(Relaxed) {
                return None;
            }
            let now = Instant::now();
            let timeout = match chunks.queue.front().map(|(at, _)| *at) {
                Some(at) if at <= now => {
                    let (_, bytes) = chunks.queue.pop_front()?;
                    chunks.bytes -= bytes.len();
                    self.changed.notify_all();
                    return Some(bytes);
                }
                Some(at) => (at - now).min(TICK),
                None => TICK,
            };
            chunks = wait(&self.changed, chunks, timeout);
        }
    }

    /// Neither stopped nor closed by the writer.
    fn open(&self, stop: &AtomicBool) -> bool {
        !lock(&self.state).closed && !stop.load(Relaxed)
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.changed.notify_all();
    }
}

/// Carries one direction: this thread reads `from` and queues chunks with
/// their fates; a writer thread delivers them to `to` when due and, after the
/// end-of-stream marker, shuts down `to`'s writing (the half-close).
fn pipe(shared: &Arc<TcpShared>, dir: Dir, mut from: TcpStream, to: TcpStream, stream: u64) {
    let queue = Arc::new(ChunkQueue::default());
    let (writer_shared, writer_queue) = (shared.clone(), queue.clone());
    let Ok(writer) = spawn("relay-tcp-write", move || {
        deliver(&writer_shared, dir, &writer_queue, to)
    }) else {
        return;
    };
    let mut decider = Decider::new(shared.impair, stream);
    let mut buf = [0; TCP_CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(n) => n,
            Err(e) if again(&e) && queue.open(&shared.stop) => continue,
            // A reset, or the relay stops: end the stream like an EOF.
            Err(_) => 0,
        };
        let mut delay = Duration::ZERO;
        if n > 0 {
            let fate = decider.chunk();
            delay = fate.delay;
            let mut stats = lock(&shared.stats);
            stats.get(dir).received += 1;
            stats.get(dir).retransmitted += u64::from(fate.lost);
        }
        if !queue.push(&shared.stop, &buf[..n], delay) || n == 0 {
            break;
        }
    }
    let _ = writer.join();
}

fn deliver(shared: &TcpShared, dir: Dir, queue: &ChunkQueue, mut to: TcpStream) {
    while let Some(chunk) = queue.pop(&shared.stop) {
        if chunk.is_empty() {
            let _ = to.shutdown(Shutdown::Write);
            return;
        }
        if write_all(&mut to, &chunk, &shared.stop).is_err() {
            queue.close();
            return;
        }
        let mut stats = lock(&shared.stats);
        stats.get(dir).forwarded += 1;
        stats.get(dir).bytes += chunk.len() as u64;
    }
}

/// `Write::write_all` that gives up when the relay stops, even while the
/// receiver is not reading.
fn write_all(to: &mut TcpStream, mut buf: &[u8], stop: &AtomicBool) -> io::Result<()> {
    while !buf.is_empty() {
        match to.write(buf) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if again(&e) && !stop.load(Relaxed) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn localhost() -> SocketAddr {
        (Ipv4Addr::LOCALHOST, 0).into()
    }

    fn udp() -> UdpSocket {
        let socket = UdpSocket::bind(localhost()).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        socket
    }

    fn imp(spec: &str) -> Impairments {
        spec.parse().expect("good spec")
    }

    fn udp_relay(upstream: &UdpSocket, spec: &str) -> UdpRelay {
        let to = upstream.local_addr().expect("addr");
        UdpRelay::start(localhost(), to, imp(spec)).expect("start relay")
    }

    /// Waits (at most 10 s) until the counters pass `done`, and returns them.
    /// The counters change just after a send, so a test that has seen the
    /// datagrams may still have to wait for them.
    fn wait_for(relay: &UdpRelay, done: impl Fn(&Stats) -> bool) -> Stats {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = relay.stats();
            if done(&stats) || Instant::now() > deadline {
                return stats;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the relay has decided `n` datagrams going up and has sent
    /// everything that survived.
    fn settle(relay: &UdpRelay, n: u64) -> Counters {
        let done = |up: &Counters| {
            up.received == n && up.forwarded + up.dropped + up.overflowed == n + up.duplicated
        };
        wait_for(relay, |stats| done(&stats.up)).up
    }

    /// Reads datagrams until none comes for 300 ms.
    fn drain(socket: &UdpSocket) -> Vec<Vec<u8>> {
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let (mut got, mut buf) = (Vec::new(), [0; 2048]);
        while let Ok(n) = socket.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    }

    /// Sends datagrams `[0]`, `[1]`, ... `[n - 1]` up through `relay`.
    fn send_numbered(relay: &UdpRelay, n: u8) {
        let client = udp();
        for i in 0..n {
            client.send_to(&[i], relay.local_addr()).expect("send");
        }
    }

    #[test]
    fn udp_clean_link_delivers_everything_in_order_both_ways() {
        let server = udp();
        let relay = udp_relay(&server, "");
        let (a, b) = (udp(), udp());
        for i in 0..50 {
            a.send_to(&[b'a', i], relay.local_addr()).expect("send");
            b.send_to(&[b'b', i], relay.local_addr()).expect("send");
        }
        let (mut seen, mut buf) = (Vec::new(), [0; 16]);
        for _ in 0..100 {
            let (n, from) = server.recv_from(&mut buf).expect("server receives");
            server.send_to(&buf[..n], from).expect("echo");
            seen.push((buf[0], buf[1], from));
        }
        for (client, tag) in [(&a, b'a'), (&b, b'b')] {
            let mine: Vec<_> = seen.iter().filter(|s| s.0 == tag).collect();
            assert_eq!(
                mine.iter().map(|s| s.1).collect::<Vec<_>>(),
                (0..50).collect::<Vec<u8>>()
            );
            assert!(
                mine.iter().all(|s| s.2 == mine[0].2),
                "one relay socket per client"
            );
            for i in 0..50 {
                let n = client.recv(&mut buf).expect("echo comes back");
                assert_eq!(&buf[..n], &[tag, i]);
            }
        }
        assert_ne!(seen[0].2, seen[1].2, "two clients, two relay sockets");
        let stats = wait_for(&relay, |s| s.up.forwarded == 100 && s.down.forwarded == 100);
        assert_eq!((stats.up.forwarded, stats.down.forwarded), (100, 100));
    }

    #[test]
    fn udp_loss_one_drops_everything() {
        let server = udp();
        let relay = udp_relay(&server, "loss=1");
        send_numbered(&relay, 20);
        assert_eq!(settle(&relay, 20).dropped, 20);
        assert!(drain(&server).is_empty());
    }

    #[test]
    fn udp_loss_half_is_deterministic() {
        let run = || {
            let server = udp();
            let relay = udp_relay(&server, "loss=0.5,seed=7");
            send_numbered(&relay, 200);
            let up = settle(&relay, 200);
            assert_eq!(drain(&server).len() as u64, 200 - up.dropped);
            up.dropped
        };
        let first = run();
        assert_eq!(first, run(), "same seed, same input, same drops");
        assert!((60..=140).contains(&first), "{first} of 200 dropped at loss=0.5");
    }

    #[test]
    fn udp_dup_one_duplicates_each() {
        let server = udp();
        let relay = udp_relay(&server, "dup=1");
        send_numbered(&relay, 20);
        assert_eq!(settle(&relay, 20).duplicated, 20);
        let expected: Vec<Vec<u8>> = (0..20).flat_map(|i| [vec![i], vec![i]]).collect();
        assert_eq!(drain(&server), expected);
    }

    #[test]
    fn udp_delay_is_paid_each_way() {
        let server = udp();
        let relay = udp_relay(&server, "delay=50ms");
        let client = udp();
        let (start, mut buf) = (Instant::now(), [0; 16]);
        client.send_to(b"ping", relay.local_addr()).expect("send");
        let (n, from) = server.recv_from(&mut buf).expect("server receives");
        server.send_to(&buf[..n], from).expect("echo");
        let n = client.recv(&mut buf).expect("echo comes back");
        assert_eq!(&buf[..n], b"ping");
        assert!(
            start.elapsed() >= Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn udp_reorder_lets_later_datagrams_overtake() {
        let server = udp();
        let relay = udp_relay(&server, "delay=10ms,reorder=0.3,seed=1");
        send_numbered(&relay, 50);
        assert!(settle(&relay, 50).reordered > 0);
        let got: Vec<u8> = drain(&server).iter().map(|d| d[0]).collect();
        assert_eq!(got.len(), 50);
        assert!(got.windows(2).any(|w| w[1] < w[0]), "no overtaking in {got:?}");
    }

    #[test]
    fn decisions_follow_the_seed() {
        // The first output for seed 0, from the reference C implementation.
        assert_eq!(SplitMix64(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let spec = imp("loss=0.3,dup=0.2,reorder=0.1,delay=10ms,jitter=5ms,seed=42");
        let fates = |stream| {
            let mut decider = Decider::new(spec, stream);
            (0..1000).map(|_| decider.datagram()).collect::<Vec<_>>()
        };
        assert_eq!(fates(0), fates(0));
        assert_ne!(fates(0), fates(1), "each direction has its own stream");
        let fates = fates(0);
        assert!(fates.iter().all(|f| f.delay <= Duration::from_millis(26)));
        let lost = fates.iter().filter(|f| f.lost).count();
        assert!((200..400).contains(&lost), "{lost} of 1000 lost at loss=0.3");
    }

    #[test]
    fn udp_corrupt_one_flips_one_bit_of_each_datagram() {
        let server = udp();
        let relay = udp_relay(&server, "corrupt=1,seed=5");
        let client = udp();
        let sent: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i, 0x55, 0xaa, 0, 0xff, i, i, i]).collect();
        for d in &sent {
            client.send_to(d, relay.local_addr()).expect("send");
        }
        assert_eq!(settle(&relay, 40).corrupted, 40);
        let got = drain(&server);
        assert_eq!(got.len(), 40);
        let mut places = std::collections::BTreeSet::new();
        for (a, b) in sent.iter().zip(&got) {
            let flipped: Vec<(usize, u8)> = a
                .iter()
                .zip(b)
                .enumerate()
                .filter(|(_, (x, y))| x != y)
                .map(|(i, (x, y))| (i, x ^ y))
                .collect();
            assert!(
                matches!(flipped[..], [(_, bit)] if bit.count_ones() == 1),
                "{a:02x?} became {b:02x?}"
            );
            places.insert(flipped[0]);
        }
        assert!(places.len() > 10, "the flipped bit moves: {places:?}");
    }

    #[test]
    fn corruption_leaves_the_other_decisions_of_a_seed_as_they_were() {
        let fates = |spec: &str| {
            let mut decider = Decider::new(imp(spec), 0);
            (0..500).map(|_| decider.datagram()).collect::<Vec<_>>()
        };
        let plain = "loss=0.3,dup=0.2,reorder=0.1,delay=10ms,jitter=5ms,seed=42";
        assert_eq!(fates(plain), fates(&format!("{plain},corrupt=0.5")));
        let mut decider = Decider::new(imp("corrupt=0.25,seed=1"), 0);
        let hit = (0..1000).filter(|_| decider.corruption(100).is_some()).count();
        assert!(
            (150..350).contains(&hit),
            "{hit} of 1000 corrupted at corrupt=0.25"
        );
        assert_eq!(
            decider.corruption(0),
            None,
            "an empty datagram has no bit to flip"
        );
    }

    #[test]
    fn impairments_change_while_the_relay_runs() {
        let server = udp();
        let relay = udp_relay(&server, "loss=1");
        send_numbered(&relay, 10);
        assert_eq!(settle(&relay, 10).dropped, 10);
        relay.set_impairments(Impairments::default());
        send_numbered(&relay, 10);
        let up = settle(&relay, 20);
        assert_eq!((up.dropped, up.forwarded), (10, 10));
        assert_eq!(drain(&server).len(), 10, "a clean link after the change");
    }

    /// `len` bytes that differ for each `seed` and do not repeat with a short
    /// period, so a misplaced chunk cannot go unnoticed.
    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = SplitMix64(seed);
        (0..len).map(|_| rng.next_u64() as u8).collect()
    }

    #[test]
    fn tcp_copies_a_megabyte_both_ways_and_keeps_half_close() {
        let upstream = TcpListener::bind(localhost()).expect("bind");
        let to = upstream.local_addr().expect("addr");
        let spec = imp("loss=0.01,delay=5ms,jitter=2ms,seed=3");
        let relay = TcpRelay::start(localhost(), to, spec).expect("start relay");
        let (up_data, down_data) = (pattern(1 << 20, 1), pattern(1 << 20, 2));
        let timeout = Some(Duration::from_secs(30));

        let down = down_data.clone();
        let server = thread::spawn(move || {
            let (conn, _) = upstream.accept().expect("accept");
            conn.set_read_timeout(timeout).expect("timeout");
            let mut out = conn.try_clone().expect("clone");
            let writer = thread::spawn(move || out.write_all(&down).map(|()| out));
            let mut got = Vec::new();
            (&conn)
                .read_to_end(&mut got)
                .expect("read up to the client's half-close");
            let mut out = writer.join().expect("writer").expect("write down");
            out.write_all(b"bye")
                .expect("write after the client's half-close");
            out.shutdown(Shutdown::Write).expect("shutdown");
            got
        });

        let client = TcpStream::connect(relay.local_addr()).expect("connect");
        client.set_read_timeout(timeout).expect("timeout");
        let mut out = client.try_clone().expect("clone");
        let up = up_data.clone();
        let writer = thread::spawn(move || {
            out.write_all(&up).expect("write up");
            out.shutdown(Shutdown::Write).expect("half-close");
        });
        let mut got = Vec::new();
        (&client).read_to_end(&mut got).expect("read down");
        writer.join().expect("writer");

        assert!(server.join().expect("server") == up_data, "up stream corrupted");
        assert!(
            got[..got.len().saturating_sub(3)] == down_data[..],
            "down stream corrupted"
        );
        assert!(got.ends_with(b"bye"), "the reply after the half-close is lost");
        let stats = relay.stats();
        assert!(stats.up.retransmitted + stats.down.retransmitted > 0, "{stats}");
        assert_eq!(stats.up.bytes, 1 << 20);
    }

    #[test]
    fn spec_parsing_accepts_good_and_rejects_bad() {
        let full = imp("loss=0.02,delay=20ms,jitter=5ms,dup=0.01,reorder=0.05,corrupt=0.03,seed=7");
        let expected = Impairments {
            loss: 0.02,
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            duplicate: 0.01,
            reorder: 0.05,
            corrupt: 0.03,
            seed: 7,
        };
        assert_eq!(full, expected);
        assert_eq!(imp(&full.to_string()), full, "Display gives the spec back");
        assert_eq!(imp(""), Impairments::default());
        assert_eq!(imp("none"), Impairments::default());
        let odd = imp(" loss = 1 , delay=1.5s,jitter=250us,duplicate=0 ");
        assert_eq!((odd.loss, odd.delay), (1.0, Duration::from_millis(1500)));
        assert_eq!(odd.jitter, Duration::from_micros(250));

        for (spec, why) in [
            ("loss=2", "between 0 and 1"),
            ("loss=NaN", "between 0 and 1"),
            ("dup=-0.1", "between 0 and 1"),
            ("corrupt=1.5", "between 0 and 1"),
            ("loss", "not KEY=VALUE"),
            ("loss=0.1,,delay=1ms", "not KEY=VALUE"),
            ("delay=20", "with a unit"),
            ("delay=-1ms", "with a unit"),
            ("jitter=2h", "with a unit"),
            ("delay=61s", "from 0 to 60s"),
            ("wobble=1", "unknown key `wobble`"),
            ("seed=-3", "unsigned integer"),
        ] {
            let err = spec.parse::<Impairments>().expect_err(spec).to_string();
            assert!(err.contains(why), "{spec}: {err}");
        }
    }
}
