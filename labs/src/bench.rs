//! `tunlab bench`: every tunnel measured against the bare link and against
//! the userspace WireGuard implementations, in one run, on one topology.
//!
//! Two lab hosts joined by one veth pair, the labs' two-host topology
//! ([`topology::two_hosts`]; `a` is its client, `b` its server): the
//! physical limit of this machine. Each contestant is started on both hosts, measured from
//! `a` to `b` (iperf3 TCP with 1 and 4 streams, the highest UDP rate with
//! under 1% loss, ping at idle and under load, CPU time and peak memory of
//! the tunnel processes), and stopped. The rounds are interleaved (round 1
//! measures every contestant once, then round 2 again, each round starting
//! one contestant later) so that the machine's drift, a busy neighbour or a
//! warm cache, hits every contestant alike. Each figure is the median of
//! the rounds, with the lowest and highest kept.
//!
//! Traffic never leaves the two namespaces, and every load is bounded by
//! iperf3's `-t` and a `timeout`.

pub mod builds;
pub mod measure;
pub mod results;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::doctor::{Kernel, Needs};
use crate::env;
use crate::keys::KeyPair;
use crate::netns::Host;
use crate::process::Running;
use crate::steplog::FastPath;
use crate::topology::{self, underlay};
use builds::Build;
use measure::{Iperf, Rtts, Target};
use results::{Figure, Machine, Outcome, Results, Row, Series, Settings};

/// What the benchmark needs from the machine: the programs it runs
/// itself, and the steps it measures (step 04 also makes the keys).
pub const NEEDS: Needs = Needs {
    tools: &["ip", "iperf3", "ping", "timeout", "getconf"],
    kernel: &[Kernel::Tun, Kernel::Netns, Kernel::Veth],
    binaries: &[
        ("step02-plain-tunnel", "step02-plain-tunnel"),
        ("step03-ipv6", "step03-ipv6"),
        ("step04-crypto", "step04-crypto"),
        ("step05-full-tunnel", "step05-full-tunnel"),
        ("step06-localhost", "step06-localhost"),
        ("step07-wireguard", "step07-wireguard"),
        ("step08-fast-path", "step08-fast-path"),
    ],
};

/// Install hints for the other implementations.
const WIREGUARD_GO_INSTALL: &str = "apt-get install --no-install-recommends wireguard-go wireguard-tools";
const BORINGTUN_INSTALL: &str =
    "cargo install --locked boringtun-cli (and apt-get install --no-install-recommends wireguard-tools)";

/// How long a contestant that is up is left alone before it is measured.
const SETTLE: Duration = Duration::from_secs(1);
/// The port the iperf3 server listens on in `b`.
const IPERF_PORT: u16 = 5201;

/// What `tunlab bench` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the results and the logs go.
    pub out: PathBuf,
    /// How many times each contestant is measured.
    pub rounds: u32,
    /// Seconds per iperf3 run (the UDP probes take half as long each).
    pub seconds: u32,
    /// iperf3 runs spent finding the highest UDP rate with under 1% loss.
    pub udp_probes: u32,
    /// Contestants to measure, by name; all when empty.
    pub only: Vec<String>,
    /// Measure the ablation instead: step 07, then step 08 with its
    /// techniques added one at a time ([`ABLATION`]); write
    /// `ablation.{json,md,svg}`.
    pub ablation: bool,
}

impl Options {
    pub fn default_out() -> PathBuf {
        env::out_dir("bench")
    }
}

// ANCHOR: techniques
/// Which of its techniques step 08 runs with (each off is a flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Techniques {
    /// recvmmsg/sendmmsg (`--no-mmsg` turns it off).
    pub mmsg: bool,
    /// The TUN device's virtio-net header (`--no-offload`).
    pub offload: bool,
    /// UDP GSO (`--no-gso`) and GRO (`--no-gro`).
    pub gso: bool,
    pub gro: bool,
    /// A worker per CPU (else `--threads 1`).
    pub threads: bool,
}
// ANCHOR_END: techniques

impl Techniques {
    pub const ALL: Techniques = Techniques {
        mmsg: true,
        offload: true,
        gso: true,
        gro: true,
        threads: true,
    };
    pub const NONE: Techniques = Techniques {
        mmsg: false,
        offload: false,
        gso: false,
        gro: false,
        threads: false,
    };

    /// Step 08's arguments for these.
    fn args(self) -> Vec<&'static str> {
        let mut args = Vec::new();
        if !self.threads {
            args.extend(["--threads", "1"]);
        }
        for (on, flag) in [
            (self.mmsg, "--no-mmsg"),
            (self.offload, "--no-offload"),
            (self.gso, "--no-gso"),
            (self.gro, "--no-gro"),
        ] {
            if !on {
                args.push(flag);
            }
        }
        args
    }
}

/// One thing measured: the bare link, a step, or another implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contestant {
    Veth,
    Step02,
    Step03,
    Step04,
    Step05,
    Step06,
    Step07,
    /// Step 08 with these techniques ([`Techniques::ALL`]: `step08`).
    Step08(Techniques),
    WireguardGo,
    Boringtun,
    BoringtunOneThread,
}

// ANCHOR: ablation
/// The ablation: step 07, then step 08 with its techniques added one at a
/// time, in the order the book's chapter explains them.
pub const ABLATION: [Contestant; 7] = [
    Contestant::Step07,
    Contestant::Step08(Techniques::NONE),
    Contestant::Step08(Techniques {
        mmsg: true,
        ..Techniques::NONE
    }),
    Contestant::Step08(Techniques {
        mmsg: true,
        offload: true,
        ..Techniques::NONE
    }),
    Contestant::Step08(Techniques {
        mmsg: true,
        offload: true,
        gso: true,
        ..Techniques::NONE
    }),
    Contestant::Step08(Techniques {
        threads: false,
        ..Techniques::ALL
    }),
    Contestant::Step08(Techniques::ALL),
];
// ANCHOR_END: ablation

impl Contestant {
    pub const ALL: [Contestant; 11] = [
        Contestant::Veth,
        Contestant::Step02,
        Contestant::Step03,
        Contestant::Step04,
        Contestant::Step05,
        Contestant::Step06,
        Contestant::Step07,
        Contestant::Step08(Techniques::ALL),
        Contestant::WireguardGo,
        Contestant::Boringtun,
        Contestant::BoringtunOneThread,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Contestant::Veth => "veth",
            Contestant::Step02 => "step02",
            Contestant::Step03 => "step03",
            Contestant::Step04 => "step04",
            Contestant::Step05 => "step05",
            Contestant::Step06 => "step06",
            Contestant::Step07 => "step07",
            Contestant::Step08(t) => match t {
                Techniques::ALL => "step08",
                Techniques::NONE => "step08-bare",
                Techniques {
                    threads: false,
                    gro: true,
                    ..
                } => "step08+gro",
                Techniques { gso: true, .. } => "step08+gso",
                Techniques { offload: true, .. } => "step08+offload",
                _ => "step08+mmsg",
            },
            Contestant::WireguardGo => "wireguard-go",
            Contestant::Boringtun => "boringtun",
            Contestant::BoringtunOneThread => "boringtun-1t",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Contestant::Veth => "the bare veth pair, no tunnel: the physical limit of this machine",
            Contestant::Step02 => {
                "step 02's plaintext tunnel over UDP (one thread, one packet per system call)"
            }
            Contestant::Step03 => "step 03: step 02 plus MSS clamping and ICMP too-big answers",
            Contestant::Step04 => "step 04: x25519 handshake, ChaCha20-Poly1305, replay window",
            Contestant::Step05 => "step 05's VPN ends (step 04's data path; no --nat or --full-tunnel here)",
            Contestant::Step06 => {
                "step 06's localhost tunnel (`expose`): TCP streams and UDP flows inside one encrypted TCP control connection; no ping"
            }
            Contestant::Step07 => {
                "step 07: WireGuard itself, started and configured with wg exactly as wireguard-go is, MTU 1420"
            }
            Contestant::Step08(t) => match t {
                Techniques::ALL => {
                    "step 08: step 07 with batched system calls, TUN and UDP offloads and a worker per CPU, configured with wg, MTU 1420"
                }
                Techniques::NONE => {
                    "step 08 with every technique off (--threads 1 --no-mmsg --no-offload --no-gso --no-gro): its shell, one packet per system call"
                }
                Techniques {
                    threads: false,
                    gro: true,
                    ..
                } => "the row above plus UDP GRO: one worker (--threads 1)",
                Techniques { gso: true, .. } => "the row above plus UDP GSO (--threads 1 --no-gro)",
                Techniques { offload: true, .. } => {
                    "the row above plus the TUN device's virtio-net header: TCP super-packets in, coalesced ones out (--threads 1 --no-gso --no-gro)"
                }
                _ => "step 08's shell plus recvmmsg/sendmmsg (--threads 1 --no-offload --no-gso --no-gro)",
            },
            Contestant::WireguardGo => "wireguard-go, configured with wg, MTU 1420",
            Contestant::Boringtun => "boringtun-cli with its default 4 threads, MTU 1420",
            Contestant::BoringtunOneThread => "boringtun-cli with --threads 1, MTU 1420",
        }
    }

    /// The step crate whose binary this contestant runs.
    fn package(self) -> Option<&'static str> {
        match self {
            Contestant::Step02 => Some("step02-plain-tunnel"),
            Contestant::Step03 => Some("step03-ipv6"),
            Contestant::Step04 => Some("step04-crypto"),
            Contestant::Step05 => Some("step05-full-tunnel"),
            Contestant::Step06 => Some("step06-localhost"),
            Contestant::Step07 => Some("step07-wireguard"),
            Contestant::Step08(_) => Some("step08-fast-path"),
            _ => None,
        }
    }

    /// Whether ping can cross it (step 06's `expose` carries TCP and UDP
    /// ports, not IP packets).
    fn carries_ping(self) -> bool {
        self != Contestant::Step06
    }

    /// Its place in [`Contestant::ALL`], from 1: a number of its own for its
    /// interface names, subnet and ports.
    fn number(self) -> u8 {
        let index = match Contestant::ALL.iter().position(|c| *c == self) {
            Some(i) => i,
            // The ablation's own step 08s: numbers after the main list's.
            None => 20 + ABLATION.iter().position(|c| *c == self).unwrap_or(0),
        };
        u8::try_from(index + 1).unwrap_or(u8::MAX)
    }

    /// `None` when it can run here; otherwise how to install what is
    /// missing.
    fn missing(self) -> Option<String> {
        let wg = || {
            (!env::on_path("wg")).then(|| {
                "wg is not installed: apt-get install --no-install-recommends wireguard-tools".to_string()
            })
        };
        match self {
            Contestant::WireguardGo if !env::on_path("wireguard-go") => {
                Some(format!("not installed: {WIREGUARD_GO_INSTALL}"))
            }
            Contestant::WireguardGo => wg(),
            Contestant::Boringtun | Contestant::BoringtunOneThread if boringtun_binary().is_none() => {
                Some(format!("not installed: {BORINGTUN_INSTALL}"))
            }
            Contestant::Boringtun
            | Contestant::BoringtunOneThread
            | Contestant::Step07
            | Contestant::Step08(_) => wg(),
            _ => None,
        }
    }
}

/// boringtun-cli on the PATH, or where `cargo install` puts it (sudo's
/// PATH often lacks `~/.cargo/bin`).
pub fn boringtun_binary() -> Option<PathBuf> {
    if let Some(path) = env::find_program("boringtun-cli") {
        return Some(path);
    }
    let homes = [
        std::env::var_os("CARGO_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")),
    ];
    homes
        .into_iter()
        .flatten()
        .map(|home| home.join("bin").join("boringtun-cli"))
        .find(|p| p.is_file())
}

/// The binaries a run of `contestants` starts, as (package, binary): each
/// step measured, and step 04's always (it makes the keys).
pub fn binaries(contestants: &[Contestant]) -> Vec<(&'static str, &'static str)> {
    let mut packages: Vec<&str> = Vec::new();
    // The ablation measures step 08 several times: build it once.
    for p in contestants
        .iter()
        .filter_map(|c| c.package())
        .chain(["step04-crypto"])
    {
        if !packages.contains(&p) {
            packages.push(p);
        }
    }
    packages.into_iter().map(|p| (p, p)).collect()
}

/// Finds contestants by name, among `from` (all of them when `names` is
/// empty).
pub fn select(names: &[String], from: &[Contestant]) -> anyhow::Result<Vec<Contestant>> {
    if names.is_empty() {
        return Ok(from.to_vec());
    }
    names
        .iter()
        .map(|name| {
            from.iter().copied().find(|c| c.name() == name).with_context(|| {
                let all: Vec<_> = from.iter().map(|c| c.name()).collect();
                format!("there is no contestant {name}; there are {}", all.join(", "))
            })
        })
        .collect()
}

/// One contestant's figures in one round, or why the round failed.
type Round = Result<Vec<(Figure, f64)>, String>;

/// The two hosts and what every contestant shares.
struct Bench {
    a: Host,
    b: Host,
    out: PathBuf,
    /// Key pairs for the encrypted contestants (x25519, base64: the steps
    /// and WireGuard read the same format).
    a_key: KeyPair,
    b_key: KeyPair,
    ticks: f64,
}

/// A contestant started on both hosts.
struct Started {
    /// The tunnel's processes, stopped when this is dropped.
    processes: Vec<Running>,
    /// Where iperf3 and ping reach `b` through it.
    target: Target,
}

impl Started {
    fn pids(&self) -> Vec<u32> {
        self.processes.iter().filter_map(Running::pid).collect()
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        self.processes.iter_mut().try_for_each(Running::check_alive)
    }

    /// Step 08's counters at each end (`None` for anything else).
    fn counters(&self, contestant: Contestant) -> anyhow::Result<Option<Vec<FastPath>>> {
        if !matches!(contestant, Contestant::Step08(_)) {
            return Ok(None);
        }
        self.processes
            .iter()
            .map(Running::fast_path)
            .collect::<anyhow::Result<Vec<_>>>()
            .map(Some)
    }

    fn cpu_seconds(&self, ticks: f64) -> anyhow::Result<f64> {
        self.pids()
            .into_iter()
            .map(|pid| measure::cpu_seconds(pid, ticks))
            .sum()
    }
}

/// Runs the benchmark and writes `bench.json`, `bench.md` and `bench.svg`
/// into `options.out`.
pub fn run(options: &Options) -> anyhow::Result<Results> {
    if options.rounds == 0 || options.seconds == 0 {
        bail!("--rounds and --seconds must be at least 1");
    }
    let from: &[Contestant] = if options.ablation {
        &ABLATION
    } else {
        &Contestant::ALL
    };
    let contestants = select(&options.only, from)?;
    std::fs::create_dir_all(&options.out).with_context(|| format!("creating {}", options.out.display()))?;

    let mut binaries = Vec::new();
    for c in &contestants {
        if let Some(package) = c.package() {
            binaries.push((*c, env::step_binary(package)?));
        }
    }
    let machine = machine(&binaries)?;
    let date = utc_now();
    println!("{date} — {}", machine.line());
    if machine.profile != "release" {
        println!(
            "note: a {} build measures unoptimized code; for real figures run: cargo run --release -p tunlab -- bench",
            machine.profile
        );
    }
    if !binaries.is_empty() {
        println!(
            "the steps: built by {}, for target CPU {} (-C target-cpu; .cargo/config.toml builds for \
             the building machine's CPU, which step 04's cipher needs to be fast: compare bench files \
             only between like builds)",
            binaries
                .first()
                .and_then(|(_, p)| builds::rustc_of(p))
                .unwrap_or_else(|| "an unknown rustc".into()),
            builds::STEP_TARGET_CPU
        );
    }
    let builds: Vec<Build> = contestants
        .iter()
        .map(|c| build_of(*c, &binaries, &machine))
        .collect();

    let net = topology::two_hosts().build()?;
    let (a, b) = (net.host("client")?, net.host("server")?);
    // Step 04 makes the keys; WireGuard reads the same format.
    let key_tool = env::step_binary("step04-crypto")?;
    let bench = Bench {
        a_key: KeyPair::generate(&key_tool, &options.out.join("a.key"))?,
        b_key: KeyPair::generate(&key_tool, &options.out.join("b.key"))?,
        a,
        b,
        out: options.out.clone(),
        ticks: measure::ticks_per_second(),
    };
    let _iperf_server = Running::start(
        &bench.b,
        Path::new("iperf3"),
        &["-s", "-p", &IPERF_PORT.to_string()],
        &options.out.join("iperf3-server.log"),
    )?;
    bench.b.wait_for_listener(IPERF_PORT)?;

    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); contestants.len()];
    let available: Vec<Option<String>> = contestants.iter().map(|c| c.missing()).collect();
    for (c, why) in contestants.iter().zip(&available) {
        if let Some(why) = why {
            println!("{}: {why}", c.name());
        }
    }
    let mut progress =
        Progress::new(options.rounds as usize * available.iter().filter(|a| a.is_none()).count());
    for round in 0..options.rounds {
        let n = contestants.len();
        for k in 0..n {
            let i = (k + round as usize) % n;
            let contestant = contestants[i];
            if available[i].is_some() {
                continue;
            }
            println!("{}", progress.next(contestant.name(), round + 1));
            let binary = binaries
                .iter()
                .find(|(c, _)| *c == contestant)
                .map(|(_, p)| p.as_path());
            let started = Instant::now();
            let result = measure_once(&bench, contestant, binary, options)
                .map_err(|e| format!("round {}: {e:#}", round + 1));
            match &result {
                Ok(figures) => println!("      {} ({})", brief(figures), duration(started.elapsed())),
                Err(e) => println!("      {} failed: {e}", contestant.name()),
            }
            rounds[i].push(result);
        }
    }
    println!("measured in {}", duration(progress.elapsed()));

    let rows = contestants
        .iter()
        .zip(rounds)
        .zip(available)
        .zip(builds)
        .map(|(((c, runs), missing), build)| Row {
            name: c.name().into(),
            description: c.description().into(),
            build,
            outcome: match missing {
                Some(why) => Outcome::Missing(why),
                None => collect(runs),
            },
        })
        .collect();
    let results = Results {
        machine,
        settings: Settings {
            rounds: options.rounds,
            seconds: options.seconds,
            udp_probes: options.udp_probes,
            udp_payload: measure::UDP_PAYLOAD,
        },
        date,
        rows,
        table: if options.ablation {
            Figure::ABLATION.to_vec()
        } else {
            Figure::ALL.to_vec()
        },
    };
    write(&options.out, file_stem(options), &results)?;
    Ok(results)
}

/// The results' file names: `bench.*`, or `ablation.*`.
pub fn file_stem(options: &Options) -> &'static str {
    if options.ablation { "ablation" } else { "bench" }
}

/// Writes `STEM.json`, `STEM.md` and `STEM.svg` into `dir`.
pub fn write(dir: &Path, stem: &str, results: &Results) -> anyhow::Result<()> {
    let files = [
        (format!("{stem}.json"), format!("{:#}\n", results.json())),
        (format!("{stem}.md"), results.markdown()),
        (format!("{stem}.svg"), results.svg()),
    ];
    for (name, text) in files {
        let path = dir.join(&name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Where the benchmark is: `[k/N] contestant, round r`, the time since
/// the first measurement and, from the measurements done, an estimate of
/// the time left.
struct Progress {
    total: usize,
    done: usize,
    start: Instant,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total,
            done: 0,
            start: Instant::now(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The line for the next measurement, which is counted as begun.
    fn next(&mut self, name: &str, round: u32) -> String {
        let line = progress_line(self.done, self.total, name, round, self.elapsed());
        self.done += 1;
        line
    }
}

/// `[3/18] step04, round 1: 1 min 12 s so far, about 9 min 36 s left`:
/// `done` measurements took `elapsed`, and each left is taken to last as
/// long as the mean of those.
fn progress_line(done: usize, total: usize, name: &str, round: u32, elapsed: Duration) -> String {
    let mut line = format!(
        "[{}/{total}] {name}, round {round}: {} so far",
        done + 1,
        duration(elapsed)
    );
    if done > 0 {
        let left = elapsed.mul_f64((total - done) as f64 / done as f64);
        line.push_str(&format!(", about {} left", duration(left)));
    }
    line
}

/// `4 s`, `1 min 05 s`, `1 h 02 min`: a duration rounded to the second.
fn duration(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

/// How `contestant` was built; see [`builds`].
fn build_of(contestant: Contestant, binaries: &[(Contestant, PathBuf)], machine: &Machine) -> Build {
    let version = |name: &str| {
        machine
            .versions
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    match contestant {
        Contestant::Veth => Build {
            version: Some(format!("Linux {}", machine.kernel)),
            ..Build::default()
        },
        Contestant::WireguardGo => match env::find_program("wireguard-go") {
            Some(path) => builds::of_go_program(&path, version("wireguard-go")),
            None => Build::default(),
        },
        Contestant::Boringtun | Contestant::BoringtunOneThread => match boringtun_binary() {
            Some(path) => builds::of_installed_rust_program(&path, version("boringtun-cli")),
            None => Build::default(),
        },
        _ => match binaries.iter().find(|(c, _)| *c == contestant) {
            Some((_, path)) => builds::of_step(path, &machine.profile),
            None => Build::default(),
        },
    }
}

/// The figures of one round, as a short line for the progress output.
fn brief(figures: &[(Figure, f64)]) -> String {
    let get = |f: Figure| figures.iter().find(|(g, _)| *g == f).map(|(_, v)| *v);
    let mut parts = Vec::new();
    for (f, label, unit) in [
        (Figure::Tcp1, "TCP×1", "Gbit/s"),
        (Figure::Tcp4, "TCP×4", "Gbit/s"),
        (Figure::Udp, "UDP", "Gbit/s"),
        (Figure::RttIdleMean, "RTT", "ms"),
    ] {
        if let Some(v) = get(f) {
            parts.push(format!("{label} {v:.2} {unit}"));
        }
    }
    parts.join(", ")
}

/// Turns the rounds of one contestant into series, one per figure.
fn collect(runs: Vec<Round>) -> Outcome {
    let mut series: Vec<(Figure, Series)> = Figure::EVERY.iter().map(|&f| (f, Series::default())).collect();
    let mut failures = Vec::new();
    for run in runs {
        match run {
            Ok(figures) => {
                for (figure, value) in figures {
                    if let Some((_, s)) = series.iter_mut().find(|(f, _)| *f == figure) {
                        s.0.push(value);
                    }
                }
            }
            Err(why) => failures.push(why),
        }
    }
    Outcome::Measured { series, failures }
}

/// Starts `contestant`, measures it once, and stops it.
fn measure_once(
    bench: &Bench,
    contestant: Contestant,
    binary: Option<&Path>,
    options: &Options,
) -> anyhow::Result<Vec<(Figure, f64)>> {
    let mut started = start(bench, contestant, binary)?;
    let target = started.target.clone();
    let mut figures = Vec::new();
    let ping_interval = Duration::from_millis(10);

    // Wait until the tunnel carries traffic (the handshake, for the
    // encrypted ones), and a second more: the kernel goes on removing the
    // previous contestant's devices after its programs have exited, and
    // that work would land in this one's idle pings. Then 200 pings at
    // 10 ms.
    wait_until_up(bench, contestant, &target)?;
    thread::sleep(SETTLE);
    if contestant.carries_ping() {
        let idle = measure::ping(&bench.a, &target.address, 200, ping_interval)?;
        push_rtts(&mut figures, &idle, Figure::RttIdleMean, Figure::RttIdleP99)?;
    }

    // One TCP stream, with pings alongside it (the "loaded" RTT) and the
    // tunnel processes' CPU time read before and after.
    let cpu_before = started.cpu_seconds(bench.ticks)?;
    let counters_before = started.counters(contestant)?;
    let mut pinger = None;
    if contestant.carries_ping() {
        let count = (options.seconds * 1000 / 10).saturating_sub(50).max(10);
        pinger = Some(
            measure::ping_command(&bench.a, &target.address, count, ping_interval)
                .spawn()
                .context("starting ping")?,
        );
    }
    let tcp1 = measure::iperf3(&bench.a, &target, options.seconds, 1, None);
    let cpu_after = started.cpu_seconds(bench.ticks)?;
    let counters_after = started.counters(contestant)?;
    if let Some(pinger) = pinger {
        let out = pinger.wait_with_output().context("waiting for ping")?;
        let loaded = measure::parse_ping(&String::from_utf8_lossy(&out.stdout));
        push_rtts(&mut figures, &loaded, Figure::RttLoadMean, Figure::RttLoadP99)?;
    }
    let tcp1 = tcp1?;
    figures.push((Figure::Tcp1, tcp1.received_bps / 1e9));
    if contestant != Contestant::Veth && tcp1.received_bytes > 0.0 {
        figures.push((
            Figure::CpuPerGb,
            (cpu_after - cpu_before) / (tcp1.received_bytes / 1e9),
        ));
    }

    // ANCHOR: counters
    // Step 08's own counters over the same run, both ends together.
    if let (Some(before), Some(after)) = (counters_before, counters_after) {
        let (mut syscalls, mut packets, mut wakeups) = (0.0, 0.0, 0.0);
        for (b, a) in before.iter().zip(&after) {
            let d = a.since(b);
            syscalls += d.get("syscalls");
            packets += d.get("tun-in") + d.get("tun-out");
            wakeups += d.get("wakeups");
        }
        if packets > 0.0 {
            figures.push((Figure::SyscallsPer100, 100.0 * syscalls / packets));
        }
        if wakeups > 0.0 {
            figures.push((Figure::PacketsPerWakeup, packets / wakeups));
        }
    }
    // ANCHOR_END: counters

    let tcp4 = measure::iperf3(&bench.a, &target, options.seconds, 4, None)?;
    figures.push((Figure::Tcp4, tcp4.received_bps / 1e9));

    if options.udp_probes > 0 {
        let seconds = (options.seconds / 2).max(1);
        let best: Option<Iperf> =
            measure::udp_max_rate(&bench.a, &target, seconds, options.udp_probes, tcp1.received_bps)?;
        // No figure when even the lowest rate tried lost 1%.
        if let Some(best) = best {
            figures.push((Figure::Udp, best.received_bps / 1e9));
        }
    }

    if contestant != Contestant::Veth {
        started.check_alive()?;
        let rss: f64 = started
            .pids()
            .into_iter()
            .map(measure::peak_rss)
            .sum::<anyhow::Result<f64>>()?;
        figures.push((Figure::PeakRss, rss / (1024.0 * 1024.0)));
    }
    Ok(figures)
}

fn push_rtts(figures: &mut Vec<(Figure, f64)>, rtts: &Rtts, mean: Figure, p99: Figure) -> anyhow::Result<()> {
    match (rtts.mean(), rtts.p99()) {
        (Some(m), Some(p)) => {
            figures.push((mean, m));
            figures.push((p99, p));
            Ok(())
        }
        _ => bail!("no ping was answered"),
    }
}

/// Waits up to 10 s for the first ping to get through (for step 06, up to
/// 5 s for the public port to open).
fn wait_until_up(bench: &Bench, contestant: Contestant, target: &Target) -> anyhow::Result<()> {
    if !contestant.carries_ping() {
        // Step 06's server opens the public port once `expose` has
        // connected and asked for it.
        return bench.a.wait_for_listener(target.port);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let ping = bench
            .a
            .run("ping", ["-n", "-c", "1", "-W", "1", &target.address])?;
        if ping.status.success() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("{} carried nothing within 10 s", contestant.name())
}

/// Starts `contestant` on both hosts: `b` is the server end (where iperf3
/// listens), `a` the client end.
fn start(bench: &Bench, contestant: Contestant, binary: Option<&Path>) -> anyhow::Result<Started> {
    let n = contestant.number();
    let (a_inner, b_inner) = (format!("10.77.{n}.1"), format!("10.77.{n}.2"));
    let (a_tun, b_tun) = (format!("tl{n}a"), format!("tl{n}b"));
    let port = format!("{}", 51800 + u16::from(n));
    let log = |end: &str| bench.out.join(format!("{}-{end}.log", contestant.name()));
    let (a_underlay, b_underlay) = (underlay::CLIENT.to_string(), underlay::SERVER.to_string());
    let listen = format!("{b_underlay}:{port}");
    let target = |address: &str| Target {
        address: address.into(),
        port: IPERF_PORT,
    };
    let step = || binary.with_context(|| format!("{} has no binary", contestant.name()));
    match contestant {
        Contestant::Veth => Ok(Started {
            processes: Vec::new(),
            target: target(&b_underlay),
        }),
        Contestant::Step02 | Contestant::Step03 | Contestant::Step04 | Contestant::Step05 => {
            let binary = step()?;
            // The encrypted steps also take the keys: the server lists the
            // client's public key with its address.
            let encrypted = matches!(contestant, Contestant::Step04 | Contestant::Step05);
            let peer = format!("{}={a_inner}/32", bench.a_key.public);
            let (server_keys, client_keys) = if encrypted {
                (
                    vec!["--key", bench.b_key.file_str()?, "--peer", &peer],
                    vec![
                        "--key",
                        bench.a_key.file_str()?,
                        "--server-key",
                        &bench.b_key.public,
                    ],
                )
            } else {
                (Vec::new(), Vec::new())
            };
            let (b_address, a_address) = (format!("{b_inner}/24"), format!("{a_inner}/24"));
            let mut args = vec!["server", "--listen", &listen];
            args.extend(server_keys);
            args.extend(["--tun", &b_tun, "--address", &b_address]);
            let server = Running::start(&bench.b, binary, &args, &log("server"))?;
            let mut args = vec!["client", "--server", &listen];
            args.extend(client_keys);
            args.extend(["--tun", &a_tun, "--address", &a_address]);
            let client = Running::start(&bench.a, binary, &args, &log("client"))?;
            Ok(Started {
                processes: vec![server, client],
                target: target(&b_inner),
            })
        }
        Contestant::Step06 => {
            // The server end runs on `a`, where the visitor (iperf3's
            // client) is; `expose` runs on `b` and delivers to b's iperf3
            // on 127.0.0.1.
            let binary = step()?;
            let control = format!("{a_underlay}:{port}");
            let public = 45000 + u16::from(n);
            let server = Running::start(
                &bench.a,
                binary,
                &[
                    "server",
                    "--listen",
                    &control,
                    "--key",
                    bench.a_key.file_str()?,
                    "--peer",
                    &bench.b_key.public,
                ],
                &log("server"),
            )?;
            bench.a.wait_for_listener(51800 + u16::from(n))?;
            let expose = Running::start(
                &bench.b,
                binary,
                &[
                    "expose",
                    &IPERF_PORT.to_string(),
                    "--udp",
                    "--server",
                    &control,
                    "--key",
                    bench.b_key.file_str()?,
                    "--server-key",
                    &bench.a_key.public,
                    "--remote-port",
                    &public.to_string(),
                ],
                &log("expose"),
            )?;
            Ok(Started {
                processes: vec![server, expose],
                target: Target {
                    address: a_underlay.clone(),
                    port: public,
                },
            })
        }
        Contestant::Step07
        | Contestant::Step08(_)
        | Contestant::WireguardGo
        | Contestant::Boringtun
        | Contestant::BoringtunOneThread => {
            // The control sockets live in /var/run/wireguard/NAME.sock,
            // shared by all namespaces (and by other runs): the two ends
            // need different names, and this run's differ from another's.
            let run = std::process::id() % 100_000;
            let (a_tun, b_tun) = (format!("{a_tun}{run}"), format!("{b_tun}{run}"));
            let a_end = start_wireguard(contestant, binary, &bench.a, &a_tun, &log("a"))?;
            let b_end = start_wireguard(contestant, binary, &bench.b, &b_tun, &log("b"))?;
            let (a_port, b_port) = (51800 + u16::from(n), 51900 + u16::from(n));
            configure_wireguard(
                &bench.a,
                &a_tun,
                &bench.a_key,
                a_port,
                &bench.b_key.public,
                &b_inner,
                &format!("{b_underlay}:{b_port}"),
                &a_inner,
            )?;
            configure_wireguard(
                &bench.b,
                &b_tun,
                &bench.b_key,
                b_port,
                &bench.a_key.public,
                &a_inner,
                &format!("{a_underlay}:{a_port}"),
                &b_inner,
            )?;
            Ok(Started {
                processes: vec![a_end, b_end],
                target: target(&b_inner),
            })
        }
    }
}

/// Starts step 07, wireguard-go or boringtun-cli in the foreground in
/// `host` (`binary` is step 07's), and waits for its control socket.
fn start_wireguard(
    contestant: Contestant,
    binary: Option<&Path>,
    host: &Host,
    name: &str,
    log: &Path,
) -> anyhow::Result<Running> {
    let socket = PathBuf::from(format!("/var/run/wireguard/{name}.sock"));
    // A run that was killed leaves its socket behind; ours must be new.
    let _ = std::fs::remove_file(&socket);
    let running = match contestant {
        Contestant::WireguardGo => Running::start(host, Path::new("wireguard-go"), &["-f", name], log)?,
        Contestant::Step07 => {
            let binary = binary.context("step07 has no binary")?;
            Running::start(host, binary, &["-f", name], log)?
        }
        Contestant::Step08(techniques) => {
            let binary = binary.context("step08 has no binary")?;
            let mut args = vec!["-f"];
            args.extend(techniques.args());
            args.push(name);
            Running::start(host, binary, &args, log)?
        }
        _ => {
            let binary = boringtun_binary().context("boringtun-cli is not installed")?;
            let threads = if contestant == Contestant::BoringtunOneThread {
                "1"
            } else {
                "4"
            };
            Running::start(
                host,
                &binary,
                &["-f", "--disable-drop-privileges", "--threads", threads, name],
                log,
            )?
        }
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() {
        if Instant::now() > deadline {
            bail!(
                "{} made no control socket {} within 5 s",
                contestant.name(),
                socket.display()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(running)
}

/// `wg set` and `ip` for one WireGuard end: key, port, the one peer, the
/// address and MTU 1420 (wg-quick's default).
#[allow(clippy::too_many_arguments)]
fn configure_wireguard(
    host: &Host,
    name: &str,
    key: &KeyPair,
    port: u16,
    peer: &str,
    peer_inner: &str,
    endpoint: &str,
    inner: &str,
) -> anyhow::Result<()> {
    let out = host.run(
        "wg",
        [
            "set",
            name,
            "private-key",
            key.file_str()?,
            "listen-port",
            &port.to_string(),
            "peer",
            peer,
            "allowed-ips",
            &format!("{peer_inner}/32"),
            "endpoint",
            endpoint,
        ],
    )?;
    if !out.status.success() {
        bail!(
            "wg set {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    host.add_address(name, &format!("{inner}/24"))?;
    host.ip(["link", "set", name, "mtu", "1420", "up"])?;
    Ok(())
}

/// The machine: CPUs, CPU model, kernel, and the versions of what ran.
fn machine(binaries: &[(Contestant, PathBuf)]) -> anyhow::Result<Machine> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let profile = binaries
        .first()
        .and_then(|(_, p)| p.parent()?.file_name()?.to_str().map(str::to_string))
        .map(|dir| if dir == "debug" { "dev".to_string() } else { dir })
        .unwrap_or_else(|| "none".into());
    let mut versions = vec![(
        "iperf3".to_string(),
        first_word_after(&version_of("iperf3", &["--version"]), "iperf"),
    )];
    if env::on_path("wireguard-go") {
        versions.push((
            "wireguard-go".into(),
            version_of("wireguard-go", &["--version"])
                .split_whitespace()
                .nth(1)
                .unwrap_or("?")
                .into(),
        ));
    }
    if let Some(boringtun) = boringtun_binary() {
        let text = version_of(&boringtun.to_string_lossy(), &["--version"]);
        versions.push((
            "boringtun-cli".into(),
            text.split_whitespace().last().unwrap_or("?").into(),
        ));
    }
    Ok(Machine {
        cpus: thread::available_parallelism().map_or(1, usize::from),
        cpu_model,
        kernel,
        profile,
        versions,
    })
}

fn version_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default()
}

/// `3.12` from `iperf 3.12 (cJSON 1.7.15)`.
fn first_word_after(text: &str, word: &str) -> String {
    text.split_whitespace()
        .skip_while(|w| *w != word)
        .nth(1)
        .unwrap_or("?")
        .to_string()
}

/// `2026-11-23 18:04 UTC`, from `date -u`.
fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_and_estimates_from_the_mean() {
        let line = progress_line(0, 6, "veth", 1, Duration::ZERO);
        assert_eq!(line, "[1/6] veth, round 1: 0 s so far");
        // Two measurements took 80 s: the four left should take 160 s.
        let line = progress_line(2, 6, "step04", 1, Duration::from_secs(80));
        assert_eq!(
            line,
            "[3/6] step04, round 1: 1 min 20 s so far, about 2 min 40 s left"
        );
        // The performance chapter's example: 2 of 18 took 72 s, so 16
        // more should take 8 times as long.
        let line = progress_line(2, 18, "step04", 1, Duration::from_secs(72));
        assert_eq!(
            line,
            "[3/18] step04, round 1: 1 min 12 s so far, about 9 min 36 s left"
        );
        let line = progress_line(5, 6, "boringtun", 2, Duration::from_secs(3000));
        assert_eq!(
            line,
            "[6/6] boringtun, round 2: 50 min 00 s so far, about 10 min 00 s left"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Duration::from_millis(4400)), "4 s");
        assert_eq!(duration(Duration::from_secs(65)), "1 min 05 s");
        assert_eq!(duration(Duration::from_secs(3720)), "1 h 02 min");
    }

    #[test]
    fn only_what_is_measured_is_built() {
        let chosen = select(&["veth".into(), "step02".into()], &Contestant::ALL).unwrap();
        assert_eq!(
            binaries(&chosen),
            [
                ("step02-plain-tunnel", "step02-plain-tunnel"),
                ("step04-crypto", "step04-crypto")
            ]
        );
        assert_eq!(
            binaries(&[Contestant::Step04]),
            [("step04-crypto", "step04-crypto")]
        );
        assert!(select(&["step9".into()], &Contestant::ALL).is_err());
    }
}
