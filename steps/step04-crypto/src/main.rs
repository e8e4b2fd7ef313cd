//! `step04-crypto`: the tunnel of step 03, encrypted and authenticated.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use step02_plain_tunnel::run::Endpoint;
use step04_crypto::cli::{ClientArgs, GenkeyArgs, ServerArgs, genkey, pubkey};
use step04_crypto::run::tunnel_end;

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
    Server(ServerArgs),
    /// Connect to a server whose public key you know.
    #[command(after_help = "Example (as root):\n  \
        step04-crypto client --server 192.0.2.1:51820 --key client.key --server-key SERVER_PUBKEY \\\n    \
        --address 10.0.0.2/24 --address fd00::2/64 --keepalive 25")]
    Client(ClientArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Genkey(args) => genkey(PROGRAM, &args),
        Command::Pubkey => pubkey(),
        Command::Server(args) => tunnel_end(PROGRAM, &args.common, args.peers(), args.endpoint(), |_| Ok(())),
        Command::Client(args) => args.resolve().and_then(|(server, peer)| {
            tunnel_end(
                PROGRAM,
                &args.common,
                vec![peer],
                Endpoint::Client { server },
                |_| Ok(()),
            )
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
