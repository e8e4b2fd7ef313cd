//! `step04-crypto`: the tunnel of step 03, encrypted and authenticated.

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use step01_ping_tun::host::{self, Shutdown};
use step02_plain_tunnel::mtu::Transport;
use step02_plain_tunnel::run::{Config, Endpoint, resolve, run_device};
use step03_ipv6::cidr::IpCidr;
use step03_ipv6::device::create_tun;
use step03_ipv6::hook::PathHook;
use step04_crypto::entropy::{Entropy, OsEntropy};
use step04_crypto::keys::{self, Short};
use step04_crypto::run::{KeylogEntropy, tun_mtu};
use step04_crypto::{PeerConfig, Tunnel};
use x25519_dalek::PublicKey;

/// An encrypted tunnel: an x25519 handshake (Noise IK), ChaCha20-Poly1305
/// on every packet, and a replay window.
///
/// Keys are base64, like WireGuard's. Private keys live in files only their
/// owner can read (mode 600) and never on the command line; public keys are
/// public.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  \
        step04-crypto genkey > server.key && step04-crypto pubkey < server.key\n  \
        step04-crypto genkey > client.key && step04-crypto pubkey < client.key\n  \
        sudo step04-crypto server --listen 0.0.0.0:51820 --key server.key \\\n      \
        --peer CLIENT_PUBKEY=10.0.0.2/32,fd00::2/128 --address 10.0.0.1/24 --address fd00::1/64\n  \
        sudo step04-crypto client --server 192.0.2.1:51820 --key client.key \\\n      \
        --server-key SERVER_PUBKEY --address 10.0.0.2/24 --address fd00::2/64\n\n\
        `kill -USR1 PID` logs each peer's endpoint, last handshake, traffic and drops."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a new private key (base64). Redirect it to a file: the file
    /// is made readable by its owner only.
    #[command(after_help = "Example:\n  step04-crypto genkey > client.key")]
    Genkey,
    /// Read a private key on stdin, print its public key.
    #[command(after_help = "Example:\n  step04-crypto pubkey < client.key")]
    Pubkey,
    /// Accept clients whose public keys are listed.
    #[command(after_help = "Example (as root):\n  \
        step04-crypto server --listen 0.0.0.0:51820 --key server.key \\\n    \
        --peer CLIENT1_PUBKEY=10.0.0.2/32,fd00::2/128 --peer CLIENT2_PUBKEY=10.0.0.3/32 \\\n    \
        --address 10.0.0.1/24 --address fd00::1/64")]
    Server {
        /// Where to listen; [::]:PORT takes both families.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: SocketAddr,
        /// A client: its public key and the tunnel addresses it may use
        /// (and that are routed to it). Repeat for each client.
        #[arg(long = "peer", value_name = "PUBKEY=CIDR[,CIDR...]", required = true)]
        peers: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Connect to a server whose public key you know.
    #[command(after_help = "Example (as root):\n  \
        step04-crypto client --server 192.0.2.1:51820 --key client.key --server-key SERVER_PUBKEY \\\n    \
        --address 10.0.0.2/24 --address fd00::2/64 --keepalive 25")]
    Client {
        /// The server: 192.0.2.1:51820, [2001:db8::1]:51820, or a name.
        #[arg(long, value_name = "HOST:PORT")]
        server: String,
        /// The server's public key.
        #[arg(long, value_name = "PUBKEY")]
        server_key: String,
        /// Send a keepalive after this many seconds without sending (keeps
        /// NAT mappings open) [default: 25]. With 0, no keepalives, and the
        /// first handshake waits for the first packet.
        #[arg(long, value_name = "SECS")]
        keepalive: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// The private key file (mode 600), as `genkey` writes it.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Name of the TUN device to create.
    #[arg(long, default_value = "tun0", value_name = "NAME")]
    tun: String,
    /// An address of the device, with its prefix length; one IPv4 and any
    /// number of IPv6 addresses.
    #[arg(long = "address", value_name = "CIDR", required = true)]
    addresses: Vec<IpCidr>,
    /// Record every packet read from and written to the device in FILE
    /// (pcap, LINKTYPE_RAW).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Append each handshake's ephemeral private key to FILE, so a capture
    /// can be decrypted later. For test sessions only.
    #[arg(long, value_name = "FILE")]
    keylog: Option<PathBuf>,
    /// MTU of the underlay path; the TUN device gets this less 60 (IPv4)
    /// or 80 (IPv6) bytes of headers and tag.
    #[arg(long, default_value_t = 1500, value_name = "BYTES")]
    underlay_mtu: u16,
    /// Log more: -v shows every packet, -vv everything.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Genkey => genkey(),
        Command::Pubkey => pubkey(),
        Command::Server {
            listen,
            peers,
            common,
        } => tunnel_end(&common, |_| server_peers(&peers), Endpoint::Server { listen }),
        Command::Client {
            server,
            server_key,
            keepalive,
            common,
        } => resolve(&server).and_then(|server| {
            let peer = PeerConfig {
                public: keys::parse_public(&server_key)?,
                // Everything the client sends into the tunnel goes to the
                // server, and the server may send from any address.
                allowed: vec!["0.0.0.0/0".parse()?, "::/0".parse()?],
                endpoint: Some(server),
                // Handshake at once; keep the session (and NAT) alive.
                keepalive: match keepalive {
                    None => Some(Duration::from_secs(25)),
                    Some(0) => None,
                    Some(secs) => Some(Duration::from_secs(secs)),
                },
            };
            tunnel_end(&common, |_| Ok(vec![peer]), Endpoint::Client { server })
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("step04-crypto: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn genkey() -> anyhow::Result<ExitCode> {
    // If stdout is a file, make it readable by its owner only before the
    // key goes in.
    let stdout = std::path::Path::new("/proc/self/fd/1");
    if let Ok(meta) = std::fs::metadata(stdout)
        && meta.is_file()
    {
        std::fs::set_permissions(stdout, std::fs::Permissions::from_mode(0o600))
            .context("making the key file readable by its owner only")?;
    } else if std::io::stdout().is_terminal() {
        eprintln!("step04-crypto: printing a private key to the terminal; redirect it to a file instead");
    }
    println!("{}", keys::encode(&keys::generate().to_bytes()));
    Ok(ExitCode::SUCCESS)
}

fn pubkey() -> anyhow::Result<ExitCode> {
    let mut text = String::new();
    std::io::stdin()
        .take(1024)
        .read_to_string(&mut text)
        .context("reading a private key on stdin")?;
    let secret =
        keys::parse_secret(&text).context("stdin does not hold a private key (make one with `genkey`)")?;
    println!("{}", keys::public_to_string(&PublicKey::from(&secret)));
    Ok(ExitCode::SUCCESS)
}

/// `--peer PUBKEY=CIDR[,CIDR...]` for each client. The key's base64 ends
/// in `=` itself, so the list starts after the last `=`.
fn server_peers(peers: &[String]) -> anyhow::Result<Vec<PeerConfig>> {
    peers
        .iter()
        .map(|spec| {
            let (key, list) = spec
                .rsplit_once('=')
                .with_context(|| format!("--peer `{spec}` is not PUBKEY=CIDR[,CIDR...]"))?;
            let allowed = list
                .split(',')
                .map(|c| c.trim().parse::<IpCidr>().map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<Vec<_>>>()
                .with_context(|| format!("in --peer `{spec}`"))?;
            Ok(PeerConfig {
                public: keys::parse_public(key)?,
                allowed,
                endpoint: None,
                keepalive: None,
            })
        })
        .collect()
}

fn tunnel_end(
    common: &Common,
    peers: impl FnOnce(&Common) -> anyhow::Result<Vec<PeerConfig>>,
    endpoint: Endpoint,
) -> anyhow::Result<ExitCode> {
    host::init_logging(common.verbose);
    // Check everything that needs no privileges first.
    let secret = keys::read_key_file(&common.key)?;
    let peers = peers(common)?;
    if !host::has_net_admin() {
        let what = format!("creating TUN device {}", common.tun);
        eprintln!("step04-crypto: {}", host::needs_net_admin_message(&what));
        return Ok(ExitCode::from(host::EXIT_NO_PERMISSION as u8));
    }
    let config = Config {
        endpoint,
        tun: common.tun.clone(),
        transport: Transport::Udp,
        keepalive: None,
        pcap: common.pcap.clone(),
        underlay_mtu: common.underlay_mtu,
    };
    let mtu = tun_mtu(common.underlay_mtu, config.underlay_family_hint());
    if mtu < 1280 && common.addresses.iter().any(|a| matches!(a, IpCidr::V6(_))) {
        bail!(
            "an underlay MTU of {} leaves {mtu} for the tunnel; IPv6 needs 1280",
            common.underlay_mtu
        );
    }
    let entropy: Box<dyn Entropy> = match &common.keylog {
        Some(path) => {
            log::warn!(
                "writing ephemeral keys to {}: this session can be decrypted",
                path.display()
            );
            Box::new(KeylogEntropy::create(path)?)
        }
        None => Box::new(OsEntropy),
    };
    let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut tunnel = Tunnel::new(secret, usize::from(mtu), entropy, Instant::now(), unix_now);
    log::info!("our public key is {}", keys::public_to_string(tunnel.public()));
    for peer in peers {
        log::info!(
            "peer {} may use {}",
            Short(&peer.public),
            peer.allowed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        tunnel.add_peer(peer);
    }
    let shutdown = Shutdown::install()?;
    let device = create_tun(&common.tun, &common.addresses, mtu)?;
    log::info!("{} is up (MTU {mtu})", common.tun);
    let v4 = common.addresses.iter().find_map(|a| match a.address() {
        std::net::IpAddr::V4(ip) => Some(ip),
        std::net::IpAddr::V6(_) => None,
    });
    let v6 = common.addresses.iter().find_map(|a| match a.address() {
        std::net::IpAddr::V6(ip) => Some(ip),
        std::net::IpAddr::V4(_) => None,
    });
    let hook = Arc::new(PathHook::new(mtu, v4, v6));
    let status = run_device(device, &config, tunnel, hook.clone(), &shutdown)?;
    for line in status.lines() {
        println!("{}: {line}", common.tun);
    }
    println!(
        "{}: clamped {} TCP MSS, sent {} too-big errors",
        common.tun,
        hook.clamped.load(Ordering::Relaxed),
        hook.too_big.load(Ordering::Relaxed)
    );
    Ok(ExitCode::SUCCESS)
}
