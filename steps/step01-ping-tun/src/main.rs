//! `step01-ping-tun`: create a TUN device and answer the pings routed into it.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use step01_ping_tun::cli::Cli;
use step01_ping_tun::host::{self, Shutdown};
use step01_ping_tun::run::{Config, run};

fn main() -> ExitCode {
    let args = Cli::parse();
    args.log.init();
    if !host::has_net_admin() {
        eprintln!(
            "step01-ping-tun: {}",
            host::needs_net_admin_message(&format!("creating TUN device {}", args.tun))
        );
        return ExitCode::from(host::EXIT_NO_PERMISSION as u8);
    }
    let config = Config {
        tun: args.tun,
        address: args.address,
        mtu: args.mtu,
        pcap: args.pcap,
    };
    let result = Shutdown::install().and_then(|shutdown| run(&config, &shutdown));
    match result {
        Ok(counters) => {
            println!("{}: {counters}", config.tun);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("step01-ping-tun: {e:#}");
            ExitCode::FAILURE
        }
    }
}
