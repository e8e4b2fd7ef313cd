//! `step04-crypto`: the tunnel of step 03, encrypted and authenticated.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use step02_plain_tunnel::run::Endpoint;
use step04_crypto::cli::{Cli, Command, genkey, pubkey};
use step04_crypto::run::tunnel_end;

const PROGRAM: &str = "step04-crypto";

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
