//! Reading what the steps log: a plaintext client's first answer from the
//! server (steps 02 and 03), a completed handshake (04 and later), and the
//! status report the encrypted steps write on SIGUSR1 (a line per peer with
//! its endpoint and counters, then the drops no peer can be blamed for).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::process::{ANSWER_TIMEOUT, Running};
use crate::report::Report;
use crate::topology::TUN;

/// A log line saying a handshake completed.
pub fn handshake_line(line: &str) -> bool {
    line.contains("handshake with") && line.contains("complete")
}

impl Running {
    /// Waits until a plaintext client (step 02, 03) logs that the server
    /// answered its Ping: from then on the tunnel carries traffic (over
    /// TCP, the connection is up).
    pub fn wait_for_answer(&mut self) -> anyhow::Result<()> {
        self.wait_for_log("the server's answer", ANSWER_TIMEOUT, |l| l.contains("answered"))
    }

    /// Waits until its log says a handshake completed.
    pub fn wait_for_handshake(&mut self) -> anyhow::Result<()> {
        self.wait_for_log("a completed handshake", ANSWER_TIMEOUT, handshake_line)
    }

    /// Sends it SIGUSR1 and returns the status report it logs in answer.
    pub fn status(&self) -> anyhow::Result<Status> {
        let reports = |text: &str| text.lines().filter(|l| l.contains("unattributed:")).count();
        let before = reports(&self.log_text());
        let pid = self.pid().context("the program is not running")?;
        kill(Pid::from_raw(pid as i32), Signal::SIGUSR1).context("sending SIGUSR1")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.log_text();
            if reports(&text) > before {
                return Status::last(&text).context("a status report without its lines");
            }
            if Instant::now() >= deadline {
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "no status report (a line with \"unattributed:\") in {} within 5 s of SIGUSR1; it ends:\n{}",
                    self.log().display(),
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Notes the last status report of `log` (a server's, after it stopped):
/// its counters at exit.
pub fn note_counters_at_exit(report: &Report, log: &str) {
    if let Some(status) = Status::last(log) {
        report.note("the server's counters at exit:");
        for line in status.lines {
            report.note(format!("  {line}"));
        }
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

/// One status report of an encrypted step's end: a line per peer, then
/// the drops no peer can be blamed for.
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

// ANCHOR: fast_path
/// Step 08's counters, from the `fast path: name=value ...` line it logs
/// on SIGUSR1 and at exit: system calls, wake-ups, packets, offloads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FastPath(pub BTreeMap<String, f64>);

impl FastPath {
    /// The counters of the last `fast path:` line of `log`.
    pub fn last(log: &str) -> Option<Self> {
        let line = log.lines().rev().find_map(|l| l.split_once("fast path: "))?.1;
        Some(Self(
            line.split_whitespace()
                .filter_map(|w| {
                    let (k, v) = w.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect(),
        ))
    }

    /// One counter (0 when the line has no such name).
    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// What happened between `earlier` and this: every counter's
    /// difference (the ratios are taken again from the differences).
    pub fn since(&self, earlier: &FastPath) -> FastPath {
        let mut d: BTreeMap<String, f64> = self
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v - earlier.get(k)))
            .collect();
        let packets = d.get("tun-in").copied().unwrap_or(0.0) + d.get("tun-out").copied().unwrap_or(0.0);
        let wakeups = d.get("wakeups").copied().unwrap_or(0.0);
        d.insert(
            "packets-per-wakeup".into(),
            if wakeups > 0.0 { packets / wakeups } else { 0.0 },
        );
        FastPath(d)
    }
}

impl Running {
    /// Sends step 08 SIGUSR1 and returns the counters it logs in answer.
    pub fn fast_path(&self) -> anyhow::Result<FastPath> {
        let lines = |text: &str| text.lines().filter(|l| l.contains("fast path: ")).count();
        let before = lines(&self.log_text());
        let pid = self.pid().context("the program is not running")?;
        kill(Pid::from_raw(pid as i32), Signal::SIGUSR1).context("sending SIGUSR1")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.log_text();
            if lines(&text) > before {
                return FastPath::last(&text).context("a fast path line without counters");
            }
            if Instant::now() >= deadline {
                bail!(
                    "no `fast path:` line in {} within 5 s of SIGUSR1",
                    self.log().display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
// ANCHOR_END: fast_path

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
    fn a_completed_handshake_is_one_line() {
        assert!(LOG.lines().any(handshake_line));
        assert!(!handshake_line("sending handshake initiation to AbCdEfGh"));
    }

    #[test]
    fn the_fast_path_line_reads_back_by_name_and_subtracts() {
        let log = "INFO  s8t: peer x\n\
                   INFO  s8t: fast path: wakeups=10 syscalls=50 tun-in=400 tun-out=100 gso-out=7 packets-per-wakeup=50.0\n\
                   INFO  other\n";
        let early = FastPath::last(log).unwrap();
        assert_eq!(early.get("gso-out"), 7.0);
        assert_eq!(early.get("missing"), 0.0);
        let later =
            FastPath::last("fast path: wakeups=20 syscalls=90 tun-in=1400 tun-out=100 gso-out=9").unwrap();
        let d = later.since(&early);
        assert_eq!((d.get("wakeups"), d.get("gso-out")), (10.0, 2.0));
        assert_eq!(d.get("packets-per-wakeup"), 100.0);
        assert_eq!(FastPath::last("nothing here"), None);
    }
}
