//! The host side of a tunnel end: what a client or server changes on the
//! host, journaled, so the binaries of this step and the next compose
//! their own changes with these.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use ipnet::IpNet;
use step01_ping_tun::{host, ifname};
use step04_crypto::run::Started;

use crate::journal::{Change, Journal, RESOLV_CONF, already_gone, recover};
use crate::plan::{self, ClientOptions, parse_route_get};
use crate::system::{Host, System, sysctl_key};

// ANCHOR: default_state
/// Where state files live: a directory only root may write to, made mode
/// 0700 by the first journal.
pub const STATE_HOME: &str = "/run/tunlab";

/// The directory of this network namespace's state files,
/// `/run/tunlab/NETNS`: two namespaces on one machine (a lab's hosts) each
/// have their own. A namespace is named by its `ip netns` name when it has
/// one (the kernel reuses namespace inode numbers, so a killed run's file
/// must not be found by a new namespace that happens to get the same
/// number), else by its inode; the machine's own namespace is `host`.
pub fn state_dir() -> PathBuf {
    Path::new(STATE_HOME).join(netns_name())
}

/// The state file of `step` (`step05`, `step06`) for the TUN device `tun`
/// in this network namespace: `/run/tunlab/NETNS/STEP-TUN.state`.
pub fn state_file(step: &str, tun: &str) -> PathBuf {
    state_dir().join(format!("{step}-{tun}.state"))
}

/// This step's state file for `tun`.
pub fn default_state(tun: &str) -> PathBuf {
    state_file("step05", tun)
}

/// Every state file of `step` in this network namespace, whatever its TUN
/// device: for `down` without `--tun`.
pub fn state_files(step: &str) -> Vec<PathBuf> {
    state_files_in(&state_dir(), step)
}

/// Every state file of `step` in `dir`: `STEP-TUN.state` with a valid
/// interface name for TUN, and nothing else (not the side files, not
/// another step's).
fn state_files_in(dir: &Path, step: &str) -> Vec<PathBuf> {
    let prefix = format!("{step}-");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let tun = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix)?.strip_suffix(".state"));
            tun.is_some_and(|t| ifname::check(t).is_ok())
        })
        .map(|entry| entry.path())
        .collect();
    found.sort();
    found
}

fn netns_name() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(me) = std::fs::metadata("/proc/self/ns/net") else {
        return "host".into();
    };
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .find(|entry| {
            std::fs::metadata(entry.path()).is_ok_and(|m| m.ino() == me.ino() && m.dev() == me.dev())
        });
    // A name that could not be a directory name of its own is not used.
    let usable = |n: &str| {
        !n.is_empty()
            && n != "."
            && n != ".."
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    };
    if let Some(name) = named.and_then(|e| e.file_name().into_string().ok())
        && usable(&name)
    {
        return name;
    }
    let init = std::fs::metadata("/proc/1/ns/net");
    if init.is_ok_and(|m| m.ino() == me.ino()) {
        "host".into()
    } else {
        format!("netns{}", me.ino())
    }
}
// ANCHOR_END: default_state

/// What a client asked for.
pub struct Wanted {
    pub full_tunnel: bool,
    pub dns: Option<IpAddr>,
    pub kill_switch: bool,
}

/// Undoes what an earlier run left in `state`, saying what it did.
pub fn clean_up_after_earlier_run(state: &Path, system: &mut dyn System) -> anyhow::Result<()> {
    if let Some(r) = recover(state, system)? {
        log::warn!(
            "an earlier run did not finish: undid {} change(s) it left ({} already gone)",
            r.undone.len(),
            r.failures.len()
        );
    }
    Ok(())
}

// ANCHOR: client_setup
/// The changes a client makes for `wanted`, asked of the kernel now,
/// before anything is routed into the tunnel.
pub fn client_changes(
    started: &Started<'_>,
    server: SocketAddr,
    wanted: &Wanted,
    system: &mut dyn System,
) -> anyhow::Result<Vec<Change>> {
    if !wanted.full_tunnel {
        return Ok(Vec::new());
    }
    // Ask the kernel how it reaches the server now, before we route
    // everything into the tunnel.
    let json = system.run(
        &[
            "ip".into(),
            "-j".into(),
            "route".into(),
            "get".into(),
            server.ip().to_string(),
        ],
        None,
    )?;
    let route_to_server = parse_route_get(&json).with_context(|| format!("finding the route to {server}"))?;
    let resolv_conf = match wanted.dns {
        Some(_) => Some((
            PathBuf::from(RESOLV_CONF),
            system.read_file(Path::new(RESOLV_CONF))?,
        )),
        None => None,
    };
    let options = ClientOptions {
        tun: started.tun.to_string(),
        server,
        route_to_server,
        ipv6_inside: started.addresses.iter().any(|a| matches!(a, IpNet::V6(_))),
        dns: wanted.dns,
        resolv_conf,
        kill_switch: wanted.kill_switch,
    };
    plan::client_plan(&options)
}
// ANCHOR_END: client_setup

/// The changes a server makes for `--nat`, with the values now of the
/// sysctls it sets and of those that setting them rewrites.
pub fn server_changes(started: &Started<'_>, system: &mut dyn System) -> anyhow::Result<Vec<Change>> {
    let mut current = Vec::new();
    for (key, wanted) in plan::server_sysctls(started.tun) {
        let now = system.read_sysctl(&key)?;
        if now != wanted {
            for family in ["ipv4", "ipv6"] {
                let interfaces = system.list_sysctl(&sysctl_key(&["net", family, "conf"]))?;
                for side in plan::forwarding_side_effects(&key, &interfaces, started.tun) {
                    // An interface may go while we look.
                    if let Ok(value) = system.read_sysctl(&side) {
                        current.push((side, value));
                    }
                }
            }
        }
        current.push((key, now));
    }
    plan::server_plan(started.tun, started.addresses, &current)
}

// ANCHOR: apply_all
/// Undoes what an earlier run left in `state`; then works out the changes
/// with `plan` (which reads the host as it is now, after that clean-up),
/// makes them, each journaled first, and returns the journal, whose drop
/// undoes them. No journal when there is nothing to change.
pub fn apply_all(
    state: &Path,
    plan: impl FnOnce(&mut dyn System) -> anyhow::Result<Vec<Change>>,
) -> anyhow::Result<Option<Journal>> {
    let mut system = Host;
    clean_up_after_earlier_run(state, &mut system)?;
    let changes = plan(&mut system)?;
    if changes.is_empty() {
        return Ok(None);
    }
    let mut journal = Journal::create(state, Box::new(system))?;
    for change in changes {
        journal.apply(change)?;
    }
    log::info!("host changed as planned (state in {})", state.display());
    Ok(Some(journal))
}
// ANCHOR_END: apply_all

/// The state files `down` undoes: the one `--state` names, or the one of
/// `--tun`, or else every state file of `step` in this network namespace.
pub fn states_to_undo(step: &str, tun: Option<&str>, state: Option<PathBuf>) -> Vec<PathBuf> {
    states_to_undo_in(&state_dir(), step, tun, state)
}

/// [`states_to_undo`] with the state files in `dir`.
fn states_to_undo_in(dir: &Path, step: &str, tun: Option<&str>, state: Option<PathBuf>) -> Vec<PathBuf> {
    match (state, tun) {
        (Some(state), _) => vec![state],
        (None, Some(tun)) => vec![dir.join(format!("{step}-{tun}.state"))],
        (None, None) => state_files_in(dir, step),
    }
}

// ANCHOR: down
/// `down`: undoes what killed runs left in `states`; `program` names the
/// binary in messages.
pub fn down(program: &str, states: &[PathBuf]) -> anyhow::Result<ExitCode> {
    host::init_logging(0);
    if !host::has_net_admin() {
        eprintln!(
            "{program}: {}",
            host::needs_net_admin_message("undoing host changes")
        );
        return Ok(ExitCode::from(host::EXIT_NO_PERMISSION as u8));
    }
    if states.is_empty() {
        println!("nothing to undo: no state file in {}", state_dir().display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = false;
    for state in states {
        let r = match recover(state, &mut Host) {
            Ok(Some(r)) => r,
            Ok(None) => {
                println!("nothing to undo: no state file at {}", state.display());
                continue;
            }
            Err(e) => {
                eprintln!("{program}: {e:#}");
                failed = true;
                continue;
            }
        };
        println!("{}:", state.display());
        for what in &r.undone {
            println!("undid: {what}");
        }
        for failure in &r.failures {
            if already_gone(failure) {
                println!("already gone: {failure}");
            } else {
                println!("FAILED: {failure}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
// ANCHOR_END: down

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use step02_plain_tunnel::run::Endpoint;

    /// The kernel's sysctls as they behave: writing a forwarding switch
    /// rewrites every interface's forwarding, `default` with them, and in
    /// IPv4 `all.accept_redirects` (what lab 05 measures on Linux).
    #[derive(Clone, Default)]
    struct Kernel {
        sysctls: Arc<Mutex<BTreeMap<String, String>>>,
    }

    impl Kernel {
        fn with(values: &[(&str, &str)]) -> Self {
            let k = Kernel::default();
            for (key, value) in values {
                k.sysctls
                    .lock()
                    .unwrap()
                    .insert(key.to_string(), value.to_string());
            }
            k
        }

        fn values(&self) -> BTreeMap<String, String> {
            self.sysctls.lock().unwrap().clone()
        }
    }

    impl System for Kernel {
        fn run(&mut self, _: &[String], _: Option<&str>) -> anyhow::Result<String> {
            Ok(String::new())
        }
        fn locate(&mut self, program: &str) -> anyhow::Result<String> {
            Ok(format!("/usr/sbin/{program}"))
        }
        fn read_sysctl(&mut self, key: &str) -> anyhow::Result<String> {
            self.sysctls
                .lock()
                .unwrap()
                .get(key)
                .cloned()
                .with_context(|| format!("no {key}"))
        }
        fn write_sysctl(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
            let mut s = self.sysctls.lock().unwrap();
            let family = match key {
                "net.ipv4.ip_forward" => Some("ipv4"),
                "net.ipv6.conf.all.forwarding" => Some("ipv6"),
                _ => None,
            };
            if let Some(family) = family {
                let prefix = format!("net.{family}.conf.");
                for (k, v) in s.iter_mut() {
                    if k.starts_with(&prefix) && k.ends_with(".forwarding") {
                        *v = value.to_string();
                    }
                }
                if family == "ipv4" {
                    let redirects = if value == "0" { "1" } else { "0" };
                    s.insert("net.ipv4.conf.all.accept_redirects".into(), redirects.into());
                }
            }
            s.insert(key.to_string(), value.to_string());
            Ok(())
        }
        fn list_sysctl(&mut self, dir: &str) -> anyhow::Result<Vec<String>> {
            let prefix = format!("{dir}.");
            let mut names: Vec<String> = self
                .sysctls
                .lock()
                .unwrap()
                .keys()
                .filter_map(|k| Some(k.strip_prefix(&prefix)?.split('.').next()?.to_string()))
                .collect();
            names.dedup();
            Ok(names)
        }
        fn read_file(&mut self, _: &Path) -> anyhow::Result<String> {
            Ok(String::new())
        }
        fn write_file(&mut self, _: &Path, _: &str) -> anyhow::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn down_without_tun_finds_the_state_file_of_any_device_of_its_step() {
        let dir = std::env::temp_dir().join(format!("step05-setup-{}-down", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A killed client ran on wg7, another on tun0; step 06 and the
        // side files are not step 05's state, nor is a name that is not an
        // interface's.
        for name in [
            "step05-wg7.state",
            "step05-tun0.state",
            "step05-tun0.0.saved",
            "step06-tun0.state",
            "step05-a very long name.state",
            "step05-.state",
            "notes.txt",
        ] {
            std::fs::write(dir.join(name), "# pid 1\n").unwrap();
        }
        let names = |paths: Vec<PathBuf>| -> Vec<String> {
            paths
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            names(states_to_undo_in(&dir, "step05", None, None)),
            ["step05-tun0.state", "step05-wg7.state"]
        );
        assert_eq!(
            names(states_to_undo_in(&dir, "step06", None, None)),
            ["step06-tun0.state"]
        );
        assert_eq!(
            names(states_to_undo_in(&dir, "step05", Some("wg7"), None)),
            ["step05-wg7.state"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(states_to_undo_in(&dir, "step05", None, None).is_empty());
    }

    #[test]
    fn a_server_puts_back_every_forwarding_value_and_accept_redirects() {
        let kernel = Kernel::with(&[
            ("net.ipv4.ip_forward", "0"),
            ("net.ipv4.conf.all.forwarding", "0"),
            ("net.ipv4.conf.all.accept_redirects", "0"),
            ("net.ipv4.conf.all.send_redirects", "1"),
            ("net.ipv4.conf.default.forwarding", "0"),
            ("net.ipv4.conf.eth0.forwarding", "1"),
            ("net.ipv4.conf.eth1.forwarding", "0"),
            ("net.ipv4.conf.tun0.forwarding", "0"),
            ("net.ipv4.conf.tun0.send_redirects", "1"),
            ("net.ipv6.conf.all.forwarding", "0"),
            ("net.ipv6.conf.default.forwarding", "0"),
            ("net.ipv6.conf.eth0.forwarding", "0"),
            ("net.ipv6.conf.eth1.forwarding", "1"),
            ("net.ipv6.conf.tun0.forwarding", "0"),
        ]);
        let mut before = kernel.values();
        let endpoint = Endpoint::Server {
            listen: "0.0.0.0:51820".parse().unwrap(),
        };
        let started = Started {
            tun: "tun0",
            mtu: 1420,
            endpoint: &endpoint,
            addresses: &[],
        };
        let changes = server_changes(&started, &mut kernel.clone()).unwrap();
        let dir = std::env::temp_dir().join(format!("step05-setup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut journal =
                Journal::create(&dir.join("step05-tun0.state"), Box::new(kernel.clone())).unwrap();
            for change in changes {
                journal.apply(change).unwrap();
            }
            let on = kernel.values();
            assert_eq!(on["net.ipv4.conf.eth1.forwarding"], "1");
            assert_eq!(on["net.ipv6.conf.eth0.forwarding"], "1");
        }
        // The TUN device's own values go with it.
        let mut after = kernel.values();
        for values in [&mut before, &mut after] {
            values.retain(|k, _| !k.contains(".tun0."));
        }
        assert_eq!(after, before);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
