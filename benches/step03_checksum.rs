//! Step 03's checksum work: recomputing the TCP checksum of a 1400-byte
//! segment from scratch ([`transport_checksum`], pseudo-header included),
//! updating one incrementally ([`update`], RFC 1624), and clamping the MSS
//! of a SYN ([`clamp_mss`]), which finds the option and updates the
//! checksum in place.
//!
//! Why it matters for a tunnel: a router at a tunnel end looks at every
//! packet that passes (to clamp SYNs, to rewrite addresses), and must not
//! sum the whole packet again for a field of two bytes. These numbers show
//! the gap between the two: recomputation grows with the packet,
//! the incremental update does not, and the clamp is mostly the cost of
//! finding the TCP header.
//!
//! Run with `cargo bench -p tunlab-benches --features bench --bench step03_checksum`.

#![forbid(unsafe_code)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep, TcpOptionElement};
use step03_ipv6::checksum::{transport_checksum, update, update_u32};
use step03_ipv6::clamp::{Clamp, clamp_mss, max_mss};

/// The segment's length: near the largest inner packet over a 1500-byte
/// underlay.
const PACKET_LEN: usize = 1400;
/// The tunnel MTU the MSS is clamped to.
const TUNNEL_MTU: u16 = 1420;
/// Each batch of fresh SYNs for the clamp: small enough to stay in the
/// cache, as a burst of packets read from the TUN device would, and large
/// enough that the timer's cost is spread thin.
const BATCH: u64 = 256;

fn builder(ipv6: bool) -> PacketBuilderStep<IpHeaders> {
    if ipv6 {
        PacketBuilder::ipv6(
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
    } else {
        PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
    }
}

/// A TCP segment carrying data, `PACKET_LEN` bytes in all.
fn data_segment(ipv6: bool) -> Vec<u8> {
    let ip_header = if ipv6 { 40 } else { 20 };
    let payload: Vec<u8> = (0..=255u8).cycle().take(PACKET_LEN - ip_header - 20).collect();
    let tcp = builder(ipv6).tcp(40000, 5201, 0x0102_0304, 64240).ack(1);
    let mut packet = Vec::with_capacity(tcp.size(payload.len()));
    tcp.write(&mut packet, &payload).expect("a Vec takes any packet");
    assert_eq!(packet.len(), PACKET_LEN);
    packet
}

/// A SYN announcing an MSS of 1460, as Linux sends behind Ethernet.
fn syn(ipv6: bool) -> Vec<u8> {
    let tcp = builder(ipv6)
        .tcp(40000, 443, 0x0102_0304, 64240)
        .syn()
        .options(&[
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::Timestamp(0x1234_5678, 0),
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(7),
        ])
        .expect("the options fit a TCP header");
    let mut packet = Vec::with_capacity(tcp.size(0));
    tcp.write(&mut packet, &[]).expect("a Vec takes any packet");
    packet
}

fn recompute_and_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("step03/checksum");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    for (name, ipv6) in [("tcp-v4", false), ("tcp-v6", true)] {
        let packet = data_segment(ipv6);
        let stored = transport_checksum(&packet);
        assert!(stored.is_some(), "the segment's checksum is computable");
        group.bench_function(format!("recompute/{name}/1400"), |b| {
            b.iter(|| transport_checksum(black_box(&packet)))
        });
    }
    // One 16-bit field (a port) and one 32-bit field (an IPv4 address):
    // no bytes are read, so no throughput.
    group.throughput(Throughput::Elements(1));
    group.bench_function("update/u16", |b| {
        b.iter(|| update(black_box(0x1c46), black_box(40000), black_box(61000)))
    });
    group.bench_function("update/u32", |b| {
        b.iter(|| update_u32(black_box(0x1c46), black_box(0x0a00_0002), black_box(0xc633_6401)))
    });
    group.finish();
}

fn mss_clamp(c: &mut Criterion) {
    let mut group = c.benchmark_group("step03/clamp_mss");
    group.throughput(Throughput::Elements(1));
    for (name, ipv6) in [("syn-v4", false), ("syn-v6", true)] {
        let packet = syn(ipv6);
        let max = max_mss(TUNNEL_MTU, ipv6);
        assert_eq!(
            clamp_mss(&mut packet.clone(), max),
            Clamp::Clamped { from: 1460, to: max }
        );
        // A clamped SYN is left alone the next time, so each call gets a
        // fresh copy; the copies are made outside the timed part.
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || packet.clone(),
                |p| clamp_mss(p, max),
                BatchSize::NumIterations(BATCH),
            )
        });
    }
    // The common case: a segment that is not a SYN, which the clamp
    // leaves as it is, so the same one serves every call.
    let mut ack = data_segment(false);
    let max = max_mss(TUNNEL_MTU, false);
    assert_eq!(clamp_mss(&mut ack, max), Clamp::NotSyn);
    group.bench_function("not-syn-v4", |b| b.iter(|| clamp_mss(black_box(&mut ack), max)));
    group.finish();
}

criterion_group!(benches, recompute_and_update, mss_clamp);
criterion_main!(benches);
