//! `step04-crypto`: the tunnel of step 03, encrypted and authenticated.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use step02_plain_tunnel::run::{Endpoint, resolve};
use step04_crypto::cli::{Cli, Command};
use step04_crypto::cli::{client_peer, genkey, pubkey, server_peers, tunnel_end};

const PROGRAM: &str = "step04-crypto";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Genkey => genkey(),
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
