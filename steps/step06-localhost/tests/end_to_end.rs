//! The server and the client in one process, on 127.0.0.1 with ports the
//! system picks: no privileges, nothing leaves the loopback interface.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use step04_crypto::noise::{self, Identity};
use step04_crypto::wire::RESPONSE_LEN;
use step04_crypto::{PublicKey, StaticSecret};
use step06_localhost::client::{self, ClientConfig, ClientEvent, Stop};
use step06_localhost::policy::{STREAM_COST, VisitorLimits};
use step06_localhost::secure::{Event, SecureChannel, ServerKeys};
use step06_localhost::server::{Server, ServerConfig, UdpStats, VisitorStats};
use step06_localhost::wire::{Protos, Repr};
use step06_localhost::{flows, keepalive};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The longest any one wait in these tests may take.
const PATIENCE: Duration = Duration::from_secs(20);

fn secret(byte: u8) -> StaticSecret {
    StaticSecret::from([byte; 32])
}

fn public(byte: u8) -> PublicKey {
    PublicKey::from(&secret(byte))
}

/// The configuration of a server (key 2) accepting clients 1 and 3.
fn server_config(control: SocketAddr) -> ServerConfig {
    let keys = ServerKeys {
        identity: Identity::new(secret(2)),
        allowed: vec![public(1), public(3)],
    };
    ServerConfig::new(control, LOCALHOST, keys)
}

fn server_on(control: SocketAddr) -> Server {
    Server::start(server_config(control)).unwrap()
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

fn client_config(key: u8, server_key: u8, control: SocketAddr, local: SocketAddr, port: u16) -> ClientConfig {
    let mut config = ClientConfig::new(
        control.to_string(),
        Arc::new(Identity::new(secret(key))),
        public(server_key),
        local,
    );
    config.remote_port = port;
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(100);
    config
}

fn start_client(key: u8, server_key: u8, control: SocketAddr, local: SocketAddr, port: u16) -> RunningClient {
    run_client(client_config(key, server_key, control, local, port))
}

fn run_client(config: ClientConfig) -> RunningClient {
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
    let client = start_client(1, 2, server.listen_addr(), echo_service(), 0);
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
    let control = server.listen_addr();
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
    let first = start_client(1, 2, server.listen_addr(), local, 0);
    let port = first.exposed_port();
    let second = start_client(3, 2, server.listen_addr(), local, port);
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
        let client = start_client(key, server_key, server.listen_addr(), local, 0);
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
    let mut conn = TcpStream::connect(server.listen_addr()).unwrap();
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
    let client = start_client(1, 2, server.listen_addr(), down, 0);
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
    let client = start_client(1, 2, server.listen_addr(), local, 0);
    let port = client.exposed_port();
    let mut conn = TcpStream::connect((LOCALHOST, port)).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut banner = Vec::new();
    conn.read_to_end(&mut banner).unwrap();
    assert_eq!(banner, b"220 hello\r\n");
    client.finish().unwrap();
    server.stop();
}

/// A local service on one port number for both protocols: TCP echo and
/// UDP echo (each datagram sent back to its sender).
fn echo_service_tcp_and_udp() -> SocketAddr {
    for _ in 0..50 {
        let tcp = echo_service();
        let Ok(udp) = UdpSocket::bind(tcp) else {
            continue;
        };
        thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        });
        return tcp;
    }
    panic!("no port free for both TCP and UDP");
}

/// Waits until `what` holds, or fails after [`PATIENCE`].
fn eventually(what: &str, mut holds: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !holds() {
        assert!(Instant::now() < deadline, "never: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// One visitor: sends `count` datagrams to the public port, one at a
/// time, and checks each reply is its request.
fn udp_visitor(port: u16, seed: usize, count: usize) {
    let sock = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    sock.connect((LOCALHOST, port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 65_536];
    for i in 0..count {
        // Lengths from 0 to 1400 bytes, different for every visitor.
        let request = pattern(seed * 1000 + i, (seed * 131 + i * 29) % 1401);
        sock.send(&request).unwrap();
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("visitor {seed}, datagram {i}: {e}"));
        assert!(
            buf[..n] == request[..],
            "visitor {seed}, datagram {i}: reply differs"
        );
    }
}

#[test]
fn udp_twenty_visitors_of_fifty_datagrams_each_with_tcp_alongside() {
    let server = server_on((LOCALHOST, 0).into());
    let local = echo_service_tcp_and_udp();
    let mut config = client_config(1, 2, server.listen_addr(), local, 0);
    config.protos = Protos::BOTH;
    let client = run_client(config);
    let port = client.exposed_port();
    // TCP visitors at the same time, on the same port number.
    let tcp: Vec<_> = (0..4)
        .map(|i| {
            let payload = Arc::new(pattern(i, 256 * 1024));
            thread::spawn(move || visit(port, payload.clone()) == *payload)
        })
        .collect();
    let udp: Vec<_> = (0..20)
        .map(|i| thread::spawn(move || udp_visitor(port, i, 50)))
        .collect();
    for v in udp {
        v.join().unwrap();
    }
    for (i, v) in tcp.into_iter().enumerate() {
        assert!(v.join().unwrap(), "tcp visitor {i}: bytes differ");
    }
    let stats = server.udp_stats();
    assert_eq!(stats.open, 20, "one flow per visitor address: {stats:?}");
    assert_eq!(
        stats.counters,
        flows::Counters {
            opened: 20,
            ..flows::Counters::default()
        }
    );
    client.finish().unwrap();
    server.stop();
}

#[test]
fn udp_idle_flows_are_removed_after_the_timeout() {
    let mut config = server_config((LOCALHOST, 0).into());
    config.udp.idle_timeout = Duration::from_millis(300);
    let server = Server::start(config).unwrap();
    let local = echo_service_tcp_and_udp();
    let mut config = client_config(1, 2, server.listen_addr(), local, 0);
    config.protos = Protos::BOTH;
    let client = run_client(config);
    let port = client.exposed_port();
    let start = Instant::now();
    for seed in 0..3 {
        udp_visitor(port, seed, 2);
    }
    assert_eq!(server.udp_stats().counters.opened, 3);
    eventually("the idle flows expire", || server.udp_stats().open == 0);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.udp_stats().counters.expired, 3);
    // The same visitor address later is a new flow, and it works.
    let sock = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    for round in 0..2 {
        sock.send_to(b"again", (LOCALHOST, port)).unwrap();
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"again");
        if round == 0 {
            eventually("the flow expires", || server.udp_stats().open == 0);
        }
    }
    assert_eq!(server.udp_stats().counters.opened, 5);
    // TCP on the same port is untouched by all this.
    assert_eq!(visit(port, Arc::new(b"tcp".to_vec())), b"tcp");
    client.finish().unwrap();
    server.stop();
}

#[test]
fn udp_datagrams_over_the_limit_and_flows_over_the_bound_are_dropped_and_counted() {
    let mut config = server_config((LOCALHOST, 0).into());
    config.udp.max_datagram = 1000;
    config.udp.max_flows = 2;
    let server = Server::start(config).unwrap();
    let local = echo_service_tcp_and_udp();
    let mut config = client_config(1, 2, server.listen_addr(), local, 0);
    config.protos = Protos::UDP;
    let client = run_client(config);
    let port = client.exposed_port();
    // UDP only: nobody listens for TCP.
    assert!(TcpStream::connect((LOCALHOST, port)).is_err());
    let visitors: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind((LOCALHOST, 0)).unwrap()).collect();
    let mut buf = [0u8; 2048];
    for v in &visitors[..2] {
        v.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        v.send_to(&[7; 1000], (LOCALHOST, port)).unwrap();
        assert_eq!(v.recv_from(&mut buf).unwrap().0, 1000);
    }
    visitors[0].send_to(&[7; 1001], (LOCALHOST, port)).unwrap();
    visitors[2].send_to(b"third", (LOCALHOST, port)).unwrap();
    eventually("both drops are counted", || {
        let c = server.udp_stats().counters;
        c.too_long == 1 && c.too_many_flows == 1
    });
    assert_eq!(
        server.udp_stats(),
        UdpStats {
            counters: flows::Counters {
                opened: 2,
                too_long: 1,
                too_many_flows: 1,
                ..flows::Counters::default()
            },
            open: 2,
        }
    );
    client.finish().unwrap();
    server.stop();
}

/// Connects to the server as client 1 by hand, finishes the handshake and
/// says Hello, then reads whatever comes and answers nothing.
fn silent_client(control: SocketAddr) -> (TcpStream, SecureChannel) {
    let mut tcp = TcpStream::connect(control).unwrap();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut first = Vec::new();
    let mut channel = SecureChannel::client(
        Arc::new(Identity::new(secret(1))),
        public(2),
        secret(11),
        noise::tai64n(Duration::from_secs(1_800_000_000)),
        &mut first,
    )
    .unwrap();
    tcp.write_all(&first).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).unwrap();
        channel.push(&buf[..n]).unwrap();
        if let Some(Event::Established { .. }) = channel.poll().unwrap() {
            break;
        }
    }
    let mut hello = Vec::new();
    channel
        .seal_repr(&Repr::Hello { version: 1 }, &mut hello)
        .unwrap();
    tcp.write_all(&hello).unwrap();
    (tcp, channel)
}

#[test]
fn a_silent_client_is_pinged_then_dropped() {
    let mut config = server_config((LOCALHOST, 0).into());
    config.keepalive = keepalive::Config {
        ping_interval: Duration::from_millis(100),
        dead_after: Duration::from_millis(1000),
    };
    let server = Server::start(config).unwrap();
    let (mut tcp, mut channel) = silent_client(server.listen_addr());
    let start = Instant::now();
    let mut pings = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the server closes the connection.
    loop {
        let n = match tcp.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("{e}"),
        };
        if n == 0 {
            break;
        }
        channel.push(&buf[..n]).unwrap();
        while let Some(Event::Frame(f)) = channel.poll().unwrap() {
            match Repr::parse_bytes(f).unwrap() {
                Repr::Ping { opaque } => pings.push((opaque, start.elapsed())),
                other => panic!("{other}"),
            }
        }
    }
    let lasted = start.elapsed();
    // A ping per interval of silence (some late, on a busy machine),
    // numbered from 1, the first after one interval.
    let numbers: Vec<u64> = pings.iter().map(|p| p.0).collect();
    assert!(numbers.len() >= 3, "{pings:?}");
    assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>());
    assert!(pings[0].1 >= Duration::from_millis(90), "{pings:?}");
    assert!(
        lasted >= Duration::from_millis(990) && lasted < Duration::from_secs(10),
        "{lasted:?}"
    );
    server.stop();
}

#[test]
fn a_client_that_answers_pings_stays_connected() {
    let fast = keepalive::Config {
        ping_interval: Duration::from_millis(50),
        dead_after: Duration::from_millis(500),
    };
    let mut config = server_config((LOCALHOST, 0).into());
    config.keepalive = fast;
    let server = Server::start(config).unwrap();
    let mut config = client_config(1, 2, server.listen_addr(), echo_service(), 0);
    config.keepalive = fast;
    let client = run_client(config);
    let port = client.exposed_port();
    // Quiet for three times the timeout: both ends ping, both answer.
    thread::sleep(Duration::from_millis(1500));
    assert!(client.events.try_recv().is_err(), "the connection broke");
    assert_eq!(visit(port, Arc::new(b"still up".to_vec())), b"still up");
    client.finish().unwrap();
    server.stop();
}

#[test]
fn two_live_clients_with_one_key_do_not_take_the_port_from_each_other() {
    let server = server_on((LOCALHOST, 0).into());
    let local = echo_service();
    let first = start_client(1, 2, server.listen_addr(), local, 0);
    let port = first.exposed_port();
    // The same key again, for the same port: the newer connection takes it
    // (the older one may be a connection that broke unnoticed), and the
    // older client is told, and gives up instead of taking it back.
    let second = start_client(1, 2, server.listen_addr(), local, port);
    assert_eq!(second.exposed_port(), port);
    let err = format!("{:#}", first.result().unwrap_err());
    assert!(err.contains("taken over"), "{err}");
    // The port stays with the second client.
    for _ in 0..5 {
        assert_eq!(visit(port, Arc::new(b"still here".to_vec())), b"still here");
        thread::sleep(Duration::from_millis(50));
    }
    second.finish().unwrap();
    server.stop();
}

/// A TCP connection to `to` from `source`, one of the loopback addresses
/// (127.0.0.2, 127.0.0.3...): a visitor from another host, as far as
/// per-source limits can tell.
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(to) = to else {
        panic!("{to} is not IPv4")
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(source, 0))).unwrap();
    connect(fd.as_raw_fd(), &SockaddrIn::from(to)).unwrap();
    let tcp = TcpStream::from(fd);
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    tcp
}

/// Client 1's initiation to server 2, made with ephemeral key `ephemeral`
/// at `sent` (time since the Unix epoch).
fn initiation(ephemeral: u8, sent: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    SecureChannel::client(
        Arc::new(Identity::new(secret(1))),
        public(2),
        secret(ephemeral),
        noise::tai64n(sent),
        &mut out,
    )
    .unwrap();
    out
}

/// Sends `initiation` on a new connection from `source`; returns what the
/// server answered before closing (or the whole response, if it answers),
/// and the connection.
fn knock(source: Ipv4Addr, control: SocketAddr, initiation: &[u8]) -> (Vec<u8>, TcpStream) {
    let mut tcp = connect_from(source, control);
    tcp.write_all(initiation).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    while answer.len() < 2 + RESPONSE_LEN {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{e}"),
        }
    }
    (answer, tcp)
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

#[test]
fn a_replayed_initiation_is_refused_before_any_answer_and_counted() {
    let server = server_on((LOCALHOST, 0).into());
    let control = server.listen_addr();
    let now = unix_now();
    let recorded = initiation(21, now);
    // The first time it is news: the server answers (and waits for a
    // Hello that this test never sends).
    let (answer, first) = knock(Ipv4Addr::LOCALHOST, control, &recorded);
    assert_eq!(answer.len(), 2 + RESPONSE_LEN);
    // Replayed over new connections: closed without a word, before any
    // Diffie-Hellman (the server knows its ephemeral key).
    for _ in 0..20 {
        let (answer, _) = knock(Ipv4Addr::LOCALHOST, control, &recorded);
        assert!(answer.is_empty(), "the server answered a replay");
    }
    // An older initiation of the same key, never seen: opened (two
    // Diffie-Hellman operations), and refused by its timestamp.
    let (answer, _) = knock(
        Ipv4Addr::LOCALHOST,
        control,
        &initiation(22, now - Duration::from_secs(60)),
    );
    assert!(answer.is_empty(), "the server answered an older initiation");
    let (counters, _) = server.handshakes();
    assert_eq!(
        (counters.replays_seen, counters.replays_old),
        (20, 1),
        "{counters:?}"
    );
    assert_eq!(server.counters().sessions.load(Ordering::Relaxed), 0);
    drop(first);
    // The key is not locked out: the real client's clock says later.
    let client = start_client(1, 2, control, echo_service(), 0);
    let port = client.exposed_port();
    assert_eq!(visit(port, Arc::new(b"hello".to_vec())), b"hello");
    client.finish().unwrap();
    server.stop();
}

#[test]
fn handshake_slots_are_capped_per_source_and_held_until_hello() {
    let mut config = server_config((LOCALHOST, 0).into());
    config.handshakes.per_source = 3;
    config.handshakes.first_record = Duration::from_millis(500);
    // Longer than PATIENCE: the silent connections can only be closed in
    // time by the first-record deadline.
    config.handshakes.until_hello = Duration::from_secs(60);
    let server = Server::start(config).unwrap();
    let control = server.listen_addr();
    // Three connections from one address that send nothing hold its three
    // slots; a fourth is closed at once.
    let silent: Vec<TcpStream> = (0..3)
        .map(|_| connect_from(Ipv4Addr::LOCALHOST, control))
        .collect();
    eventually("three handshakes under way", || server.handshakes().1 == 3);
    let mut fourth = connect_from(Ipv4Addr::LOCALHOST, control);
    let start = Instant::now();
    assert_eq!(fourth.read(&mut [0; 16]).unwrap_or(0), 0);
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.handshakes().0.busy_source, 1);
    // Another address is not held up, and keeps its slot past the
    // handshake until its Hello.
    let other = Ipv4Addr::new(127, 0, 0, 2);
    let mut init = Vec::new();
    let mut channel = SecureChannel::client(
        Arc::new(Identity::new(secret(1))),
        public(2),
        secret(23),
        noise::tai64n(unix_now()),
        &mut init,
    )
    .unwrap();
    let (answer, mut tcp) = knock(other, control, &init);
    assert_eq!(answer.len(), 2 + RESPONSE_LEN);
    assert_eq!(server.handshakes().1, 4, "the slot is held until Hello");
    channel.push(&answer).unwrap();
    assert!(matches!(channel.poll(), Ok(Some(Event::Established { .. }))));
    let mut hello = Vec::new();
    channel
        .seal_repr(&Repr::Hello { version: 1 }, &mut hello)
        .unwrap();
    tcp.write_all(&hello).unwrap();
    eventually("the Hello gives the slot back", || {
        server.counters().sessions.load(Ordering::Relaxed) == 1
    });
    // The silent three have half a second to send their first record.
    eventually("the silent connections are closed", || server.handshakes().1 == 0);
    for mut s in silent {
        assert_eq!(s.read(&mut [0; 16]).unwrap_or(0), 0);
    }
    server.stop();
}

/// A local service that sends to each connection for as long as it can,
/// and reads nothing.
fn talker_service() -> SocketAddr {
    let listener = TcpListener::bind((LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let block = pattern(0, 64 * 1024);
                while conn.write_all(&block).is_ok() {}
            });
        }
    });
    addr
}

/// Reads `len` bytes from a visitor connection: it gets through.
fn read_some(mut tcp: TcpStream, len: usize) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < len {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got
}

/// The budget's accounting holds: what the streams buffer is within what
/// they reserved, which is within the budget.
fn within_budget(stats: &VisitorStats, budget: usize) {
    assert!(stats.buffered <= stats.reserved, "{stats:?}");
    assert!(stats.reserved <= budget && stats.peak <= budget, "{stats:?}");
}

#[test]
fn non_reading_visitors_are_capped_per_source_and_by_the_buffer_budget() {
    let budget = 6 * STREAM_COST;
    let mut config = server_config((LOCALHOST, 0).into());
    config.visitors = VisitorLimits {
        per_source: 4,
        budget,
        idle_timeout: Duration::ZERO,
    };
    let server = Server::start(config).unwrap();
    let client = start_client(1, 2, server.listen_addr(), talker_service(), 0);
    let public: SocketAddr = (LOCALHOST, client.exposed_port()).into();
    // Ten visitors from one address that read nothing: four get a stream
    // (and fill it), six are closed at once.
    let hogs: Vec<TcpStream> = (0..10)
        .map(|_| connect_from(Ipv4Addr::LOCALHOST, public))
        .collect();
    eventually("six refused for their source", || {
        server.visitor_stats().counters.refused_source == 6
    });
    eventually("the four streams pin half a window each, at least", || {
        server.visitor_stats().buffered >= 4 * mux_window() / 2
    });
    let stats = server.visitor_stats();
    assert_eq!(stats.reserved, 4 * STREAM_COST);
    within_budget(&stats, budget);
    // A visitor from elsewhere gets through.
    let legit = connect_from(Ipv4Addr::new(127, 0, 0, 2), public);
    assert!(read_some(legit, 1 << 20) >= 1 << 20);
    eventually("its share given back", || {
        server.visitor_stats().reserved == 4 * STREAM_COST
    });
    // Two more non-readers from a third address spend the rest of the
    // budget; then even a fresh address is refused, for the budget.
    let more: Vec<TcpStream> = (0..2)
        .map(|_| connect_from(Ipv4Addr::new(127, 0, 0, 3), public))
        .collect();
    eventually("six streams reserved", || {
        server.visitor_stats().reserved == budget
    });
    let mut late = connect_from(Ipv4Addr::new(127, 0, 0, 4), public);
    assert_eq!(late.read(&mut [0; 16]).unwrap_or(0), 0, "refused: closed at once");
    let stats = server.visitor_stats();
    assert_eq!(stats.counters.refused_budget, 1, "{stats:?}");
    within_budget(&stats, budget);
    // Gone visitors give their share back.
    drop(hogs);
    drop(more);
    eventually("every share given back", || server.visitor_stats().reserved == 0);
    let legit = connect_from(Ipv4Addr::new(127, 0, 0, 4), public);
    assert!(read_some(legit, 1 << 20) >= 1 << 20);
    client.finish().unwrap();
    server.stop();
}

fn mux_window() -> usize {
    step06_localhost::mux::INITIAL_WINDOW as usize
}

#[test]
fn idle_visitors_are_closed_and_their_share_given_back() {
    let budget = 2 * STREAM_COST;
    let mut config = server_config((LOCALHOST, 0).into());
    config.visitors = VisitorLimits {
        per_source: 2,
        budget,
        idle_timeout: Duration::from_millis(300),
    };
    let server = Server::start(config).unwrap();
    let talker = start_client(1, 2, server.listen_addr(), talker_service(), 0);
    let echo = start_client(3, 2, server.listen_addr(), echo_service(), 0);
    let (loud, quiet) = (talker.exposed_port(), echo.exposed_port());
    // One visitor that reads nothing of a service that talks, one that
    // says nothing to a service that waits: the whole budget.
    let mut hogs = vec![connect_from(Ipv4Addr::LOCALHOST, (LOCALHOST, loud).into())];
    hogs.push(connect_from(
        Ipv4Addr::new(127, 0, 0, 2),
        (LOCALHOST, quiet).into(),
    ));
    eventually("both admitted", || server.visitor_stats().reserved == budget);
    // Both are closed once nothing moved for the idle timeout.
    eventually("both closed for idleness", || {
        let stats = server.visitor_stats();
        stats.counters.idle == 2 && stats.reserved == 0
    });
    for mut h in hogs {
        let _ = h.set_read_timeout(Some(Duration::from_millis(100)));
        // The quiet one sees its end; the loud one may first read what
        // was already in its socket.
        let mut buf = vec![0u8; 1 << 16];
        let deadline = Instant::now() + PATIENCE;
        while !matches!(h.read(&mut buf), Ok(0) | Err(_)) {
            assert!(Instant::now() < deadline);
        }
    }
    // A visitor that keeps reading is never idle (for three timeouts).
    let mut reader = connect_from(Ipv4Addr::new(127, 0, 0, 3), (LOCALHOST, loud).into());
    let start = Instant::now();
    let mut got = 0;
    let mut buf = vec![0u8; 1 << 16];
    while start.elapsed() < Duration::from_millis(900) {
        got += reader.read(&mut buf).unwrap();
    }
    assert!(got > 0);
    assert_eq!(server.visitor_stats().counters.idle, 2, "the reader was not cut");
    talker.finish().unwrap();
    echo.finish().unwrap();
    server.stop();
}

#[test]
fn a_key_claims_only_the_ports_it_was_given() {
    let free = TcpListener::bind((LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = server_config((LOCALHOST, 0).into());
    config
        .ports
        .restrict(*public(3).as_bytes(), free.to_string().parse().unwrap());
    let server = Server::start(config).unwrap();
    let local = echo_service();
    // Below 1024: not without --allow-low-ports.
    let low = start_client(1, 2, server.listen_addr(), local, 80);
    let err = format!("{:#}", low.result().unwrap_err());
    assert!(
        err.contains("port-unavailable") && err.contains("below 1024"),
        "{err}"
    );
    // A restricted key asking for any port gets its own; asking for
    // another is refused.
    let own = start_client(3, 2, server.listen_addr(), local, 0);
    assert_eq!(own.exposed_port(), free);
    own.finish().unwrap();
    let other = start_client(3, 2, server.listen_addr(), local, free.wrapping_add(1).max(1024));
    let err = format!("{:#}", other.result().unwrap_err());
    assert!(err.contains("is not one of this key's"), "{err}");
    server.stop();
}
