//! Lab 05: a full tunnel, NAT, and a host left as it was found.
//!
//! Four hosts: `client1` and `client2`, each on a link of its own to
//! `server`, and `internet` behind the server, where a small web server and
//! name server run (`labs/05-full-tunnel/internet.py`). The clients' default
//! routes point at the server, which without the tunnel would forward
//! their packets in the clear. `step05-full-tunnel` runs on the server with
//! `--nat` (forwarding on, and a masquerade table of its own) and on both
//! clients with `--full-tunnel` (every address through the TUN device but
//! the server's), client1 also with `--dns` and `--kill-switch`, over a
//! link of MTU 1400.
//!
//! The lab records each host's routes, rules, nftables ruleset, forwarding
//! sysctls and resolver before anything starts; checks that the internet
//! host sees only the server's address, that the clients reach each other
//! through the server, that the server drops a client's packets from an
//! address it was not given, that 20 MB arrive over the small-MTU path and
//! that nothing but the tunnel's UDP leaves client1 (no TCP, no DNS, no
//! ping); kills client1 with SIGKILL and checks that the kill switch keeps
//! it from sending anything until `step05-full-tunnel down` puts the host
//! back as it was; starts it over a killed run's leftovers; and finally
//! checks that every end exits cleanly and leaves its host exactly as it
//! was.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etherparse::{IpNumber, TcpSlice, UdpSlice};
use nix::sys::signal::Signal;

use crate::captures::{checksum_ok, each_ip_packet, first_few};
use crate::doctor::{Kernel, Needs};
use crate::env;
use crate::hoststate::{
    Down, FORWARDING, HostState, RESOLV_CONF, check_unchanged, forwarding_sysctls, host_lines, state_file,
    unified_diff,
};
use crate::keys::Keys;
use crate::labs::{Options, Shell};
use crate::netns::{Host, STEP_STATE_DIR};
use crate::process::{Capture, CaptureOptions, READY_TIMEOUT, Running, path_arg};
use crate::report::Report;
use crate::steplog::{Status, note_counters_at_exit};
use crate::topology::{self, FULL_TUNNEL_MTU, Net, TUN, TUNNEL_PORT, internet, tunnel, underlay};
use crate::traffic::{PATTERN, Pinged, sha256, url, write_random};

pub const PACKAGE: &str = "step05-full-tunnel";
/// What the lab needs from the machine.
pub const NEEDS: Needs = Needs {
    tools: &[
        "ip",
        "ss",
        "ping",
        "tcpdump",
        "nft",
        "curl",
        "python3",
        "sha256sum",
        "getent",
    ],
    kernel: &[Kernel::Tun, Kernel::Netns, Kernel::Veth, Kernel::Nftables],
    binaries: &[(PACKAGE, PACKAGE)],
};
/// What recording the fixtures needs besides: turning off the internet
/// host's checksum offload.
pub const FIXTURE_TOOLS: &[&str] = &["ethtool"];

/// A name only the internet host's name server knows.
pub const NAME: &str = "www.example.test";
/// Size of the file client1 downloads over its small-MTU link.
pub const DOWNLOAD_BYTES: usize = 20_000_000;
/// The ends whose keys the lab makes: the server and the two clients it
/// lists.
pub const KEY_NAMES: &[&str] = &["server", "client1", "client2"];

/// The web and name server of the internet host.
pub const INTERNET_PY: &str = include_str!("../05-full-tunnel/internet.py");

/// The clients' resolver before the tunnel: a harmless original, in
/// `/etc/netns/<namespace>/resolv.conf`.
pub fn original_resolv() -> String {
    format!("nameserver {}\n", underlay::RESOLVER)
}

/// One of the two clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    One,
    Two,
}

impl Client {
    /// Its host's name, and the name of its key.
    pub fn name(self) -> &'static str {
        match self {
            Client::One => "client1",
            Client::Two => "client2",
        }
    }

    /// Its tunnel addresses, as the server's `--peer` lists them.
    pub fn inner(self) -> (Ipv4Addr, Ipv6Addr) {
        match self {
            Client::One => (tunnel::CLIENT, tunnel::CLIENT6),
            Client::Two => (tunnel::CLIENT2, tunnel::CLIENT2_6),
        }
    }

    /// Its underlay addresses.
    pub fn underlay(self) -> (Ipv4Addr, Ipv6Addr) {
        match self {
            Client::One => (underlay::CLIENT, underlay::LINK1_HOST6),
            Client::Two => (underlay::CLIENT2, underlay::LINK2_HOST6),
        }
    }

    /// The server's address on its link.
    pub fn server(self) -> Ipv4Addr {
        match self {
            Client::One => underlay::SERVER,
            Client::Two => underlay::SERVER_LINK2,
        }
    }

    /// What it asks of the program besides the tunnel: client1 everything
    /// (and its link's MTU), client2 only the full tunnel.
    fn flags(self) -> Vec<String> {
        match self {
            Client::One => vec![
                "--underlay-mtu".into(),
                FULL_TUNNEL_MTU.to_string(),
                "--full-tunnel".into(),
                "--dns".into(),
                internet::DNS.to_string(),
                "--kill-switch".into(),
            ],
            Client::Two => vec!["--full-tunnel".into()],
        }
    }
}

/// How to bring lab 05's hosts up.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    /// Names this run's files: `server-<tag>.log`, `client1-<tag>.log`.
    pub tag: &'a str,
    pub keys: &'a Keys,
    /// Record what the server's TUN device carries (`--pcap
    /// server-<tag>-tun.pcap`).
    pub record: bool,
    /// Start client2 too.
    pub client2: bool,
    /// Capture client1's veth0 into this file, from before client1 starts.
    pub client1_underlay: Option<&'a Path>,
    /// The file the web server sends for `GET /file`.
    pub file: Option<&'a Path>,
    /// Turn off transmit checksum offload on the internet host's veth, so
    /// that a capture on the server shows the checksums its TCP really
    /// carries.
    pub offload_off: bool,
}

impl<'a> Setup<'a> {
    /// Both clients, nothing recorded.
    pub fn plain(keys: &'a Keys) -> Self {
        Self {
            tag: "main",
            keys,
            record: false,
            client2: true,
            client1_underlay: None,
            file: None,
            offload_off: false,
        }
    }
}

/// The hosts with the tunnel up. Drops in field order: the capture, the
/// clients (SIGTERM: they undo their changes), the server, the web server,
/// then the hosts.
pub struct Up {
    pub client1_underlay: Option<Capture>,
    pub client1_step: Option<Running>,
    pub client2_step: Option<Running>,
    pub server_step: Option<Running>,
    pub web: Running,
    pub server: Host,
    pub client1: Host,
    pub client2: Host,
    pub internet: Host,
    pub server_log: PathBuf,
    pub client1_log: PathBuf,
    pub client2_log: PathBuf,
    pub binary: PathBuf,
    pub keys: Keys,
    /// Each host's state before any end started.
    pub before: Before,
    out: PathBuf,
    _net: Net,
}

/// The host states recorded before the tunnel.
#[derive(Debug, Clone)]
pub struct Before {
    pub server: HostState,
    pub client1: HostState,
    pub client2: HostState,
}

/// Reads the state of a lab 05 host: the forwarding sysctls (every
/// interface's too, and what turning forwarding on rewrites), and the
/// resolver of the clients.
fn host_state(host: &Host) -> anyhow::Result<HostState> {
    let sysctls = forwarding_sysctls(host)?;
    let keys: Vec<&str> = sysctls.iter().map(String::as_str).collect();
    HostState::read(host, &keys, host.name() != "server")
}

/// Sysctls the server has before the lab as a router's administrator might
/// have set them: ICMP redirects not accepted, and forwarding on for one
/// interface only. Turning forwarding on for `all` rewrites both; the
/// server must put them back.
const SERVER_SETTINGS: [(&str, &str); 3] = [
    ("net.ipv4.conf.all.accept_redirects", "0"),
    ("net.ipv4.conf.veth-inet.forwarding", "1"),
    ("net.ipv6.conf.veth-inet.forwarding", "1"),
];

/// Builds the four hosts and their links, records their state, starts the
/// web server, the server end and the clients as `setup` says, and returns
/// once each client has its full tunnel up and its handshake done.
pub fn up(out: &Path, setup: &Setup<'_>, report: &mut Report) -> anyhow::Result<Up> {
    if setup.offload_off {
        env::require_tools(FIXTURE_TOOLS)?;
    }
    let binary = env::step_binary(PACKAGE)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let net = topology::full_tunnel().build()?;
    let server = net.host("server")?;
    let client1 = net.host("client1")?;
    let client2 = net.host("client2")?;
    let internet = net.host("internet")?;
    // Each client gets a resolv.conf of its own, so that the program's
    // --dns rewrites that one and not the machine's.
    let original = original_resolv();
    for host in [&client1, &client2] {
        host.set_resolv_conf(&original)?;
        let seen = host.read_file(RESOLV_CONF)?;
        if seen != original {
            bail!(
                "inside {} /etc/resolv.conf reads {seen:?}, not the lab's own copy {original:?} \
                 (`ip netns exec` could not bind-mount /etc/netns/{}/resolv.conf over it?); \
                 refusing to start a client with --dns, which would rewrite this machine's resolver",
                host.name(),
                host.netns()
            );
        }
    }
    report.note(format!(
        "hosts: client1 {} ({}) and client2 {} ({}), each linked to server \
         {} / {} ({}); internet {} ({}) behind the server's {}",
        underlay::CLIENT,
        client1.netns(),
        underlay::CLIENT2,
        client2.netns(),
        underlay::SERVER,
        underlay::SERVER_LINK2,
        server.netns(),
        internet::HOST,
        internet.netns(),
        internet::SERVER
    ));
    for (key, value) in SERVER_SETTINGS {
        server.set_sysctl(key, value)?;
    }
    report.note(format!(
        "the server starts with {}, as a router's administrator might have set them",
        SERVER_SETTINGS.map(|(k, v)| format!("{k}={v}")).join(", ")
    ));
    let tag = setup.tag;
    let before = Before {
        server: host_state(&server)?,
        client1: host_state(&client1)?,
        client2: host_state(&client2)?,
    };
    for (name, state) in [
        ("server", &before.server),
        ("client1", &before.client1),
        ("client2", &before.client2),
    ] {
        state.save(&out.join(format!("state-{name}-before.txt")))?;
    }

    // The internet host: web server and name server.
    if setup.offload_off {
        internet.tx_offload_off("veth0")?;
    }
    let script = out.join("internet.py");
    std::fs::write(&script, INTERNET_PY).with_context(|| format!("writing {}", script.display()))?;
    let mut args = vec![path_arg(&script)?, "--dns".into(), internet::DNS.to_string()];
    if let Some(file) = setup.file {
        args.extend(["--file".into(), path_arg(file)?]);
    }
    let web = Running::start(
        &internet,
        Path::new("python3"),
        &args,
        &out.join(format!("internet-{tag}.log")),
    )?;
    internet
        .wait_for_listener(80)
        .with_context(|| format!("the web server did not start; its log:\n{}", web.log_text()))?;
    internet.wait_for_udp_listener(53)?;

    // The server end.
    let keys = setup.keys;
    let listen = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), TUNNEL_PORT);
    let address = tunnel::cidr(tunnel::SERVER).to_string();
    let mut args: Vec<String> = [
        "server",
        "--listen",
        &listen.to_string(),
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
    for client in [Client::One, Client::Two] {
        let (v4, v6) = client.inner();
        args.push("--peer".into());
        args.push(format!(
            "{}={},{}",
            keys[client.name()].public,
            tunnel::host(v4),
            tunnel::host(v6)
        ));
    }
    if setup.record {
        args.push("--pcap".into());
        args.push(path_arg(&out.join(format!("server-{tag}-tun.pcap")))?);
    }
    let server_log = out.join(format!("server-{tag}.log"));
    let mut server_step = Running::start(&server, &binary, &args, &server_log)?;
    server_step.wait_for_tun(TUN, &address)?;
    server.wait_for_udp_listener(TUNNEL_PORT)?;
    server_step.wait_until("the server's forwarding and NAT table", READY_TIMEOUT, || {
        let forwarding = FORWARDING
            .iter()
            .all(|key| server.sysctl(key).is_ok_and(|v| v == "1"));
        forwarding && server.nft_tables().iter().any(|t| t.contains("tunlab_step05_"))
    })?;

    let client1_underlay = setup
        .client1_underlay
        .map(|path| Capture::start_with(&client1, "veth0", path, &CaptureOptions::bulk()))
        .transpose()?;
    let mut lab = Up {
        client1_underlay,
        client1_step: None,
        client2_step: None,
        server_step: Some(server_step),
        web,
        server,
        client1,
        client2,
        internet,
        client1_log: out.join(format!("client1-{tag}.log")),
        client2_log: out.join(format!("client2-{tag}.log")),
        server_log,
        binary,
        keys: keys.clone(),
        before,
        out: out.to_path_buf(),
        _net: net,
    };
    lab.start_client(Client::One, tag)?;
    if setup.client2 {
        lab.start_client(Client::Two, tag)?;
    }
    report.note(format!(
        "started {PACKAGE} server --nat (key {}), client1 --full-tunnel --dns {} --kill-switch \
         --underlay-mtu {FULL_TUNNEL_MTU} (key {}){}; handshakes complete",
        keys["server"].short(),
        internet::DNS,
        keys["client1"].short(),
        if setup.client2 {
            format!(", client2 --full-tunnel (key {})", keys["client2"].short())
        } else {
            String::new()
        }
    ));
    Ok(lab)
}

impl Up {
    pub fn host(&self, which: Client) -> &Host {
        match which {
            Client::One => &self.client1,
            Client::Two => &self.client2,
        }
    }

    pub fn log(&self, which: Client) -> &Path {
        match which {
            Client::One => &self.client1_log,
            Client::Two => &self.client2_log,
        }
    }

    fn step_mut(&mut self, which: Client) -> &mut Option<Running> {
        match which {
            Client::One => &mut self.client1_step,
            Client::Two => &mut self.client2_step,
        }
    }

    /// Starts a client end, logging to `<client>-<name>.log`, and waits
    /// until its handshake is done and its full tunnel (and, for client1,
    /// resolver and kill switch) is in place.
    pub fn start_client(&mut self, which: Client, name: &str) -> anyhow::Result<()> {
        let (v4, v6) = which.inner();
        let address4 = tunnel::cidr(v4).to_string();
        let server = SocketAddr::new(which.server().into(), TUNNEL_PORT);
        let mut args: Vec<String> = [
            "client",
            "--server",
            &server.to_string(),
            "--key",
            self.keys[which.name()].file_str()?,
            "--server-key",
            &self.keys["server"].public,
            "--address",
            &address4,
            "--address",
            &tunnel::cidr(v6).to_string(),
        ]
        .map(String::from)
        .into();
        args.extend(which.flags());
        let log = self.out.join(format!("{}-{name}.log", which.name()));
        let host = self.host(which).clone();
        let mut step = Running::start(&host, &self.binary, &args, &log)?;
        step.wait_for_tun(TUN, &address4)?;
        step.wait_for_handshake()?;
        let dns = internet::DNS.to_string();
        step.wait_until("the full tunnel's routes", READY_TIMEOUT, || {
            [internet::HOST.to_string(), internet::HOST6.to_string()]
                .iter()
                .all(|a| host.route_dev(a).is_some_and(|d| d == TUN))
                && (which == Client::Two
                    || (host.nameservers() == [dns.as_str()]
                        && host.nft_tables().iter().any(|t| t.contains("tunlab_step05_ks_"))))
        })?;
        *self.step_mut(which) = Some(step);
        match which {
            Client::One => self.client1_log = log,
            Client::Two => self.client2_log = log,
        }
        Ok(())
    }

    /// The server's status, as it logs it on SIGUSR1.
    pub fn server_status(&self) -> anyhow::Result<Status> {
        self.server_step
            .as_ref()
            .context("the server is not running")?
            .status()
    }

    /// The state file of the step whose log is `log`, as it logged it, or
    /// else step 05's default for `host`.
    pub fn state_file(host: &Host, log: &Path) -> PathBuf {
        state_file(host, &std::fs::read_to_string(log).unwrap_or_default(), TUN)
    }
}

/// `tunlab shell 05`: fresh keys, every host and end up, the shell in
/// client1.
pub fn shell(out: &Path, report: &mut Report) -> anyhow::Result<Shell> {
    let keys = Keys::generate(&env::step_binary(PACKAGE)?, out, KEY_NAMES)?;
    let up = up(out, &Setup::plain(&keys), report)?;
    let client1 = up.client1.clone();
    let note = format!(
        "kill -USR1 {} (the server's counters, in {}); ip netns exec {} sh (the server)",
        up.server_step.as_ref().and_then(|s| s.pid()).unwrap_or_default(),
        up.server_log.display(),
        up.server.netns()
    );
    Ok(Shell::new(up, client1).note(note))
}

// ---------------------------------------------------------------------
// Reading an underlay capture.

/// What a capture of a client's veth held, sorted into the tunnel, the
/// link's own housekeeping, and everything else (a leak).
#[derive(Debug, Default)]
pub struct Leaks {
    /// Frames of UDP datagrams between the client and the server's port,
    /// a datagram that the IP layer split into fragments counting one
    /// frame for each fragment.
    pub tunnel: usize,
    /// How many of those frames are fragments.
    pub fragments: usize,
    /// Bytes of UDP the server sent the client (UDP headers included).
    pub from_server_bytes: usize,
    /// ARP, IPv6 neighbour and router discovery, multicast listener
    /// reports: the link's own, which never leaves it.
    pub housekeeping: usize,
    /// A line for each TCP segment.
    pub tcp: Vec<String>,
    /// A line for each DNS message (UDP port 53) outside the tunnel.
    pub dns: Vec<String>,
    /// A line for each ICMP or ICMPv6 echo request or reply.
    pub echo: Vec<String>,
    /// A line for anything else.
    pub other: Vec<String>,
}

impl Leaks {
    /// Reads a capture of a client's veth (Ethernet frames): `client` is
    /// its underlay address, `server` the tunnel's address and port.
    pub fn read(pcap: &Path, client: IpAddr, server: SocketAddr) -> anyhow::Result<Self> {
        let mut seen = Self::default();
        let others = each_ip_packet(pcap, |n, _, ip| seen.sort(n, ip, client, server))?;
        seen.housekeeping += others.arp;
        seen.other.extend(others.odd);
        Ok(seen)
    }

    /// Sorts the IP packet of frame `n`.
    fn sort(&mut self, n: usize, ip: &etherparse::IpSlice<'_>, client: IpAddr, server: SocketAddr) {
        let seen = self;
        let (src, dst) = (ip.source_addr(), ip.destination_addr());
        let payload = ip.payload();
        let between = (src == client && dst == server.ip()) || (src == server.ip() && dst == client);
        match payload.ip_number {
            IpNumber::UDP if payload.fragmented => {
                if between {
                    seen.tunnel += 1;
                    seen.fragments += 1;
                    if src == server.ip() {
                        seen.from_server_bytes += payload.payload.len();
                    }
                } else {
                    seen.other
                        .push(format!("frame {n}: a UDP fragment {src} > {dst}"));
                }
            }
            IpNumber::UDP => {
                let Ok(udp) = UdpSlice::from_slice(payload.payload) else {
                    seen.other.push(format!("frame {n}: broken UDP {src} > {dst}"));
                    return;
                };
                let from = SocketAddr::new(src, udp.source_port());
                let to = SocketAddr::new(dst, udp.destination_port());
                if (src == client && to == server) || (from == server && dst == client) {
                    seen.tunnel += 1;
                    if from == server {
                        seen.from_server_bytes += payload.payload.len();
                    }
                } else if from.port() == 53 || to.port() == 53 {
                    seen.dns.push(format!("frame {n}: DNS {from} > {to}"));
                } else {
                    seen.other.push(format!("frame {n}: UDP {from} > {to}"));
                }
            }
            IpNumber::TCP => {
                let line = match TcpSlice::from_slice(payload.payload) {
                    Ok(tcp) => format!(
                        "frame {n}: TCP {} > {}{}",
                        SocketAddr::new(src, tcp.source_port()),
                        SocketAddr::new(dst, tcp.destination_port()),
                        if tcp.syn() { " SYN" } else { "" }
                    ),
                    Err(_) => format!("frame {n}: TCP {src} > {dst}"),
                };
                seen.tcp.push(line);
            }
            IpNumber::ICMP => match payload.payload.first() {
                Some(8 | 0) => seen.echo.push(format!("frame {n}: ICMP echo {src} > {dst}")),
                kind => seen
                    .other
                    .push(format!("frame {n}: ICMP type {kind:?} {src} > {dst}")),
            },
            IpNumber::IPV6_ICMP => match payload.payload.first() {
                Some(128 | 129) => seen.echo.push(format!("frame {n}: ICMPv6 echo {src} > {dst}")),
                // MLD (130-132, 143), router and neighbour discovery
                // (133-137): the link's own.
                Some(130..=137 | 143) => seen.housekeeping += 1,
                kind => seen
                    .other
                    .push(format!("frame {n}: ICMPv6 type {kind:?} {src} > {dst}")),
            },
            other => seen
                .other
                .push(format!("frame {n}: {src} > {dst} protocol {}", other.0)),
        }
    }
}

/// `ping` from `host` with the labs' payload pattern.
fn ping(host: &Host, to: impl std::fmt::Display, count: u32, extra: &[&str]) -> anyhow::Result<Pinged> {
    let mut args = vec!["-p", PATTERN];
    args.extend_from_slice(extra);
    host.ping(to, count, &args)
}

// ---------------------------------------------------------------------
// The lab.

/// Runs lab 05.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new(options.quiet);
    let out = &options.out;
    std::fs::create_dir_all(out)?;
    let keys = Keys::fresh(PACKAGE, out, KEY_NAMES, &report)?;
    main_session(out, &keys, &mut report)?;
    if options.fixtures {
        record_fixtures(out, &keys, &mut report)?;
    }
    report.note(format!("captures and logs are in {}", out.display()));
    Ok(report)
}

fn main_session(out: &Path, keys: &Keys, report: &mut Report) -> anyhow::Result<()> {
    let data = out.join("download.bin");
    write_random(&data, DOWNLOAD_BYTES)?;
    let underlay = out.join("client1-underlay.pcap");
    let setup = Setup {
        record: true,
        client1_underlay: Some(&underlay),
        file: Some(&data),
        ..Setup::plain(keys)
    };
    let mut lab = up(out, &setup, report)?;
    recorded_before(&lab, report);
    while_running(&lab, report)?;
    through_nat(&lab, report)?;
    ping_v6(&lab, report)?;
    client_to_client(&lab, report)?;
    dns(&lab, report)?;
    spoofing(&lab, report)?;
    download(&lab, &data, report)?;
    let captured = lab
        .client1_underlay
        .take()
        .context("no underlay capture")?
        .finish()?;
    check_underlay(&captured.path, captured.dropped, report)?;
    let _ = std::fs::remove_file(&data);
    link_through_the_kill_switch(&lab, report)?;
    kill_switch(&mut lab, report)?;
    restart(&mut lab, report)?;
    stop_all(&mut lab, report)
}

/// Check 1: the state before, as recorded by `up`.
fn recorded_before(lab: &Up, report: &mut Report) {
    let before = &lab.before;
    let recorded = [&before.client1, &before.client2, &before.server]
        .iter()
        .all(|s| !s.item("ip -4 route").is_empty());
    report.check(
        "host state recorded in client1, client2 and server before the tunnel",
        recorded,
        format!(
            "client1: {}; client2: {}; server: {}",
            before.client1.summary(),
            before.client2.summary(),
            before.server.summary()
        ),
    );
}

/// Sends one UDP datagram from each of the given ports, and says for each
/// whether the kernel let it out or the kill switch refused it (EPERM).
const SEND_FROM_PORTS: &str = r#"
import socket, sys
for spec in sys.argv[1:]:
    family, src, dst, dport, dev = spec.split(",")
    fam = socket.AF_INET if family == "4" else socket.AF_INET6
    s = socket.socket(fam, socket.SOCK_DGRAM)
    scope = socket.if_nametoindex(dev)
    try:
        if fam == socket.AF_INET:
            s.bind(("0.0.0.0", int(src)))
            s.sendto(b"tunlab", (dst, int(dport)))
        else:
            s.bind(("::", int(src), 0, scope))
            s.sendto(b"tunlab", (dst, int(dport), 0, scope))
        print(spec, "sent")
    except OSError as e:
        print(spec, e.strerror)
    finally:
        s.close()
"#;

/// Check: with the kill switch on, client1 can still renew a DHCP lease
/// (UDP 68 to 67; DHCPv6 546 to 547, to All_DHCP_Relay_Agents_and_Servers
/// ff02::1:2), while UDP from any other port to the same places is
/// refused.
fn link_through_the_kill_switch(lab: &Up, report: &mut Report) -> anyhow::Result<()> {
    let server = underlay::SERVER.to_string();
    let specs = [
        (format!("4,68,{server},67,veth0"), true),
        (format!("4,6868,{server},67,veth0"), false),
        ("6,546,ff02::1:2,547,veth0".to_string(), true),
        ("6,5460,ff02::1:2,547,veth0".to_string(), false),
    ];
    let mut args = vec!["-c".to_string(), SEND_FROM_PORTS.to_string()];
    args.extend(specs.iter().map(|(s, _)| s.clone()));
    let said = lab.client1.stdout("python3", &args)?;
    let mut ok = true;
    let mut detail = Vec::new();
    for (spec, allowed) in &specs {
        let line = said.lines().find(|l| l.starts_with(spec.as_str())).unwrap_or("");
        let sent = line.ends_with(" sent");
        ok &= sent == *allowed && (sent || line.contains("not permitted"));
        let fields: Vec<&str> = spec.split(',').collect();
        detail.push(format!(
            "UDP {} to {}:{}: {}",
            fields[1],
            fields[2],
            fields[3],
            line.strip_prefix(spec.as_str()).unwrap_or("no answer").trim()
        ));
    }
    report.check(
        "with the kill switch on, client1's DHCP and DHCPv6 client messages leave, other UDP does not",
        ok,
        detail.join("; "),
    );
    Ok(())
}

/// What each end changed, while it runs.
fn while_running(lab: &Up, report: &mut Report) -> anyhow::Result<()> {
    for which in [Client::One, Client::Two] {
        let host = lab.host(which);
        let server = which.server().to_string();
        let mut intunnel = Vec::new();
        let mut ok = true;
        for address in [
            internet::HOST.to_string(),
            internet::ANYWHERE.to_string(),
            internet::HOST6.to_string(),
            internet::ANYWHERE6.to_string(),
        ] {
            ok &= host.route_dev(&address).as_deref() == Some(TUN);
            intunnel.push(host.route_get(&address));
        }
        let outside = host.route_get(&server);
        ok &= host.route_dev(&server).as_deref() == Some("veth0");
        report.check(
            format!(
                "{} routes every address into {TUN} but the server's ({server} by veth0)",
                which.name()
            ),
            ok,
            format!("ip route get: {}; {outside}", intunnel.join("; ")),
        );
    }
    let running = host_state(&lab.client1)?;
    running.save(&lab.out.join("state-client1-running.txt"))?;
    if let Some(diff) = lab.before.client1.diff(&running) {
        std::fs::write(lab.out.join("client1-running.diff"), &diff)?;
        report.note("client1's routes while it runs (what changed in ip -4 route and ip -6 route):");
        for what in ["ip -4 route", "ip -6 route"] {
            for line in unified_diff(lab.before.client1.item(what), running.item(what)).lines() {
                if line.starts_with('+') || line.starts_with('-') {
                    report.note(format!("  {line}"));
                }
            }
        }
    }
    let dns = internet::DNS.to_string();
    report.check(
        format!("client1's resolv.conf says nameserver {dns} while it runs"),
        lab.client1.nameservers() == [dns.as_str()],
        format!(
            "{RESOLV_CONF} inside client1: {:?}",
            running.item(RESOLV_CONF).trim()
        ),
    );
    let logged = logged_tables(&lab.client1_log);
    let ks = logged
        .iter()
        .find(|t| t.starts_with("tunlab_step05_ks_"))
        .cloned()
        .unwrap_or_else(|| format!("tunlab_step05_ks_{TUN}"));
    let ruleset = running.item("nft list ruleset");
    let chain = ruleset
        .lines()
        .any(|l| l.contains("hook output") && l.contains("policy drop"));
    report.check(
        format!("client1's kill switch is in its nftables ruleset (table inet {ks})"),
        ruleset.contains(&format!("table inet {ks}")) && chain,
        if chain {
            format!(
                "an output chain with policy drop; its log names {}",
                if logged.is_empty() {
                    "no table".to_string()
                } else {
                    logged.join(", ")
                }
            )
        } else {
            "no output chain with policy drop in `nft list ruleset`".to_string()
        },
    );
    let server_running = host_state(&lab.server)?;
    server_running.save(&lab.out.join("state-server-running.txt"))?;
    if let Some(diff) = lab.before.server.diff(&server_running) {
        std::fs::write(lab.out.join("server-running.diff"), diff)?;
    }
    let nat = logged_tables(&lab.server_log)
        .into_iter()
        .find(|t| !t.contains("_ks_"))
        .unwrap_or_else(|| format!("tunlab_step05_{TUN}"));
    let ruleset = server_running.item("nft list ruleset");
    let (net4, net6) = (tunnel::NET, tunnel::NET6);
    let masquerades = ruleset.contains(&format!("table inet {nat}"))
        && ruleset.contains(&net4.to_string())
        && ruleset.contains(&net6.to_string())
        && ruleset.contains("masquerade");
    let forwarding: Vec<&str> = FORWARDING.iter().map(|k| server_running.item(k).trim()).collect();
    report.check(
        format!("the server forwards and masquerades {net4} and {net6} (table inet {nat})"),
        forwarding == ["1", "1"] && masquerades,
        format!(
            "ip_forward {}, IPv6 forwarding {}; {}",
            forwarding[0],
            forwarding[1],
            if masquerades {
                "masquerade rules for both prefixes"
            } else {
                "no masquerade rules for both prefixes in `nft list ruleset`"
            }
        ),
    );
    Ok(())
}

/// The tables a step named in its log (`host: nft table inet NAME`).
fn logged_tables(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut names: Vec<String> = text
        .lines()
        .filter(|l| l.contains("host: ") && !l.contains("host: undo"))
        .flat_map(|l| l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("tunlab_step05_"))
        .map(str::to_string)
        .collect();
    names.dedup();
    names
}

/// Check 2: the internet host sees the server's address, in both families,
/// from both clients.
fn through_nat(lab: &Up, report: &mut Report) -> anyhow::Result<()> {
    for which in [Client::One, Client::Two] {
        for (family, to, seen) in [
            ("", IpAddr::from(internet::HOST), IpAddr::from(internet::SERVER)),
            ("-6 ", internet::HOST6.into(), internet::SERVER6.into()),
        ] {
            let url = url(to, "/");
            let answer = lab.host(which).curl(&url, 10.0)?;
            let want = format!("you are {seen}");
            report.check(
                format!(
                    "curl {family}from {} to {url} shows the server's address ({seen})",
                    which.name()
                ),
                answer.as_deref() == Ok(want.as_str()),
                match answer {
                    Ok(body) => format!("the internet host answered {body:?}"),
                    Err(e) => format!("curl failed: {e}"),
                },
            );
        }
    }
    Ok(())
}

/// Check 3: ping -6 to the internet host from client1 (the underlay check
/// later shows it went through the tunnel).
fn ping_v6(lab: &Up, report: &mut Report) -> anyhow::Result<()> {
    let to = internet::HOST6;
    let ping = ping(&lab.client1, to, 3, &[])?;
    report.check(
        format!("ping -6 from client1 to {to} through the tunnel"),
        ping.all_answered(3),
        ping.to_string(),
    );
    Ok(())
}

/// Check 4: client1 reaches client2 through the server, which sends the
/// packets back into its TUN device.
fn client_to_client(lab: &Up, report: &mut Report) -> anyhow::Result<()> {
    let client2 = lab.keys["client2"].short();
    let sent = |status: &Status| status.peer(client2).map_or(0, |p| p.packets("sent"));
    let (v4, v6) = Client::Two.inner();
    for to in [IpAddr::from(v4), v6.into()] {
        let before = sent(&lab.server_status()?);
        let ping = ping(&lab.client1, to, 3, &[])?;
        let after = sent(&lab.server_status()?);
        let family = if to.is_ipv6() { "-6 " } else { "" };
        report.check(
            format!("ping {family}from client1 to client2 ({to}) through the server"),
            ping.all_answered(3) && after >= before + 3,
            format!(
                "{ping}; the server sent client2 {} packets meanwhile",
                after.saturating_sub(before)
            ),
        );
    }
    Ok(())
}

/// Part of check 6: a name looked up in client1 goes through the tunnel
/// to the name server it was given.
fn dns(lab: &Up, report: &mut Report) -> anyhow::Result<()> {
    let out = lab.client1.run("getent", ["ahosts", NAME])?;
    let said = String::from_utf8_lossy(&out.stdout);
    let mut addresses: Vec<&str> = said.lines().filter_map(|l| l.split_whitespace().next()).collect();
    addresses.dedup();
    let log = lab.web.log_text();
    let asked: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("dns: ") && l.contains(NAME))
        .collect();
    let from_server = asked
        .iter()
        .all(|l| l.starts_with(&format!("dns: {} ", internet::SERVER)));
    report.check(
        format!("client1 looks up {NAME} through the tunnel, at {}", internet::DNS),
        addresses.contains(&internet::HOST.to_string().as_str()) && !asked.is_empty() && from_server,
        format!(
            "getent ahosts: {}; the name server's log: {}",
            if addresses.is_empty() {
                "nothing".to_string()
            } else {
                addresses.join(", ")
            },
            if asked.is_empty() {
                "no question for it".to_string()
            } else {
                asked.join("; ")
            }
        ),
    );
    Ok(())
}

/// Check 5: client1 sends from client2's address; the server must drop it.
fn spoofing(lab: &Up, report: &mut Report) -> anyhow::Result<()> {
    let spoofed = Client::Two.inner().0;
    let client1 = lab.keys["client1"].short();
    let drops = |status: &Status| status.peer(client1).map_or(0, |p| p.count("source-not-allowed"));
    let before = drops(&lab.server_status()?);
    let cidr = tunnel::host(spoofed).to_string();
    lab.client1.ip(["addr", "add", &cidr, "dev", TUN])?;
    let to = internet::HOST;
    let pinged = ping(&lab.client1, to, 3, &["-I", &spoofed.to_string()]);
    lab.client1.ip(["addr", "del", &cidr, "dev", TUN])?;
    let pinged = pinged?;
    // The last echo request may still be on its way.
    std::thread::sleep(Duration::from_millis(200));
    let status = lab.server_status()?;
    let after = drops(&status);
    report.check(
        format!("client1 sending from client2's address ({spoofed}) gets no reply"),
        pinged.none_answered(),
        format!("ping -I {spoofed} {to}: {pinged}"),
    );
    report.check(
        format!("the server drops client1's packets from {spoofed} as source-not-allowed"),
        after >= before + 3,
        format!(
            "client1's source-not-allowed went from {before} to {after} ({})",
            status
                .peer(client1)
                .map_or("client1 is not in the status".into(), |p| p.drops_text())
        ),
    );
    Ok(())
}

/// Check 7: 20 MB over client1's 1400-byte path.
fn download(lab: &Up, data: &Path, report: &mut Report) -> anyhow::Result<()> {
    let received = lab.out.join("downloaded.bin");
    let started = Instant::now();
    let out = lab
        .client1
        .download(&url(internet::HOST, "/file"), &received, 60)?;
    let secs = started.elapsed().as_secs_f64();
    let intact = out.status.success() && received.exists() && sha256(data)? == sha256(&received)?;
    let mtu = lab
        .client1
        .ip(["-o", "link", "show", "dev", TUN])
        .ok()
        .and_then(|l| {
            let words: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            let at = words.iter().position(|w| w == "mtu")?;
            words.get(at + 1).cloned()
        })
        .unwrap_or_else(|| "?".into());
    report.check(
        format!(
            "{} MB downloaded by client1 over its {FULL_TUNNEL_MTU}-byte path arrive intact (sha256 matches)",
            DOWNLOAD_BYTES / 1_000_000
        ),
        intact,
        if out.status.success() {
            format!(
                "{secs:.2} s, {:.0} Mbit/s; client1's {TUN} has MTU {mtu}",
                DOWNLOAD_BYTES as f64 * 8.0 / secs / 1e6
            )
        } else {
            format!("curl failed: {}", String::from_utf8_lossy(&out.stderr).trim())
        },
    );
    let _ = std::fs::remove_file(received);
    Ok(())
}

/// Check 6: what client1's underlay carried from before client1 started
/// until after the download.
fn check_underlay(pcap: &Path, dropped: u64, report: &mut Report) -> anyhow::Result<()> {
    let (client, _) = Client::One.underlay();
    let server = SocketAddr::new(Client::One.server().into(), TUNNEL_PORT);
    let seen = Leaks::read(pcap, client.into(), server)?;
    report.check(
        "client1's underlay capture holds the download",
        seen.from_server_bytes * 10 >= DOWNLOAD_BYTES * 9,
        format!(
            "{:.1} MB of tunnel datagrams from the server for a {:.1} MB download; {} of the tunnel's {} frames are IP fragments; tcpdump: {dropped} frames dropped by the kernel",
            seen.from_server_bytes as f64 / 1e6,
            DOWNLOAD_BYTES as f64 / 1e6,
            seen.fragments,
            seen.tunnel
        ),
    );
    // Step 04 rounds the tunnel MTU down to a multiple of 16, so the
    // server's padding never makes a datagram too big for client1's
    // smaller path.
    report.check(
        "no tunnel datagram on client1's 1400-byte path is fragmented",
        seen.fragments == 0 && seen.tunnel > 0,
        format!("{} of {} frames are IP fragments", seen.fragments, seen.tunnel),
    );
    for (name, leaked) in [
        ("no TCP on client1's underlay", &seen.tcp),
        ("no DNS on client1's underlay", &seen.dns),
        ("no ping (ICMP or ICMPv6 echo) on client1's underlay", &seen.echo),
    ] {
        report.check(
            name,
            leaked.is_empty(),
            if leaked.is_empty() {
                "none".to_string()
            } else {
                format!("{} packets, such as: {}", leaked.len(), first_few(leaked))
            },
        );
    }
    report.check(
        format!("client1's underlay carries only the tunnel's UDP to and from {server}"),
        seen.other.is_empty() && seen.tcp.is_empty() && seen.dns.is_empty() && seen.echo.is_empty(),
        if seen.other.is_empty() {
            format!(
                "{} frames of the tunnel; also {} frames of the link's own (ARP, IPv6 neighbour discovery, MLD) in {}",
                seen.tunnel,
                seen.housekeeping,
                pcap.display()
            )
        } else {
            format!("{} other packets, such as: {}", seen.other.len(), first_few(&seen.other))
        },
    );
    Ok(())
}

/// Check 8: client1 is killed with SIGKILL; the kill switch holds until
/// `down`, which puts the host back as it was.
fn kill_switch(lab: &mut Up, report: &mut Report) -> anyhow::Result<()> {
    let state = Up::state_file(&lab.client1, &lab.client1_log);
    lab.client1_step
        .take()
        .context("client1 is not running")?
        .stop(Signal::SIGKILL, Duration::from_secs(5))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let gone = loop {
        if !lab.client1.has_link(TUN) {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    report.check(
        format!("after SIGKILL, client1's {TUN} is gone"),
        gone,
        if gone {
            "the kernel removed it with the program's last file descriptor"
        } else {
            "it is still there 5 s later"
        },
    );
    let left = host_state(&lab.client1)?;
    left.save(&lab.out.join("state-client1-killed.txt"))?;
    let pcap = lab.out.join("client1-underlay-killed.pcap");
    let capture = Capture::start(&lab.client1, "veth0", &pcap)?;
    let mut results = Vec::new();
    for to in [IpAddr::from(internet::HOST), internet::HOST6.into()] {
        results.push((to, lab.client1.curl(&url(to, "/"), 2.0)?));
    }
    capture.finish()?;
    report.check(
        "after SIGKILL, the kill switch still blocks client1 (curl fails)",
        results.iter().all(|(_, r)| r.is_err()),
        results
            .iter()
            .map(|(to, r)| match r {
                Ok(body) => format!("{to}: answered {body:?}"),
                Err(e) => format!("{to}: {e}"),
            })
            .collect::<Vec<_>>()
            .join("; "),
    );
    let (client, _) = Client::One.underlay();
    let server = SocketAddr::new(Client::One.server().into(), TUNNEL_PORT);
    let seen = Leaks::read(&pcap, client.into(), server)?;
    report.check(
        "after SIGKILL, nothing of those curls reaches client1's underlay",
        seen.tcp.is_empty(),
        if seen.tcp.is_empty() {
            format!(
                "no TCP in {} ({} frames of the link's own)",
                pcap.display(),
                seen.housekeeping
            )
        } else {
            format!(
                "{} TCP segments, such as: {}",
                seen.tcp.len(),
                first_few(&seen.tcp)
            )
        },
    );
    let state_left = state.exists();
    let down = Down::run(&lab.client1, &lab.binary, &lab.out.join("client1-down.log"))?;
    let (undid, gone) = (&down.undid, &down.gone);
    let ks_undone = undid.iter().any(|l| l.contains("tunlab_step05_ks_"));
    let found = down.files.contains(&state.display().to_string());
    report.check(
        format!("{PACKAGE} down (no --tun) in client1 finds and undoes what the killed client left"),
        down.status.success() && !undid.is_empty() && ks_undone && state_left && found,
        format!(
            "{}; the state file {} {}{}; undid: {}; already gone: {}",
            down.status,
            state.display(),
            if state_left { "was there" } else { "was not there" },
            if found {
                " and down found it"
            } else {
                " and down did not name it"
            },
            if undid.is_empty() {
                "nothing".to_string()
            } else {
                undid.join(", ")
            },
            if gone.is_empty() {
                "nothing".to_string()
            } else {
                gone.join(", ")
            }
        ),
    );
    let after = host_state(&lab.client1)?;
    after.save(&lab.out.join("state-client1-after-down.txt"))?;
    same_as_before(
        "after down, client1's host state",
        &lab.before.client1,
        &after,
        report,
    );
    report.check(
        "after down, client1's state file is gone",
        !state.exists(),
        state.display().to_string(),
    );
    let (v4, v6) = Client::One.underlay();
    for (family, to, seen) in [
        ("", IpAddr::from(internet::HOST), v4.to_string()),
        ("-6 ", internet::HOST6.into(), v6.to_string()),
    ] {
        let answer = lab.client1.curl(&url(to, "/"), 5.0)?;
        let want = format!("you are {seen}");
        report.check(
            format!("after down, a direct curl {family}from client1 works, outside the tunnel ({seen})"),
            answer.as_deref() == Ok(want.as_str()),
            match answer {
                Ok(body) => format!("the internet host answered {body:?}: no tunnel, no NAT"),
                Err(e) => format!("curl failed: {e}"),
            },
        );
    }
    Ok(())
}

/// Check 10: a client killed and started again without `down` undoes the
/// killed run's leftovers first.
fn restart(lab: &mut Up, report: &mut Report) -> anyhow::Result<()> {
    lab.start_client(Client::One, "main-again")?;
    lab.client1_step
        .take()
        .context("client1 is not running")?
        .stop(Signal::SIGKILL, Duration::from_secs(5))?;
    lab.start_client(Client::One, "main-restart")?;
    let log = std::fs::read_to_string(&lab.client1_log).unwrap_or_default();
    let lines = host_lines(&log);
    let undone = lines.iter().take_while(|l| l.starts_with("host: undo")).count();
    let made = lines.len() - undone;
    let earlier = log
        .lines()
        .find(|l| l.contains("earlier run"))
        .map(|l| l[l.find("an earlier").unwrap_or(0)..].trim().to_string());
    report.check(
        "client1 started over a killed run's leftovers undoes them first",
        undone > 0 && made > 0,
        format!(
            "{}its log: {undone} `host: undo` lines, then {made} new changes",
            earlier.map_or(String::new(), |l| format!("\"{l}\"; "))
        ),
    );
    let answer = lab.client1.curl(&url(internet::HOST, "/"), 10.0)?;
    let want = format!("you are {}", internet::SERVER);
    report.check(
        "the restarted client1 goes through the tunnel again",
        answer.as_deref() == Ok(want.as_str()),
        match answer {
            Ok(body) => format!("the internet host answered {body:?}"),
            Err(e) => format!("curl failed: {e}"),
        },
    );
    Ok(())
}

/// A check that a host's state is what it was before the tunnel, with a
/// unified diff when it is not.
fn same_as_before(name: &str, before: &HostState, after: &HostState, report: &mut Report) {
    check_unchanged(report, name, before, after, || {
        format!("{} as before", before.names())
    });
}

/// Check 9: every end exits with status 0 on SIGTERM and leaves its host as
/// it was.
fn stop_all(lab: &mut Up, report: &mut Report) -> anyhow::Result<()> {
    let mut stopped = Vec::new();
    for name in ["client1", "client2", "server"] {
        let step = match name {
            "client1" => lab.client1_step.take(),
            "client2" => lab.client2_step.take(),
            _ => lab.server_step.take(),
        };
        let Some(mut step) = step else {
            continue;
        };
        step.stop_checked(report, format!("{name} exits with status 0 on SIGTERM"))?;
        stopped.push(name);
    }
    note_counters_at_exit(
        report,
        &std::fs::read_to_string(&lab.server_log).unwrap_or_default(),
    );
    let mut left = Vec::new();
    for name in stopped {
        let (host, before, log) = match name {
            "client1" => (&lab.client1, &lab.before.client1, &lab.client1_log),
            "client2" => (&lab.client2, &lab.before.client2, &lab.client2_log),
            _ => (&lab.server, &lab.before.server, &lab.server_log),
        };
        let after = host_state(host)?;
        after.save(&lab.out.join(format!("state-{name}-after.txt")))?;
        same_as_before(
            &format!("after exit, {name}'s host state"),
            before,
            &after,
            report,
        );
        let state = Up::state_file(host, log);
        if state.exists() {
            left.push(state.display().to_string());
        }
    }
    report.check(
        format!("no state file is left in {STEP_STATE_DIR} for the lab's hosts"),
        left.is_empty(),
        if left.is_empty() {
            "none".to_string()
        } else {
            left.join(", ")
        },
    );
    Ok(())
}

/// One NAT'd flow, for the golden fixtures in `pcaps/step05/`: client1
/// fetches http://198.51.100.2/ and pings 198.51.100.2 once. Recorded by
/// the server's `--pcap` (its TUN device: the flow inside the tunnel, from
/// 10.0.0.2) and by tcpdump on the server's internet side (the same flow
/// after NAT, from 198.51.100.1), with the internet host's checksum
/// offload off so that its TCP checksums are the real ones.
fn record_fixtures(out: &Path, keys: &Keys, report: &mut Report) -> anyhow::Result<()> {
    let dir = out.join("fixtures");
    std::fs::create_dir_all(&dir)?;
    let setup = Setup {
        tag: "fixtures",
        keys,
        record: true,
        client2: false,
        client1_underlay: None,
        file: None,
        offload_off: true,
    };
    let mut lab = up(&dir, &setup, report)?;
    let internet_pcap = dir.join("internet.pcap");
    let capture = Capture::start_with(
        &lab.server,
        "veth-inet",
        &internet_pcap,
        &CaptureOptions {
            filter: Some("tcp port 80 or icmp".into()),
            ..CaptureOptions::default()
        },
    )?;
    let page = url(internet::HOST, "/");
    let answer = lab.client1.curl(&page, 10.0)?;
    report.check(
        format!("fixtures: curl from client1 to {page} through NAT"),
        answer.as_deref() == Ok(format!("you are {}", internet::SERVER).as_str()),
        format!("{answer:?}"),
    );
    let ping = ping(&lab.client1, internet::HOST, 1, &[])?;
    report.check(
        format!("fixtures: ping from client1 to {} through NAT", internet::HOST),
        ping.all_answered(1),
        ping.to_string(),
    );
    capture.finish()?;
    for (name, step) in [
        ("client1", lab.client1_step.take()),
        ("server", lab.server_step.take()),
    ] {
        if let Some(mut step) = step {
            step.stop_checked(report, format!("fixtures: {name} exits with status 0 on SIGTERM"))?;
        }
    }
    let tun_pcap = dir.join("server-fixtures-tun.pcap");
    let inside = flow(&tun_pcap)?;
    let outside = flow(&internet_pcap)?;
    let bad: Vec<&String> = outside
        .iter()
        .filter(|p| !p.checksum_ok)
        .map(|p| &p.line)
        .collect();
    report.check(
        "fixtures: every TCP and ICMP checksum in internet.pcap verifies",
        bad.is_empty() && !outside.is_empty(),
        if bad.is_empty() {
            format!("{} packets", outside.len())
        } else {
            format!(
                "{} of {} do not, such as: {}",
                bad.len(),
                outside.len(),
                bad.iter()
                    .take(3)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    );
    let inside_kinds: Vec<&str> = inside.iter().map(|p| p.kind).collect();
    let outside_kinds: Vec<&str> = outside.iter().map(|p| p.kind).collect();
    report.check(
        format!(
            "fixtures: internet.pcap holds the flow of the server's TUN, from {} instead of {}",
            internet::SERVER,
            tunnel::CLIENT
        ),
        !inside.is_empty() && inside_kinds == outside_kinds,
        format!(
            "{} packets of the flow on the TUN, {} on the internet side",
            inside.len(),
            outside.len()
        ),
    );
    let pcaps = env::fixtures_dir("step05")?;
    for (from, to) in [
        (tun_pcap.as_path(), "server-tun.pcap"),
        (internet_pcap.as_path(), "internet.pcap"),
    ] {
        std::fs::copy(from, pcaps.join(to)).with_context(|| format!("copying {}", from.display()))?;
    }
    report.note(format!("recorded the fixtures in {}", pcaps.display()));
    Ok(())
}

/// One packet of the fixtures' flow.
struct FlowPacket {
    /// `tcp` or `icmp`, and the direction: `tcp out`, `icmp in`.
    kind: &'static str,
    checksum_ok: bool,
    line: String,
}

/// The packets of a capture (the server's TUN, or its internet side) that
/// belong to the fixtures' flow: TCP port 80 and ICMP echo between client1
/// (10.0.0.2 inside, 198.51.100.1 after NAT) and the internet host.
fn flow(pcap: &Path) -> anyhow::Result<Vec<FlowPacket>> {
    let internet: IpAddr = internet::HOST.into();
    let mut flow = Vec::new();
    each_ip_packet(pcap, |_, ip, slice| {
        let out = slice.destination_addr() == internet;
        if !out && slice.source_addr() != internet {
            return;
        }
        let kind = match (slice.payload().ip_number, out) {
            (IpNumber::TCP, true) => "tcp out",
            (IpNumber::TCP, false) => "tcp in",
            (IpNumber::ICMP, true) => "icmp out",
            (IpNumber::ICMP, false) => "icmp in",
            _ => return,
        };
        flow.push(FlowPacket {
            kind,
            checksum_ok: checksum_ok(ip),
            line: step01_ping_tun::Summary(ip).to_string(),
        });
    })?;
    Ok(flow)
}
