//! The plaintext tunnel's data path: [`Tunnel::encapsulate`] and
//! [`Tunnel::decapsulate`] of one 1400-byte IPv4 packet.
//!
//! Why it matters for a tunnel: these two calls are all the work the core
//! does per packet, between a read and a write system call. They add a
//! 4-byte header and copy the packet, so they are the floor that step 04's
//! encrypted tunnel is compared with: whatever step 04 costs more per
//! packet is the price of its cryptography and replay window.
//!
//! Both calls are measured in steady state: a client that encapsulates
//! again and again, and a server that has already learned the client's
//! address. Decapsulating the same message many times is a fair measure
//! here, because a plaintext message carries nothing that changes from one
//! packet to the next.
//!
//! Run with `cargo bench -p tunlab-benches --features bench --bench step02_tunnel`.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use step02_plain_tunnel::{Action, Role, Tunnel};

/// The inner packet's length: near the largest over a 1500-byte underlay.
const PACKET_LEN: usize = 1400;
const MTU: usize = 1468;

/// An IPv4 UDP packet of exactly `PACKET_LEN` bytes, from the client's
/// tunnel address to the server's.
fn inner_packet() -> Vec<u8> {
    let payload = vec![0x5a; PACKET_LEN - 20 - 8];
    let builder = etherparse::PacketBuilder::ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64).udp(40000, 5201);
    let mut packet = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut packet, &payload)
        .expect("a Vec takes any packet");
    assert_eq!(packet.len(), PACKET_LEN);
    packet
}

fn data_path(c: &mut Criterion) {
    let server_addr: SocketAddr = "192.0.2.1:51820".parse().expect("a valid address");
    let client_addr: SocketAddr = "192.0.2.2:40000".parse().expect("a valid address");
    let now = Instant::now();
    let packet = inner_packet();
    let mut client = Tunnel::new(Role::Client { server: server_addr }, MTU, None);
    let mut server = Tunnel::new(Role::Server, MTU, None);

    // One message, checked once, for the decapsulate benchmark.
    let mut message = vec![0u8; 2048];
    let sent = client
        .encapsulate(&packet, now, &mut message)
        .expect("the client encapsulates a valid packet");
    message.truncate(sent.len);
    let mut out = vec![0u8; 2048];
    assert_eq!(
        server.decapsulate(client_addr, &message, now, &mut out),
        Ok(Action::WriteToTun(PACKET_LEN))
    );

    let mut group = c.benchmark_group("step02/tunnel");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    group.bench_function("encapsulate/1400", |b| {
        b.iter(|| client.encapsulate(black_box(&packet), now, &mut out))
    });
    group.bench_function("decapsulate/1400", |b| {
        b.iter(|| server.decapsulate(client_addr, black_box(&message), now, &mut out))
    });
    group.finish();
}

criterion_group!(benches, data_path);
criterion_main!(benches);
