//! The server: accepts control connections from listed clients, gives
//! each the public port it asks for, and turns every visitor of that port
//! into a stream to the client.
//!
//! Ports belong to client keys: a port one client exposes is refused to
//! every other key with `port-in-use`, and the same key connecting again
//! (after its old connection broke without the server noticing) takes its
//! port over at once. Which ports a key may claim, and how many, is
//! [`PortRules`]'s to say.
//!
//! With UDP asked for too, the same port number is also bound for UDP: one
//! socket, every visitor address a flow (see [`crate::flows`]), every
//! flow a stream to the client carrying length-prefixed datagrams.
//!
//! The rules live in [`crate::policy`], sans-IO; this file is the shell
//! that accepts, reads, binds and spawns, asking them at each step.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use step01_ping_tun::logging::DropLog;
use step04_crypto::PublicKey;
use step04_crypto::entropy::{Entropy, OsEntropy};
use step04_crypto::keys::{self, Short};

use crate::conn::{Conn, Handshake, Lease, StreamGone, next_handshake_event};
use crate::datagram;
use crate::flows::{self, FlowTable, Verdict};
use crate::keepalive;
use crate::mux::{self, Mux, Side};
use crate::policy::{
    Claim, HandshakeCounters, HandshakeLimits, Handshakes, PortRules, Ports, Session, Step, VisitorCounters,
    VisitorLimits, Visitors,
};
use crate::secure::{SecureChannel, ServerKeys};
use crate::wire::{ErrorCode, Protos, Repr};

/// What the server needs.
pub struct ServerConfig {
    /// Where control connections come in.
    pub listen: SocketAddr,
    /// The address public ports are bound on.
    pub public_ip: IpAddr,
    pub keys: ServerKeys,
    pub mux: mux::Config,
    pub keepalive: keepalive::Config,
    /// Limits of the UDP flows of each public port.
    pub udp: flows::Config,
    /// Limits on connections in their handshake.
    pub handshakes: HandshakeLimits,
    /// Which ports each key may claim.
    pub ports: PortRules,
    /// Limits on the visitors of every public port.
    pub visitors: VisitorLimits,
    /// Where the handshakes' ephemeral keys come from: the kernel, or a
    /// key log for decrypting captures (see step 04's `KeylogEntropy`).
    pub entropy: Box<dyn Entropy>,
}

impl ServerConfig {
    /// A server with the default limits and timers.
    pub fn new(listen: SocketAddr, public_ip: IpAddr, keys: ServerKeys) -> Self {
        Self {
            listen,
            public_ip,
            keys,
            mux: mux::Config::default(),
            keepalive: keepalive::Config::default(),
            udp: flows::Config::default(),
            handshakes: HandshakeLimits::default(),
            ports: PortRules::default(),
            visitors: VisitorLimits::default(),
            entropy: Box::new(OsEntropy),
        }
    }
}

/// The UDP flows of all public ports, now and before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpStats {
    pub counters: flows::Counters,
    /// Flows open now.
    pub open: usize,
}

/// Counted events.
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Connections closed before or in the handshake: garbage, unknown
    /// keys, wrong server key, timeouts, replays, too many at once.
    pub refused: AtomicU64,
    /// Clients that sent their Hello.
    pub sessions: AtomicU64,
}

/// The visitors of every public port, now and before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VisitorStats {
    pub counters: VisitorCounters,
    /// Bytes reserved now for visitor streams: the most they can buffer.
    pub reserved: usize,
    /// The most ever reserved at once.
    pub peak: usize,
    /// Bytes the visitor streams buffer now (at most `reserved`).
    pub buffered: usize,
}

/// A public port and the thread accepting its visitors.
struct PublicPort {
    wake: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A visitor's share of the server: its stream, counted for its source,
/// and its bytes in the budget, until the stream is done.
struct VisitorLease {
    visitors: Arc<Mutex<Visitors>>,
    source: IpAddr,
}

impl Lease for VisitorLease {
    fn idle(&mut self) {
        lock(&self.visitors).counters.idle += 1;
    }
}

impl Drop for VisitorLease {
    fn drop(&mut self) {
        lock(&self.visitors).leave(self.source);
    }
}

impl PublicPort {
    fn start(
        listener: TcpListener,
        conn: Arc<Conn>,
        visitors: Arc<Mutex<Visitors>>,
        refusals: Arc<DropLog>,
    ) -> anyhow::Result<Self> {
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::Builder::new()
            .name(format!("public-{}", local.port()))
            .spawn(move || {
                for visitor in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(visitor) = visitor else {
                        // EMFILE and its like repeat: never spin on them.
                        thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    let _ = visitor.set_nodelay(true);
                    let from = peer(&visitor);
                    let Ok(source) = visitor.peer_addr().map(|a| a.ip()) else {
                        continue;
                    };
                    // Refused: closed at once, before it costs a stream.
                    if let Err(why) = lock(&visitors).admit(source) {
                        log::debug!("visitor {from} refused: {why}");
                        continue;
                    }
                    let lease = Box::new(VisitorLease {
                        visitors: visitors.clone(),
                        source,
                    });
                    match conn.open_stream(visitor, lease) {
                        Ok(id) => log::debug!("visitor {from} is stream #{id}"),
                        Err(e) => {
                            DropLog::drop(
                                &refusals,
                                Instant::now(),
                                format_args!("visitor {from} refused: {e:#}"),
                            );
                            if conn.dead().is_some() {
                                break;
                            }
                        }
                    }
                }
            })?;
        Ok(Self {
            wake: wake_address(local),
            stop,
            thread: Some(thread),
        })
    }

    /// Stops accepting and closes the port (when this returns, it can be
    /// bound again).
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // A blocked accept() returns when someone connects: be that one.
        let _ = TcpStream::connect_timeout(&self.wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The address of the other end, for logs.
fn peer(tcp: &TcpStream) -> String {
    tcp.peer_addr()
        .map_or_else(|_| "(unknown)".to_string(), |a| a.to_string())
}

/// Where to connect to reach a listener bound on `local`.
fn wake_address(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

/// A public UDP port: one socket, and the thread that reads it and
/// runs its flows.
struct UdpPort {
    wake: SocketAddr,
    stop: Arc<AtomicBool>,
    table: Arc<Mutex<FlowTable>>,
    thread: Option<JoinHandle<()>>,
}

impl UdpPort {
    fn start(socket: UdpSocket, conn: Arc<Conn>, config: flows::Config) -> anyhow::Result<Self> {
        let local = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let table = Arc::new(Mutex::new(FlowTable::new(config)));
        let (stopped, t) = (stop.clone(), table.clone());
        let thread = thread::Builder::new()
            .name(format!("public-udp-{}", local.port()))
            .spawn(move || udp_loop(&Arc::new(socket), &conn, &t, &stopped))?;
        Ok(Self {
            wake: wake_address(local),
            stop,
            table,
            thread: Some(thread),
        })
    }

    /// Stops reading, resets every flow and closes the socket (when this
    /// returns, the port can be bound again).
    fn stop(mut self) -> flows::Counters {
        self.stop.store(true, Ordering::SeqCst);
        // A blocked recv returns when a datagram comes: send one.
        let any: SocketAddr = match self.wake {
            SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
        };
        if let Ok(s) = UdpSocket::bind(any) {
            let _ = s.send_to(&[], self.wake);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        lock(&self.table).counters
    }
}

// ANCHOR: udp_loop
/// Reads the public UDP socket: each datagram goes to its visitor's flow
/// (opened on the first one), idle flows are reset, and one pump per flow
/// sends the client's replies back to its visitor.
fn udp_loop(socket: &Arc<UdpSocket>, conn: &Arc<Conn>, table: &Arc<Mutex<FlowTable>>, stop: &AtomicBool) {
    let max = lock(table).config().max_datagram;
    // One byte more than any UDP payload, so nothing is cut unseen.
    let mut buf = vec![0u8; 65_536];
    let mut framed = Vec::with_capacity(buf.len() + datagram::LENGTH_LEN);
    let mut pumps: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) && conn.dead().is_none() {
        let now = Instant::now();
        let (expired, next) = {
            let mut t = lock(table);
            (t.expire(now), t.next_expiry())
        };
        for (from, id) in expired {
            log::debug!("udp flow #{id} of {from}: idle, closed");
            conn.release(id);
        }
        pumps.retain(|p| !p.is_finished());
        // Sleep until the next flow may expire, and look at the stop flag
        // at least every second.
        let wait = next.map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now));
        let wait = wait.clamp(Duration::from_millis(1), Duration::from_secs(1));
        let _ = socket.set_read_timeout(Some(wait));
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(_) => continue,
        };
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let now = Instant::now();
        let verdict = lock(table).on_datagram(from, n, now);
        let id = match verdict {
            Verdict::Forward(id) => id,
            Verdict::Drop(reason) => {
                log::trace!("udp from {from}: {n} bytes dropped: {reason}");
                continue;
            }
            Verdict::Open => match conn.open_flow() {
                Ok(id) => {
                    log::debug!("udp visitor {from} is flow #{id}");
                    lock(table).insert(from, id, now);
                    let (c, sock, t) = (conn.clone(), socket.clone(), table.clone());
                    let pump = thread::Builder::new()
                        .name(format!("flow-{id}-down"))
                        .spawn(move || reply_pump(&c, id, max, &sock, from, &t));
                    match pump {
                        Ok(p) => pumps.push(p),
                        Err(_) => {
                            lock(table).remove_stream(id);
                            conn.release(id);
                            continue;
                        }
                    }
                    id
                }
                Err(e) => {
                    log::debug!("udp visitor {from} refused: {e:#}");
                    lock(table).counters.drop(flows::DropReason::TooManyFlows);
                    continue;
                }
            },
        };
        framed.clear();
        if datagram::encode(&buf[..n], &mut framed).is_err() {
            continue;
        }
        match conn.send_whole(id, &framed) {
            Ok(true) => {}
            Ok(false) => lock(table).counters.drop(flows::DropReason::NoCredit),
            Err(StreamGone) => {
                lock(table).remove_stream(id);
                conn.release(id);
            }
        }
    }
    let streams = lock(table).streams();
    for id in streams {
        lock(table).remove_stream(id);
        conn.release(id);
    }
    for p in pumps {
        let _ = p.join();
    }
}
// ANCHOR_END: udp_loop

/// The client's replies on flow `id`, back to its visitor `to`.
fn reply_pump(
    conn: &Conn,
    id: u32,
    max: usize,
    socket: &UdpSocket,
    to: SocketAddr,
    table: &Mutex<FlowTable>,
) {
    let skipped = conn.pump_datagrams(id, max, |d| {
        if socket.send_to(d, to).is_ok() {
            lock(table).touch(id, Instant::now());
        }
    });
    let mut t = lock(table);
    t.counters.too_long += skipped;
    t.remove_stream(id);
    drop(t);
    conn.release(id);
}

struct Exposure {
    conn: Arc<Conn>,
    tcp: Option<PublicPort>,
    udp: Option<UdpPort>,
}

impl Exposure {
    /// Closes its ports; the UDP flows' counters, to keep.
    fn stop(self) -> flows::Counters {
        if let Some(p) = self.tcp {
            p.stop();
        }
        self.udp.map(UdpPort::stop).unwrap_or_default()
    }
}

/// The ports held (whose, by [`Ports`]) and what serves them.
struct Exposures {
    ports: Ports<u64>,
    open: HashMap<u16, Exposure>,
}

struct Shared {
    keys: Arc<ServerKeys>,
    public_ip: IpAddr,
    mux: mux::Config,
    keepalive: keepalive::Config,
    udp: flows::Config,
    entropy: Mutex<Box<dyn Entropy>>,
    /// The UDP counters of ports already closed.
    udp_retired: Mutex<flows::Counters>,
    stopping: AtomicBool,
    handshakes: Mutex<Handshakes>,
    visitors: Arc<Mutex<Visitors>>,
    exposures: Mutex<Exposures>,
    conns: Mutex<Vec<Weak<Conn>>>,
    /// Lines about connections and visitors refused, which anyone who can
    /// reach the server can cause: the first few of each second at info
    /// level, the rest at debug (the counters count all).
    refusals: Arc<DropLog>,
    /// The number of the next control connection.
    next_conn: AtomicU64,
    counters: Arc<ServerCounters>,
}

/// A running server.
pub struct Server {
    listen: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// A handshake slot, given back when dropped: after the Hello, or when
/// the connection ends before it.
struct Slot {
    shared: Arc<Shared>,
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.shared.handshakes).end(self.source);
    }
}

impl Server {
    /// Binds the control port and starts accepting.
    pub fn start(config: ServerConfig) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(config.listen)
            .with_context(|| format!("listening for control connections on {}", config.listen))?;
        let listen = listener.local_addr()?;
        let shared = Arc::new(Shared {
            keys: Arc::new(config.keys),
            public_ip: config.public_ip,
            mux: config.mux,
            keepalive: config.keepalive,
            udp: config.udp,
            entropy: Mutex::new(config.entropy),
            udp_retired: Mutex::default(),
            stopping: AtomicBool::new(false),
            handshakes: Mutex::new(Handshakes::new(config.handshakes)),
            visitors: Arc::new(Mutex::new(Visitors::new(config.visitors))),
            exposures: Mutex::new(Exposures {
                ports: Ports::new(config.ports),
                open: HashMap::new(),
            }),
            conns: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(1),
            counters: Arc::default(),
            refusals: Arc::default(),
        });
        let s = shared.clone();
        let accept = thread::Builder::new()
            .name("control-accept".into())
            .spawn(move || {
                for tcp in listener.incoming() {
                    if s.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(tcp) = tcp else {
                        // EMFILE and its like repeat: never spin on them.
                        thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    let Ok(source) = tcp.peer_addr().map(|a| a.ip()) else {
                        continue;
                    };
                    // A slot first, or the connection is closed at once.
                    if let Err(why) = lock(&s.handshakes).begin(source) {
                        s.counters.refused.fetch_add(1, Ordering::Relaxed);
                        log::debug!("{source}: refused: {why}");
                        continue;
                    }
                    let slot = Slot {
                        shared: s.clone(),
                        source,
                    };
                    let session_shared = s.clone();
                    // If the thread cannot start, the slot is dropped with
                    // the closure, and so given back.
                    let spawned = thread::Builder::new()
                        .name("control-session".into())
                        .spawn(move || session(&session_shared, tcp, slot));
                    if spawned.is_err() {
                        s.counters.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })?;
        log::info!(
            "control port {listen}, public key {}",
            keys::public_to_string(shared.keys.identity.public())
        );
        Ok(Server {
            listen,
            shared,
            accept: Some(accept),
        })
    }

    /// The control address (with the port the system picked for port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn counters(&self) -> Arc<ServerCounters> {
        self.shared.counters.clone()
    }

    /// What the handshake rules refused, and how many handshakes are
    /// under way.
    pub fn handshakes(&self) -> (HandshakeCounters, usize) {
        let h = lock(&self.shared.handshakes);
        (h.counters, h.pending())
    }

    /// The visitors of every public port.
    pub fn visitor_stats(&self) -> VisitorStats {
        let s = &self.shared;
        let buffered = lock(&s.conns)
            .iter()
            .filter_map(Weak::upgrade)
            .map(|c| c.buffered())
            .sum();
        let v = lock(&s.visitors);
        VisitorStats {
            counters: v.counters,
            reserved: v.reserved(),
            peak: v.peak(),
            buffered,
        }
    }

    /// The UDP flows of every public port, open and closed.
    pub fn udp_stats(&self) -> UdpStats {
        let s = &self.shared;
        let mut stats = UdpStats {
            counters: *lock(&s.udp_retired),
            open: 0,
        };
        for e in lock(&s.exposures).open.values() {
            if let Some(u) = &e.udp {
                let t = lock(&u.table);
                stats.counters.add(&t.counters);
                stats.open += t.len();
            }
        }
        stats
    }

    /// Blocks until the control listener fails (for the binary).
    pub fn wait(mut self) {
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }

    /// Closes the control port, every public port and every connection;
    /// when it returns, the ports can be bound again.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let s = &self.shared;
        s.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&wake_address(self.listen), Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let exposures: Vec<Exposure> = lock(&s.exposures).open.drain().map(|(_, e)| e).collect();
        for e in exposures {
            e.conn.kill("server stopping");
            retire(s, e.stop());
        }
        for c in lock(&s.conns).drain(..) {
            if let Some(c) = c.upgrade() {
                c.kill("server stopping");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.shutdown();
        }
    }
}

/// Keeps the UDP counters of a closed port.
fn retire(s: &Shared, counters: flows::Counters) {
    lock(&s.udp_retired).add(&counters);
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ANCHOR: handshake
/// The server's side of the handshake, one cost at a time (see
/// [`crate::secure`]): the initiation within the first-record deadline;
/// its ephemeral key, refused if seen before (no Diffie-Hellman spent);
/// the client's key and timestamp, refused unless newer than the last of
/// that key (two); then the response (two more). Returns the client's key.
fn server_handshake(
    s: &Shared,
    tcp: &mut TcpStream,
    channel: &mut SecureChannel,
    accepted: Instant,
) -> anyhow::Result<[u8; 32]> {
    use std::io::Write;
    let limits = *lock(&s.handshakes).limits();
    let ephemeral = match next_handshake_event(tcp, channel, accepted + limits.first_record)? {
        Handshake::Initiation { ephemeral } => ephemeral,
        Handshake::Established { .. } => bail!("a response from a client"),
    };
    if lock(&s.handshakes).seen(&ephemeral) {
        return Err(crate::policy::HandshakeRefusal::Replay.into());
    }
    let (key, timestamp) = channel.identify()?;
    lock(&s.handshakes).admit(&key, timestamp, ephemeral)?;
    let mut out = Vec::new();
    channel.accept(&mut out)?;
    tcp.write_all(&out).context("sending the handshake")?;
    tcp.set_read_timeout(None)?;
    Ok(key)
}
// ANCHOR_END: handshake

// ANCHOR: session
/// One control connection, from the handshake to its end. It holds its
/// handshake `slot` until the client's Hello.
fn session(s: &Arc<Shared>, mut tcp: TcpStream, slot: Slot) {
    let accepted = Instant::now();
    let until_hello = lock(&s.handshakes).limits().until_hello;
    let from = peer(&tcp);
    let _ = tcp.set_nodelay(true);
    let ephemeral = lock(&s.entropy).ephemeral();
    let mut channel = SecureChannel::server(s.keys.clone(), ephemeral);
    let key = match server_handshake(s, &mut tcp, &mut channel, accepted) {
        Ok(key) => key,
        Err(e) => {
            s.counters.refused.fetch_add(1, Ordering::Relaxed);
            DropLog::drop(
                &s.refusals,
                Instant::now(),
                format_args!("{from}: refused: {e:#}"),
            );
            let _ = tcp.shutdown(Shutdown::Both);
            return;
        }
    };
    // Clients do not open streams: refuse any they try.
    let refuse: crate::conn::OnOpen = Arc::new(|conn, id, _| conn.refuse(id));
    let idle = Some(lock(&s.visitors).limits().idle_timeout).filter(|d| !d.is_zero());
    let conn = match Conn::start(
        tcp,
        Mux::new(Side::Server, s.mux),
        channel,
        s.keepalive,
        idle,
        refuse,
    ) {
        Ok(c) => c,
        Err(e) => return log::warn!("{from}: {e:#}"),
    };
    lock(&s.conns).push(Arc::downgrade(&conn));
    let id = s.next_conn.fetch_add(1, Ordering::Relaxed);
    let who = Short(&PublicKey::from(key)).to_string();
    let mut rules = Session::new();
    // Act only once the first sealed frame opened: it proves the client
    // holds the keys (a replayed initiation cannot get this far).
    let left = (accepted + until_hello).saturating_duration_since(Instant::now());
    match conn.next_session_frame(left).map(|f| rules.on_frame(&f)) {
        Some(Step::Start) => {
            s.counters.sessions.fetch_add(1, Ordering::Relaxed);
            log::info!("{who} connected from {from}");
        }
        Some(Step::Close(code, text) | Step::Refuse(code, text)) => {
            log::info!("{who}: {code}: {text}");
            let _ = conn.send(&Repr::error(code, &text));
            conn.wait_dead(until_hello);
            return conn.kill(&text);
        }
        Some(Step::Expose { .. }) | None => return conn.kill("no hello"),
    }
    drop(slot);
    while conn.dead().is_none() {
        let Some(frame) = conn.next_session_frame(Duration::from_secs(3600)) else {
            continue;
        };
        let sent = match rules.on_frame(&frame) {
            Step::Expose { port, protos } => match expose(s, &conn, id, key, port, protos) {
                Ok(port) => {
                    rules.exposed();
                    if protos.udp {
                        log::info!("{who} forwards udp on {}:{port}", s.public_ip);
                    }
                    if protos.tcp {
                        log::info!("{who} exposed on {}:{port}", s.public_ip);
                    }
                    conn.send(&Repr::Exposed { port })
                }
                Err((code, text)) => {
                    log::info!("{who}: {code}: {text}");
                    conn.send(&Repr::error(code, &text))
                }
            },
            Step::Refuse(code, text) => {
                log::info!("{who}: {code}: {text}");
                conn.send(&Repr::error(code, &text))
            }
            Step::Close(code, text) => {
                let _ = conn.send(&Repr::error(code, &text));
                conn.wait_dead(Duration::from_secs(1));
                conn.kill(&text);
                Ok(())
            }
            Step::Start => Ok(()),
        };
        if sent.is_err() {
            conn.kill("peer does not read");
        }
    }
    // Close what this connection exposed (unless a newer connection of
    // the same key took it over).
    let mine: Vec<Exposure> = {
        let mut ex = lock(&s.exposures);
        let ports = ex.ports.release_conn(&id);
        ports.iter().filter_map(|p| ex.open.remove(p)).collect()
    };
    for e in mine {
        retire(s, e.stop());
    }
    log::info!("{who} gone: {}", conn.dead().unwrap_or_default());
}
// ANCHOR_END: session

/// How often to look for a port number free for both TCP and UDP.
const BIND_ATTEMPTS: usize = 16;

/// Binds a public port for `key`'s connection `conn` (number `id`), as
/// [`Ports::claim`] says (port 0: any), for each protocol in `protos` on
/// the same number; the port, or the error frame to send.
fn expose(
    s: &Arc<Shared>,
    conn: &Arc<Conn>,
    id: u64,
    key: [u8; 32],
    port: u16,
    protos: Protos,
) -> Result<u16, (ErrorCode, String)> {
    let mut ex = lock(&s.exposures);
    if s.stopping.load(Ordering::SeqCst) {
        return Err((ErrorCode::PortUnavailable, "server stopping".into()));
    }
    let candidates = match ex.ports.claim(&key, port)? {
        Claim::Bind(ports) => ports,
        // The same client again: its old connection is dead or dying. If
        // it is not (two live clients with one key), the old one is told,
        // and gives up instead of taking the port back.
        Claim::Takeover { port, .. } => {
            if let Some(old) = ex.open.remove(&port) {
                let text = format!("port {port} was taken over by a newer connection with the same key");
                let _ = old.conn.send(&Repr::error(ErrorCode::PortInUse, &text));
                old.conn
                    .close_after_flush("replaced by a new connection with the same key");
                retire(s, old.stop());
            }
            ex.ports.release(port);
            vec![port]
        }
    };
    let unavailable = |port: u16, e: std::io::Error| {
        (
            ErrorCode::PortUnavailable,
            format!("cannot listen on {protos} port {port}: {e}"),
        )
    };
    let mut bound = Err(unavailable(port, std::io::ErrorKind::AddrInUse.into()));
    'candidates: for candidate in candidates {
        // Port 0 with both: the number the system gives the TCP listener
        // may be taken for UDP, so try a few.
        let attempts = if candidate == 0 && protos.tcp && protos.udp {
            BIND_ATTEMPTS
        } else {
            1
        };
        for _ in 0..attempts {
            bound = bind_both(s.public_ip, candidate, protos).map_err(|e| unavailable(candidate, e));
            if bound.is_ok() {
                break 'candidates;
            }
        }
    }
    let (actual, tcp, udp) = bound?;
    ex.ports.bound(&key, id, actual)?;
    let internal = |e: anyhow::Error| (ErrorCode::PortUnavailable, format!("{e:#}"));
    let started = tcp
        .map(|l| PublicPort::start(l, conn.clone(), s.visitors.clone(), s.refusals.clone()))
        .transpose()
        .map_err(internal)
        .and_then(
            |tcp| match udp.map(|u| UdpPort::start(u, conn.clone(), s.udp)).transpose() {
                Ok(udp) => Ok((tcp, udp)),
                Err(e) => {
                    if let Some(t) = tcp {
                        t.stop();
                    }
                    Err(internal(e))
                }
            },
        );
    let (tcp, udp) = match started {
        Ok(ports) => ports,
        Err(e) => {
            ex.ports.release(actual);
            return Err(e);
        }
    };
    ex.open.insert(
        actual,
        Exposure {
            conn: conn.clone(),
            tcp,
            udp,
        },
    );
    Ok(actual)
}

/// Binds `port` (0: any) for each of `protos`, on one number.
fn bind_both(
    ip: IpAddr,
    port: u16,
    protos: Protos,
) -> std::io::Result<(u16, Option<TcpListener>, Option<UdpSocket>)> {
    let tcp = protos.tcp.then(|| TcpListener::bind((ip, port))).transpose()?;
    let port = match &tcp {
        Some(l) => l.local_addr()?.port(),
        None => port,
    };
    let udp = protos.udp.then(|| UdpSocket::bind((ip, port))).transpose()?;
    let port = match &udp {
        Some(u) => u.local_addr()?.port(),
        None => port,
    };
    Ok((port, tcp, udp))
}
