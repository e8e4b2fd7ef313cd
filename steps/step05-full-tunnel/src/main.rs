//! `step05-full-tunnel`: step 04's encrypted tunnel as a VPN: a client
//! sends all its traffic through it, the server forwards and masquerades,
//! and every change to the host is undone.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use step02_plain_tunnel::run::Endpoint;
use step04_crypto::cli::{genkey, pubkey};
use step04_crypto::run::tunnel_end;
use step05_full_tunnel::cli::{Cli, Command};
use step05_full_tunnel::setup::{apply_all, client_changes, down, server_changes};

const PROGRAM: &str = "step05-full-tunnel";
/// The name of this step's state files.
const STEP: &str = "step05";

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
