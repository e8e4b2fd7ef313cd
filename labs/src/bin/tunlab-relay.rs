//! `tunlab-relay`: a bad link in userspace. Relays UDP datagrams or TCP
//! connections to one upstream address and impairs them on the way (see
//! `tunlab::relay`). The labs start it on a middle host, because the kernel
//! here has no netem.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use tunlab::relay::{Impairments, Stats, TcpRelay, UdpRelay};

/// Relay UDP or TCP to one upstream address through a bad link: loss, delay,
/// jitter, duplication, reordering, corruption. Prints the counters when
/// stopped by SIGINT or SIGTERM. A UDP relay stops impairing on SIGUSR1 (a
/// clean link) and starts again on SIGUSR2.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  \
                  tunlab-relay udp --listen 0.0.0.0:51820 --upstream 198.51.100.2:51820 \\\n      \
                  --impair loss=0.02,delay=20ms,jitter=5ms,dup=0.01,reorder=0.05,corrupt=0.01,seed=7\n  \
                  tunlab-relay tcp --listen 0.0.0.0:443 --upstream 198.51.100.2:443 --impair loss=0.02,delay=20ms -v\n\n\
                  `tunlab-relay udp --help` explains SPEC."
)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Relay UDP: each datagram may be dropped, duplicated, delayed, reordered
    /// or corrupted.
    Udp(Opts),
    /// Relay TCP: in-order byte streams; a "lost" chunk waits 200 ms more.
    Tcp(Opts),
}

#[derive(Debug, clap::Args)]
struct Opts {
    /// The address to listen on, e.g. 0.0.0.0:51820.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// The address to relay to.
    #[arg(long, value_name = "ADDR:PORT")]
    upstream: SocketAddr,
    /// What to do to the traffic, e.g. loss=0.02,delay=20ms,jitter=5ms,seed=7.
    ///
    /// SPEC is comma-separated KEY=VALUE; missing keys are 0. loss, dup,
    /// reorder and corrupt (one bit flipped) are probabilities from 0 to 1;
    /// delay and jitter are durations with a unit (us, ms or s); the same
    /// seed repeats the same decisions. With tcp, loss cannot drop bytes
    /// from a stream: a "lost" chunk is delivered one 200 ms retransmission
    /// timeout late instead, and dup, reorder and corrupt do not apply.
    #[arg(long, value_name = "SPEC", default_value = "none")]
    impair: Impairments,
    /// Print the counters every second.
    #[arg(short, long)]
    verbose: bool,
}

/// Either relay, behind one face.
enum Relay {
    Udp(UdpRelay),
    Tcp(TcpRelay),
}

impl Relay {
    fn local_addr(&self) -> SocketAddr {
        match self {
            Relay::Udp(relay) => relay.local_addr(),
            Relay::Tcp(relay) => relay.local_addr(),
        }
    }

    fn stop(&mut self) {
        match self {
            Relay::Udp(relay) => relay.stop(),
            Relay::Tcp(relay) => relay.stop(),
        }
    }

    fn stats(&self) -> Stats {
        match self {
            Relay::Udp(relay) => relay.stats(),
            Relay::Tcp(relay) => relay.stats(),
        }
    }

    /// Turns the impairments off (a clean link) or back on; only a UDP
    /// relay can.
    fn impair(&self, on: bool, spec: Impairments) -> &'static str {
        match self {
            Relay::Udp(relay) if on => {
                relay.set_impairments(spec);
                "impairments on"
            }
            Relay::Udp(relay) => {
                relay.set_impairments(Impairments::default());
                "impairments off"
            }
            Relay::Tcp(_) => "a TCP relay cannot change its impairments; ignored",
        }
    }
}

fn main() -> ExitCode {
    match run(Args::parse().mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunlab-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mode: Mode) -> anyhow::Result<()> {
    // Before starting the relay, so no signal finds the default handler.
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGUSR1, SIGUSR2]).context("installing signal handlers")?;
    let (kind, started, opts) = match mode {
        Mode::Udp(o) => (
            "udp",
            UdpRelay::start(o.listen, o.upstream, o.impair).map(Relay::Udp),
            o,
        ),
        Mode::Tcp(o) => (
            "tcp",
            TcpRelay::start(o.listen, o.upstream, o.impair).map(Relay::Tcp),
            o,
        ),
    };
    let mut relay = started.with_context(|| format!("listening for {kind} on {}", opts.listen))?;
    // A lab waits for this line before it sends traffic.
    println!(
        "tunlab-relay: {kind} {} -> {} ({})",
        relay.local_addr(),
        opts.upstream,
        opts.impair
    );

    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for signal in signals.forever() {
            if tx.send(signal).is_err() {
                break;
            }
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Err(RecvTimeoutError::Timeout) if opts.verbose => println!("{}", relay.stats()),
            Err(RecvTimeoutError::Timeout) => {}
            Ok(signal @ (SIGUSR1 | SIGUSR2)) => {
                println!("tunlab-relay: {}", relay.impair(signal == SIGUSR2, opts.impair));
            }
            Ok(_) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    // Stop first, so the counters are final.
    relay.stop();
    println!("tunlab-relay: stopped\n{}", relay.stats());
    Ok(())
}
