//! `tunlab-flood`: a handshake flood for lab 04 (see `tunlab::flood`):
//! valid-looking step 04 initiations from many forged IPv4 source
//! addresses. As root, inside a lab's network namespace only.

#![forbid(unsafe_code)]

use std::net::SocketAddrV4;
use std::process::ExitCode;

use clap::Parser;
use ipnet::Ipv4Net;
use step04_crypto::PublicKey;
use step04_crypto::keys;
use tunlab::flood::{MAX_COUNT, MAX_RATE, Plan, send};

/// Send valid-looking step 04 handshake initiations (mac1 right, made for
/// the server's public key from a key it does not list) to a server, each
/// from a forged source address. Runs only inside a network namespace of
/// its own (a lab host), as root (a raw socket).
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Example (as root, in lab 04's intruder host):\n  \
        tunlab-flood --to 198.51.100.1:51820 --server-key SERVER_PUBKEY \\\n      \
        --sources 198.18.0.0/15 --addresses 20000 --count 30000 --rate 5000"
)]
struct Args {
    /// The server's socket.
    #[arg(long, value_name = "ADDR:PORT")]
    to: SocketAddrV4,
    /// The server's public key.
    #[arg(long, value_name = "PUBKEY", value_parser = keys::parse_public)]
    server_key: PublicKey,
    /// The prefix the forged source addresses come from.
    #[arg(long, value_name = "CIDR", default_value = "198.18.0.0/15")]
    sources: Ipv4Net,
    /// How many different source addresses, used in turn.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    addresses: u32,
    /// How many initiations to send in all.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_COUNT)))]
    count: u32,
    /// Initiations a second.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RATE)))]
    rate: u32,
    /// How many different initiations to make and send in turn.
    #[arg(long, value_name = "N", default_value_t = 64)]
    messages: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let plan = Plan {
        to: args.to,
        server: args.server_key,
        sources: args.sources,
        addresses: args.addresses,
        count: args.count,
        rate: args.rate,
        messages: args.messages,
    };
    match send(&plan) {
        Ok(sent) => {
            println!(
                "sent {} initiations to {} from {} addresses of {} in {:.2} s ({} the kernel would not take)",
                sent.sent,
                plan.to,
                plan.addresses.min(sent.sent + sent.refused),
                plan.sources,
                sent.took.as_secs_f64(),
                sent.refused
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tunlab-flood: {e:#}");
            ExitCode::FAILURE
        }
    }
}
