//! The server and the client in one process, on 127.0.0.1 with ports the
//! system picks: no privileges, nothing leaves the loopback interface.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use step04_crypto::noise::Identity;
use step04_crypto::{PublicKey, StaticSecret};
use step06_localhost::client::{self, ClientConfig, ClientEvent, Stop};
use step06_localhost::mux;
use step06_localhost::secure::ServerKeys;
use step06_localhost::server::{Server, ServerConfig};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The longest any one wait in these tests may take.
const PATIENCE: Duration = Duration::from_secs(20);

fn secret(byte: u8) -> StaticSecret {
    StaticSecret::from([byte; 32])
}

fn public(byte: u8) -> PublicKey {
    PublicKey::from(&secret(byte))
}

/// A server (key 2) accepting clients 1 and 3.
fn server_on(control: SocketAddr) -> Server {
    Server::start(ServerConfig {
        control,
        public_ip: LOCALHOST,
        keys: ServerKeys {
            identity: Identity::new(secret(2)),
            allowed: vec![public(1), public(3)],
        },
        mux: mux::Config::default(),
    })
    .unwrap()
}

/// A local service that sends back whatever it gets, then closes.
fn echo_service() -> SocketAddr {
    let listener = TcpListener::bind((LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let mut back = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut conn, &mut back);
                let _ = back.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

struct RunningClient {
    stop: Arc<Stop>,
    events: Receiver<ClientEvent>,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl RunningClient {
    fn next_event(&self) -> ClientEvent {
        self.events.recv_timeout(PATIENCE).expect("no client event")
    }

    fn exposed_port(&self) -> u16 {
        match self.next_event() {
            ClientEvent::Exposed { port } => port,
            other => panic!("{other:?}"),
        }
    }

    /// Stops the client and returns how `run` ended.
    fn finish(self) -> anyhow::Result<()> {
        self.stop.stop();
        self.thread.join().unwrap()
    }

    /// Waits for `run` to end by itself.
    fn result(self) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        while !self.thread.is_finished() {
            assert!(Instant::now() < deadline, "the client did not give up");
            thread::sleep(Duration::from_millis(5));
        }
        self.thread.join().unwrap()
    }
}

fn start_client(key: u8, server_key: u8, control: SocketAddr, local: SocketAddr, port: u16) -> RunningClient {
    let config = ClientConfig {
        server: control.to_string(),
        identity: Arc::new(Identity::new(secret(key))),
        server_key: public(server_key),
        local,
        remote_port: port,
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        mux: mux::Config::default(),
    };
    let stop = Arc::new(Stop::default());
    let (tx, events) = mpsc::channel();
    let s = stop.clone();
    let thread = thread::spawn(move || {
        client::run(&config, &s, |e| {
            let _ = tx.send(e);
        })
    });
    RunningClient { stop, events, thread }
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    let block: Vec<u8> = (0..4099).map(|i| (i * 31 + seed * 7 + i / 251) as u8).collect();
    let mut out = Vec::with_capacity(len + block.len());
    while out.len() < len {
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}

/// Sends `payload` to the public port, half-closes, and returns what came
/// back by the end of the stream.
fn visit(port: u16, payload: Arc<Vec<u8>>) -> Vec<u8> {
    let mut conn = TcpStream::connect((LOCALHOST, port)).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut sending = conn.try_clone().unwrap();
    let writer = thread::spawn(move || {
        sending.write_all(&payload).unwrap();
        sending.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    back
}

#[test]
fn fifty_visitors_of_a_megabyte_each_come_back_intact() {
    let server = server_on((LOCALHOST, 0).into());
    let client = start_client(1, 2, server.control_addr(), echo_service(), 0);
    let port = client.exposed_port();
    let visitors: Vec<_> = (0..50)
        .map(|i| {
            let payload = Arc::new(pattern(i, 1 << 20));
            thread::spawn(move || (visit(port, payload.clone()), payload))
        })
        .collect();
    for (i, v) in visitors.into_iter().enumerate() {
        let (back, sent) = v.join().unwrap();
        assert_eq!(back.len(), sent.len(), "visitor {i}");
        assert!(back == *sent, "visitor {i}: bytes differ");
    }
    client.finish().unwrap();
    server.stop();
}

#[test]
fn a_restarted_server_gives_the_client_its_port_back() {
    let server = server_on((LOCALHOST, 0).into());
    let control = server.control_addr();
    let local = echo_service();
    let client = start_client(1, 2, control, local, 0);
    let port = client.exposed_port();
    assert_eq!(visit(port, Arc::new(b"before".to_vec())), b"before");
    server.stop();
    assert!(matches!(client.next_event(), ClientEvent::Disconnected { .. }));
    let server = server_on(control);
    assert_eq!(client.exposed_port(), port, "the same public port");
    assert_eq!(visit(port, Arc::new(b"after".to_vec())), b"after");
    client.finish().unwrap();
    server.stop();
}

#[test]
fn a_second_client_asking_for_a_port_in_use_gets_a_clear_error() {
    let server = server_on((LOCALHOST, 0).into());
    let local = echo_service();
    let first = start_client(1, 2, server.control_addr(), local, 0);
    let port = first.exposed_port();
    let second = start_client(3, 2, server.control_addr(), local, port);
    let err = format!("{:#}", second.result().unwrap_err());
    assert!(err.contains("port-in-use"), "{err}");
    assert!(err.contains(&format!("port {port}")), "{err}");
    // The first client is untouched.
    assert_eq!(visit(port, Arc::new(b"still here".to_vec())), b"still here");
    first.finish().unwrap();
    server.stop();
}

#[test]
fn clients_with_the_wrong_keys_are_refused() {
    let server = server_on((LOCALHOST, 0).into());
    let counters = server.counters();
    let local = echo_service();
    // A key the server does not list, then the wrong server key.
    for (key, server_key) in [(9, 2), (1, 8)] {
        let client = start_client(key, server_key, server.control_addr(), local, 0);
        let err = format!("{:#}", client.result().unwrap_err());
        assert!(err.contains("refused the handshake"), "{err}");
    }
    let deadline = Instant::now() + PATIENCE;
    while counters.refused.load(std::sync::atomic::Ordering::Relaxed) < 2 {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(counters.sessions.load(std::sync::atomic::Ordering::Relaxed), 0);
    server.stop();
}

#[test]
fn garbage_on_the_control_port_is_closed_quickly() {
    let server = server_on((LOCALHOST, 0).into());
    let mut conn = TcpStream::connect(server.control_addr()).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let start = Instant::now();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let closed = match conn.read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the server answered garbage");
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    server.stop();
}

#[test]
fn a_visitor_is_closed_when_the_local_service_is_down() {
    let server = server_on((LOCALHOST, 0).into());
    // A port that was free a moment ago and has no listener now.
    let down = TcpListener::bind((LOCALHOST, 0)).unwrap().local_addr().unwrap();
    let client = start_client(1, 2, server.control_addr(), down, 0);
    let port = client.exposed_port();
    let start = Instant::now();
    let mut conn = TcpStream::connect((LOCALHOST, port)).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 16];
    let closed = match conn.read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed);
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    // The tunnel itself is fine: the next visitor is refused the same way.
    assert!(TcpStream::connect((LOCALHOST, port)).is_ok());
    client.finish().unwrap();
    server.stop();
}

#[test]
fn a_service_that_speaks_first_reaches_a_silent_visitor() {
    // Like SSH or SMTP: the service sends a banner before reading anything.
    let listener = TcpListener::bind((LOCALHOST, 0)).unwrap();
    let local = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.write_all(b"220 hello\r\n");
        }
    });
    let server = server_on((LOCALHOST, 0).into());
    let client = start_client(1, 2, server.control_addr(), local, 0);
    let port = client.exposed_port();
    let mut conn = TcpStream::connect((LOCALHOST, port)).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut banner = Vec::new();
    conn.read_to_end(&mut banner).unwrap();
    assert_eq!(banner, b"220 hello\r\n");
    client.finish().unwrap();
    server.stop();
}
