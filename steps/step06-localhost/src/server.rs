//! The server: accepts control connections from listed clients, gives
//! each the public port it asks for, and turns every visitor of that port
//! into a stream to the client.
//!
//! Ports belong to client keys: a port one client exposes is refused to
//! every other key with `port-in-use`, and the same key connecting again
//! (after its old connection broke without the server noticing) takes its
//! port over at once.
//!
//! With UDP asked for too, the same port number is also bound for UDP: one
//! socket, every visitor address a flow (see [`crate::flows`]), every
//! flow a stream to the client carrying length-prefixed datagrams.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context;
use step04_crypto::PublicKey;
use step04_crypto::entropy::{Entropy, OsEntropy};
use step04_crypto::keys::{self, Short};

use crate::conn::{Conn, HANDSHAKE_TIMEOUT, SessionFrame, StreamGone, handshake};
use crate::datagram;
use crate::flows::{self, FlowTable, Verdict};
use crate::keepalive;
use crate::mux::{self, Mux, Side};
use crate::secure::{SecureChannel, ServerKeys};
use crate::wire::{ErrorCode, Protos, Repr, VERSION};

/// Connections in the handshake at once; more are closed at once. Each
/// costs a thread and at most a few hundred bytes for up to
/// [`HANDSHAKE_TIMEOUT`], so a flood of connections cannot exhaust the
/// server.
pub const MAX_PENDING_HANDSHAKES: usize = 64;

/// What the server needs.
pub struct ServerConfig {
    /// Where control connections come in.
    pub control: SocketAddr,
    /// The address public ports are bound on.
    pub public_ip: IpAddr,
    pub keys: ServerKeys,
    pub mux: mux::Config,
    pub keepalive: keepalive::Config,
    /// Limits of the UDP flows of each public port.
    pub udp: flows::Config,
    /// Where the handshakes' ephemeral keys come from: the kernel, or a
    /// key log for decrypting captures (see step 04's `KeylogEntropy`).
    pub entropy: Box<dyn Entropy>,
}

impl ServerConfig {
    /// A server with the default limits and timers.
    pub fn new(control: SocketAddr, public_ip: IpAddr, keys: ServerKeys) -> Self {
        Self {
            control,
            public_ip,
            keys,
            mux: mux::Config::default(),
            keepalive: keepalive::Config::default(),
            udp: flows::Config::default(),
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
    /// keys, wrong server key, timeouts.
    pub refused: AtomicU64,
    /// Clients that sent their Hello.
    pub sessions: AtomicU64,
}

/// A public port and the thread accepting its visitors.
struct PublicPort {
    wake: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PublicPort {
    fn start(listener: TcpListener, conn: Arc<Conn>) -> anyhow::Result<Self> {
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
                    match conn.open_stream(visitor) {
                        Ok(id) => log::debug!("visitor {from} is stream #{id}"),
                        Err(e) => {
                            log::info!("visitor {from} refused: {e:#}");
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
    key: [u8; 32],
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
    handshaking: AtomicUsize,
    ports: Mutex<HashMap<u16, Exposure>>,
    conns: Mutex<Vec<Weak<Conn>>>,
    counters: Arc<ServerCounters>,
}

/// A running server.
pub struct Server {
    control: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds the control port and starts accepting.
    pub fn start(config: ServerConfig) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(config.control)
            .with_context(|| format!("listening for control connections on {}", config.control))?;
        let control = listener.local_addr()?;
        let shared = Arc::new(Shared {
            keys: Arc::new(config.keys),
            public_ip: config.public_ip,
            mux: config.mux,
            keepalive: config.keepalive,
            udp: config.udp,
            entropy: Mutex::new(config.entropy),
            udp_retired: Mutex::default(),
            stopping: AtomicBool::new(false),
            handshaking: AtomicUsize::new(0),
            ports: Mutex::new(HashMap::new()),
            conns: Mutex::new(Vec::new()),
            counters: Arc::default(),
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
                    if s.handshaking.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING_HANDSHAKES {
                        s.handshaking.fetch_sub(1, Ordering::SeqCst);
                        s.counters.refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let session_shared = s.clone();
                    let spawned = thread::Builder::new()
                        .name("control-session".into())
                        .spawn(move || session(&session_shared, tcp));
                    if spawned.is_err() {
                        // The session never ran, so it never gives its
                        // handshake slot back: give it back here.
                        s.handshaking.fetch_sub(1, Ordering::SeqCst);
                        s.counters.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })?;
        log::info!(
            "control port {control}, public key {}",
            keys::public_to_string(shared.keys.identity.public())
        );
        Ok(Server {
            control,
            shared,
            accept: Some(accept),
        })
    }

    /// The control address (with the port the system picked for port 0).
    pub fn control_addr(&self) -> SocketAddr {
        self.control
    }

    pub fn counters(&self) -> Arc<ServerCounters> {
        self.shared.counters.clone()
    }

    /// The UDP flows of every public port, open and closed.
    pub fn udp_stats(&self) -> UdpStats {
        let s = &self.shared;
        let mut stats = UdpStats {
            counters: *lock(&s.udp_retired),
            open: 0,
        };
        for e in lock(&s.ports).values() {
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
        let _ = TcpStream::connect_timeout(&wake_address(self.control), Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let exposures: Vec<Exposure> = lock(&s.ports).drain().map(|(_, e)| e).collect();
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

// ANCHOR: session
/// One control connection, from the handshake to its end.
fn session(s: &Arc<Shared>, mut tcp: TcpStream) {
    let from = peer(&tcp);
    let _ = tcp.set_nodelay(true);
    let ephemeral = lock(&s.entropy).ephemeral();
    let mut channel = SecureChannel::server(s.keys.clone(), ephemeral);
    let shaken = handshake(&mut tcp, &mut channel, &[]);
    s.handshaking.fetch_sub(1, Ordering::SeqCst);
    let key = match shaken {
        Ok(key) => key,
        Err(e) => {
            s.counters.refused.fetch_add(1, Ordering::Relaxed);
            log::info!("{from}: refused: {e:#}");
            let _ = tcp.shutdown(Shutdown::Both);
            return;
        }
    };
    // Clients do not open streams: refuse any they try.
    let refuse: crate::conn::OnOpen = Arc::new(|conn, id, _| conn.refuse(id));
    let conn = match Conn::start(tcp, Mux::new(Side::Server, s.mux), channel, s.keepalive, refuse) {
        Ok(c) => c,
        Err(e) => return log::warn!("{from}: {e:#}"),
    };
    lock(&s.conns).push(Arc::downgrade(&conn));
    let who = Short(&PublicKey::from(key)).to_string();
    // Act only once the first sealed frame opened: it proves the client
    // holds the keys (a replayed initiation cannot get this far).
    match conn.next_session_frame(HANDSHAKE_TIMEOUT) {
        Some(SessionFrame::Hello { version: VERSION }) => {
            s.counters.sessions.fetch_add(1, Ordering::Relaxed);
            log::info!("{who} connected from {from}");
        }
        Some(SessionFrame::Hello { version }) => {
            let text = format!("version {version} is not spoken here (this is {VERSION})");
            let _ = conn.send(&Repr::error(ErrorCode::Unsupported, &text));
            conn.wait_dead(HANDSHAKE_TIMEOUT);
            return conn.kill("unsupported version");
        }
        _ => return conn.kill("no hello"),
    }
    let mut exposed = false;
    while conn.dead().is_none() {
        match conn.next_session_frame(Duration::from_secs(3600)) {
            None => {}
            Some(SessionFrame::Expose { port, protos }) => {
                let answer = if exposed {
                    Err((ErrorCode::Unsupported, "one port per connection".to_string()))
                } else {
                    expose(s, &conn, key, port, protos)
                };
                let sent = match answer {
                    Ok(port) => {
                        exposed = true;
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
                };
                if sent.is_err() {
                    conn.kill("peer does not read");
                }
            }
            Some(other) => {
                let text = format!("unexpected {other:?}");
                let _ = conn.send(&Repr::error(ErrorCode::Protocol, &text));
                conn.wait_dead(Duration::from_secs(1));
                conn.kill(&text);
            }
        }
    }
    // Close what this connection exposed (unless a newer connection of
    // the same key took it over).
    let mine: Vec<Exposure> = {
        let mut ports = lock(&s.ports);
        let keys: Vec<u16> = ports
            .iter()
            .filter(|(_, e)| Arc::ptr_eq(&e.conn, &conn))
            .map(|(&p, _)| p)
            .collect();
        keys.iter().filter_map(|p| ports.remove(p)).collect()
    };
    for e in mine {
        retire(s, e.stop());
    }
    log::info!("{who} gone: {}", conn.dead().unwrap_or_default());
}
// ANCHOR_END: session

/// How often to look for a port number free for both TCP and UDP.
const BIND_ATTEMPTS: usize = 16;

/// Binds the public port `port` (0: any) for `conn`, for each protocol
/// in `protos` on the same number; the port, or the error frame to send.
fn expose(
    s: &Arc<Shared>,
    conn: &Arc<Conn>,
    key: [u8; 32],
    port: u16,
    protos: Protos,
) -> Result<u16, (ErrorCode, String)> {
    let mut ports = lock(&s.ports);
    if s.stopping.load(Ordering::SeqCst) {
        return Err((ErrorCode::PortUnavailable, "server stopping".into()));
    }
    if let Some(held) = ports.get(&port) {
        if held.key != key {
            return Err((
                ErrorCode::PortInUse,
                format!("port {port} is exposed by another client"),
            ));
        }
        // The same client again: its old connection is dead or dying. If
        // it is not (two live clients with one key), the old one is told,
        // and gives up instead of taking the port back.
        if let Some(old) = ports.remove(&port) {
            let text = format!("port {port} was taken over by a newer connection with the same key");
            let _ = old.conn.send(&Repr::error(ErrorCode::PortInUse, &text));
            old.conn
                .close_after_flush("replaced by a new connection with the same key");
            retire(s, old.stop());
        }
    }
    let unavailable = |e: std::io::Error| {
        (
            ErrorCode::PortUnavailable,
            format!("cannot listen on {protos} port {port}: {e}"),
        )
    };
    // Port 0 with both: the number the system gives the TCP listener may
    // be taken for UDP, so try a few.
    let attempts = if port == 0 && protos.tcp && protos.udp {
        BIND_ATTEMPTS
    } else {
        1
    };
    let mut bound = Err(unavailable(std::io::ErrorKind::AddrInUse.into()));
    for _ in 0..attempts {
        bound = bind_both(s.public_ip, port, protos).map_err(unavailable);
        if bound.is_ok() {
            break;
        }
    }
    let (actual, tcp, udp) = bound?;
    let internal = |e: anyhow::Error| (ErrorCode::PortUnavailable, format!("{e:#}"));
    let tcp = tcp
        .map(|l| PublicPort::start(l, conn.clone()))
        .transpose()
        .map_err(internal)?;
    let udp = match udp.map(|u| UdpPort::start(u, conn.clone(), s.udp)).transpose() {
        Ok(u) => u,
        Err(e) => {
            if let Some(t) = tcp {
                t.stop();
            }
            return Err(internal(e));
        }
    };
    ports.insert(
        actual,
        Exposure {
            key,
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
