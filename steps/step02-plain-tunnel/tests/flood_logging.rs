//! A flood of junk datagrams: every one is dropped and counted, and only a
//! bounded number of log lines are written at the default level, as the
//! I/O shell writes them (the core's `decapsulate`, then the shell's
//! [`DropLog`]). Each is still logged at debug level, for `-v`.
//!
//! This file is a test binary of its own, so the logger it installs sees
//! only these lines.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};
use step01_ping_tun::logging::{DROP_LINES_PER_SECOND, DropLog};
use step02_plain_tunnel::run::Core;
use step02_plain_tunnel::{Role, Tunnel};

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

const FLOOD: u64 = 20_000;

#[test]
fn twenty_thousand_junk_datagrams_give_a_bounded_number_of_lines() {
    log::set_logger(&RECORDER).unwrap();
    log::set_max_level(LevelFilter::Trace);

    let mut server = Tunnel::new(Role::Server, 1468, None);
    let drops = DropLog::new();
    let t0 = Instant::now();
    let mut out = vec![0u8; 2000];
    // 20,000 datagrams over 2 seconds, from many ports, none of them a
    // message: a version byte of 0xff, or shorter than a header.
    let mut seed = 0x2545_f491_u32;
    for i in 0..FLOOD {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let len = (seed % 64) as usize;
        let mut junk: Vec<u8> = (0..len).map(|j| (seed >> (j % 24)) as u8).collect();
        if let Some(first) = junk.first_mut() {
            *first = 0xff;
        }
        let from = SocketAddr::from(([192, 0, 2, 9], 1024 + (i % 50_000) as u16));
        let now = t0 + Duration::from_micros(100 * i);
        // As the shell's `act` does it.
        if let Err(reason) = Core::decapsulate(&mut server, from, &junk, now, &mut out) {
            drops.drop(
                now,
                format_args!("drop ({reason}) from {from}: {}", Tunnel::summary(&junk)),
            );
        }
    }
    // The shell's timer, after the flood.
    drops.flush(t0 + Duration::from_secs(3));

    // The counters are exact.
    assert_eq!(server.counters().drops.total(), FLOOD);

    let lines = LINES.lock().unwrap();
    let info: Vec<&String> = lines
        .iter()
        .filter(|(level, _)| *level <= Level::Info)
        .map(|(_, line)| line)
        .collect();
    let debug = lines.iter().filter(|(level, _)| *level == Level::Debug).count();
    // Two seconds of flood: at most DROP_LINES_PER_SECOND drop lines each,
    // and a line saying how many more there were after each.
    let per_second = u64::from(DROP_LINES_PER_SECOND);
    assert!(
        info.len() as u64 <= 3 * (per_second + 1),
        "{} lines at the default level",
        info.len()
    );
    let drop_lines = info.iter().filter(|l| l.starts_with("drop (")).count() as u64;
    assert!(drop_lines >= per_second, "{info:#?}");
    // What was held back is said, and adds up with what was written.
    let held_back: u64 = info
        .iter()
        .filter_map(|l| l.split_once(" more drops not logged"))
        .map(|(n, _)| n.parse::<u64>().unwrap())
        .sum();
    assert_eq!(drop_lines + held_back, FLOOD, "{info:#?}");
    // Each one held back is still there at debug level (-v).
    assert_eq!(debug as u64, held_back);
}
