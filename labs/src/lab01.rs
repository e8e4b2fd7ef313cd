//! Lab 01: a TUN device whose program answers ping.
//!
//! One lab host. In it, `step01-ping-tun` creates tun0 with 10.0.0.1/24,
//! and the real Linux `ping` pings addresses of that subnet while tcpdump
//! records tun0. Pings to 10.0.0.1 are answered by the kernel and never
//! cross tun0; pings to any other address of 10.0.0.0/24 are routed into
//! tun0 and answered by our program.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etherparse::{Icmpv4Slice, Icmpv4Type, IpNumber, Ipv4Slice};
use nix::sys::signal::Signal;
use step01_ping_tun::Summary;
use step01_ping_tun::checksum::verify;
use step01_ping_tun::pcap::{self, Captured};

use crate::env;
use crate::netns::{Host, Topology};
use crate::process::{Capture, Running};
use crate::report::Report;
use crate::traffic::ping_counts;

/// The tools this lab runs.
pub const TOOLS: &[&str] = &["ip", "ping", "tcpdump"];
pub const PACKAGE: &str = "step01-ping-tun";
pub const TUN: &str = "tun0";
pub const ADDRESS: &str = "10.0.0.1/24";
/// Pings per scenario.
pub const COUNT: u32 = 3;

/// One run of `ping`, recorded on tun0.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Also the name of its capture file, `<name>.pcap`.
    pub name: &'static str,
    /// Options for ping besides the count and interval.
    pub options: &'static [&'static str],
    pub target: Ipv4Addr,
    /// Whether our program answers (false: the kernel does).
    pub ours: bool,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "ping-default",
        options: &[],
        target: Ipv4Addr::new(10, 0, 0, 2),
        ours: true,
    },
    Scenario {
        name: "ping-s0",
        options: &["-s", "0"],
        target: Ipv4Addr::new(10, 0, 0, 2),
        ours: true,
    },
    Scenario {
        name: "ping-s1400",
        options: &["-s", "1400"],
        target: Ipv4Addr::new(10, 0, 0, 2),
        ours: true,
    },
    // 1472 bytes of data + 8 of ICMP header + 20 of IPv4 header = 1500, the MTU.
    Scenario {
        name: "ping-s1472",
        options: &["-s", "1472"],
        target: Ipv4Addr::new(10, 0, 0, 2),
        ours: true,
    },
    // The pattern is the bytes of "tunlab", repeated through the payload.
    Scenario {
        name: "ping-pattern",
        options: &["-p", "74756e6c6162"],
        target: Ipv4Addr::new(10, 0, 0, 2),
        ours: true,
    },
    Scenario {
        name: "ping-other-address",
        options: &[],
        target: Ipv4Addr::new(10, 0, 0, 200),
        ours: true,
    },
    // -R adds the record-route IP option: a request with IHL > 5.
    Scenario {
        name: "ping-record-route",
        options: &["-R"],
        target: Ipv4Addr::new(10, 0, 0, 2),
        ours: true,
    },
    Scenario {
        name: "ping-kernel",
        options: &[],
        target: Ipv4Addr::new(10, 0, 0, 1),
        ours: false,
    },
];

/// Where lab 01 keeps its files unless told otherwise.
pub fn default_out() -> PathBuf {
    env::workspace_root().join("target").join("tunlab").join("lab01")
}

/// The lab host with step 01 running in it. Dropping it stops the program
/// and deletes the host.
pub struct Up {
    // Fields drop in order: the program first, then the namespace.
    pub step: Running,
    pub host: Host,
    pub log: PathBuf,
    _topology: Topology,
}

/// Builds the lab host and starts step 01 in it, with its log and its own
/// `--pcap` recording in `out`.
pub fn up(out: &Path, report: &mut Report) -> anyhow::Result<Up> {
    env::require_tools(TOOLS)?;
    let binary = env::step_binary(PACKAGE)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut topology = Topology::new()?;
    let host = topology.host("host")?;
    report.note(format!("lab host `host` is network namespace {}", host.netns()));
    let log = out.join("step01.log");
    let recording = out.join("step01.pcap");
    let recording = recording.to_str().context("output path is not UTF-8")?;
    let args = ["--tun", TUN, "--address", ADDRESS, "--pcap", recording, "-v"];
    let mut step = Running::start(&host, &binary, &args, &log)?;
    report.note(format!(
        "started {PACKAGE} {} (pid {})",
        args.join(" "),
        step.pid().unwrap_or(0)
    ));
    wait_for_tun(&host, &mut step, &log, TUN, ADDRESS)?;
    Ok(Up {
        step,
        host,
        log,
        _topology: topology,
    })
}

/// Waits until `step` has brought `tun` up with `address` in `host`; fails
/// with the program's log if it exits first, or after 10 s.
pub fn wait_for_tun(
    host: &Host,
    step: &mut Running,
    log: &Path,
    tun: &str,
    address: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Err(e) = step.check_alive() {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{e:#}; its log:\n{said}");
        }
        let addr = host
            .ip(["-o", "-4", "addr", "show", "dev", tun])
            .unwrap_or_default();
        let link = host.ip(["-o", "link", "show", "dev", tun]).unwrap_or_default();
        if addr.contains(&format!("inet {address}")) && link.contains(",UP") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{tun} in {} did not come up with {address} within 10 s",
                host.name()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a capture on tun0 shows about one ping scenario.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// IPv4 ICMP packets of any kind.
    pub icmp: usize,
    pub requests: usize,
    pub replies: usize,
    /// Replies whose IPv4 and ICMP checksums verify and whose source,
    /// identifier, sequence number and data match a request.
    pub good_replies: usize,
    /// Requests that carried IP options (IHL > 5).
    pub requests_with_options: usize,
    /// Replies that carried IP options.
    pub replies_with_options: usize,
}

/// Reads the echo requests to `target` and the replies from it in `packets`.
pub fn examine(packets: &[Captured], target: Ipv4Addr) -> Seen {
    let mut seen = Seen::default();
    let mut requests: HashMap<(u16, u16), (Ipv4Addr, &[u8])> = HashMap::new();
    for packet in packets {
        let Ok(ip) = Ipv4Slice::from_slice(&packet.data) else {
            continue;
        };
        if ip.payload_ip_number() != IpNumber::ICMP {
            continue;
        }
        seen.icmp += 1;
        let Ok(icmp) = Icmpv4Slice::from_slice(ip.payload().payload) else {
            continue;
        };
        let h = ip.header();
        let options = h.ihl() > 5;
        match icmp.icmp_type() {
            Icmpv4Type::EchoRequest(e) if h.destination_addr() == target => {
                seen.requests += 1;
                seen.requests_with_options += usize::from(options);
                requests.insert((e.id, e.seq), (h.source_addr(), icmp.payload()));
            }
            Icmpv4Type::EchoReply(e) if h.source_addr() == target => {
                seen.replies += 1;
                seen.replies_with_options += usize::from(options);
                let checksums = verify(h.slice()) && verify(ip.payload().payload);
                let matches = requests
                    .get(&(e.id, e.seq))
                    .is_some_and(|&(from, data)| from == h.destination_addr() && data == icmp.payload());
                seen.good_replies += usize::from(checksums && matches);
            }
            _ => {}
        }
    }
    seen
}

pub use crate::labs::Options;

/// Runs lab 01 and returns its checks.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new(options.quiet);
    let out = &options.out;
    let mut lab = up(out, &mut report)?;
    report.check(format!("{TUN} is up with {ADDRESS}"), true, "");
    let mut answered = 0;
    for scenario in SCENARIOS {
        let file = out.join(format!("{}.pcap", scenario.name));
        let capture = Capture::start(&lab.host, TUN, &file)?;
        let count = COUNT.to_string();
        let mut args = vec!["-n", "-c", &count, "-i", "0.2", "-W", "2"];
        args.extend_from_slice(scenario.options);
        let target = scenario.target.to_string();
        args.push(&target);
        let ping = lab.host.run("ping", &args)?;
        capture.finish()?;
        let stdout = String::from_utf8_lossy(&ping.stdout);
        let counts = ping_counts(&stdout);
        report.check(
            format!("{}: ping {}", scenario.name, args.join(" ")),
            counts == Some((COUNT, COUNT)),
            match counts {
                Some((sent, got)) => format!("{sent} sent, {got} received"),
                None => format!(
                    "no summary from ping: {}",
                    String::from_utf8_lossy(&ping.stderr).trim()
                ),
            },
        );
        let packets = pcap::read(&file)?;
        for p in packets.iter().take(8) {
            report.note(Summary(&p.data));
        }
        let seen = examine(&packets, scenario.target);
        if scenario.ours {
            answered += seen.good_replies;
            let n = COUNT as usize;
            report.check(
                format!(
                    "{}: tun0 carried {n} requests and {n} correct replies",
                    scenario.name
                ),
                seen.requests == n && seen.replies == n && seen.good_replies == n,
                format!(
                    "{} requests, {} replies, {} with good checksums matching their request",
                    seen.requests, seen.replies, seen.good_replies
                ),
            );
            if !scenario.options.contains(&"-R") {
                continue;
            }
            report.check(
                format!(
                    "{}: requests carry IP options, replies have a plain header",
                    scenario.name
                ),
                seen.requests_with_options == n && seen.replies_with_options == 0,
                format!(
                    "{} requests with options, {} replies with options",
                    seen.requests_with_options, seen.replies_with_options
                ),
            );
        } else {
            report.check(
                format!("{}: nothing crossed tun0 (the kernel answered)", scenario.name),
                seen.icmp == 0,
                format!("{} ICMP packets on tun0", seen.icmp),
            );
        }
    }

    let status = lab.step.stop(Signal::SIGTERM, Duration::from_secs(5))?;
    report.check(
        format!("{PACKAGE} exits cleanly on SIGTERM"),
        status.success(),
        status.to_string(),
    );
    let log = std::fs::read_to_string(&lab.log).unwrap_or_default();
    let counters = log
        .lines()
        .find(|l| l.starts_with(&format!("{TUN}: replies ")))
        .unwrap_or("");
    let want = format!("{TUN}: replies {answered},");
    report.check(
        "the counters printed on exit count every reply",
        answered > 0 && counters.starts_with(&want),
        if counters.is_empty() {
            "no counters line in step01.log".to_string()
        } else {
            counters.to_string()
        },
    );
    let gone = lab.host.ip(["link", "show", "dev", TUN]).is_err();
    report.check(format!("{TUN} is gone after the program exits"), gone, "");

    if options.fixtures {
        let dir = env::workspace_root().join("pcaps").join("step01");
        std::fs::create_dir_all(&dir)?;
        for scenario in SCENARIOS {
            let name = format!("{}.pcap", scenario.name);
            std::fs::copy(out.join(&name), dir.join(&name)).with_context(|| format!("copying {name}"))?;
        }
        // The program's own recording of the whole run: every scenario, and
        // the IPv6 packets it dropped when tun0 came up.
        std::fs::copy(out.join("step01.pcap"), dir.join("session.pcap")).context("copying step01.pcap")?;
        report.note(format!("copied the captures to {}", dir.display()));
    }
    report.note(format!("captures and the program's log are in {}", out.display()));
    drop(lab);
    Ok(report)
}
