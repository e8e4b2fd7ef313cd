//! `tunlab soak`: step 05's VPN kept busy for a long time through a bad
//! link, watched for what only time shows: memory that grows, a session
//! that does not come back, a panic after the thousandth rekey.
//!
//! The hosts are lab 05's ([`topology::full_tunnel`]): `client1` and
//! `client2`, each on a link of its own to `server`, and `internet` behind
//! the server. The server runs `step05-full-tunnel server --nat`; client1
//! runs with `--full-tunnel --kill-switch` over its 1400-byte link, client2
//! with `--full-tunnel`; both with a keepalive. Neither client talks to
//! the server directly: both go through the impairment relay
//! (`tunlab-relay udp`, in the server host, [`RELAY_PORT`]), which in the
//! first half of every cycle loses, delays, duplicates, reorders and
//! corrupts datagrams ([`IMPAIRMENT`]) and in the second half passes them
//! untouched.
//!
//! All the while:
//!
//! - each client pings the internet host five times a second, and iperf3
//!   runs from client1 to the internet host and from the internet host to
//!   client2 (both through the server's NAT), at a bounded rate, one
//!   short run after another;
//! - every session is rekeyed every [`REKEY_AFTER`] seconds (step 04's
//!   test-only [`REKEY_AFTER_ENV`]) instead of every 120;
//! - each cycle has one event, in its impaired half: a client is killed
//!   with SIGKILL, `step05-full-tunnel down` puts its host back, and it
//!   starts again; or client2 moves to another underlay address
//!   (roaming); or nothing.
//!
//! Every few seconds the soak samples each process's resident memory
//! (`VmRSS`), the longest wait for a ping reply, the server's counters and
//! the relay's. It fails on a panic in any log, on a ping stall longer
//! than [`STALL_LIMIT`] after the impairment stops, and on any process
//! whose memory grows more than [`RSS_GROWTH`] past what it used during
//! its warm-up. It prints a line per sample and writes `soak.json` (every
//! sample, the cycles, the checks) and `soak.md` (a table per cycle) to
//! `target/tunlab/soak/`.
//!
//! Everything stays inside the soak's own namespaces, and every program
//! it starts is bounded in time; the namespaces go when it ends, on
//! Ctrl-C too.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use step04_crypto::run::REKEY_AFTER_ENV;

use crate::doctor::{Kernel, Needs};
use crate::env;
use crate::hoststate::Down;
use crate::keys::Keys;
use crate::netns::Host;
use crate::process::{READY_TIMEOUT, Running, path_arg};
use crate::topology::{self, FULL_TUNNEL_MTU, Net, RELAY_PORT, TUN, TUNNEL_PORT, internet, tunnel, underlay};

pub const PACKAGE: &str = "step05-full-tunnel";

/// What the soak needs from the machine.
pub const NEEDS: Needs = Needs {
    tools: &["ip", "ss", "ping", "iperf3", "nft"],
    kernel: &[Kernel::Tun, Kernel::Netns, Kernel::Veth, Kernel::Nftables],
    binaries: &[(PACKAGE, PACKAGE), ("tunlab", "tunlab-relay")],
};

/// What the relay does to the datagrams in the first half of each cycle:
/// 2% lost, 2% duplicated, 5% held back so that later ones overtake them,
/// 1% with a bit flipped, each delayed 5 ms ± 5 ms.
pub const IMPAIRMENT: &str = "loss=0.02,delay=5ms,jitter=5ms,dup=0.02,reorder=0.05,corrupt=0.01,seed=1";

/// The rekey interval the soak sets, in seconds.
pub const REKEY_AFTER: u64 = 10;

/// The longest a client may go without a ping reply once the impairment
/// has stopped.
pub const STALL_LIMIT: Duration = Duration::from_secs(2);

/// How much a process's memory may grow past its warm-up: 10%.
pub const RSS_GROWTH: f64 = 0.10;

/// Seconds between pings.
const PING_INTERVAL: &str = "0.2";
/// Each iperf3 run's length, and its rate: enough to keep the tunnel busy,
/// not enough to fill the relay's queue (which would make every ping wait
/// behind it) on a machine others share.
const IPERF_SECONDS: u64 = 8;
const IPERF_RATE: &str = "10M";
/// The iperf3 servers' ports on the internet host: one for client1's
/// upload, one for client2's download.
const IPERF_PORTS: [u16; 2] = [5201, 5202];
/// A run that has not ended this long after it should have is killed.
const IPERF_GRACE: Duration = Duration::from_secs(20);

/// The keepalive the clients send, in seconds.
const KEEPALIVE: &str = "5";

/// The address client2 roams to and back from.
const ROAMED2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 131);

/// How the soak runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long.
    pub duration: Duration,
    /// Where the logs, `soak.json` and `soak.md` go.
    pub out: PathBuf,
    /// Print nothing but the result.
    pub quiet: bool,
}

impl Options {
    /// `target/tunlab/soak`.
    pub fn default_out() -> PathBuf {
        env::out_dir("soak")
    }
}

/// The schedule the soak keeps, derived from its duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub duration: Duration,
    /// One cycle: impaired for the first half, clean for the second.
    pub cycle: Duration,
    /// Time between samples.
    pub sample: Duration,
    /// Memory used during the first `warm_up` of a process's life is its
    /// baseline.
    pub warm_up: Duration,
}

impl Plan {
    /// Cycles of a minute for a long run; shorter ones (at least 16 s, so
    /// that an event and its recovery fit in the impaired half) for a
    /// short one, so that even a smoke test sees each kind of event.
    pub fn new(duration: Duration) -> Self {
        let cycle = (duration / 4).clamp(Duration::from_secs(16), Duration::from_secs(60));
        let sample = (cycle / 8).clamp(Duration::from_secs(2), Duration::from_secs(5));
        let warm_up = (cycle * 2).max(duration / 10).min(duration / 2);
        Self {
            duration,
            cycle,
            sample,
            warm_up,
        }
    }

    /// The cycle that `t` (since the start) falls in, and whether the
    /// relay impairs then.
    pub fn at(&self, t: Duration) -> (u32, bool) {
        let cycle = (t.as_millis() / self.cycle.as_millis()) as u32;
        let within = t.saturating_sub(self.cycle * cycle);
        (cycle, within < self.cycle / 2)
    }

    /// When cycle `n`'s impairment stops.
    pub fn clean_from(&self, n: u32) -> Duration {
        self.cycle * n + self.cycle / 2
    }
}

/// What happens in a cycle's impaired half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGKILL, `down`, and a new start, for this client.
    Restart(Client),
    /// client2 moves to its other underlay address.
    Roam,
    Nothing,
}

impl Event {
    /// Cycle `n`'s event: a restart (client1 and client2 in turn), a roam,
    /// a quiet cycle, and again.
    pub fn of_cycle(n: u32) -> Self {
        match n % 3 {
            0 if (n / 3).is_multiple_of(2) => Event::Restart(Client::One),
            0 => Event::Restart(Client::Two),
            1 => Event::Roam,
            _ => Event::Nothing,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Event::Restart(Client::One) => "restart client1",
            Event::Restart(Client::Two) => "restart client2",
            Event::Roam => "client2 roams",
            Event::Nothing => "-",
        }
    }
}

/// One of the two clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    One,
    Two,
}

impl Client {
    const BOTH: [Client; 2] = [Client::One, Client::Two];

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Client::One => "client1",
            Client::Two => "client2",
        }
    }

    fn inner(self) -> Ipv4Addr {
        match self {
            Client::One => tunnel::CLIENT,
            Client::Two => tunnel::CLIENT2,
        }
    }

    fn inner6(self) -> std::net::Ipv6Addr {
        match self {
            Client::One => tunnel::CLIENT6,
            Client::Two => tunnel::CLIENT2_6,
        }
    }

    /// The server's address on its link, where the relay listens for it.
    fn server(self) -> Ipv4Addr {
        match self {
            Client::One => underlay::SERVER,
            Client::Two => underlay::SERVER_LINK2,
        }
    }
}

/// The processes whose memory the soak follows: the tunnel's three ends,
/// and the relay.
pub const PROCESSES: [&str; 4] = ["server", "client1", "client2", "relay"];
const RELAY: usize = 3;

/// One sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    pub cycle: u32,
    pub impaired: bool,
    /// Resident memory in KiB of each of [`PROCESSES`] (none while a
    /// client restarts): all of it (`VmRSS`), and its anonymous part
    /// (`RssAnon`: the heap and the stacks), which is what a leak grows.
    pub rss: [Option<u64>; 4],
    pub anon: [Option<u64>; 4],
    /// The longest wait for a ping reply, in seconds, in the time since
    /// the last sample, for client1 and client2.
    pub gap: [f64; 2],
    /// Ping replies since the last sample.
    pub replies: [u64; 2],
    /// The server's counters so far: handshakes with both clients, and
    /// messages dropped because their tag did not verify, or as replays.
    pub handshakes: u64,
    pub bad_tag: u64,
    pub replay: u64,
    /// The relay's counters so far, both directions.
    pub relay_dropped: u64,
    pub relay_duplicated: u64,
    pub relay_reordered: u64,
    pub relay_corrupted: u64,
}

/// One cycle, summed up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cycle {
    pub n: u32,
    pub event: String,
    /// The longest wait for a ping reply while impaired, and after the
    /// impairment stopped, each client.
    pub gap_impaired: [f64; 2],
    pub gap_clean: [f64; 2],
    /// Handshakes the server completed in the cycle.
    pub handshakes: u64,
    /// Mean iperf3 rate of the runs that ended in the cycle, Mbit/s, and
    /// how many ended (client1 up, client2 down).
    pub iperf_mbps: [Option<f64>; 2],
    pub iperf_runs: [u32; 2],
    /// Each process's memory at the cycle's last sample, KiB: all of it,
    /// and the anonymous part.
    pub rss: [Option<u64>; 4],
    pub anon: [Option<u64>; 4],
    /// Datagrams the relay corrupted, and the server dropped for a bad
    /// tag, in the cycle.
    pub corrupted: u64,
    pub bad_tag: u64,
}

/// A check of the whole run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// What a soak found.
#[derive(Debug, Clone, Default)]
pub struct Soak {
    pub plan: Option<Plan>,
    pub samples: Vec<Sample>,
    pub cycles: Vec<Cycle>,
    pub checks: Vec<Verdict>,
    /// iperf3 runs that ended without a result (a client restarting under
    /// them, or killed as stuck), each direction.
    pub iperf_failed: [u32; 2],
    pub restarts: u32,
    pub roams: u32,
    /// Times the server logged that a client roamed.
    pub server_roams: u64,
}

impl Soak {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    fn check(&mut self, name: impl Into<String>, passed: bool, detail: impl Into<String>) {
        self.checks.push(Verdict {
            name: name.into(),
            passed,
            detail: detail.into(),
        });
    }
}

// ---------------------------------------------------------------------
// Running it.

/// One process incarnation whose memory is followed: which of
/// [`PROCESSES`], when it started (seconds since the start) and its
/// samples (t, KiB).
#[derive(Debug, Clone)]
struct Life {
    process: usize,
    started: f64,
    samples: Vec<(f64, u64)>,
    log: PathBuf,
}

/// An iperf3 run in progress.
struct Iperf {
    /// Kept for its drop, which stops it if it has not ended by itself.
    _server: Running,
    client: Running,
    started: Instant,
    output: PathBuf,
}

/// The hosts and programs of a soak.
struct Lab {
    clients: [Option<Running>; 2],
    server: Running,
    relay: Running,
    pings: Vec<Running>,
    iperf: [Option<Iperf>; 2],
    hosts: [Host; 2],
    internet: Host,
    binary: PathBuf,
    keys: Keys,
    out: PathBuf,
    starts: u32,
    _net: Net,
}

/// A process's resident memory, in KiB: all of it (`VmRSS`) and its
/// anonymous part (`RssAnon`), from `/proc/PID/status` (proc(5)).
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("RssAnon:")?))
}

impl Lab {
    fn up(out: &Path) -> anyhow::Result<Self> {
        let binary = env::step_binary(PACKAGE)?;
        let net = topology::full_tunnel().build()?;
        let server_host = net.host("server")?;
        let hosts = [net.host("client1")?, net.host("client2")?];
        let internet = net.host("internet")?;
        let keys = Keys::generate(&binary, &out.join("keys"), &["server", "client1", "client2"])?;

        let address = tunnel::cidr(tunnel::SERVER).to_string();
        let mut args: Vec<String> = [
            "server",
            "--listen",
            &SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), TUNNEL_PORT).to_string(),
            "--key",
            keys["server"].file_str()?,
            "--address",
            &address,
            "--address",
            &tunnel::cidr(tunnel::SERVER6).to_string(),
            "--nat",
        ]
        .map(String::from)
        .into();
        for client in Client::BOTH {
            args.push("--peer".into());
            args.push(format!(
                "{}={},{}",
                keys[client.name()].public,
                tunnel::host(client.inner()),
                tunnel::host(client.inner6())
            ));
        }
        let mut server = start_step(&server_host, &binary, &args, &out.join("server.log"))?;
        server.wait_for_tun(TUN, &address)?;
        server_host.wait_for_udp_listener(TUNNEL_PORT)?;

        let relay_bin = env::binary("tunlab", "tunlab-relay")?;
        let relay_args: Vec<String> = [
            "udp",
            "--listen",
            &SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), RELAY_PORT).to_string(),
            "--upstream",
            &SocketAddr::new(underlay::SERVER.into(), TUNNEL_PORT).to_string(),
            "--impair",
            IMPAIRMENT,
            "--verbose",
        ]
        .map(String::from)
        .into();
        let mut relay = Running::start(&server_host, &relay_bin, &relay_args, &out.join("relay.log"))?;
        relay.wait_for_log("the relay", READY_TIMEOUT, |l| l.starts_with("tunlab-relay: udp"))?;

        let mut lab = Self {
            clients: [None, None],
            server,
            relay,
            pings: Vec::new(),
            iperf: [None, None],
            hosts,
            internet,
            binary,
            keys,
            out: out.to_path_buf(),
            starts: 0,
            _net: net,
        };
        for client in Client::BOTH {
            lab.start_client(client)?;
        }
        for client in Client::BOTH {
            let log = out.join(format!("ping-{}.log", client.name()));
            let args = ["-n", "-D", "-i", PING_INTERVAL, &internet::HOST.to_string()];
            let ping = Running::start(&lab.hosts[client.index()], Path::new("ping"), &args, &log)?;
            lab.pings.push(ping);
        }
        Ok(lab)
    }

    /// Starts a client through the relay and waits until its handshake is
    /// done and its routes are in place.
    fn start_client(&mut self, client: Client) -> anyhow::Result<()> {
        self.starts += 1;
        let host = self.hosts[client.index()].clone();
        let address = tunnel::cidr(client.inner()).to_string();
        let mut args: Vec<String> = [
            "client",
            "--server",
            &SocketAddr::new(client.server().into(), RELAY_PORT).to_string(),
            "--key",
            self.keys[client.name()].file_str()?,
            "--server-key",
            &self.keys["server"].public,
            "--address",
            &address,
            "--address",
            &tunnel::cidr(client.inner6()).to_string(),
            "--keepalive",
            KEEPALIVE,
            "--full-tunnel",
        ]
        .map(String::from)
        .into();
        if client == Client::One {
            args.extend(["--kill-switch", "--underlay-mtu"].map(String::from));
            args.push(FULL_TUNNEL_MTU.to_string());
        }
        let log = self.out.join(format!("{}-{}.log", client.name(), self.starts));
        let mut step = start_step(&host, &self.binary, &args, &log)?;
        step.wait_for_tun(TUN, &address)?;
        step.wait_for_handshake()?;
        step.wait_until("the full tunnel's routes", READY_TIMEOUT, || {
            host.route_dev(&internet::HOST.to_string())
                .is_some_and(|d| d == TUN)
        })?;
        self.clients[client.index()] = Some(step);
        Ok(())
    }

    /// SIGKILL, `down`, start again.
    fn restart(&mut self, client: Client) -> anyhow::Result<()> {
        if let Some(mut step) = self.clients[client.index()].take() {
            step.stop(Signal::SIGKILL, Duration::from_secs(5))?;
        }
        let host = &self.hosts[client.index()];
        let log = self
            .out
            .join(format!("{}-{}-down.log", client.name(), self.starts));
        let down = Down::run(host, &self.binary, &log)?;
        if !down.status.success() {
            bail!(
                "{PACKAGE} down in {} failed: {}{}",
                client.name(),
                down.stdout,
                down.stderr
            );
        }
        self.start_client(client)
    }

    /// client2's datagrams leave from its other address from now on.
    fn roam(&self) -> anyhow::Result<()> {
        let host = &self.hosts[Client::Two.index()];
        let relay = Client::Two.server().to_string();
        let route = host.ip(["-o", "route", "get", &relay])?;
        let to = if route.contains(&format!("src {ROAMED2} ")) {
            underlay::CLIENT2
        } else {
            ROAMED2
        };
        let prefix = format!("{to}/25");
        let has = host.ip(["-o", "-4", "addr", "show", "dev", "veth0"])?;
        if !has.contains(&format!("inet {prefix} ")) {
            host.add_address("veth0", &prefix)?;
        }
        host.ip([
            "route",
            "replace",
            &format!("{relay}/32"),
            "dev",
            "veth0",
            "src",
            &to.to_string(),
        ])?;
        Ok(())
    }

    /// Starts the next iperf3 run of each direction whose last one ended;
    /// returns the runs that ended: (direction, Mbit/s or `None`).
    fn iperf(&mut self) -> anyhow::Result<Vec<(usize, Option<f64>)>> {
        let mut ended = Vec::new();
        for i in 0..2 {
            if let Some(run) = self.iperf[i].as_mut() {
                let done = run.client.check_alive().is_err();
                let stuck = run.started.elapsed() > Duration::from_secs(IPERF_SECONDS) + IPERF_GRACE;
                if !done && !stuck {
                    continue;
                }
                let run = self.iperf[i].take().context("just seen")?;
                let mbps = if done { iperf_mbps(&run.output) } else { None };
                let _ = std::fs::remove_file(&run.output);
                drop(run);
                ended.push((i, mbps));
            }
            // Only while the client is up: a run started into a restart
            // would just fail.
            let client = Client::BOTH[i];
            if self.clients[client.index()].is_some() {
                match self.start_iperf(i) {
                    Ok(run) => self.iperf[i] = Some(run),
                    // Tried again next time round; counted as a run
                    // without a result.
                    Err(_) => ended.push((i, None)),
                }
            }
        }
        Ok(ended)
    }

    /// One run: a one-shot server on the internet host, and the client in
    /// client1 (upload) or client2 (download, `-R`).
    fn start_iperf(&self, i: usize) -> anyhow::Result<Iperf> {
        let port = IPERF_PORTS[i].to_string();
        let server = Running::start(
            &self.internet,
            Path::new("iperf3"),
            &["-s", "-1", "-p", &port],
            &self.out.join(format!("iperf3-server-{i}.log")),
        )?;
        self.internet.wait_for_listener(IPERF_PORTS[i])?;
        let output = self.out.join(format!("iperf3-{i}.json"));
        let mut args = vec![
            "-c".to_string(),
            internet::HOST.to_string(),
            "-p".into(),
            port,
            "-t".into(),
            IPERF_SECONDS.to_string(),
            "-b".into(),
            IPERF_RATE.into(),
            "--connect-timeout".into(),
            "3000".into(),
            "-J".into(),
        ];
        if i == 1 {
            args.push("-R".into());
        }
        let client = Running::start(&self.hosts[i], Path::new("iperf3"), &args, &output)?;
        Ok(Iperf {
            _server: server,
            client,
            started: Instant::now(),
            output,
        })
    }

    fn pids(&self) -> [Option<u32>; 4] {
        [
            self.server.pid(),
            self.clients[0].as_ref().and_then(Running::pid),
            self.clients[1].as_ref().and_then(Running::pid),
            self.relay.pid(),
        ]
    }
}

/// Starts a step with the soak's rekey interval, through `env`: the
/// variable reaches the program whatever `ip netns exec` keeps.
fn start_step(host: &Host, binary: &Path, args: &[String], log: &Path) -> anyhow::Result<Running> {
    let mut all = vec![format!("{REKEY_AFTER_ENV}={REKEY_AFTER}"), path_arg(binary)?];
    all.extend(args.iter().cloned());
    Running::start(host, Path::new("env"), &all, log)
}

/// The receiver's rate of an iperf3 run (`-J`), in Mbit/s.
fn iperf_mbps(output: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(output).ok()?;
    let json: Value = serde_json::from_str(&text).ok()?;
    let bits = json.pointer("/end/sum_received/bits_per_second")?.as_f64()?;
    (bits > 0.0).then_some(bits / 1e6)
}

/// The times (Unix seconds) of the replies in a `ping -D` log.
pub fn ping_replies(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains(" bytes from ") && l.contains("icmp_seq="))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect()
}

/// The longest time without a reply within `from..to` (Unix seconds),
/// counting from `from` to the first reply and from the last to `to`.
pub fn longest_gap(replies: &[f64], from: f64, to: f64) -> f64 {
    let mut last = from;
    let mut longest: f64 = 0.0;
    for &r in replies.iter().filter(|&&r| r > from && r <= to) {
        longest = longest.max(r - last);
        last = r;
    }
    longest.max(to - last)
}

/// Runs the soak.
pub fn run(options: &Options) -> anyhow::Result<Soak> {
    let plan = Plan::new(options.duration);
    let out = &options.out;
    env::make_dir(out)?;
    remove_old_files(out)?;
    let say = |line: &str| {
        if !options.quiet {
            println!("{line}");
        }
    };
    say(&format!(
        "soak: {} s in cycles of {} s (impaired for the first half: {IMPAIRMENT}), a sample every {} s, \
         warm-up {} s, rekey every {REKEY_AFTER} s",
        plan.duration.as_secs(),
        plan.cycle.as_secs(),
        plan.sample.as_secs(),
        plan.warm_up.as_secs()
    ));
    let setup = Instant::now();
    let mut lab = Lab::up(out)?;
    say(&format!(
        "hosts, relay, server and clients up in {:.1} s",
        setup.elapsed().as_secs_f64()
    ));
    let start = Instant::now();
    let unix_start = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    let mut soak = Soak {
        plan: Some(plan),
        ..Soak::default()
    };
    let mut lives: Vec<Life> = Vec::new();
    let mut pids_seen: [Option<u32>; 4] = [None; 4];
    let mut impaired = true;
    let mut event_done = None;
    let mut next_sample = plan.sample;
    let mut last_sample_unix = unix_start;
    let mut iperf_ended: Vec<(f64, usize, Option<f64>)> = Vec::new();
    say(&header());
    loop {
        let t = start.elapsed();
        if t >= plan.duration {
            break;
        }
        let (cycle, now_impaired) = plan.at(t);
        if now_impaired != impaired {
            let signal = if now_impaired {
                Signal::SIGUSR2
            } else {
                Signal::SIGUSR1
            };
            if let Some(pid) = lab.relay.pid() {
                kill(Pid::from_raw(pid as i32), signal).context("signalling the relay")?;
            }
            impaired = now_impaired;
        }
        // The event, a second into the impaired half.
        if event_done != Some(cycle) && now_impaired && t >= plan.cycle * cycle + Duration::from_secs(1) {
            event_done = Some(cycle);
            match Event::of_cycle(cycle) {
                Event::Restart(client) => {
                    lab.restart(client)
                        .with_context(|| format!("restarting {} in cycle {cycle}", client.name()))?;
                    soak.restarts += 1;
                }
                Event::Roam => {
                    lab.roam().context("moving client2 to its other address")?;
                    soak.roams += 1;
                }
                Event::Nothing => {}
            }
        }
        for (i, mbps) in lab.iperf()? {
            iperf_ended.push((start.elapsed().as_secs_f64(), i, mbps));
        }
        if start.elapsed() >= next_sample {
            next_sample += plan.sample;
            let t = start.elapsed().as_secs_f64();
            let unix_now = unix_start + t;
            let pids = lab.pids();
            let mut sample = Sample {
                t,
                cycle,
                impaired: now_impaired,
                ..Sample::default()
            };
            for (p, pid) in pids.iter().enumerate() {
                let Some(pid) = *pid else { continue };
                let Some((kib, anon)) = memory_kib(pid) else {
                    continue;
                };
                sample.rss[p] = Some(kib);
                sample.anon[p] = Some(anon);
                if pids_seen[p] != Some(pid) {
                    pids_seen[p] = Some(pid);
                    let log = match p {
                        0 => lab.server.log().to_path_buf(),
                        1 | 2 => lab.clients[p - 1]
                            .as_ref()
                            .map(|c| c.log().to_path_buf())
                            .unwrap_or_default(),
                        _ => lab.relay.log().to_path_buf(),
                    };
                    lives.push(Life {
                        process: p,
                        started: t,
                        samples: Vec::new(),
                        log,
                    });
                }
                if let Some(life) = lives.iter_mut().rev().find(|l| l.process == p) {
                    life.samples.push((t, anon));
                }
            }
            for (i, ping) in lab.pings.iter().enumerate() {
                let replies = ping_replies(&ping.log_text());
                sample.gap[i] = longest_gap(&replies, last_sample_unix, unix_now);
                sample.replies[i] = replies
                    .iter()
                    .filter(|&&r| r > last_sample_unix && r <= unix_now)
                    .count() as u64;
            }
            last_sample_unix = unix_now;
            if let Ok(status) = lab.server.status() {
                sample.handshakes = status.total("handshakes");
                sample.bad_tag = status.total("bad-tag");
                sample.replay = status.total("replay");
            }
            if let Some(stats) = relay_stats(&lab.relay.log_text()) {
                (
                    sample.relay_dropped,
                    sample.relay_duplicated,
                    sample.relay_reordered,
                    sample.relay_corrupted,
                ) = stats;
            }
            say(&row(&sample));
            soak.samples.push(sample);
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // The end: everything stops, and the logs are read.
    let end_unix = unix_start + start.elapsed().as_secs_f64();
    let replies: Vec<Vec<f64>> = lab.pings.iter().map(|p| ping_replies(&p.log_text())).collect();
    for ping in &mut lab.pings {
        let _ = ping.stop(Signal::SIGINT, Duration::from_secs(2));
    }
    for run in lab.iperf.iter_mut() {
        *run = None;
    }
    let server_log = lab.server.log().to_path_buf();
    let server_stopped = lab.server.stop(Signal::SIGTERM, Duration::from_secs(10));
    let mut client_exits = Vec::new();
    for (i, client) in lab.clients.iter_mut().enumerate() {
        if let Some(step) = client.as_mut() {
            client_exits.push((i, step.stop(Signal::SIGTERM, Duration::from_secs(10))));
        }
    }
    let _ = lab.relay.stop(Signal::SIGTERM, Duration::from_secs(5));
    soak.server_roams = std::fs::read_to_string(&server_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("roamed to"))
        .count() as u64;

    soak.cycles = cycles(&plan, &soak.samples, &replies, unix_start, end_unix, &iperf_ended);
    for (_, i, mbps) in &iperf_ended {
        if mbps.is_none() {
            soak.iperf_failed[*i] += 1;
        }
    }
    judge(&mut soak, &plan, &lives, out, &replies, unix_start, end_unix);
    soak.check(
        "every end exits cleanly on SIGTERM at the end",
        server_stopped.as_ref().is_ok_and(|s| s.success())
            && client_exits
                .iter()
                .all(|(_, s)| s.as_ref().is_ok_and(|s| s.success())),
        format!(
            "server {}; {}",
            exit_text(&server_stopped),
            client_exits
                .iter()
                .map(|(i, s)| format!("{} {}", Client::BOTH[*i].name(), exit_text(s)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    drop(lab);
    write(out, &soak)?;
    Ok(soak)
}

/// Removes what an earlier soak left in `out` (its logs decide whether
/// this one saw a panic).
fn remove_old_files(out: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ours = name.ends_with(".log")
            || (name.starts_with("iperf3-") && name.ends_with(".json"))
            || name == "soak.json"
            || name == "soak.md";
        if ours {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

fn exit_text(status: &anyhow::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("{e:#}"),
    }
}

/// The relay's counters from the last pair of lines it printed
/// (`--verbose`): dropped, duplicated, reordered and corrupted, both
/// directions together.
pub fn relay_stats(log: &str) -> Option<(u64, u64, u64, u64)> {
    let mut lines = log
        .lines()
        .rev()
        .filter(|l| l.contains("->") && l.contains("received"));
    let (a, b) = (lines.next()?, lines.next()?);
    let count = |line: &str, key: &str| -> u64 {
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .windows(2)
            .find(|w| w[0] == key)
            .and_then(|w| w[1].parse().ok())
            .unwrap_or(0)
    };
    let both = |key: &str| count(a, key) + count(b, key);
    Some((
        both("dropped"),
        both("duplicated"),
        both("reordered"),
        both("corrupted"),
    ))
}

/// Sums the samples up cycle by cycle.
fn cycles(
    plan: &Plan,
    samples: &[Sample],
    replies: &[Vec<f64>],
    unix_start: f64,
    end_unix: f64,
    iperf: &[(f64, usize, Option<f64>)],
) -> Vec<Cycle> {
    let count = (plan.duration.as_millis().div_ceil(plan.cycle.as_millis())) as u32;
    let mut out = Vec::new();
    let mut before: Option<&Sample> = None;
    for n in 0..count {
        let (from, middle, to) = (
            plan.cycle.as_secs_f64() * f64::from(n),
            plan.clean_from(n).as_secs_f64(),
            plan.cycle.as_secs_f64() * f64::from(n + 1),
        );
        let to_unix = (unix_start + to).min(end_unix);
        let mut cycle = Cycle {
            n,
            event: Event::of_cycle(n).name().to_string(),
            ..Cycle::default()
        };
        for (i, r) in replies.iter().enumerate().take(2) {
            cycle.gap_impaired[i] = longest_gap(r, unix_start + from, (unix_start + middle).min(end_unix));
            if unix_start + middle < end_unix {
                cycle.gap_clean[i] = longest_gap(r, unix_start + middle, to_unix);
            }
        }
        let last = samples.iter().rev().find(|s| s.cycle == n);
        if let Some(last) = last {
            cycle.rss = last.rss;
            cycle.anon = last.anon;
            cycle.handshakes = last.handshakes - before.map_or(0, |b| b.handshakes);
            cycle.corrupted = last.relay_corrupted - before.map_or(0, |b| b.relay_corrupted);
            cycle.bad_tag = last.bad_tag - before.map_or(0, |b| b.bad_tag);
            before = Some(last);
        }
        for i in 0..2 {
            let rates: Vec<f64> = iperf
                .iter()
                .filter(|(t, d, _)| *d == i && *t >= from && *t < to)
                .filter_map(|(_, _, m)| *m)
                .collect();
            cycle.iperf_runs[i] = rates.len() as u32;
            cycle.iperf_mbps[i] = (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64);
        }
        out.push(cycle);
    }
    out
}

/// The checks of the whole run.
fn judge(
    soak: &mut Soak,
    plan: &Plan,
    lives: &[Life],
    out: &Path,
    replies: &[Vec<f64>],
    unix_start: f64,
    end_unix: f64,
) {
    // 1. No panic anywhere.
    let mut panics = Vec::new();
    if let Ok(dir) = std::fs::read_dir(out) {
        let mut logs: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("panicked")) {
                panics.push(format!("{}: {}", log.display(), line.trim()));
            }
        }
    }
    soak.check(
        "no panic in any log",
        panics.is_empty(),
        if panics.is_empty() {
            "none".to_string()
        } else {
            panics.join("; ")
        },
    );

    // 2. No stall once the impairment stops.
    let mut worst = (0.0f64, 0u32, 0usize);
    for c in &soak.cycles {
        for i in 0..2 {
            if c.gap_clean[i] > worst.0 {
                worst = (c.gap_clean[i], c.n, i);
            }
        }
    }
    let clean_cycles = soak
        .cycles
        .iter()
        .filter(|c| unix_start + plan.clean_from(c.n).as_secs_f64() < end_unix)
        .count();
    soak.check(
        format!(
            "no ping waits more than {} s for a reply after the impairment stops",
            STALL_LIMIT.as_secs()
        ),
        clean_cycles > 0 && worst.0 <= STALL_LIMIT.as_secs_f64(),
        format!(
            "longest {:.2} s ({} in cycle {}), over {clean_cycles} clean halves",
            worst.0,
            Client::BOTH[worst.2].name(),
            worst.1
        ),
    );

    // 3. Memory.
    let mut judged = Vec::new();
    let mut grown = Vec::new();
    let mut instrument = Vec::new();
    for life in lives {
        let warm_until = life.started + plan.warm_up.as_secs_f64();
        let baseline = life
            .samples
            .iter()
            .filter(|(t, _)| *t <= warm_until)
            .map(|s| s.1)
            .max();
        let later = life
            .samples
            .iter()
            .filter(|(t, _)| *t > warm_until)
            .map(|s| s.1)
            .max();
        let (Some(baseline), Some(later)) = (baseline, later) else {
            continue;
        };
        let growth = later as f64 / baseline as f64 - 1.0;
        let line = format!(
            "{} (from {:.0} s, {}) {} KiB -> at most {} KiB ({:+.1}%)",
            PROCESSES[life.process],
            life.started,
            life.log
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            baseline,
            later,
            growth * 100.0
        );
        // The relay is the soak's instrument, like tcpdump in a lab: its
        // memory is shown, the tunnel's ends are judged.
        if life.process == RELAY {
            instrument.push(format!("{line}, the instrument, not judged"));
            continue;
        }
        if growth > RSS_GROWTH {
            grown.push(line.clone());
        }
        judged.push(line);
    }
    let judged_processes: std::collections::BTreeSet<usize> = lives
        .iter()
        .filter(|l| {
            l.samples
                .iter()
                .any(|(t, _)| *t > l.started + plan.warm_up.as_secs_f64())
        })
        .map(|l| l.process)
        .collect();
    soak.check(
        format!(
            "no end's anonymous memory (RssAnon) grows more than {:.0}% past its warm-up ({} s)",
            RSS_GROWTH * 100.0,
            plan.warm_up.as_secs()
        ),
        grown.is_empty() && judged_processes.contains(&0),
        if grown.is_empty() { judged } else { grown }
            .into_iter()
            .chain(instrument)
            .collect::<Vec<_>>()
            .join("; "),
    );

    // 4. The load was there: traffic, rekeys, corruption caught, events.
    let replied = replies.iter().map(Vec::len).collect::<Vec<_>>();
    let runs = [0, 1].map(|i| soak.cycles.iter().map(|c| c.iperf_runs[i]).sum::<u32>());
    soak.check(
        "pings and iperf3 ran both ways the whole time",
        replied.iter().all(|&n| n > 0) && runs.iter().all(|&n| n > 0),
        format!(
            "ping replies: client1 {}, client2 {}; iperf3 runs with a result: client1 up {}, client2 down {} \
             (without: {} and {}, cut by restarts)",
            replied[0], replied[1], runs[0], runs[1], soak.iperf_failed[0], soak.iperf_failed[1]
        ),
    );
    let last = soak.samples.last().cloned().unwrap_or_default();
    let seconds = plan.duration.as_secs();
    // Each client's first handshake and each restart's are not rekeys.
    let rekeys = last.handshakes.saturating_sub(2 + u64::from(soak.restarts));
    // One per client every REKEY_AFTER seconds at best; a third of that
    // leaves room for handshakes lost to the impairment and retried.
    let expected = 2 * seconds / (3 * REKEY_AFTER);
    soak.check(
        "sessions are rekeyed all along",
        rekeys >= expected.max(1),
        format!(
            "the server completed {} handshakes in {seconds} s: {rekeys} rekeys besides the 2 first ones and \
             the {} restarts' (at least {} expected, a third of one per client every {REKEY_AFTER} s)",
            last.handshakes,
            soak.restarts,
            expected.max(1),
        ),
    );
    soak.check(
        "corrupted datagrams are dropped by the server's authentication",
        last.relay_corrupted == 0 || last.bad_tag > 0,
        format!(
            "the relay corrupted {} datagrams (both ways); the server dropped {} for a bad tag and {} as replays",
            last.relay_corrupted, last.bad_tag, last.replay
        ),
    );
    soak.check(
        "the server follows every client to its new address",
        soak.server_roams >= u64::from(soak.roams + soak.restarts),
        format!(
            "{} roams and {} restarts (each a new address at the relay); the server logged {} endpoint changes",
            soak.roams, soak.restarts, soak.server_roams
        ),
    );
}

// ---------------------------------------------------------------------
// The table and the files.

fn kib(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |k| k.to_string())
}

fn header() -> String {
    format!(
        "{:>6} {:>3} {:>8}  {:>6} {:>7} {:>7} {:>6}  {:>5} {:>5}  {:>5} {:>7} {:>7} {:>9}\n{}",
        "t (s)",
        "cyc",
        "link",
        "server",
        "client1",
        "client2",
        "relay",
        "gap1",
        "gap2",
        "hs",
        "bad-tag",
        "replay",
        "corrupted",
        "(memory: RssAnon, KiB; gap: the longest wait for a ping reply, s; hs: handshakes so far)"
    )
}

fn row(s: &Sample) -> String {
    format!(
        "{:>6.0} {:>3} {:>8}  {:>6} {:>7} {:>7} {:>6}  {:>5.2} {:>5.2}  {:>5} {:>7} {:>7} {:>9}",
        s.t,
        s.cycle,
        if s.impaired { "impaired" } else { "clean" },
        kib(s.anon[0]),
        kib(s.anon[1]),
        kib(s.anon[2]),
        kib(s.anon[3]),
        s.gap[0],
        s.gap[1],
        s.handshakes,
        s.bad_tag,
        s.replay,
        s.relay_corrupted
    )
}

/// Everything as JSON.
pub fn to_json(soak: &Soak) -> Value {
    let plan = soak.plan.unwrap_or_else(|| Plan::new(Duration::ZERO));
    json!({
        "config": {
            "duration_s": plan.duration.as_secs(),
            "cycle_s": plan.cycle.as_secs(),
            "sample_s": plan.sample.as_secs(),
            "warm_up_s": plan.warm_up.as_secs(),
            "impairment": IMPAIRMENT,
            "rekey_after_s": REKEY_AFTER,
            "stall_limit_s": STALL_LIMIT.as_secs_f64(),
            "rss_growth_limit": RSS_GROWTH,
            "iperf3": format!("{IPERF_SECONDS} s runs at {IPERF_RATE}bit/s"),
        },
        "passed": soak.passed(),
        "restarts": soak.restarts,
        "roams": soak.roams,
        "server_roams": soak.server_roams,
        "iperf_failed": soak.iperf_failed,
        "checks": soak.checks.iter().map(|c| json!({"name": c.name, "passed": c.passed, "detail": c.detail})).collect::<Vec<_>>(),
        "cycles": soak.cycles.iter().map(|c| json!({
            "n": c.n,
            "event": c.event,
            "gap_impaired_s": c.gap_impaired,
            "gap_clean_s": c.gap_clean,
            "handshakes": c.handshakes,
            "iperf_mbps": c.iperf_mbps,
            "iperf_runs": c.iperf_runs,
            "rss_kib": c.rss,
            "anon_kib": c.anon,
            "corrupted": c.corrupted,
            "bad_tag": c.bad_tag,
        })).collect::<Vec<_>>(),
        "samples": soak.samples.iter().map(|s| json!({
            "t": (s.t * 10.0).round() / 10.0,
            "cycle": s.cycle,
            "impaired": s.impaired,
            "rss_kib": s.rss,
            "anon_kib": s.anon,
            "gap_s": s.gap.map(|g| (g * 1000.0).round() / 1000.0),
            "replies": s.replies,
            "handshakes": s.handshakes,
            "bad_tag": s.bad_tag,
            "replay": s.replay,
            "relay": {
                "dropped": s.relay_dropped,
                "duplicated": s.relay_duplicated,
                "reordered": s.relay_reordered,
                "corrupted": s.relay_corrupted,
            },
        })).collect::<Vec<_>>(),
    })
}

/// The table of `soak.md`, made from the JSON alone (the book includes it,
/// and a test makes it again from `soak.json` to show it was).
pub fn markdown(json: &Value) -> anyhow::Result<String> {
    let config = &json["config"];
    let mut md = String::new();
    writeln!(
        md,
        "{} minutes in cycles of {} s; the relay impairs the first half of each cycle \
         (`{}`); sessions rekey every {} s. Gaps are the longest wait for a ping reply \
         (5 a second), in seconds; memory is each process's anonymous resident memory (RssAnon: \
         its heap and stacks) at the cycle's last sample, in KiB.\n",
        config["duration_s"].as_u64().context("duration")? / 60,
        config["cycle_s"].as_u64().context("cycle")?,
        config["impairment"].as_str().context("impairment")?,
        config["rekey_after_s"].as_u64().context("rekey")?,
    )?;
    md.push_str(
        "| cycle | event | gap impaired c1 / c2 | gap after c1 / c2 | handshakes | iperf3 up / down (Mbit/s) | server KiB | client1 KiB | client2 KiB | relay KiB | corrupted / bad tag |\n",
    );
    md.push_str("|---:|---|---|---|---:|---|---:|---:|---:|---:|---|\n");
    let pair = |v: &Value| -> String {
        let a = v[0].as_f64().map_or("-".into(), |x| format!("{x:.2}"));
        let b = v[1].as_f64().map_or("-".into(), |x| format!("{x:.2}"));
        format!("{a} / {b}")
    };
    let rate = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.1}"));
    let mem = |v: &Value| v.as_u64().map_or("-".into(), |k| k.to_string());
    for c in json["cycles"].as_array().context("cycles")? {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} / {} |",
            c["n"],
            c["event"].as_str().unwrap_or("?"),
            pair(&c["gap_impaired_s"]),
            pair(&c["gap_clean_s"]),
            c["handshakes"],
            rate(&c["iperf_mbps"][0]),
            rate(&c["iperf_mbps"][1]),
            mem(&c["anon_kib"][0]),
            mem(&c["anon_kib"][1]),
            mem(&c["anon_kib"][2]),
            mem(&c["anon_kib"][3]),
            c["corrupted"],
            c["bad_tag"],
        )?;
    }
    md.push('\n');
    for check in json["checks"].as_array().context("checks")? {
        writeln!(
            md,
            "- **{}** {}: {}",
            if check["passed"].as_bool() == Some(true) {
                "PASS"
            } else {
                "FAIL"
            },
            check["name"].as_str().unwrap_or("?"),
            check["detail"].as_str().unwrap_or(""),
        )?;
    }
    Ok(md)
}

/// Writes `soak.json` and `soak.md` into `dir`.
pub fn write(dir: &Path, soak: &Soak) -> anyhow::Result<()> {
    env::make_dir(dir)?;
    let json = to_json(soak);
    let text = serde_json::to_string_pretty(&json)? + "\n";
    std::fs::write(dir.join("soak.json"), text)?;
    std::fs::write(dir.join("soak.md"), markdown(&json)?)?;
    Ok(())
}

/// What the checks said, a line each.
pub fn summary(soak: &Soak) -> String {
    soak.checks
        .iter()
        .map(|c| {
            format!(
                "{} {}: {}",
                if c.passed { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_fits_events_and_warm_up_into_any_length() {
        let long = Plan::new(Duration::from_secs(1800));
        assert_eq!(
            (long.cycle, long.sample),
            (Duration::from_secs(60), Duration::from_secs(5))
        );
        assert_eq!(long.warm_up, Duration::from_secs(180), "10% of the run");
        let smoke = Plan::new(Duration::from_secs(48));
        assert_eq!(smoke.cycle, Duration::from_secs(16));
        assert_eq!(smoke.sample, Duration::from_secs(2));
        assert_eq!(smoke.warm_up, Duration::from_secs(24), "at most half the run");
        assert_eq!(long.at(Duration::from_secs(29)), (0, true));
        assert_eq!(long.at(Duration::from_secs(30)), (0, false));
        assert_eq!(long.at(Duration::from_secs(61)), (1, true));
        assert_eq!(long.clean_from(2), Duration::from_secs(150));
        let events: Vec<Event> = (0..6).map(Event::of_cycle).collect();
        assert_eq!(
            events,
            [
                Event::Restart(Client::One),
                Event::Roam,
                Event::Nothing,
                Event::Restart(Client::Two),
                Event::Roam,
                Event::Nothing
            ]
        );
    }

    #[test]
    fn ping_gaps_count_the_edges() {
        let log = "PING 198.51.100.2 (198.51.100.2) 56(84) bytes of data.\n\
                   [100.10] 64 bytes from 198.51.100.2: icmp_seq=1 ttl=63 time=0.5 ms\n\
                   [100.30] 64 bytes from 198.51.100.2: icmp_seq=2 ttl=63 time=0.5 ms\n\
                   [103.30] 64 bytes from 198.51.100.2: icmp_seq=17 ttl=63 time=0.5 ms\n\
                   ping: sendmsg: Operation not permitted\n";
        let replies = ping_replies(log);
        assert_eq!(replies, [100.1, 100.3, 103.3]);
        assert!((longest_gap(&replies, 100.0, 103.5) - 3.0).abs() < 1e-9);
        assert!((longest_gap(&replies, 100.0, 100.35) - 0.2).abs() < 1e-9);
        assert!(
            (longest_gap(&replies, 103.3, 110.0) - 6.7).abs() < 1e-9,
            "no reply till the end"
        );
        assert!((longest_gap(&[], 1.0, 2.5) - 1.5).abs() < 1e-9);
    }

    #[test]
    fn relay_counters_are_read_from_its_last_lines() {
        let log = "tunlab-relay: udp 0.0.0.0:7000 -> 192.0.2.1:51820 (loss=0.02)\n\
                   client->upstream: received 10 forwarded 9 (900 bytes) dropped 1 duplicated 0 reordered 0 corrupted 0 overflowed 0 retransmitted 0\n\
                   upstream->client: received 9 forwarded 9 (900 bytes) dropped 0 duplicated 0 reordered 0 corrupted 0 overflowed 0 retransmitted 0\n\
                   client->upstream: received 20 forwarded 19 (900 bytes) dropped 2 duplicated 1 reordered 3 corrupted 1 overflowed 0 retransmitted 0\n\
                   upstream->client: received 19 forwarded 19 (900 bytes) dropped 1 duplicated 0 reordered 1 corrupted 2 overflowed 0 retransmitted 0\n";
        assert_eq!(relay_stats(log), Some((3, 1, 4, 3)));
        assert_eq!(relay_stats("nothing yet"), None);
    }
}
