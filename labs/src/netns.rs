//! Lab hosts made of Linux network namespaces.
//!
//! A [`Topology`] owns every namespace it creates. Their names carry a
//! per-run prefix, `tl-<pid>-<n>-`, so two runs (or two tests of one run)
//! never collide, and a later run can tell the leftovers of a crashed run
//! (their pid is gone) from a run still in progress. Dropping the topology,
//! also while a panic unwinds, kills what runs inside and deletes the
//! namespaces.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// Every lab namespace name starts with this.
pub const PREFIX: &str = "tl-";

static NEXT_RUN: AtomicU32 = AtomicU32::new(0);

/// Runs `ip` with `args` and fails with its stderr when it fails.
pub fn ip<I, S>(args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = Command::new("ip")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip` (package iproute2)")?;
    check_output("ip", &args, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check_output(program: &str, args: &[std::ffi::OsString], out: &Output) -> anyhow::Result<()> {
    if !out.status.success() {
        let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The namespaces of one lab run.
pub struct Topology {
    prefix: String,
    namespaces: Vec<String>,
}

impl Topology {
    /// Starts a new run: removes what crashed runs left behind, then picks a
    /// prefix no other live run uses.
    pub fn new() -> anyhow::Result<Self> {
        remove_leftovers(false)?;
        let prefix = format!(
            "{PREFIX}{}-{}-",
            std::process::id(),
            NEXT_RUN.fetch_add(1, Ordering::SeqCst)
        );
        Ok(Self {
            prefix,
            namespaces: Vec::new(),
        })
    }

    /// Creates the lab host `name` (a namespace with `lo` up).
    pub fn host(&mut self, name: &str) -> anyhow::Result<Host> {
        let ns = format!("{}{name}", self.prefix);
        ip(["netns", "add", &ns]).with_context(|| format!("creating lab host {name}"))?;
        self.namespaces.push(ns.clone());
        remove_step_state(&ns);
        ip(["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(Host {
            name: name.to_string(),
            ns,
        })
    }
}

impl Topology {
    /// Joins two hosts with a veth pair: interface `a_if` in `a`, `b_if` in
    /// `b`, both up. The pair is created straight inside the namespaces, so
    /// its names never meet the names of the machine's own interfaces.
    pub fn link(&self, a: &Host, a_if: &str, b: &Host, b_if: &str) -> anyhow::Result<()> {
        ip([
            "link",
            "add",
            a_if,
            "netns",
            a.netns(),
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.netns(),
        ])
        .with_context(|| format!("joining {} and {} with a veth pair", a.name(), b.name()))?;
        a.ip(["link", "set", a_if, "up"])?;
        b.ip(["link", "set", b_if, "up"])?;
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = delete_namespace(ns) {
                eprintln!("tunlab: cleaning up {ns}: {e:#}");
            }
        }
    }
}

/// One lab host: a network namespace.
#[derive(Debug, Clone)]
pub struct Host {
    name: String,
    ns: String,
}

impl Host {
    /// The name used in the lab's text, such as `host` or `client`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's real name, for `ip netns exec`.
    pub fn netns(&self) -> &str {
        &self.ns
    }

    /// A command that runs `program` inside this host. `ip netns exec`
    /// execs it, so the child's pid is the program's own.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(program)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `program args...` inside this host to completion.
    pub fn run<I, S>(&self, program: &str, args: I) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(program)
            .args(args)
            .output()
            .with_context(|| format!("running {program} in {}", self.name))
    }

    /// Adds an address (`192.0.2.1/24`, `2001:db8::1/64`) to an interface
    /// of this host. IPv6 addresses skip duplicate address detection
    /// (`nodad`), so they can be used at once.
    pub fn add_address(&self, interface: &str, cidr: &str) -> anyhow::Result<()> {
        let mut args = vec!["addr", "add", cidr, "dev", interface];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.ip(args).map(|_| ())
    }

    /// Gives this host a resolver configuration of its own: writes
    /// `/etc/netns/<namespace>/resolv.conf`, which `ip netns exec` (and so
    /// [`Host::command`]) bind-mounts over `/etc/resolv.conf` for every
    /// program it starts here. A program that rewrites `/etc/resolv.conf`
    /// in place then changes this file, not the machine's. Deleting the
    /// host removes the folder.
    pub fn set_resolv_conf(&self, text: &str) -> anyhow::Result<()> {
        let dir = etc_netns(&self.ns);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join("resolv.conf");
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))
    }

    /// `ip -n NS args...`.
    pub fn ip<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["-n".into(), self.ns.clone().into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        ip(all)
    }

    /// Runs `program args...` inside this host and returns what it
    /// printed; fails with its stderr when it fails.
    pub fn stdout<I, S>(&self, program: &str, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.run(program, &args)?;
        check_output(program, &args, &out).with_context(|| format!("in lab host {}", self.name))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether interface `dev` exists in this host.
    pub fn has_link(&self, dev: &str) -> bool {
        self.ip(["link", "show", "dev", dev]).is_ok()
    }

    /// Sets the MTU of interface `dev`.
    pub fn set_mtu(&self, dev: &str, mtu: u16) -> anyhow::Result<()> {
        self.ip(["link", "set", dev, "mtu", &mtu.to_string()]).map(drop)
    }

    /// Turns off transmit checksum offload on `dev` (`ethtool -K DEV tx
    /// off`). With it on, a veth hands a packet on before its UDP or TCP
    /// checksum is filled in, and a capture shows a partial one.
    pub fn tx_offload_off(&self, dev: &str) -> anyhow::Result<()> {
        self.stdout("ethtool", ["-K", dev, "tx", "off"]).map(drop)
    }
}

/// Kills whatever still runs in `ns`, then deletes it.
fn delete_namespace(ns: &str) -> anyhow::Result<()> {
    if let Ok(pids) = ip(["netns", "pids", ns]) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
    remove_step_state(ns);
    // A host's own /etc files (`Host::set_resolv_conf`); `ip netns del`
    // leaves them.
    let etc = etc_netns(ns);
    if etc.exists() {
        std::fs::remove_dir_all(&etc).with_context(|| format!("removing {}", etc.display()))?;
    }
    // The kernel may take a moment to release a namespace whose processes
    // were just killed; `ip netns del` itself only unmounts the name. A
    // name that went away meanwhile (another run cleaning up the same
    // leftover) is as good as deleted.
    match ip(["netns", "del", ns]) {
        Ok(_) => Ok(()),
        Err(_) if !std::path::Path::new("/run/netns").join(ns).exists() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Where step 05 and later journal their changes to a host, one directory
/// per network namespace and one file per TUN device:
/// `<netns name>/step05-<tun>.state`.
pub const STEP_STATE_DIR: &str = "/run/tunlab";

/// Removes the journals (and their side files) that steps keep for
/// namespace `ns`, which name it by its `ip netns` name or its inode
/// number: `<ns>/step05-tun0.state`, `netns<inode>/step05-tun0.3.saved`.
///
/// Called when a namespace is created and when it is deleted. A namespace
/// about to go takes everything its journals list with it (and a step
/// killed with SIGKILL cannot remove its own). A new namespace cannot have
/// journals of its own yet, and one found under its inode number belongs
/// to a namespace that is gone (the kernel reuses the numbers): left
/// there, it would make the next step started here undo changes that were
/// never made here.
fn remove_step_state(ns: &str) {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(format!("/run/netns/{ns}"))
        .map(|m| m.ino())
        .ok();
    let mut dirs = vec![ns.to_string()];
    if let Some(inode) = inode {
        dirs.push(format!("netns{inode}"));
    }
    for dir in dirs {
        let _ = std::fs::remove_dir_all(std::path::Path::new(STEP_STATE_DIR).join(dir));
    }
}

/// `/etc/netns/<ns>`: the files `ip netns exec` bind-mounts over `/etc`.
fn etc_netns(ns: &str) -> std::path::PathBuf {
    std::path::Path::new("/etc/netns").join(ns)
}

/// The lab namespaces that exist now.
pub fn lab_namespaces() -> anyhow::Result<Vec<String>> {
    let list = ip(["netns", "list"])?;
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect())
}

/// The pid in a name `tl-<pid>-<n>-<host>`.
fn owner_pid(ns: &str) -> Option<u32> {
    ns.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Whether the run that made lab namespace `ns` still goes on (its
/// process exists).
pub fn owner_alive(ns: &str) -> bool {
    owner_pid(ns).is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes lab namespaces whose run is over (its process is gone), or all
/// of them with `all`. Returns the names removed.
pub fn remove_leftovers(all: bool) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    for ns in lab_namespaces()? {
        let alive = owner_alive(&ns);
        let ours = owner_pid(&ns) == Some(std::process::id());
        if all && !ours || !alive {
            delete_namespace(&ns)?;
            removed.push(ns);
        }
    }
    // /etc/netns folders whose namespace is gone (a run killed between
    // deleting the one and the other).
    if let Ok(entries) = std::fs::read_dir("/etc/netns") {
        let live = lab_namespaces()?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) && !live.contains(&name) {
                match std::fs::remove_dir_all(entry.path()) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("removing {}", entry.path().display()));
                    }
                    _ => {}
                }
                removed.push(format!("/etc/netns/{name}"));
            }
        }
    }
    Ok(removed)
}

/// Deletes every namespace of this process's runs: what a SIGINT or
/// SIGTERM handler calls before exiting, when no destructor will run.
pub fn remove_own() {
    let own = format!("{PREFIX}{}-", std::process::id());
    if let Ok(list) = lab_namespaces() {
        for ns in list.iter().filter(|n| n.starts_with(&own)) {
            let _ = delete_namespace(ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_our_names_only() {
        assert_eq!(owner_pid("tl-1234-0-host"), Some(1234));
        assert_eq!(owner_pid("tl-x-0-host"), None);
        assert_eq!(owner_pid("other"), None);
    }
}
