//! `up FILE.conf` and `down FILE.conf`: the part of wg-quick(8) a student
//! needs, on step 05's planner and journal.
//!
//! `up` reads and checks the file (every error names its line), then
//! starts the interface in the background and hands it the file's text on
//! its standard input (never on the command line: it holds the private
//! key). The interface configures itself from it, then changes the host,
//! each change journaled before it is made: its addresses, MTU and link,
//! the resolver when the file names DNS servers (as wg-quick does, full
//! tunnel or not), a route for each allowed prefix, and, when a peer takes
//! all of IPv4 or IPv6, step 05's full tunnel (a route to the endpoint the
//! way it went before, the two half routes per family). It undoes them
//! when it stops (SIGTERM, Ctrl-C); `down` stops it, and undoes from the
//! journal what a killed one (kill -9) left.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::IpNet;
use step01_ping_tun::host;
use step02_plain_tunnel::run::Endpoint;
use step04_crypto::run::Started;
use step05_full_tunnel::journal::{Action, Change, Journal, already_gone, recover};
use step05_full_tunnel::setup::{Wanted, apply_all, client_changes, default_state};
use step05_full_tunnel::system::System;
use zeroize::Zeroizing;

use crate::conf::{self, Config};
use crate::device::Device;
use crate::run::socket_path;
use crate::uapi::{self, Request};

/// The most a configuration file may hold.
const MAX_CONFIG: u64 = 1 << 20;

// ANCHOR: read_config
/// The interface name a file gives (its name without `.conf`, as
/// wg-quick takes it) and its text, read only if the file is ours and no
/// one else may read it: it holds a private key.
pub fn read_config(path: &Path) -> anyhow::Result<(String, Zeroizing<String>)> {
    let name = interface_name(path)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // Checked on the open file, so it cannot be swapped after the check.
    let meta = file.metadata()?;
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if meta.uid() != euid {
        bail!(
            "{} belongs to uid {}, not to us (uid {euid}): a configuration that sets our keys and routes must be ours",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "{} has mode {:03o}, so others may read its private key; run `chmod 600 {}` (and make a new key if others did)",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        );
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_CONFIG)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok((name, text))
}
// ANCHOR_END: read_config

/// `wg0` for `/etc/wireguard/wg0.conf`.
pub fn interface_name(path: &Path) -> anyhow::Result<String> {
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".conf"))
        .with_context(|| {
            format!(
                "{}: the file's name must be INTERFACE.conf, like wg0.conf",
                path.display()
            )
        })?;
    let ok = |c: char| c.is_ascii_alphanumeric() || "_=+.-".contains(c);
    if stem.is_empty() || stem.len() > 15 || !stem.chars().all(ok) {
        bail!(
            "{}: `{stem}` cannot be an interface name (1 to 15 of a-z A-Z 0-9 _ = + . -)",
            path.display()
        );
    }
    Ok(stem.to_string())
}

/// Resolves `HOST:PORT` to its first address.
pub fn resolve(endpoint: &str) -> Result<SocketAddr, String> {
    endpoint
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no address".to_string())
}

// ANCHOR: up
/// `up FILE.conf`.
pub fn up(program: &str, path: &Path, verbose: u8) -> anyhow::Result<ExitCode> {
    let (ifname, text) = read_config(path)?;
    let config = conf::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    // Resolve the endpoints now, so a name that does not resolve is
    // reported here, with its line.
    conf::to_uapi(&config, resolve).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if !host::has_net_admin() {
        let what = format!("bringing up {ifname}");
        eprintln!("{program}: {}", host::needs_net_admin_message(&what));
        return Ok(ExitCode::from(host::EXIT_NO_PERMISSION as u8));
    }
    if std::os::unix::net::UnixStream::connect(socket_path(&ifname)).is_ok() {
        bail!(
            "{ifname} is already up (`{program} down {}` first)",
            path.display()
        );
    }
    let exe = std::env::current_exe().context("finding this program")?;
    let mut args = vec!["--from-stdin".to_string(), ifname.clone()];
    if verbose > 0 {
        args.push(format!("-{}", "v".repeat(usize::from(verbose))));
    }
    let mut child = std::process::Command::new(exe)
        .args(&args)
        .env(crate::DAEMON_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the interface")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .context("handing the configuration over")?;
    }
    drop(text);
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    if line.trim() == "ready" {
        println!("{ifname} is up (pid {}); `wg show {ifname}` shows it", child.id());
        return Ok(ExitCode::SUCCESS);
    }
    let status = child.wait()?;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    eprint!("{err}");
    Ok(ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8))
}
// ANCHOR_END: up

/// Reads the configuration the starting process handed over.
pub fn config_from_stdin() -> anyhow::Result<Config> {
    let mut text = Zeroizing::new(String::new());
    std::io::stdin()
        .take(MAX_CONFIG)
        .read_to_string(&mut text)
        .context("reading the configuration on stdin")?;
    conf::parse(&text).map_err(|e| anyhow::anyhow!("the configuration: {e}"))
}

fn command(what: String, apply: &[&str], undo: &[&str]) -> Change {
    let argv = |parts: &[&str]| Action::Command(parts.iter().map(|s| s.to_string()).collect());
    Change {
        what,
        apply: argv(apply),
        undo: argv(undo),
    }
}

/// The resolver file `up` writes while the interface is up.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

// ANCHOR: resolver
/// The resolver while the interface is up, as wg-quick's `set_dns` makes
/// it (wireguard-tools, src/wg-quick/linux.bash): when `DNS` names any
/// server, every one of them, in order, and its search domains, whether
/// or not the tunnel is full; without a server, nothing (wg-quick ignores
/// search domains alone). wg-quick hands these lines to resolvconf(8) as
/// the interface's exclusive resolver; here they replace the file, whose
/// `options` lines stay (and its `search` lines, unless `DNS` has its
/// own), and the journal puts the old file back.
fn resolver_change(
    ifname: &str,
    interface: &conf::Interface,
    system: &mut dyn System,
) -> anyhow::Result<Option<Change>> {
    if interface.dns.is_empty() {
        return Ok(None);
    }
    let path = PathBuf::from(RESOLV_CONF);
    let old = system.read_file(&path)?;
    if interface.dns.len() > 3 {
        // resolv.conf(5): "Up to MAXNS (currently 3) name servers may be
        // listed"; the C library's resolver ignores the others.
        log::warn!(
            "DNS names {} servers: the C library's resolver uses only the first 3",
            interface.dns.len()
        );
    }
    let servers: Vec<String> = interface.dns.iter().map(ToString::to_string).collect();
    Ok(Some(Change {
        what: format!("resolver {} in {RESOLV_CONF}", servers.join(", ")),
        apply: Action::WriteFile {
            path: path.clone(),
            content: resolver_text(ifname, interface, &old),
        },
        undo: Action::WriteFile { path, content: old },
    }))
}

/// The resolver file for `interface`'s `DNS`, keeping what `old` says
/// that `DNS` does not.
fn resolver_text(ifname: &str, interface: &conf::Interface, old: &str) -> String {
    let mut text = format!("# set by step07-wireguard for {ifname} while it is up\n");
    for server in &interface.dns {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !interface.dns_search.is_empty() {
        text.push_str(&format!("search {}\n", interface.dns_search.join(" ")));
    }
    let keep =
        |l: &&str| l.starts_with("options") || (interface.dns_search.is_empty() && l.starts_with("search"));
    for line in old.lines().filter(keep) {
        text.push_str(line);
        text.push('\n');
    }
    text
}
// ANCHOR_END: resolver

// ANCHOR: plan
/// The host changes for `config` on interface `ifname`, in order: MTU and
/// link up, addresses, the resolver (when `DNS` names a server), a route
/// per allowed prefix not already on the link, then (for a full tunnel)
/// step 05's client plan.
pub fn host_changes(ifname: &str, config: &Config, system: &mut dyn System) -> anyhow::Result<Vec<Change>> {
    let mtu = config
        .interface
        .mtu
        .unwrap_or(crate::run::DEFAULT_MTU)
        .to_string();
    let mut changes = vec![command(
        format!("{ifname} up, MTU {mtu}"),
        &["ip", "link", "set", "dev", ifname, "mtu", &mtu, "up"],
        &["ip", "link", "set", "dev", ifname, "down"],
    )];
    let addresses = &config.interface.addresses;
    for a in addresses {
        let a = a.to_string();
        changes.push(command(
            format!("address {a} on {ifname}"),
            &["ip", "address", "add", &a, "dev", ifname],
            &["ip", "address", "del", &a, "dev", ifname],
        ));
    }
    if let Some(change) = resolver_change(ifname, &config.interface, system)? {
        changes.push(change);
    }
    let on_link: Vec<IpNet> = addresses.iter().map(IpNet::trunc).collect();
    for net in config.peers.iter().flat_map(|p| &p.allowed_ips) {
        let net = net.trunc();
        if net.prefix_len() == 0 || on_link.contains(&net) {
            continue;
        }
        let family = if matches!(net, IpNet::V4(_)) { "-4" } else { "-6" };
        let n = net.to_string();
        changes.push(command(
            format!("route {n} dev {ifname}"),
            &["ip", family, "route", "add", &n, "dev", ifname],
            &["ip", family, "route", "del", &n, "dev", ifname],
        ));
    }
    if config.full_tunnel() {
        let peer = config
            .peers
            .iter()
            .find(|p| p.allowed_ips.iter().any(|n| n.prefix_len() == 0))
            .context("no peer takes everything")?;
        let endpoint = peer.endpoint.as_deref().context(
            "the peer with AllowedIPs 0.0.0.0/0 or ::/0 needs an Endpoint: all traffic goes to it",
        )?;
        let server = resolve(endpoint).map_err(|e| anyhow::anyhow!("Endpoint {endpoint}: {e}"))?;
        let mtu: u16 = config.interface.mtu.unwrap_or(crate::run::DEFAULT_MTU);
        let endpoint = Endpoint::Client { server };
        let started = Started {
            tun: ifname,
            mtu,
            endpoint: &endpoint,
            addresses,
        };
        let wanted = Wanted {
            full_tunnel: true,
            // The resolver is ours to set, full tunnel or not (below).
            dns: None,
            kill_switch: false,
        };
        changes.extend(client_changes(&started, server, &wanted, system)?);
    }
    Ok(changes)
}
// ANCHOR_END: plan

/// What the interface started by `up` does before any traffic: takes the
/// configuration (as `wg setconf` would give it), then changes the host.
/// The journal it returns undoes the changes when dropped.
pub fn configure(
    ifname: &str,
    config: &Config,
    device: &mut Device,
    net: &mut dyn uapi::Sockets,
) -> anyhow::Result<Option<Journal>> {
    let text = conf::to_uapi(config, resolve).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut reader = text.as_bytes();
    match uapi::read_request(&mut reader) {
        Ok(Some(Request::Set(ops))) => uapi::apply(device, ops, net, Instant::now())
            .map_err(|e| anyhow::anyhow!("configuring {ifname}: errno {}", e.code()))?,
        other => bail!("configuring {ifname}: {other:?}"),
    }
    drop(text);
    if let Some(mtu) = config.interface.mtu {
        device.set_mtu(usize::from(mtu));
    }
    apply_all(&state_path(ifname), |system| host_changes(ifname, config, system))
}

/// The journal of an interface's host changes.
pub fn state_path(ifname: &str) -> PathBuf {
    default_state(ifname)
}

// ANCHOR: down
/// `down FILE.conf`: stops the interface (which undoes its changes), then
/// undoes whatever a killed one left in the journal.
pub fn down(program: &str, path: &Path, verbose: u8) -> anyhow::Result<ExitCode> {
    // What was undone is printed below; the journal's own log lines only
    // with -v.
    if verbose > 0 {
        host::init_logging(verbose - 1);
    }
    let ifname = interface_name(path)?;
    if !host::has_net_admin() {
        let what = format!("taking down {ifname}");
        eprintln!("{program}: {}", host::needs_net_admin_message(&what));
        return Ok(ExitCode::from(host::EXIT_NO_PERMISSION as u8));
    }
    let socket = socket_path(&ifname);
    let mut was_up = false;
    match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(stream) => {
            let pid = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .context("asking who serves the socket")?
                .pid();
            drop(stream);
            let pid = nix::unistd::Pid::from_raw(pid);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
                .with_context(|| format!("stopping {ifname} (pid {pid})"))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                if step05_full_tunnel::journal::zombie(pid.as_raw() as u32) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            println!("stopped {ifname} (pid {pid})");
            was_up = true;
        }
        Err(_) => {
            if std::fs::symlink_metadata(&socket).is_ok() {
                // Left by a killed interface.
                let _ = std::fs::remove_file(&socket);
            }
        }
    }
    let mut failed = false;
    match recover(&state_path(&ifname), &mut step05_full_tunnel::system::Host)? {
        Some(r) => {
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
        None if !was_up => println!("{ifname} is not up, and nothing is left to undo"),
        None => {}
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

    struct Recorder(Vec<String>);

    impl System for Recorder {
        fn run(&mut self, argv: &[String], _: Option<&str>) -> anyhow::Result<String> {
            self.0.push(argv.join(" "));
            Ok(r#"[{"dst":"192.0.2.1","gateway":"198.51.100.1","dev":"eth0"}]"#.to_string())
        }
        fn locate(&mut self, program: &str) -> anyhow::Result<String> {
            Ok(format!("/usr/sbin/{program}"))
        }
        fn read_sysctl(&mut self, _: &str) -> anyhow::Result<String> {
            Ok("0".into())
        }
        fn list_sysctl(&mut self, _: &str) -> anyhow::Result<Vec<String>> {
            Ok(Vec::new())
        }
        fn write_sysctl(&mut self, _: &str, _: &str) -> anyhow::Result<()> {
            Ok(())
        }
        fn read_file(&mut self, _: &Path) -> anyhow::Result<String> {
            Ok("nameserver 198.51.100.53\n".into())
        }
        fn write_file(&mut self, _: &Path, _: &str) -> anyhow::Result<()> {
            Ok(())
        }
    }

    const KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const PEER: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    fn changes(dns: &str, allowed: &str) -> Vec<Change> {
        let text = format!(
            "[Interface]\nPrivateKey = {KEY}\nAddress = 10.0.0.2/24, fd00::2/64\n{dns}\n[Peer]\nPublicKey = {PEER}\nEndpoint = 192.0.2.1:51820\nAllowedIPs = {allowed}\n"
        );
        let config = conf::parse(&text).unwrap();
        host_changes("wg0", &config, &mut Recorder(Vec::new())).unwrap()
    }

    fn plan(allowed: &str) -> Vec<String> {
        changes("DNS = 10.0.0.1", allowed)
            .into_iter()
            .map(|c| c.apply.to_string())
            .collect()
    }

    /// The resolver file a plan writes, and the one its undo puts back.
    fn resolver(dns: &str, allowed: &str) -> Option<(String, String)> {
        changes(dns, allowed)
            .into_iter()
            .find_map(|c| match (c.apply, c.undo) {
                (Action::WriteFile { path, content }, Action::WriteFile { content: old, .. }) => {
                    assert_eq!(path, Path::new(RESOLV_CONF));
                    Some((content, old))
                }
                _ => None,
            })
    }

    #[test]
    fn a_split_tunnel_gets_routes_for_its_allowed_ips() {
        assert_eq!(
            plan("10.0.0.0/24, 10.9.0.0/16, fd00::/64"),
            vec![
                "ip link set dev wg0 mtu 1420 up",
                "ip address add 10.0.0.2/24 dev wg0",
                "ip address add fd00::2/64 dev wg0",
                // DNS, full tunnel or not, as wg-quick does.
                "write /etc/resolv.conf (69 bytes)",
                // 10.0.0.0/24 and fd00::/64 are on the link already.
                "ip -4 route add 10.9.0.0/16 dev wg0",
            ]
        );
    }

    #[test]
    fn a_full_tunnel_is_step_05s_plan() {
        let p = plan("0.0.0.0/0, ::/0");
        assert_eq!(
            &p[..4],
            &[
                "ip link set dev wg0 mtu 1420 up",
                "ip address add 10.0.0.2/24 dev wg0",
                "ip address add fd00::2/64 dev wg0",
                "write /etc/resolv.conf (69 bytes)",
            ]
        );
        assert!(
            p.contains(&"ip -4 route add 192.0.2.1/32 via 198.51.100.1 dev eth0".to_string()),
            "{p:?}"
        );
        assert!(p.contains(&"ip -4 route add 0.0.0.0/1 dev wg0".to_string()));
        assert!(p.contains(&"ip -6 route add 8000::/1 dev wg0".to_string()));
        assert_eq!(
            p.iter()
                .filter(|c| c.starts_with("write /etc/resolv.conf"))
                .count(),
            1,
            "{p:?}"
        );
    }

    #[test]
    fn every_dns_server_goes_into_the_resolver_and_the_old_file_comes_back() {
        let (new, old) = resolver("DNS = 10.0.0.1, fd00::1\nDNS = 10.0.0.53", "10.0.0.0/24").unwrap();
        assert_eq!(
            new,
            "# set by step07-wireguard for wg0 while it is up\nnameserver 10.0.0.1\nnameserver fd00::1\nnameserver 10.0.0.53\n"
        );
        assert_eq!(old, "nameserver 198.51.100.53\n");
        // Search domains follow the servers.
        let (new, _) = resolver("DNS = 10.0.0.1, lab.example, corp.example", "0.0.0.0/0").unwrap();
        assert!(
            new.ends_with("nameserver 10.0.0.1\nsearch lab.example corp.example\n"),
            "{new}"
        );
        // No server, no resolver: search domains alone change nothing, as
        // in wg-quick.
        assert_eq!(resolver("DNS = lab.example", "0.0.0.0/0"), None);
        assert_eq!(resolver("", "0.0.0.0/0"), None);
    }

    #[test]
    fn the_old_files_options_stay_and_its_search_unless_dns_has_one() {
        let mut i = conf::Interface {
            dns: vec!["10.0.0.1".parse().unwrap()],
            ..conf::Interface::default()
        };
        let old = "# from DHCP\nnameserver 192.0.2.53\nsearch home.example\noptions edns0 trust-ad\n";
        assert_eq!(
            resolver_text("wg0", &i, old),
            "# set by step07-wireguard for wg0 while it is up\nnameserver 10.0.0.1\nsearch home.example\noptions edns0 trust-ad\n"
        );
        i.dns_search = vec!["lab.example".into()];
        assert_eq!(
            resolver_text("wg0", &i, old),
            "# set by step07-wireguard for wg0 while it is up\nnameserver 10.0.0.1\nsearch lab.example\noptions edns0 trust-ad\n"
        );
    }

    #[test]
    fn names_and_files_are_checked() {
        assert_eq!(
            interface_name(Path::new("/etc/wireguard/wg0.conf")).unwrap(),
            "wg0"
        );
        assert!(interface_name(Path::new("wg0.txt")).is_err());
        assert!(interface_name(Path::new("much-too-long-name.conf")).is_err());
        let dir = std::env::temp_dir().join(format!("step07-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wg7.conf");
        std::fs::write(&file, "[Interface]\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_config(&file).unwrap_err().to_string().contains("chmod 600"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_config(&file).unwrap().0, "wg7");
        let link = dir.join("link.conf");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(read_config(&link).is_err(), "a symlink is not followed");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
