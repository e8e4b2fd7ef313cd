//! Lab 03: IPv6 inside and outside the tunnel, and keeping packets within
//! the tunnel's MTU.
//!
//! Part one: hosts `client` (2001:db8::2) and `server` (2001:db8::1) on one
//! IPv6 link; `step03-ipv6` runs on both with dual-stack tunnel addresses
//! (10.0.0.x and fd00::x). Pings of both families both ways, curl over IPv6
//! through the tunnel, iperf3 -6, and tshark finds no bad checksum in what
//! either TUN device carried.
//!
//! Part two: a `router` between them, whose link to the server has an MTU
//! of only 1400. The tunnel is told so (`--underlay-mtu 1400`) but the TUN
//! devices keep an MTU of 1500, as when the path shrinks behind your back.
//! TCP still works at full size thanks to MSS clamping (the SYN the server
//! sees carries the lowered MSS), and a too-large ping gets "fragmentation
//! needed" / "packet too big" back from the tunnel.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use etherparse::{TcpOptionElement, TcpSlice};
use nix::sys::signal::Signal;

use crate::env;
use crate::lab01::wait_for_tun;
use crate::lab02::wait_for_answer;
use crate::netns::{Host, Topology};
use crate::process::Running;
use crate::report::Report;
use crate::traffic::{iperf3, ping_counts, sha256, wait_for_listener, write_random};

pub const TOOLS: &[&str] = &[
    "ip",
    "ping",
    "curl",
    "iperf3",
    "tshark",
    "python3",
    "sha256sum",
    "ss",
];
pub const PACKAGE: &str = "step03-ipv6";
pub const TUN: &str = "tun0";
/// The link MTU between the router and the server in part two.
pub const SMALL_MTU: u16 = 1400;
/// Size of the file downloaded over HTTP through the tunnel.
pub const DOWNLOAD_BYTES: usize = 4 * 1024 * 1024;

pub fn default_out() -> PathBuf {
    env::workspace_root().join("target").join("tunlab").join("lab03")
}

pub use crate::labs::Options;

/// The lab's hosts with the tunnel up. Drops in field order.
pub struct Up {
    pub server_step: Running,
    pub client_step: Running,
    pub server: Host,
    pub client: Host,
    pub router: Option<Host>,
    _topology: Topology,
}

/// Builds the hosts and starts both ends. `routed`: part two's path through
/// a router with a small link MTU.
pub fn up(out: &Path, routed: bool, report: &mut Report) -> anyhow::Result<Up> {
    env::require_tools(TOOLS)?;
    let binary = env::step_binary(PACKAGE)?;
    std::fs::create_dir_all(out)?;
    let mut topology = Topology::new()?;
    let server = topology.host("server")?;
    let client = topology.host("client")?;
    let (server_ip, router) = if routed {
        let router = topology.host("router")?;
        topology.link(&client, "veth0", &router, "veth-c")?;
        topology.link(&router, "veth-s", &server, "veth0")?;
        client.add_address("veth0", "2001:db8:1::2/64")?;
        router.add_address("veth-c", "2001:db8:1::1/64")?;
        router.add_address("veth-s", "2001:db8:2::1/64")?;
        server.add_address("veth0", "2001:db8:2::2/64")?;
        for (host, dev) in [(&router, "veth-s"), (&server, "veth0")] {
            host.ip(["link", "set", dev, "mtu", &SMALL_MTU.to_string()])?;
        }
        client.ip(["-6", "route", "add", "default", "via", "2001:db8:1::1"])?;
        server.ip(["-6", "route", "add", "default", "via", "2001:db8:2::1"])?;
        // Inside the router's own namespace: gone with it.
        router.run("sysctl", ["-q", "-w", "net.ipv6.conf.all.forwarding=1"])?;
        report.note(format!(
            "client 2001:db8:1::2 -- router -- (MTU {SMALL_MTU}) -- server 2001:db8:2::2 ({}, {}, {})",
            client.netns(),
            router.netns(),
            server.netns()
        ));
        ("2001:db8:2::2", Some(router))
    } else {
        topology.link(&server, "veth0", &client, "veth0")?;
        server.add_address("veth0", "2001:db8::1/64")?;
        client.add_address("veth0", "2001:db8::2/64")?;
        report.note(format!(
            "client 2001:db8::2 -- server 2001:db8::1 ({}, {})",
            client.netns(),
            server.netns()
        ));
        ("2001:db8::1", None)
    };
    let tag = if routed { "routed" } else { "direct" };
    let mut extra: Vec<&str> = Vec::new();
    if routed {
        extra.extend(["--underlay-mtu", "1400", "--mtu", "1500"]);
    }
    let server_log = out.join(format!("{tag}-server.log"));
    let server_pcap = out.join(format!("{tag}-server-tun.pcap"));
    let mut args = vec![
        "server",
        "--listen",
        "[::]:51820",
        "--address",
        "10.0.0.1/24",
        "--address",
        "fd00::1/64",
    ];
    args.extend(["--pcap", server_pcap.to_str().context("path is not UTF-8")?]);
    args.extend(&extra);
    let mut server_step = Running::start(&server, &binary, &args, &server_log)?;
    wait_for_tun(&server, &mut server_step, &server_log, TUN, "10.0.0.1/24")?;
    let client_log = out.join(format!("{tag}-client.log"));
    let client_pcap = out.join(format!("{tag}-client-tun.pcap"));
    let server_addr = format!("[{server_ip}]:51820");
    let mut args = vec![
        "client",
        "--server",
        &server_addr,
        "--address",
        "10.0.0.2/24",
        "--address",
        "fd00::2/64",
    ];
    args.extend(["--pcap", client_pcap.to_str().context("path is not UTF-8")?]);
    args.extend(&extra);
    let mut client_step = Running::start(&client, &binary, &args, &client_log)?;
    wait_for_tun(&client, &mut client_step, &client_log, TUN, "10.0.0.2/24")?;
    wait_for_answer(&mut client_step, &client_log)?;
    Ok(Up {
        server_step,
        client_step,
        server,
        client,
        router,
        _topology: topology,
    })
}

/// Runs both parts of lab 03.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new(options.quiet);
    std::fs::create_dir_all(&options.out)?;
    direct(&options.out, &mut report)?;
    routed(&options.out, &mut report)?;
    if options.fixtures {
        record_fixtures(&options.out, &mut report)?;
    }
    report.note(format!("captures and logs are in {}", options.out.display()));
    Ok(report)
}

fn ping(report: &mut Report, from: &Host, args: &[&str], what: String) -> anyhow::Result<()> {
    let mut all = vec!["-n", "-c", "3", "-i", "0.2", "-W", "2"];
    all.extend_from_slice(args);
    let out = from.run("ping", &all)?;
    let counts = ping_counts(&String::from_utf8_lossy(&out.stdout));
    report.check(
        what,
        counts == Some((3, 3)),
        counts.map_or("no summary from ping".into(), |(s, r)| {
            format!("{s} sent, {r} received")
        }),
    );
    Ok(())
}

/// Part one: one IPv6 link.
fn direct(out: &Path, report: &mut Report) -> anyhow::Result<()> {
    let mut lab = up(out, false, report)?;
    for (from, name, v4, v6) in [
        (&lab.client, "client -> server", "10.0.0.1", "fd00::1"),
        (&lab.server, "server -> client", "10.0.0.2", "fd00::2"),
    ] {
        ping(
            report,
            from,
            &[v4],
            format!("ping {name} ({v4}) over an IPv6 underlay"),
        )?;
        ping(
            report,
            from,
            &["-6", v6],
            format!("ping -6 {name} ({v6}) over an IPv6 underlay"),
        )?;
    }
    let www = out.join("www");
    std::fs::create_dir_all(&www)?;
    write_random(&www.join("big.bin"), DOWNLOAD_BYTES)?;
    let (got, secs) = http_download(&lab, &www, out)?;
    report.check(
        "curl over IPv6 through the tunnel fetches the file intact",
        got,
        format!("{} MB in {secs:.2} s", DOWNLOAD_BYTES >> 20),
    );
    let (ran, receiver) = iperf3(&lab.server, &lab.client, "fd00::1")?;
    report.check("iperf3 -6 ran for 5 s through the tunnel", ran, receiver);
    stop(&mut lab, "direct", report)?;
    for side in ["server", "client"] {
        let pcap = out.join(format!("direct-{side}-tun.pcap"));
        let bad = bad_checksums(&pcap)?;
        report.check(
            format!("tshark finds no bad checksum on the {side}'s TUN"),
            bad.is_empty(),
            bad.join("; "),
        );
    }
    Ok(())
}

/// Part two: through a router with a small link MTU.
fn routed(out: &Path, report: &mut Report) -> anyhow::Result<()> {
    let mut lab = up(out, true, report)?;
    let www = out.join("www");
    let (got, secs) = http_download(&lab, &www, out)?;
    report.check(
        format!("curl through a path of MTU {SMALL_MTU} fetches the file intact"),
        got,
        format!("{} MB in {secs:.2} s", DOWNLOAD_BYTES >> 20),
    );
    // 1400 bytes of data + 8 + 20 = 1428 > 1348, the most the tunnel carries
    // here (1400 - 40 - 8 - 4). With DF (-M do), the tunnel answers.
    for (args, want) in [
        (&["-M", "do", "-s", "1400", "10.0.0.1"][..], "mtu = 1348"),
        (&["-6", "-M", "do", "-s", "1400", "fd00::1"][..], "mtu=1348"),
    ] {
        let mut all = vec!["-n", "-c", "2", "-i", "0.5", "-W", "2"];
        all.extend_from_slice(args);
        let ping = lab.client.run("ping", &all)?;
        let text = String::from_utf8_lossy(&ping.stdout).to_string() + &String::from_utf8_lossy(&ping.stderr);
        let line = text
            .lines()
            .find(|l| l.contains("mtu") && (l.contains("Frag needed") || l.contains("too big")))
            .unwrap_or("")
            .trim()
            .to_string();
        report.check(
            format!("ping {}: the tunnel answers that it is too big", args.join(" ")),
            line.contains(want),
            if line.is_empty() {
                text.lines().last().unwrap_or("").to_string()
            } else {
                line
            },
        );
    }
    stop(&mut lab, "routed", report)?;
    for side in ["server", "client"] {
        let pcap = out.join(format!("routed-{side}-tun.pcap"));
        let bad = bad_checksums(&pcap)?;
        report.check(
            format!("routed: tshark finds no bad checksum on the {side}'s TUN (clamped SYNs, ICMP errors)"),
            bad.is_empty(),
            bad.join("; "),
        );
    }
    let pcap = out.join("routed-server-tun.pcap");
    let mss = syn_mss(&pcap)?;
    // fd00:: TCP over the tunnel: 1348 - 40 - 20 = 1288.
    report.check(
        "the SYN the server's TUN receives carries the clamped MSS",
        !mss.is_empty() && mss.iter().all(|&m| m <= 1288),
        format!("MSS of the SYNs: {mss:?} (the client's kernel offered 1440)"),
    );
    Ok(())
}

/// Serves `www` from the server over HTTP on fd00::1 and downloads its
/// big.bin from the client; true when it arrived intact.
fn http_download(lab: &Up, www: &Path, out: &Path) -> anyhow::Result<(bool, f64)> {
    let www_str = www.to_str().context("path is not UTF-8")?;
    let mut http = lab
        .server
        .command("python3")
        .args([
            "-m",
            "http.server",
            "8000",
            "--bind",
            "fd00::1",
            "--directory",
            www_str,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting python3 -m http.server")?;
    let result = (|| {
        wait_for_listener(&lab.server, 8000)?;
        let got = out.join("downloaded.bin");
        let started = std::time::Instant::now();
        let curl = lab.client.run(
            "curl",
            [
                "-g",
                "-s",
                "-S",
                "--max-time",
                "60",
                "-o",
                got.to_str().unwrap_or(""),
                "http://[fd00::1]:8000/big.bin",
            ],
        )?;
        let secs = started.elapsed().as_secs_f64();
        let intact = curl.status.success() && sha256(&got)? == sha256(&www.join("big.bin"))?;
        let _ = std::fs::remove_file(&got);
        anyhow::Ok((intact, secs))
    })();
    let _ = http.kill();
    let _ = http.wait();
    result
}

fn stop(lab: &mut Up, tag: &str, report: &mut Report) -> anyhow::Result<()> {
    for (step, name) in [(&mut lab.client_step, "client"), (&mut lab.server_step, "server")] {
        let status = step.stop(Signal::SIGTERM, Duration::from_secs(5))?;
        report.check(
            format!("{tag}: {name} exits cleanly on SIGTERM"),
            status.success(),
            status.to_string(),
        );
    }
    Ok(())
}

/// Lines of tshark's verdict on every checksum it can check in `pcap`: the
/// packets whose checksum is bad. Empty when all are good.
///
/// A checksum is a property of one packet, so TCP's sequence analysis and
/// stream reassembly are turned off: on a capture of 100 MB of iperf3 with
/// retransmissions they can cost tshark minutes. It gets two minutes at
/// most all the same.
pub fn bad_checksums(pcap: &Path) -> anyhow::Result<Vec<String>> {
    let out = std::process::Command::new("timeout")
        .args(["120", "tshark", "-n", "-r"])
        .arg(pcap)
        .args([
            "-o",
            "tcp.analyze_sequence_numbers:FALSE",
            "-o",
            "tcp.desegment_tcp_streams:FALSE",
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-Y",
            // Linux writes 0xffff where a TCP checksum folds to 0 (the two
            // are the same number in one's complement, and both verify:
            // RFC 1624 §3); Wireshark marks exactly that case with
            // `tcp.checksum.ffff`, "0xffff instead of 0x0000", and calls
            // it bad. It is not, so only that case is let through.
            "ip.checksum.status == \"Bad\" || (tcp.checksum.status == \"Bad\" && !tcp.checksum.ffff) \
             || udp.checksum.status == \"Bad\" || icmp.checksum.status == \"Bad\" \
             || icmpv6.checksum.status == \"Bad\"",
        ])
        .output()
        .context("running tshark")?;
    if out.status.code() == Some(124) {
        bail!("tshark took more than 120 s on {}", pcap.display());
    }
    if !out.status.success() {
        bail!(
            "tshark failed on {}: {}",
            pcap.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// The MSS option of every TCP SYN (without ACK) in a TUN capture.
pub fn syn_mss(pcap: &Path) -> anyhow::Result<Vec<u16>> {
    let mut mss = Vec::new();
    for packet in step01_ping_tun::pcap::read(pcap)? {
        let Ok(ip) = etherparse::IpSlice::from_slice(&packet.data) else {
            continue;
        };
        let Ok(tcp) = TcpSlice::from_slice(ip.payload().payload) else {
            continue;
        };
        // The SYN that opens a connection (no ACK), not the SYN-ACK.
        if !tcp.syn() || tcp.ack() {
            continue;
        }
        for option in tcp.options_iterator().flatten() {
            if let TcpOptionElement::MaximumSegmentSize(m) = option {
                mss.push(m);
            }
        }
    }
    Ok(mss)
}

/// Short sessions for the golden fixtures in `pcaps/step03/`:
/// `respond.pcap` (step 03's responder answering ping and ping -6),
/// `routed-client-tun.pcap` and `routed-server-tun.pcap` (a small HTTP
/// fetch whose SYN gets clamped, and pings too big for the tunnel answered
/// with ICMP errors).
fn record_fixtures(out: &Path, report: &mut Report) -> anyhow::Result<()> {
    let dir = out.join("fixtures");
    std::fs::create_dir_all(&dir)?;
    let pcaps = env::workspace_root().join("pcaps").join("step03");
    std::fs::create_dir_all(&pcaps)?;

    // The responder, in a host of its own.
    {
        let binary = env::step_binary(PACKAGE)?;
        let mut topology = Topology::new()?;
        let host = topology.host("host")?;
        let pcap = dir.join("respond.pcap");
        let log = dir.join("respond.log");
        let args = [
            "respond",
            "--address",
            "10.0.0.1/24",
            "--address",
            "fd00::1/64",
            "--pcap",
            pcap.to_str().context("path is not UTF-8")?,
        ];
        let mut step = Running::start(&host, &binary, &args, &log)?;
        wait_for_tun(&host, &mut step, &log, TUN, "10.0.0.1/24")?;
        ping(
            report,
            &host,
            &["10.0.0.2"],
            "fixtures: ping 10.0.0.2 answered by respond".into(),
        )?;
        ping(
            report,
            &host,
            &["-6", "fd00::2"],
            "fixtures: ping -6 fd00::2 answered by respond".into(),
        )?;
        ping(
            report,
            &host,
            &["-6", "-s", "1200", "fd00::3"],
            "fixtures: ping -6 -s 1200 fd00::3".into(),
        )?;
        step.stop(Signal::SIGTERM, Duration::from_secs(5))?;
        std::fs::copy(&pcap, pcaps.join("respond.pcap"))?;
    }

    // The routed path: a small fetch and pings too big for the tunnel.
    let mut lab = up(&dir, true, report)?;
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("big.bin"), vec![b'x'; 3000])?;
    let (got, _) = http_download(&lab, &www, &dir)?;
    report.check("fixtures: a small fetch over the routed path", got, "");
    for args in [
        &["-M", "do", "-s", "1400", "10.0.0.1"][..],
        &["-6", "-M", "do", "-s", "1400", "fd00::1"][..],
    ] {
        let mut all = vec!["-n", "-c", "1", "-W", "1"];
        all.extend_from_slice(args);
        lab.client.run("ping", &all)?;
    }
    stop(&mut lab, "fixtures", report)?;
    for side in ["client", "server"] {
        let name = format!("routed-{side}-tun.pcap");
        std::fs::copy(dir.join(&name), pcaps.join(&name)).with_context(|| format!("copying {name}"))?;
    }
    report.note(format!("recorded the fixtures in {}", pcaps.display()));
    Ok(())
}
