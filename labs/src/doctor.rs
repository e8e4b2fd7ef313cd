//! `tunlab doctor`: what the labs need from this machine, one line per
//! item with the command that fixes it. `tunlab run`, `check` and `shell`
//! run the same checks first, only those their lab needs, and stop with
//! the lines that failed.

use std::fmt;
use std::path::Path;

use crate::env;

/// What a lab needs from the machine.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// The programs it runs (`ip`, `tcpdump`, ...).
    pub tools: &'static [&'static str],
    /// What it needs of the kernel.
    pub kernel: &'static [Kernel],
    /// The binaries it starts, as (package, binary): built before the lab
    /// (as the user, before tunlab asks for root).
    pub binaries: &'static [(&'static str, &'static str)],
}

/// A kernel feature a lab uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `/dev/net/tun`: every step makes a TUN device.
    Tun,
    /// Network namespaces: every lab host is one.
    Netns,
    /// veth pairs: the links between lab hosts.
    Veth,
    /// nftables: NAT, the kill switch and forwarding of steps 05 and 06.
    Nftables,
}

/// The Debian package of each program the labs and the bench run.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("ping", "iputils-ping"),
    ("tcpdump", "tcpdump"),
    ("tshark", "tshark"),
    ("editcap", "wireshark-common"),
    ("iperf3", "iperf3"),
    ("nft", "nftables"),
    ("curl", "curl"),
    ("nc", "netcat-openbsd"),
    ("python3", "python3"),
    ("sha256sum", "coreutils"),
    ("timeout", "coreutils"),
    ("getconf", "libc-bin"),
    ("getent", "libc-bin"),
    ("ethtool", "ethtool"),
    ("setpriv", "util-linux"),
    ("wg", "wireguard-tools"),
    ("wireguard-go", "wireguard-go"),
    ("sudo", "sudo"),
];

/// The Debian package that holds `tool`.
pub fn package(tool: &str) -> &str {
    PACKAGES.iter().find(|(t, _)| *t == tool).map_or(tool, |(_, p)| p)
}

/// The install script the README, CI and the dev container share.
const INSTALL_SCRIPT: &str = "scripts/install-deps.sh";

/// The command that installs `tools`: the install script when the
/// checkout has it, and the apt-get line it would run.
pub fn install_command(tools: &[&str]) -> String {
    let mut packages: Vec<&str> = tools.iter().map(|t| package(t)).collect();
    packages.dedup();
    let apt = format!(
        "sudo apt-get install --no-install-recommends {}",
        packages.join(" ")
    );
    if env::workspace_root().join(INSTALL_SCRIPT).is_file() {
        format!("{INSTALL_SCRIPT} (or: {apt})")
    } else {
        apt
    }
}

/// How an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ok,
    /// A lab that needs it cannot run.
    Missing,
    /// Worth knowing; no lab fails for it.
    Note,
}

/// One line of the doctor's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub state: State,
    pub item: String,
    pub detail: String,
    /// The command that fixes it.
    pub fix: Option<String>,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Ok => "ok",
            State::Missing => "MISSING",
            State::Note => "note",
        };
        write!(f, "{state:<8} {}: {}", self.item, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

fn line(state: State, item: impl Into<String>, detail: impl Into<String>, fix: Option<String>) -> Line {
    Line {
        state,
        item: item.into(),
        detail: detail.into(),
        fix,
    }
}

/// The kernel's release (`uname -r`).
fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The operating system: the labs run on Linux only.
fn linux() -> Line {
    if cfg!(target_os = "linux") && Path::new("/proc/sys/kernel/osrelease").exists() {
        line(State::Ok, "Linux", release(), None)
    } else {
        line(
            State::Missing,
            "Linux",
            "the labs need a Linux kernel (network namespaces, TUN devices)",
            Some("use the dev container or a Linux VM (book: Before you start, Setup)".into()),
        )
    }
}

/// Whether the kernel has module `name`: loaded, built in, or a module it
/// loads on first use; `None` when it cannot tell (no
/// `/lib/modules/RELEASE`, as in most containers).
fn module(name: &str) -> Option<Result<&'static str, String>> {
    if Path::new("/sys/module").join(name).exists() {
        return Some(Ok("loaded"));
    }
    let dir = Path::new("/lib/modules").join(release());
    if !dir.is_dir() {
        return None;
    }
    let listed = |file: &str| {
        std::fs::read_to_string(dir.join(file)).is_ok_and(|text| {
            text.lines().any(|l| {
                let path = l.split(':').next().unwrap_or("");
                let file = path.rsplit('/').next().unwrap_or("");
                file.split('.').next() == Some(name) && file.contains(".ko")
            })
        })
    };
    if listed("modules.builtin") {
        Some(Ok("built into the kernel"))
    } else if listed("modules.dep") {
        Some(Ok("a kernel module, loaded on first use"))
    } else {
        Some(Err(format!("no {name} module in {}", dir.display())))
    }
}

fn kernel(feature: Kernel) -> Line {
    let container = "in a container, run it with --privileged (the dev container does)";
    match feature {
        Kernel::Tun => {
            use std::os::unix::fs::FileTypeExt;
            match std::fs::metadata("/dev/net/tun") {
                Ok(m) if m.file_type().is_char_device() => {
                    line(State::Ok, "/dev/net/tun", "a character device", None)
                }
                _ => line(
                    State::Missing,
                    "/dev/net/tun",
                    "no TUN device node",
                    Some(format!(
                        "sudo modprobe tun ({container}, or with --device /dev/net/tun)"
                    )),
                ),
            }
        }
        Kernel::Netns => {
            if Path::new("/proc/self/ns/net").exists() {
                line(State::Ok, "network namespaces", "supported", None)
            } else {
                line(
                    State::Missing,
                    "network namespaces",
                    "the kernel has none (CONFIG_NET_NS)",
                    Some("a distribution kernel: every one has them".into()),
                )
            }
        }
        Kernel::Veth | Kernel::Nftables => {
            let (item, name) = match feature {
                Kernel::Veth => ("veth", "veth"),
                _ => ("nftables (kernel)", "nf_tables"),
            };
            match module(name) {
                Some(Ok(how)) => line(State::Ok, item, how, None),
                Some(Err(why)) => line(
                    State::Missing,
                    item,
                    why,
                    Some(format!(
                        "install your kernel's extra modules (Ubuntu: sudo apt-get install linux-modules-extra-{})",
                        release()
                    )),
                ),
                None => line(
                    State::Note,
                    item,
                    format!(
                        "cannot tell (no /lib/modules/{}: a container?); a lab says so if it is missing",
                        release()
                    ),
                    None,
                ),
            }
        }
    }
}

fn tool(name: &str) -> Line {
    // The WireGuard peers: wg and wireguard-go from apt, boringtun-cli
    // from cargo install (often in ~/.cargo/bin, off sudo's PATH).
    if matches!(name, "wg" | "wireguard-go" | "boringtun-cli") {
        let found = match name {
            "boringtun-cli" => crate::bench::boringtun_binary(),
            _ => env::find_program(name),
        };
        return match found {
            Some(path) => line(State::Ok, name, path.display().to_string(), None),
            None => line(
                State::Missing,
                name,
                "not installed",
                Some(if env::workspace_root().join(INSTALL_SCRIPT).is_file() {
                    format!("{INSTALL_SCRIPT} --wireguard")
                } else {
                    "sudo apt-get install --no-install-recommends wireguard-go wireguard-tools; cargo install --locked boringtun-cli".into()
                }),
            ),
        };
    }
    match env::find_program(name) {
        Some(path) => line(
            State::Ok,
            format!("{name} ({})", package(name)),
            path.display().to_string(),
            None,
        ),
        None => line(
            State::Missing,
            format!("{name} ({})", package(name)),
            "not installed",
            Some(install_command(&[name])),
        ),
    }
}

/// How this user gets root.
fn privileges() -> Line {
    use crate::env::Sudo;
    if env::is_root() {
        return line(State::Ok, "privileges", "running as root", None);
    }
    let become_root =
        "as root: apt-get install sudo; usermod -aG sudo $USER (then log in again), or run tunlab as root";
    match env::sudo_state() {
        Sudo::Ready => line(
            State::Ok,
            "privileges",
            "sudo gives root without asking now",
            None,
        ),
        Sudo::Password => line(
            State::Ok,
            "privileges",
            "sudo will ask for your password when a lab starts (run labs from a terminal)",
            None,
        ),
        Sudo::Missing => line(
            State::Missing,
            "privileges",
            "not root, and no sudo to become root for the lab part",
            Some(become_root.into()),
        ),
        Sudo::Refused(said) => line(
            State::Missing,
            "privileges",
            format!("not root, and sudo does not give you root ({said})"),
            Some(become_root.into()),
        ),
    }
}

/// Lab hosts that crashed runs left.
fn leftovers() -> Line {
    let names = crate::netns::lab_namespaces().unwrap_or_default();
    let dead: Vec<&String> = names.iter().filter(|n| !crate::netns::owner_alive(n)).collect();
    if dead.is_empty() {
        let detail = match names.len() {
            0 => "free: no lab host left by a crashed run".to_string(),
            n => format!("free: no lab host left by a crashed run ({n} of runs still going)"),
        };
        return line(State::Ok, "lab names", detail, None);
    }
    let shown: Vec<&str> = dead.iter().take(3).map(|n| n.as_str()).collect();
    line(
        State::Note,
        "lab names",
        format!(
            "{} lab hosts left by crashed runs ({}{}); the next run removes them",
            dead.len(),
            shown.join(", "),
            if dead.len() > 3 { ", ..." } else { "" }
        ),
        Some("cargo run -p tunlab -- clean".into()),
    )
}

/// As root: makes a throwaway namespace with a veth pair and an nftables
/// table in it, and says what worked. The lines replace the guesses
/// [`kernel`] makes from files.
fn probe(features: &[Kernel]) -> Vec<(Kernel, Line)> {
    use crate::netns::{PREFIX, ip};
    let ns = format!("{PREFIX}{}-doctor", std::process::id());
    let mut lines = Vec::new();
    let tried = "tried in a throwaway namespace";
    let netns = ip(["netns", "add", &ns]);
    lines.push((
        Kernel::Netns,
        match &netns {
            Ok(_) => line(State::Ok, "network namespaces", format!("work ({tried})"), None),
            Err(e) => line(
                State::Missing,
                "network namespaces",
                format!("{e:#}"),
                Some("in a container, run it with --privileged (the dev container does)".into()),
            ),
        },
    ));
    if netns.is_err() {
        return lines;
    }
    if features.contains(&Kernel::Veth) {
        let veth = ip([
            "-n", &ns, "link", "add", "tlv0", "type", "veth", "peer", "name", "tlv1",
        ]);
        lines.push((
            Kernel::Veth,
            match veth {
                Ok(_) => line(State::Ok, "veth", format!("works ({tried})"), None),
                Err(e) => line(
                    State::Missing,
                    "veth",
                    format!("{e:#}"),
                    Some(format!(
                        "install your kernel's extra modules (Ubuntu: sudo apt-get install linux-modules-extra-{})",
                        release()
                    )),
                ),
            },
        ));
    }
    if features.contains(&Kernel::Nftables) && env::on_path("nft") {
        let nft = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "nft",
                "add",
                "table",
                "inet",
                "tunlab_doctor",
            ])
            .stdin(std::process::Stdio::null())
            .output();
        lines.push((
            Kernel::Nftables,
            match nft {
                Ok(out) if out.status.success() => {
                    line(State::Ok, "nftables (kernel)", format!("works ({tried})"), None)
                }
                Ok(out) => line(
                    State::Missing,
                    "nftables (kernel)",
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    Some("sudo modprobe nf_tables (a kernel with CONFIG_NF_TABLES)".into()),
                ),
                Err(e) => line(State::Missing, "nftables (kernel)", e.to_string(), None),
            },
        ));
    }
    let _ = ip(["netns", "del", &ns]);
    lines
}

/// The WireGuard implementations `tunlab bench` compares with, when
/// installed.
fn wireguard_peers() -> Vec<Line> {
    let fix = || {
        Some(if env::workspace_root().join(INSTALL_SCRIPT).is_file() {
            format!("{INSTALL_SCRIPT} --wireguard")
        } else {
            "sudo apt-get install --no-install-recommends wireguard-go wireguard-tools; cargo install --locked boringtun-cli".into()
        })
    };
    let mut lines = Vec::new();
    for name in ["wg", "wireguard-go"] {
        let mut l = tool(name);
        if l.state == State::Missing {
            l = line(
                State::Note,
                l.item,
                "not installed; lab 07 and tunlab bench use it",
                fix(),
            );
        }
        lines.push(l);
    }
    let boringtun = env::find_program("boringtun-cli").or_else(crate::bench::boringtun_binary);
    lines.push(match boringtun {
        Some(path) => line(State::Ok, "boringtun-cli", path.display().to_string(), None),
        None => line(
            State::Note,
            "boringtun-cli",
            "not installed; lab 07 and tunlab bench use it",
            fix(),
        ),
    });
    lines
}

/// The items `needs` asks for, each with its state.
pub fn check(needs: &Needs) -> Vec<Line> {
    let mut lines = vec![linux()];
    lines.extend(needs.kernel.iter().map(|&k| kernel(k)));
    lines.extend(needs.tools.iter().map(|t| tool(t)));
    lines
}

/// The items of `needs` that are missing: what stops a lab before it
/// starts.
pub fn preflight(needs: &Needs) -> Vec<Line> {
    check(needs)
        .into_iter()
        .filter(|l| l.state == State::Missing)
        .collect()
}

/// Everything: what every lab in `needs` asks for (each item once, tried
/// for real when tunlab is root), then privileges and leftovers, and, with
/// `bench`, the bench's optional WireGuard peers.
pub fn report(needs: &[Needs], bench: bool) -> Vec<Line> {
    let mut kernel_features: Vec<Kernel> = Vec::new();
    let mut tools: Vec<&str> = Vec::new();
    for n in needs {
        for k in n.kernel {
            if !kernel_features.contains(k) {
                kernel_features.push(*k);
            }
        }
        for t in n.tools {
            if !tools.contains(t) {
                tools.push(t);
            }
        }
    }
    let tried = if env::is_root() {
        probe(&kernel_features)
    } else {
        Vec::new()
    };
    let mut lines = vec![linux()];
    for feature in kernel_features {
        lines.push(match tried.iter().find(|(k, _)| *k == feature) {
            Some((_, l)) => l.clone(),
            None => kernel(feature),
        });
    }
    lines.extend(tools.into_iter().map(tool));
    lines.push(privileges());
    lines.push(leftovers());
    if bench {
        lines.extend(wireguard_peers());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_item_names_its_fix() {
        let l = line(
            State::Missing,
            "tshark (tshark)",
            "not installed",
            Some("x".into()),
        );
        assert_eq!(l.to_string(), "MISSING  tshark (tshark): not installed; fix: x");
        let l = line(State::Ok, "Linux", "6.8.0", None);
        assert_eq!(l.to_string(), "ok       Linux: 6.8.0");
    }

    #[test]
    fn a_tool_that_does_not_exist_is_missing_with_its_install_command() {
        let l = tool("tunlab-no-such-tool");
        assert_eq!(l.state, State::Missing);
        assert!(
            l.fix
                .as_deref()
                .is_some_and(|f| f.contains("apt-get install --no-install-recommends tunlab-no-such-tool")),
            "{l}"
        );
        assert_eq!(package("nft"), "nftables");
        assert_eq!(package("ss"), "iproute2");
    }

    #[test]
    fn sh_is_found_even_outside_path() {
        assert!(env::find_program("sh").is_some());
    }
}
