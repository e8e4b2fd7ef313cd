//! `step03-ipv6`: the ping responder and the tunnel of steps 01 and 02, for
//! IPv4 and IPv6 inside and outside, with MSS clamping and path MTU errors.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ipnet::IpNet;
use step01_ping_tun::host::{self, Shutdown};
use step01_ping_tun::pcap::Recorder;
use step02_plain_tunnel::mtu::{Transport, tun_mtu};
use step02_plain_tunnel::run::{Config, Core, Endpoint, resolve, run_device, step02_tunnel};
use step03_ipv6::cli::{Cli, Command, DeviceArgs, TransportArg, TunnelArgs};
use step03_ipv6::device::create_tun;
use step03_ipv6::hook::PathPolicy;
use step03_ipv6::respond::DualResponder;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let device = match &cli.command {
        Command::Respond { device } => device,
        Command::Server { tunnel, .. } | Command::Client { tunnel, .. } => &tunnel.device,
    };
    device.log.init();
    if !host::has_net_admin() {
        let what = format!("creating TUN device {}", device.tun);
        eprintln!("step03-ipv6: {}", host::needs_net_admin_message(&what));
        return ExitCode::from(host::EXIT_NO_PERMISSION as u8);
    }
    let result = Shutdown::install().and_then(|shutdown| match cli.command {
        Command::Respond { device } => respond(&device, &shutdown),
        Command::Server { listen, tunnel } => {
            tunnel_end(Endpoint::Server { listen }, None, &tunnel, &shutdown)
        }
        Command::Client {
            server,
            keepalive,
            tunnel,
        } => {
            let server = resolve(&server)?;
            tunnel_end(Endpoint::Client { server }, keepalive, &tunnel, &shutdown)
        }
    });
    match result {
        Ok(counters) => {
            println!("{counters}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("step03-ipv6: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn recorder(device: &DeviceArgs) -> anyhow::Result<Option<Recorder>> {
    device
        .pcap
        .as_ref()
        .map(|path| Recorder::create(path).with_context(|| format!("creating {}", path.display())))
        .transpose()
}

fn listing(addresses: &[IpNet]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `respond`: returns the counters line.
fn respond(args: &DeviceArgs, shutdown: &Shutdown) -> anyhow::Result<String> {
    let mtu = args.mtu.unwrap_or(1500);
    let device = create_tun(&args.tun, &args.addresses, mtu)?;
    let v4 = args.addresses.iter().find_map(|a| match a {
        IpNet::V4(c) => Some(step01_ping_tun::Responder::new(*c)),
        IpNet::V6(_) => None,
    });
    let v6 = args.addresses.iter().find_map(|a| match a {
        IpNet::V6(c) => Some(*c),
        IpNet::V4(_) => None,
    });
    let mut responder = DualResponder::new(v4, v6);
    log::info!(
        "{} is up with {} (MTU {mtu}); answering ping and ping -6",
        args.tun,
        listing(&args.addresses)
    );
    step01_ping_tun::run::serve(&device, &args.tun, recorder(args)?, shutdown, &mut responder)?;
    Ok(format!("{}: {responder}", args.tun))
}

/// `server` and `client`: returns the counters line.
fn tunnel_end(
    endpoint: Endpoint,
    keepalive: Option<u64>,
    args: &TunnelArgs,
    shutdown: &Shutdown,
) -> anyhow::Result<String> {
    let config = Config {
        endpoint,
        tun: args.device.tun.clone(),
        transport: match args.transport {
            TransportArg::Udp => Transport::Udp,
            TransportArg::Tcp => Transport::Tcp,
        },
        keepalive: keepalive.filter(|&s| s > 0).map(Duration::from_secs),
        pcap: args.device.pcap.clone(),
        underlay_mtu: args.underlay_mtu,
    };
    // What the underlay leaves room for; the device may be given a larger
    // MTU, and then the hook answers what does not fit.
    let limit = tun_mtu(args.underlay_mtu, config.underlay_family_hint());
    let mtu = args.device.mtu.unwrap_or(limit);
    let device = create_tun(&args.device.tun, &args.device.addresses, mtu)?;
    let v4 = args.device.addresses.iter().find_map(|a| match a.addr() {
        std::net::IpAddr::V4(ip) => Some(ip),
        std::net::IpAddr::V6(_) => None,
    });
    let v6 = args.device.addresses.iter().find_map(|a| match a.addr() {
        std::net::IpAddr::V6(ip) => Some(ip),
        std::net::IpAddr::V4(_) => None,
    });
    log::info!(
        "{} is up with {} (MTU {mtu}); the tunnel carries packets of up to {limit} bytes",
        args.device.tun,
        listing(&args.device.addresses)
    );
    let tunnel = step02_tunnel(&config, usize::from(mtu));
    let policy = PathPolicy::new(tunnel, limit, v4, v6);
    let counters = run_device(device, &config, policy, shutdown, |policy| {
        format!("{}; {}", policy.core().status(), policy.summary())
    })?;
    Ok(format!("{}: {counters}", args.device.tun))
}
