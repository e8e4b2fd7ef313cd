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
//! arrives, the duplicates are counted as replays), a client killed and
//! started again (back within seconds), and a flood of valid-looking
//! initiations from thousands of forged addresses (the established client's
//! pings go on, a new client still gets in, and the server spends
//! Diffie-Hellman work on no more than its budget).

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etherparse::{IpNumber, UdpSlice};
use nix::sys::signal::Signal;

use crate::captures::{checksums_verify, each_ip_packet};
use crate::doctor::{Kernel, Needs};
use crate::env;
use crate::keys::{KeyPair, Keys, private_copy};
use crate::labs::{Options, Shell};
use crate::netns::Host;
use crate::process::{Capture, CaptureOptions, Running, Session, path_arg};
use crate::report::Report;
use crate::steplog::{Status, handshake_line, note_counters_at_exit};
use crate::topology::{self, Net, TUN, TUNNEL_PORT, internet, tunnel, underlay};
use crate::traffic::{PATTERN, nc_transfer, write_random};

pub const PACKAGE: &str = "step04-crypto";
/// What the lab needs from the machine.
pub const NEEDS: Needs = Needs {
    tools: &["ip", "ss", "ping", "tcpdump", "nc", "python3", "sha256sum"],
    kernel: &[Kernel::Tun, Kernel::Netns, Kernel::Veth],
    binaries: &[
        (PACKAGE, PACKAGE),
        ("tunlab", "tunlab-relay"),
        ("tunlab", "tunlab-flood"),
    ],
};
/// Size of the file sent through the tunnel on a clean link.
pub const TRANSFER_BYTES: usize = 10 * 1024 * 1024;
/// What recording the fixtures needs besides: turning off checksum
/// offload on the veths.
pub const FIXTURE_TOOLS: &[&str] = &["ethtool"];
/// Size of the file sent through the relay that reorders and duplicates.
pub const RELAY_BYTES: usize = 4 * 1024 * 1024;
/// What the relay does: no loss, but 2% of the datagrams sent twice and 2%
/// held back so that later ones overtake them.
pub const IMPAIR: &str = "delay=1ms,dup=0.02,reorder=0.02,seed=4";
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
/// The ends whose keys the lab makes: the server and the client it lists.
pub const KEY_NAMES: &[&str] = &["server", "client"];
/// The flood: valid-looking initiations at this rate, so many in all,
/// from so many forged addresses of this prefix (RFC 2544's benchmarking
/// range: a table of 4096 sources cannot hold them).
pub const FLOOD_RATE: u32 = 5000;
pub const FLOOD_COUNT: u32 = 30_000;
pub const FLOOD_ADDRESSES: u32 = 20_000;
pub const FLOOD_SOURCES: &str = "198.18.0.0/15";
/// Pings from the established client during the flood, 0.1 s apart.
pub const FLOOD_PINGS: u32 = 100;
/// The longest a new client may take to connect during the flood.
pub const FLOOD_CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// The server's socket.
fn server_addr() -> SocketAddr {
    SocketAddr::new(underlay::SERVER.into(), TUNNEL_PORT)
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
    pub binary: PathBuf,
    pub keys: Keys,
    /// How the client end was started, to start it again.
    client_end: ClientEnd,
    _net: Net,
}

/// How to start the client end.
struct ClientEnd {
    binary: PathBuf,
    out: PathBuf,
    keys: Keys,
    /// Record its TUN (`--pcap`).
    record: bool,
    /// Where it sends: the server, or the relay.
    to: SocketAddr,
}

impl ClientEnd {
    /// Starts the client end in `host`, logging to `client-<name>.log` (and
    /// recording to `client-<name>-tun.pcap`), and waits for its handshake.
    fn start(&self, host: &Host, name: &str) -> anyhow::Result<Running> {
        let address = tunnel::cidr(tunnel::CLIENT).to_string();
        let mut args: Vec<String> = [
            "client",
            "--server",
            &self.to.to_string(),
            "--key",
            self.keys["client"].file_str()?,
            "--server-key",
            &self.keys["server"].public,
            "--address",
            &address,
            "--address",
            &tunnel::cidr(tunnel::CLIENT6).to_string(),
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
        step.wait_for_tun(TUN, &address)?;
        step.wait_for_handshake()?;
        Ok(step)
    }
}

/// Builds the three hosts and the links, and starts the tunnel's two ends
/// with `keys` as `session` says, with their files in `out`. Returns once
/// the client has completed its handshake.
pub fn up(out: &Path, keys: &Keys, session: &Session<'_>, report: &mut Report) -> anyhow::Result<Up> {
    up_with(out, keys, session, None, report)
}

/// [`up`], and the server lists `newcomer` too, with the tunnel address
/// 10.0.0.3 (a second client, started by the check that needs it).
fn up_with(
    out: &Path,
    keys: &Keys,
    session: &Session<'_>,
    newcomer: Option<&KeyPair>,
    report: &mut Report,
) -> anyhow::Result<Up> {
    if session.offload_off {
        env::require_tools(FIXTURE_TOOLS)?;
    }
    let binary = env::step_binary(PACKAGE)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let spec = topology::two_hosts_and_intruder();
    let net = spec.build()?;
    if session.offload_off {
        spec.tx_offload_off(&net)?;
    }
    let (server, client, intruder) = (net.host("server")?, net.host("client")?, net.host("intruder")?);
    report.note(format!(
        "underlay: server {} ({}) <-> client {} ({}); server {} <-> intruder {} ({})",
        underlay::SERVER,
        server.netns(),
        underlay::CLIENT,
        client.netns(),
        internet::SERVER,
        internet::INTRUDER,
        intruder.netns()
    ));
    let underlay = session.capture(&server, "veth0", &CaptureOptions::bulk())?;

    let tag = session.tag;
    let peer = format!(
        "{}={},{}",
        keys["client"].public,
        tunnel::host(tunnel::CLIENT),
        tunnel::host(tunnel::CLIENT6)
    );
    let listen = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), TUNNEL_PORT);
    let address = tunnel::cidr(tunnel::SERVER).to_string();
    let mut args: Vec<String> = [
        "server",
        "--listen",
        &listen.to_string(),
        "--key",
        keys["server"].file_str()?,
        "--peer",
        &peer,
        "--address",
        &address,
        "--address",
        &tunnel::cidr(tunnel::SERVER6).to_string(),
    ]
    .map(String::from)
    .into();
    if let Some(newcomer) = newcomer {
        args.push("--peer".into());
        args.push(format!("{}={}", newcomer.public, tunnel::host(tunnel::CLIENT2)));
    }
    if session.record {
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
    let mut server_step = Running::start(&server, &binary, &args, &out.join(format!("server-{tag}.log")))?;
    server_step.wait_for_tun(TUN, &address)?;
    // The client's first initiation leaves at once: the socket must be
    // there, or the kernel answers it with a port unreachable.
    server.wait_for_udp_listener(TUNNEL_PORT)?;

    let (relay, to) = session.start_relay(&server, "udp", server_addr(), out)?;
    let client_end = ClientEnd {
        binary: binary.clone(),
        out: out.to_path_buf(),
        keys: keys.clone(),
        record: session.record,
        to,
    };
    let client_step = client_end.start(&client, tag)?;
    report.note(format!(
        "started {PACKAGE} server (key {}) and client (key {}); handshake complete",
        keys["server"].short(),
        keys["client"].short()
    ));
    Ok(Up {
        underlay,
        server_step,
        client_step,
        relay,
        server,
        client,
        intruder,
        binary,
        keys: keys.clone(),
        client_end,
        _net: net,
    })
}

impl Up {
    /// Starts the client end again (after it was stopped), as
    /// `client-<name>.log`.
    pub fn restart_client(&mut self, name: &str) -> anyhow::Result<()> {
        self.client_step = self.client_end.start(&self.client, name)?;
        Ok(())
    }

    /// The server's status, as it logs it on SIGUSR1.
    pub fn server_status(&self) -> anyhow::Result<Status> {
        self.server_step.status()
    }
}

/// `tunlab shell 04`: fresh keys, both ends up, the shell in the client.
pub fn shell(out: &Path, report: &mut Report) -> anyhow::Result<Shell> {
    let keys = Keys::generate(&env::step_binary(PACKAGE)?, out, KEY_NAMES)?;
    let up = up(out, &keys, &Session::new("main"), report)?;
    let client = up.client.clone();
    let note = format!(
        "kill -USR1 {} (the server's counters, in {})",
        up.server_step.pid().unwrap_or_default(),
        up.server_step.log().display()
    );
    Ok(Shell::new(up, client).note(note))
}

/// Runs lab 04: the main session (checks 1 to 6 and 8), then the transfer
/// through a link that reorders and duplicates.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new(options.quiet);
    let out = &options.out;
    std::fs::create_dir_all(out)?;
    let keys = Keys::fresh(PACKAGE, out, KEY_NAMES, &report)?;
    main_session(out, &keys, &mut report)?;
    reordering(out, &keys, &mut report)?;
    flood(out, &keys, &mut report)?;
    if options.fixtures {
        record_fixtures(out, &env::step_binary(PACKAGE)?, &mut report)?;
    }
    report.note(format!("captures and logs are in {}", out.display()));
    Ok(report)
}

fn main_session(out: &Path, keys: &Keys, report: &mut Report) -> anyhow::Result<()> {
    let data = out.join("random-10MB.bin");
    write_random(&data, TRANSFER_BYTES)?;
    let underlay = out.join("underlay.pcap");
    let session = Session {
        underlay: Some(&underlay),
        ..Session::new("main")
    };
    let mut lab = up(out, keys, &session, report)?;

    // 1. Pings, both families, both ways.
    ping_both_ways(&lab, "", 3, &[], report)?;

    // 2. 10 MB, client to server.
    let (same, secs) = transfer(&lab, &data, &out.join("received.bin"), 60)?;
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
    let mut args = vec!["-p", PATTERN];
    args.extend_from_slice(extra);
    for (from, name, v4, v6) in [
        (&lab.client, "client -> server", tunnel::SERVER, tunnel::SERVER6),
        (&lab.server, "server -> client", tunnel::CLIENT, tunnel::CLIENT6),
    ] {
        for (family, to) in [("", IpAddr::from(v4)), ("-6 ", v6.into())] {
            let check = format!("{prefix}ping {family}{name} ({to})");
            from.ping_check(report, check, to, count, &args)?;
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
    let server = server_addr();
    let seen = Underlay::read(pcap, server, underlay::CLIENT.into())?;
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
        let mut datagrams = Vec::new();
        let mut housekeeping = 0;
        let mut other = Vec::new();
        let others = each_ip_packet(pcap, |n, _, ip| {
            let (src, dst) = (ip.source_addr(), ip.destination_addr());
            let payload = ip.payload();
            if payload.ip_number == IpNumber::IPV6_ICMP
                && match src {
                    IpAddr::V6(a) => a.is_unspecified() || a.is_unicast_link_local(),
                    IpAddr::V4(_) => false,
                }
            {
                housekeeping += 1;
                return;
            }
            let udp = (payload.ip_number == IpNumber::UDP && !payload.fragmented)
                .then(|| UdpSlice::from_slice(payload.payload).ok())
                .flatten();
            let Some(udp) = udp else {
                other.push(format!(
                    "frame {n}: {src} > {dst} protocol {}",
                    payload.ip_number.0
                ));
                return;
            };
            let from = SocketAddr::new(src, udp.source_port());
            let to = SocketAddr::new(dst, udp.destination_port());
            let ours = (to == server && src == client) || (from == server && dst == client);
            if !ours {
                other.push(format!("frame {n}: UDP {from} > {to}"));
                return;
            }
            datagrams.push(Datagram {
                from,
                to,
                payload: udp.payload().to_vec(),
            });
        })?;
        other.extend(others.odd);
        Ok(Self {
            datagrams,
            housekeeping: housekeeping + others.arp,
            other,
            server,
            client,
        })
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
    let client = lab.keys["client"].short();
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
            &underlay::CLIENT.to_string(),
            &hex,
            &underlay::SERVER.to_string(),
            &TUNNEL_PORT.to_string(),
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
            "counter {} sent again from {}:{port}: the server's replay count went from {} to {} ({})",
            message.counter().unwrap_or_default(),
            underlay::CLIENT,
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
    private_copy(&lab.keys["client"].file, &loose)?;
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644))?;
    let binary = path_arg(&lab.binary)?;
    let run = lab.intruder.run(
        "timeout",
        [
            "5",
            &binary,
            "client",
            "--server",
            &intruders_server().to_string(),
            "--key",
            &path_arg(&loose)?,
            "--server-key",
            &lab.keys["server"].public,
            "--address",
            &tunnel::cidr(tunnel::STRANGER).to_string(),
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
    let address = tunnel::cidr(tunnel::CLIENT2).to_string();
    let args = [
        "client",
        "--server",
        &intruders_server().to_string(),
        "--key",
        key.file_str()?,
        "--server-key",
        &lab.keys["server"].public,
        "--address",
        &address,
    ];
    let mut step = Running::start(&lab.intruder, &lab.binary, &args, &out.join("intruder.log"))?;
    step.wait_for_tun(TUN, &address)?;
    let to = tunnel::SERVER.to_string();
    let ping = lab.intruder.ping_with(
        ["-n", "-c", "3", "-i", "0.2", "-W", "1", &to]
            .map(String::from)
            .into(),
    )?;
    report.check(
        "ping from a client the server does not list fails",
        ping.none_answered(),
        ping.to_string(),
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
    let said = step.log_text();
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
        .args([
            "-n",
            "-c",
            "40",
            "-i",
            "0.2",
            "-W",
            "2",
            &tunnel::SERVER.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting ping")?;
    std::thread::sleep(Duration::from_secs(2));
    let roamed_to = underlay::ROAMED;
    let prefix = topology::underlay::NET.prefix_len();
    lab.client
        .add_address("veth0", &format!("{roamed_to}/{prefix}"))?;
    lab.client.ip([
        "route",
        "replace",
        &tunnel::host(underlay::SERVER).to_string(),
        "dev",
        "veth0",
        "src",
        &roamed_to.to_string(),
    ])?;
    let moved = Instant::now();
    let ping = ping.wait_with_output()?;
    let counts = crate::traffic::ping_counts(&String::from_utf8_lossy(&ping.stdout));
    report.check(
        format!("ping keeps going while the client moves to {roamed_to}"),
        counts.is_some_and(|(sent, got)| sent > 0 && got * 10 >= sent * 9),
        counts.map_or("no summary from ping".into(), |(s, r)| {
            format!(
                "{s} sent, {r} received; the address changed {:.1} s before the end",
                moved.elapsed().as_secs_f64()
            )
        }),
    );
    let log = lab.server_step.log_text();
    let roamed = log
        .lines()
        .find(|l| l.contains("roamed to") && l.contains(&format!("{roamed_to}:")))
        .map(|l| l.trim().to_string());
    let status = lab.server_status()?;
    let endpoint = status
        .peer(lab.keys["client"].short())
        .map(|p| p.endpoint.clone())
        .unwrap_or_default();
    report.check(
        format!("the server follows the client to {roamed_to}"),
        roamed.is_some() && endpoint.starts_with(&format!("{roamed_to}:")),
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
    let to = tunnel::SERVER.to_string();
    let ping = lab.client.ping_with(
        ["-n", "-c", "1", "-i", "0.2", "-w", "10", &to]
            .map(String::from)
            .into(),
    )?;
    let secs = killed.elapsed();
    report.check(
        "a client killed and started again gets a ping through within 10 s",
        ping.counts.is_some_and(|(_, got)| got >= 1) && secs < RESTART_LIMIT,
        format!("first reply {:.2} s after SIGKILL ({ping})", secs.as_secs_f64()),
    );
    Ok(())
}

/// Stops both ends with SIGTERM, checks they exit cleanly, and shows the
/// server's last counters.
fn stop(lab: &mut Up, prefix: &str, report: &mut Report) -> anyhow::Result<()> {
    for (step, name) in [(&mut lab.client_step, "client"), (&mut lab.server_step, "server")] {
        step.stop_checked(report, format!("{prefix}{name} exits cleanly on SIGTERM"))?;
    }
    note_counters_at_exit(report, &lab.server_step.log_text());
    Ok(())
}

/// Check 7: the same tunnel through the relay, which duplicates and
/// reorders datagrams (without losing any): TCP inside must not notice, and
/// the server drops each duplicate as a replay.
fn reordering(out: &Path, keys: &Keys, report: &mut Report) -> anyhow::Result<()> {
    let data = out.join("random-relay.bin");
    write_random(&data, RELAY_BYTES)?;
    let session = Session {
        record: false,
        relay: Some(IMPAIR),
        ..Session::new("relay")
    };
    let mut lab = up(out, keys, &session, report)?;
    report.note(format!("the relay between them: {IMPAIR}"));
    let (same, secs) = transfer(&lab, &data, &out.join("received-relay.bin"), 60)?;
    let _ = std::fs::remove_file(&data);
    report.check(
        "4 MB through a link that reorders and duplicates arrive intact (sha256 matches)",
        same,
        format!("{secs:.2} s"),
    );
    let status = lab.server_status()?;
    let replays = status
        .peer(keys["client"].short())
        .map_or(0, |p| p.count("replay"));
    let mut relay_said = String::new();
    if let Some(mut relay) = lab.relay.take() {
        relay.stop(Signal::SIGTERM, Duration::from_secs(5))?;
        relay_said = relay.log_text();
    }
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

// ANCHOR: flood
/// Check 9: from the intruder host, `tunlab-flood` sends initiations whose
/// mac1 is right (made for the server's public key, from a key it does not
/// list) from thousands of forged addresses, while the established client
/// pings; during the flood a new client, which the server lists, starts in
/// the intruder host. The pings must go on, the new client must get in
/// within seconds, and the server must work (two X25519 for each
/// `unknown-peer`) on no more initiations than its budget allows.
fn flood(out: &Path, keys: &Keys, report: &mut Report) -> anyhow::Result<()> {
    let binary = env::step_binary(PACKAGE)?;
    let newcomer = KeyPair::generate(&binary, &out.join("newcomer.key"))?;
    let session = Session {
        record: false,
        ..Session::new("flood")
    };
    let mut lab = up_with(out, keys, &session, Some(&newcomer), report)?;
    // The forged sources have no route back from the server; a real
    // attacker's would. Reverse-path filtering would drop them in the
    // kernel (in a lab namespace it is off already; make sure).
    for interface in ["all", "veth1"] {
        lab.server.run(
            "sysctl",
            ["-qw", &format!("net.ipv4.conf.{interface}.rp_filter=0")],
        )?;
    }
    let server = tunnel::SERVER.to_string();
    let pings = lab
        .client
        .command("ping")
        .args([
            "-n",
            "-c",
            &FLOOD_PINGS.to_string(),
            "-i",
            "0.1",
            "-W",
            "1",
            &server,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting ping")?;
    std::thread::sleep(Duration::from_secs(1));
    let flood_log = out.join("flood.log");
    let args = [
        "--to".to_string(),
        intruders_server().to_string(),
        "--server-key".into(),
        keys["server"].public.clone(),
        "--sources".into(),
        FLOOD_SOURCES.into(),
        "--addresses".into(),
        FLOOD_ADDRESSES.to_string(),
        "--count".into(),
        FLOOD_COUNT.to_string(),
        "--rate".into(),
        FLOOD_RATE.to_string(),
    ];
    let mut sender = Running::start(
        &lab.intruder,
        &env::binary("tunlab", "tunlab-flood")?,
        &args,
        &flood_log,
    )?;
    report.note(format!(
        "flood: {FLOOD_COUNT} initiations at {FLOOD_RATE}/s from {FLOOD_ADDRESSES} addresses of \
         {FLOOD_SOURCES}, from the intruder host, while the client pings {server}"
    ));
    std::thread::sleep(Duration::from_secs(2));

    // The new client, two seconds into the flood.
    let address = tunnel::cidr(tunnel::CLIENT2).to_string();
    let started = Instant::now();
    let client_args = [
        "client",
        "--server",
        &intruders_server().to_string(),
        "--key",
        newcomer.file_str()?,
        "--server-key",
        &keys["server"].public,
        "--address",
        &address,
    ];
    let mut joined = Running::start(
        &lab.intruder,
        &binary,
        &client_args,
        &out.join("newcomer-flood.log"),
    )?;
    let connected = joined
        .wait_for_log("a completed handshake", 2 * FLOOD_CONNECT_LIMIT, handshake_line)
        .is_ok();
    let took = started.elapsed();
    // Its initiations the server did not answer: each retry says so.
    let retries = joined
        .log_text()
        .lines()
        .take_while(|l| !handshake_line(l))
        .filter(|l| l.contains("sending initiation"))
        .count();
    let answered = lab.intruder.ping_with(
        ["-n", "-c", "3", "-i", "0.2", "-W", "1", &server]
            .map(String::from)
            .into(),
    )?;
    let flood_secs = u64::from(FLOOD_COUNT / FLOOD_RATE);
    let exited = sender.exits_within(Duration::from_secs(flood_secs + 10))?;
    let sent = sender
        .log_text()
        .lines()
        .find(|l| l.starts_with("sent "))
        .map(str::to_string);
    let pings = String::from_utf8_lossy(&pings.wait_with_output()?.stdout).into_owned();
    let counts = crate::traffic::ping_counts(&pings);
    let rtt = crate::traffic::ping_rtt(&pings).map_or(String::new(), |(avg, max)| {
        format!("; round trip {avg:.2} ms on average, {max:.2} ms at most")
    });
    let status = lab.server_status()?;
    report.note(format!(
        "tunlab-flood: {}",
        sent.as_deref().unwrap_or("(no summary in flood.log)")
    ));
    report.check(
        "the flood was sent (tunlab-flood exits 0)",
        exited.is_some_and(|s| s.success()) && sent.is_some(),
        format!(
            "{}; its log {}",
            exited.map_or("still running".to_string(), |s| s.to_string()),
            flood_log.display()
        ),
    );
    report.check(
        format!("ping keeps going through a flood of {FLOOD_COUNT} forged initiations"),
        counts.is_some_and(|(sent, got)| sent > 0 && got * 100 >= sent * 95),
        counts.map_or("no summary from ping".into(), |(s, r)| {
            format!(
                "{s} sent, {r} received ({:.0}% loss){rtt}",
                100.0 * f64::from(s - r.min(s)) / f64::from(s.max(1))
            )
        }),
    );
    report.check(
        format!(
            "a new client connects during the flood within {} s",
            FLOOD_CONNECT_LIMIT.as_secs()
        ),
        connected && took <= FLOOD_CONNECT_LIMIT && answered.counts.is_some_and(|(_, got)| got > 0),
        format!(
            "handshake {:.2} s after it started, {retries} of its initiations unanswered before \
             (a first contact finds the flood has taken its half of the budget; a retry comes \
             back); its ping: {answered}",
            took.as_secs_f64()
        ),
    );
    // Each `unknown-peer` cost two X25519 (the initiation opened, and its
    // key was not listed); `overloaded` and `rate-limited` cost none.
    let budget = u64::from(step04_crypto::Limits::default().handshake_budget);
    let worked = status.total("unknown-peer");
    let refused = status.total("overloaded") + status.total("rate-limited");
    report.check(
        "the server spends Diffie-Hellman work on no more of the flood than its budget",
        worked > 0 && worked <= budget * (flood_secs + 2) && refused > worked,
        format!(
            "unknown-peer {worked} ({} X25519), refused before any {refused}: the budget is {budget} a second",
            2 * worked
        ),
    );
    joined.stop(Signal::SIGTERM, Duration::from_secs(5))?;
    stop(&mut lab, "flood: ", report)
}
// ANCHOR_END: flood

/// Sends `data` from the client to the server (10.0.0.1) through the
/// tunnel with nc; returns whether it arrived intact and how long it took.
fn transfer(lab: &Up, data: &Path, received: &Path, timeout: u32) -> anyhow::Result<(bool, f64)> {
    nc_transfer(&lab.client, &lab.server, tunnel::SERVER, data, received, timeout)
}

/// Where the intruder reaches the server: its address on the intruder's
/// link.
fn intruders_server() -> SocketAddr {
    SocketAddr::new(internet::SERVER.into(), TUNNEL_PORT)
}

/// A short session with the fixed test-only keys (three pings each way,
/// two ping -6 from the client), recorded on the underlay and on both TUN
/// devices, with the server's ephemeral keys: the golden fixtures in
/// `pcaps/step04/`. Transmit checksum offload is off on every veth, so the
/// underlay capture carries real UDP checksums.
fn record_fixtures(out: &Path, binary: &Path, report: &mut Report) -> anyhow::Result<()> {
    let dir = out.join("fixtures");
    std::fs::create_dir_all(&dir)?;
    let pcaps = env::fixtures_dir("step04")?;
    let keys = Keys::test_only(binary, &pcaps, &dir, KEY_NAMES, report)?;
    let underlay = dir.join("underlay.pcap");
    let session = Session {
        underlay: Some(&underlay),
        offload_off: true,
        ..Session::new("fixtures")
    };
    let mut lab = up(&dir, &keys, &session, report)?;
    // Three pings each way, then two ping -6 from the client.
    for (from, name, to, count) in [
        (&lab.client, "client -> server", IpAddr::from(tunnel::SERVER), 3),
        (&lab.server, "server -> client", tunnel::CLIENT.into(), 3),
        (&lab.client, "-6 client -> server", tunnel::SERVER6.into(), 2),
    ] {
        let check = format!("fixtures: ping {name} ({to})");
        from.ping_check(report, check, to, count, &["-s", "56", "-p", PATTERN])?;
    }
    lab.underlay.take().context("no underlay capture")?.finish()?;
    stop(&mut lab, "fixtures: ", report)?;
    checksums_verify(
        "fixtures: every checksum in underlay.pcap verifies",
        &underlay,
        report,
    )?;
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
