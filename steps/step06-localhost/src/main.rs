//! `step06-localhost`: expose a local TCP (and UDP) service through a
//! server, over one encrypted, multiplexed control connection.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use step01_ping_tun::cli::LogArgs;
use step04_crypto::cli::{GenkeyArgs, genkey, pubkey};
use step04_crypto::entropy::{Entropy, OsEntropy};
use step04_crypto::keyfile;
use step04_crypto::keys::{self, Short};
use step04_crypto::noise::Identity;
use step04_crypto::run::KeylogEntropy;
use step06_localhost::client::{self, ClientConfig, ClientEvent, Stop};
use step06_localhost::policy::{FIRST_UNPRIVILEGED, MAX_PORTS_PER_KEY, PeerSpec, PortRules, VisitorLimits};
use step06_localhost::secure::ServerKeys;
use step06_localhost::server::{Server, ServerConfig};
use step06_localhost::wire::Protos;
use step06_localhost::{flows, l3};

const PROGRAM: &str = "step06-localhost";

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
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Genkey(args) => genkey(PROGRAM, &args),
        Command::Pubkey => pubkey(),
        Command::L3(cmd) => l3::run(PROGRAM, *cmd),
        Command::Server {
            listen,
            key,
            peers,
            allow_low_ports,
            max_ports_per_key,
            public_ip,
            udp_idle_timeout,
            max_visitors_per_source,
            visitor_idle_timeout,
            keylog,
            log,
        } => {
            if let Some(p) = peers.iter().find(|p| {
                let low = p.ports.as_ref().and_then(|set| set.lowest());
                low.is_some_and(|l| l < FIRST_UNPRIVILEGED) && !allow_low_ports
            }) {
                let spec = format!(
                    "{}={}",
                    keys::public_to_string(&p.key),
                    p.ports.as_ref().map(ToString::to_string).unwrap_or_default()
                );
                Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!("--peer {spec}: ports below {FIRST_UNPRIVILEGED} need --allow-low-ports"),
                    )
                    .exit();
            }
            let mut ports = PortRules::new(allow_low_ports, usize::from(max_ports_per_key));
            for p in &peers {
                if let Some(set) = &p.ports {
                    ports.restrict(*p.key.as_bytes(), set.clone());
                }
            }
            let visitors = VisitorLimits {
                per_source: max_visitors_per_source as usize,
                idle_timeout: Duration::from_secs(visitor_idle_timeout),
                ..VisitorLimits::default()
            };
            serve(
                listen,
                &key,
                &peers,
                ports,
                visitors,
                public_ip,
                Duration::from_secs(udp_idle_timeout),
                keylog.as_deref(),
                log,
            )
        }
        Command::Expose {
            local_port,
            local_host,
            server,
            key,
            server_key,
            remote_port,
            udp,
            keylog,
            log,
        } => expose(
            SocketAddr::new(local_host, local_port),
            server,
            &key,
            &server_key,
            remote_port,
            if udp { Protos::BOTH } else { Protos::TCP },
            keylog.as_deref(),
            log,
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

/// The kernel's randomness, or with `--keylog` the same and a key log.
fn entropy(keylog: Option<&Path>) -> anyhow::Result<Box<dyn Entropy>> {
    Ok(match keylog {
        Some(path) => {
            let log = KeylogEntropy::create(path)?;
            log::warn!(
                "writing ephemeral keys to {}: this session can be decrypted",
                path.display()
            );
            Box::new(log)
        }
        None => Box::new(OsEntropy),
    })
}

#[allow(clippy::too_many_arguments)]
fn serve(
    listen: SocketAddr,
    key: &Path,
    peers: &[PeerSpec],
    ports: PortRules,
    visitors: VisitorLimits,
    public_ip: IpAddr,
    udp_idle_timeout: Duration,
    keylog: Option<&Path>,
    log: LogArgs,
) -> anyhow::Result<ExitCode> {
    log.init();
    let identity = Identity::new(keyfile::read_key_file(key)?);
    for p in peers {
        match &p.ports {
            Some(set) => log::info!("client {} may connect and claim ports {set}", Short(&p.key)),
            None => log::info!(
                "client {} may connect and claim any port from {FIRST_UNPRIVILEGED}",
                Short(&p.key)
            ),
        }
    }
    let allowed = peers.iter().map(|p| p.key).collect();
    let mut config = ServerConfig::new(listen, public_ip, ServerKeys { identity, allowed });
    config.udp.idle_timeout = udp_idle_timeout;
    config.ports = ports;
    config.visitors = visitors;
    config.entropy = entropy(keylog)?;
    let server = Server::start(config)?;
    server.wait();
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn expose(
    local: SocketAddr,
    server: String,
    key: &Path,
    server_key: &str,
    remote_port: Option<u16>,
    protos: Protos,
    keylog: Option<&Path>,
    log: LogArgs,
) -> anyhow::Result<ExitCode> {
    log.init();
    let identity = Arc::new(Identity::new(keyfile::read_key_file(key)?));
    let server_key = keys::parse_public(server_key).context("--server-key")?;
    let mut config = ClientConfig::new(server.clone(), identity, server_key, local);
    config.remote_port = remote_port.unwrap_or(0);
    config.protos = protos;
    config.entropy = Mutex::new(entropy(keylog)?);
    let host = server
        .rsplit_once(':')
        .map_or(server.as_str(), |(h, _)| h)
        .to_string();
    client::run(&config, &Stop::default(), |event| match event {
        ClientEvent::Exposed { port } if protos.udp => {
            println!("{local} is now at {host}:{port} ({protos})")
        }
        ClientEvent::Exposed { port } => println!("{local} is now at {host}:{port}"),
        ClientEvent::Disconnected { why } => eprintln!("{PROGRAM}: disconnected ({why}); reconnecting"),
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        let secret = step04_crypto::StaticSecret::from([1; 32]);
        keys::public_to_string(&step04_crypto::PublicKey::from(&secret))
    }

    fn server(flag: &str, peer: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([
            PROGRAM,
            "server",
            flag,
            "127.0.0.1:7835",
            "--key",
            "server.key",
            "--peer",
            peer,
        ])
    }

    #[test]
    fn the_server_listens_with_listen_and_still_with_control() {
        for flag in ["--listen", "--control"] {
            let Command::Server { listen, .. } = server(flag, &key()).unwrap().command else {
                panic!("not the server");
            };
            assert_eq!(listen, "127.0.0.1:7835".parse().unwrap(), "{flag}");
        }
    }

    #[test]
    fn a_malformed_peer_is_a_usage_error_that_names_the_flag() {
        let key = key();
        let ok = server("--listen", &format!("{key}=80,8000-8099")).unwrap();
        let Command::Server { peers, .. } = ok.command else {
            panic!("not the server");
        };
        assert_eq!(peers.len(), 1);
        for bad in [
            format!("{key}=70000"),
            format!("{key}=90-80"),
            "nokey".to_string(),
        ] {
            let err = server("--listen", &bad).map(|_| ()).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(err.to_string().contains("--peer"), "{bad}: {err}");
        }
    }

    /// Every flag that takes a time, in every subcommand, takes seconds
    /// and says so the same way.
    #[test]
    fn every_duration_is_given_in_secs() {
        let cli = Cli::command();
        let mut durations = Vec::new();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let help = format!("{:?} {:?}", arg.get_help(), arg.get_long_help());
                let long = arg.get_long().unwrap_or_default();
                let timed =
                    long.contains("timeout") || long.contains("keepalive") || help.contains("seconds");
                if timed && arg.get_action().takes_values() {
                    let names: Vec<&str> = arg
                        .get_value_names()
                        .unwrap_or_default()
                        .iter()
                        .map(|n| n.as_str())
                        .collect();
                    assert_eq!(names, ["SECS"], "{} --{long}", sub.get_name());
                    durations.push(format!("{} --{long}", sub.get_name()));
                }
            }
        }
        for expected in [
            "server --udp-idle-timeout",
            "server --visitor-idle-timeout",
            "vpn-client --keepalive",
        ] {
            assert!(
                durations.iter().any(|d| d == expected),
                "{expected}: {durations:?}"
            );
        }
    }

    #[test]
    fn expose_help_shows_expose_examples() {
        let mut cli = Cli::command();
        let expose = cli.find_subcommand_mut("expose").unwrap();
        let help = expose.render_help().to_string();
        let examples = help.split_once("Examples:").map(|(_, e)| e).unwrap_or_default();
        assert!(examples.contains("step06-localhost expose 8000"), "{help}");
        assert!(!examples.contains(" server --listen"), "{help}");
    }
}
