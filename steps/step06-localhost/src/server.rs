//! The server: accepts control connections from listed clients, gives
//! each the public port it asks for, and turns every visitor of that port
//! into a stream to the client.
//!
//! Ports belong to client keys: a port one client exposes is refused to
//! every other key with `port-in-use`, and the same key connecting again
//! (after its old connection broke without the server noticing) takes its
//! port over at once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::Context;
use step04_crypto::PublicKey;
use step04_crypto::keys::{self, Short};

use crate::conn::{Conn, HANDSHAKE_TIMEOUT, SessionFrame, handshake};
use crate::mux::{self, Mux, Side};
use crate::secure::{SecureChannel, ServerKeys};
use crate::wire::{ErrorCode, Proto, Repr, VERSION};

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
                    let Ok(visitor) = visitor else { continue };
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

struct Exposure {
    key: [u8; 32],
    conn: Arc<Conn>,
    port: PublicPort,
}

struct Shared {
    keys: Arc<ServerKeys>,
    public_ip: IpAddr,
    mux: mux::Config,
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
                    let Ok(tcp) = tcp else { continue };
                    if s.handshaking.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING_HANDSHAKES {
                        s.handshaking.fetch_sub(1, Ordering::SeqCst);
                        s.counters.refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let s = s.clone();
                    let _ = thread::Builder::new()
                        .name("control-session".into())
                        .spawn(move || session(&s, tcp));
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
            e.port.stop();
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ANCHOR: session
/// One control connection, from the handshake to its end.
fn session(s: &Arc<Shared>, mut tcp: TcpStream) {
    let from = peer(&tcp);
    let _ = tcp.set_nodelay(true);
    let mut channel = SecureChannel::server(s.keys.clone(), keys::generate());
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
    let refuse: crate::conn::OnOpen = Arc::new(|conn, id| conn.refuse(id));
    let conn = match Conn::start(tcp, Mux::new(Side::Server, s.mux), channel, refuse) {
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
            Some(SessionFrame::Expose { port, proto }) => {
                let answer = if exposed {
                    Err((ErrorCode::Unsupported, "one port per connection".to_string()))
                } else if proto != Proto::Tcp {
                    Err((
                        ErrorCode::Unsupported,
                        format!("{proto} is not carried yet, only tcp"),
                    ))
                } else {
                    expose(s, &conn, key, port)
                };
                let sent = match answer {
                    Ok(port) => {
                        exposed = true;
                        log::info!("{who} exposed on {}:{port}", s.public_ip);
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
        e.port.stop();
    }
    log::info!("{who} gone: {}", conn.dead().unwrap_or_default());
}
// ANCHOR_END: session

/// Binds the public port `port` (0: any) for `conn`; the port, or the
/// error frame to send.
fn expose(s: &Arc<Shared>, conn: &Arc<Conn>, key: [u8; 32], port: u16) -> Result<u16, (ErrorCode, String)> {
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
        // The same client again: its old connection is dead or dying.
        if let Some(old) = ports.remove(&port) {
            old.conn.kill("replaced by a new connection with the same key");
            old.port.stop();
        }
    }
    let listener = TcpListener::bind((s.public_ip, port)).map_err(|e| {
        (
            ErrorCode::PortUnavailable,
            format!("cannot listen on port {port}: {e}"),
        )
    })?;
    let actual = listener
        .local_addr()
        .map_err(|e| (ErrorCode::PortUnavailable, e.to_string()))?
        .port();
    let public =
        PublicPort::start(listener, conn.clone()).map_err(|e| (ErrorCode::PortUnavailable, e.to_string()))?;
    ports.insert(
        actual,
        Exposure {
            key,
            conn: conn.clone(),
            port: public,
        },
    );
    Ok(actual)
}
