//! The command line of `step07-wireguard`, which `main.rs` parses and
//! [`command`] gives to `tunlab completions`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A WireGuard interface in user space: creates the TUN device IFNAME and
/// serves WireGuard's configuration protocol on
/// /var/run/wireguard/IFNAME.sock, so `wg` configures it as it configures
/// wireguard-go and boringtun.
#[derive(Debug, Parser)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Examples (as root):\n  \
        step07-wireguard wg0\n  \
        wg setconf wg0 wg0.conf        # or: wg set wg0 private-key ./key peer ...\n  \
        ip address add 10.0.0.1/24 dev wg0 && ip link set wg0 up\n  \
        wg show wg0\n  \
        step07-wireguard up wg0.conf   # the part of wg-quick a student needs\n  \
        step07-wireguard down wg0.conf\n\n\
        `kill -USR1 PID` logs each peer's endpoint, last handshake, traffic and drops."
)]
pub struct Cli {
    /// Stay in the foreground (and log to stderr) instead of going to the
    /// background once the interface is ready.
    #[arg(short, long)]
    pub foreground: bool,
    /// Record every packet read from and written to the TUN device in
    /// FILE (pcap, LINKTYPE_RAW).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Append each handshake's keys to FILE, for Wireshark's WireGuard
    /// key log (wg.keylog_file): created mode 600, never through a
    /// symlink. For test sessions only: FILE decrypts them.
    #[arg(long, value_name = "FILE")]
    pub keylog: Option<PathBuf>,
    /// Log more: -v shows every packet, -vv everything.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Take a wg-quick configuration on stdin, configure the interface
    /// and the host from it, say `ready` on stdout (what `up` does).
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
    /// Bring up the interface a wg-quick configuration file describes
    /// (Address, ListenPort, PrivateKey, MTU, DNS, peers, and routes for
    /// AllowedIPs, through step 05's planner and journal).
    #[command(after_help = "Example (as root):\n  step07-wireguard up /etc/wireguard/wg0.conf")]
    Up {
        /// The configuration file (mode 600: it holds the private key).
        #[arg(value_name = "FILE.conf")]
        config: PathBuf,
    },
    /// Take it down again and put the host back as it was, even after the
    /// interface's process was killed.
    #[command(after_help = "Example (as root):\n  step07-wireguard down /etc/wireguard/wg0.conf")]
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
