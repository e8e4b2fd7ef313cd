//! Step 03's checksums: RFC 1624's incremental update against full
//! recomputation, on arbitrary packets. Each record's body is a word
//! offset (2 bytes), a new value (2 bytes), then an IP packet; its op
//! picks which 16 bits change: a word of the transport message at an even
//! offset, one at an odd offset (updated with its bytes swapped, RFC 1071
//! §2 (B)), or a word of an address the pseudo-header covers.
//!
//! Never a panic; the updated checksum verifies exactly when the old one
//! did (an update neither repairs nor breaks a checksum), and one that was
//! computed from scratch stays equal to a recomputation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use step03_ipv6::checksum::{transport_checksum, update, verify_transport};
use tunlab_fuzz::Records;

/// The transport message's place in the packet, the offset of its checksum
/// field, whether it is UDP, and whether a pseudo-header covers the
/// addresses.
struct Located {
    start: usize,
    len: usize,
    field: usize,
    udp: bool,
    pseudo: bool,
}

fn locate(packet: &[u8]) -> Option<Located> {
    use etherparse::{IpNumber, IpSlice};
    let ip = IpSlice::from_slice(packet).ok()?;
    let payload = ip.payload().payload;
    let start = payload.as_ptr() as usize - packet.as_ptr() as usize;
    let v6 = matches!(ip, IpSlice::Ipv6(_));
    let (field, len, udp, pseudo) = match ip.payload_ip_number() {
        IpNumber::TCP => (16, payload.len(), false, true),
        IpNumber::UDP => {
            let len = usize::from(u16::from_be_bytes([*payload.get(4)?, *payload.get(5)?]));
            (6, len.min(payload.len()), true, true)
        }
        IpNumber::ICMP => (2, payload.len(), false, false),
        IpNumber::IPV6_ICMP => (2, payload.len(), false, v6),
        _ => return None,
    };
    Some(Located {
        start,
        len,
        field,
        udp,
        pseudo,
    })
}

fn stored(packet: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([packet[at], packet[at + 1]])
}

fuzz_target!(|data: &[u8]| {
    for (op, body) in Records(data) {
        let Some((word, rest)) = body.split_first_chunk::<2>() else {
            continue;
        };
        let Some((new, packet)) = rest.split_first_chunk::<2>() else {
            continue;
        };
        let Some(valid) = verify_transport(packet) else {
            continue;
        };
        let Some(t) = locate(packet) else { continue };
        let sum_at = t.start + t.field;
        let old_sum = stored(packet, sum_at);
        if t.udp && old_sum == 0 {
            // No checksum (UDP over IPv4): nothing to update.
            continue;
        }
        let word = usize::from(u16::from_be_bytes(*word));
        let new = u16::from_be_bytes(*new);
        let (at, swapped) = match op % 3 {
            0 if t.len >= 2 => (t.start + (word % (t.len / 2)) * 2, false),
            1 if t.len >= 3 => (t.start + (word % ((t.len - 1) / 2)) * 2 + 1, true),
            2 if t.pseudo => {
                let (first, words) = if packet[0] >> 4 == 6 { (8, 16) } else { (12, 4) };
                (first + (word % words) * 2, false)
            }
            _ => continue,
        };
        // Not the checksum itself, nor a length the pseudo-header repeats
        // (UDP's), nor a TCP data offset (which moves where data starts).
        let touches = |a: usize, b: usize| at < b && a < at + 2;
        if touches(sum_at, sum_at + 2)
            || (t.udp && touches(t.start + 4, t.start + 6))
            || (!t.udp && t.field == 16 && touches(t.start + 12, t.start + 13))
        {
            continue;
        }
        let old = stored(packet, at);
        let mut after = packet.to_vec();
        after[at..at + 2].copy_from_slice(&new.to_be_bytes());
        let mut sum = if swapped {
            update(old_sum, old.swap_bytes(), new.swap_bytes())
        } else {
            update(old_sum, old, new)
        };
        if t.udp && sum == 0 {
            // RFC 768: a computed 0 is sent as all ones.
            sum = 0xffff;
        }
        after[sum_at..sum_at + 2].copy_from_slice(&sum.to_be_bytes());
        let Some(still) = verify_transport(&after) else {
            continue;
        };
        // The one corner where an update is not exact (see the
        // documentation of `update`): data that is all zero, before or
        // after, and only ICMP over IPv4 (no pseudo-header) can have it.
        let zero = |p: &[u8]| {
            (t.start..t.start + t.len)
                .filter(|i| !(sum_at..sum_at + 2).contains(i))
                .all(|i| p[i] == 0)
        };
        if !t.pseudo && (zero(packet) || zero(&after)) {
            continue;
        }
        assert_eq!(
            valid, still,
            "updating {old:#06x} to {new:#06x} at {at} changed whether the checksum verifies"
        );
        if transport_checksum(packet) == Some(old_sum) {
            assert_eq!(
                transport_checksum(&after),
                Some(sum),
                "{old:#06x} to {new:#06x} at {at}: the update differs from a recomputation"
            );
        }
    }
});
