//! `step06-localhost`: expose a local TCP service through a server, over
//! one encrypted, multiplexed control connection.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use step01_ping_tun::host;
use step04_crypto::cli::{genkey, pubkey};
use step04_crypto::keys::{self, Short};
use step04_crypto::noise::Identity;
use step06_localhost::client::{self, ClientConfig, ClientEvent, Stop};
use step06_localhost::mux;
use step06_localhost::secure::ServerKeys;
use step06_localhost::server::{Server, ServerConfig};

const PROGRAM: &str = "step06-localhost";

/// Expose a local TCP service on a server's public port, like bore or
/// ngrok: the client keeps one control connection (step 04's handshake and
/// encryption), and every visitor becomes a stream inside it.
///
/// Keys are step 04's: base64 x25519 keys, private ones in files only their
/// owner can read.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  \
        step06-localhost genkey > server.key && step06-localhost pubkey < server.key\n  \
        step06-localhost genkey > client.key && step06-localhost pubkey < client.key\n  \
        step06-localhost server --control 0.0.0.0:7835 --key server.key --peer CLIENT_PUBKEY\n  \
        step06-localhost expose 8000 --server 192.0.2.1:7835 --key client.key \\\n      \
        --server-key SERVER_PUBKEY --remote-port 40000"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a new private key (base64). Redirect it to a file: the file
    /// is made readable by its owner only.
    Genkey,
    /// Read a private key on stdin, print its public key.
    Pubkey,
    /// Accept control connections from the listed clients.
    #[command(after_help = "Example:\n  \
        step06-localhost server --control 0.0.0.0:7835 --key server.key \\\n    \
        --peer CLIENT1_PUBKEY --peer CLIENT2_PUBKEY")]
    Server {
        /// Where clients connect.
        #[arg(long, value_name = "ADDR:PORT")]
        control: SocketAddr,
        /// The private key file (mode 600).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// A client's public key. Repeat for each client.
        #[arg(long = "peer", value_name = "PUBKEY", required = true)]
        peers: Vec<String>,
        /// The address public ports are bound on.
        #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED), value_name = "IP")]
        public_ip: IpAddr,
        /// Log more: -v shows every stream, -vv every frame.
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
    },
    /// Expose LOCAL_PORT (on 127.0.0.1) through the server.
    #[command(after_help = "Example:\n  \
        step06-localhost expose 8000 --server 192.0.2.1:7835 --key client.key \\\n    \
        --server-key SERVER_PUBKEY --remote-port 40000")]
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
        /// Log more: -v shows every stream, -vv every frame.
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Genkey => genkey(),
        Command::Pubkey => pubkey(),
        Command::Server {
            control,
            key,
            peers,
            public_ip,
            verbose,
        } => serve(control, &key, &peers, public_ip, verbose),
        Command::Expose {
            local_port,
            local_host,
            server,
            key,
            server_key,
            remote_port,
            verbose,
        } => expose(
            SocketAddr::new(local_host, local_port),
            server,
            &key,
            &server_key,
            remote_port,
            verbose,
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{PROGRAM}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    control: SocketAddr,
    key: &std::path::Path,
    peers: &[String],
    public_ip: IpAddr,
    verbose: u8,
) -> anyhow::Result<ExitCode> {
    host::init_logging(verbose);
    let identity = Identity::new(keys::read_key_file(key)?);
    let allowed = peers
        .iter()
        .map(|p| keys::parse_public(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for p in &allowed {
        log::info!("client {} may connect", Short(p));
    }
    let server = Server::start(ServerConfig {
        control,
        public_ip,
        keys: ServerKeys { identity, allowed },
        mux: mux::Config::default(),
    })?;
    server.wait();
    Ok(ExitCode::SUCCESS)
}

fn expose(
    local: SocketAddr,
    server: String,
    key: &std::path::Path,
    server_key: &str,
    remote_port: Option<u16>,
    verbose: u8,
) -> anyhow::Result<ExitCode> {
    host::init_logging(verbose);
    let identity = Arc::new(Identity::new(keys::read_key_file(key)?));
    let server_key = keys::parse_public(server_key).context("--server-key")?;
    let config = ClientConfig {
        server: server.clone(),
        identity,
        server_key,
        local,
        remote_port: remote_port.unwrap_or(0),
        backoff_min: Duration::from_millis(250),
        backoff_max: Duration::from_secs(30),
        mux: mux::Config::default(),
    };
    let host = server
        .rsplit_once(':')
        .map_or(server.as_str(), |(h, _)| h)
        .to_string();
    client::run(&config, &Stop::default(), |event| match event {
        ClientEvent::Exposed { port } => println!("{local} is now at {host}:{port}"),
        ClientEvent::Disconnected { why } => eprintln!("{PROGRAM}: disconnected ({why}); reconnecting"),
    })?;
    Ok(ExitCode::SUCCESS)
}
