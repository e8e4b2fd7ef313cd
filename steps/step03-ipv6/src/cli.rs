//! The command line of `step03-ipv6` ([`Cli`], which `main.rs` parses and
//! [`command`] gives to `tunlab completions`), and parsers for the values
//! step 03 adds: addresses of either family.

use std::net::Ipv6Addr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::{IpNet, Ipv6Net};
use std::net::SocketAddr;
use std::path::PathBuf;
use step01_ping_tun::cli::ipv4_net;

/// Parses `ADDRESS/PREFIX` of either family, such as `10.0.0.1/24` or
/// `fd00::1/64`, for clap's `value_parser`. The address is kept as given:
/// `fd00::1/64` is the address fd00::1 on the prefix fd00::/64. The error
/// names the value and what is wrong with it.
pub fn ip_net(s: &str) -> Result<IpNet, String> {
    if !s.contains(':') {
        return ipv4_net(s).map(IpNet::V4);
    }
    let err = |why: &str| format!("`{s}` is not an ADDRESS/PREFIX such as 10.0.0.1/24 or fd00::1/64: {why}");
    let (address, prefix) = s.split_once('/').ok_or_else(|| err("the /PREFIX is missing"))?;
    let address: Ipv6Addr = address.parse().map_err(|_| err("bad IPv6 address"))?;
    let prefix_len: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
    Ipv6Net::new(address, prefix_len)
        .map(IpNet::V6)
        .map_err(|_| err("the prefix length is at most 128"))
}

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
pub struct DeviceArgs {
    /// Name of the TUN device to create.
    #[arg(long, default_value = "tun0", value_name = "NAME", value_parser = step01_ping_tun::ifname::parse)]
    pub tun: String,
    /// An address of the device, with its prefix length; give one IPv4
    /// and any number of IPv6 addresses.
    #[arg(long = "address", value_name = "CIDR", required = true, value_parser = ip_net)]
    pub addresses: Vec<IpNet>,
    /// Record every packet read from and written to the device in FILE
    /// (pcap, LINKTYPE_RAW).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// The device's MTU [default: 1500 for respond; for the tunnel, what
    /// the underlay leaves room for].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(1280..))]
    pub mtu: Option<u16>,
    #[command(flatten)]
    pub log: step01_ping_tun::cli::LogArgs,
}

#[derive(Debug, Args)]
pub struct TunnelArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    /// The underlay transport.
    #[arg(long, value_enum, default_value_t = TransportArg::Udp)]
    pub transport: TransportArg,
    /// MTU of the underlay path: the tunnel carries inner packets of this
    /// less the outer IP and UDP headers and ours. At least 576, the
    /// datagram every IPv4 host must take (RFC 791).
    #[arg(long, default_value_t = 1500, value_name = "BYTES",
          value_parser = clap::value_parser!(u16).range(576..))]
    pub underlay_mtu: u16,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TransportArg {
    Udp,
    Tcp,
}

/// The command line, for man pages and shell completions (`tunlab
/// completions`).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_both_families() {
        let v6 = ip_net("fd00::1/64").unwrap();
        let IpNet::V6(c) = v6 else { panic!() };
        assert_eq!(c.addr(), "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert!(c.contains(&"fd00::2".parse::<Ipv6Addr>().unwrap()));
        assert!(!c.contains(&"fd00:0:0:1::2".parse::<Ipv6Addr>().unwrap()));
        assert_eq!(c.network().to_string(), "fd00::");
        assert_eq!(v6.to_string(), "fd00::1/64");
        assert_eq!(ip_net("10.0.0.1/24").unwrap().to_string(), "10.0.0.1/24");
        let all = Ipv6Net::new(Ipv6Addr::LOCALHOST, 0).unwrap();
        assert!(all.contains(&"2001:db8::1".parse::<Ipv6Addr>().unwrap()));
    }

    #[test]
    fn rejects_bad_input_saying_why() {
        for (bad, why) in [
            ("fd00::1", "the /PREFIX is missing"),
            ("fd00::1/129", "the prefix length is at most 128"),
            ("fd00::g/64", "bad IPv6 address"),
            ("fd00::1/x", "bad prefix length"),
        ] {
            assert_eq!(
                ip_net(bad).unwrap_err(),
                format!("`{bad}` is not an ADDRESS/PREFIX such as 10.0.0.1/24 or fd00::1/64: {why}")
            );
        }
        assert!(ip_net("10.0.0.1/33").unwrap_err().contains("at most 32"));
    }
}
