//! A host's state as the steps from 05 on may change it (routes and rules
//! of both families, the nftables ruleset, sysctls, the resolver), read
//! before and after, and compared with a unified diff; the reading of what
//! a step says it changed (`host:` lines, its state file) and of what
//! `stepNN down` undid.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use anyhow::Context;

use crate::netns::{Host, STEP_STATE_DIR};
use crate::report::Report;

/// The forwarding sysctls, which a server with `--nat` turns on.
pub const FORWARDING: [&str; 2] = ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"];
/// What turning a forwarding switch on rewrites besides (step 05 puts these
/// back too): the `forwarding` of every interface and of `default`, in both
/// families, and `net.ipv4.conf.all.accept_redirects`. Read inside `host`,
/// for the interfaces it has now.
pub fn forwarding_sysctls(host: &Host) -> anyhow::Result<Vec<String>> {
    let mut keys = FORWARDING.map(String::from).to_vec();
    for family in ["ipv4", "ipv6"] {
        let names = host.stdout("ls", [format!("/proc/sys/net/{family}/conf")])?;
        for name in names.split_whitespace().filter(|n| *n != "all") {
            keys.push(format!("net/{family}/conf/{name}/forwarding"));
        }
    }
    keys.push("net.ipv4.conf.all.accept_redirects".into());
    Ok(keys)
}

/// Whether the kernel accepts 127.0.0.0/8 on other interfaces than `lo`
/// (step 06's layer-3 client turns it on for its TUN device).
pub const ROUTE_LOCALNET: &str = "net.ipv4.conf.all.route_localnet";
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Reading a host's state.
impl Host {
    /// A file as programs inside this host see it (`/etc/resolv.conf` is
    /// the host's own copy there).
    pub fn read_file(&self, path: &str) -> anyhow::Result<String> {
        self.stdout("cat", [path])
    }

    /// A sysctl of this host (each namespace has its own `net.` ones).
    pub fn sysctl(&self, key: &str) -> anyhow::Result<String> {
        Ok(self.read_file(&sysctl_path(key))?.trim().to_string())
    }

    pub fn set_sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.stdout("sh", ["-c", &format!("echo {value} > {}", sysctl_path(key))])
            .with_context(|| format!("setting {key}={value}"))
            .map(drop)
    }

    /// `nft list tables`: `table inet tunlab_step05_tun0`, ... (none when
    /// nft fails).
    pub fn nft_tables(&self) -> Vec<String> {
        self.stdout("nft", ["list", "tables"])
            .map(|o| o.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The interface the kernel sends `address` by (`ip route get`), or
    /// `None` when it has no route.
    pub fn route_dev(&self, address: &str) -> Option<String> {
        let line = self.ip([family(address), "-o", "route", "get", address]).ok()?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "dev")?;
        words.get(at + 1).map(|d| d.to_string())
    }

    /// What `ip route get` says for `address`, on one line, cut after the
    /// interface.
    pub fn route_get(&self, address: &str) -> String {
        match self.ip([family(address), "-o", "route", "get", address]) {
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

    /// The `nameserver` lines of this host's resolv.conf.
    pub fn nameservers(&self) -> Vec<String> {
        self.read_file(RESOLV_CONF)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("nameserver"))
            .map(|a| a.trim().to_string())
            .collect()
    }
}

/// `/proc/sys/<key>`; a key with slashes (`net/ipv4/conf/eth0.100/forwarding`,
/// as sysctl(8) takes it when a part has a dot) is the path already.
fn sysctl_path(key: &str) -> String {
    if key.contains('/') {
        format!("/proc/sys/{key}")
    } else {
        format!("/proc/sys/{}", key.replace('.', "/"))
    }
}

fn family(address: &str) -> &'static str {
    if address.contains(':') { "-6" } else { "-4" }
}

/// Everything of a host that a step may change: routes and rules of both
/// families, the nftables ruleset, the sysctls asked for, and (for
/// clients) the resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    /// (what, as the command printed it).
    pub items: Vec<(String, String)>,
}

impl HostState {
    /// Reads the state of `host` with `sysctls`; `resolv` adds its
    /// `/etc/resolv.conf`.
    pub fn read(host: &Host, sysctls: &[&str], resolv: bool) -> anyhow::Result<Self> {
        let mut items = vec![
            ("ip -4 route".to_string(), host.ip(["-4", "route", "show"])?),
            ("ip -6 route".to_string(), host.ip(["-6", "route", "show"])?),
            ("ip -4 rule".to_string(), host.ip(["-4", "rule", "show"])?),
            ("ip -6 rule".to_string(), host.ip(["-6", "rule", "show"])?),
            (
                "nft list ruleset".to_string(),
                host.stdout("nft", ["list", "ruleset"])?,
            ),
        ];
        for key in sysctls {
            items.push((key.to_string(), host.sysctl(key)? + "\n"));
        }
        if resolv {
            items.push((RESOLV_CONF.to_string(), host.read_file(RESOLV_CONF)?));
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

    /// The names of the items: `ip -4 route, ip -6 route, ...`.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.items.iter().map(|(w, _)| w.as_str()).collect();
        names.join(", ")
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

/// The check `NAME equals the state before`: passes when `after` is
/// `before`, with `same` as its detail; otherwise the detail is the diff.
pub fn check_unchanged(
    report: &mut Report,
    name: &str,
    before: &HostState,
    after: &HostState,
    same: impl FnOnce() -> String,
) -> bool {
    let diff = before.diff(after);
    report.check(
        format!("{name} equals the state before"),
        diff.is_none(),
        match diff {
            None => same(),
            Some(diff) => format!("it differs:\n{diff}"),
        },
    )
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

/// The `host:` lines of a log (from `host:` on): what the program changed,
/// and undid.
pub fn host_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.find("host: ").map(|at| l[at..].trim().to_string()))
        .collect()
}

/// The path in the last `(state in PATH)` of a log: the journal a step
/// keeps of what it changed.
pub fn state_in_log(log: &str) -> Option<PathBuf> {
    let line = log.lines().rev().find(|l| l.contains("(state in "))?;
    let at = line.find("(state in ")? + "(state in ".len();
    let path = line[at..].split(')').next()?.trim();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// The state file a step names in its log, or else the one step 05 keeps
/// for `host` by default: `/run/tunlab/<netns name>/step05-tun0.state`.
pub fn state_file(host: &Host, log: &str, tun: &str) -> PathBuf {
    state_in_log(log).unwrap_or_else(|| {
        Path::new(STEP_STATE_DIR)
            .join(host.netns())
            .join(format!("step05-{tun}.state"))
    })
}

/// What `stepNN down` said, after a killed step.
#[derive(Debug)]
pub struct Down {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Each `undid: WHAT`.
    pub undid: Vec<String>,
    /// Each `already gone: WHAT: ...`, cut before the failed command
    /// (routes through the TUN device went with it).
    pub gone: Vec<String>,
    /// The state files it found and undid (`PATH:` lines), without being
    /// told which.
    pub files: Vec<String>,
}

impl Down {
    /// Runs `binary down` in `host` and keeps what it said in `log`.
    pub fn run(host: &Host, binary: &Path, log: &Path) -> anyhow::Result<Self> {
        let out = host.run(&binary.to_string_lossy(), ["down"])?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        std::fs::write(log, stdout.clone() + &stderr)
            .with_context(|| format!("writing {}", log.display()))?;
        let undid = stdout
            .lines()
            .filter_map(|l| l.trim().strip_prefix("undid: "))
            .map(str::to_string)
            .collect();
        // `already gone: route ::/1 dev tun0: `ip -6 route del ...` failed ...`
        let gone = stdout
            .lines()
            .filter_map(|l| l.trim().strip_prefix("already gone: "))
            .map(|l| l.split(": `").next().unwrap_or(l).to_string())
            .collect();
        let files = stdout
            .lines()
            .filter_map(|l| l.trim().strip_suffix(".state:"))
            .map(|l| format!("{l}.state"))
            .collect();
        Ok(Self {
            status: out.status,
            stdout,
            stderr,
            undid,
            gone,
            files,
        })
    }
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
        assert_eq!(a.names(), "ip -4 route, nft list ruleset");
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
