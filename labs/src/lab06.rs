//! Lab 06: publish a service that listens only on the client's 127.0.0.1,
//! through the server, in two designs.
//!
//! Three hosts: `client` (192.0.2.2) on a link of its own to `server`
//! (192.0.2.1), and `internet` (198.51.100.2), the visitor, behind the
//! server (198.51.100.1). The visitor has no route to the client's link: it
//! can only reach the server. On the client, three services listen on
//! 127.0.0.1 only (`labs/06-localhost/services.py`): a web page on port
//! 8080, a TCP echo and a UDP echo on port 9000. Nothing outside the client
//! can reach them, not even the server on the same link.
//!
//! Layer 4, like bore and ngrok: `step06-localhost server` on the server,
//! and one `step06-localhost expose` per port on the client. The client
//! keeps an encrypted control connection to the server, the server listens
//! on the public port, and each visitor's connection becomes a stream
//! inside the control connection, which the client connects to
//! 127.0.0.1:PORT. Layer 3, like a VPN with port forwarding:
//! `step06-localhost vpn-server --forward 18080=10.0.0.2:8080` (step 05's
//! server, plus a DNAT of the public port to the client's tunnel address)
//! and `vpn-client --deliver 8080` (step 05's client, plus a DNAT of what
//! arrives on the tunnel to 127.0.0.1, and `route_localnet` on the TUN
//! device so that the kernel lets it).
//!
//! For each design the lab checks that the visitor gets the client's page
//! through the public port, that 50 concurrent connections each echo 1 MB
//! intact, that UDP datagrams are echoed, that a client killed with
//! SIGKILL and started again is back on the same public port within
//! seconds, and that a client with a key the server does not list gets
//! nothing. It records each host's routes, rules, nftables ruleset and
//! sysctls before anything starts, and checks that the layer-4 programs
//! change none of it, and that the layer-3 programs put everything back,
//! on a normal exit and, after SIGKILL, with `step06-localhost down`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use crate::captures::verify_checksums;
use crate::doctor::{Kernel, Needs};
use crate::env;
use crate::hoststate::{
    Down, FORWARDING, HostState, ROUTE_LOCALNET, check_unchanged, host_lines, state_in_log,
};
use crate::keys::{KeyPair, Keys};
use crate::labs::{Options, Shell};
use crate::netns::{Host, STEP_STATE_DIR};
use crate::process::{Capture, CaptureOptions, READY_TIMEOUT, Running, path_arg};
use crate::report::Report;
use crate::steplog::handshake_line;
use crate::topology::{self, Net, TUN, TUNNEL_PORT, internet, tunnel, underlay};

pub const PACKAGE: &str = "step06-localhost";
/// What the lab needs from the machine.
pub const NEEDS: Needs = Needs {
    tools: &["ip", "ss", "tcpdump", "nft", "curl", "python3"],
    kernel: &[Kernel::Tun, Kernel::Netns, Kernel::Veth, Kernel::Nftables],
    binaries: &[(PACKAGE, PACKAGE)],
};
/// What recording the fixtures needs besides: turning off checksum
/// offload on every veth.
pub const FIXTURE_TOOLS: &[&str] = &["ethtool"];
/// The layer-4 server's control port.
pub const CONTROL_PORT: u16 = 7835;
/// The client's services, on 127.0.0.1.
pub const HTTP_PORT: u16 = 8080;
pub const ECHO_PORT: u16 = 9000;
/// The public ports of the layer-3 design (the layer-4 design publishes
/// each service on its own port number).
pub const L3_HTTP_PORT: u16 = 18080;
pub const L3_ECHO_PORT: u16 = 19000;
/// The load on the echo service: this many connections at once, each
/// sending this many bytes and reading them back.
pub const ECHO_CONNECTIONS: usize = 50;
pub const ECHO_BYTES: usize = 1_000_000;
/// The UDP datagrams sent to the echo, one at a time.
pub const UDP_DATAGRAMS: usize = 20;
/// The longest a client killed with SIGKILL may take to serve again.
pub const RESTART_LIMIT: Duration = Duration::from_secs(10);
/// The sysctls either design might change: forwarding (the layer-3
/// server) and accepting 127.0.0.0/8 on other interfaces than `lo` (the
/// layer-3 client, on its TUN device, which goes with it).
pub const SYSCTLS: [&str; 3] = [FORWARDING[0], FORWARDING[1], ROUTE_LOCALNET];
/// The nftables table of the layer-3 programs: `inet tunlab_step06_<tun>`.
pub const TABLE_PREFIX: &str = "tunlab_step06_";
/// The ends whose keys the lab makes: the server, the client, a second
/// client the server also lists, and a stranger it does not.
pub const KEY_NAMES: &[&str] = &["server", "client", "other", "stranger"];

/// The client's services and the visitor's load.
pub const SERVICES_PY: &str = include_str!("../06-localhost/services.py");
pub const VISITOR_PY: &str = include_str!("../06-localhost/visitor.py");

/// The three hosts, the client's services running. Drops in field order:
/// the services, then the hosts.
pub struct Hosts {
    pub services: Running,
    pub client: Host,
    pub server: Host,
    pub internet: Host,
    /// The state of the client and the server before any step started.
    pub before_client: HostState,
    pub before_server: HostState,
    pub binary: PathBuf,
    pub out: PathBuf,
    /// `visitor.py`, written into `out`.
    visitor: String,
    _net: Net,
}

/// Builds the hosts and links, records the client's and the server's
/// state, and starts the client's services. `offload_off`: turn off
/// transmit checksum offload on every veth, so that captures on the
/// server show real checksums (the server's own segments too).
pub fn hosts(out: &Path, tag: &str, offload_off: bool, report: &mut Report) -> anyhow::Result<Hosts> {
    if offload_off {
        env::require_tools(FIXTURE_TOOLS)?;
    }
    let binary = env::step_binary(PACKAGE)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let spec = topology::three_hosts();
    let net = spec.build()?;
    let (server, client, internet) = (net.host("server")?, net.host("client")?, net.host("internet")?);
    if offload_off {
        for link in &spec.links {
            for end in [&link.a, &link.b] {
                net.host(end.host)?.tx_offload_off(end.interface)?;
            }
        }
    }
    report.note(format!(
        "hosts: client {} ({}) linked to server {} ({}); the visitor, internet \
         {} ({}), behind the server's {}, with no route to {}",
        underlay::CLIENT,
        client.netns(),
        underlay::SERVER,
        server.netns(),
        internet::HOST,
        internet.netns(),
        internet::SERVER,
        underlay::NET
    ));
    let before_client = host_state(&client)?;
    let before_server = host_state(&server)?;
    before_client.save(&out.join(format!("state-client-before-{tag}.txt")))?;
    before_server.save(&out.join(format!("state-server-before-{tag}.txt")))?;

    let script = out.join("services.py");
    std::fs::write(&script, SERVICES_PY).with_context(|| format!("writing {}", script.display()))?;
    let visitor = out.join("visitor.py");
    std::fs::write(&visitor, VISITOR_PY).with_context(|| format!("writing {}", visitor.display()))?;
    let services = Running::start(
        &client,
        Path::new("python3"),
        &[path_arg(&script)?, "--name".into(), "client".into()],
        &out.join(format!("services-{tag}.log")),
    )?;
    let ready = client
        .wait_for_listener(HTTP_PORT)
        .and_then(|()| client.wait_for_listener(ECHO_PORT))
        .and_then(|()| client.wait_for_udp_listener(ECHO_PORT));
    if let Err(e) = ready {
        bail!(
            "{e:#}: the client's services did not start; their log:\n{}",
            services.log_text()
        );
    }
    Ok(Hosts {
        services,
        client,
        server,
        internet,
        before_client,
        before_server,
        binary,
        out: out.to_path_buf(),
        visitor: path_arg(&visitor)?,
        _net: net,
    })
}

// ---------------------------------------------------------------------
// Host state.

/// The state of a lab 06 host: lab 05's (routes and rules of both
/// families, the nftables ruleset, the forwarding sysctls) and
/// `route_localnet`.
pub fn host_state(host: &Host) -> anyhow::Result<HostState> {
    HostState::read(host, &SYSCTLS, false)
}

/// A check that `host`'s state is what it was before, with a unified diff
/// when it is not; saves the state as `state-<file>.txt`.
fn same_state(
    name: &str,
    host: &Host,
    before: &HostState,
    file: &str,
    out: &Path,
    report: &mut Report,
) -> anyhow::Result<bool> {
    let now = host_state(host)?;
    now.save(&out.join(format!("state-{file}.txt")))?;
    Ok(check_unchanged(report, name, before, &now, || {
        now.summary() + &format!(", route_localnet {}", now.item(ROUTE_LOCALNET).trim())
    }))
}

/// The layer-3 table of `host`, its whole text, if there is one.
fn step_table(host: &Host) -> Option<(String, String)> {
    let line = host.nft_tables().into_iter().find(|t| t.contains(TABLE_PREFIX))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let (family, name) = (words.get(1)?.to_string(), words.get(2)?.to_string());
    let text = host
        .run("nft", ["list", "table", &family, &name])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    Some((format!("{family} {name}"), text))
}

// ---------------------------------------------------------------------
// Traffic.

/// Where the visitor reaches the server's `port`.
fn public(port: u16) -> SocketAddr {
    SocketAddr::new(internet::SERVER.into(), port)
}

fn page_url(port: u16) -> String {
    format!("http://{}/", public(port))
}

/// The client's page, as the services write it.
fn is_page(body: &str) -> bool {
    body.starts_with("hello from client: you are ")
}

/// Who the service saw: the address after "you are".
fn seen_as(body: &str) -> &str {
    body.rsplit("you are ").next().unwrap_or("").trim()
}

/// Runs `visitor.py ARGS` in the internet host: (exit status ok, its last
/// line, every line).
fn visitor(hosts: &Hosts, args: &[String]) -> anyhow::Result<(bool, String, String)> {
    let mut all = vec![hosts.visitor.clone()];
    all.extend(args.iter().cloned());
    let out = hosts
        .internet
        .command("timeout")
        .arg("60")
        .arg("python3")
        .args(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .context("running visitor.py in internet")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let last = text.lines().last().unwrap_or("no output").trim().to_string();
    Ok((out.status.success(), last, text))
}

/// Check 1: the visitor gets the client's page through `port`.
fn page(hosts: &Hosts, design: &str, port: u16, report: &mut Report) -> anyhow::Result<Option<String>> {
    let url = page_url(port);
    let answer = hosts.internet.curl(&url, 5.0)?;
    let ok = answer.as_deref().is_ok_and(is_page);
    report.check(
        format!("{design}: the visitor gets the client's page at {url}"),
        ok,
        match &answer {
            Ok(body) => format!(
                "{body:?}: the service on the client's 127.0.0.1:{HTTP_PORT} saw the connection come from {}",
                seen_as(body)
            ),
            Err(e) => format!("curl failed: {e}"),
        },
    );
    Ok(answer
        .ok()
        .filter(|b| is_page(b))
        .map(|b| seen_as(&b).to_string()))
}

/// Check 2: 50 visitors at once each echo 1 MB through `port`.
fn echo(hosts: &Hosts, design: &str, port: u16, report: &mut Report) -> anyhow::Result<()> {
    let (ok, last, all) = visitor(
        hosts,
        &[
            "tcp".into(),
            internet::SERVER.to_string(),
            port.to_string(),
            "--connections".into(),
            ECHO_CONNECTIONS.to_string(),
            "--bytes".into(),
            ECHO_BYTES.to_string(),
            "--timeout".into(),
            "40".into(),
        ],
    )?;
    let bad: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("connection "))
        .take(3)
        .collect();
    report.check(
        format!(
            "{design}: {ECHO_CONNECTIONS} visitors at once each echo {} MB through {}, every sha256 matches",
            ECHO_BYTES / 1_000_000,
            public(port)
        ),
        ok,
        if bad.is_empty() {
            last
        } else {
            format!("{last}; such as: {}", bad.join("; "))
        },
    );
    Ok(())
}

/// Check 3: UDP datagrams echoed through `port`.
fn udp(
    hosts: &Hosts,
    design: &str,
    port: u16,
    missing: Option<&str>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (ok, last, _) = visitor(
        hosts,
        &[
            "udp".into(),
            internet::SERVER.to_string(),
            port.to_string(),
            "--count".into(),
            UDP_DATAGRAMS.to_string(),
        ],
    )?;
    report.check(
        format!(
            "{design}: {UDP_DATAGRAMS} UDP datagrams to {} all come back equal",
            public(port)
        ),
        ok,
        match missing {
            Some(why) => format!("{last} ({why})"),
            None => last,
        },
    );
    Ok(())
}

/// Polls the page at `port` from the visitor until it answers, for up to
/// 15 s; the time from `since` to the first answer.
fn back_after(hosts: &Hosts, port: u16, since: Instant) -> anyhow::Result<Option<Duration>> {
    let deadline = since + Duration::from_secs(15);
    while Instant::now() < deadline {
        if hosts
            .internet
            .curl(&page_url(port), 1.0)?
            .is_ok_and(|b| is_page(&b))
        {
            return Ok(Some(since.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(None)
}

fn restart_check(design: &str, port: u16, back: Option<Duration>, note: &str, report: &mut Report) {
    report.check(
        format!(
            "{design}: a client killed with SIGKILL and started again serves on {} again within {} s",
            public(port),
            RESTART_LIMIT.as_secs()
        ),
        back.is_some_and(|d| d < RESTART_LIMIT),
        match back {
            Some(d) => format!(
                "the page came back {:.2} s after the SIGKILL{note}",
                d.as_secs_f64()
            ),
            None => format!("not back 15 s after the SIGKILL{note}"),
        },
    );
}

/// Whether `binary ARGS --help` mentions `word`: what the binary can do
/// now (it is still growing).
fn help_mentions(binary: &Path, args: &[&str], word: &str) -> bool {
    Command::new(binary)
        .args(args)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(word))
}

// ---------------------------------------------------------------------
// Layer 4.

/// The layer-4 server's control address, on the client's link.
fn control() -> SocketAddr {
    SocketAddr::new(underlay::SERVER.into(), CONTROL_PORT)
}

/// How the layer-4 server and the exposing clients are started.
struct L4<'a> {
    hosts: &'a Hosts,
    keys: &'a Keys,
    /// `expose --udp` exists.
    udp: bool,
}

impl L4<'_> {
    fn server(&self, tag: &str) -> anyhow::Result<Running> {
        let h = self.hosts;
        let args: Vec<String> = [
            "server",
            "--listen",
            &control().to_string(),
            "--key",
            self.keys["server"].file_str()?,
            "--peer",
            &self.keys["client"].public,
            "--peer",
            &self.keys["other"].public,
            "--public-ip",
            &internet::SERVER.to_string(),
        ]
        .map(String::from)
        .into();
        let log = h.out.join(format!("server-{tag}.log"));
        let mut step = Running::start(&h.server, &h.binary, &args, &log)?;
        step.wait_until("the control port", READY_TIMEOUT, || {
            h.server.wait_for_listener(CONTROL_PORT).is_ok()
        })?;
        Ok(step)
    }

    /// Starts `expose PORT --remote-port PORT` (and `--udp` for the echo)
    /// with `key`, logging to `expose-<name>.log`. Does not wait.
    fn expose(
        &self,
        key: &KeyPair,
        port: u16,
        remote: u16,
        udp: bool,
        keylog: Option<&Path>,
        name: &str,
    ) -> anyhow::Result<Running> {
        let h = self.hosts;
        let mut args: Vec<String> = [
            "expose",
            &port.to_string(),
            "--server",
            &control().to_string(),
            "--key",
            key.file_str()?,
            "--server-key",
            &self.keys["server"].public,
            "--remote-port",
            &remote.to_string(),
        ]
        .map(String::from)
        .into();
        if udp && self.udp {
            args.push("--udp".into());
        }
        if let Some(keylog) = keylog {
            let _ = std::fs::remove_file(keylog);
            args.extend(["--keylog".into(), path_arg(keylog)?]);
        }
        let log = h.out.join(format!("expose-{name}.log"));
        Running::start(&h.client, &h.binary, &args, &log)
    }

    /// Starts an expose and waits until the server listens on its port.
    fn exposed(&self, port: u16, udp: bool, keylog: Option<&Path>, name: &str) -> anyhow::Result<Running> {
        let mut step = self.expose(&self.keys["client"], port, port, udp, keylog, name)?;
        let server = &self.hosts.server;
        let log = step.log().to_path_buf();
        step.wait_until(&format!("exposing port {port}"), READY_TIMEOUT, || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("exposed at"))
                && server.wait_for_listener(port).is_ok()
                && (!(udp && self.udp) || server.wait_for_udp_listener(port).is_ok())
        })?;
        Ok(step)
    }
}

/// The layer-4 design, checks 1 to 6.
fn layer4(hosts: &Hosts, keys: &Keys, report: &mut Report) -> anyhow::Result<()> {
    let udp_flag = help_mentions(&hosts.binary, &["expose"], "--udp");
    let l4 = L4 {
        hosts,
        keys,
        udp: udp_flag,
    };
    let server = l4.server("l4")?;
    let http = l4.exposed(HTTP_PORT, false, None, "8080")?;
    let echo_step = l4.exposed(ECHO_PORT, true, None, "9000")?;
    report.note(format!(
        "started {PACKAGE} server --listen {} --public-ip {} (key {}), and in the client expose {HTTP_PORT} \
         --remote-port {HTTP_PORT} and expose {ECHO_PORT} --remote-port {ECHO_PORT}{} (key {})",
        control(),
        internet::SERVER,
        keys["server"].short(),
        if udp_flag { " --udp" } else { "" },
        keys["client"].short()
    ));
    let short = keys["client"].short();
    let exposed: Vec<String> = server
        .log_text()
        .lines()
        .filter(|l| l.contains(" exposed on "))
        .map(|l| l[l.find(short).unwrap_or(0)..].trim().to_string())
        .collect();
    report.check(
        format!(
            "L4: the server listens on {} and :{ECHO_PORT} for the client",
            public(HTTP_PORT)
        ),
        [HTTP_PORT, ECHO_PORT]
            .iter()
            .all(|&p| exposed.iter().any(|l| l.ends_with(&public(p).to_string()))),
        format!("its log: {}", exposed.join("; ")),
    );
    let running_client = host_state(&hosts.client)?;
    let running_server = host_state(&hosts.server)?;
    let diffs = [
        ("client", hosts.before_client.diff(&running_client)),
        ("server", hosts.before_server.diff(&running_server)),
    ];
    report.check(
        "L4: while it runs, neither the client nor the server has changed its routes, rules, nftables or sysctls",
        diffs.iter().all(|(_, d)| d.is_none()),
        diffs
            .iter()
            .map(|(n, d)| match d {
                None => format!("{n}: as before"),
                Some(d) => format!("{n}:\n{d}"),
            })
            .collect::<Vec<_>>()
            .join("; "),
    );

    if let Some(seen) = page(hosts, "L4", HTTP_PORT, report)? {
        report.note(format!(
            "the service saw {seen}: the expose process's own connection to 127.0.0.1:{HTTP_PORT}, not the visitor"
        ));
    }
    echo(hosts, "L4", ECHO_PORT, report)?;
    udp(
        hosts,
        "L4",
        ECHO_PORT,
        (!udp_flag).then_some("this build of expose has no --udp"),
        report,
    )?;
    wrong_key_l4(&l4, &server, report)?;
    replayed_initiation(&l4, &server, report)?;
    silent_visitors(hosts, report)?;
    port_in_use(&l4, report)?;

    // Check 4: SIGKILL and start again.
    let mut http = http;
    http.stop(Signal::SIGKILL, Duration::from_secs(5))?;
    let killed = Instant::now();
    let again = l4.expose(&keys["client"], HTTP_PORT, HTTP_PORT, false, None, "8080-again")?;
    let back = back_after(hosts, HTTP_PORT, killed)?;
    let replaced = server
        .log_text()
        .lines()
        .filter(|l| l.contains(short) && (l.contains(" gone: ") || l.contains("replaced")))
        .map(|l| l[l.find(short).unwrap_or(0)..].trim().to_string())
        .collect::<Vec<_>>();
    let replaced = if replaced.is_empty() {
        String::new()
    } else {
        format!("; the server: {}", replaced.join("; "))
    };
    restart_check("L4", HTTP_PORT, back, &replaced, report);

    // Check 6: nothing changed, and nothing after the end either.
    let mut stopped = Vec::new();
    for (name, mut step) in [
        ("expose 8080", again),
        ("expose 9000", echo_step),
        ("server", server),
    ] {
        let status = step.stop(Signal::SIGTERM, Duration::from_secs(5))?;
        stopped.push(format!("{name}: {status}"));
    }
    report.note(format!("stopped with SIGTERM: {}", stopped.join("; ")));
    for (name, host, before) in [
        ("client", &hosts.client, &hosts.before_client),
        ("server", &hosts.server, &hosts.before_server),
    ] {
        same_state(
            &format!("L4: after exit, the {name}'s host state"),
            host,
            before,
            &format!("{name}-after-l4"),
            &hosts.out,
            report,
        )?;
    }
    Ok(())
}

/// Check 5, layer 4: a client whose key the server does not list.
fn wrong_key_l4(l4: &L4<'_>, server: &Running, report: &mut Report) -> anyhow::Result<()> {
    const PORT: u16 = 8081;
    let refusals = || -> Vec<String> {
        server
            .log_text()
            .lines()
            .filter(|l| l.contains("refused"))
            .map(|l| l.trim().to_string())
            .collect()
    };
    let before = refusals().len();
    let mut step = l4.expose(&l4.keys["stranger"], HTTP_PORT, PORT, false, None, "stranger")?;
    let status = step.exits_within(Duration::from_secs(5))?;
    let refusals: Vec<String> = refusals().into_iter().skip(before).collect();
    let listening = l4.hosts.server.listens("tcp", PORT);
    let said = step.log_text();
    report.check(
        format!(
            "L4: a client whose key the server does not list gets no port ({})",
            public(PORT)
        ),
        !listening && !said.contains("exposed at") && !refusals.is_empty(),
        format!(
            "the client {}; its last words: {:?}; the server: {}",
            match status {
                Some(s) => format!("exited ({s})"),
                None => "was still trying after 5 s".into(),
            },
            said.lines().last().unwrap_or("").trim(),
            refusals
                .first()
                .map(|l| l[l.find("] ").map_or(0, |a| a + 2)..].to_string())
                .unwrap_or_else(|| "no refusal in its log".into())
        ),
    );
    Ok(())
}

/// Sends a record (hex) to the control port, and prints how many bytes
/// came back before the server closed (or 5 s passed).
const KNOCK_PY: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(bytes.fromhex(sys.argv[3]))
got = 0
try:
    while True:
        b = s.recv(4096)
        if not b:
            break
        got += len(b)
        if got >= int(sys.argv[4]):
            break
except (socket.timeout, ConnectionResetError):
    pass
print(got)
"#;

/// Check, layer 4: one initiation of the client's, made now, sent twice
/// over two connections: the first is answered, the replay is closed
/// without a word and counted as a replay in the server's log.
fn replayed_initiation(l4: &L4<'_>, server: &Running, report: &mut Report) -> anyhow::Result<()> {
    use step04_crypto::entropy::Entropy;
    use step04_crypto::noise::{self, Identity};
    use step04_crypto::wire::{INITIATION_LEN, RESPONSE_LEN};
    let client = &l4.keys["client"];
    let text = std::fs::read_to_string(&client.file)
        .with_context(|| format!("reading {}", client.file.display()))?;
    let secret = step04_crypto::keys::parse_secret(&text).context("the client's key file")?;
    let server_key = step04_crypto::keys::parse_public(&l4.keys["server"].public)?;
    let ephemeral = step04_crypto::entropy::OsEntropy.ephemeral();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut record = [0u8; 2 + INITIATION_LEN];
    record[..2].copy_from_slice(&(INITIATION_LEN as u16).to_be_bytes());
    noise::initiate(
        &Identity::new(secret),
        &server_key,
        ephemeral,
        0,
        noise::tai64n(now),
        &mut record[2..],
    )
    .map_err(|e| anyhow::anyhow!("making an initiation: {e:?}"))?;
    let hex: String = record.iter().map(|b| format!("{b:02x}")).collect();
    let replays = || server.log_text().matches("a replayed initiation").count();
    let before = replays();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let said = l4.hosts.client.stdout(
            "python3",
            [
                "-c",
                KNOCK_PY,
                &underlay::SERVER.to_string(),
                &CONTROL_PORT.to_string(),
                &hex,
                &(2 + RESPONSE_LEN).to_string(),
            ],
        )?;
        answers.push(said.trim().parse::<usize>().unwrap_or(usize::MAX));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while replays() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let logged = replays() - before;
    report.check(
        "L4: a replayed initiation gets no answer, and the server says it was a replay",
        answers == [2 + RESPONSE_LEN, 0] && logged == 1,
        format!(
            "the initiation answered with {} bytes, its replay with {}; replays in the server's log: {logged}",
            answers[0], answers[1]
        ),
    );
    Ok(())
}

/// Connections one visitor host opens to the page and holds without a
/// word: more than the server's cap on streams per address (64 by
/// default).
const SILENT_VISITORS: usize = 100;

/// Opens argv[3] connections to argv[1]:argv[2] and sends nothing; after
/// a second prints how many are still open and how many the server
/// closed, then holds them until its stdin closes.
const SILENT_PY: &str = r#"
import socket, sys, time
socks = [socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) for _ in range(int(sys.argv[3]))]
time.sleep(1.0)
closed = 0
for s in socks:
    s.settimeout(0.01)
    try:
        if not s.recv(1):
            closed += 1
    except socket.timeout:
        pass
    except OSError:
        closed += 1
print(len(socks) - closed, closed, flush=True)
sys.stdin.read()
"#;

/// Check, layer 4: one host opens [`SILENT_VISITORS`] connections to the
/// public page port and holds them without a word. The server gives it
/// streams up to its per-address cap and closes the rest at once; while
/// they are held, the same host is refused and another address (the
/// server's own) still gets the page.
fn silent_visitors(hosts: &Hosts, report: &mut Report) -> anyhow::Result<()> {
    use std::io::BufRead;
    let mut child = hosts
        .internet
        .command("python3")
        .args([
            "-c",
            SILENT_PY,
            &internet::SERVER.to_string(),
            &HTTP_PORT.to_string(),
            &SILENT_VISITORS.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the silent visitors")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    let counts: Vec<usize> = line.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    let same = hosts.internet.curl(&page_url(HTTP_PORT), 5.0)?;
    let other = hosts.server.curl(&page_url(HTTP_PORT), 5.0)?;
    drop(child.stdin.take());
    let _ = child.wait();
    let (open, closed) = match counts[..] {
        [open, closed] => (open, closed),
        _ => (0, 0),
    };
    let cap = step06_localhost::policy::VisitorLimits::default().per_source;
    report.check(
        format!(
            "L4: one host holding {SILENT_VISITORS} silent visitors gets {cap} streams, and another address still gets the page"
        ),
        open == cap && closed == SILENT_VISITORS - cap && same.is_err() && other.as_deref().is_ok_and(is_page),
        format!(
            "{open} held open, {closed} closed at once; while they are held, the same host: {}; the server's own address: {}",
            match &same {
                Ok(_) => "the page".to_string(),
                Err(e) => e.clone(),
            },
            match &other {
                Ok(body) if is_page(body) => "the page".to_string(),
                Ok(body) => format!("{body:?}"),
                Err(e) => e.clone(),
            }
        ),
    );
    Ok(())
}

/// A second client (its key listed) asks for a port the first holds.
fn port_in_use(l4: &L4<'_>, report: &mut Report) -> anyhow::Result<()> {
    let mut step = l4.expose(&l4.keys["other"], HTTP_PORT, HTTP_PORT, false, None, "other")?;
    let status = step.exits_within(Duration::from_secs(5))?;
    let said = step.log_line("port-in-use");
    let still = l4.hosts.internet.curl(&page_url(HTTP_PORT), 5.0)?;
    report.check(
        format!("L4: a second client asking for port {HTTP_PORT}, which the first holds, gets port-in-use"),
        said.is_some() && status.is_some_and(|s| !s.success()) && still.as_deref().is_ok_and(is_page),
        format!(
            "{}; it {}; the page still comes from the first client: {}",
            said.unwrap_or_else(|| "no port-in-use in its log".into()),
            match status {
                Some(s) => format!("exited ({s})"),
                None => "was still running after 5 s".into(),
            },
            still.is_ok()
        ),
    );
    Ok(())
}

// ---------------------------------------------------------------------
// Layer 3.

/// How the layer-3 ends are started.
struct L3<'a> {
    hosts: &'a Hosts,
    keys: &'a Keys,
}

impl L3<'_> {
    fn server(&self, tag: &str, pcap: Option<&Path>) -> anyhow::Result<Running> {
        let h = self.hosts;
        let listen = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), TUNNEL_PORT);
        let peer = format!("{}={}", self.keys["client"].public, tunnel::host(tunnel::CLIENT));
        let address = tunnel::cidr(tunnel::SERVER).to_string();
        let mut args: Vec<String> = [
            "vpn-server",
            "--listen",
            &listen.to_string(),
            "--key",
            self.keys["server"].file_str()?,
            "--peer",
            &peer,
            "--address",
            &address,
        ]
        .map(String::from)
        .into();
        for (public, private) in [(L3_HTTP_PORT, HTTP_PORT), (L3_ECHO_PORT, ECHO_PORT)] {
            let to = SocketAddr::new(tunnel::CLIENT.into(), private);
            args.extend(["--forward".into(), format!("{public}={to}")]);
        }
        if let Some(pcap) = pcap {
            args.extend(["--pcap".into(), path_arg(pcap)?]);
        }
        let log = h.out.join(format!("vpn-server-{tag}.log"));
        let mut step = Running::start(&h.server, &h.binary, &args, &log)?;
        step.wait_for_tun(TUN, &address)?;
        step.wait_until("the server's socket and its table", READY_TIMEOUT, || {
            h.server.wait_for_udp_listener(TUNNEL_PORT).is_ok() && step_table(&h.server).is_some()
        })?;
        Ok(step)
    }

    /// The arguments of a client with `key` that reaches the server at
    /// `server` and takes `address` (`--deliver` both services when
    /// `deliver`).
    fn client_args(
        &self,
        key: &KeyPair,
        server: Ipv4Addr,
        address: Ipv4Addr,
        deliver: bool,
    ) -> anyhow::Result<Vec<String>> {
        let mut args: Vec<String> = [
            "vpn-client",
            "--server",
            &SocketAddr::new(server.into(), TUNNEL_PORT).to_string(),
            "--key",
            key.file_str()?,
            "--server-key",
            &self.keys["server"].public,
            "--address",
            &tunnel::cidr(address).to_string(),
        ]
        .map(String::from)
        .into();
        if deliver {
            for port in [HTTP_PORT, ECHO_PORT] {
                args.extend(["--deliver".into(), port.to_string()]);
            }
        }
        Ok(args)
    }

    /// Starts the client and waits for its handshake, its table and
    /// `route_localnet` on its TUN device.
    fn client(&self, tag: &str) -> anyhow::Result<Running> {
        let h = self.hosts;
        let args = self.client_args(&self.keys["client"], underlay::SERVER, tunnel::CLIENT, true)?;
        let log = h.out.join(format!("vpn-client-{tag}.log"));
        let mut step = Running::start(&h.client, &h.binary, &args, &log)?;
        step.wait_for_tun(TUN, tunnel::cidr(tunnel::CLIENT))?;
        step.wait_for_handshake()?;
        let key = format!("net.ipv4.conf.{TUN}.route_localnet");
        step.wait_until("route_localnet and the client's table", READY_TIMEOUT, || {
            h.client.sysctl(&key).is_ok_and(|v| v == "1") && step_table(&h.client).is_some()
        })?;
        Ok(step)
    }
}

/// The layer-3 design, checks 1 to 6.
fn layer3(hosts: &Hosts, keys: &Keys, report: &mut Report) -> anyhow::Result<()> {
    if !help_mentions(&hosts.binary, &[], "vpn-server") || !help_mentions(&hosts.binary, &[], "vpn-client") {
        report.check(
            format!("L3: {PACKAGE} has the vpn-server and vpn-client commands"),
            false,
            format!("`{PACKAGE} --help` lists neither vpn-server nor vpn-client: the layer-3 design is not in this build"),
        );
        return Ok(());
    }
    let l3 = L3 { hosts, keys };
    let server = l3.server("l3", None)?;
    let client = l3.client("l3")?;
    let inner = tunnel::CLIENT;
    report.note(format!(
        "started {PACKAGE} vpn-server --listen 0.0.0.0:{TUNNEL_PORT} --address {} --peer C={}/32 \
         --forward {L3_HTTP_PORT}={inner}:{HTTP_PORT} --forward {L3_ECHO_PORT}={inner}:{ECHO_PORT} \
         (key {}), and in the client vpn-client --address {} --deliver {HTTP_PORT} --deliver {ECHO_PORT} \
         (key {}); handshake complete",
        tunnel::cidr(tunnel::SERVER),
        inner,
        keys["server"].short(),
        tunnel::cidr(inner),
        keys["client"].short()
    ));
    running_state(hosts, &server, &client, report)?;
    if let Some(seen) = page(hosts, "L3", L3_HTTP_PORT, report)? {
        report.note(format!(
            "the service saw {seen}: {}",
            if seen == internet::HOST.to_string() {
                "the visitor's own address, carried through the tunnel"
            } else if seen == tunnel::SERVER.to_string() {
                "the server's tunnel address: the server masquerades what it forwards into the tunnel"
            } else {
                "neither the visitor nor the server's tunnel address"
            }
        ));
    }
    echo(hosts, "L3", L3_ECHO_PORT, report)?;
    udp(hosts, "L3", L3_ECHO_PORT, None, report)?;
    wrong_key_l3(&l3, report)?;

    // Check 4 and 6: SIGKILL, down, the state as before, start again.
    let state = state_in_log(&client.log_text());
    let mut client = client;
    client.stop(Signal::SIGKILL, Duration::from_secs(5))?;
    let killed = Instant::now();
    down(hosts, &hosts.client, "client", state.as_deref(), report)?;
    same_state(
        "L3: after SIGKILL and down, the client's host state",
        &hosts.client,
        &hosts.before_client,
        "client-after-l3-down",
        &hosts.out,
        report,
    )?;
    let client = l3.client("l3-again")?;
    let back = back_after(hosts, L3_HTTP_PORT, killed)?;
    restart_check(
        "L3",
        L3_HTTP_PORT,
        back,
        " (including down and reading the host's state)",
        report,
    );
    stop(hosts, client, "client", "l3", report)?;

    // The server: SIGKILL and down, then a fresh pair, then a normal end.
    let state = state_in_log(&server.log_text());
    let mut server = server;
    server.stop(Signal::SIGKILL, Duration::from_secs(5))?;
    down(hosts, &hosts.server, "server", state.as_deref(), report)?;
    same_state(
        "L3: after SIGKILL and down, the server's host state",
        &hosts.server,
        &hosts.before_server,
        "server-after-l3-down",
        &hosts.out,
        report,
    )?;
    let server = l3.server("l3-fresh", None)?;
    let client = l3.client("l3-fresh")?;
    let answer = hosts.internet.curl(&page_url(L3_HTTP_PORT), 5.0)?;
    report.check(
        "L3: a fresh server and client on the restored hosts serve the page again",
        answer.as_deref().is_ok_and(is_page),
        format!("{answer:?}"),
    );
    stop(hosts, client, "client", "l3-fresh", report)?;
    stop(hosts, server, "server", "l3-fresh", report)?;
    Ok(())
}

/// What each layer-3 end changed while it runs.
fn running_state(
    hosts: &Hosts,
    server: &Running,
    client: &Running,
    report: &mut Report,
) -> anyhow::Result<()> {
    let server_now = host_state(&hosts.server)?;
    server_now.save(&hosts.out.join("state-server-l3-running.txt"))?;
    let client_now = host_state(&hosts.client)?;
    client_now.save(&hosts.out.join("state-client-l3-running.txt"))?;
    for (name, before, now) in [
        ("server", &hosts.before_server, &server_now),
        ("client", &hosts.before_client, &client_now),
    ] {
        if let Some(diff) = before.diff(now) {
            std::fs::write(hosts.out.join(format!("{name}-l3-running.diff")), diff)?;
        }
    }
    let inner = tunnel::CLIENT.to_string();
    let (name, table) = step_table(&hosts.server).unwrap_or_default();
    let forwards = [L3_HTTP_PORT, L3_ECHO_PORT].iter().all(|p| {
        table
            .lines()
            .any(|l| l.contains(&format!("dport {p}")) && l.contains("dnat") && l.contains(&inner))
    });
    let ip_forward = server_now.item(FORWARDING[0]).trim();
    report.check(
        format!(
            "L3: the server forwards and DNATs {L3_HTTP_PORT} and {L3_ECHO_PORT} to {inner} (table {name})"
        ),
        forwards && ip_forward == "1",
        format!(
            "ip_forward {ip_forward}; {}; its log: {}",
            if forwards {
                "a dnat rule for each public port".to_string()
            } else {
                format!("no dnat to {inner} for each port in:\n{table}")
            },
            host_lines(&server.log_text()).join("; ")
        ),
    );
    let (name, table) = step_table(&hosts.client).unwrap_or_default();
    let delivers = [HTTP_PORT, ECHO_PORT].iter().all(|p| {
        table
            .lines()
            .any(|l| l.contains(&format!("dport {p}")) && l.contains("dnat") && l.contains("127.0.0.1"))
    });
    let localnet = hosts
        .client
        .sysctl(&format!("net.ipv4.conf.{TUN}.route_localnet"))
        .unwrap_or_default();
    report.check(
        format!("L3: the client DNATs {HTTP_PORT} and {ECHO_PORT} from {TUN} to 127.0.0.1, with route_localnet on {TUN} (table {name})"),
        delivers && localnet == "1",
        format!(
            "net.ipv4.conf.{TUN}.route_localnet {localnet}; {}; its log: {}",
            if delivers {
                "a dnat rule to 127.0.0.1 for each port".to_string()
            } else {
                format!("no dnat to 127.0.0.1 for each port in:\n{table}")
            },
            host_lines(&client.log_text()).join("; ")
        ),
    );
    Ok(())
}

/// Check 5, layer 3: a client with an unlisted key, on the visitor's host
/// (which reaches the server's 198.51.100.1:51820), gets no handshake.
fn wrong_key_l3(l3: &L3<'_>, report: &mut Report) -> anyhow::Result<()> {
    let h = l3.hosts;
    let args = l3.client_args(&l3.keys["stranger"], internet::SERVER, tunnel::STRANGER, false)?;
    let mut step = Running::start(
        &h.internet,
        &h.binary,
        &args,
        &h.out.join("vpn-client-stranger.log"),
    )?;
    std::thread::sleep(Duration::from_secs(3));
    let status = step.exits_within(Duration::ZERO)?;
    let said = step.log_text();
    let completed = said.lines().find(|l| handshake_line(l)).map(str::to_string);
    report.check(
        "L3: a client whose key the server does not list gets no handshake",
        completed.is_none(),
        completed.unwrap_or_else(|| {
            format!(
                "in 3 s its log has {} lines about the handshake, none says it completed{}",
                said.lines().filter(|l| l.contains("handshake")).count(),
                status.map_or(String::new(), |s| format!("; it exited ({s})"))
            )
        }),
    );
    Ok(())
}

/// `step06-localhost down` in `host`, after a SIGKILL.
fn down(
    hosts: &Hosts,
    host: &Host,
    name: &str,
    state: Option<&Path>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let state_left = state.is_some_and(Path::exists);
    let down = Down::run(host, &hosts.binary, &hosts.out.join(format!("{name}-down.log")))?;
    report.check(
        format!("L3: {PACKAGE} down in the {name} undoes what the killed {name} left"),
        down.status.success() && !down.undid.is_empty() && state_left && !state.is_some_and(Path::exists),
        format!(
            "{}; the state file {} {} before and {} after; undid: {}",
            down.status,
            state.map_or("(none named in the log)".into(), |p| p.display().to_string()),
            if state_left { "was there" } else { "was not there" },
            if state.is_some_and(Path::exists) {
                "is still there"
            } else {
                "is gone"
            },
            if down.undid.is_empty() {
                format!("nothing ({})", down.stderr.trim())
            } else {
                down.undid.join(", ")
            }
        ),
    );
    Ok(())
}

/// Stops a layer-3 end with SIGTERM; checks its exit status, its host's
/// state and that its state file is gone.
fn stop(hosts: &Hosts, mut step: Running, name: &str, tag: &str, report: &mut Report) -> anyhow::Result<()> {
    step.stop_checked(
        report,
        format!("L3: the {name} ({tag}) exits with status 0 on SIGTERM"),
    )?;
    let (host, before) = match name {
        "client" => (&hosts.client, &hosts.before_client),
        _ => (&hosts.server, &hosts.before_server),
    };
    same_state(
        &format!("L3: after the {name} ({tag}) exits, its host state"),
        host,
        before,
        &format!("{name}-after-{tag}"),
        &hosts.out,
        report,
    )?;
    let state = state_in_log(&step.log_text());
    report.check(
        format!("L3: the {name} ({tag}) leaves no state file in {STEP_STATE_DIR}"),
        state.as_deref().is_none_or(|p| !p.exists()),
        state.map_or("its log names none".into(), |p| {
            format!("{} is gone", p.display())
        }),
    );
    Ok(())
}

// ---------------------------------------------------------------------
// Before either design: the services are on loopback only.

fn loopback_only(hosts: &Hosts, report: &mut Report) -> anyhow::Result<()> {
    let listening = hosts.client.run("ss", ["-Htlnu"])?;
    let lines: Vec<String> = String::from_utf8_lossy(&listening.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let ours: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&format!(":{HTTP_PORT} ")) || l.contains(&format!(":{ECHO_PORT} ")))
        .collect();
    report.check(
        format!("the client's services listen on 127.0.0.1 only ({HTTP_PORT}/tcp, {ECHO_PORT}/tcp, {ECHO_PORT}/udp)"),
        ours.len() == 3 && ours.iter().all(|l| l.contains("127.0.0.1:")),
        ours.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; "),
    );
    let direct = format!("http://{}/", SocketAddr::new(underlay::CLIENT.into(), HTTP_PORT));
    let from_internet = hosts.internet.curl(&direct, 2.0)?;
    report.check(
        format!("the visitor cannot reach {direct} (it has no route to the client)"),
        from_internet.is_err(),
        match from_internet {
            Ok(body) => format!("it answered {body:?}"),
            Err(e) => e,
        },
    );
    let from_server = hosts.server.curl(&direct, 2.0)?;
    report.check(
        format!("the server, on the client's own link, is refused at {direct} (loopback only)"),
        from_server
            .as_ref()
            .is_err_and(|e| e.contains("refused") || e.contains("(7)")),
        match from_server {
            Ok(body) => format!("it answered {body:?}"),
            Err(e) => e,
        },
    );
    Ok(())
}

// ---------------------------------------------------------------------
// The lab.

/// `tunlab shell 06`: both designs up at once on one set of hosts (the
/// layer-4 server and two exposes, the layer-3 server and client), the
/// shell in the visitor's host.
pub fn shell(out: &Path, report: &mut Report) -> anyhow::Result<Shell> {
    let binary = env::step_binary(PACKAGE)?;
    let keys = Keys::generate(&binary, out, KEY_NAMES)?;
    let hosts = hosts(out, "shell", false, report)?;
    let l4 = L4 {
        hosts: &hosts,
        keys: &keys,
        udp: help_mentions(&binary, &["expose"], "--udp"),
    };
    let mut running = vec![l4.server("shell")?];
    running.push(l4.exposed(HTTP_PORT, false, None, "8080-shell")?);
    running.push(l4.exposed(ECHO_PORT, true, None, "9000-shell")?);
    let l3 = L3 {
        hosts: &hosts,
        keys: &keys,
    };
    running.push(l3.server("shell", None)?);
    running.push(l3.client("shell")?);
    report.note(format!(
        "layer 4: server and expose {HTTP_PORT}, {ECHO_PORT}; layer 3: vpn-server --forward \
         {L3_HTTP_PORT}, {L3_ECHO_PORT} and vpn-client --deliver {HTTP_PORT}, {ECHO_PORT}; logs in {}",
        out.display()
    ));
    let internet = hosts.internet.clone();
    let note = format!(
        "python3 {} tcp {} {ECHO_PORT} --connections 5 --bytes 100000; \
         ip netns exec {} ss -tlnup (the client's services, on 127.0.0.1 only)",
        hosts.visitor,
        internet::SERVER,
        hosts.client.netns()
    );
    // Dropped in order: the programs, then the hosts.
    Ok(Shell::new((running, hosts), internet).note(note))
}

/// Runs lab 06.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut report = Report::new(options.quiet);
    let out = &options.out;
    std::fs::create_dir_all(out)?;
    let binary = env::step_binary(PACKAGE)?;
    let keys = Keys::generate(&binary, out, KEY_NAMES)?;
    report.note(format!(
        "fresh keys in {}: server {}..., client {}..., other {}... (listed too), stranger {}... (not listed)",
        out.display(),
        keys["server"].short(),
        keys["client"].short(),
        keys["other"].short(),
        keys["stranger"].short()
    ));
    {
        let hosts = hosts(out, "l4", false, &mut report)?;
        loopback_only(&hosts, &mut report)?;
        if let Err(e) = layer4(&hosts, &keys, &mut report) {
            report.check("L4: the session ran to its end", false, format!("{e:#}"));
        }
    }
    {
        let hosts = hosts(out, "l3", false, &mut report)?;
        if let Err(e) = layer3(&hosts, &keys, &mut report) {
            report.check("L3: the session ran to its end", false, format!("{e:#}"));
        }
    }
    if options.fixtures
        && let Err(e) = record_fixtures(out, &binary, &mut report)
    {
        report.check("fixtures: recorded", false, format!("{e:#}"));
    }
    report.note(format!(
        "the lab took {:.1} s; captures and logs are in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    ));
    Ok(report)
}

/// The fixed test-only keys of `pcaps/step06/` (made once, kept in git),
/// copied with mode 0600 into `dir`; the fixtures need only the server's
/// and the client's, so the other two names take the client's pair.
fn fixture_keys(binary: &Path, pcaps: &Path, dir: &Path, report: &Report) -> anyhow::Result<Keys> {
    let mut keys = Keys::test_only(binary, pcaps, dir, &["server", "client"], report)?;
    for name in ["other", "stranger"] {
        keys.insert(name, keys["client"].clone());
    }
    Ok(keys)
}

/// The golden fixtures in `pcaps/step06/`: (a) layer 4, the control
/// connection on the server's link to the client (`control.pcap`, `tcp
/// port 7835`) while the client exposes 8080 and the visitor fetches the
/// page once, with the client's ephemeral keys (`client.keylog`) to
/// decrypt it; (b) layer 3, one fetch through 18080: what the server's
/// TUN carried (`l3-server-tun.pcap`) and the same flow on its internet
/// side (`l3-outside.pcap`). Transmit checksum offload is off on every
/// veth, so the captures carry real checksums, which the lab verifies.
fn record_fixtures(out: &Path, binary: &Path, report: &mut Report) -> anyhow::Result<()> {
    let dir = out.join("fixtures");
    std::fs::create_dir_all(&dir)?;
    let pcaps = env::fixtures_dir("step06")?;
    let keys = fixture_keys(binary, &pcaps, &dir, report)?;
    let hosts = hosts(&dir, "fixtures", true, report)?;
    let mut copies: Vec<(PathBuf, &str)> = Vec::new();

    // (a) Layer 4.
    if !help_mentions(binary, &["expose"], "--keylog") {
        report.check(
            "fixtures: expose has --keylog",
            false,
            format!(
                "`{PACKAGE} expose --help` has no --keylog: control.pcap could not be decrypted, not recorded"
            ),
        );
    } else {
        let l4 = L4 {
            hosts: &hosts,
            keys: &keys,
            udp: false,
        };
        let mut server = l4.server("fixtures")?;
        let control = dir.join("control.pcap");
        let capture = Capture::start_with(
            &hosts.server,
            "veth-c",
            &control,
            &CaptureOptions {
                filter: Some(format!("tcp port {CONTROL_PORT}")),
                ..CaptureOptions::default()
            },
        )?;
        let keylog = dir.join("client.keylog");
        let mut expose = l4.exposed(HTTP_PORT, false, Some(&keylog), "fixtures")?;
        let answer = hosts.internet.curl(&page_url(HTTP_PORT), 5.0)?;
        report.check(
            "fixtures: L4, one curl through the exposed port",
            answer.as_deref().is_ok_and(is_page),
            format!("{answer:?}"),
        );
        expose.stop(Signal::SIGTERM, Duration::from_secs(5))?;
        let captured = capture.finish()?;
        server.stop(Signal::SIGTERM, Duration::from_secs(5))?;
        copies.push((captured.path, "control.pcap"));
        copies.push((keylog, "client.keylog"));
    }

    // (b) Layer 3.
    if !help_mentions(binary, &[], "vpn-server") {
        report.check(
            "fixtures: vpn-server exists",
            false,
            "the layer-3 fixtures need vpn-server and vpn-client",
        );
    } else {
        let l3 = L3 {
            hosts: &hosts,
            keys: &keys,
        };
        let tun = dir.join("l3-server-tun.pcap");
        let server = l3.server("fixtures", Some(&tun))?;
        let client = l3.client("fixtures")?;
        let outside = dir.join("l3-outside.pcap");
        let capture = Capture::start_with(
            &hosts.server,
            "veth-inet",
            &outside,
            &CaptureOptions {
                filter: Some(format!("tcp port {L3_HTTP_PORT}")),
                ..CaptureOptions::default()
            },
        )?;
        let answer = hosts.internet.curl(&page_url(L3_HTTP_PORT), 5.0)?;
        report.check(
            "fixtures: L3, one curl through the forwarded port",
            answer.as_deref().is_ok_and(is_page),
            format!("{answer:?}"),
        );
        let captured = capture.finish()?;
        stop(&hosts, client, "client", "fixtures", report)?;
        stop(&hosts, server, "server", "fixtures", report)?;
        copies.push((tun, "l3-server-tun.pcap"));
        copies.push((captured.path, "l3-outside.pcap"));
    }
    for (path, name) in &copies {
        if name.ends_with(".pcap") && *name != "l3-server-tun.pcap" {
            let (total, bad) = verify_checksums(path)?;
            report.check(
                format!("fixtures: every TCP checksum in {name} verifies"),
                total > 0 && bad.is_empty(),
                if bad.is_empty() {
                    format!("{total} TCP segments")
                } else {
                    format!("{} of {total} do not, such as: {}", bad.len(), bad[0])
                },
            );
        }
    }
    for (from, to) in &copies {
        std::fs::copy(from, pcaps.join(to)).with_context(|| format!("copying {}", from.display()))?;
    }
    if !copies.is_empty() {
        report.note(format!(
            "recorded {} in {}",
            copies.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", "),
            pcaps.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_who_the_service_saw() {
        let body = "hello from client: you are 127.0.0.1";
        assert!(is_page(body));
        assert_eq!(seen_as(body), "127.0.0.1");
        assert!(!is_page("you are 127.0.0.1"));
    }

    #[test]
    fn the_services_and_the_visitor_say_what_the_lab_reads() {
        assert!(SERVICES_PY.contains("hello from {NAME}: you are"));
        assert!(SERVICES_PY.contains("\"127.0.0.1\""));
        assert!(VISITOR_PY.contains("connections intact"));
        assert!(VISITOR_PY.contains("answered"));
    }
}
