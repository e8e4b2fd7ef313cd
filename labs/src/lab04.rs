//! Lab 04: an encrypted, authenticated tunnel.
//!
//! Hosts `client` (192.0.2.2) and `server` (192.0.2.1) share a veth link,
//! the underlay; a third host, `intruder` (198.51.100.3), has a link of its
//! own to the server (198.51.100.1). `step04-crypto` runs on the server and
//! the client, each with a fresh key pair, and the server lists the client's
//! public key with the inner addresses it may use. The lab checks that the
//! tunnel still carries ping (both families, both ways) and a 10 MB file,
//! and that the underlay now shows nothing of either: only UDP datagrams to
//! and from port 51820, a 132-byte handshake initiation, a 76-byte response,
//! and opaque data messages. Then it attacks and disturbs the tunnel: a
//! recorded data message sent again (dropped as a replay, and the server does
//! not follow it), a client with a key the server does not list (no
//! handshake), a client that changes its address mid-ping (the server
//! follows), a link that reorders and duplicates (the transfer still
//! arrives, the duplicates are counted as replays), and a client killed and
//! started again (back within seconds).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etherparse::{IpNumber, IpSlice, UdpSlice};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::env;
use crate::lab01::wait_for_tun;
use crate::netns::{Host, Topology};
use crate::process::{Capture, CaptureOptions, Running};
use crate::report::Report;
use crate::traffic::{nc_transfer, ping_counts, wait_for_udp_listener, write_random};

pub const TOOLS: &[&str] = &["ip", "ss", "ping", "tcpdump", "nc", "python3", "sha256sum"];
pub const PACKAGE: &str = "step04-crypto";
pub const TUN: &str = "tun0";
pub const PORT: u16 = 51820;
/// The bytes of "tunlab", which the pings carry as their payload pattern
/// (the same as lab 02's, where the underlay showed them in plain text).
pub const PATTERN: &str = crate::lab02::PATTERN;
/// Size of the file sent through the tunnel on a clean link.
pub const TRANSFER_BYTES: usize = 10 * 1024 * 1024;
/// Size of the file sent through the relay that reorders and duplicates.
pub const RELAY_BYTES: usize = 4 * 1024 * 1024;
/// What the relay does: no loss, but 2% of the datagrams sent twice and 2%
/// held back so that later ones overtake them.
pub const IMPAIR: &str = "delay=1ms,dup=0.02,reorder=0.02,seed=4";
/// The client's second underlay address, which it moves to mid-ping.
pub const ROAM_ADDRESS: &str = "192.0.2.3";
/// How many 32-byte windows of the transferred file the lab looks for in
/// the underlay capture.
pub const FILE_SAMPLES: usize = 64;
pub const SAMPLE_LEN: usize = 32;
/// Data messages of exactly this size carry no packet: keepalives.
pub const KEEPALIVE_LEN: usize = 32;
/// The sizes of the handshake messages.
pub const INITIATION_LEN: usize = 132;
pub const RESPONSE_LEN: usize = 76;
/// The message types (the first byte of every datagram).
pub const TYPE_INITIATION: u8 = 1;
pub const TYPE_RESPONSE: u8 = 2;
pub const TYPE_COOKIE: u8 = 3;
pub const TYPE_DATA: u8 = 4;
/// The longest a restarted client may take to get a ping through.
pub const RESTART_LIMIT: Duration = Duration::from_secs(10);

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

pub fn default_out() -> PathBuf {
    env::workspace_root().join("target").join("tunlab").join("lab04")
}

/// One end's key pair: the private key in a file of mode 0600, and the
/// public key in base64.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub file: PathBuf,
    pub public: String,
}

impl KeyPair {
    /// `step04-crypto genkey > file` (the file created with mode 0600
    /// before anything is written to it), then `pubkey < file`. `binary`
    /// is step 04's or a later step's: their keys are the same.
    pub fn generate(binary: &Path, file: &Path) -> anyhow::Result<Self> {
        let name = program_name(binary);
        // A file that exists keeps its mode when opened, so start afresh.
        let _ = std::fs::remove_file(file);
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .with_context(|| format!("creating {}", file.display()))?;
        let status = Command::new(binary)
            .arg("genkey")
            .stdin(Stdio::null())
            .stdout(out)
            .status()
            .with_context(|| format!("running {name} genkey"))?;
        if !status.success() {
            bail!("{name} genkey > {} failed ({status})", file.display());
        }
        Self::load(binary, file)
    }

    /// The pair of an existing private key file: `pubkey < file`.
    pub fn load(binary: &Path, file: &Path) -> anyhow::Result<Self> {
        let name = program_name(binary);
        let key = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let out = Command::new(binary)
            .arg("pubkey")
            .stdin(key)
            .output()
            .with_context(|| format!("running {name} pubkey"))?;
        if !out.status.success() {
            bail!(
                "{name} pubkey < {} failed ({}): {}",
                file.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let public = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if public.len() != 44 {
            bail!("{name} pubkey printed {public:?}, not a 44-character base64 key");
        }
        Ok(Self {
            file: file.to_path_buf(),
            public,
        })
    }

    /// The short form the program's log uses: the first 8 characters.
    pub fn short(&self) -> &str {
        self.public.get(..8).unwrap_or(&self.public)
    }

    pub fn file_str(&self) -> anyhow::Result<&str> {
        self.file.to_str().context("key path is not UTF-8")
    }
}

/// The file name of a program, for messages.
fn program_name(binary: &Path) -> String {
    binary.file_name().map_or_else(
        || binary.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The keys of the server and of the client it lists.
#[derive(Debug, Clone)]
pub struct Keys {
    pub server: KeyPair,
    pub client: KeyPair,
}

impl Keys {
    /// Fresh keys in `dir`: `server.key` and `client.key`.
    pub fn generate(binary: &Path, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            server: KeyPair::generate(binary, &dir.join("server.key"))?,
            client: KeyPair::generate(binary, &dir.join("client.key"))?,
        })
    }
}

/// Copies a key file into `to` with mode 0600: a key checked out by git has
/// the mode of the checkout (0644, usually), which the program refuses.
fn private_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    let key = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    let _ = std::fs::remove_file(to);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .with_context(|| format!("creating {}", to.display()))?;
    std::io::Write::write_all(&mut file, &key)?;
    Ok(())
}

/// The hosts with the tunnel up. Drops in field order.
pub struct Up {
    /// A capture of the underlay from before either end started, if asked.
    pub underlay: Option<Capture>,
    pub server_step: Running,
    pub client_step: Running,
    /// The impairment relay, when there is one.
    pub relay: Option<Running>,
    pub server: Host,
    pub client: Host,
    /// Linked to the server only, on 198.51.100.0/24; nothing runs there
    /// unless a check starts it.
    pub intruder: Host,
    pub server_log: PathBuf,
    pub client_log: PathBuf,
    pub binary: PathBuf,
    pub keys: Keys,
    /// How the client end was started, to start it again.
    client_end: ClientEnd,
    _topology: Topology,
}

/// How to start the client end.
struct ClientEnd {
    binary: PathBuf,
    out: PathBuf,
    keys: Keys,
    /// Record its TUN (`--pcap`).
    record: bool,
    /// Where it sends: the server, or the relay.
    to: String,
}

impl ClientEnd {
    /// Starts the client end in `host`, logging to `client-<name>.log` (and
    /// recording to `client-<name>-tun.pcap`), and waits for its handshake.
    /// Returns it with its log.
    fn start(&self, host: &Host, name: &str) -> anyhow::Result<(Running, PathBuf)> {
        let mut args: Vec<String> = [
            "client",
            "--server",
            &self.to,
            "--key",
            self.keys.client.file_str()?,
            "--server-key",
            &self.keys.server.public,
            "--address",
            "10.0.0.2/24",
            "--address",
            "fd00::2/64",
            "--keepalive",
            "25",
        ]
        .map(String::from)
        .into();
        if self.record {
            args.push("--pcap".into());
            args.push(path_arg(&self.out.join(format!("client-{name}-tun.pcap")))?);
        }
        let log = self.out.join(format!("client-{name}.log"));
        let mut step = Running::start(host, &self.binary, &args, &log)?;
        wait_for_tun(host, &mut step, &log, TUN, "10.0.0.2/24")?;
        wait_for_handshake(&mut step, &log)?;
        Ok((step, log))
    }
}

/// How to bring lab 04's hosts up.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    /// Names this run's files: `server-<tag>.log`, `client-<tag>-tun.pcap`.
    pub tag: &'a str,
    pub keys: &'a Keys,
    /// Record what each TUN device carries (`--pcap`), and the server's
    /// session keys (`--keylog`).
    pub record: bool,
    /// Capture the server's veth0 into this file, from before either end
    /// starts, so the handshake is in it.
    pub underlay: Option<&'a Path>,
    /// Put the impairment relay (this binary, with this spec) in front of
    /// the server: the client talks to it on port 7000.
    pub relay: Option<(&'a Path, &'a str)>,
}

impl<'a> Setup<'a> {
    /// The plain lab: both ends recording their TUNs, no capture, no relay.
    pub fn plain(keys: &'a Keys) -> Self {
        Self {
            tag: "main",
            keys,
            record: true,
            underlay: None,
            relay: None,
        }
    }
}

/// Builds the three hosts and the links, and starts the tunnel's two ends
/// as `setup` says, with their files in `out`. Returns once the client has
/// completed its handshake.
pub fn up(out: &Path, setup: &Setup<'_>, report: &mut Report) -> anyhow::Result<Up> {
    env::require_tools(TOOLS)?;
    let binary = env::step_binary(PACKAGE)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut topology = Topology::new()?;
    let server = topology.host("server")?;
    let client = topology.host("client")?;
    let intruder = topology.host("intruder")?;
    topology.link(&server, "veth0", &client, "veth0")?;
    topology.link(&server, "veth1", &intruder, "veth0")?;
    server.add_address("veth0", "192.0.2.1/24")?;
    client.add_address("veth0", "192.0.2.2/24")?;
    server.add_address("veth1", "198.51.100.1/24")?;
    intruder.add_address("veth0", "198.51.100.3/24")?;
    report.note(format!(
        "underlay: server 192.0.2.1 ({}) <-> client 192.0.2.2 ({}); server 198.51.100.1 <-> intruder 198.51.100.3 ({})",
        server.netns(),
        client.netns(),
        intruder.netns()
    ));
    let underlay = setup
        .underlay
        .map(|path| Capture::start_with(&server, "veth0", path, &CaptureOptions::bulk()))
        .transpose()?;

    let tag = setup.tag;
    let keys = setup.keys;
    let peer = format!("{}=10.0.0.2/32,fd00::2/128", keys.client.public);
    let listen = format!("0.0.0.0:{PORT}");
    let mut args: Vec<String> = [
        "server",
        "--listen",
        &listen,
        "--key",
        keys.server.file_str()?,
        "--peer",
        &peer,
        "--address",
        "10.0.0.1/24",
        "--address",
        "fd00::1/64",
    ]
    .map(String::from)
    .into();
    if setup.record {
        for (flag, file) in [
            ("--pcap", format!("server-{tag}-tun.pcap")),
            ("--keylog", format!("server-{tag}.keylog")),
        ] {
            // The program appends to its keylog: start from an empty one.
            let path = out.join(file);
            let _ = std::fs::remove_file(&path);
            args.push(flag.into());
            args.push(path_arg(&path)?);
        }
    }
    let server_log = out.join(format!("server-{tag}.log"));
    let mut server_step = Running::start(&server, &binary, &args, &server_log)?;
    wait_for_tun(&server, &mut server_step, &server_log, TUN, "10.0.0.1/24")?;
    // The client's first initiation leaves at once: the socket must be
    // there, or the kernel answers it with a port unreachable.
    wait_for_udp_listener(&server, PORT)?;

    let relay = match setup.relay {
        Some((relay, impair)) => {
            let upstream = format!("192.0.2.1:{PORT}");
            let args = [
                "udp",
                "--listen",
                "192.0.2.1:7000",
                "--upstream",
                &upstream,
                "--impair",
                impair,
            ];
            Some(Running::start(
                &server,
                relay,
                &args,
                &out.join(format!("relay-{tag}.log")),
            )?)
        }
        None => None,
    };
    let to = if relay.is_some() {
        "192.0.2.1:7000".to_string()
    } else {
        format!("192.0.2.1:{PORT}")
    };
    let client_end = ClientEnd {
        binary: binary.clone(),
        out: out.to_path_buf(),
        keys: keys.clone(),
        record: setup.record,
        to,
    };
    let (client_step, client_log) = client_end.start(&client, tag)?;
    report.note(format!(
        "started {PACKAGE} server (key {}) and client (key {}); handshake complete",
        keys.server.short(),
        keys.client.short()
    ));
    Ok(Up {
        underlay,
        server_step,
        client_step,
        relay,
        server,
        client,
        intruder,
        server_log,
        client_log,
        binary,
        keys: keys.clone(),
        client_end,
        _topology: topology,
    })
}

impl Up {
    /// Starts the client end again (after it was stopped), as
    /// `client-<name>.log`.
    pub fn restart_client(&mut self, name: &str) -> anyhow::Result<()> {
        let (step, log) = self.client_end.start(&self.client, name)?;
        self.client_step = step;
        self.client_log = log;
        Ok(())
    }

    /// The server's status, as it logs it on SIGUSR1.
    pub fn server_status(&self) -> anyhow::Result<Status> {
        status(&self.server_step, &self.server_log)
    }
}

pub fn path_arg(path: &Path) -> anyhow::Result<String> {
    Ok(path.to_str().context("path is not UTF-8")?.to_string())
}

pub use crate::labs::Options;

/// Runs lab 04: the main session (checks 1 to 6 and 8), then the transfer
/// through a link that reorders and duplicates.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new(options.quiet);
    let out = &options.out;
    std::fs::create_dir_all(out)?;
    let binary = env::step_binary(PACKAGE)?;
    let keys = Keys::generate(&binary, out)?;
    report.note(format!(
        "fresh keys in {}: server {}..., client {}...",
        out.display(),
        keys.server.short(),
        keys.client.short()
    ));
    main_session(out, &keys, &mut report)?;
    reordering(out, &keys, &mut report)?;
    if options.fixtures {
        record_fixtures(out, &binary, &mut report)?;
    }
    report.note(format!("captures and logs are in {}", out.display()));
    Ok(report)
}

fn main_session(out: &Path, keys: &Keys, report: &mut Report) -> anyhow::Result<()> {
    let data = out.join("random-10MB.bin");
    write_random(&data, TRANSFER_BYTES)?;
    let underlay = out.join("underlay.pcap");
    let setup = Setup {
        underlay: Some(&underlay),
        ..Setup::plain(keys)
    };
    let mut lab = up(out, &setup, report)?;

    // 1. Pings, both families, both ways.
    ping_both_ways(&lab, "", 3, &[], report)?;

    // 2. 10 MB, client to server.
    let (same, secs) = transfer(&lab.server, &lab.client, &data, &out.join("received.bin"), 60)?;
    report.check(
        "10 MB sent with nc arrive intact (sha256 matches)",
        same,
        format!(
            "{secs:.2} s, {:.0} Mbit/s",
            TRANSFER_BYTES as f64 * 8.0 / secs / 1e6
        ),
    );

    // 3. What the underlay showed of all that.
    let dropped = lab
        .underlay
        .take()
        .context("no underlay capture")?
        .finish()?
        .dropped;
    let seen = inspect_underlay(&underlay, &data, dropped, report)?;
    let _ = std::fs::remove_file(&data);

    // 4. A recorded data message, sent again.
    replay(&lab, &seen, report)?;

    // 5. A client whose key the server does not list.
    refused_key(&lab, out, report)?;
    intruder(&lab, out, report)?;

    // 6. The client moves to another address mid-ping.
    roaming(&lab, report)?;

    // 8. The client is killed and starts again.
    restart(&mut lab, report)?;

    stop(&mut lab, "", report)
}

/// Pings 10.0.0.1 and fd00::1 from the client, then 10.0.0.2 and fd00::2
/// from the server, with the payload pattern; `extra` goes to every ping.
fn ping_both_ways(
    lab: &Up,
    prefix: &str,
    count: u32,
    extra: &[&str],
    report: &mut Report,
) -> anyhow::Result<()> {
    for (from, name, v4, v6) in [
        (&lab.client, "client -> server", "10.0.0.1", "fd00::1"),
        (&lab.server, "server -> client", "10.0.0.2", "fd00::2"),
    ] {
        for (family, to) in [("", v4), ("-6 ", v6)] {
            let count_arg = count.to_string();
            let mut args = vec!["-n", "-c", &count_arg, "-i", "0.2", "-W", "2", "-p", PATTERN];
            args.extend_from_slice(extra);
            if !family.is_empty() {
                args.push("-6");
            }
            args.push(to);
            let ping = from.run("ping", &args)?;
            let counts = ping_counts(&String::from_utf8_lossy(&ping.stdout));
            report.check(
                format!("{prefix}ping {family}{name} ({to})"),
                counts == Some((count, count)),
                counts.map_or("no summary from ping".into(), |(s, r)| {
                    format!("{s} sent, {r} received")
                }),
            );
        }
    }
    Ok(())
}

// ANCHOR: underlay
/// Check 3: reads the underlay capture and checks that it holds only the
/// tunnel's UDP datagrams, a handshake of the right sizes, and neither the
/// pings' pattern nor any sample of the file.
fn inspect_underlay(pcap: &Path, data: &Path, dropped: u64, report: &mut Report) -> anyhow::Result<Underlay> {
    let bytes = std::fs::read(pcap).with_context(|| format!("reading {}", pcap.display()))?;
    let file = std::fs::read(data)?;
    let mut needles: Vec<&[u8]> = vec![b"tunlab"];
    let last = file.len().saturating_sub(SAMPLE_LEN);
    for i in 0..FILE_SAMPLES {
        let at = i * last / (FILE_SAMPLES - 1);
        needles.push(&file[at..at + SAMPLE_LEN]);
    }
    let found = occurrences(&bytes, &needles);
    let server = SocketAddr::new(SERVER_IP.into(), PORT);
    let seen = Underlay::read(pcap, server, CLIENT_IP.into())?;
    // A capture that lost most packets (tcpdump starved of CPU drops what
    // its buffer cannot hold) would pass the checks below for nothing: the
    // client's data messages must hold at least 90% of the file.
    let carried: usize = seen
        .datagrams
        .iter()
        .filter(|d| d.to == server && d.kind() == Some(TYPE_DATA))
        .map(|d| d.payload.len())
        .sum();
    report.check(
        "the underlay capture holds the transfer",
        carried * 10 >= file.len() * 9,
        format!(
            "{:.1} MB of data messages from the client for a {:.1} MB file; tcpdump: {dropped} frames dropped by the kernel",
            carried as f64 / 1048576.0,
            file.len() as f64 / 1048576.0
        ),
    );
    report.check(
        "the ping payload is not readable on the underlay",
        found[0] == 0,
        format!(
            "\"tunlab\" appears {} times in the {} bytes of {} (in lab 02, in every ping)",
            found[0],
            bytes.len(),
            pcap.display()
        ),
    );
    let samples_found = found[1..].iter().filter(|&&n| n > 0).count();
    report.check(
        "no sample of the 10 MB file is readable on the underlay",
        samples_found == 0,
        format!("{samples_found} of {FILE_SAMPLES} windows of {SAMPLE_LEN} bytes found"),
    );

    let kinds = seen.kinds();
    report.check(
        "the underlay carries only UDP between the client and the server's port 51820",
        seen.other.is_empty() && kinds.unknown == 0,
        if seen.other.is_empty() {
            format!(
                "{} datagrams ({}); also {} frames of the link's own (ARP, IPv6 neighbour discovery)",
                seen.datagrams.len(),
                kinds,
                seen.housekeeping
            )
        } else {
            format!(
                "{} other packets, such as: {}",
                seen.other.len(),
                seen.other.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            )
        },
    );
    let sizes = |kind: u8| -> Vec<usize> {
        seen.datagrams
            .iter()
            .filter(|d| d.kind() == Some(kind))
            .map(|d| d.payload.len())
            .collect()
    };
    let (initiations, responses) = (sizes(TYPE_INITIATION), sizes(TYPE_RESPONSE));
    report.check(
        "the underlay shows the handshake: initiations of 132 bytes, responses of 76",
        !initiations.is_empty()
            && !responses.is_empty()
            && initiations.iter().all(|&n| n == INITIATION_LEN)
            && responses.iter().all(|&n| n == RESPONSE_LEN),
        format!("initiations {initiations:?}, responses {responses:?}"),
    );
    if let Some(d) = seen.last_data_from_client() {
        report.note(format!(
            "what anyone on the path reads of the last data message from the client: \
             {} bytes, type 4, receiver index {:#010x}, counter {}; the other {} bytes are opaque",
            d.payload.len(),
            d.receiver_index().unwrap_or_default(),
            d.counter().unwrap_or_default(),
            d.payload.len().saturating_sub(16)
        ));
    }
    Ok(seen)
}
// ANCHOR_END: underlay

/// How often each of `needles` (at least 2 bytes each) occurs in
/// `haystack`. One pass: a table of the needles' first two bytes rules out
/// almost every position at once.
pub fn occurrences(haystack: &[u8], needles: &[&[u8]]) -> Vec<usize> {
    let mut first = vec![false; 1 << 16];
    for n in needles {
        if let [a, b, ..] = n {
            first[usize::from(u16::from_be_bytes([*a, *b]))] = true;
        }
    }
    let mut counts = vec![0; needles.len()];
    for start in 0..haystack.len().saturating_sub(1) {
        let pair = u16::from_be_bytes([haystack[start], haystack[start + 1]]);
        if !first[usize::from(pair)] {
            continue;
        }
        let rest = &haystack[start..];
        for (count, needle) in counts.iter_mut().zip(needles) {
            if needle.len() >= 2 && rest.starts_with(needle) {
                *count += 1;
            }
        }
    }
    counts
}

/// One UDP datagram of the underlay capture.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

impl Datagram {
    /// The message type, if the first four bytes are a type and three zero
    /// bytes.
    pub fn kind(&self) -> Option<u8> {
        match self.payload.get(..4)? {
            &[kind, 0, 0, 0] => Some(kind),
            _ => None,
        }
    }

    /// A data message's receiver index (bytes 4..8, little-endian).
    pub fn receiver_index(&self) -> Option<u32> {
        let bytes = self.payload.get(4..8)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    }

    /// A data message's counter (bytes 8..16, little-endian).
    pub fn counter(&self) -> Option<u64> {
        let bytes = self.payload.get(8..16)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }
}

/// What an underlay capture held.
#[derive(Debug)]
pub struct Underlay {
    /// UDP datagrams between the client and the server's port, in order.
    pub datagrams: Vec<Datagram>,
    /// ARP, and ICMPv6 from link-local or unspecified addresses (neighbour
    /// and router discovery, multicast listener reports): the link's own.
    pub housekeeping: usize,
    /// A line for every other frame.
    pub other: Vec<String>,
    server: SocketAddr,
    client: IpAddr,
}

/// How many datagrams of each message type.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub initiations: usize,
    pub responses: usize,
    pub cookies: usize,
    /// Data messages that carry a packet.
    pub data: usize,
    /// Data messages of exactly 32 bytes.
    pub keepalives: usize,
    /// Anything else.
    pub unknown: usize,
}

impl std::fmt::Display for Kinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} initiations, {} responses, {} data, {} keepalives",
            self.initiations, self.responses, self.data, self.keepalives
        )?;
        if self.cookies > 0 {
            write!(f, ", {} cookie replies", self.cookies)?;
        }
        if self.unknown > 0 {
            write!(f, ", {} of no known type", self.unknown)?;
        }
        Ok(())
    }
}

impl Underlay {
    /// Reads a capture of the server's veth0 (Ethernet frames).
    pub fn read(pcap: &Path, server: SocketAddr, client: IpAddr) -> anyhow::Result<Self> {
        let (_, frames) = step01_ping_tun::pcap::read_any(pcap)?;
        let mut seen = Self {
            datagrams: Vec::new(),
            housekeeping: 0,
            other: Vec::new(),
            server,
            client,
        };
        for (n, frame) in frames.iter().enumerate() {
            let Some(ip) = step01_ping_tun::pcap::ip_in_ethernet(&frame.data) else {
                if frame.data.get(12..14) == Some(&[0x08, 0x06]) {
                    seen.housekeeping += 1;
                } else {
                    seen.other.push(format!("frame {}: not IP", n + 1));
                }
                continue;
            };
            let Ok(ip) = IpSlice::from_slice(ip) else {
                seen.other.push(format!("frame {}: a broken IP packet", n + 1));
                continue;
            };
            let (src, dst) = (ip.source_addr(), ip.destination_addr());
            let payload = ip.payload();
            if payload.ip_number == IpNumber::IPV6_ICMP
                && match src {
                    IpAddr::V6(a) => a.is_unspecified() || a.is_unicast_link_local(),
                    IpAddr::V4(_) => false,
                }
            {
                seen.housekeeping += 1;
                continue;
            }
            let udp = (payload.ip_number == IpNumber::UDP && !payload.fragmented)
                .then(|| UdpSlice::from_slice(payload.payload).ok())
                .flatten();
            let Some(udp) = udp else {
                seen.other.push(format!(
                    "frame {}: {src} > {dst} protocol {}",
                    n + 1,
                    payload.ip_number.0
                ));
                continue;
            };
            let from = SocketAddr::new(src, udp.source_port());
            let to = SocketAddr::new(dst, udp.destination_port());
            let ours = (to == server && src == client) || (from == server && dst == client);
            if !ours {
                seen.other.push(format!("frame {}: UDP {from} > {to}", n + 1));
                continue;
            }
            seen.datagrams.push(Datagram {
                from,
                to,
                payload: udp.payload().to_vec(),
            });
        }
        Ok(seen)
    }

    pub fn kinds(&self) -> Kinds {
        let mut k = Kinds::default();
        for d in &self.datagrams {
            let len = d.payload.len();
            match d.kind() {
                Some(TYPE_INITIATION) => k.initiations += 1,
                Some(TYPE_RESPONSE) => k.responses += 1,
                Some(TYPE_COOKIE) => k.cookies += 1,
                Some(TYPE_DATA) if len == KEEPALIVE_LEN => k.keepalives += 1,
                Some(TYPE_DATA) if len > KEEPALIVE_LEN => k.data += 1,
                _ => k.unknown += 1,
            }
        }
        k
    }

    /// The last data message (not a keepalive) the client sent the server:
    /// the newest counter, so still inside the server's replay window.
    pub fn last_data_from_client(&self) -> Option<&Datagram> {
        self.datagrams.iter().rev().find(|d| {
            d.to == self.server
                && d.from.ip() == self.client
                && d.kind() == Some(TYPE_DATA)
                && d.payload.len() > KEEPALIVE_LEN
        })
    }
}

/// Check 4: sends a recorded data message from the client to the server
/// again, from another port of the client host, the way an attacker on the
/// path could.
fn replay(lab: &Up, seen: &Underlay, report: &mut Report) -> anyhow::Result<()> {
    let Some(message) = seen.last_data_from_client() else {
        report.check(
            "a replayed data message is dropped as a replay",
            false,
            "the underlay capture holds no data message from the client to replay",
        );
        return Ok(());
    };
    let client = lab.keys.client.short();
    let before = lab.server_status()?;
    let before_peer = before.peer(client).cloned().unwrap_or_default();
    let hex: String = message.payload.iter().map(|b| format!("{b:02x}")).collect();
    // Any free port: if the server wrongly believed the message, it would
    // move the client's endpoint here.
    let script = "import socket, sys\n\
                  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  s.bind((sys.argv[1], 0))\n\
                  s.sendto(bytes.fromhex(sys.argv[2]), (sys.argv[3], int(sys.argv[4])))\n\
                  print(s.getsockname()[1])\n";
    let sent = lab.client.run(
        "python3",
        [
            "-c",
            script,
            &CLIENT_IP.to_string(),
            &hex,
            &SERVER_IP.to_string(),
            &PORT.to_string(),
        ],
    )?;
    if !sent.status.success() {
        bail!(
            "python3 could not send the replayed message: {}",
            String::from_utf8_lossy(&sent.stderr).trim()
        );
    }
    let port = String::from_utf8_lossy(&sent.stdout).trim().to_string();
    // Give the server a moment to read it before asking.
    std::thread::sleep(Duration::from_millis(200));
    let after = lab.server_status()?;
    let after_peer = after.peer(client).cloned().unwrap_or_default();
    let replays = after_peer.count("replay") - before_peer.count("replay");
    report.check(
        "a replayed data message is dropped as a replay",
        replays >= 1,
        format!(
            "counter {} sent again from {CLIENT_IP}:{port}: the server's replay count went from {} to {} ({})",
            message.counter().unwrap_or_default(),
            before_peer.count("replay"),
            after_peer.count("replay"),
            after_peer.drops_text()
        ),
    );
    report.check(
        "a replayed message does not move the client's endpoint",
        !before_peer.endpoint.is_empty() && before_peer.endpoint == after_peer.endpoint,
        format!(
            "endpoint {} before, {} after",
            or_unknown(&before_peer.endpoint),
            or_unknown(&after_peer.endpoint)
        ),
    );
    Ok(())
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() { "(not in the status)" } else { s }
}

/// A key file that others may read is refused, before anything else
/// happens. Run in the intruder host, where no tunnel runs.
fn refused_key(lab: &Up, out: &Path, report: &mut Report) -> anyhow::Result<()> {
    let loose = out.join("loose.key");
    private_copy(&lab.keys.client.file, &loose)?;
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644))?;
    let binary = path_arg(&lab.binary)?;
    let run = lab.intruder.run(
        "timeout",
        [
            "5",
            &binary,
            "client",
            "--server",
            "198.51.100.1:51820",
            "--key",
            &path_arg(&loose)?,
            "--server-key",
            &lab.keys.server.public,
            "--address",
            "10.0.0.9/24",
            "--tun",
            "tun9",
        ],
    )?;
    let said = String::from_utf8_lossy(&run.stderr).to_string() + &String::from_utf8_lossy(&run.stdout);
    let line = said
        .lines()
        .find(|l| l.contains("chmod"))
        .unwrap_or_else(|| said.lines().last().unwrap_or(""))
        .trim()
        .to_string();
    report.check(
        "a key file that others can read is refused (exit 1, chmod 600)",
        run.status.code() == Some(1) && said.contains("chmod 600"),
        format!("{}: {line}", run.status),
    );
    let _ = std::fs::remove_file(loose);
    Ok(())
}

/// Check 5: a client with a key of its own, which the server does not list,
/// in the intruder host.
fn intruder(lab: &Up, out: &Path, report: &mut Report) -> anyhow::Result<()> {
    let key = KeyPair::generate(&lab.binary, &out.join("intruder.key"))?;
    let log = out.join("intruder.log");
    let args = [
        "client",
        "--server",
        "198.51.100.1:51820",
        "--key",
        key.file_str()?,
        "--server-key",
        &lab.keys.server.public,
        "--address",
        "10.0.0.3/24",
    ];
    let mut step = Running::start(&lab.intruder, &lab.binary, &args, &log)?;
    wait_for_tun(&lab.intruder, &mut step, &log, TUN, "10.0.0.3/24")?;
    let ping = lab
        .intruder
        .run("ping", ["-n", "-c", "3", "-i", "0.2", "-W", "1", "10.0.0.1"])?;
    let counts = ping_counts(&String::from_utf8_lossy(&ping.stdout));
    report.check(
        "ping from a client the server does not list fails",
        matches!(counts, Some((sent, 0)) if sent > 0),
        counts.map_or("no summary from ping".into(), |(s, r)| {
            format!("{s} sent, {r} received")
        }),
    );
    // Its handshake retries come 1, 2, 4 s apart: by now two have gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let status = lab.server_status()?;
        if status.total("unknown-peer") > 0 || Instant::now() >= deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    report.check(
        "the server counts the unlisted client's handshakes as unknown-peer",
        status.total("unknown-peer") > 0,
        status
            .unattributed_line
            .clone()
            .unwrap_or_else(|| "no unattributed line in the status".into()),
    );
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    let completed = said.lines().find(|l| handshake_line(l)).map(str::to_string);
    report.check(
        "a client whose key the server does not list gets no handshake",
        completed.is_none(),
        completed.unwrap_or_else(|| {
            let tries = said.lines().filter(|l| l.contains("handshake")).count();
            format!("its log has {tries} lines about the handshake, none says it completed")
        }),
    );
    step.stop(Signal::SIGTERM, Duration::from_secs(5))?;
    Ok(())
}

/// Check 6: while a ping runs, the client's datagrams start leaving from a
/// second address.
fn roaming(lab: &Up, report: &mut Report) -> anyhow::Result<()> {
    let ping = lab
        .client
        .command("ping")
        .args(["-n", "-c", "40", "-i", "0.2", "-W", "2", "10.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting ping")?;
    std::thread::sleep(Duration::from_secs(2));
    lab.client.add_address("veth0", &format!("{ROAM_ADDRESS}/24"))?;
    lab.client.ip([
        "route",
        "replace",
        "192.0.2.1/32",
        "dev",
        "veth0",
        "src",
        ROAM_ADDRESS,
    ])?;
    let moved = Instant::now();
    let ping = ping.wait_with_output()?;
    let counts = ping_counts(&String::from_utf8_lossy(&ping.stdout));
    report.check(
        format!("ping keeps going while the client moves to {ROAM_ADDRESS}"),
        counts.is_some_and(|(sent, got)| sent > 0 && got * 10 >= sent * 9),
        counts.map_or("no summary from ping".into(), |(s, r)| {
            format!(
                "{s} sent, {r} received; the address changed {:.1} s before the end",
                moved.elapsed().as_secs_f64()
            )
        }),
    );
    let log = std::fs::read_to_string(&lab.server_log).unwrap_or_default();
    let roamed = log
        .lines()
        .find(|l| l.contains("roamed to") && l.contains(&format!("{ROAM_ADDRESS}:")))
        .map(|l| l.trim().to_string());
    let status = lab.server_status()?;
    let endpoint = status
        .peer(lab.keys.client.short())
        .map(|p| p.endpoint.clone())
        .unwrap_or_default();
    report.check(
        format!("the server follows the client to {ROAM_ADDRESS}"),
        roamed.is_some() && endpoint.starts_with(&format!("{ROAM_ADDRESS}:")),
        format!(
            "{}; endpoint now {}",
            roamed.unwrap_or_else(|| "no \"roamed to\" line in the server's log".into()),
            or_unknown(&endpoint)
        ),
    );
    Ok(())
}

/// Check 8: kills the client with SIGKILL (no goodbye, the server keeps its
/// session) and starts it again with the same key.
fn restart(lab: &mut Up, report: &mut Report) -> anyhow::Result<()> {
    let killed = Instant::now();
    lab.client_step.stop(Signal::SIGKILL, Duration::from_secs(5))?;
    lab.restart_client("main-restart")?;
    let ping = lab
        .client
        .run("ping", ["-n", "-c", "1", "-i", "0.2", "-w", "10", "10.0.0.1"])?;
    let secs = killed.elapsed();
    let counts = ping_counts(&String::from_utf8_lossy(&ping.stdout));
    report.check(
        "a client killed and started again gets a ping through within 10 s",
        counts.is_some_and(|(_, got)| got >= 1) && secs < RESTART_LIMIT,
        format!(
            "first reply {:.2} s after SIGKILL ({})",
            secs.as_secs_f64(),
            counts.map_or("no summary from ping".into(), |(s, r)| {
                format!("{s} sent, {r} received")
            })
        ),
    );
    Ok(())
}

/// Stops both ends with SIGTERM, checks they exit cleanly, and shows the
/// server's last counters.
fn stop(lab: &mut Up, prefix: &str, report: &mut Report) -> anyhow::Result<()> {
    for (step, name) in [(&mut lab.client_step, "client"), (&mut lab.server_step, "server")] {
        let status = step.stop(Signal::SIGTERM, Duration::from_secs(5))?;
        report.check(
            format!("{prefix}{name} exits cleanly on SIGTERM"),
            status.success(),
            status.to_string(),
        );
    }
    let log = std::fs::read_to_string(&lab.server_log).unwrap_or_default();
    if let Some(status) = Status::last(&log) {
        report.note("the server's counters at exit:");
        for line in status.lines {
            report.note(format!("  {line}"));
        }
    }
    Ok(())
}

/// Check 7: the same tunnel through the relay, which duplicates and
/// reorders datagrams (without losing any): TCP inside must not notice, and
/// the server drops each duplicate as a replay.
fn reordering(out: &Path, keys: &Keys, report: &mut Report) -> anyhow::Result<()> {
    let relay = env::binary("tunlab", "tunlab-relay")?;
    let data = out.join("random-relay.bin");
    write_random(&data, RELAY_BYTES)?;
    let setup = Setup {
        tag: "relay",
        keys,
        record: false,
        underlay: None,
        relay: Some((&relay, IMPAIR)),
    };
    let mut lab = up(out, &setup, report)?;
    report.note(format!("the relay between them: {IMPAIR}"));
    let (same, secs) = transfer(
        &lab.server,
        &lab.client,
        &data,
        &out.join("received-relay.bin"),
        60,
    )?;
    let _ = std::fs::remove_file(&data);
    report.check(
        "4 MB through a link that reorders and duplicates arrive intact (sha256 matches)",
        same,
        format!("{secs:.2} s"),
    );
    let status = lab.server_status()?;
    let replays = status.peer(keys.client.short()).map_or(0, |p| p.count("replay"));
    let relay_log = out.join("relay-relay.log");
    if let Some(mut relay) = lab.relay.take() {
        relay.stop(Signal::SIGTERM, Duration::from_secs(5))?;
    }
    let relay_said = std::fs::read_to_string(&relay_log).unwrap_or_default();
    let relay_up = relay_said
        .lines()
        .rev()
        .find(|l| l.contains("client->upstream"))
        .map(str::trim)
        .unwrap_or("(no counters in the relay's log)")
        .to_string();
    report.check(
        "the server drops the relay's duplicates as replays",
        replays > 0,
        format!("replay {replays}; the relay, {relay_up}"),
    );
    stop(&mut lab, "relay: ", report)
}

/// Sends `data` from the client to the server (10.0.0.1) through the
/// tunnel with nc; returns whether it arrived intact and how long it took.
fn transfer(
    server: &Host,
    client: &Host,
    data: &Path,
    received: &Path,
    timeout: u32,
) -> anyhow::Result<(bool, f64)> {
    nc_transfer(client, server, "10.0.0.1", data, received, timeout)
}

/// A log line saying a handshake completed.
fn handshake_line(line: &str) -> bool {
    line.contains("handshake with") && line.contains("complete")
}

/// Waits until `log` says a handshake completed.
pub fn wait_for_handshake(step: &mut Running, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(handshake_line) {
            return Ok(());
        }
        if let Err(e) = step.check_alive() {
            bail!("{e:#}; its log:\n{text}");
        }
        if Instant::now() >= deadline {
            bail!("no handshake within 15 s; the log {}:\n{text}", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One peer's line of a status report:
/// `tun0: peer AbCdEfGh endpoint 192.0.2.2:40000 handshake 3 s ago: sent 10
/// packets (840 bytes), received 10 packets (840 bytes), handshakes 1,
/// dropped 2 (replay 1, bad-tag 1)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// The short key, as the line names the peer.
    pub peer: String,
    /// `192.0.2.2:40000`, or `none`.
    pub endpoint: String,
    /// Every `name N` of the line: `handshakes`, `dropped`, and each drop
    /// reason.
    pub counts: BTreeMap<String, u64>,
    pub line: String,
}

impl PeerStatus {
    /// The count called `name` (a drop reason such as `replay`), 0 when the
    /// line does not list it.
    pub fn count(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// The packets of `sent N packets` (`direction` `sent`) or `received N
    /// packets`, 0 when the line does not say.
    pub fn packets(&self, direction: &str) -> u64 {
        let words: Vec<&str> = self.line.split_whitespace().collect();
        words
            .windows(3)
            .find(|w| w[0] == direction && w[2].starts_with("packets"))
            .and_then(|w| w[1].parse().ok())
            .unwrap_or(0)
    }

    /// The drop list of the line, e.g. `dropped 2 (replay 1, bad-tag 1)`.
    pub fn drops_text(&self) -> String {
        match self.line.find("dropped") {
            Some(at) => self.line[at..].trim().to_string(),
            None => "nothing dropped".into(),
        }
    }
}

/// One status report of a step 04 end: a line per peer, then the drops no
/// peer can be blamed for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub peers: Vec<PeerStatus>,
    /// The counts of the `unattributed:` line.
    pub unattributed: BTreeMap<String, u64>,
    pub unattributed_line: Option<String>,
    /// The report's lines, as logged (from `TUN:` on).
    pub lines: Vec<String>,
}

impl Status {
    /// The last status report in a log.
    pub fn last(log: &str) -> Option<Self> {
        let lines: Vec<&str> = log.lines().collect();
        let end = lines.iter().rposition(|l| l.contains("unattributed:"))?;
        let start = lines[..end]
            .iter()
            .rposition(|l| l.contains("unattributed:"))
            .map_or(0, |i| i + 1);
        let from_tun = |l: &str| -> String {
            l.find(&format!("{TUN}:"))
                .map_or(l, |at| &l[at..])
                .trim()
                .to_string()
        };
        let mut status = Status::default();
        for line in &lines[start..end] {
            // Other lines that name a peer (`peer X may use ...`) are not
            // part of a report.
            if !line.contains(&format!("{TUN}: peer ")) {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(peer) = after(&words, "peer") else {
                continue;
            };
            status.peers.push(PeerStatus {
                peer: peer.to_string(),
                endpoint: after(&words, "endpoint").unwrap_or("").to_string(),
                counts: counts(line),
                line: from_tun(line),
            });
            status.lines.push(from_tun(line));
        }
        status.unattributed = counts(lines[end]);
        status.unattributed_line = Some(from_tun(lines[end]));
        status.lines.push(from_tun(lines[end]));
        Some(status)
    }

    /// The peer whose short key is `short`.
    pub fn peer(&self, short: &str) -> Option<&PeerStatus> {
        self.peers.iter().find(|p| p.peer == short)
    }

    /// The count called `name` over every line: each peer's and the
    /// unattributed drops.
    pub fn total(&self, name: &str) -> u64 {
        self.peers.iter().map(|p| p.count(name)).sum::<u64>()
            + self.unattributed.get(name).copied().unwrap_or(0)
    }
}

/// The word after `key` in `words`, without a trailing comma or colon.
fn after<'a>(words: &[&'a str], key: &str) -> Option<&'a str> {
    let at = words.iter().position(|w| *w == key)?;
    Some(words.get(at + 1)?.trim_end_matches([',', ':']))
}

/// Every `name N` in a status line: the pieces between commas, colons and
/// parentheses that are exactly a word and a number.
fn counts(line: &str) -> BTreeMap<String, u64> {
    line.split([',', '(', ')', ':'])
        .filter_map(|piece| {
            let mut words = piece.split_whitespace();
            let (name, n) = (words.next()?, words.next()?);
            if words.next().is_some() {
                return None;
            }
            Some((name.to_string(), n.parse().ok()?))
        })
        .collect()
}

/// Sends SIGUSR1 to `step` and returns the status report it logs in
/// answer.
pub fn status(step: &Running, log: &Path) -> anyhow::Result<Status> {
    let reports = |text: &str| text.lines().filter(|l| l.contains("unattributed:")).count();
    let before = reports(&std::fs::read_to_string(log).unwrap_or_default());
    let pid = step.pid().context("the program is not running")?;
    kill(Pid::from_raw(pid as i32), Signal::SIGUSR1).context("sending SIGUSR1")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if reports(&text) > before {
            return Status::last(&text).context("a status report without its lines");
        }
        if Instant::now() >= deadline {
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "no status report (a line with \"unattributed:\") in {} within 5 s of SIGUSR1; it ends:\n{}",
                log.display(),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A short session with the fixed test-only keys (three pings each way,
/// two ping -6 from the client), recorded on the underlay and on both TUN
/// devices, with the server's ephemeral keys: the golden fixtures in
/// `pcaps/step04/`.
fn record_fixtures(out: &Path, binary: &Path, report: &mut Report) -> anyhow::Result<()> {
    let dir = out.join("fixtures");
    std::fs::create_dir_all(&dir)?;
    let pcaps = env::workspace_root().join("pcaps").join("step04");
    std::fs::create_dir_all(&pcaps)?;
    let pair = |side: &str| -> anyhow::Result<KeyPair> {
        let kept = pcaps.join(format!("test-only-{side}.key"));
        if !kept.exists() {
            KeyPair::generate(binary, &kept)?;
            report.note(format!("created the test-only key {}", kept.display()));
        }
        let copy = dir.join(format!("{side}.key"));
        private_copy(&kept, &copy)?;
        KeyPair::load(binary, &copy)
    };
    let keys = Keys {
        server: pair("server")?,
        client: pair("client")?,
    };
    let underlay = dir.join("underlay.pcap");
    let setup = Setup {
        tag: "fixtures",
        keys: &keys,
        record: true,
        underlay: Some(&underlay),
        relay: None,
    };
    let mut lab = up(&dir, &setup, report)?;
    // Three pings each way, then two ping -6 from the client.
    for (from, name, to, count) in [
        (&lab.client, "client -> server", "10.0.0.1", 3),
        (&lab.server, "server -> client", "10.0.0.2", 3),
        (&lab.client, "-6 client -> server", "fd00::1", 2),
    ] {
        let count_arg = count.to_string();
        let ping = from.run(
            "ping",
            [
                "-n", "-c", &count_arg, "-i", "0.2", "-W", "2", "-s", "56", "-p", PATTERN, to,
            ],
        )?;
        let counts = ping_counts(&String::from_utf8_lossy(&ping.stdout));
        report.check(
            format!("fixtures: ping {name} ({to})"),
            counts == Some((count, count)),
            counts.map_or("no summary from ping".into(), |(s, r)| {
                format!("{s} sent, {r} received")
            }),
        );
    }
    lab.underlay.take().context("no underlay capture")?.finish()?;
    stop(&mut lab, "fixtures: ", report)?;
    for (from, to) in [
        ("underlay.pcap", "underlay.pcap"),
        ("server-fixtures-tun.pcap", "server-tun.pcap"),
        ("client-fixtures-tun.pcap", "client-tun.pcap"),
        ("server-fixtures.keylog", "server.keylog"),
    ] {
        std::fs::copy(dir.join(from), pcaps.join(to)).with_context(|| format!("copying {from}"))?;
    }
    report.note(format!("recorded the fixtures in {}", pcaps.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
[2025-01-01T00:00:00Z INFO  step04_crypto] peer AbCdEfGh may use 10.0.0.2/32, fd00::2/128
[2025-01-01T00:00:00Z INFO  step04_crypto] handshake with AbCdEfGh complete
[2025-01-01T00:00:01Z INFO  step04_crypto] tun0: peer AbCdEfGh endpoint 192.0.2.2:40000 handshake 3 s ago: sent 10 packets (840 bytes), received 10 packets (840 bytes), handshakes 1, dropped 2 (replay 1, bad-tag 1)
[2025-01-01T00:00:01Z INFO  step04_crypto] tun0: unattributed: dropped 3 (unknown-peer 3)
[2025-01-01T00:00:02Z INFO  step04_crypto] tun0: peer AbCdEfGh endpoint 192.0.2.3:40000 handshake 4 s ago: sent 12 packets (1008 bytes), received 12 packets (1008 bytes), handshakes 1, dropped 3 (handshake-replay 1, replay 2)
[2025-01-01T00:00:02Z INFO  step04_crypto] tun0: peer Zz+/9xYw endpoint none handshake never: sent 0 packets (0 bytes), received 0 packets (0 bytes), handshakes 0, dropped 0
[2025-01-01T00:00:02Z INFO  step04_crypto] tun0: unattributed: dropped 0
";

    #[test]
    fn reads_the_last_status_report() {
        let status = Status::last(LOG).unwrap();
        assert_eq!(status.peers.len(), 2);
        let peer = status.peer("AbCdEfGh").unwrap();
        assert_eq!(peer.endpoint, "192.0.2.3:40000");
        assert_eq!(peer.count("replay"), 2);
        assert_eq!(peer.count("handshake-replay"), 1);
        assert_eq!(peer.count("handshakes"), 1);
        assert_eq!(peer.count("dropped"), 3);
        assert_eq!(peer.count("bad-tag"), 0);
        assert_eq!(peer.drops_text(), "dropped 3 (handshake-replay 1, replay 2)");
        assert_eq!(peer.packets("sent"), 12);
        assert_eq!(peer.packets("received"), 12);
        let other = status.peer("Zz+/9xYw").unwrap();
        assert_eq!(other.endpoint, "none");
        assert_eq!(status.total("unknown-peer"), 0);
        assert_eq!(status.lines.len(), 3);
        assert!(status.lines[2].starts_with("tun0: unattributed:"));
    }

    #[test]
    fn reads_the_first_status_report() {
        let first: String = LOG.lines().take(4).map(|l| format!("{l}\n")).collect();
        let status = Status::last(&first).unwrap();
        assert_eq!(status.peers.len(), 1);
        assert_eq!(status.peers[0].endpoint, "192.0.2.2:40000");
        assert_eq!(status.peers[0].count("replay"), 1);
        assert_eq!(status.total("unknown-peer"), 3);
        assert_eq!(Status::last("no report here"), None);
    }

    #[test]
    fn finds_needles_in_one_pass() {
        let hay = b"xxtunlabyytunlab-abc";
        assert_eq!(
            occurrences(hay, &[b"tunlab", b"abc", b"zz", b"b-"]),
            vec![2, 1, 0, 1]
        );
        assert_eq!(occurrences(b"", &[b"ab"]), vec![0]);
    }

    #[test]
    fn reads_a_data_message_header() {
        let mut payload = vec![4, 0, 0, 0, 0x78, 0x56, 0x34, 0x12, 7, 0, 0, 0, 0, 0, 0, 0];
        payload.extend([0; 16]);
        let d = Datagram {
            from: "192.0.2.2:1".parse().unwrap(),
            to: "192.0.2.1:51820".parse().unwrap(),
            payload,
        };
        assert_eq!(d.kind(), Some(TYPE_DATA));
        assert_eq!(d.receiver_index(), Some(0x1234_5678));
        assert_eq!(d.counter(), Some(7));
    }
}
