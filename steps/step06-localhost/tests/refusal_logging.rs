//! Connections refused on the control port are logged like the other
//! steps' drops: the first few of each second at the default level, the
//! rest at debug level, and a line saying how many were held back; the
//! counter counts every one. Anyone who can reach the server can cause
//! these lines, so without the limit a loop of connections fills the log.
//!
//! This file is a test binary of its own, so the logger it installs sees
//! only this server's lines.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};
use step01_ping_tun::logging::DROP_LINES_PER_SECOND;
use step04_crypto::noise::Identity;
use step04_crypto::{PublicKey, StaticSecret};
use step06_localhost::secure::ServerKeys;
use step06_localhost::server::{Server, ServerConfig};

/// Every line logged, with its level.
static LINES: Mutex<Vec<(Level, String)>> = Mutex::new(Vec::new());

struct Recorder;

impl Log for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        LINES
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }

    fn flush(&self) {}
}

static RECORDER: Recorder = Recorder;

const KNOCKS: u64 = 300;

#[test]
fn three_hundred_refused_connections_give_a_bounded_number_of_lines() {
    log::set_logger(&RECORDER).unwrap();
    log::set_max_level(LevelFilter::Trace);
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let keys = ServerKeys {
        identity: Identity::new(StaticSecret::from([2; 32])),
        allowed: vec![PublicKey::from(&StaticSecret::from([1; 32]))],
    };
    let server = Server::start(ServerConfig::new((localhost, 0).into(), localhost, keys)).unwrap();
    let start = Instant::now();
    // One after the other, each an HTTP request the server closes as soon
    // as its first two bytes arrive (not a record length it takes).
    let knock = || {
        let mut tcp = TcpStream::connect(server.listen_addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = tcp.write_all(b"GET / HTTP/1.1\r\n\r\n");
        let _ = tcp.read(&mut [0; 16]);
    };
    for _ in 0..KNOCKS - 1 {
        knock();
    }
    // A last one in a second of its own: its line comes after one that
    // says how many the second before held back.
    std::thread::sleep(Duration::from_millis(1100));
    knock();
    let counters = server.counters();
    let deadline = Instant::now() + Duration::from_secs(20);
    while counters.refused.load(Ordering::Relaxed) < KNOCKS {
        assert!(Instant::now() < deadline, "{counters:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let seconds = start.elapsed().as_secs() + 1;
    server.stop();

    // The counter is exact.
    assert_eq!(counters.refused.load(Ordering::Relaxed), KNOCKS);
    let lines = LINES.lock().unwrap();
    let refused = |level: Level| {
        lines
            .iter()
            .filter(|(l, line)| *l == level && line.contains(": refused: "))
            .count() as u64
    };
    let (info, debug) = (refused(Level::Info), refused(Level::Debug));
    let held_back: u64 = lines
        .iter()
        .filter(|(l, _)| *l == Level::Info)
        .filter_map(|(_, line)| line.split_once(" more drops not logged"))
        .map(|(n, _)| n.parse::<u64>().unwrap())
        .sum();
    // Each one is logged, most at debug level (-v).
    assert_eq!(info + debug, KNOCKS, "{info} at info, {debug} at debug");
    // At most DROP_LINES_PER_SECOND a second at the default level.
    let per_second = u64::from(DROP_LINES_PER_SECOND);
    assert!(
        info <= seconds * per_second,
        "{info} lines at the default level in {seconds} s"
    );
    // What was held back is said, and adds up.
    assert_eq!(held_back, debug);
    assert!(debug > 0);
}
