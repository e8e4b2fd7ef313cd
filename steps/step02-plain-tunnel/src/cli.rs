//! The command line of `step02-plain-tunnel`, which `main.rs` parses and
//! [`command`] gives to `tunlab completions`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use step01_ping_tun::Ipv4Net;

/// A plaintext IP tunnel: what the kernel routes into the TUN device on one
/// host comes out of the TUN device on the other, carried over UDP (or TCP)
/// between them. Nothing is encrypted: anyone on the path can read it.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Example (as root, on two hosts that reach each other over 192.0.2.0/24):\n  server# step02-plain-tunnel server --listen 192.0.2.1:51820 --address 10.0.0.1/24\n  client# step02-plain-tunnel client --server 192.0.2.1:51820 --address 10.0.0.2/24 --keepalive 25\n  client# ping 10.0.0.1\n\nSend SIGUSR1 to print the counters; Ctrl-C or SIGTERM to stop."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
pub struct Common {
    /// Name of the TUN device to create.
    #[arg(long, default_value = "tun0", value_name = "NAME", value_parser = step01_ping_tun::ifname::parse)]
    pub tun: String,
    /// Tunnel address and prefix length of this end, e.g. 10.0.0.1/24.
    #[arg(long, value_name = "CIDR", value_parser = step01_ping_tun::cli::ipv4_net)]
    pub address: Ipv4Net,
    /// The underlay transport.
    #[arg(long, value_enum, default_value_t = TransportArg::Udp)]
    pub transport: TransportArg,
    /// MTU of the underlay path; the TUN MTU is this less our overhead.
    /// At least 576, the datagram every IPv4 host must take (RFC 791).
    #[arg(long, default_value_t = 1500, value_name = "BYTES",
          value_parser = clap::value_parser!(u16).range(576..))]
    pub underlay_mtu: u16,
    /// Record every packet read from and written to the TUN device in FILE
    /// (pcap, LINKTYPE_RAW).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    #[command(flatten)]
    pub log: step01_ping_tun::cli::LogArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TransportArg {
    Udp,
    Tcp,
}

/// The command line, for man pages and shell completions (`tunlab
/// completions`).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
