//! The command line: step 01's own ([`Cli`], which `main.rs` parses and
//! [`command`] gives to `tunlab completions`), and what the command lines
//! of the steps share: the logging flags, and parsers for their values.
//!
//! Interface addresses are [`ipnet`]'s types: an [`Ipv4Net`] keeps the
//! address as given (`10.0.0.1/24` is the address 10.0.0.1 on the network
//! 10.0.0.0/24) and knows its network, broadcast address and netmask. Its
//! own parser says only "invalid IP address syntax"; [`ipv4_net`] says what
//! is wrong and what is expected, for clap to print.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, Parser};
use ipnet::Ipv4Net;

/// The environment variable that turns on timestamps, as `--timestamps`
/// does, for programs started by scripts.
pub const TIMESTAMPS_ENV: &str = "TUNLAB_TIMESTAMPS";

// ANCHOR: log_args
/// How much to log, and how: the same flags for every step.
#[derive(Debug, Clone, Default, Args)]
pub struct LogArgs {
    /// Log more: -v shows every packet (or stream), -vv everything.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log only warnings and errors. The counters are still printed on exit.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Start each log line with the time in seconds since 1970, to the
    /// microsecond, as `tcpdump -tt` and `tshark -t e` print it, so the log
    /// lines up with a capture. TUNLAB_TIMESTAMPS=1 does the same.
    #[arg(long)]
    pub timestamps: bool,
}
// ANCHOR_END: log_args

impl LogArgs {
    /// Sets up logging as these flags say (see [`crate::host::init_logging`]).
    pub fn init(&self) {
        let timestamps =
            self.timestamps || std::env::var_os(TIMESTAMPS_ENV).is_some_and(|v| v != "0" && !v.is_empty());
        crate::host::init_logging_with(self.level(), timestamps);
    }

    /// The level the flags ask for: warnings with -q, info by default,
    /// debug with -v, everything with -vv.
    pub fn level(&self) -> log::LevelFilter {
        match (self.quiet, self.verbose) {
            (true, _) => log::LevelFilter::Warn,
            (false, 0) => log::LevelFilter::Info,
            (false, 1) => log::LevelFilter::Debug,
            (false, _) => log::LevelFilter::Trace,
        }
    }
}

/// Parses `ADDRESS/PREFIX`, such as `10.0.0.1/24`, for clap's
/// `value_parser`. The error names the value and what is wrong with it.
pub fn ipv4_net(s: &str) -> Result<Ipv4Net, String> {
    let err = |why: &str| format!("`{s}` is not an IPv4 ADDRESS/PREFIX such as 10.0.0.1/24: {why}");
    let (address, prefix) = s.split_once('/').ok_or_else(|| err("the /PREFIX is missing"))?;
    let address: Ipv4Addr = address.parse().map_err(|_| err("bad address"))?;
    let prefix_len: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
    Ipv4Net::new(address, prefix_len).map_err(|_| err("the prefix length is at most 32"))
}

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
pub struct Cli {
    /// Name of the TUN device to create.
    #[arg(long, default_value = "tun0", value_name = "NAME", value_parser = crate::ifname::parse)]
    pub tun: String,
    /// Address and prefix length of the device.
    #[arg(long, default_value = "10.0.0.1/24", value_name = "CIDR", value_parser = ipv4_net)]
    pub address: Ipv4Net,
    /// MTU of the device.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u16).range(68..))]
    pub mtu: u16,
    /// Record every packet read from and written to the device in FILE
    /// (pcap, LINKTYPE_RAW).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The command line, for man pages and shell completions (`tunlab
/// completions`).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    #[test]
    fn log_flags() {
        let level = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.log.level());
        assert_eq!(level(&["x"]).unwrap(), log::LevelFilter::Info);
        assert_eq!(level(&["x", "-q"]).unwrap(), log::LevelFilter::Warn);
        assert_eq!(level(&["x", "-v"]).unwrap(), log::LevelFilter::Debug);
        assert_eq!(level(&["x", "-vv"]).unwrap(), log::LevelFilter::Trace);
        assert!(level(&["x", "-q", "-v"]).is_err(), "-q and -v conflict");
        let cli = Cli::try_parse_from(["x", "--timestamps"]).unwrap();
        assert!(cli.log.timestamps);
    }

    #[test]
    fn parse_and_derive() {
        let c = ipv4_net("10.0.0.1/24").unwrap();
        assert_eq!(c.addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(c.prefix_len(), 24);
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.network(), Ipv4Addr::new(10, 0, 0, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 0, 0, 255));
        assert!(c.contains(&Ipv4Addr::new(10, 0, 0, 200)));
        assert!(!c.contains(&Ipv4Addr::new(10, 0, 1, 2)));
        assert_eq!(c.to_string(), "10.0.0.1/24");
    }

    #[test]
    fn edge_prefixes() {
        let all = ipv4_net("10.1.2.3/0").unwrap();
        assert_eq!(all.netmask(), Ipv4Addr::UNSPECIFIED);
        assert!(all.contains(&Ipv4Addr::new(192, 0, 2, 1)));
        let host = ipv4_net("10.1.2.3/32").unwrap();
        assert_eq!(host.network(), host.broadcast());
        assert!(!host.contains(&Ipv4Addr::new(10, 1, 2, 4)));
    }

    #[test]
    fn rejects_bad_input_saying_why() {
        for (bad, why) in [
            ("10.0.0.1", "the /PREFIX is missing"),
            ("10.0.0.1/33", "the prefix length is at most 32"),
            ("10.0.0/24", "bad address"),
            ("fd00::1/64", "bad address"),
            ("10.0.0.1/x", "bad prefix length"),
            ("", "the /PREFIX is missing"),
        ] {
            let err = ipv4_net(bad).unwrap_err();
            assert_eq!(
                err,
                format!("`{bad}` is not an IPv4 ADDRESS/PREFIX such as 10.0.0.1/24: {why}")
            );
        }
    }
}
