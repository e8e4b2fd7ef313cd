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

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use etherparse::{TcpOptionElement, TcpSlice};
use nix::sys::signal::Signal;

use crate::captures::tshark_bad_checksums;
use crate::doctor::{Kernel, Needs};
use crate::env;
use crate::labs::{Options, Shell};
use crate::netns::Host;
use crate::process::{Running, path_arg};
use crate::report::Report;
use crate::topology::{self, Net, ROUTED_MTU, TUN, TUNNEL_PORT, tunnel, underlay};
use crate::traffic::{iperf3, sha256, write_random};

pub const PACKAGE: &str = "step03-ipv6";
/// What the lab needs from the machine.
pub const NEEDS: Needs = Needs {
    tools: &[
        "ip",
        "ping",
        "curl",
        "iperf3",
        "tshark",
        "python3",
        "sha256sum",
        "ss",
    ],
    kernel: &[Kernel::Tun, Kernel::Netns, Kernel::Veth],
    binaries: &[(PACKAGE, PACKAGE)],
};
/// Size of the file downloaded over HTTP through the tunnel.
pub const DOWNLOAD_BYTES: usize = 4 * 1024 * 1024;

/// The lab's hosts with the tunnel up. Drops in field order.
pub struct Up {
    pub server_step: Running,
    pub client_step: Running,
    pub server: Host,
    pub client: Host,
    pub router: Option<Host>,
    _net: Net,
}

/// Builds the hosts and starts both ends. `routed`: part two's path through
/// a router with a small link MTU.
pub fn up(out: &Path, routed: bool, report: &mut Report) -> anyhow::Result<Up> {
    let binary = env::step_binary(PACKAGE)?;
    std::fs::create_dir_all(out)?;
    let (net, server_ip, router) = if routed {
        let net = topology::ipv6_routed().build()?;
        let (client, router, server) = (net.host("client")?, net.host("router")?, net.host("server")?);
        report.note(format!(
            "client {} -- router -- (MTU {ROUTED_MTU}) -- server {} ({}, {}, {})",
            underlay::LINK1_HOST6,
            underlay::LINK2_HOST6,
            client.netns(),
            router.netns(),
            server.netns()
        ));
        (net, underlay::LINK2_HOST6, Some(router))
    } else {
        let net = topology::ipv6_link().build()?;
        let (client, server) = (net.host("client")?, net.host("server")?);
        report.note(format!(
            "client {} -- server {} ({}, {})",
            underlay::CLIENT6,
            underlay::SERVER6,
            client.netns(),
            server.netns()
        ));
        (net, underlay::SERVER6, None)
    };
    let (server, client) = (net.host("server")?, net.host("client")?);
    let tag = if routed { "routed" } else { "direct" };
    // Part two tells the tunnel the path's MTU, but leaves the TUN devices
    // at 1500, as when the path shrinks behind your back.
    let mut extra: Vec<String> = Vec::new();
    if routed {
        extra.extend([
            "--underlay-mtu".into(),
            ROUTED_MTU.to_string(),
            "--mtu".into(),
            "1500".into(),
        ]);
    }
    let listen = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), TUNNEL_PORT);
    let server_end = End {
        role: "server",
        flag: "--listen",
        peer: listen,
        addresses: [tunnel::SERVER.into(), tunnel::SERVER6.into()],
    };
    let mut server_step = server_end.start(&server, &binary, out, tag, &extra)?;
    server_step.wait_for_tun(TUN, tunnel::cidr(tunnel::SERVER))?;
    let client_end = End {
        role: "client",
        flag: "--server",
        peer: SocketAddr::new(server_ip.into(), TUNNEL_PORT),
        addresses: [tunnel::CLIENT.into(), tunnel::CLIENT6.into()],
    };
    let mut client_step = client_end.start(&client, &binary, out, tag, &extra)?;
    client_step.wait_for_tun(TUN, tunnel::cidr(tunnel::CLIENT))?;
    client_step.wait_for_answer()?;
    Ok(Up {
        server_step,
        client_step,
        server,
        client,
        router,
        _net: net,
    })
}

/// One end of the tunnel: `step03-ipv6 ROLE FLAG PEER --address V4
/// --address V6 --pcap TAG-ROLE-tun.pcap EXTRA...`, logging to
/// `TAG-ROLE.log`.
struct End {
    role: &'static str,
    flag: &'static str,
    peer: SocketAddr,
    addresses: [std::net::IpAddr; 2],
}

impl End {
    fn start(
        &self,
        host: &Host,
        binary: &Path,
        out: &Path,
        tag: &str,
        extra: &[String],
    ) -> anyhow::Result<Running> {
        let role = self.role;
        let mut args: Vec<String> = vec![role.into(), self.flag.into(), self.peer.to_string()];
        for address in self.addresses {
            args.extend(["--address".into(), tunnel::cidr(address).to_string()]);
        }
        let pcap = out.join(format!("{tag}-{role}-tun.pcap"));
        args.extend(["--pcap".into(), path_arg(&pcap)?]);
        args.extend(extra.iter().cloned());
        Running::start(host, binary, &args, &out.join(format!("{tag}-{role}.log")))
    }
}

/// `tunlab shell 03`: part one, the shell in the client.
pub fn shell(out: &Path, report: &mut Report) -> anyhow::Result<Shell> {
    let up = up(out, false, report)?;
    let client = up.client.clone();
    Ok(Shell::new(up, client))
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

/// Part one: one IPv6 link.
fn direct(out: &Path, report: &mut Report) -> anyhow::Result<()> {
    let mut lab = up(out, false, report)?;
    for (from, name, v4, v6) in [
        (&lab.client, "client -> server", tunnel::SERVER, tunnel::SERVER6),
        (&lab.server, "server -> client", tunnel::CLIENT, tunnel::CLIENT6),
    ] {
        let check = format!("ping {name} ({v4}) over an IPv6 underlay");
        from.ping_check(report, check, v4, 3, &[])?;
        let check = format!("ping -6 {name} ({v6}) over an IPv6 underlay");
        from.ping_check(report, check, v6, 3, &[])?;
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
    let (ran, receiver) = iperf3(&lab.server, &lab.client, tunnel::SERVER6)?;
    report.check("iperf3 -6 ran for 5 s through the tunnel", ran, receiver);
    stop(&mut lab, "direct", report)?;
    for side in ["server", "client"] {
        let pcap = out.join(format!("direct-{side}-tun.pcap"));
        let bad = tshark_bad_checksums(&pcap)?;
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
        format!("curl through a path of MTU {ROUTED_MTU} fetches the file intact"),
        got,
        format!("{} MB in {secs:.2} s", DOWNLOAD_BYTES >> 20),
    );
    // 1400 bytes of data + 8 + 20 = 1428 > 1348, the most the tunnel carries
    // here (1400 - 40 - 8 - 4). With DF (-M do), the tunnel answers.
    for (args, want) in [
        (too_big(tunnel::SERVER.into()), "mtu = 1348"),
        (too_big(tunnel::SERVER6.into()), "mtu=1348"),
    ] {
        let all = ["-n", "-c", "2", "-i", "0.5", "-W", "2"]
            .iter()
            .map(|a| a.to_string());
        let ping = lab.client.ping_with(all.chain(args.iter().cloned()).collect())?;
        let text = ping.stdout + &ping.stderr;
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
        let bad = tshark_bad_checksums(&pcap)?;
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

/// `ping -M do -s 1400 [-6] ADDRESS`: with DF, 1400 bytes of data, more
/// than the routed tunnel carries.
fn too_big(address: std::net::IpAddr) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    if address.is_ipv6() {
        args.push("-6".into());
    }
    args.extend(["-M", "do", "-s", "1400"].map(String::from));
    args.push(address.to_string());
    args
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
            &tunnel::SERVER6.to_string(),
            "--directory",
            www_str,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting python3 -m http.server")?;
    let result = (|| {
        lab.server.wait_for_listener(8000)?;
        let got = out.join("downloaded.bin");
        let started = std::time::Instant::now();
        let url = format!("http://[{}]:8000/big.bin", tunnel::SERVER6);
        let curl = lab.client.download(&url, &got, 60)?;
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
        step.stop_checked(report, format!("{tag}: {name} exits cleanly on SIGTERM"))?;
    }
    Ok(())
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
    let pcaps = env::fixtures_dir("step03")?;

    // The responder, in a host of its own.
    {
        let binary = env::step_binary(PACKAGE)?;
        let net = topology::one_host().build()?;
        let host = net.host("host")?;
        let pcap = dir.join("respond.pcap");
        let (v4, v6) = (
            tunnel::cidr(tunnel::SERVER).to_string(),
            tunnel::cidr(tunnel::SERVER6).to_string(),
        );
        let args = [
            "respond",
            "--address",
            &v4,
            "--address",
            &v6,
            "--pcap",
            &path_arg(&pcap)?,
        ];
        let mut step = Running::start(&host, &binary, &args, &dir.join("respond.log"))?;
        step.wait_for_tun(TUN, &v4)?;
        let (c4, c6, c6b) = (tunnel::CLIENT, tunnel::CLIENT6, tunnel::CLIENT2_6);
        let name = format!("fixtures: ping {c4} answered by respond");
        host.ping_check(report, name, c4, 3, &[])?;
        let name = format!("fixtures: ping -6 {c6} answered by respond");
        host.ping_check(report, name, c6, 3, &[])?;
        let name = format!("fixtures: ping -6 -s 1200 {c6b}");
        host.ping_check(report, name, c6b, 3, &["-6", "-s", "1200"])?;
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
    for address in [tunnel::SERVER.into(), tunnel::SERVER6.into()] {
        let all = ["-n", "-c", "1", "-W", "1"].iter().map(|a| a.to_string());
        lab.client.ping_with(all.chain(too_big(address)).collect())?;
    }
    stop(&mut lab, "fixtures", report)?;
    for side in ["client", "server"] {
        let name = format!("routed-{side}-tun.pcap");
        std::fs::copy(dir.join(&name), pcaps.join(&name)).with_context(|| format!("copying {name}"))?;
    }
    report.note(format!("recorded the fixtures in {}", pcaps.display()));
    Ok(())
}
