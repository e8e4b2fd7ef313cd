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
    common.log.init();
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let base = [
            "step02-plain-tunnel",
            "server",
            "--listen",
            "192.0.2.1:51820",
            "--address",
            "10.0.0.1/24",
        ];
        Cli::try_parse_from(base.iter().chain(args))
    }

    /// An underlay MTU too small to carry an IPv4 host's datagrams is a
    /// usage error (it gave a TUN device an MTU of 0), as is a misspelt
    /// flag, with a suggestion.
    #[test]
    fn arguments_are_checked() {
        assert!(parse(&["--underlay-mtu", "576"]).is_ok());
        let err = parse(&["--underlay-mtu", "10"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(err.to_string().contains("10 is not in 576..=65535"), "{err}");
        let err = parse(&["--adress", "10.0.0.1/24"]).unwrap_err();
        assert!(
            err.to_string().contains("a similar argument exists: '--address'"),
            "{err}"
        );
        let Command::Server { common, .. } = parse(&["-q", "--timestamps"]).unwrap().command else {
            panic!("not a server")
        };
        assert_eq!(common.log.level(), log::LevelFilter::Warn);
        assert!(common.log.timestamps);
    }
}
