//! `step03-ipv6`: the ping responder and the tunnel of steps 01 and 02, for
//! IPv4 and IPv6 inside and outside, with MSS clamping and path MTU errors.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use step01_ping_tun::host::{self, Shutdown};
use step01_ping_tun::pcap::Recorder;
use step02_plain_tunnel::mtu::{Transport, tun_mtu};
use step02_plain_tunnel::run::{Config, Core, Endpoint, resolve, run_device, step02_tunnel};
use step03_ipv6::cli::ip_net;
use step03_ipv6::device::create_tun;
use step03_ipv6::hook::PathPolicy;
use step03_ipv6::respond::DualResponder;

/// IPv4 and IPv6, inside the tunnel and outside it.
///
/// `respond` answers ping and ping -6 on a TUN device (step 01, both
/// families). `server` and `client` are the tunnel of step 02, dual-stack
/// inside, over an IPv4 or IPv6 underlay, and keep packets within the
/// tunnel's MTU: TCP SYNs get their MSS clamped, and larger packets get the
/// ICMP error that tells their sender to send smaller ones.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples (as root):\n  \
        step03-ipv6 respond --address 10.0.0.1/24 --address fd00::1/64 -v\n      \
        then ping 10.0.0.2 and ping -6 fd00::2 from another terminal\n  \
        step03-ipv6 server --listen [::]:51820 --address 10.0.0.1/24 --address fd00::1/64\n  \
        step03-ipv6 client --server [2001:db8::1]:51820 --address 10.0.0.2/24 --address fd00::2/64\n  \
        step03-ipv6 client --server 192.0.2.1:51820 --address 10.0.0.2/24 --address fd00::2/64 \\\n      \
        --underlay-mtu 1400 --mtu 1500     # a path smaller than the device: clamp and answer\n\n\
        `step03-ipv6 <COMMAND> --help` explains each command. SIGUSR1 prints a tunnel's counters."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer ping and ping -6 for the addresses of the device's prefixes.
    #[command(after_help = "Example (as root):\n  \
        step03-ipv6 respond --address 10.0.0.1/24 --address fd00::1/64 -v\n  \
        ping -c 3 10.0.0.2; ping -6 -c 3 fd00::2     # answered by the program\n  \
        ping -6 -c 3 fd00::1                          # answered by the kernel")]
    Respond {
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Wait for a client, on IPv4 and IPv6 alike with --listen [::]:PORT.
    #[command(after_help = "Example (as root):\n  \
        step03-ipv6 server --listen [::]:51820 --address 10.0.0.1/24 --address fd00::1/64")]
    Server {
        /// Where to listen; [::]:PORT takes both families.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: SocketAddr,
        #[command(flatten)]
        tunnel: TunnelArgs,
    },
    /// Connect to a server, over IPv4 or IPv6.
    #[command(after_help = "Example (as root):\n  \
        step03-ipv6 client --server [2001:db8::1]:51820 --address 10.0.0.2/24 --address fd00::2/64\n  \
        ping -6 fd00::1; curl http://[fd00::1]:8000/")]
    Client {
        /// The server: 192.0.2.1:51820, [2001:db8::1]:51820, or a name.
        #[arg(long, value_name = "HOST:PORT")]
        server: String,
        /// Send a keepalive after this many seconds without sending.
        #[arg(long, value_name = "SECS")]
        keepalive: Option<u64>,
        #[command(flatten)]
        tunnel: TunnelArgs,
    },
}

#[derive(Debug, Args)]
struct DeviceArgs {
    /// Name of the TUN device to create.
    #[arg(long, default_value = "tun0", value_name = "NAME", value_parser = step01_ping_tun::ifname::parse)]
    tun: String,
    /// An address of the device, with its prefix length; give one IPv4
    /// and any number of IPv6 addresses.
    #[arg(long = "address", value_name = "CIDR", required = true, value_parser = ip_net)]
    addresses: Vec<IpNet>,
    /// Record every packet read from and written to the device in FILE
    /// (pcap, LINKTYPE_RAW).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// The device's MTU [default: 1500 for respond; for the tunnel, what
    /// the underlay leaves room for].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(1280..))]
    mtu: Option<u16>,
    #[command(flatten)]
    log: step01_ping_tun::cli::LogArgs,
}

#[derive(Debug, Args)]
struct TunnelArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// The underlay transport.
    #[arg(long, value_enum, default_value_t = TransportArg::Udp)]
    transport: TransportArg,
    /// MTU of the underlay path: the tunnel carries inner packets of this
    /// less the outer IP and UDP headers and ours. At least 576, the
    /// datagram every IPv4 host must take (RFC 791).
    #[arg(long, default_value_t = 1500, value_name = "BYTES",
          value_parser = clap::value_parser!(u16).range(576..))]
    underlay_mtu: u16,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TransportArg {
    Udp,
    Tcp,
}

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
