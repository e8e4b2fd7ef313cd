//! Lab 01: a TUN device whose program answers ping.
//!
//! One lab host. In it, `step01-ping-tun` creates tun0 with 10.0.0.1/24,
//! and the real Linux `ping` pings addresses of that subnet while tcpdump
//! records tun0. Pings to 10.0.0.1 are answered by the kernel and never
//! cross tun0; pings to any other address of 10.0.0.0/24 are routed into
//! tun0 and answered by our program.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Context;
use etherparse::{Icmpv4Slice, Icmpv4Type, IpNumber, Ipv4Slice};
use step01_ping_tun::Summary;
use step01_ping_tun::checksum::verify;
use step01_ping_tun::pcap::{self, Captured};

use crate::doctor::{Kernel, Needs};
use crate::env;
use crate::labs::{Options, Shell};
use crate::netns::Host;
use crate::process::{Capture, Running};
use crate::report::Report;
use crate::topology::{self, Net, TUN, tunnel};

pub const PACKAGE: &str = "step01-ping-tun";
/// What the lab needs from the machine.
pub const NEEDS: Needs = Needs {
    tools: &["ip", "ping", "tcpdump"],
    kernel: &[Kernel::Tun, Kernel::Netns],
    binaries: &[(PACKAGE, PACKAGE)],
};
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
        target: tunnel::CLIENT,
        ours: true,
    },
    Scenario {
        name: "ping-s0",
        options: &["-s", "0"],
        target: tunnel::CLIENT,
        ours: true,
    },
    Scenario {
        name: "ping-s1400",
        options: &["-s", "1400"],
        target: tunnel::CLIENT,
        ours: true,
    },
    // 1472 bytes of data + 8 of ICMP header + 20 of IPv4 header = 1500, the MTU.
    Scenario {
        name: "ping-s1472",
        options: &["-s", "1472"],
        target: tunnel::CLIENT,
        ours: true,
    },
    // The pattern is the bytes of "tunlab", repeated through the payload.
    Scenario {
        name: "ping-pattern",
        options: &["-p", "74756e6c6162"],
        target: tunnel::CLIENT,
        ours: true,
    },
    Scenario {
        name: "ping-other-address",
        options: &[],
        target: tunnel::ELSEWHERE,
        ours: true,
    },
    // -R adds the record-route IP option: a request with IHL > 5.
    Scenario {
        name: "ping-record-route",
        options: &["-R"],
        target: tunnel::CLIENT,
        ours: true,
    },
    Scenario {
        name: "ping-kernel",
        options: &[],
        target: tunnel::SERVER,
        ours: false,
    },
];

/// The lab host with step 01 running in it. Dropping it stops the program
/// and deletes the host.
pub struct Up {
    // Fields drop in order: the program first, then the namespace.
    pub step: Running,
    pub host: Host,
    _net: Net,
}

/// Builds the lab host and starts step 01 in it, with its log and its own
/// `--pcap` recording in `out`.
pub fn up(out: &Path, report: &mut Report) -> anyhow::Result<Up> {
    let binary = env::step_binary(PACKAGE)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let net = topology::one_host().build()?;
    let host = net.host("host")?;
    report.note(format!("lab host `host` is network namespace {}", host.netns()));
    let recording = out.join("step01.pcap");
    let recording = recording.to_str().context("output path is not UTF-8")?;
    let address = tunnel::cidr(tunnel::SERVER).to_string();
    let args = ["--tun", TUN, "--address", &address, "--pcap", recording, "-v"];
    let mut step = Running::start(&host, &binary, &args, &out.join("step01.log"))?;
    report.note(format!(
        "started {PACKAGE} {} (pid {})",
        args.join(" "),
        step.pid().unwrap_or(0)
    ));
    step.wait_for_tun(TUN, &address)?;
    Ok(Up {
        step,
        host,
        _net: net,
    })
}

/// `tunlab shell 01`: the lab host with step 01 running.
pub fn shell(out: &Path, report: &mut Report) -> anyhow::Result<Shell> {
    let up = up(out, report)?;
    let host = up.host.clone();
    Ok(Shell::new(up, host))
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

/// Runs lab 01 and returns its checks.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new(options.quiet);
    let out = &options.out;
    let mut lab = up(out, &mut report)?;
    report.check(
        format!("{TUN} is up with {}", tunnel::cidr(tunnel::SERVER)),
        true,
        "",
    );
    let mut answered = 0;
    for scenario in SCENARIOS {
        let file = out.join(format!("{}.pcap", scenario.name));
        let capture = Capture::start(&lab.host, TUN, &file)?;
        let ping = lab.host.ping(scenario.target, COUNT, scenario.options)?;
        capture.finish()?;
        report.check(
            format!("{}: ping {}", scenario.name, ping.args.join(" ")),
            ping.all_answered(COUNT),
            match ping.counts {
                Some(_) => ping.to_string(),
                None => format!("no summary from ping: {}", ping.stderr.trim()),
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

    lab.step
        .stop_checked(&mut report, format!("{PACKAGE} exits cleanly on SIGTERM"))?;
    let log = lab.step.log_text();
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
    report.check(
        format!("{TUN} is gone after the program exits"),
        !lab.host.has_link(TUN),
        "",
    );

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
