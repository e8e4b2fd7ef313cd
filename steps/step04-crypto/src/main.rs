//! `step04-crypto`: the tunnel of step 03, encrypted and authenticated.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use step02_plain_tunnel::run::{Endpoint, resolve};
use step04_crypto::cli::{Common, GenkeyArgs, client_peer, genkey, pubkey, server_peers, tunnel_end};

const PROGRAM: &str = "step04-crypto";

/// An encrypted tunnel: an x25519 handshake (Noise IK), ChaCha20-Poly1305
/// on every packet, and a replay window.
///
/// Keys are base64, like WireGuard's. Private keys live in files only their
/// owner can read (mode 600) and never on the command line; public keys are
/// public.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  \
        step04-crypto genkey --out server.key && step04-crypto pubkey < server.key\n  \
        step04-crypto genkey --out client.key && step04-crypto pubkey < client.key\n  \
        sudo step04-crypto server --listen 0.0.0.0:51820 --key server.key \\\n      \
        --peer CLIENT_PUBKEY=10.0.0.2/32,fd00::2/128 --address 10.0.0.1/24 --address fd00::1/64\n  \
        sudo step04-crypto client --server 192.0.2.1:51820 --key client.key \\\n      \
        --server-key SERVER_PUBKEY --address 10.0.0.2/24 --address fd00::2/64\n\n\
        `kill -USR1 PID` logs each peer's endpoint, last handshake, traffic and drops."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a new private key (base64), in a new file only its owner can
    /// read (--out FILE), or on standard output.
    #[command(after_help = "Examples:\n  \
        step04-crypto genkey --out client.key\n  \
        (umask 077; step04-crypto genkey > client.key)\n\n\
        A file the shell opens for `> FILE` gets the mode the umask allows (usually 644) \
        before the key exists; genkey makes it 600 and warns. With --out, or umask 077, \
        the key is never in a file others could open.")]
    Genkey(GenkeyArgs),
    /// Read a private key on stdin, print its public key.
    #[command(after_help = "Example:\n  step04-crypto pubkey < client.key")]
    Pubkey,
    /// Accept clients whose public keys are listed.
    #[command(after_help = "Example (as root):\n  \
        step04-crypto server --listen 0.0.0.0:51820 --key server.key \\\n    \
        --peer CLIENT1_PUBKEY=10.0.0.2/32,fd00::2/128 --peer CLIENT2_PUBKEY=10.0.0.3/32 \\\n    \
        --address 10.0.0.1/24 --address fd00::1/64")]
    Server {
        /// Where to listen; [::]:PORT takes both families.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: SocketAddr,
        /// A client: its public key and the tunnel addresses it may use
        /// (and that are routed to it). Repeat for each client.
        #[arg(long = "peer", value_name = "PUBKEY=CIDR[,CIDR...]", required = true)]
        peers: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Connect to a server whose public key you know.
    #[command(after_help = "Example (as root):\n  \
        step04-crypto client --server 192.0.2.1:51820 --key client.key --server-key SERVER_PUBKEY \\\n    \
        --address 10.0.0.2/24 --address fd00::2/64 --keepalive 25")]
    Client {
        /// The server: 192.0.2.1:51820, [2001:db8::1]:51820, or a name.
        #[arg(long, value_name = "HOST:PORT")]
        server: String,
        /// The server's public key.
        #[arg(long, value_name = "PUBKEY")]
        server_key: String,
        /// Send a keepalive after this many seconds without sending (keeps
        /// NAT mappings open) [default: 25]. With 0, no keepalives, and the
        /// first handshake waits for the first packet.
        #[arg(long, value_name = "SECS")]
        keepalive: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Genkey(args) => genkey(PROGRAM, &args),
        Command::Pubkey => pubkey(),
        Command::Server {
            listen,
            peers,
            common,
        } => server_peers(&peers)
            .and_then(|peers| tunnel_end(PROGRAM, &common, peers, Endpoint::Server { listen }, |_| Ok(()))),
        Command::Client {
            server,
            server_key,
            keepalive,
            common,
        } => resolve(&server).and_then(|server| {
            let peer = client_peer(server, &server_key, keepalive)?;
            tunnel_end(PROGRAM, &common, vec![peer], Endpoint::Client { server }, |_| {
                Ok(())
            })
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{PROGRAM}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
