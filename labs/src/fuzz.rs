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
    /// The lines of these text files.
    Files(&'static [&'static str]),
}

/// One fuzz target: a file `fuzz/fuzz_targets/NAME.rs`.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    /// What it feeds with the fuzzer's bytes, for the report.
    pub what: &'static str,
    pub seeds: Seeds,
}

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
];

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
    let pcaps = workspace_root().join("pcaps");
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    let captures = |names: &[&str]| -> anyhow::Result<Vec<(DataLink, Vec<u8>)>> {
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
    };
    let ip_of = |link: DataLink, data: &[u8]| -> Option<Vec<u8>> {
        match link {
            DataLink::ETHERNET => pcap::ip_in_ethernet(data).map(<[u8]>::to_vec),
            _ => Some(data.to_vec()),
        }
    };
    match target.seeds {
        Seeds::Packets(names) => {
            for (link, data) in captures(names)? {
                seeds.extend(ip_of(link, &data));
            }
        }
        Seeds::UdpPayloads(names) => {
            for (link, data) in captures(names)? {
                if let Some(ip) = ip_of(link, &data)
                    && let Some((_, _, payload)) = udp_payload(&ip)
                {
                    seeds.push(payload.to_vec());
                }
            }
        }
        Seeds::TcpPayloads(names) => {
            for (link, data) in captures(names)? {
                if let Some(ip) = ip_of(link, &data)
                    && let Ok(sliced) = etherparse::SlicedPacket::from_ip(&ip)
                    && let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport
                    && !tcp.payload().is_empty()
                {
                    seeds.push(tcp.payload().to_vec());
                }
            }
        }
        Seeds::Files(names) => {
            for name in names {
                let text = std::fs::read(workspace_root().join(name))?;
                seeds.push(text);
            }
        }
    }
    seeds.sort();
    seeds.dedup();
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:04}")), seed)?;
    }
    Ok(seeds.len())
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
