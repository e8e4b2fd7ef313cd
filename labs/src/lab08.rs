//! Lab 08: the fast path.
//!
//! Step 08 is step 07 with a new I/O shell, so it must pass step 07's
//! interoperability checks ([`crate::wgpeers`]: wireguard-go and boringtun
//! in both roles, and the flood of initiations) with every technique on.
//! Then, with step 08 at both ends of the tunlab–wggo link:
//!
//! - **offload**: the kernel hands step 08 TCP super-packets (tcpdump on
//!   its TUN device sees packets longer than the MTU), step 08 sends UDP
//!   GSO messages and the other end receives GRO messages and writes
//!   coalesced super-packets, as its counters say;
//! - **fallback**: on a path whose MTU is smaller than the datagrams, the
//!   kernel refuses UDP GSO; step 08 notices, sends them one by one (the
//!   kernel fragments them), and the transfer does not notice;
//! - **the exercise**: iperf3 through step 07, then through step 08 with
//!   the techniques added one at a time. The student predicts each step's
//!   effect before the run; the lab prints the throughput and what the
//!   counters say (system calls per packet, packets per wake-up) and checks
//!   that each flag really turned its technique on or off. Speed is not
//!   checked: it is the benchmark's business.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use crate::doctor::{Kernel, Needs};
use crate::env;
use crate::labs::{Options, Shell};
use crate::process::{Capture, CaptureOptions, Running};
use crate::report::Report;
use crate::steplog::FastPath;
use crate::topology::wireguard;
use crate::traffic::{iperf3, nc_transfer, write_random};
use crate::wgpeers::{
    self, Lab, PEER_PORT, Peer, TRANSFER_BYTES, TUNLAB_PORT, Tunnel, wait_for_socket, wg_set,
};

pub const PACKAGE: &str = "step08-fast-path";
/// Step 07, the exercise's first row.
pub const STEP07: &str = "step07-wireguard";
pub const NEEDS: Needs = Needs {
    tools: &[
        "ip",
        "ss",
        "ping",
        "tcpdump",
        "nc",
        "iperf3",
        "python3",
        "sha256sum",
        "wg",
        "wireguard-go",
        "boringtun-cli",
    ],
    kernel: &[Kernel::Tun, Kernel::Netns, Kernel::Veth],
    binaries: &[(PACKAGE, PACKAGE), (STEP07, STEP07)],
};
/// The tunnel's MTU in every session of the lab.
const MTU: usize = 1420;

fn tunnel() -> anyhow::Result<Tunnel> {
    Ok(Tunnel {
        name: "step 08",
        tag: "step08",
        binary: env::step_binary(PACKAGE)?,
        args: Vec::new(),
        prefix: "s8",
    })
}

pub fn shell(out: &Path, report: &mut Report) -> anyhow::Result<Shell> {
    wgpeers::shell(out, report, tunnel()?)
}

/// Runs lab 08.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new(options.quiet);
    let lab = wgpeers::up(&options.out, &mut report, tunnel()?)?;
    let data = options.out.join("random-20MB.bin");
    write_random(&data, TRANSFER_BYTES)?;
    wgpeers::interop_all(&lab, &data, &mut report)?;
    for peer in Peer::ALL {
        wgpeers::flood(&lab, peer, &mut report)?;
    }
    offload(&lab, &mut report)?;
    fallback(&lab, &data, &mut report)?;
    exercise(&lab, &mut report)?;
    report.note(format!(
        "captures, counters and logs are in {}",
        options.out.display()
    ));
    Ok(report)
}

/// Two ends of ours over the tunlab–wggo link: `near` on tunlab (10.0.0.1,
/// the iperf3 client), `far` on wggo (10.0.0.2).
struct Pair {
    near: Running,
    far: Running,
    near_if: String,
    far_if: String,
}

impl Pair {
    /// Starts `binary` with `args` at both ends, configures them with `wg`
    /// (as the sessions with the other implementations are), brings the
    /// interfaces up and waits for the first ping through.
    fn start(lab: &Lab, binary: &Path, args: &[&str], tag: &str, n: usize) -> anyhow::Result<Self> {
        let far_host = far_host(lab)?;
        let (near_if, far_if) = (format!("s8n{}{n}", lab.run), format!("s8f{}{n}", lab.run));
        let start = |host, name: &str, end: &str| -> anyhow::Result<Running> {
            let _ = std::fs::remove_file(wgpeers::socket(name));
            let mut all: Vec<String> = vec!["-f".into()];
            all.extend(args.iter().map(|a| a.to_string()));
            all.push(name.to_string());
            let log = lab.out.join(format!("{tag}-{end}.log"));
            let running = Running::start(host, binary, &all, &log)?;
            wait_for_socket(name)?;
            Ok(running)
        };
        let near = start(&lab.tunlab, &near_if, "near")?;
        let far = start(far_host, &far_if, "far")?;
        let psk = lab.psk.path()?;
        wg_set(
            far_host,
            &far_if,
            &lab.peer_key,
            PEER_PORT,
            &lab.tunlab_key.public,
            &psk,
            &format!("{}/32", wireguard::TUNLAB_INNER),
            &[],
        )?;
        let endpoint = format!("{}:{PEER_PORT}", wireguard::WGGO);
        wg_set(
            &lab.tunlab,
            &near_if,
            &lab.tunlab_key,
            TUNLAB_PORT,
            &lab.peer_key.public,
            &psk,
            &format!("{}/32", wireguard::PEER_INNER),
            &["endpoint", &endpoint],
        )?;
        for (host, name, address) in [
            (&lab.tunlab, &near_if, wireguard::TUNLAB_INNER),
            (far_host, &far_if, wireguard::PEER_INNER),
        ] {
            host.ip(["address", "add", &format!("{address}/24"), "dev", name])?;
            host.ip(["link", "set", name, "mtu", &MTU.to_string(), "up"])?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lab
            .tunlab
            .ping(wireguard::PEER_INNER, 1, &["-W", "1"])?
            .all_answered(1)
        {
            if Instant::now() > deadline {
                bail!("{tag}: no ping through the tunnel within 10 s");
            }
        }
        Ok(Self {
            near,
            far,
            near_if,
            far_if,
        })
    }

    /// Both ends' counters (step 08 only).
    fn counters(&self) -> anyhow::Result<(FastPath, FastPath)> {
        Ok((self.near.fast_path()?, self.far.fast_path()?))
    }

    fn stop(mut self) {
        let _ = self.near.stop(Signal::SIGTERM, Duration::from_secs(5));
        let _ = self.far.stop(Signal::SIGTERM, Duration::from_secs(5));
    }
}

fn far_host(lab: &Lab) -> anyhow::Result<&crate::netns::Host> {
    lab.peers
        .iter()
        .find(|(p, _)| *p == Peer::WireguardGo)
        .map(|(_, h)| h)
        .context("no host wggo")
}

/// iperf3 TCP from near to far for 5 s: whether it ran, and Gbit/s.
fn transfer(lab: &Lab) -> anyhow::Result<(bool, f64, String)> {
    let (ok, line) = iperf3(far_host(lab)?, &lab.tunlab, wireguard::PEER_INNER)?;
    // `[  5]   0.00-5.04  sec   512 MBytes   853 Mbits/sec   receiver`
    let words: Vec<&str> = line.split_whitespace().collect();
    let mbits = words
        .iter()
        .position(|w| *w == "Mbits/sec")
        .and_then(|i| words.get(i.checked_sub(1)?)?.parse::<f64>().ok())
        .unwrap_or(0.0);
    Ok((ok, mbits / 1000.0, line))
}

/// How long each captured packet was on the wire (the record's original
/// length: the capture keeps only the headers, so pcap-file, which wants
/// each record whole, does not read it).
fn packet_lengths(pcap: &Path) -> anyhow::Result<Vec<usize>> {
    let bytes = std::fs::read(pcap).with_context(|| format!("reading {}", pcap.display()))?;
    let u32_at = |at: usize, le: bool| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as usize)
    };
    let le = match bytes.get(..4) {
        Some([0xd4, 0xc3, 0xb2, 0xa1]) => true,
        Some([0xa1, 0xb2, 0xc3, 0xd4]) => false,
        _ => bail!("{} is not a pcap file", pcap.display()),
    };
    let mut lengths = Vec::new();
    let mut at = 24;
    while let (Some(included), Some(original)) = (u32_at(at + 8, le), u32_at(at + 12, le)) {
        lengths.push(original);
        at += 16 + included;
    }
    Ok(lengths)
}

/// A capture of the packets longer than the MTU on a TUN device.
fn capture_super_packets(host: &crate::netns::Host, dev: &str, path: &Path) -> anyhow::Result<Capture> {
    Capture::start_with(
        host,
        dev,
        path,
        &CaptureOptions {
            filter: Some(format!("greater {}", MTU + 1)),
            snaplen: Some(96),
            ..CaptureOptions::bulk()
        },
    )
}

// ANCHOR: offload
/// Offloads in use, seen from outside (tcpdump on the TUN devices) and
/// from the step's counters.
fn offload(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let binary = env::step_binary(PACKAGE)?;
    let pair = Pair::start(lab, &binary, &[], "offload", 1)?;
    let near_pcap = lab.out.join("offload-near-tun.pcap");
    let far_pcap = lab.out.join("offload-far-tun.pcap");
    let near_cap = capture_super_packets(&lab.tunlab, &pair.near_if, &near_pcap)?;
    let far_cap = capture_super_packets(far_host(lab)?, &pair.far_if, &far_pcap)?;
    let (near0, far0) = pair.counters()?;
    let (ok, gbits, _) = transfer(lab)?;
    let (near1, far1) = pair.counters()?;
    let (near, far) = (near1.since(&near0), far1.since(&far0));
    near_cap.finish()?;
    far_cap.finish()?;
    let (sent, written) = (packet_lengths(&near_pcap)?, packet_lengths(&far_pcap)?);
    let largest = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
    report.check(
        "offload: the kernel hands step 08 TCP super-packets (tcpdump on its TUN device sees packets longer than the MTU)",
        ok && !sent.is_empty() && near.get("super-in") > 0.0,
        format!(
            "{} packets over {MTU} bytes, the largest {} bytes; step 08 read {} super-packets holding {} packets",
            sent.len(),
            largest(&sent),
            near.get("super-in"),
            near.get("tun-in")
        ),
    );
    report.check(
        "offload: step 08 sends UDP GSO messages, several datagrams each",
        near.get("gso-out") > 0.0,
        format!(
            "{} datagrams in {} send calls, {} of them GSO messages",
            near.get("udp-out"),
            near.get("udp-sends"),
            near.get("gso-out")
        ),
    );
    report.check(
        "offload: the other end receives UDP GRO messages and writes coalesced super-packets to its TUN device",
        far.get("gro-in") > 0.0 && !written.is_empty() && far.get("tun-writes") < far.get("tun-out"),
        format!(
            "{} GRO messages; {} packets written in {} writes, {} of them over {MTU} bytes (the largest {} bytes)",
            far.get("gro-in"),
            far.get("tun-out"),
            far.get("tun-writes"),
            written.len(),
            largest(&written)
        ),
    );
    report.note(format!(
        "offload: {gbits:.2} Gbit/s; the sender made {:.1} system calls per 100 packets, {:.0} packets per wake-up",
        100.0 * near.get("syscalls") / near.get("tun-in").max(1.0),
        near.get("packets-per-wakeup")
    ));
    pair.stop();
    Ok(())
}
// ANCHOR_END: offload

// ANCHOR: fallback
/// A path whose MTU is smaller than step 08's datagrams (the veth at 1400
/// bytes, the tunnel's MTU still 1420): the kernel refuses to segment
/// them (EMSGSIZE), since each datagram would have to be fragmented.
/// Step 08 must notice and send them one by one, which the kernel
/// fragments, and the data must still arrive intact.
fn fallback(lab: &Lab, data: &Path, report: &mut Report) -> anyhow::Result<()> {
    let binary = env::step_binary(PACKAGE)?;
    let veth = "veth0";
    lab.tunlab.set_mtu(veth, 1400)?;
    let result = (|| -> anyhow::Result<()> {
        let pair = Pair::start(lab, &binary, &[], "fallback", 2)?;
        let (near0, _) = pair.counters()?;
        let received = lab.out.join("fallback-received.bin");
        let (intact, secs) = nc_transfer(
            &lab.tunlab,
            far_host(lab)?,
            wireguard::PEER_INNER,
            data,
            &received,
            60,
        )?;
        let _ = std::fs::remove_file(&received);
        let (near1, _) = pair.counters()?;
        let near = near1.since(&near0);
        report.check(
            "fallback: on a path with a smaller MTU the kernel refuses UDP GSO, and step 08 sends the datagrams one by one",
            intact && near.get("gso-fallbacks") > 0.0,
            format!(
                "20 MB intact in {secs:.1} s; {} GSO sends refused and sent again one datagram at a time, {} accepted",
                near.get("gso-fallbacks"),
                near.get("gso-out")
            ),
        );
        pair.stop();
        Ok(())
    })();
    lab.tunlab.set_mtu(veth, 1500)?;
    result
}
// ANCHOR_END: fallback

/// One row of the exercise: a name, the binary and its arguments, and
/// which techniques it uses (the counters must agree).
struct Config {
    name: &'static str,
    binary: &'static str,
    args: &'static [&'static str],
    mmsg: bool,
    offload: bool,
    gso: bool,
    gro: bool,
}

// ANCHOR: configs
/// Step 07, then step 08 with the techniques added one at a time.
const CONFIGS: &[Config] = &[
    Config {
        name: "step 07",
        binary: STEP07,
        args: &[],
        mmsg: false,
        offload: false,
        gso: false,
        gro: false,
    },
    Config {
        name: "step 08, all off",
        binary: PACKAGE,
        args: &[
            "--threads",
            "1",
            "--no-mmsg",
            "--no-offload",
            "--no-gso",
            "--no-gro",
        ],
        mmsg: false,
        offload: false,
        gso: false,
        gro: false,
    },
    Config {
        name: "+ mmsg",
        binary: PACKAGE,
        args: &["--threads", "1", "--no-offload", "--no-gso", "--no-gro"],
        mmsg: true,
        offload: false,
        gso: false,
        gro: false,
    },
    Config {
        name: "+ TUN offload",
        binary: PACKAGE,
        args: &["--threads", "1", "--no-gso", "--no-gro"],
        mmsg: true,
        offload: true,
        gso: false,
        gro: false,
    },
    Config {
        name: "+ UDP GSO",
        binary: PACKAGE,
        args: &["--threads", "1", "--no-gro"],
        mmsg: true,
        offload: true,
        gso: true,
        gro: false,
    },
    Config {
        name: "+ UDP GRO",
        binary: PACKAGE,
        args: &["--threads", "1"],
        mmsg: true,
        offload: true,
        gso: true,
        gro: true,
    },
    Config {
        name: "+ a worker per CPU",
        binary: PACKAGE,
        args: &[],
        mmsg: true,
        offload: true,
        gso: true,
        gro: true,
    },
];
// ANCHOR_END: configs

// ANCHOR: exercise
/// The exercise: each configuration in turn, its throughput and
/// counters in a table, and a check that its flags did what they say.
fn exercise(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    report.note("exercise: iperf3 TCP, 5 s, 10.0.0.1 -> 10.0.0.2, both ends the same program");
    report.note(format!(
        "{:<20} {:>7} {:>14} {:>13} {:>9} {:>8} {:>7}",
        "configuration", "Gbit/s", "syscalls/100p", "packets/wake", "super-in", "gso-out", "gro-in"
    ));
    for (n, c) in CONFIGS.iter().enumerate() {
        let binary: PathBuf = env::step_binary(c.binary)?;
        let tag = format!("exercise-{n}");
        let pair = Pair::start(lab, &binary, c.args, &tag, 3 + n)?;
        let step08 = c.binary == PACKAGE;
        let before = if step08 { Some(pair.counters()?) } else { None };
        let (ok, gbits, _) = transfer(lab)?;
        let after = if step08 { Some(pair.counters()?) } else { None };
        let row = match (before, after) {
            (Some((n0, f0)), Some((n1, f1))) => {
                let (near, far) = (n1.since(&n0), f1.since(&f0));
                let both = |k: &str| near.get(k) + far.get(k);
                let packets = both("tun-in") + both("tun-out");
                let wakeups = both("wakeups").max(1.0);
                report.note(format!(
                    "{:<20} {gbits:>7.2} {:>14.1} {:>13.1} {:>9} {:>8} {:>7}",
                    c.name,
                    100.0 * both("syscalls") / packets.max(1.0),
                    packets / wakeups,
                    near.get("super-in"),
                    near.get("gso-out"),
                    far.get("gro-in"),
                ));
                // What the counters must say, flag by flag.
                // Without mmsg (and GSO), one datagram per send call;
                // with it, more.
                let one_per_call = near.get("udp-sends") >= near.get("udp-out");
                let agrees = (near.get("super-in") > 0.0) == c.offload
                    && (near.get("gso-out") > 0.0) == c.gso
                    && (far.get("gro-in") > 0.0) == (c.gro && c.gso)
                    && if c.mmsg {
                        c.gso || !one_per_call
                    } else {
                        one_per_call
                    };
                Some((agrees, near, far))
            }
            _ => {
                report.note(format!(
                    "{:<20} {gbits:>7.2} {:>14} {:>13} {:>9} {:>8} {:>7}",
                    c.name, "-", "-", "-", "-", "-"
                ));
                None
            }
        };
        let workers = pair.near.log_line("worker(s)").unwrap_or_default();
        report.check(
            format!("exercise, {}: iperf3 runs through{}", c.name, if step08 { " and the counters show exactly the techniques its flags leave on" } else { "" }),
            ok && row.as_ref().is_none_or(|(agrees, _, _)| *agrees),
            match &row {
                Some((_, near, far)) => format!(
                    "{gbits:.2} Gbit/s; sender: {} udp-out in {} udp-sends, {} super-in, {} gso-out; receiver: {} gro-in; {}",
                    near.get("udp-out"),
                    near.get("udp-sends"),
                    near.get("super-in"),
                    near.get("gso-out"),
                    far.get("gro-in"),
                    workers.split("is up with ").nth(1).and_then(|w| w.split(';').next()).unwrap_or("").trim()
                ),
                None => format!("{gbits:.2} Gbit/s"),
            },
        );
        pair.stop();
    }
    Ok(())
}
// ANCHOR_END: exercise
