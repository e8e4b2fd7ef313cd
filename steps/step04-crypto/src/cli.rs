//! The command line shared by the tunnel steps: key commands, the flags of
//! both ends, and the run of one end, which later steps extend.

use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use ipnet::IpNet;
use step01_ping_tun::host::{self, Shutdown};
use step02_plain_tunnel::mtu::Transport;
use step02_plain_tunnel::run::{Config, Endpoint, run_device};
use step03_ipv6::cli::ip_net;
use step03_ipv6::device::create_tun;
use step03_ipv6::hook::{PathEvent, PathPolicy};
use x25519_dalek::PublicKey;

use crate::entropy::{Entropy, OsEntropy};
use crate::keys::{self, Short};
use crate::run::{KeylogEntropy, tun_mtu};
use crate::{PeerConfig, Tunnel};

/// The flags of both ends.
#[derive(Debug, Args)]
pub struct Common {
    /// The private key file (mode 600), as `genkey` writes it.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Name of the TUN device to create.
    #[arg(long, default_value = "tun0", value_name = "NAME")]
    pub tun: String,
    /// An address of the device, with its prefix length; one IPv4 and any
    /// number of IPv6 addresses.
    #[arg(long = "address", value_name = "CIDR", required = true, value_parser = ip_net)]
    pub addresses: Vec<IpNet>,
    /// Record every packet read from and written to the device in FILE
    /// (pcap, LINKTYPE_RAW).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Append each handshake's ephemeral private key to FILE, so a capture
    /// can be decrypted later. For test sessions only.
    #[arg(long, value_name = "FILE")]
    pub keylog: Option<PathBuf>,
    /// MTU of the underlay path; the TUN device gets this less 60 (IPv4)
    /// or 80 (IPv6) bytes of headers and tag. At least 576, the datagram
    /// every IPv4 host must take (RFC 791).
    #[arg(long, default_value_t = 1500, value_name = "BYTES",
          value_parser = clap::value_parser!(u16).range(576..))]
    pub underlay_mtu: u16,
    #[command(flatten)]
    pub log: step01_ping_tun::cli::LogArgs,
}

pub fn genkey() -> anyhow::Result<ExitCode> {
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

pub fn pubkey() -> anyhow::Result<ExitCode> {
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
pub fn server_peers(peers: &[String]) -> anyhow::Result<Vec<PeerConfig>> {
    peers
        .iter()
        .map(|spec| {
            let (key, list) = spec
                .rsplit_once('=')
                .with_context(|| format!("--peer `{spec}` is not PUBKEY=CIDR[,CIDR...]"))?;
            let allowed = list
                .split(',')
                .map(|c| ip_net(c.trim()).map_err(anyhow::Error::msg))
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

/// What a later step needs to change the host once the TUN device is up.
pub struct Started<'a> {
    pub tun: &'a str,
    pub mtu: u16,
    pub endpoint: &'a Endpoint,
    pub addresses: &'a [IpNet],
}

/// The tunnel's peer for a client: the server, which may send from any
/// address and to which everything the client routes into the tunnel goes.
pub fn client_peer(
    server: SocketAddr,
    server_key: &str,
    keepalive: Option<u64>,
) -> anyhow::Result<PeerConfig> {
    Ok(PeerConfig {
        public: keys::parse_public(server_key)?,
        allowed: vec!["0.0.0.0/0".parse()?, "::/0".parse()?],
        endpoint: Some(server),
        // Handshake at once; keep the session (and NAT mappings) alive.
        keepalive: match keepalive {
            None => Some(Duration::from_secs(25)),
            Some(0) => None,
            Some(secs) => Some(Duration::from_secs(secs)),
        },
    })
}

// ANCHOR: tunnel_end
/// Runs one end of the tunnel until SIGINT or SIGTERM. `setup` runs once
/// the TUN device is up, before any traffic; what it returns is dropped
/// when the tunnel stops (on an error or a panic too), which is where a
/// later step puts the host back as it was.
pub fn tunnel_end<G>(
    program: &str,
    common: &Common,
    peers: Vec<PeerConfig>,
    endpoint: Endpoint,
    setup: impl FnOnce(&Started<'_>) -> anyhow::Result<G>,
) -> anyhow::Result<ExitCode> {
    common.log.init();
    // Check everything that needs no privileges first.
    let secret = keys::read_key_file(&common.key)?;
    if !host::has_net_admin() {
        let what = format!("creating TUN device {}", common.tun);
        eprintln!("{program}: {}", host::needs_net_admin_message(&what));
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
    if mtu < 1280 && common.addresses.iter().any(|a| matches!(a, IpNet::V6(_))) {
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
    let v4 = common.addresses.iter().find_map(|a| match a.addr() {
        std::net::IpAddr::V4(ip) => Some(ip),
        std::net::IpAddr::V6(_) => None,
    });
    let v6 = common.addresses.iter().find_map(|a| match a.addr() {
        std::net::IpAddr::V6(ip) => Some(ip),
        std::net::IpAddr::V4(_) => None,
    });
    let guard = setup(&Started {
        tun: &common.tun,
        mtu,
        endpoint: &config.endpoint,
        addresses: &common.addresses,
    })?;
    let policy = PathPolicy::new(tunnel, mtu, v4, v6);
    let result = run_device(device, &config, policy, &shutdown, |policy| {
        let counts = policy.counts();
        let path = (counts.get(PathEvent::Clamped), counts.get(PathEvent::TooBig));
        (policy.core().status(Instant::now()), path)
    });
    drop(guard);
    let (status, (clamped, too_big)) = result?;
    for line in status {
        println!("{}: {line}", common.tun);
    }
    println!(
        "{}: clamped {clamped} TCP MSS, sent {too_big} too-big errors",
        common.tun
    );
    Ok(ExitCode::SUCCESS)
}
// ANCHOR_END: tunnel_end
