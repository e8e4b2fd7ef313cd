//! `step08-fast-path`: step 07's WireGuard interface with the fast path:
//! batched system calls, offloads and one worker per core.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use step01_ping_tun::host::{self, Shutdown};
use step07_wireguard::quick;
use step07_wireguard::run::socket_path;
use step08_fast_path::DAEMON_ENV;
use step08_fast_path::run::{Options, serve};
use step08_fast_path::udp::Features;

const PROGRAM: &str = "step08-fast-path";

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
struct Cli {
    /// Stay in the foreground (and log to stderr) instead of going to the
    /// background once the interface is ready.
    #[arg(short, long)]
    foreground: bool,
    /// Workers (threads), each with a TUN queue and a UDP socket per
    /// family [default: the number of CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: Option<u16>,
    /// No UDP GSO: one datagram per message sent.
    #[arg(long)]
    no_gso: bool,
    /// No UDP GRO: one datagram per message received.
    #[arg(long)]
    no_gro: bool,
    /// No recvmmsg/sendmmsg: one message per system call on the sockets.
    #[arg(long)]
    no_mmsg: bool,
    /// No virtio-net header on the TUN device: one packet per read and per
    /// write, no TCP super-packets.
    #[arg(long)]
    no_offload: bool,
    /// Record every packet read from and written to the TUN device in
    /// FILE (pcap, LINKTYPE_RAW). Slows every worker down.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Append each handshake's keys to FILE, for Wireshark's WireGuard
    /// key log (wg.keylog_file), as step 07 does: created mode 600, never
    /// through a symlink. For test sessions only: FILE decrypts them.
    #[arg(long, value_name = "FILE")]
    keylog: Option<PathBuf>,
    /// Log more: -v shows every packet, -vv everything.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    #[arg(long, hide = true)]
    from_stdin: bool,
    /// The interface (and TUN device) name, e.g. wg0.
    #[arg(value_name = "IFNAME")]
    ifname: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (&cli.command, &cli.ifname) {
        (Some(Command::Up { config }), _) => quick::up(PROGRAM, config, cli.verbose),
        (Some(Command::Down { config }), _) => quick::down(PROGRAM, config, cli.verbose),
        (None, Some(ifname)) => interface(&cli, ifname),
        (None, None) => {
            eprintln!(
                "{PROGRAM}: give an interface name (e.g. `{PROGRAM} wg0`), or `up FILE.conf`; see --help"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{PROGRAM}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn interface(cli: &Cli, ifname: &str) -> anyhow::Result<ExitCode> {
    if !host::has_net_admin() {
        let what = format!("creating interface {ifname}");
        eprintln!("{PROGRAM}: {}", host::needs_net_admin_message(&what));
        return Ok(ExitCode::from(host::EXIT_NO_PERMISSION as u8));
    }
    if !cli.foreground && !cli.from_stdin && std::env::var_os(DAEMON_ENV).is_none() {
        return background(ifname);
    }
    if std::env::var_os(DAEMON_ENV).is_some() {
        // The background copy: a session of its own, so the terminal's
        // signals do not reach it.
        let _ = nix::unistd::setsid();
    }
    host::init_logging(cli.verbose);
    let shutdown = Shutdown::install()?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let options = Options {
        ifname: ifname.to_string(),
        pcap: cli.pcap.clone(),
        keylog: cli.keylog.clone(),
        threads: cli.threads.map_or(cpus, usize::from),
        offload: !cli.no_offload,
        features: Features {
            mmsg: !cli.no_mmsg,
            gso: !cli.no_gso,
            gro: !cli.no_gro,
        },
    };
    let daemon = std::env::var_os(DAEMON_ENV).is_some();
    let config = if cli.from_stdin {
        Some(quick::config_from_stdin()?)
    } else {
        None
    };
    let status = serve(
        &options,
        &shutdown,
        |device, net| match &config {
            Some(c) => quick::configure(ifname, c, device, net),
            None => Ok(None),
        },
        || {
            if cli.from_stdin {
                println!("ready");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            }
            if daemon && let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                let _ = nix::unistd::dup2_stdout(&null);
                let _ = nix::unistd::dup2_stderr(&null);
            }
        },
    )?;
    for line in status.lines() {
        log::info!("{ifname}: {line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts a copy of this program in the background (same arguments) and
/// returns once its UAPI socket is there, or with its error if it exits
/// first.
fn background(ifname: &str) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let exe = std::env::current_exe().context("finding this program")?;
    let mut child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(DAEMON_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting the background process")?;
    let path = socket_path(ifname);
    for _ in 0..100 {
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            eprint!("{err}");
            return Ok(ExitCode::from(status.code().unwrap_or(1) as u8));
        }
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!(
        "the background process did not create {} within 5 s",
        path.display()
    )
}
