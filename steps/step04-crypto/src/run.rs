//! The I/O shell of step 04: the core plugged into step 02's loops, the
//! MTU arithmetic, a key log for decrypting captures, and
//! [`tunnel_end`], which runs one end of the tunnel and which later steps
//! call with their own host changes.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use ipnet::IpNet;
use step01_ping_tun::host::{self, Shutdown};
use step02_plain_tunnel::mtu::Transport;
use step02_plain_tunnel::run::{Config, Core, Endpoint, Outgoing, run_device};
use step02_plain_tunnel::{Action, Transmit};
use step03_ipv6::device::create_tun;
use step03_ipv6::hook::{PathEvent, PathPolicy};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::PeerConfig;
use crate::cli::Common;
use crate::entropy::{Entropy, OsEntropy};
use crate::keyfile;
use crate::keys::{self, KEY_TEXT_LEN, Short};
use crate::tunnel::{DropReason, MAX_OVERHEAD, Tunnel};
use crate::wire::{DATA_OVERHEAD, MessageSummary};

// ANCHOR: core
impl Core for Tunnel {
    type Drop = DropReason;

    fn encapsulate(
        &mut self,
        packet: &mut [u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Outgoing, DropReason> {
        let sent = Tunnel::encapsulate(self, packet, now, out)?;
        Ok(sent.map_or(Outgoing::Held, Outgoing::Send))
    }

    fn decapsulate(
        &mut self,
        from: SocketAddr,
        message: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Action, DropReason> {
        Tunnel::decapsulate(self, from, message, now, out)
    }

    fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        Tunnel::poll(self, now, out)
    }

    fn max_message(&self) -> usize {
        self.mtu() + MAX_OVERHEAD
    }

    fn status(&self) -> String {
        self.status(Instant::now()).join("\n")
    }

    fn summary(message: &[u8]) -> String {
        MessageSummary(message).to_string()
    }
}
// ANCHOR_END: core

// ANCHOR: tun_mtu
/// The TUN MTU for an underlay path of `underlay_mtu` bytes to `peer`: the
/// outer IP and UDP headers and our 32 bytes (16 of header, 16 of tag)
/// must fit, and the result is rounded down to a multiple of 16. The
/// rounding is for the padding: the other end pads each packet to a
/// multiple of 16 within *its own* MTU, which may be larger than ours, so a
/// packet as large as our MTU must not grow when padded. 1500 gives 1440
/// over IPv4 and 1408 over IPv6; a 1400-byte path over IPv4 gives 1328.
pub fn tun_mtu(underlay_mtu: u16, peer: SocketAddr) -> u16 {
    let ip_header = if peer.is_ipv4() { 20 } else { 40 };
    let room = underlay_mtu.saturating_sub(ip_header + 8 + DATA_OVERHEAD as u16);
    room / 16 * 16
}
// ANCHOR_END: tun_mtu

/// What a later step needs to change the host once the TUN device is up.
pub struct Started<'a> {
    pub tun: &'a str,
    pub mtu: u16,
    pub endpoint: &'a Endpoint,
    pub addresses: &'a [IpNet],
}

// ANCHOR: tunnel_end
/// Runs one end of the tunnel until SIGINT or SIGTERM. `setup` runs once
/// the TUN device is up, before any traffic; what it returns is dropped
/// when the tunnel stops (on an error or a panic too), which is where a
/// later step puts the host back as it was.
pub fn tunnel_end<G>(
    program: &str,
    common: &Common,
    peers: Vec<PeerConfig>,
    endpoint: Endpoint,
    setup: impl FnOnce(&Started<'_>) -> anyhow::Result<G>,
) -> anyhow::Result<ExitCode> {
    common.log.init();
    // Check everything that needs no privileges first.
    let secret = keyfile::read_key_file(&common.key)?;
    let keylog = match common.keylog.as_deref() {
        Some(path) => Some((path, KeylogEntropy::create(path)?)),
        None => None,
    };
    if !host::has_net_admin() {
        let what = format!("creating TUN device {}", common.tun);
        eprintln!("{program}: {}", host::needs_net_admin_message(&what));
        return Ok(ExitCode::from(host::EXIT_NO_PERMISSION as u8));
    }
    let config = Config {
        endpoint,
        tun: common.tun.clone(),
        transport: Transport::Udp,
        keepalive: None,
        pcap: common.pcap.clone(),
        underlay_mtu: common.underlay_mtu,
    };
    let mtu = tun_mtu(common.underlay_mtu, config.underlay_family_hint());
    if mtu < 1280 && common.addresses.iter().any(|a| matches!(a, IpNet::V6(_))) {
        bail!(
            "an underlay MTU of {} leaves {mtu} for the tunnel; IPv6 needs 1280",
            common.underlay_mtu
        );
    }
    let entropy: Box<dyn Entropy> = match keylog {
        Some((path, keylog)) => {
            log::warn!(
                "writing ephemeral keys to {}: this session can be decrypted",
                path.display()
            );
            Box::new(keylog)
        }
        None => Box::new(OsEntropy),
    };
    let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut tunnel = Tunnel::new(secret, usize::from(mtu), entropy, Instant::now(), unix_now);
    log::info!("our public key is {}", keys::public_to_string(tunnel.public()));
    for peer in peers {
        log::info!(
            "peer {} may use {}",
            Short(&peer.public),
            peer.allowed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        tunnel.add_peer(peer);
    }
    let shutdown = Shutdown::install()?;
    let device = create_tun(&common.tun, &common.addresses, mtu)?;
    log::info!("{} is up (MTU {mtu})", common.tun);
    let v4 = common.addresses.iter().find_map(|a| match a.addr() {
        std::net::IpAddr::V4(ip) => Some(ip),
        std::net::IpAddr::V6(_) => None,
    });
    let v6 = common.addresses.iter().find_map(|a| match a.addr() {
        std::net::IpAddr::V6(ip) => Some(ip),
        std::net::IpAddr::V4(_) => None,
    });
    let guard = setup(&Started {
        tun: &common.tun,
        mtu,
        endpoint: &config.endpoint,
        addresses: &common.addresses,
    })?;
    let policy = PathPolicy::new(tunnel, mtu, v4, v6);
    let result = run_device(device, &config, policy, &shutdown, |policy| {
        let counts = policy.counts();
        let path = (counts.get(PathEvent::Clamped), counts.get(PathEvent::TooBig));
        (policy.core().status(Instant::now()), path)
    });
    drop(guard);
    let (status, (clamped, too_big)) = result?;
    for line in status {
        println!("{}: {line}", common.tun);
    }
    println!(
        "{}: clamped {clamped} TCP MSS, sent {too_big} too-big errors",
        common.tun
    );
    Ok(ExitCode::SUCCESS)
}
// ANCHOR_END: tunnel_end

/// Randomness from the kernel, with each ephemeral private key also
/// written to a key log, so a capture of the session can be decrypted
/// later (as Wireshark does with WireGuard's key logs). For test
/// sessions only: whoever has the log can read the traffic.
pub struct KeylogEntropy {
    file: File,
}

impl KeylogEntropy {
    /// Creates (or appends to) the key log at `path`: created with mode
    /// 0600, and an existing file only if it is ours and closed to others
    /// (see [`keyfile::open_key_log`]).
    pub fn create(path: &Path) -> Result<Self, keyfile::Error> {
        Ok(Self {
            file: keyfile::open_key_log(path)?,
        })
    }
}

/// What a key log line starts with, as in Wireshark's WireGuard key logs.
const KEYLOG_PREFIX: &str = "LOCAL_EPHEMERAL_PRIVATE_KEY = ";

impl Entropy for KeylogEntropy {
    fn ephemeral(&mut self) -> StaticSecret {
        let secret = OsEntropy.ephemeral();
        let mut line = Zeroizing::new(String::with_capacity(KEYLOG_PREFIX.len() + KEY_TEXT_LEN + 1));
        line.push_str(KEYLOG_PREFIX);
        line.push_str(&keys::encode_secret(&secret));
        line.push('\n');
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            log::warn!("writing the key log failed: {e}");
        }
        secret
    }

    fn index(&mut self) -> u32 {
        OsEntropy.index()
    }
}

/// The ephemeral private keys in a key log, in order. Leading spaces are
/// ignored, as Wireshark ignores them (step 07's key log indents its
/// lines under a heading, as wireguard-tools' extract-handshakes does).
pub fn read_keylog(text: &str) -> Vec<[u8; 32]> {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix(KEYLOG_PREFIX))
        .filter_map(|key| keys::decode(key).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_arithmetic() {
        assert_eq!(tun_mtu(1500, "192.0.2.1:51820".parse().unwrap()), 1440);
        assert_eq!(tun_mtu(1500, "[2001:db8::1]:51820".parse().unwrap()), 1408);
        assert_eq!(tun_mtu(1400, "192.0.2.1:51820".parse().unwrap()), 1328);
        assert_eq!(tun_mtu(20, "192.0.2.1:1".parse().unwrap()), 0);
    }

    #[test]
    fn keylog_lines_parse_back() {
        let key = [7u8; 32];
        let text = format!("# test\n{KEYLOG_PREFIX}{}\nother\n", keys::encode(&key));
        assert_eq!(read_keylog(&text), vec![key]);
    }
}
