//! `step05-full-tunnel`: step 04's encrypted tunnel as a VPN: a client
//! sends all its traffic through it, the server forwards and masquerades,
//! and every change to the host is undone.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use step02_plain_tunnel::run::{Endpoint, resolve};
use step04_crypto::PeerConfig;
use step04_crypto::cli::{Common, client_peer, genkey, pubkey, tunnel_end};
use step05_full_tunnel::cli::{DownArgs, FullTunnelArgs, StateArgs, parse_peer};
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
        #[arg(long = "peer", value_name = "PUBKEY=CIDR[,CIDR...]", required = true, value_parser = parse_peer)]
        peers: Vec<PeerConfig>,
        /// Turn on forwarding (old values restored on exit) and masquerade
        /// packets from the tunnel's prefixes that leave by another
        /// interface, in an nftables table of our own.
        #[arg(long)]
        nat: bool,
        #[command(flatten)]
        state: StateArgs,
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
        #[command(flatten)]
        routing: FullTunnelArgs,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        common: Common,
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
        Command::Genkey => genkey(),
        Command::Pubkey => pubkey(),
        Command::Server {
            listen,
            peers,
            nat,
            state,
            common,
        } => {
            let state = state.path(STEP, &common.tun);
            tunnel_end(PROGRAM, &common, peers, Endpoint::Server { listen }, |started| {
                apply_all(&state, |host| {
                    if nat {
                        server_changes(started, host)
                    } else {
                        Ok(Vec::new())
                    }
                })
            })
        }
        Command::Client {
            server,
            server_key,
            keepalive,
            routing,
            state,
            common,
        } => resolve(&server).and_then(|server| {
            let peer = client_peer(server, &server_key, keepalive)?;
            let state = state.path(STEP, &common.tun);
            tunnel_end(
                PROGRAM,
                &common,
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
