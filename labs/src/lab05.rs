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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etherparse::{IpNumber, IpSlice, TcpSlice, UdpSlice};
use nix::sys::signal::Signal;

use crate::env;
use crate::lab01::wait_for_tun;
use crate::lab04::{KeyPair, Status, path_arg, status, wait_for_handshake};
use crate::netns::{Host, STEP_STATE_DIR, Topology};
use crate::process::{Capture, CaptureOptions, Running};
use crate::report::Report;
use crate::traffic::{ping_counts, sha256, wait_for_listener, wait_for_udp_listener, write_random};

pub const TOOLS: &[&str] = &[
    "ip",
    "ss",
    "ping",
    "tcpdump",
    "nft",
    "curl",
    "python3",
    "sha256sum",
    "getent",
];
/// What recording the fixtures needs besides: turning off the internet
/// host's checksum offload.
pub const FIXTURE_TOOLS: &[&str] = &["ethtool"];
pub const PACKAGE: &str = "step05-full-tunnel";
pub const TUN: &str = "tun0";
pub const PORT: u16 = 51820;
/// The bytes of "tunlab", the pings' payload pattern in every lab.
pub const PATTERN: &str = crate::lab02::PATTERN;

/// The internet host, its web server's two addresses.
pub const INTERNET_V4: &str = "198.51.100.2";
pub const INTERNET_V6: &str = "2001:db8:100::2";
/// The server's addresses on the internet side: what NAT turns the
/// clients' tunnel addresses into.
pub const SERVER_OUT_V4: &str = "198.51.100.1";
pub const SERVER_OUT_V6: &str = "2001:db8:100::1";
/// The internet host's name server, which client1 is told to use.
pub const DNS_SERVER: &str = "198.51.100.53";
/// A name only that name server knows.
pub const NAME: &str = "www.example.test";
/// The clients' resolver before the tunnel: a harmless original, in
/// `/etc/netns/<namespace>/resolv.conf`.
pub const ORIGINAL_RESOLV: &str = "nameserver 192.0.2.53\n";
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// The forwarding sysctls a server with `--nat` turns on.
pub const FORWARDING: [&str; 2] = ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"];
/// The MTU of client1's link to the server.
pub const SMALL_MTU: u16 = 1400;
/// Size of the file client1 downloads over that link.
pub const DOWNLOAD_BYTES: usize = 20_000_000;
/// Addresses of nobody in particular, which a full tunnel must route into
/// the TUN device too.
const ANYWHERE_V4: &str = "203.0.113.9";
const ANYWHERE_V6: &str = "2001:db8:ffff::9";

/// The web and name server of the internet host.
pub const INTERNET_PY: &str = include_str!("../05-full-tunnel/internet.py");

pub fn default_out() -> PathBuf {
    env::workspace_root().join("target").join("tunlab").join("lab05")
}

/// The keys of the server and of the two clients it lists.
#[derive(Debug, Clone)]
pub struct Keys {
    pub server: KeyPair,
    pub client1: KeyPair,
    pub client2: KeyPair,
}

impl Keys {
    /// Fresh keys in `dir`: `server.key`, `client1.key`, `client2.key`.
    pub fn generate(binary: &Path, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            server: KeyPair::generate(binary, &dir.join("server.key"))?,
            client1: KeyPair::generate(binary, &dir.join("client1.key"))?,
            client2: KeyPair::generate(binary, &dir.join("client2.key"))?,
        })
    }
}

/// One of the two clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    One,
    Two,
}

impl Client {
    pub fn name(self) -> &'static str {
        match self {
            Client::One => "client1",
            Client::Two => "client2",
        }
    }

    /// Its tunnel addresses, as the server's `--peer` lists them.
    pub fn inner(self) -> (&'static str, &'static str) {
        match self {
            Client::One => ("10.0.0.2", "fd00::2"),
            Client::Two => ("10.0.0.3", "fd00::3"),
        }
    }

    /// Its underlay addresses.
    pub fn underlay(self) -> (Ipv4Addr, &'static str) {
        match self {
            Client::One => (Ipv4Addr::new(192, 0, 2, 2), "2001:db8:1::2"),
            Client::Two => (Ipv4Addr::new(192, 0, 2, 130), "2001:db8:2::2"),
        }
    }

    /// The server's address on its link.
    pub fn server(self) -> Ipv4Addr {
        match self {
            Client::One => Ipv4Addr::new(192, 0, 2, 1),
            Client::Two => Ipv4Addr::new(192, 0, 2, 129),
        }
    }

    /// What it asks of the program besides the tunnel: client1 everything
    /// (and its link's MTU), client2 only the full tunnel.
    fn flags(self) -> Vec<String> {
        let flags: &[&str] = match self {
            Client::One => &[
                "--underlay-mtu",
                "1400",
                "--full-tunnel",
                "--dns",
                DNS_SERVER,
                "--kill-switch",
            ],
            Client::Two => &["--full-tunnel"],
        };
        flags.iter().map(|f| f.to_string()).collect()
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
    /// carries (with offload on, a veth hands the packet on before the
    /// checksum is filled in, and tcpdump sees a partial one).
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
    /// The web and name server's log: a line per request and question.
    pub web_log: PathBuf,
    pub binary: PathBuf,
    pub keys: Keys,
    /// Each host's state before any end started.
    pub before: Before,
    out: PathBuf,
    _topology: Topology,
}

/// The host states recorded before the tunnel.
#[derive(Debug, Clone)]
pub struct Before {
    pub server: HostState,
    pub client1: HostState,
    pub client2: HostState,
}

/// Builds the four hosts and their links, records their state, starts the
/// web server, the server end and the clients as `setup` says, and returns
/// once each client has its full tunnel up and its handshake done.
pub fn up(out: &Path, setup: &Setup<'_>, report: &mut Report) -> anyhow::Result<Up> {
    env::require_tools(TOOLS)?;
    if setup.offload_off {
        env::require_tools(FIXTURE_TOOLS)?;
    }
    let binary = env::step_binary(PACKAGE)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut topology = Topology::new()?;
    let server = topology.host("server")?;
    let client1 = topology.host("client1")?;
    let client2 = topology.host("client2")?;
    let internet = topology.host("internet")?;
    topology.link(&server, "veth-c1", &client1, "veth0")?;
    topology.link(&server, "veth-c2", &client2, "veth0")?;
    topology.link(&server, "veth-inet", &internet, "veth0")?;
    // The smaller MTU path: both ends of client1's link.
    let mtu = SMALL_MTU.to_string();
    server.ip(["link", "set", "veth-c1", "mtu", &mtu])?;
    client1.ip(["link", "set", "veth0", "mtu", &mtu])?;
    for (host, dev, cidrs) in [
        (&server, "veth-c1", ["192.0.2.1/25", "2001:db8:1::1/64"]),
        (&server, "veth-c2", ["192.0.2.129/25", "2001:db8:2::1/64"]),
        (&server, "veth-inet", ["198.51.100.1/24", "2001:db8:100::1/64"]),
        (&client1, "veth0", ["192.0.2.2/25", "2001:db8:1::2/64"]),
        (&client2, "veth0", ["192.0.2.130/25", "2001:db8:2::2/64"]),
        (&internet, "veth0", ["198.51.100.2/24", "2001:db8:100::2/64"]),
    ] {
        for cidr in cidrs {
            host.add_address(dev, cidr)?;
        }
    }
    internet.add_address("veth0", &format!("{DNS_SERVER}/24"))?;
    // The clients' default routes point at the server; the internet host
    // knows the way back to the underlay networks, and nothing of the
    // tunnel's.
    for (host, v4, v6) in [
        (&client1, "192.0.2.1", "2001:db8:1::1"),
        (&client2, "192.0.2.129", "2001:db8:2::1"),
    ] {
        host.ip(["-4", "route", "add", "default", "via", v4])?;
        host.ip(["-6", "route", "add", "default", "via", v6])?;
    }
    internet.ip(["-4", "route", "add", "192.0.2.0/24", "via", SERVER_OUT_V4])?;
    internet.ip(["-6", "route", "add", "2001:db8::/32", "via", SERVER_OUT_V6])?;
    // The server starts as a host that does not forward: what it turns on,
    // it must turn off again. (A new namespace copies the machine's IPv4
    // settings, so it may start with forwarding on.)
    for key in FORWARDING {
        write_sysctl(&server, key, "0")?;
    }
    // Each client gets a resolv.conf of its own, so that the program's
    // --dns rewrites that one and not the machine's.
    for host in [&client1, &client2] {
        host.set_resolv_conf(ORIGINAL_RESOLV)?;
        let seen = read_file(host, RESOLV_CONF)?;
        if seen != ORIGINAL_RESOLV {
            bail!(
                "inside {} /etc/resolv.conf reads {seen:?}, not the lab's own copy {ORIGINAL_RESOLV:?} \
                 (`ip netns exec` could not bind-mount /etc/netns/{}/resolv.conf over it?); \
                 refusing to start a client with --dns, which would rewrite this machine's resolver",
                host.name(),
                host.netns()
            );
        }
    }
    report.note(format!(
        "hosts: client1 192.0.2.2 ({}) and client2 192.0.2.130 ({}), each linked to server \
         192.0.2.1 / 192.0.2.129 ({}); internet 198.51.100.2 ({}) behind the server's 198.51.100.1",
        client1.netns(),
        client2.netns(),
        server.netns(),
        internet.netns()
    ));
    let tag = setup.tag;
    let before = Before {
        server: HostState::read(&server, false)?,
        client1: HostState::read(&client1, true)?,
        client2: HostState::read(&client2, true)?,
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
        let off = internet.run("ethtool", ["-K", "veth0", "tx", "off"])?;
        if !off.status.success() {
            bail!(
                "ethtool -K veth0 tx off in internet failed: {}",
                String::from_utf8_lossy(&off.stderr).trim()
            );
        }
    }
    let script = out.join("internet.py");
    std::fs::write(&script, INTERNET_PY).with_context(|| format!("writing {}", script.display()))?;
    let mut args = vec![path_arg(&script)?, "--dns".into(), DNS_SERVER.into()];
    if let Some(file) = setup.file {
        args.extend(["--file".into(), path_arg(file)?]);
    }
    let web_log = out.join(format!("internet-{tag}.log"));
    let web = Running::start(&internet, Path::new("python3"), &args, &web_log)?;
    wait_for_listener(&internet, 80).with_context(|| {
        format!(
            "the web server did not start; its log:\n{}",
            std::fs::read_to_string(&web_log).unwrap_or_default()
        )
    })?;
    wait_for_udp_listener(&internet, 53)?;

    // The server end.
    let keys = setup.keys;
    let listen = format!("0.0.0.0:{PORT}");
    let peer1 = format!("{}=10.0.0.2/32,fd00::2/128", keys.client1.public);
    let peer2 = format!("{}=10.0.0.3/32,fd00::3/128", keys.client2.public);
    let mut args: Vec<String> = [
        "server",
        "--listen",
        &listen,
        "--key",
        keys.server.file_str()?,
        "--address",
        "10.0.0.1/24",
        "--address",
        "fd00::1/64",
        "--nat",
        "--peer",
        &peer1,
        "--peer",
        &peer2,
    ]
    .map(String::from)
    .into();
    if setup.record {
        args.push("--pcap".into());
        args.push(path_arg(&out.join(format!("server-{tag}-tun.pcap")))?);
    }
    let server_log = out.join(format!("server-{tag}.log"));
    let mut server_step = Running::start(&server, &binary, &args, &server_log)?;
    wait_for_tun(&server, &mut server_step, &server_log, TUN, "10.0.0.1/24")?;
    wait_for_udp_listener(&server, PORT)?;
    wait_until(
        &mut server_step,
        &server_log,
        "the server's forwarding and NAT table",
        || {
            let forwarding = FORWARDING
                .iter()
                .all(|key| read_sysctl(&server, key).is_ok_and(|v| v == "1"));
            forwarding && tables(&server).iter().any(|t| t.contains("tunlab_step05_"))
        },
    )?;

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
        web_log,
        binary,
        keys: keys.clone(),
        before,
        out: out.to_path_buf(),
        _topology: topology,
    };
    lab.start_client(Client::One, tag)?;
    if setup.client2 {
        lab.start_client(Client::Two, tag)?;
    }
    report.note(format!(
        "started {PACKAGE} server --nat (key {}), client1 --full-tunnel --dns {DNS_SERVER} --kill-switch \
         --underlay-mtu 1400 (key {}){}; handshakes complete",
        keys.server.short(),
        keys.client1.short(),
        if setup.client2 {
            format!(", client2 --full-tunnel (key {})", keys.client2.short())
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
        let key = match which {
            Client::One => &self.keys.client1,
            Client::Two => &self.keys.client2,
        };
        let (v4, v6) = which.inner();
        let address4 = format!("{v4}/24");
        let address6 = format!("{v6}/64");
        let server = format!("{}:{PORT}", which.server());
        let mut args: Vec<String> = [
            "client",
            "--server",
            &server,
            "--key",
            key.file_str()?,
            "--server-key",
            &self.keys.server.public,
            "--address",
            &address4,
            "--address",
            &address6,
        ]
        .map(String::from)
        .into();
        args.extend(which.flags());
        let log = self.out.join(format!("{}-{name}.log", which.name()));
        let host = self.host(which).clone();
        let mut step = Running::start(&host, &self.binary, &args, &log)?;
        wait_for_tun(&host, &mut step, &log, TUN, &address4)?;
        wait_for_handshake(&mut step, &log)?;
        wait_until(&mut step, &log, "the full tunnel's routes", || {
            [INTERNET_V4, INTERNET_V6]
                .iter()
                .all(|a| route_dev(&host, a).is_some_and(|d| d == TUN))
                && (which == Client::Two
                    || (resolv_nameservers(&host) == [DNS_SERVER]
                        && tables(&host).iter().any(|t| t.contains("tunlab_step05_ks_"))))
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
        let step = self.server_step.as_ref().context("the server is not running")?;
        status(step, &self.server_log)
    }

    /// The state file of the step whose log is `log`, as it logged it
    /// (`... (state in /run/tunlab/<netns>/step05-tun0.state)`), or else
    /// the default for `host`: `/run/tunlab/<netns name>/step05-tun0.state`.
    pub fn state_file(host: &Host, log: &Path) -> PathBuf {
        state_in_log(&std::fs::read_to_string(log).unwrap_or_default()).unwrap_or_else(|| {
            Path::new(STEP_STATE_DIR)
                .join(host.netns())
                .join(format!("step05-{TUN}.state"))
        })
    }
}

/// The path in the last `(state in PATH)` of a log.
pub fn state_in_log(log: &str) -> Option<PathBuf> {
    let line = log.lines().rev().find(|l| l.contains("(state in "))?;
    let at = line.find("(state in ")? + "(state in ".len();
    let path = line[at..].split(')').next()?.trim();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// Polls `ready` for up to 10 s, failing early with the log if `step`
/// exits.
fn wait_until(
    step: &mut Running,
    log: &Path,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ready() {
            return Ok(());
        }
        if let Err(e) = step.check_alive() {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{e:#}; its log:\n{said}");
        }
        if Instant::now() >= deadline {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            bail!(
                "{what} did not appear within 10 s; the log {}:\n{said}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------
// Reading a host's state.

/// What a program printed, when it succeeded.
fn stdout_of(out: &Output, what: &str) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A file as programs inside `host` see it (`/etc/resolv.conf` is the
/// host's own copy there).
fn read_file(host: &Host, path: &str) -> anyhow::Result<String> {
    stdout_of(
        &host.run("cat", [path])?,
        &format!("cat {path} in {}", host.name()),
    )
}

/// `/proc/sys/<key>` inside `host`: each namespace has its own.
fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

fn read_sysctl(host: &Host, key: &str) -> anyhow::Result<String> {
    Ok(read_file(host, &sysctl_path(key))?.trim().to_string())
}

fn write_sysctl(host: &Host, key: &str, value: &str) -> anyhow::Result<()> {
    let out = host.run("sh", ["-c", &format!("echo {value} > {}", sysctl_path(key))])?;
    stdout_of(&out, &format!("setting {key}={value} in {}", host.name())).map(drop)
}

/// `nft list tables` in `host`: `table inet tunlab_step05_tun0`, ...
fn tables(host: &Host) -> Vec<String> {
    host.run("nft", ["list", "tables"])
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The `nameserver` lines of `host`'s resolv.conf.
fn resolv_nameservers(host: &Host) -> Vec<String> {
    read_file(host, RESOLV_CONF)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(|a| a.trim().to_string())
        .collect()
}

/// The interface the kernel of `host` sends `address` by (`ip route
/// get`), or `None` when it has no route.
fn route_dev(host: &Host, address: &str) -> Option<String> {
    let family = if address.contains(':') { "-6" } else { "-4" };
    let line = host.ip([family, "-o", "route", "get", address]).ok()?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "dev")?;
    words.get(at + 1).map(|d| d.to_string())
}

/// What `ip route get` says for `address` in `host`, on one line, trimmed
/// after the interface.
fn route_get(host: &Host, address: &str) -> String {
    let family = if address.contains(':') { "-6" } else { "-4" };
    match host.ip([family, "-o", "route", "get", address]) {
        Ok(line) => {
            let words: Vec<&str> = line.split_whitespace().collect();
            let end = words
                .iter()
                .position(|w| *w == "dev")
                .map_or(words.len(), |at| (at + 2).min(words.len()));
            words[..end].join(" ")
        }
        Err(e) => format!("{address}: {e:#}"),
    }
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

/// The `host:` lines of a log (from `host:` on): what the program changed,
/// and undid.
pub fn host_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.find("host: ").map(|at| l[at..].trim().to_string()))
        .collect()
}

/// Everything of a host that a step may change: routes and rules of both
/// families, the nftables ruleset, the forwarding sysctls, and (for
/// clients) the resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    /// (what, as the command printed it).
    pub items: Vec<(String, String)>,
}

impl HostState {
    /// Reads the state of `host`; `resolv` adds its `/etc/resolv.conf`.
    pub fn read(host: &Host, resolv: bool) -> anyhow::Result<Self> {
        let mut items = vec![
            ("ip -4 route".to_string(), host.ip(["-4", "route", "show"])?),
            ("ip -6 route".to_string(), host.ip(["-6", "route", "show"])?),
            ("ip -4 rule".to_string(), host.ip(["-4", "rule", "show"])?),
            ("ip -6 rule".to_string(), host.ip(["-6", "rule", "show"])?),
            (
                "nft list ruleset".to_string(),
                stdout_of(&host.run("nft", ["list", "ruleset"])?, "nft list ruleset")?,
            ),
        ];
        for key in FORWARDING {
            items.push((key.to_string(), read_sysctl(host, key)? + "\n"));
        }
        if resolv {
            items.push((RESOLV_CONF.to_string(), read_file(host, RESOLV_CONF)?));
        }
        Ok(Self { items })
    }

    /// The text of item `what` (`ip -4 route`), or "".
    pub fn item(&self, what: &str) -> &str {
        self.items
            .iter()
            .find(|(w, _)| w == what)
            .map_or("", |(_, t)| t.as_str())
    }

    /// A unified diff of every item that differs, or `None` when `later`
    /// is the same.
    pub fn diff(&self, later: &HostState) -> Option<String> {
        let mut text = String::new();
        for (what, before) in &self.items {
            let after = later.item(what);
            if before != after {
                text.push_str(&format!("--- {what} before\n+++ {what} after\n"));
                text.push_str(&unified_diff(before, after));
            }
        }
        (!text.is_empty()).then_some(text)
    }

    /// One line: how many routes, rules and so on.
    pub fn summary(&self) -> String {
        let lines = |what: &str| self.item(what).lines().count();
        let ruleset = self.item("nft list ruleset");
        let mut s = format!(
            "{} IPv4 and {} IPv6 routes, {} + {} rules, {}, forwarding {}/{}",
            lines("ip -4 route"),
            lines("ip -6 route"),
            lines("ip -4 rule"),
            lines("ip -6 rule"),
            if ruleset.trim().is_empty() {
                "no nftables rules".to_string()
            } else {
                format!("{} lines of nftables rules", ruleset.lines().count())
            },
            self.item(FORWARDING[0]).trim(),
            self.item(FORWARDING[1]).trim()
        );
        if let Some((_, resolv)) = self.items.iter().find(|(w, _)| w == RESOLV_CONF) {
            s.push_str(&format!(", resolv.conf {:?}", resolv.trim()));
        }
        s
    }

    /// Writes every item to `path`, each under a `# what` line.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text: String = self
            .items
            .iter()
            .map(|(what, text)| format!("# {what}\n{text}\n"))
            .collect();
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// A unified diff of two texts, line by line, with two lines of context
/// around each change (`@@ -1,3 +1,4 @@` hunks). Empty when they are the
/// same.
pub fn unified_diff(before: &str, after: &str) -> String {
    const CONTEXT: usize = 2;
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    // The longest common subsequence, from the end: lcs[i][j] is its
    // length for a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // Each line with its mark and its line numbers in `a` and `b`.
    let mut ops: Vec<(char, &str, usize, usize)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i], i, j));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i], i, j));
            i += 1;
        } else {
            ops.push(('+', b[j], i, j));
            j += 1;
        }
    }
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut text = String::new();
    let mut k = 0;
    while k < changed.len() {
        // A hunk: from CONTEXT lines before this change to CONTEXT lines
        // after the last change that is close enough to join it.
        let start = changed[k].saturating_sub(CONTEXT);
        let mut last = changed[k];
        while k + 1 < changed.len() && changed[k + 1] <= last + 2 * CONTEXT + 1 {
            k += 1;
            last = changed[k];
        }
        let end = (last + CONTEXT + 1).min(ops.len());
        let hunk = &ops[start..end];
        let count = |mark: char| hunk.iter().filter(|o| o.0 == ' ' || o.0 == mark).count();
        let (a_len, b_len) = (count('-'), count('+'));
        let a_start = if a_len == 0 { hunk[0].2 } else { hunk[0].2 + 1 };
        let b_start = if b_len == 0 { hunk[0].3 } else { hunk[0].3 + 1 };
        text.push_str(&format!("@@ -{a_start},{a_len} +{b_start},{b_len} @@\n"));
        for (mark, line, _, _) in hunk {
            text.push_str(&format!("{mark}{line}\n"));
        }
        k += 1;
    }
    text
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
        let (_, frames) = step01_ping_tun::pcap::read_any(pcap)?;
        let mut seen = Self::default();
        for (n, frame) in frames.iter().enumerate() {
            let n = n + 1;
            let Some(ip) = step01_ping_tun::pcap::ip_in_ethernet(&frame.data) else {
                if frame.data.get(12..14) == Some(&[0x08, 0x06]) {
                    seen.housekeeping += 1;
                } else {
                    seen.other.push(format!("frame {n}: not IP"));
                }
                continue;
            };
            let Ok(ip) = IpSlice::from_slice(ip) else {
                seen.other.push(format!("frame {n}: a broken IP packet"));
                continue;
            };
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
                        continue;
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
        Ok(seen)
    }
}

/// The first few lines of a list, for a check's detail.
fn first(lines: &[String]) -> String {
    let mut s = lines.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
    if lines.len() > 3 {
        s.push_str(&format!("; and {} more", lines.len() - 3));
    }
    s
}

// ---------------------------------------------------------------------
// Traffic.

/// `curl -sS -g --max-time SECS URL` in `host`: the body, or curl's error.
fn curl(host: &Host, url: &str, secs: u32) -> anyhow::Result<Result<String, String>> {
    let out = host.run("curl", ["-sS", "-g", "--max-time", &secs.to_string(), url])?;
    Ok(if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(format!("{} ({})", said, out.status))
    })
}

/// `ping` from `host` with the lab's pattern; returns (sent, received).
fn ping(host: &Host, to: &str, count: u32, extra: &[&str]) -> anyhow::Result<Option<(u32, u32)>> {
    let count = count.to_string();
    let mut args = vec!["-n", "-c", &count, "-i", "0.2", "-W", "2", "-p", PATTERN];
    args.extend_from_slice(extra);
    if to.contains(':') {
        args.push("-6");
    }
    args.push(to);
    let out = host.run("ping", &args)?;
    Ok(ping_counts(&String::from_utf8_lossy(&out.stdout)))
}

fn counts_text(counts: Option<(u32, u32)>) -> String {
    counts.map_or("no summary from ping".into(), |(s, r)| {
        format!("{s} sent, {r} received")
    })
}

fn url(address: &str, path: &str) -> String {
    if address.contains(':') {
        format!("http://[{address}]{path}")
    } else {
        format!("http://{address}{path}")
    }
}

// ---------------------------------------------------------------------
// The lab.

pub use crate::labs::Options;

/// Runs lab 05.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new(options.quiet);
    let out = &options.out;
    std::fs::create_dir_all(out)?;
    let binary = env::step_binary(PACKAGE)?;
    let keys = Keys::generate(&binary, out)?;
    report.note(format!(
        "fresh keys in {}: server {}..., client1 {}..., client2 {}...",
        out.display(),
        keys.server.short(),
        keys.client1.short(),
        keys.client2.short()
    ));
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

/// What each end changed, while it runs.
fn while_running(lab: &Up, report: &mut Report) -> anyhow::Result<()> {
    for which in [Client::One, Client::Two] {
        let host = lab.host(which);
        let server = which.server().to_string();
        let mut intunnel = Vec::new();
        let mut ok = true;
        for address in [INTERNET_V4, ANYWHERE_V4, INTERNET_V6, ANYWHERE_V6] {
            ok &= route_dev(host, address).as_deref() == Some(TUN);
            intunnel.push(route_get(host, address));
        }
        let outside = route_get(host, &server);
        ok &= route_dev(host, &server).as_deref() == Some("veth0");
        report.check(
            format!(
                "{} routes every address into {TUN} but the server's ({server} by veth0)",
                which.name()
            ),
            ok,
            format!("ip route get: {}; {outside}", intunnel.join("; ")),
        );
    }
    let running = HostState::read(&lab.client1, true)?;
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
    let nameservers = resolv_nameservers(&lab.client1);
    report.check(
        format!("client1's resolv.conf says nameserver {DNS_SERVER} while it runs"),
        nameservers == [DNS_SERVER],
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
    let server_running = HostState::read(&lab.server, false)?;
    server_running.save(&lab.out.join("state-server-running.txt"))?;
    if let Some(diff) = lab.before.server.diff(&server_running) {
        std::fs::write(lab.out.join("server-running.diff"), diff)?;
    }
    let nat = logged_tables(&lab.server_log)
        .into_iter()
        .find(|t| !t.contains("_ks_"))
        .unwrap_or_else(|| format!("tunlab_step05_{TUN}"));
    let ruleset = server_running.item("nft list ruleset");
    let masquerades = ruleset.contains(&format!("table inet {nat}"))
        && ruleset.contains("10.0.0.0/24")
        && ruleset.contains("fd00::/64")
        && ruleset.contains("masquerade");
    let forwarding: Vec<&str> = FORWARDING.iter().map(|k| server_running.item(k).trim()).collect();
    report.check(
        format!("the server forwards and masquerades 10.0.0.0/24 and fd00::/64 (table inet {nat})"),
        forwarding == ["1", "1"] && masquerades,
        format!(
            "ip_forward {}, IPv6 forwarding {}; {}",
            forwarding[0],
            forwarding[1],
            if masquerades {
                "masquerade rules for both prefixes"
            } else {
                "no masquerade rules for 10.0.0.0/24 and fd00::/64 in `nft list ruleset`"
            }
        ),
    );
    Ok(())
}

/// Check 2: the internet host sees the server's address, in both families,
/// from both clients.
fn through_nat(lab: &Up, report: &mut Report) -> anyhow::Result<()> {
    for which in [Client::One, Client::Two] {
        for (family, to, seen) in [
            ("", INTERNET_V4, SERVER_OUT_V4),
            ("-6 ", INTERNET_V6, SERVER_OUT_V6),
        ] {
            let url = url(to, "/");
            let answer = curl(lab.host(which), &url, 10)?;
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
    let counts = ping(&lab.client1, INTERNET_V6, 3, &[])?;
    report.check(
        format!("ping -6 from client1 to {INTERNET_V6} through the tunnel"),
        counts == Some((3, 3)),
        counts_text(counts),
    );
    Ok(())
}

/// Check 4: client1 reaches client2 through the server, which sends the
/// packets back into its TUN device.
fn client_to_client(lab: &Up, report: &mut Report) -> anyhow::Result<()> {
    let client2 = lab.keys.client2.short();
    let sent = |status: &Status| status.peer(client2).map_or(0, |p| p.packets("sent"));
    for to in [Client::Two.inner().0, Client::Two.inner().1] {
        let before = sent(&lab.server_status()?);
        let counts = ping(&lab.client1, to, 3, &[])?;
        let after = sent(&lab.server_status()?);
        let family = if to.contains(':') { "-6 " } else { "" };
        report.check(
            format!("ping {family}from client1 to client2 ({to}) through the server"),
            counts == Some((3, 3)) && after >= before + 3,
            format!(
                "{}; the server sent client2 {} packets meanwhile",
                counts_text(counts),
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
    let log = std::fs::read_to_string(&lab.web_log).unwrap_or_default();
    let asked: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("dns: ") && l.contains(NAME))
        .collect();
    let from_server = asked
        .iter()
        .all(|l| l.starts_with(&format!("dns: {SERVER_OUT_V4} ")));
    report.check(
        format!("client1 looks up {NAME} through the tunnel, at {DNS_SERVER}"),
        addresses.contains(&INTERNET_V4) && !asked.is_empty() && from_server,
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
    let client1 = lab.keys.client1.short();
    let drops = |status: &Status| status.peer(client1).map_or(0, |p| p.count("source-not-allowed"));
    let before = drops(&lab.server_status()?);
    let cidr = format!("{spoofed}/32");
    lab.client1.ip(["addr", "add", &cidr, "dev", TUN])?;
    let counts = ping(&lab.client1, INTERNET_V4, 3, &["-I", spoofed]);
    lab.client1.ip(["addr", "del", &cidr, "dev", TUN])?;
    let counts = counts?;
    // The last echo request may still be on its way.
    std::thread::sleep(Duration::from_millis(200));
    let status = lab.server_status()?;
    let after = drops(&status);
    report.check(
        format!("client1 sending from client2's address ({spoofed}) gets no reply"),
        matches!(counts, Some((sent, 0)) if sent > 0),
        format!("ping -I {spoofed} {INTERNET_V4}: {}", counts_text(counts)),
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
    let out = lab.client1.run(
        "curl",
        [
            "-sS",
            "--max-time",
            "60",
            "-o",
            &path_arg(&received)?,
            &url(INTERNET_V4, "/file"),
        ],
    )?;
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
            "{} MB downloaded by client1 over its {SMALL_MTU}-byte path arrive intact (sha256 matches)",
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
    let server = SocketAddr::new(Client::One.server().into(), PORT);
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
                format!("{} packets, such as: {}", leaked.len(), first(leaked))
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
            format!("{} other packets, such as: {}", seen.other.len(), first(&seen.other))
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
        if lab.client1.ip(["link", "show", "dev", TUN]).is_err() {
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
    let left = HostState::read(&lab.client1, true)?;
    left.save(&lab.out.join("state-client1-killed.txt"))?;
    let pcap = lab.out.join("client1-underlay-killed.pcap");
    let capture = Capture::start(&lab.client1, "veth0", &pcap)?;
    let mut results = Vec::new();
    for to in [INTERNET_V4, INTERNET_V6] {
        results.push((to, curl(&lab.client1, &url(to, "/"), 2)?));
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
    let server = SocketAddr::new(Client::One.server().into(), PORT);
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
            format!("{} TCP segments, such as: {}", seen.tcp.len(), first(&seen.tcp))
        },
    );
    let state_left = state.exists();
    let down = lab.client1.run(&path_arg(&lab.binary)?, ["down"])?;
    let said = String::from_utf8_lossy(&down.stdout).to_string();
    let undid: Vec<&str> = said
        .lines()
        .filter_map(|l| l.trim().strip_prefix("undid: "))
        .collect();
    // `already gone: route ::/1 dev tun0: `ip -6 route del ...` failed ...`:
    // routes through the TUN device went with it.
    let gone: Vec<&str> = said
        .lines()
        .filter_map(|l| l.trim().strip_prefix("already gone: "))
        .map(|l| l.split(": `").next().unwrap_or(l))
        .collect();
    std::fs::write(
        lab.out.join("client1-down.log"),
        said.clone() + &String::from_utf8_lossy(&down.stderr),
    )?;
    let ks_undone = undid.iter().any(|l| l.contains("tunlab_step05_ks_"));
    report.check(
        format!("{PACKAGE} down in client1 undoes what the killed client left"),
        down.status.success() && !undid.is_empty() && ks_undone && state_left,
        format!(
            "{}; the state file {} {}; undid: {}; already gone: {}",
            down.status,
            state.display(),
            if state_left { "was there" } else { "was not there" },
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
    let after = HostState::read(&lab.client1, true)?;
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
        ("", INTERNET_V4, v4.to_string()),
        ("-6 ", INTERNET_V6, v6.to_string()),
    ] {
        let answer = curl(&lab.client1, &url(to, "/"), 5)?;
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
    let answer = curl(&lab.client1, &url(INTERNET_V4, "/"), 10)?;
    let want = format!("you are {SERVER_OUT_V4}");
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
    let diff = before.diff(after);
    report.check(
        format!("{name} equals the state before"),
        diff.is_none(),
        match diff {
            None => format!(
                "{} as before",
                before
                    .items
                    .iter()
                    .map(|(w, _)| w.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(diff) => format!("it differs:\n{diff}"),
        },
    );
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
        let status = step.stop(Signal::SIGTERM, Duration::from_secs(5))?;
        report.check(
            format!("{name} exits with status 0 on SIGTERM"),
            status.success(),
            status.to_string(),
        );
        stopped.push(name);
    }
    let log = std::fs::read_to_string(&lab.server_log).unwrap_or_default();
    if let Some(status) = Status::last(&log) {
        report.note("the server's counters at exit:");
        for line in status.lines {
            report.note(format!("  {line}"));
        }
    }
    let mut left = Vec::new();
    for name in stopped {
        let (host, before, log) = match name {
            "client1" => (&lab.client1, &lab.before.client1, &lab.client1_log),
            "client2" => (&lab.client2, &lab.before.client2, &lab.client2_log),
            _ => (&lab.server, &lab.before.server, &lab.server_log),
        };
        let after = HostState::read(host, name != "server")?;
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
    let answer = curl(&lab.client1, &url(INTERNET_V4, "/"), 10)?;
    report.check(
        format!(
            "fixtures: curl from client1 to {} through NAT",
            url(INTERNET_V4, "/")
        ),
        answer.as_deref() == Ok(format!("you are {SERVER_OUT_V4}").as_str()),
        format!("{answer:?}"),
    );
    let counts = ping(&lab.client1, INTERNET_V4, 1, &[])?;
    report.check(
        format!("fixtures: ping from client1 to {INTERNET_V4} through NAT"),
        counts == Some((1, 1)),
        counts_text(counts),
    );
    capture.finish()?;
    for (name, step) in [
        ("client1", lab.client1_step.take()),
        ("server", lab.server_step.take()),
    ] {
        if let Some(mut step) = step {
            let status = step.stop(Signal::SIGTERM, Duration::from_secs(5))?;
            report.check(
                format!("fixtures: {name} exits with status 0 on SIGTERM"),
                status.success(),
                status.to_string(),
            );
        }
    }
    let tun_pcap = dir.join("server-fixtures-tun.pcap");
    let inside = flow(&tun_pcap, false)?;
    let outside = flow(&internet_pcap, true)?;
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
        "fixtures: internet.pcap holds the flow of the server's TUN, from 198.51.100.1 instead of 10.0.0.2",
        !inside.is_empty() && inside_kinds == outside_kinds,
        format!(
            "{} packets of the flow on the TUN, {} on the internet side",
            inside.len(),
            outside.len()
        ),
    );
    let pcaps = env::workspace_root().join("pcaps").join("step05");
    std::fs::create_dir_all(&pcaps)?;
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

/// The packets of a capture that belong to the fixtures' flow: TCP port 80
/// and ICMP echo between client1 (10.0.0.2 inside, 198.51.100.1 after NAT)
/// and the internet host. `ethernet`: the capture holds Ethernet frames.
fn flow(pcap: &Path, ethernet: bool) -> anyhow::Result<Vec<FlowPacket>> {
    let (_, packets) = step01_ping_tun::pcap::read_any(pcap)?;
    let internet: IpAddr = INTERNET_V4.parse()?;
    let mut flow = Vec::new();
    for p in &packets {
        let ip = if ethernet {
            match step01_ping_tun::pcap::ip_in_ethernet(&p.data) {
                Some(ip) => ip,
                None => continue,
            }
        } else {
            &p.data[..]
        };
        let Ok(slice) = IpSlice::from_slice(ip) else {
            continue;
        };
        let out = slice.destination_addr() == internet;
        if !out && slice.source_addr() != internet {
            continue;
        }
        let kind = match (slice.payload().ip_number, out) {
            (IpNumber::TCP, true) => "tcp out",
            (IpNumber::TCP, false) => "tcp in",
            (IpNumber::ICMP, true) => "icmp out",
            (IpNumber::ICMP, false) => "icmp in",
            _ => continue,
        };
        flow.push(FlowPacket {
            kind,
            checksum_ok: step03_ipv6::checksum::verify_transport(ip).unwrap_or(false),
            line: step01_ping_tun::Summary(ip).to_string(),
        });
    }
    Ok(flow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_of_equal_texts_is_empty() {
        assert_eq!(unified_diff("a\nb\n", "a\nb\n"), "");
        assert_eq!(unified_diff("", ""), "");
    }

    #[test]
    fn diff_shows_changes_with_context() {
        let before = "default via 192.0.2.1 dev veth0\n192.0.2.0/25 dev veth0\n";
        let after = "0.0.0.0/1 dev tun0\ndefault via 192.0.2.1 dev veth0\n10.0.0.0/24 dev tun0\n192.0.2.0/25 dev veth0\n";
        assert_eq!(
            unified_diff(before, after),
            "@@ -1,2 +1,4 @@\n+0.0.0.0/1 dev tun0\n default via 192.0.2.1 dev veth0\n+10.0.0.0/24 dev tun0\n 192.0.2.0/25 dev veth0\n"
        );
        assert_eq!(unified_diff("a\n", ""), "@@ -1,1 +0,0 @@\n-a\n");
        assert_eq!(unified_diff("", "x\n"), "@@ -0,0 +1,1 @@\n+x\n");
    }

    #[test]
    fn diff_splits_distant_changes_into_hunks() {
        let before: String = (1..=20).map(|n| format!("{n}\n")).collect();
        let after: String = (1..=20)
            .map(|n| match n {
                3 => "three\n".to_string(),
                18 => "eighteen\n".to_string(),
                n => format!("{n}\n"),
            })
            .collect();
        let diff = unified_diff(&before, &after);
        assert_eq!(
            diff,
            "@@ -1,5 +1,5 @@\n 1\n 2\n-3\n+three\n 4\n 5\n@@ -16,5 +16,5 @@\n 16\n 17\n-18\n+eighteen\n 19\n 20\n"
        );
    }

    #[test]
    fn host_states_diff_by_item() {
        let a = HostState {
            items: vec![
                ("ip -4 route".into(), "default via 192.0.2.1 dev veth0\n".into()),
                ("nft list ruleset".into(), String::new()),
            ],
        };
        let mut b = a.clone();
        assert_eq!(a.diff(&b), None);
        b.items[1].1 = "table inet tunlab_step05_ks_tun0 {\n}\n".into();
        let diff = a.diff(&b).unwrap();
        assert!(
            diff.starts_with("--- nft list ruleset before\n+++ nft list ruleset after\n@@ -0,0 +1,2 @@\n")
        );
        assert!(!diff.contains("ip -4 route"));
    }

    #[test]
    fn reads_the_state_file_from_the_log() {
        let log = "INFO  host: route 0.0.0.0/1 dev tun0\n\
                   INFO  all traffic now goes through tun0 (state in /run/tunlab/step05-tl-1-0-client1-tun0.state)\n";
        assert_eq!(
            state_in_log(log),
            Some(PathBuf::from("/run/tunlab/step05-tl-1-0-client1-tun0.state"))
        );
        assert_eq!(state_in_log("INFO  tun0 is up"), None);
    }

    #[test]
    fn reads_host_lines() {
        let log = "[.. INFO  step05_full_tunnel::journal] host: route 0.0.0.0/1 dev tun0\n\
                   [.. INFO  step05_full_tunnel] all traffic now goes through tun0\n\
                   [.. INFO  step05_full_tunnel::journal] host: undo route 0.0.0.0/1 dev tun0\n";
        assert_eq!(
            host_lines(log),
            [
                "host: route 0.0.0.0/1 dev tun0",
                "host: undo route 0.0.0.0/1 dev tun0"
            ]
        );
    }
}
