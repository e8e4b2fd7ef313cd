//! `step06-localhost`: expose a local TCP (and UDP) service through a
//! server, over one encrypted, multiplexed control connection.

#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use step01_ping_tun::cli::LogArgs;
use step04_crypto::cli::{genkey, pubkey};
use step04_crypto::entropy::{Entropy, OsEntropy};
use step04_crypto::keyfile;
use step04_crypto::keys::{self, Short};
use step04_crypto::noise::Identity;
use step04_crypto::run::KeylogEntropy;
use step06_localhost::cli::{Cli, Command};
use step06_localhost::client::{self, ClientConfig, ClientEvent, Stop};
use step06_localhost::l3;
use step06_localhost::secure::ServerKeys;
use step06_localhost::server::{Server, ServerConfig};
use step06_localhost::wire::Protos;

const PROGRAM: &str = "step06-localhost";

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Genkey(args) => genkey(PROGRAM, &args),
        Command::Pubkey => pubkey(),
        Command::L3(cmd) => l3::run(PROGRAM, *cmd),
        Command::Server {
            control,
            key,
            peers,
            public_ip,
            udp_idle_timeout,
            keylog,
            log,
        } => serve(
            control,
            &key,
            &peers,
            public_ip,
            Duration::from_secs(udp_idle_timeout),
            keylog.as_deref(),
            log,
        ),
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

fn serve(
    control: SocketAddr,
    key: &Path,
    peers: &[String],
    public_ip: IpAddr,
    udp_idle_timeout: Duration,
    keylog: Option<&Path>,
    log: LogArgs,
) -> anyhow::Result<ExitCode> {
    log.init();
    let identity = Identity::new(keyfile::read_key_file(key)?);
    let allowed = peers
        .iter()
        .map(|p| keys::parse_public(p).with_context(|| format!("--peer `{p}`")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for p in &allowed {
        log::info!("client {} may connect", Short(p));
    }
    let mut config = ServerConfig::new(control, public_ip, ServerKeys { identity, allowed });
    config.udp.idle_timeout = udp_idle_timeout;
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
