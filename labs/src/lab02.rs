//! Lab 02: a plaintext tunnel between two hosts.
//!
//! Hosts `client` (192.0.2.2) and `server` (192.0.2.1) share a veth link,
//! the underlay. `step02-plain-tunnel` runs on both, with tunnel addresses
//! 10.0.0.2 and 10.0.0.1. The lab runs once over the UDP transport and once
//! over TCP: ping both ways, a 10 MB transfer with nc checked by sha256,
//! iperf3 for 5 s, and (over UDP) a capture of the underlay in which the
//! inner ping's payload is plainly readable.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

use crate::captures::checksums_verify;
use crate::doctor::{Kernel, Needs};
use crate::env;
use crate::labs::{Options, Shell};
use crate::netns::Host;
use crate::process::{Capture, CaptureOptions, Running, Session, path_arg};
use crate::report::Report;
use crate::topology::{self, Net, TUN, TUNNEL_PORT, tunnel, underlay};
use crate::traffic::{PATTERN, iperf3, nc_transfer, write_random};

pub const PACKAGE: &str = "step02-plain-tunnel";
/// What the lab needs from the machine.
pub const NEEDS: Needs = Needs {
    tools: &["ip", "ss", "ping", "tcpdump", "nc", "iperf3", "sha256sum"],
    kernel: &[Kernel::Tun, Kernel::Netns, Kernel::Veth],
    binaries: &[(PACKAGE, PACKAGE), ("tunlab", "tunlab-relay")],
};
/// Size of the file sent through the tunnel.
pub const TRANSFER_BYTES: usize = 10 * 1024 * 1024;
/// What recording the fixtures needs besides: turning off checksum
/// offload on the veths.
pub const FIXTURE_TOOLS: &[&str] = &["ethtool"];

/// The two hosts, each with step 02 running. Drops in field order.
pub struct Up {
    /// A capture of the underlay from before either end started, if asked.
    pub underlay: Option<Capture>,
    pub server_step: Running,
    pub client_step: Running,
    /// The impairment relay, when there is one.
    pub relay: Option<Running>,
    pub server: Host,
    pub client: Host,
    _net: Net,
}

/// Builds the two hosts and the underlay, and starts the tunnel's two ends
/// over `transport` (`udp` or `tcp`) as `session` says, with their files in
/// `out`.
pub fn up(out: &Path, transport: &str, session: &Session<'_>, report: &mut Report) -> anyhow::Result<Up> {
    if session.offload_off {
        env::require_tools(FIXTURE_TOOLS)?;
    }
    let binary = env::step_binary(PACKAGE)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let spec = topology::two_hosts();
    let net = spec.build()?;
    if session.offload_off {
        spec.tx_offload_off(&net)?;
    }
    let (server, client) = (net.host("server")?, net.host("client")?);
    report.note(format!(
        "underlay: server {} ({}) <-> client {} ({})",
        underlay::SERVER,
        server.netns(),
        underlay::CLIENT,
        client.netns()
    ));
    let underlay = session.capture(&server, "veth0", &CaptureOptions::default())?;

    let tag = session.tag;
    let listen = SocketAddr::new(underlay::SERVER.into(), TUNNEL_PORT);
    let pcap = |side: &str| -> anyhow::Result<Vec<String>> {
        if !session.record {
            return Ok(Vec::new());
        }
        let path = out.join(format!("{side}-{tag}-tun.pcap"));
        Ok(vec!["--pcap".into(), path_arg(&path)?])
    };
    let address = tunnel::cidr(tunnel::SERVER).to_string();
    let mut args: Vec<String> = [
        "server",
        "--listen",
        &listen.to_string(),
        "--address",
        &address,
        "--transport",
        transport,
    ]
    .map(String::from)
    .into();
    args.extend(pcap("server")?);
    let mut server_step = Running::start(&server, &binary, &args, &out.join(format!("server-{tag}.log")))?;
    server_step.wait_for_tun(TUN, &address)?;

    let (relay, to) = session.start_relay(&server, transport, listen, out)?;
    let address = tunnel::cidr(tunnel::CLIENT).to_string();
    let mut args: Vec<String> = [
        "client",
        "--server",
        &to.to_string(),
        "--address",
        &address,
        "--transport",
        transport,
        "--keepalive",
        "25",
    ]
    .map(String::from)
    .into();
    args.extend(pcap("client")?);
    let mut client_step = Running::start(&client, &binary, &args, &out.join(format!("client-{tag}.log")))?;
    client_step.wait_for_tun(TUN, &address)?;
    client_step.wait_for_answer()?;
    report.note(format!("started {PACKAGE} server and client over {transport}"));
    Ok(Up {
        underlay,
        server_step,
        client_step,
        relay,
        server,
        client,
        _net: net,
    })
}

/// `tunlab shell 02`: both ends over UDP, the shell in the client.
pub fn shell(out: &Path, report: &mut Report) -> anyhow::Result<Shell> {
    let up = up(out, "udp", &Session::new("udp"), report)?;
    let client = up.client.clone();
    Ok(Shell::new(up, client))
}

/// Runs lab 02 over UDP, then over TCP.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new(options.quiet);
    let data = options.out.join("random-10MB.bin");
    std::fs::create_dir_all(&options.out)?;
    write_random(&data, TRANSFER_BYTES)?;
    for transport in ["udp", "tcp"] {
        run_transport(&options.out, transport, &data, &mut report)?;
    }
    meltdown(&options.out, &mut report)?;
    if options.fixtures {
        record_fixtures(&options.out, &mut report)?;
    }
    report.note(format!("captures and logs are in {}", options.out.display()));
    Ok(report)
}

fn run_transport(out: &Path, transport: &str, data: &Path, report: &mut Report) -> anyhow::Result<()> {
    let mut lab = up(out, transport, &Session::new(transport), report)?;
    let underlay = out.join(format!("underlay-{transport}.pcap"));
    let capture = Capture::start(&lab.server, "veth0", &underlay)?;

    ping_both_ways(&lab, transport, 3, report)?;
    capture.finish()?;
    let bytes = std::fs::read(&underlay)?;
    let visible = bytes.windows(6).filter(|w| w == b"tunlab").count();
    report.check(
        format!("{transport}: the ping payload is readable on the underlay"),
        visible > 0,
        format!("\"tunlab\" appears {visible} times in {}", underlay.display()),
    );

    // 10 MB through the tunnel, client to server.
    let (same, secs) = transfer(&lab, data, &out.join(format!("received-{transport}.bin")), 60)?;
    report.check(
        format!("{transport}: 10 MB sent with nc arrive intact (sha256 matches)"),
        same,
        format!(
            "{:.2} s, {:.0} Mbit/s",
            secs,
            TRANSFER_BYTES as f64 * 8.0 / secs / 1e6
        ),
    );

    // iperf3 for 5 seconds.
    let (ran, receiver) = iperf3(&lab.server, &lab.client, tunnel::SERVER)?;
    report.check(
        format!("{transport}: iperf3 ran for 5 s through the tunnel"),
        ran,
        receiver,
    );

    for (step, name) in [(&mut lab.client_step, "client"), (&mut lab.server_step, "server")] {
        step.stop_checked(report, format!("{transport}: {name} exits cleanly on SIGTERM"))?;
    }
    for (host, name) in [(&lab.client, "client"), (&lab.server, "server")] {
        report.check(
            format!("{transport}: {name}'s {TUN} is gone"),
            !host.has_link(TUN),
            "",
        );
    }
    Ok(())
}

/// The pings of a session: client to server first (over UDP the server
/// learns the client's address from it), then server to client.
fn ping_both_ways(lab: &Up, transport: &str, count: u32, report: &mut Report) -> anyhow::Result<()> {
    for (from, to, name) in [
        (&lab.client, tunnel::SERVER, "client -> server"),
        (&lab.server, tunnel::CLIENT, "server -> client"),
    ] {
        let check = format!("{transport}: ping {name} ({to})");
        from.ping_check(report, check, to, count, &["-p", PATTERN])?;
    }
    Ok(())
}

/// A short UDP session, two pings each way, recorded on the underlay and
/// on both TUN devices: the golden fixtures in `pcaps/step02/`. Transmit
/// checksum offload is off on both veths, so the underlay capture carries
/// real UDP checksums.
fn record_fixtures(out: &Path, report: &mut Report) -> anyhow::Result<()> {
    let dir = out.join("fixtures");
    let underlay = dir.join("underlay-udp.pcap");
    let session = Session {
        underlay: Some(&underlay),
        offload_off: true,
        ..Session::new("udp")
    };
    let mut lab = up(&dir, "udp", &session, report)?;
    ping_both_ways(&lab, "fixtures", 2, report)?;
    lab.underlay.take().context("no underlay capture")?.finish()?;
    lab.client_step.stop(Signal::SIGTERM, Duration::from_secs(5))?;
    lab.server_step.stop(Signal::SIGTERM, Duration::from_secs(5))?;
    checksums_verify(
        "fixtures: every checksum in underlay.pcap verifies",
        &underlay,
        report,
    )?;
    let pcaps = env::fixtures_dir("step02")?;
    for (from, to) in [
        ("underlay-udp.pcap", "underlay.pcap"),
        ("server-udp-tun.pcap", "server-tun.pcap"),
        ("client-udp-tun.pcap", "client-tun.pcap"),
    ] {
        std::fs::copy(dir.join(from), pcaps.join(to)).with_context(|| format!("copying {from}"))?;
    }
    report.note(format!("recorded the fixtures in {}", pcaps.display()));
    Ok(())
}

/// A link condition of the meltdown experiment.
#[derive(Debug, Clone, Copy)]
pub struct Condition {
    pub name: &'static str,
    /// The relay's impairment spec (see [`crate::relay::Impairments`]).
    pub impair: &'static str,
}

/// The conditions the experiment compares, each with both transports.
pub const CONDITIONS: &[Condition] = &[
    Condition {
        name: "clean link",
        impair: "none",
    },
    Condition {
        name: "2% loss, 20 ms each way",
        impair: "loss=0.02,delay=20ms,seed=7",
    },
];

/// Bytes moved in each run of the meltdown experiment.
pub const MELTDOWN_BYTES: usize = 2 * 1024 * 1024;
/// The longest one transfer may take before it counts as stalled.
pub const MELTDOWN_TIMEOUT_SECS: u32 = 90;

/// One run of the experiment: how long the transfer took, if it finished
/// intact.
#[derive(Debug, Clone)]
pub struct Timing {
    pub condition: &'static str,
    pub transport: &'static str,
    pub seconds: Option<f64>,
}

// ANCHOR: meltdown
/// TCP-over-TCP meltdown: the same transfer over the UDP transport and over
/// the TCP transport, on a clean link and on a lossy, slow one. The relay
/// (`tunlab-relay`, in the server host) is the bad link: the client's end
/// talks to it, and it talks to the server's end.
pub fn meltdown(out: &Path, report: &mut Report) -> anyhow::Result<Vec<Timing>> {
    let data = out.join("random-meltdown.bin");
    write_random(&data, MELTDOWN_BYTES)?;
    let mut timings = Vec::new();
    for condition in CONDITIONS {
        for transport in ["udp", "tcp"] {
            let seconds = meltdown_run(out, &data, condition, transport, report)?;
            report.check(
                format!(
                    "meltdown: {transport} transport, {}: the transfer arrives intact",
                    condition.name
                ),
                seconds.is_some(),
                seconds.map_or(format!("not within {MELTDOWN_TIMEOUT_SECS} s"), |s| {
                    format!("{s:.2} s")
                }),
            );
            timings.push(Timing {
                condition: condition.name,
                transport,
                seconds,
            });
        }
    }
    report.note(format!(
        "time to move {} MB through the tunnel:",
        MELTDOWN_BYTES >> 20
    ));
    report.note(format!(
        "{:<28} {:>14} {:>14}",
        "link", "UDP transport", "TCP transport"
    ));
    for condition in CONDITIONS {
        let cell = |transport: &str| {
            let t = timings
                .iter()
                .find(|t| t.condition == condition.name && t.transport == transport);
            match t.and_then(|t| t.seconds) {
                Some(s) => format!("{s:.2} s"),
                None => "stalled".to_string(),
            }
        };
        report.note(format!(
            "{:<28} {:>14} {:>14}",
            condition.name,
            cell("udp"),
            cell("tcp")
        ));
    }
    Ok(timings)
}
// ANCHOR_END: meltdown

/// One transfer through the relay; `None` if it did not arrive intact in
/// time.
fn meltdown_run(
    out: &Path,
    data: &Path,
    condition: &Condition,
    transport: &'static str,
    report: &mut Report,
) -> anyhow::Result<Option<f64>> {
    let tag = format!(
        "meltdown-{transport}-{}",
        if condition.impair == "none" {
            "clean"
        } else {
            "lossy"
        }
    );
    let session = Session {
        record: false,
        relay: Some(condition.impair),
        ..Session::new(&tag)
    };
    let lab = up(out, transport, &session, report)?;
    // One ping to be sure the tunnel carries traffic before the clock starts
    // (-w: keep trying for up to 10 s, a lossy link may eat the first).
    let to = tunnel::SERVER.to_string();
    let ping = lab
        .client
        .ping_with(["-n", "-c", "1", "-w", "10", &to].map(String::from).into())?;
    if !ping.success {
        report.note(format!("{tag}: the tunnel did not carry a ping"));
        return Ok(None);
    }
    let received = out.join(format!("received-{tag}.bin"));
    let (intact, seconds) = transfer(&lab, data, &received, MELTDOWN_TIMEOUT_SECS)?;
    Ok(intact.then_some(seconds))
}

/// Sends `data` from the client to the server (10.0.0.1) through the
/// tunnel with nc; returns whether it arrived intact and how long it took.
fn transfer(lab: &Up, data: &Path, received: &Path, timeout: u32) -> anyhow::Result<(bool, f64)> {
    nc_transfer(&lab.client, &lab.server, tunnel::SERVER, data, received, timeout)
}
