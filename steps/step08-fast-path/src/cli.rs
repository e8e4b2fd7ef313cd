//! The command line of `step08-fast-path`, which `main.rs` parses and
//! [`command`] gives to `tunlab completions`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A WireGuard interface in user space, as step 07's (configured by `wg`
/// over /var/run/wireguard/IFNAME.sock), with the fast path: many packets
/// per system call, TUN and UDP offloads, a worker per core. Each
/// technique can be turned off, to see what it brings.
#[derive(Debug, Parser)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Examples (as root):\n  \
        step08-fast-path wg0                      # every technique on\n  \
        step08-fast-path wg0 --threads 1 --no-offload --no-gso --no-gro --no-mmsg\n  \
        wg setconf wg0 wg0.conf\n  \
        ip address add 10.0.0.1/24 dev wg0 && ip link set wg0 up\n  \
        step08-fast-path up wg0.conf             # as step 07's up\n\n\
        `kill -USR1 PID` logs each peer, and the fast path's counters: system calls,\n\
        wake-ups, super-packets, GSO and GRO messages."
)]
pub struct Cli {
    /// Stay in the foreground (and log to stderr) instead of going to the
    /// background once the interface is ready.
    #[arg(short, long)]
    pub foreground: bool,
    /// Workers (threads), each with a TUN queue and a UDP socket per
    /// family [default: the number of CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: Option<u16>,
    /// No UDP GSO: one datagram per message sent.
    #[arg(long)]
    pub no_gso: bool,
    /// No UDP GRO: one datagram per message received.
    #[arg(long)]
    pub no_gro: bool,
    /// No recvmmsg/sendmmsg: one message per system call on the sockets.
    #[arg(long)]
    pub no_mmsg: bool,
    /// No virtio-net header on the TUN device: one packet per read and per
    /// write, no TCP super-packets.
    #[arg(long)]
    pub no_offload: bool,
    /// Record every packet read from and written to the TUN device in
    /// FILE (pcap, LINKTYPE_RAW). Slows every worker down.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Append each handshake's keys to FILE, for Wireshark's WireGuard
    /// key log (wg.keylog_file), as step 07 does: created mode 600, never
    /// through a symlink. For test sessions only: FILE decrypts them.
    #[arg(long, value_name = "FILE")]
    pub keylog: Option<PathBuf>,
    /// Log more: -v shows every packet, -vv everything.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[arg(long, hide = true)]
    pub from_stdin: bool,
    /// The interface (and TUN device) name, e.g. wg0.
    #[arg(value_name = "IFNAME")]
    pub ifname: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring up the interface a wg-quick configuration file describes, as
    /// step 07's `up` (with every technique on).
    #[command(after_help = "Example (as root):\n  step08-fast-path up /etc/wireguard/wg0.conf")]
    Up {
        #[arg(value_name = "FILE.conf")]
        config: PathBuf,
    },
    /// Take it down again and put the host back as it was.
    #[command(after_help = "Example (as root):\n  step08-fast-path down /etc/wireguard/wg0.conf")]
    Down {
        #[arg(value_name = "FILE.conf")]
        config: PathBuf,
    },
}

/// The command line, for man pages and shell completions (`tunlab
/// completions`).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
