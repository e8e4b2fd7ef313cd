//! The host side of a tunnel end: what a client or server changes on the
//! host, journaled, so the binaries of this step and the next compose
//! their own changes with these.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use ipnet::IpNet;
use step01_ping_tun::host;
use step04_crypto::run::Started;

use crate::journal::{Change, Journal, already_gone, recover};
use crate::plan::{self, ClientOptions, parse_route_get};
use crate::system::{Host, System};

const RESOLV_CONF: &str = "/etc/resolv.conf";

// ANCHOR: default_state
/// One state file per network namespace and TUN device: two namespaces on
/// one machine (a lab's hosts) each have their own. A namespace is named by
/// its `ip netns` name when it has one (the kernel reuses namespace inode
/// numbers, so a killed run's file must not be found by a new namespace
/// that happens to get the same number), else by its inode; the machine's
/// own namespace is `host`.
pub fn default_state(tun: &str) -> PathBuf {
    PathBuf::from(format!("/run/tunlab/step05-{}-{tun}.state", netns_name()))
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
    if let Some(entry) = named {
        return entry.file_name().to_string_lossy().into_owned();
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

/// The changes a server makes for `--nat`.
pub fn server_changes(started: &Started<'_>, system: &mut dyn System) -> anyhow::Result<Vec<Change>> {
    let current = plan::server_sysctls(started.tun)
        .into_iter()
        .map(|(key, _)| Ok((key.clone(), system.read_sysctl(&key)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(plan::server_plan(started.tun, started.addresses, &current))
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

/// `down`: undoes what a killed run left in `state`; `program` names the
/// binary in messages.
pub fn down(program: &str, state: &Path) -> anyhow::Result<ExitCode> {
    host::init_logging(0);
    if !host::has_net_admin() {
        eprintln!(
            "{program}: {}",
            host::needs_net_admin_message("undoing host changes")
        );
        return Ok(ExitCode::from(host::EXIT_NO_PERMISSION as u8));
    }
    let Some(r) = recover(state, &mut Host)? else {
        println!("nothing to undo: no state file at {}", state.display());
        return Ok(ExitCode::SUCCESS);
    };
    for what in &r.undone {
        println!("undid: {what}");
    }
    let mut failed = false;
    for failure in &r.failures {
        if already_gone(failure) {
            println!("already gone: {failure}");
        } else {
            println!("FAILED: {failure}");
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
