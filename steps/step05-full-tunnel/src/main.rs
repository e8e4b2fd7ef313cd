//! `step05-full-tunnel`: step 04's encrypted tunnel as a VPN: a client
//! sends all its traffic through it, the server forwards and masquerades,
//! and every change to the host is undone.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use step02_plain_tunnel::run::Endpoint;
use step04_crypto::cli::{ClientArgs, GenkeyArgs, ServerArgs, genkey, pubkey};
use step04_crypto::run::tunnel_end;
use step05_full_tunnel::cli::{DownArgs, FullTunnelArgs, StateArgs};
use step05_full_tunnel::setup::{apply_all, client_changes, down, server_changes};

const PROGRAM: &str = "step05-full-tunnel";
/// The name of this step's state files.
const STEP: &str = "step05";

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
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Genkey(args) => genkey(PROGRAM, &args),
        Command::Pubkey => pubkey(),
        Command::Server { server, nat, state } => {
            let state = state.path(STEP, &server.common.tun);
            tunnel_end(
                PROGRAM,
                &server.common,
                server.peers(),
                server.endpoint(),
                |started| {
                    apply_all(&state, |host| {
                        if nat {
                            server_changes(started, host)
                        } else {
                            Ok(Vec::new())
                        }
                    })
                },
            )
        }
        Command::Client {
            client,
            routing,
            state,
        } => client.resolve().and_then(|(server, peer)| {
            let state = state.path(STEP, &client.common.tun);
            tunnel_end(
                PROGRAM,
                &client.common,
                vec![peer],
                Endpoint::Client { server },
                |started| {
                    apply_all(&state, |host| {
                        client_changes(started, server, &routing.wanted(), host)
                    })
                },
            )
        }),
        Command::Down(args) => down(PROGRAM, &args.states(STEP)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{PROGRAM}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
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
