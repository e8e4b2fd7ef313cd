//! `step02-plain-tunnel`: a plaintext IP tunnel between two hosts.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use step01_ping_tun::Ipv4Net;
use step01_ping_tun::host::{self, Shutdown};
use step02_plain_tunnel::mtu::Transport;
use step02_plain_tunnel::run::{Config, Endpoint, resolve, run};

/// A plaintext IP tunnel: what the kernel routes into the TUN device on one
/// host comes out of the TUN device on the other, carried over UDP (or TCP)
/// between them. Nothing is encrypted: anyone on the path can read it.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Example (as root, on two hosts that reach each other over 192.0.2.0/24):\n  server# step02-plain-tunnel server --listen 192.0.2.1:51820 --address 10.0.0.1/24\n  client# step02-plain-tunnel client --server 192.0.2.1:51820 --address 10.0.0.2/24 --keepalive 25\n  client# ping 10.0.0.1\n\nSend SIGUSR1 to print the counters; Ctrl-C or SIGTERM to stop."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Wait for a client; learn its address from its messages.
    Server {
        /// Where to listen, e.g. 192.0.2.1:51820.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: SocketAddr,
        #[command(flatten)]
        common: Common,
    },
    /// Connect to a server.
    Client {
        /// The server, e.g. 192.0.2.1:51820 (a host name works too).
        #[arg(long, value_name = "HOST:PORT")]
        server: String,
        /// Send a keepalive after this many seconds without sending, so a NAT
        /// on the path keeps its mapping.
        #[arg(long, value_name = "SECS")]
        keepalive: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// Name of the TUN device to create.
    #[arg(long, default_value = "tun0", value_name = "NAME", value_parser = step01_ping_tun::ifname::parse)]
    tun: String,
    /// Tunnel address and prefix length of this end, e.g. 10.0.0.1/24.
    #[arg(long, value_name = "CIDR", value_parser = step01_ping_tun::cli::ipv4_net)]
    address: Ipv4Net,
    /// The underlay transport.
    #[arg(long, value_enum, default_value_t = TransportArg::Udp)]
    transport: TransportArg,
    /// MTU of the underlay path; the TUN MTU is this less our overhead.
    /// At least 576, the datagram every IPv4 host must take (RFC 791).
    #[arg(long, default_value_t = 1500, value_name = "BYTES",
          value_parser = clap::value_parser!(u16).range(576..))]
    underlay_mtu: u16,
    /// Record every packet read from and written to the TUN device in FILE
    /// (pcap, LINKTYPE_RAW).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    #[command(flatten)]
    log: step01_ping_tun::cli::LogArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TransportArg {
    Udp,
    Tcp,
}

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
