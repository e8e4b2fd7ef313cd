//! The client: keeps one control connection to the server, asks it to
//! expose a port, and connects every stream the server opens to the local
//! service. When the connection breaks it reconnects, with exponential
//! backoff, and asks for the port it had, so visitors find the service
//! where it was.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use step04_crypto::PublicKey;
use step04_crypto::entropy::{Entropy, OsEntropy};
use step04_crypto::keys;
use step04_crypto::noise::{self, Identity};

use crate::conn::{ClosedDuringHandshake, Conn, HANDSHAKE_TIMEOUT, OnOpen, SessionFrame, handshake};
use crate::keepalive;
use crate::mux::{self, Mux, Side};
use crate::secure::{self, SecureChannel};
use crate::wire::{Proto, Protos, Repr, VERSION};

/// What the client needs.
pub struct ClientConfig {
    /// The server's control address, HOST:PORT (resolved at each attempt).
    pub server: String,
    pub identity: Arc<Identity>,
    pub server_key: PublicKey,
    /// The local service.
    pub local: SocketAddr,
    /// The public port to ask for; 0 lets the server choose (and after a
    /// reconnect, the client asks for the port it got).
    pub remote_port: u16,
    /// The first wait before reconnecting; it doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub mux: mux::Config,
    pub keepalive: keepalive::Config,
    /// What to carry: TCP, and UDP on the same port numbers with `--udp`.
    pub protos: Protos,
    /// Where the handshakes' ephemeral keys come from: the kernel, or a
    /// key log for decrypting captures (see step 04's `KeylogEntropy`).
    pub entropy: Mutex<Box<dyn Entropy>>,
}

impl ClientConfig {
    /// A client exposing TCP, with the default limits and timers.
    pub fn new(server: String, identity: Arc<Identity>, server_key: PublicKey, local: SocketAddr) -> Self {
        Self {
            server,
            identity,
            server_key,
            local,
            remote_port: 0,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            mux: mux::Config::default(),
            keepalive: keepalive::Config::default(),
            protos: Protos::TCP,
            entropy: Mutex::new(Box::new(OsEntropy)),
        }
    }
}

/// What happened, for the caller to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    Exposed { port: u16 },
    Disconnected { why: String },
}

/// A stop switch that also interrupts the backoff wait and the current
/// connection.
#[derive(Default)]
pub struct Stop {
    state: Mutex<(bool, Option<Arc<Conn>>)>,
    cv: Condvar,
}

impl Stop {
    pub fn stop(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = true;
        if let Some(conn) = g.1.take() {
            conn.kill("stopped");
        }
        self.cv.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Waits `d`, or less if stopped; returns whether stopped.
    fn sleep(&self, d: Duration) -> bool {
        let g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .cv
            .wait_timeout_while(g, d, |s| !s.0)
            .unwrap_or_else(|e| e.into_inner());
        g.0
    }

    /// Makes `conn` the one `stop` kills; false if already stopped.
    fn watch(&self, conn: Option<Arc<Conn>>) -> bool {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.1 = conn;
        !g.0
    }
}

/// How one connection ended.
enum Outcome {
    Stopped,
    Lost { port: u16, why: String },
}

/// Why a connection could not be made.
enum Failure {
    /// Worth trying again: the server is down or unreachable.
    Retry(anyhow::Error),
    /// Trying again cannot help: the keys are wrong, or the server said no.
    Fatal(anyhow::Error),
}

// ANCHOR: run
/// Runs until stopped or until the server refuses us for good.
pub fn run(config: &ClientConfig, stop: &Stop, mut on_event: impl FnMut(ClientEvent)) -> anyhow::Result<()> {
    let mut port = config.remote_port;
    let mut backoff = config.backoff_min;
    loop {
        if stop.is_stopped() {
            return Ok(());
        }
        match connect_once(config, port, stop, &mut on_event) {
            Ok(Outcome::Stopped) => return Ok(()),
            Ok(Outcome::Lost { port: had, why }) => {
                // Ask for the same port next time; start the backoff over.
                port = had;
                backoff = config.backoff_min;
                on_event(ClientEvent::Disconnected { why });
            }
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(e)) => log::warn!("{e:#}; trying again in {backoff:?}"),
        }
        if stop.sleep(backoff) {
            return Ok(());
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
}
// ANCHOR_END: run

fn connect_once(
    config: &ClientConfig,
    port: u16,
    stop: &Stop,
    on_event: &mut impl FnMut(ClientEvent),
) -> Result<Outcome, Failure> {
    let retry = |e: anyhow::Error| Failure::Retry(e);
    let addr = config
        .server
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", config.server))
        .map_err(retry)?
        .next()
        .ok_or_else(|| Failure::Retry(anyhow!("{} has no address", config.server)))?;
    let mut tcp = TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))
        .map_err(retry)?;
    let _ = tcp.set_nodelay(true);
    let mut first = Vec::new();
    let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let ephemeral = config
        .entropy
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ephemeral();
    let mut channel = SecureChannel::client(
        config.identity.clone(),
        config.server_key,
        ephemeral,
        noise::tai64n(unix_now),
        &mut first,
    )
    .map_err(|e| Failure::Fatal(anyhow!("the server key: {e}")))?;
    if let Err(e) = handshake(&mut tcp, &mut channel, &first) {
        // The server closes without a word when it does not accept our key
        // or its key is not the one we have: nothing could be sealed yet.
        if e.downcast_ref::<ClosedDuringHandshake>().is_some() || e.downcast_ref::<secure::Error>().is_some()
        {
            return Err(Failure::Fatal(e.context(format!(
                "the server at {addr} refused the handshake: check --server-key, and that the \
                 server lists our public key {} with --peer",
                keys::public_to_string(config.identity.public())
            ))));
        }
        return Err(retry(e.context(format!("handshake with {addr}"))));
    }
    let local = config.local;
    let on_open: OnOpen = Arc::new(move |conn: Arc<Conn>, id, proto| {
        if proto == Proto::Udp {
            return match udp_socket_to(local) {
                Ok(sock) => conn.splice_udp(id, sock),
                Err(e) => {
                    log::warn!("flow #{id}: a socket to {local}: {e}");
                    conn.release(id);
                }
            };
        }
        let spawned = thread::Builder::new().name(format!("connect-{id}")).spawn({
            let conn = conn.clone();
            move || match TcpStream::connect_timeout(&local, HANDSHAKE_TIMEOUT) {
                Ok(sock) => {
                    let _ = sock.set_nodelay(true);
                    conn.splice(id, sock, Box::new(()));
                }
                Err(e) => {
                    log::warn!("stream #{id}: connecting to {local}: {e}");
                    conn.refuse(id);
                }
            }
        });
        if spawned.is_err() {
            conn.refuse(id);
        }
    });
    let conn = Conn::start(
        tcp,
        Mux::new(Side::Client, config.mux),
        channel,
        config.keepalive,
        None,
        on_open,
    )
    .map_err(retry)?;
    if !stop.watch(Some(conn.clone())) {
        conn.kill("stopped");
        return Ok(Outcome::Stopped);
    }
    let result = serve(&conn, port, config.protos, addr, stop, on_event);
    stop.watch(None);
    conn.kill("done");
    result
}

/// Hello, Expose, then serve until the connection ends.
fn serve(
    conn: &Arc<Conn>,
    port: u16,
    protos: Protos,
    addr: SocketAddr,
    stop: &Stop,
    on_event: &mut impl FnMut(ClientEvent),
) -> Result<Outcome, Failure> {
    let sent = conn
        .send(&Repr::Hello { version: VERSION })
        .and_then(|()| conn.send(&Repr::Expose { port, protos }));
    sent.map_err(Failure::Retry)?;
    let port = match conn.next_session_frame(HANDSHAKE_TIMEOUT) {
        Some(SessionFrame::Exposed { port }) => port,
        Some(SessionFrame::Error { code, text }) => {
            return Err(Failure::Fatal(anyhow!(
                "the server at {addr} refused to expose port {port}: {code}: {text}"
            )));
        }
        Some(other) => return Err(Failure::Fatal(anyhow!("unexpected {other:?} from {addr}"))),
        None if stop.is_stopped() => return Ok(Outcome::Stopped),
        None => {
            let why = conn.dead().unwrap_or_else(|| "no answer".into());
            return Err(Failure::Retry(anyhow!("exposing a port on {addr}: {why}")));
        }
    };
    log::info!("exposed at {}:{port} ({protos})", addr.ip());
    on_event(ClientEvent::Exposed { port });
    loop {
        match conn.next_session_frame(Duration::from_secs(3600)) {
            // The server took the port back (another connection with our
            // key took it over): trying again would take it back in turn.
            Some(SessionFrame::Error { code, text }) => {
                return Err(Failure::Fatal(anyhow!(
                    "the server at {addr} ended port {port}: {code}: {text}"
                )));
            }
            Some(other) => log::warn!("server: unexpected {other:?}"),
            None => {
                if let Some(why) = conn.dead() {
                    return Ok(if stop.is_stopped() {
                        Outcome::Stopped
                    } else {
                        Outcome::Lost { port, why }
                    });
                }
            }
        }
    }
}

/// A UDP socket connected to the local service, one per flow, so replies
/// go back to the flow they answer.
fn udp_socket_to(local: SocketAddr) -> std::io::Result<UdpSocket> {
    let any = match local.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let sock = UdpSocket::bind((any, 0))?;
    sock.connect(local)?;
    Ok(sock)
}
