//! `step08-fast-path`: step 07's WireGuard interface with the fast path:
//! batched system calls, offloads and one worker per core.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use step01_ping_tun::host::{self, Shutdown};
use step07_wireguard::quick;
use step07_wireguard::run::socket_path;
use step08_fast_path::DAEMON_ENV;
use step08_fast_path::cli::{Cli, Command};
use step08_fast_path::run::{Options, serve};
use step08_fast_path::udp::Features;

const PROGRAM: &str = "step08-fast-path";

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
