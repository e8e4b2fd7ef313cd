//! `tunlab fuzz`: runs every coverage-guided fuzz target of `fuzz/` (cargo-fuzz
//! and libFuzzer, with AddressSanitizer) for a given time, each seeded with
//! the shipped captures, and reports executions, coverage and crashes.
//!
//! Nothing here needs root or touches a network: the targets are the
//! sans-IO cores and parsers, fed bytes in memory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use step01_ping_tun::pcap::{self, DataLink};
use step02_plain_tunnel::wire::udp_payload;

use crate::env::workspace_root;

/// Where a target's seeds come from.
#[derive(Debug, Clone, Copy)]
pub enum Seeds {
    /// Every packet of these captures (TUN captures: IP packets; underlay
    /// captures: the IP packet inside each Ethernet frame).
    Packets(&'static [&'static str]),
    /// The UDP payload of every datagram in these underlay captures.
    UdpPayloads(&'static [&'static str]),
    /// The TCP payload of every segment in these captures.
    TcpPayloads(&'static [&'static str]),
    /// The TCP payloads of one direction of the connections to `port` in a
    /// capture: the client's bytes (`to_port`) or the server's.
    TcpSegments {
        pcap: &'static str,
        port: u16,
        to_port: bool,
    },
    /// The frames of the control connection recorded in lab 06
    /// (`pcaps/step06/control.pcap`), decrypted with the test-only keys and
    /// the key log stored beside it: the client's or the server's.
    Step06Frames { from_client: bool },
    /// The whole content of each of these files.
    Files(&'static [&'static str]),
    /// A state file of step 05's journal, written by the journal itself
    /// (one change of each kind it records), then a 0 byte, then its side
    /// file.
    Step05Journal,
    /// The seeds of each of these sources.
    Union(&'static [Seeds]),
    /// For targets that read their input as records (`fuzz/src/lib.rs`: an
    /// op byte, a 2-byte big-endian length, the bytes): each seed of each
    /// entry alone, as a record with the entry's op and its bytes after
    /// the entry's prefix; and one more seed with all of them in a row, in
    /// capture order (a whole recorded session).
    Records(&'static [Record]),
}

/// One source of [`Seeds::Records`].
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub op: u8,
    /// Bytes the target reads before the seed (its parameters).
    pub prefix: &'static [u8],
    pub of: Seeds,
}

/// One fuzz target: a file `fuzz/fuzz_targets/NAME.rs`.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    /// What it feeds with the fuzzer's bytes, for the report.
    pub what: &'static str,
    pub seeds: Seeds,
}

/// Every IP packet the labs recorded on a TUN device or an underlay.
const ALL_PACKETS: &[&str] = &["step01", "step02", "step03", "step04", "step05", "step06"];

/// A NAT target's parameters before each packet: the new address
/// (198.51.100.1, as lab 05's server masquerades to, in 16 bytes) and
/// port (40000).
const NAT_PREFIX: &[u8] = &[198, 51, 100, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x9c, 0x40];

/// Every target, in the order of the steps.
pub const TARGETS: &[Target] = &[
    Target {
        name: "step01_responder",
        what: "step 01's responder on packets from the TUN device",
        seeds: Seeds::Packets(&["step01"]),
    },
    Target {
        name: "step02_decapsulate",
        what: "step 02's tunnel on datagrams from the network, both roles",
        seeds: Seeds::UdpPayloads(&["step02/underlay.pcap"]),
    },
    Target {
        name: "step02_framing",
        what: "step 02's TCP framing on a byte stream cut anywhere",
        seeds: Seeds::UdpPayloads(&["step02/underlay.pcap"]),
    },
    Target {
        name: "step03_checksum",
        what: "step 03's incremental checksum update against recomputation",
        // Change the first word of the transport header (a port).
        seeds: Seeds::Records(&[Record {
            op: 0,
            prefix: &[0, 0, 0x12, 0x34],
            of: Seeds::Packets(ALL_PACKETS),
        }]),
    },
    Target {
        name: "step03_clamp",
        what: "step 03's MSS clamp on packets from the TUN device",
        // Clamp to 1360, lab 03's limit for a 1400-byte tunnel over IPv4.
        seeds: Seeds::Records(&[Record {
            op: 0,
            prefix: &[0x05, 0x50],
            of: Seeds::Packets(ALL_PACKETS),
        }]),
    },
    Target {
        name: "step03_too_big",
        what: "step 03's fragmentation-needed and packet-too-big errors",
        // An MTU of 1280 from 10.0.0.1 (IPv4 records) and fd00::1 (IPv6).
        seeds: Seeds::Records(&[
            Record {
                op: 0,
                prefix: &[0x05, 0x00, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                of: Seeds::Packets(ALL_PACKETS),
            },
            Record {
                op: 1,
                prefix: &[0x05, 0x00, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                of: Seeds::Packets(ALL_PACKETS),
            },
        ]),
    },
    Target {
        name: "step04_decapsulate",
        what: "step 04's server on datagrams, in the session recorded in lab 04",
        seeds: Seeds::Records(&[Record {
            op: 0,
            prefix: &[],
            of: Seeds::UdpPayloads(&["step04/underlay.pcap"]),
        }]),
    },
    Target {
        name: "step04_handshake",
        what: "step 04's handshake, both roles, through a hostile network",
        seeds: Seeds::Records(&[
            Record {
                op: 0,
                prefix: &[],
                of: Seeds::Packets(&["step04/client-tun.pcap"]),
            },
            Record {
                op: 1,
                prefix: &[],
                of: Seeds::Packets(&["step04/server-tun.pcap"]),
            },
        ]),
    },
    Target {
        name: "step05_nat",
        what: "step 05's NAT (snat, dnat, TTL) on forwarded packets",
        seeds: Seeds::Records(&[
            Record {
                op: 0,
                prefix: NAT_PREFIX,
                of: Seeds::Packets(&["step05", "step06/l3-server-tun.pcap"]),
            },
            Record {
                op: 3,
                prefix: NAT_PREFIX,
                of: Seeds::Packets(&["step05"]),
            },
        ]),
    },
    Target {
        name: "step05_journal",
        what: "step 05's state journal, read back as root by down and the next start",
        seeds: Seeds::Step05Journal,
    },
    Target {
        name: "step06_frame",
        what: "step 06's control frames, as they come out of a record",
        seeds: Seeds::Union(&[
            Seeds::Step06Frames { from_client: true },
            Seeds::Step06Frames { from_client: false },
        ]),
    },
    Target {
        name: "step06_secure",
        what: "step 06's record layer, both roles, in the session recorded in lab 06",
        seeds: Seeds::Records(&[
            Record {
                op: 0,
                prefix: &[],
                of: Seeds::TcpSegments {
                    pcap: "step06/control.pcap",
                    port: STEP06_PORT,
                    to_port: false,
                },
            },
            Record {
                op: 1,
                prefix: &[],
                of: Seeds::TcpSegments {
                    pcap: "step06/control.pcap",
                    port: STEP06_PORT,
                    to_port: true,
                },
            },
        ]),
    },
    Target {
        name: "step06_mux",
        what: "step 06's stream multiplexer, server side, facing a hostile client",
        seeds: Seeds::Records(&[Record {
            op: 0,
            prefix: &[],
            of: Seeds::Step06Frames { from_client: true },
        }]),
    },
];

/// Step 06's control port in lab 06's recording.
const STEP06_PORT: u16 = 7835;

/// What one target's run showed.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub name: String,
    /// Inputs run.
    pub runs: u64,
    pub seconds: u64,
    /// libFuzzer's last `cov:` figure: coverage points (edges) reached.
    pub coverage: u64,
    /// libFuzzer's last `ft:` figure: features (edge and counter pairs).
    pub features: u64,
    /// Inputs in the corpus at the end.
    pub corpus: u64,
    /// The file libFuzzer wrote the crashing input to, if it crashed.
    pub crash: Option<PathBuf>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = self.runs.checked_div(self.seconds.max(1)).unwrap_or(0);
        write!(
            f,
            "{:<28} {:>12} runs {:>9}/s  cov {:>5}  ft {:>6}  corpus {:>5}  {}",
            self.name,
            self.runs,
            rate,
            self.coverage,
            self.features,
            self.corpus,
            match &self.crash {
                None => "no crash".to_string(),
                Some(p) => format!("CRASH: {}", p.display()),
            }
        )
    }
}

/// The folder with the cargo-fuzz crate.
pub fn fuzz_dir() -> PathBuf {
    workspace_root().join("fuzz")
}

/// Where corpora and seeds live (under target/, never committed).
pub fn work_dir() -> PathBuf {
    workspace_root().join("target").join("fuzz")
}

/// The target called `name`.
pub fn find(name: &str) -> anyhow::Result<&'static Target> {
    TARGETS.iter().find(|t| t.name == name).with_context(|| {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        format!("no fuzz target {name}; the targets are: {}", names.join(", "))
    })
}

/// Writes `target`'s seeds into `dir`, one file each; returns how many.
pub fn write_seeds(target: &Target, dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut seeds = match target.seeds {
        Seeds::Records(records) => {
            let mut seeds = Vec::new();
            let mut session = Vec::new();
            for r in records {
                for blob in blobs(&r.of)? {
                    let mut body = r.prefix.to_vec();
                    body.extend_from_slice(&blob);
                    let mut one = Vec::new();
                    record(&mut one, r.op, &body);
                    session.extend_from_slice(&one);
                    seeds.push(one);
                }
            }
            seeds.push(session);
            seeds
        }
        other => blobs(&other)?,
    };
    seeds.sort();
    seeds.dedup();
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:04}")), seed)?;
    }
    Ok(seeds.len())
}

/// One record as the targets read them (fuzz/src/lib.rs, `Records`): the
/// op, the length (2 bytes, big-endian), the bytes.
fn record(out: &mut Vec<u8>, op: u8, body: &[u8]) {
    let body = &body[..body.len().min(usize::from(u16::MAX))];
    out.push(op);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// The packets of these captures (files, or every .pcap of a folder of
/// pcaps/), in order, with their link types.
fn captures(names: &[&str]) -> anyhow::Result<Vec<(DataLink, Vec<u8>)>> {
    let pcaps = workspace_root().join("pcaps");
    let mut packets = Vec::new();
    for name in names {
        let path = pcaps.join(name);
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
                .collect();
            files.sort();
            files
        } else {
            vec![path]
        };
        for file in files {
            let (link, captured) =
                pcap::read_any(&file).with_context(|| format!("reading {}", file.display()))?;
            packets.extend(captured.into_iter().map(|c| (link, c.data)));
        }
    }
    Ok(packets)
}

/// The IP packet of a captured record.
fn ip_of(link: DataLink, data: &[u8]) -> Option<&[u8]> {
    match link {
        DataLink::ETHERNET => pcap::ip_in_ethernet(data),
        _ => Some(data),
    }
}

/// The TCP segment of a captured record: (source port, destination port,
/// sequence number, payload).
fn tcp_of(link: DataLink, data: &[u8]) -> Option<(u16, u16, u32, Vec<u8>)> {
    let sliced = etherparse::SlicedPacket::from_ip(ip_of(link, data)?).ok()?;
    match sliced.transport? {
        etherparse::TransportSlice::Tcp(tcp) => Some((
            tcp.source_port(),
            tcp.destination_port(),
            tcp.sequence_number(),
            tcp.payload().to_vec(),
        )),
        _ => None,
    }
}

/// The seeds of one source, in capture order.
fn blobs(seeds: &Seeds) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    match *seeds {
        Seeds::Packets(names) => {
            for (link, data) in captures(names)? {
                out.extend(ip_of(link, &data).map(<[u8]>::to_vec));
            }
        }
        Seeds::UdpPayloads(names) => {
            for (link, data) in captures(names)? {
                if let Some(ip) = ip_of(link, &data)
                    && let Some((_, _, payload)) = udp_payload(ip)
                {
                    out.push(payload.to_vec());
                }
            }
        }
        Seeds::TcpPayloads(names) => {
            for (link, data) in captures(names)? {
                if let Some((_, _, _, payload)) = tcp_of(link, &data)
                    && !payload.is_empty()
                {
                    out.push(payload);
                }
            }
        }
        Seeds::TcpSegments { pcap, port, to_port } => {
            out = tcp_stream(pcap, port, to_port)?.1;
        }
        Seeds::Step06Frames { from_client } => out = step06_frames(from_client)?,
        Seeds::Step05Journal => out.push(step05_journal()?),
        Seeds::Files(names) => {
            for name in names {
                out.push(std::fs::read(workspace_root().join(name))?);
            }
        }
        Seeds::Union(sources) => {
            for source in sources {
                out.extend(blobs(source)?);
            }
        }
        Seeds::Records(_) => bail!("records of records"),
    }
    Ok(out)
}

/// One direction of the TCP connections to `port` in a capture: the bytes
/// in order, and the payload of each segment. Segments are taken in
/// capture order, a sequence number seen before only once: the recordings
/// have no loss and no reordering (the golden tests check that).
fn tcp_stream(name: &str, port: u16, to_port: bool) -> anyhow::Result<(Vec<u8>, Vec<Vec<u8>>)> {
    let mut seen = Vec::new();
    let mut stream = Vec::new();
    let mut segments = Vec::new();
    for (link, data) in captures(&[name])? {
        let Some((sport, dport, seq, payload)) = tcp_of(link, &data) else {
            continue;
        };
        let ours = if to_port { dport == port } else { sport == port };
        if ours && !payload.is_empty() && !seen.contains(&seq) {
            seen.push(seq);
            stream.extend_from_slice(&payload);
            segments.push(payload);
        }
    }
    Ok((stream, segments))
}

/// A state file as step 05's journal writes it, with one change of each
/// kind it records (a route, an nftables table, a sysctl, the resolver
/// file), and its side file: `STATE\0SIDE`, the input of `step05_journal`,
/// with the state directory written as `@DIR@`.
fn step05_journal() -> anyhow::Result<Vec<u8>> {
    use std::os::unix::fs::DirBuilderExt;
    use std::path::Path;

    use step05_full_tunnel::journal::{Action, Change, Journal};
    use step05_full_tunnel::system::System;

    /// A host that does whatever it is asked, and finds ip and nft in
    /// /usr/sbin.
    struct Agreeable;
    impl System for Agreeable {
        fn run(&mut self, _: &[String], _: Option<&str>) -> anyhow::Result<String> {
            Ok(String::new())
        }
        fn locate(&mut self, program: &str) -> anyhow::Result<String> {
            Ok(format!("/usr/sbin/{program}"))
        }
        fn read_sysctl(&mut self, _: &str) -> anyhow::Result<String> {
            Ok("0".into())
        }
        fn write_sysctl(&mut self, _: &str, _: &str) -> anyhow::Result<()> {
            Ok(())
        }
        fn list_sysctl(&mut self, _: &str) -> anyhow::Result<Vec<String>> {
            Ok(Vec::new())
        }
        fn read_file(&mut self, _: &Path) -> anyhow::Result<String> {
            Ok(String::new())
        }
        fn write_file(&mut self, _: &Path, _: &str) -> anyhow::Result<()> {
            Ok(())
        }
    }

    let words = |line: &str| Action::Command(line.split(' ').map(String::from).collect());
    let dir = std::env::temp_dir().join(format!("tunlab-journal-seed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let state = dir.join("step05-tun0.state");
    let seed = (|| {
        let mut journal = Journal::create(&state, Box::new(Agreeable))?;
        for change in [
            Change {
                what: "route 0.0.0.0/1 dev tun0".into(),
                apply: words("ip route add 0.0.0.0/1 dev tun0"),
                undo: words("ip route del 0.0.0.0/1 dev tun0"),
            },
            Change {
                what: "nftables table inet tunlab".into(),
                apply: Action::Nft("table inet tunlab {}\n".into()),
                undo: words("nft delete table inet tunlab"),
            },
            Change {
                what: "sysctl net.ipv4.ip_forward=1".into(),
                apply: Action::Sysctl {
                    key: "net.ipv4.ip_forward".into(),
                    value: "1".into(),
                },
                undo: Action::Sysctl {
                    key: "net.ipv4.ip_forward".into(),
                    value: "0".into(),
                },
            },
            Change {
                what: "resolver 10.0.0.1".into(),
                apply: Action::WriteFile {
                    path: "/etc/resolv.conf".into(),
                    content: "nameserver 10.0.0.1\n".into(),
                },
                undo: Action::WriteFile {
                    path: "/etc/resolv.conf".into(),
                    content: "nameserver 192.0.2.53\nsearch example.org\n".into(),
                },
            },
        ] {
            journal.apply(change)?;
        }
        // The fuzz target's state directory is its own: the side file's
        // path names it as @DIR@.
        let text = std::fs::read_to_string(&state)?;
        let mut seed = text.replace(&dir.display().to_string(), "@DIR@").into_bytes();
        seed.push(0);
        seed.extend(std::fs::read(dir.join("step05-tun0.0.saved"))?);
        anyhow::Ok(seed)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    seed
}

/// The frames of lab 06's recorded control connection, decrypted: the
/// client is replayed from its test-only static key, the ephemeral key in
/// its key log and the timestamp in its initiation (which the server's
/// test-only key opens); it must write the recorded initiation byte for
/// byte, and the recorded response then gives it the session's keys.
fn step06_frames(from_client: bool) -> anyhow::Result<Vec<Vec<u8>>> {
    use std::sync::Arc;

    use step04_crypto::noise::{self, Identity};
    use step04_crypto::wire::{INITIATION_LEN, InitiationPacket};
    use step04_crypto::{PublicKey, StaticSecret};
    use step06_localhost::secure::{Event, MAX_RECORD, Opener, SecureChannel};

    let dir = workspace_root().join("pcaps").join("step06");
    let key = |name: &str| -> anyhow::Result<StaticSecret> {
        let text = std::fs::read_to_string(dir.join(name))?;
        step04_crypto::keys::parse_secret(&text).with_context(|| format!("{name} is not a key"))
    };
    let (server_key, client_key) = (key("test-only-server.key")?, key("test-only-client.key")?);
    let keylog = std::fs::read_to_string(dir.join("client.keylog"))?;
    let ephemeral = *step04_crypto::run::read_keylog(&keylog)
        .first()
        .context("client.keylog has no key")?;
    let (up, _) = tcp_stream("step06/control.pcap", STEP06_PORT, true)?;
    let (down, _) = tcp_stream("step06/control.pcap", STEP06_PORT, false)?;
    let initiation = up
        .get(2..2 + INITIATION_LEN)
        .context("no initiation in control.pcap")?;
    let message = InitiationPacket::new_checked(initiation).map_err(|e| anyhow::anyhow!("{e}"))?;
    let incoming = noise::consume_initiation(&Identity::new(server_key.clone()), &message)
        .map_err(|e| anyhow::anyhow!("the server key does not open the initiation: {e:?}"))?;
    let mut sent = Vec::new();
    let mut client = SecureChannel::client(
        Arc::new(Identity::new(client_key)),
        PublicKey::from(&server_key),
        StaticSecret::from(ephemeral),
        incoming.timestamp,
        &mut sent,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !up.starts_with(&sent) {
        bail!("the replayed client does not write the recorded initiation");
    }
    // Each takes the stream a record's worth at a time, as a shell does
    // (a channel holds at most INPUT_LIMIT bytes unread).
    let frames = |channel: &mut SecureChannel, bytes: &[u8]| -> anyhow::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for chunk in bytes.chunks(MAX_RECORD) {
            channel.push(chunk).map_err(|e| anyhow::anyhow!("{e}"))?;
            while let Some(event) = channel.poll().map_err(|e| anyhow::anyhow!("{e}"))? {
                if let Event::Frame(f) = event {
                    out.push(f.to_vec());
                }
            }
        }
        Ok(out)
    };
    let opened = |opener: &mut Opener, bytes: &[u8]| -> anyhow::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for chunk in bytes.chunks(MAX_RECORD) {
            opener.push(chunk).map_err(|e| anyhow::anyhow!("{e}"))?;
            while let Some(f) = opener.poll().map_err(|e| anyhow::anyhow!("{e}"))? {
                out.push(f.to_vec());
            }
        }
        Ok(out)
    };
    // The response establishes the client; its mirror opens the client's
    // own records, from the first.
    let response_len = 2 + step04_crypto::wire::RESPONSE_LEN;
    let from_server = frames(&mut client, down.get(..response_len).context("no response")?)?;
    let mut mirror = client.mirror().context("no session after the response")?;
    Ok(if from_client {
        opened(&mut mirror, &up[sent.len()..])?
    } else {
        let mut all = from_server;
        all.extend(frames(&mut client, &down[response_len..])?);
        all
    })
}

/// The environment cargo-fuzz needs on a stable toolchain: its sanitizer
/// flags (`-Zsanitizer=address`) are unstable options, which
/// RUSTC_BOOTSTRAP lets a stable compiler accept. The sanitizer runtime
/// itself ships with stable Rust.
fn cargo_fuzz() -> anyhow::Result<Command> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let probe = Command::new(&cargo).args(["fuzz", "--version"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        bail!("cargo-fuzz is missing; install it with: scripts/install-deps.sh --fuzz");
    }
    let mut command = Command::new(cargo);
    command
        .current_dir(fuzz_dir())
        .env("RUSTC_BOOTSTRAP", "1")
        .arg("fuzz");
    Ok(command)
}

/// Builds every target once (with AddressSanitizer and debug assertions).
pub fn build() -> anyhow::Result<()> {
    let status = cargo_fuzz()?
        .args(["build", "--debug-assertions"])
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    Ok(())
}

/// Runs `target` for `seconds`, its corpus in target/fuzz/corpus/NAME,
/// seeded from the captures.
pub fn run(target: &Target, seconds: u64) -> anyhow::Result<Outcome> {
    let corpus = work_dir().join("corpus").join(target.name);
    let seeds = work_dir().join("seeds").join(target.name);
    let artifacts = work_dir().join("artifacts").join(target.name);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let _ = std::fs::remove_dir_all(&seeds);
    write_seeds(target, &seeds)?;
    let started = std::time::Instant::now();
    let output = cargo_fuzz()?
        .args(["run", "--debug-assertions", target.name])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        // Bounded memory per input, and a stuck loop is a finding.
        .arg("-rss_limit_mb=1024")
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running cargo fuzz run {}", target.name))?;
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    std::fs::write(work_dir().join(format!("{}.log", target.name)), &log)?;
    let mut outcome = parse(target.name, &log);
    // libFuzzer says how long it ran only when it ran to the end; a crash
    // stops it early, and the clock says how early.
    if outcome.seconds == 0 {
        outcome.seconds = started.elapsed().as_secs();
    }
    if !output.status.success() {
        outcome.crash = Some(crash_file(&log).unwrap_or(artifacts));
    }
    if outcome.runs == 0 && outcome.crash.is_none() {
        bail!(
            "{} did not run; its log is in {}",
            target.name,
            work_dir().join(format!("{}.log", target.name)).display()
        );
    }
    Ok(outcome)
}

/// Writes `fuzz.json` (each target's figures) and `fuzz.md` (a table
/// made from the JSON alone) into `dir`. A target this run did not touch
/// keeps the figures `fuzz.json` already had for it, so a run of one
/// target updates its line only.
pub fn write_report(dir: &Path, outcomes: &[Outcome]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("fuzz.json");
    let mut targets: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["targets"].as_array().cloned())
        .unwrap_or_default();
    for o in outcomes {
        let entry = serde_json::json!({
            "name": o.name,
            "seconds": o.seconds,
            "runs": o.runs,
            "coverage": o.coverage,
            "features": o.features,
            "corpus": o.corpus,
            "crash": o.crash.as_ref().map(|p| p.display().to_string()),
        });
        match targets.iter_mut().find(|t| t["name"] == o.name.as_str()) {
            Some(t) => *t = entry,
            None => targets.push(entry),
        }
    }
    // In the order of TARGETS, then any others.
    let rank = |name: &str| TARGETS.iter().position(|t| t.name == name).unwrap_or(usize::MAX);
    targets.sort_by_key(|t| rank(t["name"].as_str().unwrap_or("")));
    let json = serde_json::json!({ "targets": targets });
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")?;
    std::fs::write(dir.join("fuzz.md"), markdown(&json)?)?;
    Ok(())
}

/// The table of `fuzz.md`, from the JSON `write_report` writes.
pub fn markdown(json: &serde_json::Value) -> anyhow::Result<String> {
    let mut md = String::from(
        "| target | time | executions | per second | coverage (edges) | features | corpus | crashes |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for t in json["targets"].as_array().context("no targets")? {
        let number = |key: &str| t[key].as_u64().with_context(|| format!("{key} of {}", t["name"]));
        let (seconds, runs) = (number("seconds")?, number("runs")?);
        md.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} | {} |\n",
            t["name"].as_str().context("name")?,
            if seconds >= 60 && seconds.is_multiple_of(60) {
                format!("{} min", seconds / 60)
            } else {
                format!("{seconds} s")
            },
            thousands(runs),
            thousands(runs.checked_div(seconds).unwrap_or(0)),
            number("coverage")?,
            number("features")?,
            number("corpus")?,
            if t["crash"].is_null() { "none" } else { "**crash**" },
        ));
    }
    Ok(md)
}

/// 1234567 as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// libFuzzer's own figures from its log.
pub fn parse(name: &str, log: &str) -> Outcome {
    let mut outcome = Outcome {
        name: name.to_string(),
        ..Outcome::default()
    };
    let number_after = |line: &str, key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?;
        rest.split_whitespace().next()?.trim_end_matches(',').parse().ok()
    };
    for line in log.lines() {
        // "#123456	DONE   cov: 312 ft: 1045 corp: 88/2114b ..." and the
        // progress lines before it have the same fields.
        if line.starts_with('#') {
            if let Some(n) = number_after(line, "cov:") {
                outcome.coverage = n;
            }
            if let Some(n) = number_after(line, "ft:") {
                outcome.features = n;
            }
            if let Some(corp) = line.split("corp:").nth(1)
                && let Some(n) = corp.split('/').next().and_then(|n| n.trim().parse().ok())
            {
                outcome.corpus = n;
            }
        }
        // "stat::number_of_executed_units: 822835", "Done 822835 runs in 11 second(s)"
        if let Some(n) = number_after(line, "stat::number_of_executed_units:") {
            outcome.runs = n;
        }
        if let Some(rest) = line.strip_prefix("Done ") {
            let mut words = rest.split_whitespace();
            if let Some(n) = words.next().and_then(|n| n.parse().ok()) {
                outcome.runs = n;
            }
            if let Some(s) = words.nth(2).and_then(|s| s.parse().ok()) {
                outcome.seconds = s;
            }
        }
    }
    outcome
}

/// The crashing input's file, from libFuzzer's "Test unit written to FILE".
fn crash_file(log: &str) -> Option<PathBuf> {
    log.lines()
        .find_map(|l| l.split("Test unit written to ").nth(1))
        .map(|p| PathBuf::from(p.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzers_figures() {
        let log = "INFO: Seed: 1\n#2\tINITED cov: 40 ft: 41 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #822835\tDONE   cov: 312 ft: 1045 corp: 88/2114b lim: 4096 exec/s: 74803 rss: 60Mb\n\
                   Done 822835 runs in 11 second(s)\nstat::number_of_executed_units: 822835\n";
        let o = parse("t", log);
        assert_eq!(
            (o.runs, o.seconds, o.coverage, o.features, o.corpus),
            (822835, 11, 312, 1045, 88)
        );
        assert!(o.crash.is_none());
        let crash = "==1==ERROR: AddressSanitizer\nTest unit written to target/fuzz/artifacts/t/crash-abc\n";
        assert_eq!(
            crash_file(crash),
            Some(PathBuf::from("target/fuzz/artifacts/t/crash-abc"))
        );
    }

    #[test]
    fn the_report_keeps_each_targets_latest_run() {
        let dir = std::env::temp_dir().join(format!("tunlab-fuzz-report-{}", std::process::id()));
        let outcome = |name: &str, runs| Outcome {
            name: name.into(),
            runs,
            seconds: 600,
            coverage: 100,
            features: 300,
            corpus: 40,
            crash: None,
        };
        write_report(
            &dir,
            &[
                outcome("step01_responder", 1_234_567),
                outcome("step02_framing", 5),
            ],
        )
        .unwrap();
        write_report(&dir, &[outcome("step01_responder", 7_000_000)]).unwrap();
        let md = std::fs::read_to_string(dir.join("fuzz.md")).unwrap();
        assert!(
            md.contains("| `step01_responder` | 10 min | 7,000,000 | 11,666 | 100 | 300 | 40 | none |"),
            "{md}"
        );
        assert!(md.contains("| `step02_framing` | 10 min | 5 | 0 |"), "{md}");
        assert_eq!(md.lines().count(), 4);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_target_has_a_file_and_seeds() {
        for target in TARGETS {
            let file = fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{}.rs", target.name));
            assert!(file.is_file(), "{} has no {}", target.name, file.display());
            let dir =
                std::env::temp_dir().join(format!("tunlab-seeds-{}-{}", std::process::id(), target.name));
            let n = write_seeds(target, &dir).unwrap();
            assert!(n > 0, "{} has no seeds", target.name);
            std::fs::remove_dir_all(dir).unwrap();
        }
        // And every file is a listed target.
        let listed: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        for name in listed {
            assert!(find(&name).is_ok(), "fuzz_targets/{name}.rs is not in TARGETS");
        }
    }
}
