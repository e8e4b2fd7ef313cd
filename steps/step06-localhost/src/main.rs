//! `step06-localhost`: expose a local TCP (and UDP) service through a
//! server, over one encrypted, multiplexed control connection.

#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser};
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
use step06_localhost::policy::{FIRST_UNPRIVILEGED, PeerSpec, PortRules, VisitorLimits};
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
