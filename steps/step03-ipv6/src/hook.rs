//! What step 03 does to inner packets on their way through the tunnel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use step02_plain_tunnel::run::{InnerHook, Outbound};

use crate::clamp::{self, Clamp};
use crate::pmtu::{self, TooBig};
use crate::rate::TokenBucket;

/// ICMP errors per second the hook sends at most, on average, and how many
/// it may send at once. Linux's own limit is 1000 a second in bursts of 50
/// (`net.ipv4.icmp_msgs_per_sec`, `icmp_msgs_burst`); one tunnel end needs
/// far fewer: each error makes its sender lower its path MTU at once.
pub const ERRORS_PER_SECOND: u32 = 100;
pub const ERROR_BURST: u32 = 20;

// ANCHOR: path_hook
/// Keeps TCP segments and all other packets within what the tunnel can
/// carry:
///
/// - TCP SYN and SYN-ACK segments, both ways, get their MSS option lowered
///   to fit the tunnel (so TCP never sends a segment that is too big);
/// - any other packet read from the TUN device that is larger than the
///   tunnel can carry is answered with an ICMP "fragmentation needed"
///   (IPv4, DF set) or ICMPv6 "packet too big", so the sender's kernel
///   lowers its path MTU and sends smaller packets.
pub struct PathHook {
    /// The largest inner packet the tunnel carries.
    limit: u16,
    /// Our tunnel addresses: the sources of our ICMP errors when the
    /// packet's destination cannot be.
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
    /// SYNs whose MSS we lowered.
    pub clamped: AtomicU64,
    /// ICMP errors sent for packets too big.
    pub too_big: AtomicU64,
    /// ICMP errors not sent because of the rate limit.
    pub rate_limited: AtomicU64,
    limiter: Mutex<TokenBucket>,
}
// ANCHOR_END: path_hook

impl PathHook {
    pub fn new(limit: u16, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> Self {
        Self {
            limit,
            v4,
            v6,
            clamped: AtomicU64::new(0),
            too_big: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            limiter: Mutex::new(TokenBucket::new(ERRORS_PER_SECOND, ERROR_BURST)),
        }
    }

    /// The source of our ICMP error about `packet`: the address the packet
    /// was going to, which lies beyond the tunnel, as a router on the path
    /// would. Not our own tunnel address: Linux drops an IPv4 packet that
    /// arrives with one of the host's own addresses as its source (a
    /// "martian"), so the error would never reach the sender. A destination
    /// that cannot be a source (multicast, say) falls back to our own
    /// address of the family.
    fn error_source(&self, packet: &[u8]) -> Option<IpAddr> {
        let ip = etherparse::IpSlice::from_slice(packet).ok()?;
        let dst = ip.destination_addr();
        let usable = match dst {
            IpAddr::V4(a) => !(a.is_multicast() || a.is_broadcast() || a.is_unspecified() || a.is_loopback()),
            IpAddr::V6(a) => !(a.is_multicast() || a.is_unspecified() || a.is_loopback()),
        };
        if usable {
            return Some(dst);
        }
        match dst {
            IpAddr::V4(_) => self.v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.v6.map(IpAddr::V6),
        }
    }

    fn clamp(&self, packet: &mut [u8]) {
        let ipv6 = packet.first().is_some_and(|b| b >> 4 == 6);
        if let Clamp::Clamped { from, to } = clamp::clamp_mss(packet, clamp::max_mss(self.limit, ipv6)) {
            self.clamped.fetch_add(1, Ordering::Relaxed);
            log::debug!("clamped a TCP MSS from {from} to {to}");
        }
    }
}

impl InnerHook for PathHook {
    // ANCHOR: outbound
    fn outbound(&self, packet: &mut [u8], now: Instant, reply: &mut [u8]) -> Outbound {
        if packet.len() > usize::from(self.limit) {
            let Some(from) = self.error_source(packet) else {
                return Outbound::Drop("too big, and no address of its family to answer from");
            };
            // RFC 4443 §2.4 (f): an ICMPv6 error source MUST limit its rate
            // (RFC 1812 §4.3.2.8 says the same for IPv4).
            if !self.limiter.lock().unwrap_or_else(|e| e.into_inner()).take(now) {
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
                return Outbound::Drop("too big, and over the ICMP error rate limit");
            }
            return match pmtu::too_big(packet, self.limit, from, reply) {
                TooBig::Reply(n) => {
                    self.too_big.fetch_add(1, Ordering::Relaxed);
                    Outbound::Reply(n)
                }
                TooBig::Forward => Outbound::Send,
                TooBig::Drop(why) => Outbound::Drop(why),
            };
        }
        self.clamp(packet);
        Outbound::Send
    }
    // ANCHOR_END: outbound

    fn inbound(&self, packet: &mut [u8]) {
        self.clamp(packet);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_big_packets_gets_a_limited_number_of_errors() {
        let hook = PathHook::new(1348, Some(Ipv4Addr::new(10, 0, 0, 2)), None);
        let mut packet = vec![0u8; 1400];
        packet[0] = 0x45;
        packet[2..4].copy_from_slice(&1400u16.to_be_bytes());
        packet[6] = 0x40; // DF
        packet[8] = 64;
        packet[9] = 17;
        packet[12..16].copy_from_slice(&[10, 0, 0, 2]);
        packet[16..20].copy_from_slice(&[10, 0, 0, 1]);
        let c = step01_ping_tun::checksum::checksum(&packet[..20]);
        packet[10..12].copy_from_slice(&c.to_be_bytes());
        let now = Instant::now();
        let mut reply = vec![0u8; 2000];
        let answered = (0..1000)
            .filter(|_| {
                matches!(
                    hook.outbound(&mut packet.clone(), now, &mut reply),
                    Outbound::Reply(_)
                )
            })
            .count();
        assert_eq!(answered as u32, ERROR_BURST);
        assert_eq!(
            hook.rate_limited.load(Ordering::Relaxed),
            1000 - u64::from(ERROR_BURST)
        );
    }
}
