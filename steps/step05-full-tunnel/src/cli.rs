//! The flags this step adds to step 04's, as argument structs that the
//! binary and step 06 flatten into their subcommands.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use step01_ping_tun::ifname;
use step04_crypto::PeerConfig;
use step04_crypto::cli::{PeerSpec, PeerSpecError};

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
