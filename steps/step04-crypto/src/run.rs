//! What the I/O shell needs from step 04: the core plugged into step 02's
//! loops, the MTU arithmetic, and a key log for decrypting captures.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use step02_plain_tunnel::run::{Core, Outgoing};
use step02_plain_tunnel::{Action, Transmit};
use x25519_dalek::StaticSecret;

use crate::entropy::{Entropy, OsEntropy};
use crate::keys;
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

/// Randomness from the kernel, with each ephemeral private key also
/// written to a key log, so a capture of the session can be decrypted
/// later (as Wireshark does with WireGuard's key logs). For test
/// sessions only: whoever has the log can read the traffic.
pub struct KeylogEntropy {
    file: File,
}

impl KeylogEntropy {
    /// Creates (or appends to) the key log at `path`, readable only by its
    /// owner.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating key log {}", path.display()))?;
        Ok(Self { file })
    }
}

impl Entropy for KeylogEntropy {
    fn ephemeral(&mut self) -> StaticSecret {
        let secret = OsEntropy.ephemeral();
        let line = format!(
            "LOCAL_EPHEMERAL_PRIVATE_KEY = {}\n",
            keys::encode(&secret.to_bytes())
        );
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            log::warn!("writing the key log failed: {e}");
        }
        secret
    }

    fn index(&mut self) -> u32 {
        OsEntropy.index()
    }
}

/// The ephemeral private keys in a key log, in order.
pub fn read_keylog(text: &str) -> Vec<[u8; 32]> {
    text.lines()
        .filter_map(|line| line.strip_prefix("LOCAL_EPHEMERAL_PRIVATE_KEY = "))
        .filter_map(keys::decode_key)
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
        let text = format!(
            "# test\nLOCAL_EPHEMERAL_PRIVATE_KEY = {}\nother\n",
            keys::encode(&key)
        );
        assert_eq!(read_keylog(&text), vec![key]);
    }
}
