//! Step 03's MSS clamp on arbitrary packets and limits: never a panic;
//! nothing changes unless it says `Clamped`; a clamp lowers the MSS to the
//! limit and changes only the MSS and the TCP checksum; the checksum then
//! verifies exactly when it did before (a segment damaged on the way stays
//! damaged) and, if it was computed from scratch, equals a recomputation;
//! clamping again changes nothing.
//!
//! Each record's body is the limit (2 bytes), then an IP packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use step03_ipv6::checksum::{transport_checksum, verify_transport};
use step03_ipv6::clamp::{Clamp, clamp_mss};
use tunlab_fuzz::Records;

/// The MSS a SYN's options announce, walked here by RFC 9293 §3.2 (end of
/// list, no-operation, and every other kind with its length, so an option
/// this code does not know is skipped, not a stop: etherparse's iterator
/// stops there).
fn mss_option(mut options: &[u8]) -> Option<u16> {
    loop {
        match options {
            [] | [0, ..] => return None,
            [1, rest @ ..] => options = rest,
            [2, 4, hi, lo, ..] => return Some(u16::from_be_bytes([*hi, *lo])),
            [_, len, ..] if *len >= 2 => options = options.get(usize::from(*len)..)?,
            _ => return None,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for (_, body) in Records(data) {
        let Some((limit, packet)) = body.split_first_chunk::<2>() else {
            continue;
        };
        let limit = u16::from_be_bytes(*limit);
        let mut after = packet.to_vec();
        let outcome = clamp_mss(&mut after, limit);
        let Clamp::Clamped { from, to } = outcome else {
            assert_eq!(after, packet, "{outcome:?} but the packet changed");
            if let Clamp::Unchanged { mss } = outcome {
                assert!(mss <= limit);
            }
            continue;
        };
        assert!(to == limit && from > limit, "{outcome:?} with limit {limit}");
        let changed: Vec<usize> = (0..packet.len()).filter(|&i| packet[i] != after[i]).collect();
        assert!(
            changed.len() <= 4,
            "a clamp changed {} bytes: {changed:?}",
            changed.len()
        );
        assert_eq!(
            verify_transport(packet),
            verify_transport(&after),
            "{outcome:?} changed whether the checksum verifies"
        );
        let ip = etherparse::IpSlice::from_slice(&after).expect("a clamped packet parses");
        let tcp = etherparse::TcpSlice::from_slice(ip.payload().payload).expect("a clamped segment parses");
        let mss = mss_option(tcp.options());
        assert_eq!(mss, Some(limit), "the clamped SYN announces {mss:?}");
        let old_sum = etherparse::TcpSlice::from_slice(
            etherparse::IpSlice::from_slice(packet)
                .expect("parsed")
                .payload()
                .payload,
        )
        .expect("parsed")
        .checksum();
        if transport_checksum(packet) == Some(old_sum) {
            assert_eq!(
                transport_checksum(&after),
                Some(tcp.checksum()),
                "the update differs from a recomputation"
            );
        }
        let mut again = after.clone();
        assert_eq!(clamp_mss(&mut again, limit), Clamp::Unchanged { mss: limit });
        assert_eq!(again, after);
    }
});
