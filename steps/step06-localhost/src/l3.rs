//! The layer-3 way to publish a service that listens only on the client's
//! loopback: no control protocol of our own, but step 05's VPN and two
//! nftables tables.
//!
//! ```text
//! visitor ──TCP/UDP──> server:8080 ──DNAT──> 10.0.0.2:8080 ══tunnel══> client ──DNAT──> 127.0.0.1:8080
//!                      (prerouting)   masquerade to 10.0.0.1         (prerouting, route_localnet)
//! ```
//!
//! **On the server** (`vpn-server --forward 8080=10.0.0.2:8080`), a table
//! `inet tunlab_step06_TUN` rewrites the destination of what arrives for
//! one of this host's own addresses, by any interface but the TUN device,
//! on a public port to the client's tunnel address and port (TCP and UDP),
//! and masquerades those connections as they go into the TUN device, so
//! the client sees them come from the server's tunnel address (10.0.0.1)
//! and answers through the tunnel, whatever its own routes say. Step 05's
//! forward filter, which lets into the tunnel only replies, also lets in
//! what a DNAT rule sent there on purpose (`ct status dnat`); nothing else
//! of the client is exposed.
//!
//! The trade-off of the masquerade: the client's service sees every
//! visitor as 10.0.0.1, not the visitor's address (no per-visitor logs,
//! limits or blocking on the client). Keeping the visitor's address
//! (`--keep-source`) means the client's reply to 198.51.100.7 must go back
//! through the tunnel: with `--full-tunnel` on the client it does; without
//! it, it would leave by the client's own default route, from a tunnel
//! address, and die there. A client that wants its own default route too
//! needs policy routing: mark the connections that came in through the
//! tunnel (`ct mark`), copy the mark to their replies (`meta mark set ct
//! mark`), and route marked packets with an `ip rule fwmark` into a table
//! whose default route is the TUN device.
//!
//! **On the client** (`vpn-client --deliver 8080`), what arrives through
//! the tunnel for 10.0.0.2:8080 must reach a service bound to
//! 127.0.0.1:8080, which never sees the tunnel address. Two ways:
//!
//! - (a) the kernel: DNAT to 127.0.0.1:8080 in `prerouting`, for packets
//!   that came in by the TUN device. The routing decision comes after
//!   prerouting, and it drops a packet for 127.0.0.0/8 that arrived on any
//!   interface but `lo` as a martian (RFC 1122 3.2.1.3: 127/8 "MUST NOT
//!   appear outside a host"), unless `net.ipv4.conf.DEV.route_localnet` is
//!   1 for that device. The same switch lets the reply, sent from
//!   127.0.0.1, be routed out of the TUN device (conntrack then rewrites
//!   its source back to 10.0.0.2).
//! - (b) userspace: a relay that listens on 10.0.0.2:8080, accepts, and
//!   connects to 127.0.0.1:8080, copying both ways (what `socat` or the L4
//!   design's client does).
//!
//! This module does (a). It keeps the kernel's fast path (no copy through
//! a process, no second TCP connection with its own buffers and
//! retransmissions, UDP for free), and the service sees the true source
//! address the tunnel delivers. A relay would show every visitor as
//! 127.0.0.1, cost two copies per byte, and need one listener per port and
//! protocol; it needs no privileges beyond binding, which is its only
//! advantage here. The price of (a) is route_localnet: only our TUN device
//! gets it, and a guard chain drops anything arriving by the TUN device
//! that is already addressed to 127.0.0.0/8, so the tunnel reaches the
//! delivered ports and no other loopback service. IPv4 only: IPv6 has no
//! route_localnet, and the kernel never routes a packet from outside to ::1
//! (RFC 4291 2.5.3), so an IPv6 service must listen on the tunnel address.
//!
//! Every change goes through step 05's journal ([`apply_all`]): undone in
//! reverse on exit, SIGTERM and panic, and by `down` (or the next start)
//! after a SIGKILL.
//!
//! # Wiring into `main.rs`
//!
//! ```text
//! use step06_localhost::l3;
//!
//! enum Command {
//!     ...
//!     #[command(flatten)]
//!     L3(Box<l3::L3Command>),      // adds vpn-server, vpn-client, down
//! }
//!
//! Command::L3(cmd) => l3::run(PROGRAM, *cmd),  // anyhow::Result<ExitCode>
//! ```
//!
//! (Boxed: the variant is about 250 bytes, and clippy's
//! `large_enum_variant` objects to an unboxed one beside small variants.)
//! The names must not clash: `main.rs` must have no `down`, `vpn-server`
//! or `vpn-client` of its own.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Context, bail};
use clap::Subcommand;
use ipnet::IpNet;
use step01_ping_tun::ifname;
use step02_plain_tunnel::run::{Endpoint, resolve};
use step04_crypto::PeerConfig;
use step04_crypto::cli::{Common, client_peer};
use step04_crypto::run::{Started, tunnel_end};
use step05_full_tunnel::cli::{DownArgs, FullTunnelArgs, StateArgs, parse_peer};
use step05_full_tunnel::journal::{Action, Change};
use step05_full_tunnel::plan::nft_table;
use step05_full_tunnel::setup::{apply_all, client_changes, down, server_changes, state_file};
use step05_full_tunnel::system::{System, sysctl_key};

/// The layer-3 subcommands: step 05's VPN ends with ports forwarded
/// (server) and delivered to loopback (client).
#[derive(Debug, Subcommand)]
pub enum L3Command {
    /// Step 05's server (forwarding, masquerade), plus public ports
    /// forwarded through the tunnel to clients.
    #[command(after_help = "Example (as root):\n  \
        step06-localhost vpn-server --listen 0.0.0.0:51820 --key server.key \\\n    \
        --peer CLIENT_PUBKEY=10.0.0.2/32 --address 10.0.0.1/24 --forward 8080=10.0.0.2:8080")]
    VpnServer {
        /// Where to listen; [::]:PORT takes both families.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: SocketAddr,
        /// A client: its public key and the tunnel addresses it may send
        /// from. Repeat for each client.
        #[arg(long = "peer", value_name = "PUBKEY=CIDR[,CIDR...]", required = true, value_parser = parse_peer)]
        peers: Vec<PeerConfig>,
        /// Send what arrives for this host's PUBLIC_PORT (TCP and UDP)
        /// through the tunnel to a client's TUNNEL_ADDR:PORT. Repeatable;
        /// an IPv6 address goes in brackets: 8443=[fd00::2]:443.
        #[arg(long = "forward", value_name = "PUBLIC_PORT=TUNNEL_ADDR:PORT")]
        forwards: Vec<Forward>,
        /// Do not masquerade forwarded connections: the client's service
        /// sees the visitor's address, and the client must route its
        /// replies back through the tunnel (--full-tunnel).
        #[arg(long, requires = "forwards")]
        keep_source: bool,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Step 05's client, plus ports delivered from the tunnel to services
    /// listening on 127.0.0.1.
    #[command(after_help = "Example (as root):\n  \
        step06-localhost vpn-client --server 192.0.2.1:51820 --key client.key \\\n    \
        --server-key SERVER_PUBKEY --address 10.0.0.2/24 --deliver 8080")]
    VpnClient {
        /// The server: 192.0.2.1:51820, [2001:db8::1]:51820, or a name.
        #[arg(long, value_name = "HOST:PORT")]
        server: String,
        /// The server's public key.
        #[arg(long, value_name = "PUBKEY")]
        server_key: String,
        /// Seconds between keepalives [default: 25; 0: none].
        #[arg(long, value_name = "SECS")]
        keepalive: Option<u64>,
        #[command(flatten)]
        routing: FullTunnelArgs,
        /// Deliver what arrives through the tunnel for this port of our
        /// IPv4 tunnel address (TCP and UDP) to 127.0.0.1:PORT.
        /// Repeatable.
        #[arg(long = "deliver", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
        delivers: Vec<u16>,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Undo what vpn-server or vpn-client runs that were killed left on
    /// this host (in this network namespace): every state file of this
    /// step here, or the one of --tun or --state.
    #[command(
        after_help = "Examples (as root):\n  step06-localhost down\n  step06-localhost down --tun tun0"
    )]
    Down(DownArgs),
}

/// The name of this step's state files, `/run/tunlab/NETNS/step06-TUN.state`:
/// a step 05 and a step 06 run never undo each other's changes.
pub const STEP: &str = "step06";

/// This step's state file for `tun`.
pub fn state_path(tun: &str) -> PathBuf {
    state_file(STEP, tun)
}

/// Runs one of the layer-3 subcommands; `program` names the binary in
/// messages.
pub fn run(program: &str, cmd: L3Command) -> anyhow::Result<ExitCode> {
    match cmd {
        L3Command::VpnServer {
            listen,
            peers,
            forwards,
            keep_source,
            state,
            common,
        } => {
            let allowed: Vec<IpNet> = peers.iter().flat_map(|p| p.allowed.iter().copied()).collect();
            check_forwards(&forwards, &allowed)?;
            let state = state.path(STEP, &common.tun);
            let endpoint = Endpoint::Server { listen };
            tunnel_end(program, &common, peers, endpoint, |started| {
                let journal = apply_all(&state, |host| {
                    let mut changes = server_changes(started, host)?;
                    changes.extend(forward_plan(started.tun, &forwards, keep_source)?);
                    Ok(changes)
                })?;
                for f in &forwards {
                    log::info!(
                        "forwarding port {} (tcp, udp) of this host to {} through {}",
                        f.public_port,
                        f.to,
                        started.tun
                    );
                }
                Ok(journal)
            })
        }
        L3Command::VpnClient {
            server,
            server_key,
            keepalive,
            routing,
            delivers,
            state,
            common,
        } => {
            let ports = check_delivers(&delivers, &common.addresses)?;
            let server = resolve(&server)?;
            let peer = client_peer(server, &server_key, keepalive)?;
            let state = state.path(STEP, &common.tun);
            let endpoint = Endpoint::Client { server };
            tunnel_end(program, &common, vec![peer], endpoint, |started| {
                let journal = apply_all(&state, |host| {
                    let mut changes = client_changes(started, server, &routing.wanted(), host)?;
                    changes.extend(deliver_changes(started, &ports, host)?);
                    Ok(changes)
                })?;
                if let Some(address) = tunnel_v4(started.addresses) {
                    for port in &ports {
                        log::info!(
                            "delivering {address}:{port} (tcp, udp) from {} to 127.0.0.1:{port}",
                            started.tun
                        );
                    }
                }
                Ok(journal)
            })
        }
        L3Command::Down(args) => down(program, &args.states(STEP)),
    }
}

// ANCHOR: forward_spec
/// `--forward PUBLIC_PORT=TUNNEL_ADDR:PORT`: what arrives for this host's
/// `public_port` goes to `to`, a client's tunnel address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub public_port: u16,
    pub to: SocketAddr,
}
// ANCHOR_END: forward_spec

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.public_port, self.to)
    }
}

/// Why a `--forward` is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadForward {
    /// No `=` in it.
    Shape(String),
    /// The part before `=` is not a port from 1 to 65535.
    PublicPort(String),
    /// The part after `=` is not an `ADDR:PORT` with a port from 1.
    Target(String),
    /// The target is an address no client can have.
    NotUnicast(IpAddr),
    /// The target is loopback: the server's own.
    Loopback(IpAddr),
}

impl fmt::Display for BadForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadForward::Shape(s) => write!(
                f,
                "`{s}` is not PUBLIC_PORT=TUNNEL_ADDR:PORT (for example 8080=10.0.0.2:8080)"
            ),
            BadForward::PublicPort(p) => {
                write!(f, "the public port `{p}` is not a port number from 1 to 65535")
            }
            BadForward::Target(t) => write!(
                f,
                "`{t}` is not TUNNEL_ADDR:PORT with a port from 1 to 65535 (an IPv6 address goes in brackets: [fd00::2]:8080)"
            ),
            BadForward::NotUnicast(ip) => {
                write!(f, "{ip} is no client's address: name a client's tunnel address")
            }
            BadForward::Loopback(ip) => write!(
                f,
                "{ip} is the server's own loopback: name the client's tunnel address (10.0.0.2:PORT), and let the client deliver to its loopback with --deliver"
            ),
        }
    }
}

impl std::error::Error for BadForward {}

impl FromStr for Forward {
    type Err = BadForward;

    fn from_str(s: &str) -> Result<Self, BadForward> {
        let (public, target) = s.split_once('=').ok_or_else(|| BadForward::Shape(s.into()))?;
        let public_port = match public.trim().parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(BadForward::PublicPort(public.into())),
        };
        let to = match target.trim().parse::<SocketAddr>() {
            Ok(to) if to.port() != 0 => to,
            _ => return Err(BadForward::Target(target.into())),
        };
        let ip = to.ip();
        if ip.is_loopback() {
            return Err(BadForward::Loopback(ip));
        }
        let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        if ip.is_unspecified() || ip.is_multicast() || broadcast {
            return Err(BadForward::NotUnicast(ip));
        }
        Ok(Forward { public_port, to })
    }
}

/// Checks the forwards against each other and the clients: one target per
/// public port and family, and each target a tunnel address some client
/// may use (else the tunnel would have no one to send it to).
pub fn check_forwards(forwards: &[Forward], allowed: &[IpNet]) -> anyhow::Result<()> {
    for (i, f) in forwards.iter().enumerate() {
        if let Some(earlier) = forwards[..i]
            .iter()
            .find(|e| e.public_port == f.public_port && e.to.is_ipv4() == f.to.is_ipv4())
        {
            bail!(
                "--forward {earlier} and --forward {f} both take port {} for {}",
                f.public_port,
                if f.to.is_ipv4() { "IPv4" } else { "IPv6" }
            );
        }
        if !allowed.iter().any(|c| c.contains(&f.to.ip())) {
            bail!(
                "--forward {f}: no --peer may use {}; add it to a client's --peer PUBKEY=CIDR list",
                f.to.ip()
            );
        }
    }
    Ok(())
}

/// The delivered ports, in order and once each; they need an IPv4 address
/// on the tunnel.
pub fn check_delivers(ports: &[u16], addresses: &[IpNet]) -> anyhow::Result<Vec<u16>> {
    if !ports.is_empty() && tunnel_v4(addresses).is_none() {
        bail!(
            "--deliver needs an IPv4 --address: delivery to 127.0.0.1 is IPv4 only (IPv6 has no route_localnet)"
        );
    }
    let mut seen = BTreeSet::new();
    for p in ports {
        if !seen.insert(*p) {
            bail!("--deliver {p} is given twice");
        }
    }
    Ok(ports.to_vec())
}

fn tunnel_v4(addresses: &[IpNet]) -> Option<Ipv4Addr> {
    addresses.iter().find_map(|a| match a.addr() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    })
}

/// The name of a server's forward table.
pub fn forward_table(tun: &str) -> String {
    format!("tunlab_step06_{tun}")
}

// ANCHOR: forward_plan
/// The server's forward table: each public port, TCP and UDP, arriving by
/// any interface but the tunnel for one of this host's own addresses
/// (`fib daddr type local`: not traffic this host merely routes), goes to
/// its client's tunnel address; and, unless `keep_source`, those
/// connections leave into the tunnel masqueraded as the server's tunnel
/// address, so the client's replies come back through the tunnel. No
/// forwards, no table.
pub fn forward_plan(tun: &str, forwards: &[Forward], keep_source: bool) -> anyhow::Result<Vec<Change>> {
    ifname::check(tun)?;
    if forwards.is_empty() {
        return Ok(Vec::new());
    }
    let mut dnat = String::new();
    for f in forwards {
        let family = if f.to.is_ipv4() { "ip" } else { "ip6" };
        for proto in ["tcp", "udp"] {
            dnat.push_str(&format!(
                "    iifname != \"{tun}\" fib daddr type local {proto} dport {} dnat {family} to {}\n",
                f.public_port, f.to
            ));
        }
    }
    let mut body = format!(
        "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{dnat}  }}\n"
    );
    if !keep_source {
        body.push_str(&format!(
            "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
             oifname \"{tun}\" ct status dnat masquerade\n  }}\n"
        ));
    }
    Ok(vec![nft_table("inet", &forward_table(tun), &body)])
}
// ANCHOR_END: forward_plan

/// The name of a client's delivery table.
pub fn deliver_table(tun: &str) -> String {
    format!("tunlab_step06_deliver_{tun}")
}

/// The sysctl that lets packets for 127.0.0.0/8 in (and out) by `tun`.
pub fn route_localnet(tun: &str) -> String {
    sysctl_key(&["net", "ipv4", "conf", tun, "route_localnet"])
}

// ANCHOR: deliver_plan
/// The client's delivery: for each port, TCP and UDP arriving by the TUN
/// device for our tunnel address `address` go to 127.0.0.1 on the same
/// port; `route_localnet` on the TUN device (its value now is
/// `route_localnet_now`) keeps the kernel from dropping them as martians.
/// The table comes first, with a guard that drops anything arriving by the
/// tunnel already addressed to 127.0.0.0/8 (at priority raw, before the
/// DNAT), so that from the moment the sysctl opens loopback to the device
/// the tunnel reaches the delivered ports and no other loopback service.
pub fn deliver_plan(
    tun: &str,
    address: Ipv4Addr,
    ports: &[u16],
    route_localnet_now: &str,
) -> anyhow::Result<Vec<Change>> {
    ifname::check(tun)?;
    if ports.is_empty() {
        return Ok(Vec::new());
    }
    let mut dnat = String::new();
    for port in ports {
        for proto in ["tcp", "udp"] {
            dnat.push_str(&format!(
                "    iifname \"{tun}\" ip daddr {address} {proto} dport {port} dnat to 127.0.0.1:{port}\n"
            ));
        }
    }
    let body = format!(
        "  chain guard {{\n    type filter hook prerouting priority raw; policy accept;\n    \
         iifname \"{tun}\" ip daddr 127.0.0.0/8 drop\n  }}\n  \
         chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{dnat}  }}\n"
    );
    let mut changes = vec![nft_table("ip", &deliver_table(tun), &body)];
    if route_localnet_now != "1" {
        let key = route_localnet(tun);
        changes.push(Change {
            what: format!("sysctl {key}=1 (was {route_localnet_now})"),
            apply: Action::Sysctl {
                key: key.clone(),
                value: "1".into(),
            },
            undo: Action::Sysctl {
                key,
                value: route_localnet_now.into(),
            },
        });
    }
    Ok(changes)
}
// ANCHOR_END: deliver_plan

/// The client's delivery changes, with route_localnet's value read now.
pub fn deliver_changes(
    started: &Started<'_>,
    ports: &[u16],
    system: &mut dyn System,
) -> anyhow::Result<Vec<Change>> {
    if ports.is_empty() {
        return Ok(Vec::new());
    }
    let address = tunnel_v4(started.addresses).context("--deliver needs an IPv4 --address")?;
    let now = system.read_sysctl(&route_localnet(started.tun))?;
    deliver_plan(started.tun, address, ports, &now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use step05_full_tunnel::plan::{server_plan, server_sysctls};

    fn fwd(s: &str) -> Forward {
        s.parse().unwrap()
    }

    fn undo(c: &Change) -> String {
        c.undo.to_string()
    }

    fn script(c: &Change) -> &str {
        match &c.apply {
            Action::Nft(s) => s,
            other => panic!("not an nft script: {other}"),
        }
    }

    #[test]
    fn forward_specs_of_both_families() {
        assert_eq!(
            fwd("8080=10.0.0.2:80"),
            Forward {
                public_port: 8080,
                to: "10.0.0.2:80".parse().unwrap()
            }
        );
        assert_eq!(fwd("8443=[fd00::2]:443").to, "[fd00::2]:443".parse().unwrap());
        assert_eq!(fwd(" 53 = 10.0.0.3:5353").public_port, 53);
        for s in ["8080=10.0.0.2:8080", "8443=[fd00::2]:443"] {
            assert_eq!(fwd(s).to_string(), s);
        }
    }

    #[test]
    fn bad_forward_specs_say_what_is_wrong() {
        let err = |s: &str| s.parse::<Forward>().unwrap_err();
        assert_eq!(err("8080"), BadForward::Shape("8080".into()));
        assert_eq!(err("10.0.0.2:8080"), BadForward::Shape("10.0.0.2:8080".into()));
        assert_eq!(err("0=10.0.0.2:80"), BadForward::PublicPort("0".into()));
        assert_eq!(err("70000=10.0.0.2:80"), BadForward::PublicPort("70000".into()));
        assert_eq!(err("http=10.0.0.2:80"), BadForward::PublicPort("http".into()));
        assert_eq!(err("8080=10.0.0.2"), BadForward::Target("10.0.0.2".into()));
        assert_eq!(err("8080=10.0.0.2:0"), BadForward::Target("10.0.0.2:0".into()));
        assert_eq!(err("8080=fd00::2:80"), BadForward::Target("fd00::2:80".into()));
        assert_eq!(
            err("8080=127.0.0.1:8080"),
            BadForward::Loopback("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            err("8080=[::1]:8080"),
            BadForward::Loopback("::1".parse().unwrap())
        );
        for ip in [
            "0.0.0.0:80",
            "255.255.255.255:80",
            "224.0.0.1:80",
            "[::]:80",
            "[ff02::1]:80",
        ] {
            assert!(
                matches!(err(&format!("80={ip}")), BadForward::NotUnicast(_)),
                "{ip}"
            );
        }
        assert_eq!(
            err("8080=10.0.0.2").to_string(),
            "`10.0.0.2` is not TUNNEL_ADDR:PORT with a port from 1 to 65535 (an IPv6 address goes in brackets: [fd00::2]:8080)"
        );
        assert!(err("8080=127.0.0.1:8080").to_string().contains("--deliver"));
    }

    #[test]
    fn the_forward_table_dnats_public_ports_and_masquerades_into_the_tunnel() {
        let plan = forward_plan(
            "tun0",
            &[fwd("8080=10.0.0.2:8080"), fwd("8443=[fd00::2]:443")],
            false,
        )
        .unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].what, "nft table inet tunlab_step06_tun0");
        assert_eq!(
            script(&plan[0]),
            "table inet tunlab_step06_tun0 {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname != \"tun0\" fib daddr type local tcp dport 8080 dnat ip to 10.0.0.2:8080
    iifname != \"tun0\" fib daddr type local udp dport 8080 dnat ip to 10.0.0.2:8080
    iifname != \"tun0\" fib daddr type local tcp dport 8443 dnat ip6 to [fd00::2]:443
    iifname != \"tun0\" fib daddr type local udp dport 8443 dnat ip6 to [fd00::2]:443
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"tun0\" ct status dnat masquerade
  }
}
"
        );
        assert_eq!(undo(&plan[0]), "nft delete table inet tunlab_step06_tun0");
    }

    #[test]
    fn keep_source_leaves_out_the_masquerade_and_no_forwards_no_table() {
        let plan = forward_plan("wg1", &[fwd("80=10.0.0.2:8080")], true).unwrap();
        let s = script(&plan[0]);
        assert!(s.contains("dnat ip to 10.0.0.2:8080"), "{s}");
        assert!(!s.contains("masquerade"), "{s}");
        assert!(!s.contains("postrouting"), "{s}");
        assert!(forward_plan("tun0", &[], false).unwrap().is_empty());
    }

    #[test]
    fn a_forward_must_reach_a_client_and_take_its_port_once() {
        let allowed: Vec<IpNet> = vec!["10.0.0.2/32".parse().unwrap(), "fd00::2/128".parse().unwrap()];
        let ok = [
            fwd("8080=10.0.0.2:8080"),
            fwd("8080=[fd00::2]:8080"),
            fwd("22=10.0.0.2:22"),
        ];
        check_forwards(&ok, &allowed).unwrap();
        let twice = [fwd("8080=10.0.0.2:8080"), fwd("8080=10.0.0.2:9090")];
        assert_eq!(
            check_forwards(&twice, &allowed).unwrap_err().to_string(),
            "--forward 8080=10.0.0.2:8080 and --forward 8080=10.0.0.2:9090 both take port 8080 for IPv4"
        );
        assert_eq!(
            check_forwards(&[fwd("8080=10.0.0.9:8080")], &allowed)
                .unwrap_err()
                .to_string(),
            "--forward 8080=10.0.0.9:8080: no --peer may use 10.0.0.9; add it to a client's --peer PUBKEY=CIDR list"
        );
    }

    #[test]
    fn step05s_forward_filter_lets_dnated_connections_in_before_its_drop() {
        let current: Vec<(String, String)> = server_sysctls("tun0")
            .into_iter()
            .map(|(k, _)| (k, "0".to_string()))
            .collect();
        let plan = server_plan("tun0", &["10.0.0.1/24".parse().unwrap()], &current).unwrap();
        let s = script(plan.last().unwrap());
        assert!(
            s.contains(
                "    iifname != \"tun0\" oifname \"tun0\" ct state established,related accept\n    \
                 iifname != \"tun0\" oifname \"tun0\" ct status dnat accept\n    \
                 iifname != \"tun0\" oifname \"tun0\" drop\n"
            ),
            "{s}"
        );
    }

    #[test]
    fn delivery_dnats_to_loopback_behind_a_guard_then_opens_route_localnet() {
        let plan = deliver_plan("tun0", "10.0.0.2".parse().unwrap(), &[8080, 5353], "0").unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].what, "nft table ip tunlab_step06_deliver_tun0");
        assert_eq!(
            script(&plan[0]),
            "table ip tunlab_step06_deliver_tun0 {
  chain guard {
    type filter hook prerouting priority raw; policy accept;
    iifname \"tun0\" ip daddr 127.0.0.0/8 drop
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"tun0\" ip daddr 10.0.0.2 tcp dport 8080 dnat to 127.0.0.1:8080
    iifname \"tun0\" ip daddr 10.0.0.2 udp dport 8080 dnat to 127.0.0.1:8080
    iifname \"tun0\" ip daddr 10.0.0.2 tcp dport 5353 dnat to 127.0.0.1:5353
    iifname \"tun0\" ip daddr 10.0.0.2 udp dport 5353 dnat to 127.0.0.1:5353
  }
}
"
        );
        assert_eq!(undo(&plan[0]), "nft delete table ip tunlab_step06_deliver_tun0");
        assert_eq!(plan[1].what, "sysctl net.ipv4.conf.tun0.route_localnet=1 (was 0)");
        assert_eq!(
            plan[1].apply.to_string(),
            "sysctl net.ipv4.conf.tun0.route_localnet=1"
        );
        assert_eq!(undo(&plan[1]), "sysctl net.ipv4.conf.tun0.route_localnet=0");
    }

    #[test]
    fn delivery_leaves_route_localnet_alone_when_it_is_on_and_needs_ipv4() {
        let plan = deliver_plan("tun0", "10.0.0.2".parse().unwrap(), &[8080], "1").unwrap();
        assert_eq!(plan.len(), 1, "only the table");
        assert!(
            deliver_plan("tun0", "10.0.0.2".parse().unwrap(), &[], "0")
                .unwrap()
                .is_empty()
        );
        let v6: Vec<IpNet> = vec!["fd00::2/64".parse().unwrap()];
        assert!(
            check_delivers(&[8080], &v6)
                .unwrap_err()
                .to_string()
                .contains("IPv4 only")
        );
        assert!(check_delivers(&[], &v6).unwrap().is_empty());
        let both: Vec<IpNet> = vec!["fd00::2/64".parse().unwrap(), "10.0.0.2/24".parse().unwrap()];
        assert_eq!(check_delivers(&[80, 8080], &both).unwrap(), [80, 8080]);
        assert_eq!(
            check_delivers(&[80, 80], &both).unwrap_err().to_string(),
            "--deliver 80 is given twice"
        );
    }

    #[test]
    fn the_state_file_is_step05s_named_for_step06() {
        let path = state_path("tun7");
        assert_eq!(path.file_name().unwrap(), "step06-tun7.state");
        assert_eq!(
            path.parent(),
            step05_full_tunnel::setup::default_state("tun7").parent()
        );
    }

    #[test]
    fn names_that_could_write_rules_of_their_own_are_refused() {
        assert!(forward_plan("tun0\" accept", &[fwd("80=10.0.0.2:80")], false).is_err());
        assert!(deliver_plan("a b", "10.0.0.2".parse().unwrap(), &[80], "0").is_err());
    }

    /// How `main.rs` holds these subcommands.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: TopLevel,
    }

    #[derive(Debug, clap::Subcommand)]
    enum TopLevel {
        Genkey,
        #[command(flatten)]
        L3(Box<L3Command>),
    }

    #[test]
    fn the_subcommands_flatten_into_a_main_cli() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let key = step04_crypto::keys::public_to_string(&step04_crypto::PublicKey::from(
            &step04_crypto::StaticSecret::from([1; 32]),
        ));
        let peer = format!("{key}=10.0.0.2/32");
        let cli = Cli::try_parse_from([
            "step06-localhost",
            "vpn-server",
            "--listen",
            "0.0.0.0:51820",
            "--key",
            "server.key",
            "--peer",
            &peer,
            "--address",
            "10.0.0.1/24",
            "--forward",
            "8080=10.0.0.2:8080",
            "--forward",
            "8443=[fd00::2]:443",
        ])
        .unwrap();
        let TopLevel::L3(cmd) = cli.command else { panic!() };
        let L3Command::VpnServer { forwards, common, .. } = *cmd else {
            panic!("not vpn-server")
        };
        assert_eq!(forwards, [fwd("8080=10.0.0.2:8080"), fwd("8443=[fd00::2]:443")]);
        assert_eq!(common.tun, "tun0");
        let cli = Cli::try_parse_from([
            "step06-localhost",
            "vpn-client",
            "--server",
            "192.0.2.1:51820",
            "--key",
            "client.key",
            "--server-key",
            "KEY",
            "--address",
            "10.0.0.2/24",
            "--deliver",
            "8080",
            "--state",
            "/tmp/x.state",
        ])
        .unwrap();
        let TopLevel::L3(cmd) = cli.command else { panic!() };
        let L3Command::VpnClient { delivers, state, .. } = *cmd else {
            panic!("not vpn-client")
        };
        assert_eq!(delivers, [8080]);
        assert_eq!(state.path(STEP, "tun0"), PathBuf::from("/tmp/x.state"));
        let bad = Cli::try_parse_from([
            "step06-localhost",
            "vpn-server",
            "--listen",
            "0.0.0.0:51820",
            "--key",
            "k",
            "--peer",
            &peer,
            "--address",
            "10.0.0.1/24",
            "--forward",
            "8080:10.0.0.2:8080",
        ])
        .unwrap_err()
        .to_string();
        assert!(bad.contains("is not PUBLIC_PORT=TUNNEL_ADDR:PORT"), "{bad}");
        assert!(Cli::try_parse_from(["step06-localhost", "down", "--tun", "tun1"]).is_ok());
        assert!(
            Cli::try_parse_from(["step06-localhost", "down"]).is_ok(),
            "every state file"
        );
        let bad = Cli::try_parse_from(["step06-localhost", "down", "--tun", "tun/../x"]).unwrap_err();
        assert_eq!(bad.exit_code(), 2);
        assert!(bad.to_string().contains("--tun"), "{bad}");
        assert!(
            Cli::try_parse_from(["step06-localhost", "vpn-client", "--deliver", "0"]).is_err(),
            "port 0"
        );
    }
}
