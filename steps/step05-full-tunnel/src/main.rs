//! `step05-full-tunnel`: step 04's encrypted tunnel as a VPN: a client
//! sends all its traffic through it, the server forwards and masquerades,
//! and every change to the host is undone.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use step01_ping_tun::host;
use step02_plain_tunnel::run::{Endpoint, resolve};
use step03_ipv6::cidr::IpCidr;
use step04_crypto::cli::{Common, Started, client_peer, genkey, pubkey, server_peers, tunnel_end};
use step05_full_tunnel::journal::{Journal, already_gone, recover};
use step05_full_tunnel::plan::{self, ClientOptions, parse_route_get};
use step05_full_tunnel::system::{Host, System};

const PROGRAM: &str = "step05-full-tunnel";
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// A VPN: step 04's encrypted tunnel, with all of a client's traffic
/// routed through the server, which forwards it and masquerades it.
///
/// Every change to the host (routes, nftables tables, sysctls, the
/// resolver) is written to a state file before the next is made, and
/// undone in reverse order on exit, Ctrl-C, SIGTERM or a panic. After a
/// SIGKILL, `step05-full-tunnel down` (or the next start) undoes what is
/// left.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples (as root):\n  \
        step05-full-tunnel server --listen 0.0.0.0:51820 --key server.key --nat \\\n      \
        --peer CLIENT1_PUBKEY=10.0.0.2/32,fd00::2/128 --peer CLIENT2_PUBKEY=10.0.0.3/32,fd00::3/128 \\\n      \
        --address 10.0.0.1/24 --address fd00::1/64\n  \
        step05-full-tunnel client --server 192.0.2.1:51820 --key client.key --server-key SERVER_PUBKEY \\\n      \
        --address 10.0.0.2/24 --address fd00::2/64 --full-tunnel --dns 198.51.100.53 --kill-switch\n  \
        step05-full-tunnel down     # after a kill -9: undo what the killed run left\n\n\
        genkey and pubkey are step 04's. `kill -USR1 PID` logs each peer's status."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a new private key (base64), as step 04 does.
    Genkey,
    /// Read a private key on stdin, print its public key.
    Pubkey,
    /// Accept the listed clients; with --nat, forward and masquerade their
    /// traffic to the rest of the world.
    #[command(after_help = "Example (as root):\n  \
        step05-full-tunnel server --listen 0.0.0.0:51820 --key server.key --nat \\\n    \
        --peer CLIENT_PUBKEY=10.0.0.2/32,fd00::2/128 --address 10.0.0.1/24 --address fd00::1/64")]
    Server {
        /// Where to listen; [::]:PORT takes both families.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: std::net::SocketAddr,
        /// A client: its public key and the tunnel addresses it may send
        /// from (and that are routed to it). Repeat for each client.
        #[arg(long = "peer", value_name = "PUBKEY=CIDR[,CIDR...]", required = true)]
        peers: Vec<String>,
        /// Turn on forwarding (old values restored on exit) and masquerade
        /// packets from the tunnel's prefixes that leave by another
        /// interface, in an nftables table of our own.
        #[arg(long)]
        nat: bool,
        #[command(flatten)]
        host: HostArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Connect to a server; with --full-tunnel, send everything through it.
    #[command(after_help = "Example (as root):\n  \
        step05-full-tunnel client --server 192.0.2.1:51820 --key client.key --server-key SERVER_PUBKEY \\\n    \
        --address 10.0.0.2/24 --address fd00::2/64 --full-tunnel --dns 198.51.100.53 --kill-switch")]
    Client {
        /// The server: 192.0.2.1:51820, [2001:db8::1]:51820, or a name.
        #[arg(long, value_name = "HOST:PORT")]
        server: String,
        /// The server's public key.
        #[arg(long, value_name = "PUBKEY")]
        server_key: String,
        /// Seconds between keepalives [default: 25; 0: none].
        #[arg(long, value_name = "SECS")]
        keepalive: Option<u64>,
        /// Route all IPv4 and IPv6 through the tunnel (0.0.0.0/1,
        /// 128.0.0.0/1, ::/1, 8000::/1), except the tunnel's own datagrams
        /// to the server.
        #[arg(long)]
        full_tunnel: bool,
        /// Use this DNS resolver while the tunnel runs (rewrites
        /// /etc/resolv.conf, restored on exit).
        #[arg(long, value_name = "ADDR", requires = "full_tunnel")]
        dns: Option<IpAddr>,
        /// Drop every packet that would leave outside the tunnel (except
        /// to the server), until the tunnel is taken down; a killed
        /// client stays blocked until `down`.
        #[arg(long, requires = "full_tunnel")]
        kill_switch: bool,
        #[command(flatten)]
        host: HostArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Undo what a run that was killed left on this host (in this network
    /// namespace).
    #[command(after_help = "Example (as root):\n  step05-full-tunnel down --tun tun0")]
    Down {
        /// The TUN device name the killed run used.
        #[arg(long, default_value = "tun0", value_name = "NAME")]
        tun: String,
        #[command(flatten)]
        host: HostArgs,
    },
}

#[derive(Debug, Args)]
struct HostArgs {
    /// The state file that journals the host changes [default:
    /// /run/tunlab/step05-NETNS-TUN.state, NETNS being this network
    /// namespace's inode].
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
}

impl HostArgs {
    fn path(&self, tun: &str) -> PathBuf {
        self.state.clone().unwrap_or_else(|| default_state(tun))
    }
}

// ANCHOR: default_state
/// One state file per network namespace and TUN device: two namespaces on
/// one machine (a lab's hosts) each have their own. A namespace is named by
/// its `ip netns` name when it has one (the kernel reuses namespace inode
/// numbers, so a killed run's file must not be found by a new namespace
/// that happens to get the same number), else by its inode; the machine's
/// own namespace is `host`.
fn default_state(tun: &str) -> PathBuf {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Genkey => genkey(),
        Command::Pubkey => pubkey(),
        Command::Server {
            listen,
            peers,
            nat,
            host,
            common,
        } => server_peers(&peers).and_then(|peers| {
            let state = host.path(&common.tun);
            tunnel_end(PROGRAM, &common, peers, Endpoint::Server { listen }, |started| {
                server_setup(started, nat, &state)
            })
        }),
        Command::Client {
            server,
            server_key,
            keepalive,
            full_tunnel,
            dns,
            kill_switch,
            host,
            common,
        } => resolve(&server).and_then(|server| {
            let peer = client_peer(server, &server_key, keepalive)?;
            let state = host.path(&common.tun);
            tunnel_end(
                PROGRAM,
                &common,
                vec![peer],
                Endpoint::Client { server },
                |started| {
                    let wanted = Wanted {
                        full_tunnel,
                        dns,
                        kill_switch,
                    };
                    client_setup(started, server, &wanted, &state)
                },
            )
        }),
        Command::Down { tun, host } => down(&host.path(&tun)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{PROGRAM}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What a client asked for.
struct Wanted {
    full_tunnel: bool,
    dns: Option<IpAddr>,
    kill_switch: bool,
}

/// Undoes what an earlier run left in `state`, saying what it did.
fn clean_up_after_earlier_run(state: &Path, system: &mut dyn System) -> anyhow::Result<()> {
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
fn client_setup(
    started: &Started<'_>,
    server: std::net::SocketAddr,
    wanted: &Wanted,
    state: &Path,
) -> anyhow::Result<Option<Journal>> {
    let mut system = Host;
    clean_up_after_earlier_run(state, &mut system)?;
    if !wanted.full_tunnel {
        return Ok(None);
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
        ipv6_inside: started.addresses.iter().any(|a| matches!(a, IpCidr::V6(_))),
        dns: wanted.dns,
        resolv_conf,
        kill_switch: wanted.kill_switch,
    };
    let mut journal = Journal::create(state, Box::new(system))?;
    for change in plan::client_plan(&options)? {
        journal.apply(change)?;
    }
    log::info!(
        "all traffic now goes through {} (state in {})",
        started.tun,
        state.display()
    );
    Ok(Some(journal))
}
// ANCHOR_END: client_setup

fn server_setup(started: &Started<'_>, nat: bool, state: &Path) -> anyhow::Result<Option<Journal>> {
    let mut system = Host;
    clean_up_after_earlier_run(state, &mut system)?;
    if !nat {
        return Ok(None);
    }
    let current = plan::server_sysctls(started.tun)
        .into_iter()
        .map(|(key, _)| Ok((key.clone(), system.read_sysctl(&key)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut journal = Journal::create(state, Box::new(system))?;
    for change in plan::server_plan(started.tun, started.addresses, &current) {
        journal.apply(change)?;
    }
    log::info!(
        "forwarding and masquerading for {} (state in {})",
        started.tun,
        state.display()
    );
    Ok(Some(journal))
}

fn down(state: &Path) -> anyhow::Result<ExitCode> {
    host::init_logging(0);
    if !host::has_net_admin() {
        eprintln!(
            "{PROGRAM}: {}",
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
