//! The RFC 1071 Internet checksum ([`step01_ping_tun::checksum`]), over a
//! whole 1400-byte packet and over a 20-byte IPv4 header.
//!
//! Why it matters for a tunnel: every IPv4 header is checked, and every
//! ICMP reply, TCP or UDP segment that the tunnel verifies or builds is
//! summed from its first byte to its last. The 20-byte case is the cost per
//! packet of checking a header; the 1400-byte case, near a full inner
//! packet, shows how many bytes per cycle the loop moves, which is what
//! limits a tunnel that recomputes transport checksums instead of updating
//! them (step 03's `update`).
//!
//! Run with `cargo bench -p tunlab-benches --features bench --bench step01_checksum`.

#![forbid(unsafe_code)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use step01_ping_tun::checksum::{checksum, verify};

/// The IPv4 header of an echo request that Linux's ping sent into a TUN
/// device, with its stored checksum (the same one as the unit tests use).
const IPV4_HEADER: [u8; 20] = [
    0x45, 0x00, 0x00, 0x54, 0x81, 0x1e, 0x40, 0x00, 0x40, 0x01, 0xa5, 0x88, 0x0a, 0x00, 0x00, 0x01, 0x0a,
    0x00, 0x00, 0x02,
];

/// Near the largest inner packet of a tunnel over a 1500-byte underlay.
const PACKET_LEN: usize = 1400;

fn internet_checksum(c: &mut Criterion) {
    let mut group = c.benchmark_group("step01/checksum");

    group.throughput(Throughput::Bytes(IPV4_HEADER.len() as u64));
    group.bench_function("verify/ipv4-header-20", |b| {
        b.iter(|| verify(black_box(&IPV4_HEADER)))
    });

    // Bytes that are not all zero, so no carry pattern is special.
    let packet: Vec<u8> = (0..=255u8).cycle().take(PACKET_LEN).collect();
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    group.bench_function("checksum/1400", |b| b.iter(|| checksum(black_box(&packet))));

    group.finish();
}

criterion_group!(benches, internet_checksum);
criterion_main!(benches);
