//! `step02-plain-tunnel`: a plaintext IP tunnel between two hosts.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use step01_ping_tun::host::{self, Shutdown};
use step02_plain_tunnel::cli::{Cli, Command, TransportArg};
use step02_plain_tunnel::mtu::Transport;
use step02_plain_tunnel::run::{Config, Endpoint, resolve, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (endpoint, keepalive, common) = match cli.command {
        Command::Server { listen, common } => (Ok(Endpoint::Server { listen }), None, common),
        Command::Client {
            server,
            keepalive,
            common,
        } => (
            resolve(&server).map(|server| Endpoint::Client { server }),
            keepalive,
            common,
        ),
    };
    host::init_logging(common.verbose);
    if !host::has_net_admin() {
        let what = format!("creating TUN device {}", common.tun);
        eprintln!("step02-plain-tunnel: {}", host::needs_net_admin_message(&what));
        return ExitCode::from(host::EXIT_NO_PERMISSION as u8);
    }
    let result = endpoint.and_then(|endpoint| {
        let config = Config {
            endpoint,
            tun: common.tun.clone(),
            transport: match common.transport {
                TransportArg::Udp => Transport::Udp,
                TransportArg::Tcp => Transport::Tcp,
            },
            keepalive: keepalive.filter(|&s| s > 0).map(Duration::from_secs),
            pcap: common.pcap,
            underlay_mtu: common.underlay_mtu,
        };
        let shutdown = Shutdown::install()?;
        run(&config, common.address, &shutdown)
    });
    match result {
        Ok(status) => {
            println!("{}: {status}", common.tun);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("step02-plain-tunnel: {e:#}");
            ExitCode::FAILURE
        }
    }
}
