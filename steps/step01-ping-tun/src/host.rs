//! What the program needs from the host: privileges, the TUN device, and a
//! way to be told to stop.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};
use tun_rs::{DeviceBuilder, InterruptEvent, SyncDevice};

use ipnet::Ipv4Net;

/// The exit code of a program that lacks a privilege (`EX_NOPERM` of
/// sysexits.h), so scripts can tell it from other failures.
pub const EXIT_NO_PERMISSION: i32 = 77;

/// CAP_NET_ADMIN is capability number 12 (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// True when this process holds CAP_NET_ADMIN in its effective set, read
/// from the `CapEff:` line of /proc/self/status.
pub fn has_net_admin() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// The one line to print when CAP_NET_ADMIN is missing: what needs it and
/// the exact command to run instead (this same command line, under sudo).
pub fn needs_net_admin_message(what: &str) -> String {
    let command: Vec<String> = std::env::args_os()
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect();
    format!(
        "{what} needs CAP_NET_ADMIN; run it as root: sudo {}",
        command.join(" ")
    )
}

/// Quotes `s` for a POSIX shell when it holds anything but safe characters.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Logs one line per event to stderr: `INFO  message`. `verbose` 0 shows
/// info and above, 1 debug (every packet), 2 and more trace. `RUST_LOG`
/// overrides it. The command lines use [`crate::cli::LogArgs`], which adds
/// `-q` and timestamps.
pub fn init_logging(verbose: u8) {
    crate::cli::LogArgs {
        verbose,
        ..Default::default()
    }
    .init();
}

/// Logs one line per event to stderr at `level` and above (`RUST_LOG`
/// overrides it): `INFO  message`, or with `timestamps`
/// `1733312345.123456 INFO  message`, the time as `tcpdump -tt` prints it.
pub fn init_logging_with(level: log::LevelFilter, timestamps: bool) {
    use std::io::Write;
    use std::time::{SystemTime, UNIX_EPOCH};
    env_logger::Builder::new()
        .filter_level(level)
        .parse_default_env()
        .format(move |buf, record| {
            if timestamps {
                let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                write!(buf, "{}.{:06} ", t.as_secs(), t.subsec_micros())?;
            }
            writeln!(buf, "{:<5} {}", record.level(), record.args())
        })
        .init();
}

// ANCHOR: create_tun
/// Creates the TUN device `name` with `address`, sets its MTU and brings it
/// up. The kernel adds the route to the subnet (10.0.0.0/24 for
/// 10.0.0.1/24) through the device, so every other address of the subnet
/// now leads to this program. The device lives as long as the returned
/// handle: when the program exits, however it exits, the kernel removes it.
pub fn create_tun(name: &str, address: Ipv4Net, mtu: u16) -> anyhow::Result<SyncDevice> {
    crate::ifname::check(name)?;
    DeviceBuilder::new()
        .name(name)
        .ipv4(address.addr(), address.prefix_len(), None)
        .mtu(mtu)
        .build_sync()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => anyhow::Error::new(e)
                .context("/dev/net/tun is missing: load the tun module with `modprobe tun`"),
            _ => anyhow::Error::new(e),
        })
        .with_context(|| format!("creating TUN device {name} with address {address} and MTU {mtu}"))
}
// ANCHOR_END: create_tun

// ANCHOR: shutdown
/// Turns SIGINT (Ctrl-C) and SIGTERM into a clean stop: a thread waits for
/// the signals and wakes the blocked `recv_intr` on the TUN device through
/// an [`InterruptEvent`], so the main loop returns, the program prints its
/// counters and drops the device.
pub struct Shutdown {
    event: Arc<InterruptEvent>,
    requested: Arc<AtomicBool>,
}

impl Shutdown {
    pub fn install() -> anyhow::Result<Self> {
        let event = Arc::new(InterruptEvent::new().context("creating the interrupt event")?);
        let requested = Arc::new(AtomicBool::new(false));
        let mut signals =
            signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
        let (ev, req) = (Arc::clone(&event), Arc::clone(&requested));
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    log::info!(
                        "got {}, stopping",
                        if signal == SIGINT { "SIGINT" } else { "SIGTERM" }
                    );
                    req.store(true, Ordering::SeqCst);
                    if let Err(e) = ev.trigger() {
                        log::error!("cannot wake the main loop: {e}");
                    }
                }
            })
            .context("starting the signal thread")?;
        Ok(Self { event, requested })
    }

    /// The event to pass to `recv_intr`.
    pub fn event(&self) -> &InterruptEvent {
        &self.event
    }

    /// True once SIGINT or SIGTERM has arrived.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}
// ANCHOR_END: shutdown

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("--tun"), "--tun");
        assert_eq!(shell_quote("10.0.0.1/24"), "10.0.0.1/24");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
