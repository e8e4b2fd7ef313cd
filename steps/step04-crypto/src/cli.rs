//! The command line shared by the tunnel steps: the key commands, and the
//! flags of each end as `clap::Args` structs that later steps flatten
//! into their own commands and extend. Every flag is parsed and checked
//! by clap, so a malformed key or prefix is a usage error (exit status 2)
//! that names the flag. Running an end is [`crate::run::tunnel_end`]'s.
//! Step 04's own command line is [`Cli`], which `main.rs` parses and
//! [`command`] gives to `tunlab completions`.

use std::fmt;
use std::fs::{File, Permissions};
use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use step02_plain_tunnel::run::{Endpoint, resolve};
use step03_ipv6::cli::ip_net;
use x25519_dalek::PublicKey;
use zeroize::Zeroizing;

use crate::PeerConfig;
use crate::entropy;
use crate::keyfile;
use crate::keys::{self, KeyError};

/// The flags of both ends.
#[derive(Debug, Args)]
pub struct Common {
    /// The private key file (mode 600), as `genkey` writes it.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Name of the TUN device to create.
    #[arg(long, default_value = "tun0", value_name = "NAME", value_parser = step01_ping_tun::ifname::parse)]
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

/// `genkey`'s flags.
#[derive(Debug, Default, Args)]
pub struct GenkeyArgs {
    /// Write the key to FILE, a new file created with mode 600 (never an
    /// existing one), instead of to standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

// ANCHOR: genkey
/// Makes a private key and writes it to `--out FILE`, or to standard
/// output. A file made by the shell for `genkey > FILE` exists before the
/// key does, with the mode the umask gives it (usually 644): genkey makes
/// it 600 before writing, and warns that whoever opened it before then
/// can still read it; `--out`, or `umask 077` first, leaves no such
/// moment.
pub fn genkey(program: &str, args: &GenkeyArgs) -> anyhow::Result<ExitCode> {
    let secret = entropy::generate_key();
    let text = keys::encode_secret(&secret);
    let (mut file, name) = match &args.out {
        Some(path) => (keyfile::create_key_file(path)?, path.display().to_string()),
        None => {
            // A descriptor of our own for standard output: unbuffered, so
            // the key is in no buffer but ours, and fstat and fchmod act on
            // whatever the shell opened.
            let stdout = std::io::stdout();
            let file = File::from(stdout.as_fd().try_clone_to_owned()?);
            let meta = file.metadata().context("checking standard output")?;
            let mode = meta.mode() & 0o777;
            if meta.is_file() && mode & 0o077 != 0 {
                file.set_permissions(Permissions::from_mode(0o600))
                    .context("making the key file readable by its owner only")?;
                eprintln!(
                    "{program}: warning: the file for the key had mode {mode:03o} until now; \
                     whoever opened it before can still read the key. \
                     Use `{program} genkey --out FILE`, or `umask 077` before `genkey > FILE`"
                );
            } else if stdout.is_terminal() {
                eprintln!("{program}: printing a private key to the terminal; redirect it to a file instead");
            }
            (file, "standard output".to_string())
        }
    };
    file.write_all(text.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .with_context(|| format!("writing the key to {name}"))?;
    Ok(ExitCode::SUCCESS)
}
// ANCHOR_END: genkey

pub fn pubkey() -> anyhow::Result<ExitCode> {
    let mut text = Zeroizing::new(String::with_capacity(1025));
    std::io::stdin()
        .take(1024)
        .read_to_string(&mut text)
        .context("reading a private key on stdin")?;
    let secret =
        keys::parse_secret(&text).context("stdin does not hold a private key (make one with `genkey`)")?;
    println!("{}", keys::public_to_string(&PublicKey::from(&secret)));
    Ok(ExitCode::SUCCESS)
}

// ANCHOR: args
/// `server`'s flags.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Where to listen; [::]:PORT takes both families.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// A client: its public key and the tunnel addresses it may use (and
    /// that are routed to it). Repeat for each client.
    #[arg(long = "peer", value_name = "PUBKEY=CIDR[,CIDR...]", required = true)]
    pub peers: Vec<PeerSpec>,
    #[command(flatten)]
    pub common: Common,
}

impl ServerArgs {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Server { listen: self.listen }
    }

    /// The tunnel's peers: one per `--peer`.
    pub fn peers(&self) -> Vec<PeerConfig> {
        self.peers.iter().map(PeerSpec::to_config).collect()
    }
}

/// `client`'s flags.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server: 192.0.2.1:51820, [2001:db8::1]:51820, or a name.
    #[arg(long, value_name = "HOST:PORT")]
    pub server: String,
    /// The server's public key.
    #[arg(long, value_name = "PUBKEY", value_parser = keys::parse_public)]
    pub server_key: PublicKey,
    /// Send a keepalive after this many seconds without sending (keeps
    /// NAT mappings open) [default: 25]. With 0, no keepalives, and the
    /// first handshake waits for the first packet.
    #[arg(long, value_name = "SECS")]
    pub keepalive: Option<u64>,
    #[command(flatten)]
    pub common: Common,
}

impl ClientArgs {
    /// Looks the server up (a name may need DNS): its address, and the
    /// tunnel's one peer.
    pub fn resolve(&self) -> anyhow::Result<(SocketAddr, PeerConfig)> {
        let server = resolve(&self.server)?;
        Ok((server, server_peer(server, self.server_key, self.keepalive)))
    }
}
// ANCHOR_END: args

/// One `--peer PUBKEY=CIDR[,CIDR...]`: a client's public key and the
/// tunnel addresses it may use. The key's base64 ends in `=` itself, so
/// the list starts after the last `=`.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    pub public: PublicKey,
    pub allowed: Vec<IpNet>,
}

/// Why a `--peer` value is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSpecError {
    /// No `=` between a key and a list.
    Shape,
    Key(KeyError),
    Prefix(String),
}

impl fmt::Display for PeerSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerSpecError::Shape => f.write_str("expected PUBKEY=CIDR[,CIDR...]"),
            PeerSpecError::Key(e) => write!(f, "the public key: {e}"),
            PeerSpecError::Prefix(e) => write!(f, "the addresses: {e}"),
        }
    }
}

impl std::error::Error for PeerSpecError {}

impl FromStr for PeerSpec {
    type Err = PeerSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (key, list) = spec.rsplit_once('=').ok_or(PeerSpecError::Shape)?;
        let allowed = list
            .split(',')
            .map(|c| ip_net(c.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(PeerSpecError::Prefix)?;
        Ok(PeerSpec {
            public: keys::parse_public(key).map_err(PeerSpecError::Key)?,
            allowed,
        })
    }
}

impl PeerSpec {
    /// A server's peer: it has not spoken yet, so no endpoint.
    pub fn to_config(&self) -> PeerConfig {
        PeerConfig {
            public: self.public,
            allowed: self.allowed.clone(),
            endpoint: None,
            keepalive: None,
        }
    }
}

/// The tunnel's peer for a client: the server, which may send from any
/// address and to which everything the client routes into the tunnel goes.
pub fn server_peer(server: SocketAddr, public: PublicKey, keepalive: Option<u64>) -> PeerConfig {
    PeerConfig {
        public,
        allowed: vec![IpNet::V4(Default::default()), IpNet::V6(Default::default())],
        endpoint: Some(server),
        // Handshake at once; keep the session (and NAT mappings) alive.
        keepalive: match keepalive {
            None => Some(Duration::from_secs(25)),
            Some(0) => None,
            Some(secs) => Some(Duration::from_secs(secs)),
        },
    }
}

/// `--server-key` taken as text, for commands that do not flatten
/// [`ClientArgs`] (step 06's layer-3 client, for now).
pub fn client_peer(
    server: SocketAddr,
    server_key: &str,
    keepalive: Option<u64>,
) -> anyhow::Result<PeerConfig> {
    let public = keys::parse_public(server_key).with_context(|| format!("--server-key `{server_key}`"))?;
    Ok(server_peer(server, public, keepalive))
}

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
        step04-crypto genkey --out server.key && step04-crypto pubkey < server.key\n  \
        step04-crypto genkey --out client.key && step04-crypto pubkey < client.key\n  \
        sudo step04-crypto server --listen 0.0.0.0:51820 --key server.key \\\n      \
        --peer CLIENT_PUBKEY=10.0.0.2/32,fd00::2/128 --address 10.0.0.1/24 --address fd00::1/64\n  \
        sudo step04-crypto client --server 192.0.2.1:51820 --key client.key \\\n      \
        --server-key SERVER_PUBKEY --address 10.0.0.2/24 --address fd00::2/64\n\n\
        `kill -USR1 PID` logs each peer's endpoint, last handshake, traffic and drops."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a new private key (base64), in a new file only its owner can
    /// read (--out FILE), or on standard output.
    #[command(after_help = "Examples:\n  \
        step04-crypto genkey --out client.key\n  \
        (umask 077; step04-crypto genkey > client.key)\n\n\
        A file the shell opens for `> FILE` gets the mode the umask allows (usually 644) \
        before the key exists; genkey makes it 600 and warns. With --out, or umask 077, \
        the key is never in a file others could open.")]
    Genkey(GenkeyArgs),
    /// Read a private key on stdin, print its public key.
    #[command(after_help = "Example:\n  step04-crypto pubkey < client.key")]
    Pubkey,
    /// Accept clients whose public keys are listed.
    #[command(after_help = "Example (as root):\n  \
        step04-crypto server --listen 0.0.0.0:51820 --key server.key \\\n    \
        --peer CLIENT1_PUBKEY=10.0.0.2/32,fd00::2/128 --peer CLIENT2_PUBKEY=10.0.0.3/32 \\\n    \
        --address 10.0.0.1/24 --address fd00::1/64")]
    Server(ServerArgs),
    /// Connect to a server whose public key you know.
    #[command(after_help = "Example (as root):\n  \
        step04-crypto client --server 192.0.2.1:51820 --key client.key --server-key SERVER_PUBKEY \\\n    \
        --address 10.0.0.2/24 --address fd00::2/64 --keepalive 25")]
    Client(ClientArgs),
}

/// The command line, for man pages and shell completions (`tunlab
/// completions`).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
