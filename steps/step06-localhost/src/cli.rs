//! The command line of `step06-localhost`, which `main.rs` parses and
//! [`command`] gives to `tunlab completions`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use step01_ping_tun::cli::LogArgs;
use step04_crypto::cli::GenkeyArgs;

use crate::policy::{MAX_PORTS_PER_KEY, PeerSpec, VisitorLimits};
use crate::{flows, l3};

/// Expose a local TCP service (and with --udp, UDP on the same port) on a
/// server's public port, like bore or ngrok: the client keeps one control
/// connection (step 04's handshake and encryption), and every visitor
/// becomes a stream inside it (`server`, `expose`). Or at layer 3, through
/// step 05's VPN: the server forwards a public port into the tunnel and the
/// client delivers it to its loopback (`vpn-server`, `vpn-client`, `down`).
///
/// Keys are step 04's: base64 x25519 keys, private ones in files only their
/// owner can read.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  \
        step06-localhost genkey > server.key && step06-localhost pubkey < server.key\n  \
        step06-localhost genkey > client.key && step06-localhost pubkey < client.key\n  \
        step06-localhost server --listen 0.0.0.0:7835 --key server.key --peer CLIENT_PUBKEY\n  \
        step06-localhost expose 8000 --server 192.0.2.1:7835 --key client.key \\\n      \
        --server-key SERVER_PUBKEY --remote-port 40000 --udp\n  \
        step06-localhost vpn-server --listen 0.0.0.0:51820 --key server.key \\\n      \
        --peer CLIENT_PUBKEY=10.0.0.2/32 --address 10.0.0.1/24 --forward 18080=10.0.0.2:8080\n  \
        step06-localhost vpn-client --server 192.0.2.1:51820 --key client.key \\\n      \
        --server-key SERVER_PUBKEY --address 10.0.0.2/24 --deliver 8080"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a new private key (base64), as step 04 does: in a new file
    /// only its owner can read (--out FILE), or on standard output.
    Genkey(GenkeyArgs),
    /// Read a private key on stdin, print its public key.
    Pubkey,
    /// Accept control connections from the listed clients.
    #[command(after_help = "Examples:\n  \
        step06-localhost server --listen 0.0.0.0:7835 --key server.key \\\n    \
        --peer CLIENT1_PUBKEY --peer CLIENT2_PUBKEY=8000-8099\n  \
        step06-localhost server --listen 0.0.0.0:7835 --key server.key \\\n    \
        --peer CLIENT_PUBKEY=80,443 --allow-low-ports")]
    Server {
        /// Where clients connect (`--control`, its old name, still works).
        #[arg(long, alias = "control", value_name = "ADDR:PORT")]
        listen: SocketAddr,
        /// The private key file (mode 600).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// A client's public key, and the public ports it may claim
        /// (8000, 8000-8099, or a list of these; without: any from 1024).
        /// Repeat for each client.
        #[arg(long = "peer", value_name = "PUBKEY[=PORTS]", required = true)]
        peers: Vec<PeerSpec>,
        /// Let clients claim ports below 1024, those their --peer lists.
        #[arg(long)]
        allow_low_ports: bool,
        /// The most public ports one key may hold at once.
        #[arg(long, default_value_t = MAX_PORTS_PER_KEY as u16, value_name = "N",
              value_parser = clap::value_parser!(u16).range(1..))]
        max_ports_per_key: u16,
        /// The address public ports are bound on.
        #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED), value_name = "IP")]
        public_ip: IpAddr,
        /// Forget a UDP flow (one visitor address) after this many seconds
        /// with no datagram either way.
        #[arg(long, default_value_t = flows::IDLE_TIMEOUT.as_secs(), value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(1..))]
        udp_idle_timeout: u64,
        /// The most visitors' streams one address (an IPv6 /64) may have
        /// open at once.
        #[arg(long, default_value_t = VisitorLimits::default().per_source as u32, value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..))]
        max_visitors_per_source: u32,
        /// Close a visitor's TCP stream after this many seconds with no
        /// byte moving either way [0: never].
        #[arg(long, default_value_t = VisitorLimits::default().idle_timeout.as_secs(), value_name = "SECS")]
        visitor_idle_timeout: u64,
        /// Append each handshake's ephemeral private key to FILE (mode
        /// 600), so a capture of the control connection can be decrypted
        /// later. For test sessions only.
        #[arg(long, value_name = "FILE")]
        keylog: Option<PathBuf>,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Expose LOCAL_PORT (on 127.0.0.1) through the server.
    #[command(after_help = "Examples:\n  \
        step06-localhost expose 8000 --server 192.0.2.1:7835 --key client.key \\\n    \
        --server-key SERVER_PUBKEY --remote-port 40000 --udp\n  \
        step06-localhost expose 22 --server tunnel.example.org:7835 --key client.key \\\n    \
        --server-key SERVER_PUBKEY     # the server picks the public port")]
    Expose {
        /// The local service's port.
        local_port: u16,
        /// The host of the local service.
        #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
        local_host: IpAddr,
        /// The server's control address: 192.0.2.1:7835 or a name.
        #[arg(long, value_name = "HOST:PORT")]
        server: String,
        /// The private key file (mode 600).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The server's public key.
        #[arg(long, value_name = "PUBKEY")]
        server_key: String,
        /// The public port to ask for [default: any the server picks].
        #[arg(long, value_name = "PORT")]
        remote_port: Option<u16>,
        /// Also forward UDP: datagrams to the public port go to LOCAL_PORT
        /// over UDP, and the replies come back.
        #[arg(long)]
        udp: bool,
        /// Append each handshake's ephemeral private key to FILE (mode
        /// 600), so a capture of the control connection can be decrypted
        /// later. For test sessions only.
        #[arg(long, value_name = "FILE")]
        keylog: Option<PathBuf>,
        #[command(flatten)]
        log: LogArgs,
    },
    /// The layer-3 design: step 05's VPN, with ports forwarded to a client
    /// (vpn-server --forward) and delivered to its loopback (vpn-client
    /// --deliver); down undoes what a killed run left.
    #[command(flatten)]
    L3(Box<l3::L3Command>),
}

/// The command line, for man pages and shell completions (`tunlab
/// completions`).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
