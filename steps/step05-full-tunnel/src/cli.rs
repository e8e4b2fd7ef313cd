//! The flags this step adds to step 04's, as argument structs that the
//! binary and step 06 flatten into their subcommands; and the binary's
//! own command line ([`Cli`], which `main.rs` parses and [`command`] gives
//! to `tunlab completions`).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use step01_ping_tun::ifname;
use step04_crypto::PeerConfig;
use step04_crypto::cli::{ClientArgs, GenkeyArgs, PeerSpec, PeerSpecError, ServerArgs};

use crate::setup::{Wanted, state_file, states_to_undo};

/// `--state FILE`.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// The state file that journals the host changes, in a directory only
    /// root may write to [default: /run/tunlab/NETNS/STEP-TUN.state, NETNS
    /// being this network namespace's name].
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
}

impl StateArgs {
    /// The state file of `step` for `tun`.
    pub fn path(&self, step: &str, tun: &str) -> PathBuf {
        self.state.clone().unwrap_or_else(|| state_file(step, tun))
    }
}

/// A client's routing: everything through the tunnel, the resolver, the
/// kill switch.
#[derive(Debug, Args)]
pub struct FullTunnelArgs {
    /// Route all IPv4 and IPv6 through the tunnel (0.0.0.0/1,
    /// 128.0.0.0/1, ::/1, 8000::/1), except the tunnel's own datagrams
    /// to the server.
    #[arg(long)]
    pub full_tunnel: bool,
    /// Use this DNS resolver while the tunnel runs (rewrites
    /// /etc/resolv.conf, restored on exit).
    #[arg(long, value_name = "ADDR", requires = "full_tunnel")]
    pub dns: Option<IpAddr>,
    /// Drop every packet that would leave outside the tunnel (except to
    /// the server, and DHCP and IPv6 neighbour discovery on the link),
    /// until the tunnel is taken down; a killed client stays blocked until
    /// `down`.
    #[arg(long, requires = "full_tunnel")]
    pub kill_switch: bool,
}

impl FullTunnelArgs {
    pub fn wanted(&self) -> Wanted {
        Wanted {
            full_tunnel: self.full_tunnel,
            dns: self.dns,
            kill_switch: self.kill_switch,
        }
    }
}

/// `down`'s flags.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// The TUN device name the killed run used [default: every state
    /// file of this network namespace].
    #[arg(long, value_name = "NAME", value_parser = ifname::parse)]
    pub tun: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
}

impl DownArgs {
    /// The state files of `step` to undo.
    pub fn states(&self, step: &str) -> Vec<PathBuf> {
        states_to_undo(step, self.tun.as_deref(), self.state.state.clone())
    }
}

/// `--peer PUBKEY=CIDR[,CIDR...]`, for clap, as step 04's server reads it
/// ([`PeerSpec`]): a malformed key or CIDR is a usage error that names the
/// flag.
pub fn parse_peer(spec: &str) -> Result<PeerConfig, PeerSpecError> {
    spec.parse::<PeerSpec>().map(|p| p.to_config())
}

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
        step05-full-tunnel down     # after a kill -9: undo what the killed runs left\n\n\
        genkey and pubkey are step 04's. `kill -USR1 PID` logs each peer's status."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a new private key (base64), as step 04 does: --out FILE, or
    /// standard output.
    Genkey(GenkeyArgs),
    /// Read a private key on stdin, print its public key.
    Pubkey,
    /// Accept the listed clients; with --nat, forward and masquerade their
    /// traffic to the rest of the world.
    #[command(after_help = "Example (as root):\n  \
        step05-full-tunnel server --listen 0.0.0.0:51820 --key server.key --nat \\\n    \
        --peer CLIENT_PUBKEY=10.0.0.2/32,fd00::2/128 --address 10.0.0.1/24 --address fd00::1/64")]
    Server {
        #[command(flatten)]
        server: ServerArgs,
        /// Turn on forwarding (old values restored on exit) and masquerade
        /// packets from the tunnel's prefixes that leave by another
        /// interface, in an nftables table of our own.
        #[arg(long)]
        nat: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Connect to a server; with --full-tunnel, send everything through it.
    #[command(after_help = "Example (as root):\n  \
        step05-full-tunnel client --server 192.0.2.1:51820 --key client.key --server-key SERVER_PUBKEY \\\n    \
        --address 10.0.0.2/24 --address fd00::2/64 --full-tunnel --dns 198.51.100.53 --kill-switch")]
    Client {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        routing: FullTunnelArgs,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Undo what runs that were killed left on this host (in this network
    /// namespace): every state file of this step here, or the one of
    /// --tun or --state.
    #[command(
        after_help = "Examples (as root):\n  step05-full-tunnel down\n  step05-full-tunnel down --tun tun0"
    )]
    Down(DownArgs),
}

/// The command line, for man pages and shell completions (`tunlab
/// completions`).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[arg(long = "peer", value_parser = parse_peer)]
        peers: Vec<PeerConfig>,
        #[command(flatten)]
        down: DownArgs,
    }

    #[test]
    fn bad_flags_are_usage_errors_that_name_the_flag() {
        let key = step04_crypto::keys::public_to_string(&step04_crypto::PublicKey::from(
            &step04_crypto::StaticSecret::from([1; 32]),
        ));
        let ok = Cli::try_parse_from(["x", "--peer", &format!("{key}=10.0.0.2/32,fd00::2/128")]).unwrap();
        assert_eq!(ok.peers[0].allowed.len(), 2);
        for (args, flag) in [
            (vec!["--peer", "nokey=10.0.0.2/32"], "--peer"),
            (vec!["--peer", &format!("{key}=10.0.0.300/32")], "--peer"),
            (vec!["--tun", "tun0\" accept"], "--tun"),
            (vec!["--tun", "a-very-long-name-0"], "--tun"),
        ] {
            let err = Cli::try_parse_from(["x"].into_iter().chain(args.iter().copied())).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }
}

#[cfg(test)]
mod command_tests {
    use super::*;

    const KEY: &str = "HPV5q6RaELodHvBtkfyiqp7QoRUFFWUxVUBdCxjLmmc=";

    #[test]
    fn step04s_flags_are_flattened_and_checked_by_clap() {
        let peer = format!("{KEY}=10.0.0.2/32,fd00::2/128");
        let server = ["step05-full-tunnel", "server", "--listen", "0.0.0.0:51820"];
        let rest = ["--key", "s.key", "--address", "10.0.0.1/24", "--nat"];
        let cli = Cli::try_parse_from(server.iter().chain(&["--peer", &peer]).chain(&rest)).unwrap();
        let Command::Server {
            server: args, nat, ..
        } = cli.command
        else {
            panic!("not the server")
        };
        assert!(nat);
        assert_eq!(args.peers()[0].allowed.len(), 2);
        let bad = Cli::try_parse_from(server.iter().chain(&["--peer", "x=10.0.0.2/32"]).chain(&rest));
        assert_eq!(bad.unwrap_err().kind(), clap::error::ErrorKind::ValueValidation);
        let client = [
            "step05-full-tunnel",
            "client",
            "--server",
            "192.0.2.1:51820",
            "--key",
            "c.key",
            "--address",
            "10.0.0.2/24",
            "--full-tunnel",
            "--dns",
            "198.51.100.53",
            "--server-key",
        ];
        assert!(Cli::try_parse_from(client.iter().chain(&[KEY])).is_ok());
        assert_eq!(
            Cli::try_parse_from(client.iter().chain(&["AAAA"]))
                .unwrap_err()
                .kind(),
            clap::error::ErrorKind::ValueValidation
        );
    }
}
