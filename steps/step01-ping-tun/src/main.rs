//! `step01-ping-tun`: create a TUN device and answer the pings routed into it.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use step01_ping_tun::host::{self, Shutdown};
use step01_ping_tun::run::{Config, run};
use step01_ping_tun::{Ipv4Net, cli};

/// Create a TUN device and answer every ping routed into it.
///
/// The device gets ADDRESS; the kernel answers pings to ADDRESS itself, and
/// this program answers pings to every other address of its subnet. All
/// other packets are logged and dropped with a counter by reason; the
/// counters are printed on exit (Ctrl-C or SIGTERM).
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Example (as root):\n  step01-ping-tun --tun tun0 --address 10.0.0.1/24 --pcap tun0.pcap -v\n  ping -c 3 10.0.0.2     # in another terminal: answered by this program\n  ping -c 3 10.0.0.1     # answered by the kernel; nothing crosses the TUN"
)]
struct Args {
    /// Name of the TUN device to create.
    #[arg(long, default_value = "tun0", value_name = "NAME", value_parser = step01_ping_tun::ifname::parse)]
    tun: String,
    /// Address and prefix length of the device.
    #[arg(long, default_value = "10.0.0.1/24", value_name = "CIDR", value_parser = cli::ipv4_net)]
    address: Ipv4Net,
    /// MTU of the device.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u16).range(68..))]
    mtu: u16,
    /// Record every packet read from and written to the device in FILE
    /// (pcap, LINKTYPE_RAW).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    #[command(flatten)]
    log: cli::LogArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init();
    if !host::has_net_admin() {
        eprintln!(
            "step01-ping-tun: {}",
            host::needs_net_admin_message(&format!("creating TUN device {}", args.tun))
        );
        return ExitCode::from(host::EXIT_NO_PERMISSION as u8);
    }
    let config = Config {
        tun: args.tun,
        address: args.address,
        mtu: args.mtu,
        pcap: args.pcap,
    };
    let result = Shutdown::install().and_then(|shutdown| run(&config, &shutdown));
    match result {
        Ok(counters) => {
            println!("{}: {counters}", config.tun);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("step01-ping-tun: {e:#}");
            ExitCode::FAILURE
        }
    }
}
