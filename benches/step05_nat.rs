//! The server's per-packet rewrite ([`step05_full_tunnel::nat`]): source
//! NAT of a 1400-byte TCP segment over IPv4 and over IPv6 ([`snat`]), and
//! the TTL decrement every forwarded packet gets ([`forward`]).
//!
//! Why it matters for a tunnel: a full-tunnel server does this to every
//! packet between its clients and the internet, on top of decryption. The
//! rewrite touches only the headers and updates the checksums
//! incrementally (RFC 1624), so its cost should not depend on the packet's
//! length; throughput is still given for a 1400-byte packet, to compare
//! with the rest of the data path.
//!
//! `snat` is called on one packet again and again, alternating between two
//! public endpoints, so each call is a real rewrite (address, port, both
//! checksums) with no copy in between. `forward` lowers the TTL, which
//! would run out after 63 calls, so each call gets a fresh copy made in
//! criterion's untimed setup.
//!
//! Run with `cargo bench -p tunlab-benches --features bench --bench step05_nat`.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use step05_full_tunnel::nat::{forward, snat};

/// The packet's length: near the largest inner packet over a 1500-byte
/// underlay.
const PACKET_LEN: usize = 1400;
/// Fresh packets per timed batch for `forward`: only their first cache
/// line is touched, so the batch stays in the cache.
const BATCH: u64 = 256;

/// A TCP segment with data from a client's tunnel address to a host on
/// the internet, `PACKET_LEN` bytes in all.
fn from_client(ipv6: bool) -> Vec<u8> {
    let (ip, ip_header) = if ipv6 {
        let client: Ipv6Addr = "fd00::2".parse().expect("a valid address");
        let remote: Ipv6Addr = "2001:db8:100::2".parse().expect("a valid address");
        (PacketBuilder::ipv6(client.octets(), remote.octets(), 64), 40)
    } else {
        (PacketBuilder::ipv4([10, 0, 0, 2], [198, 51, 100, 2], 64), 20)
    };
    let payload: Vec<u8> = (0..=255u8).cycle().take(PACKET_LEN - ip_header - 20).collect();
    let tcp = ip.tcp(37012, 80, 0x0102_0304, 64240).ack(1);
    let mut packet = Vec::with_capacity(tcp.size(payload.len()));
    tcp.write(&mut packet, &payload).expect("a Vec takes any packet");
    assert_eq!(packet.len(), PACKET_LEN);
    packet
}

fn rewrite(c: &mut Criterion) {
    let mut group = c.benchmark_group("step05/nat");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));

    let v4: [(IpAddr, u16); 2] = [
        (Ipv4Addr::new(198, 51, 100, 1).into(), 40028),
        (Ipv4Addr::new(198, 51, 100, 3).into(), 40029),
    ];
    let v6: [(IpAddr, u16); 2] = [
        ("2001:db8:100::1".parse().expect("a valid address"), 40028),
        ("2001:db8:100::3".parse().expect("a valid address"), 40029),
    ];
    for (name, ipv6, to) in [("snat/tcp-v4/1400", false, v4), ("snat/tcp-v6/1400", true, v6)] {
        let mut packet = from_client(ipv6);
        let mut turn = 0;
        snat(&mut packet, to[0].0, to[0].1).expect("the segment can be translated");
        group.bench_function(name, |b| {
            b.iter(|| {
                turn ^= 1;
                let (addr, port) = to[turn];
                snat(black_box(&mut packet), addr, port)
            })
        });
    }

    let packet = from_client(false);
    forward(&mut packet.clone()).expect("the packet can be forwarded");
    group.bench_function("forward/ipv4/1400", |b| {
        b.iter_batched_ref(|| packet.clone(), |p| forward(p), BatchSize::NumIterations(BATCH))
    });
    group.finish();
}

criterion_group!(benches, rewrite);
criterion_main!(benches);
