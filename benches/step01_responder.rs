//! The responder ([`Responder::handle`]): one echo request in, its reply
//! out, for the first request of two captures of lab 01, an 84-byte ping
//! (`pcaps/step01/ping-default.pcap`) and a 1428-byte one
//! (`ping-s1400.pcap`).
//!
//! Why it matters: this is all the work step 01 does per packet between
//! its read and its write system calls. Every check is here (lengths, both
//! checksums, the subnet), and writing the reply sums the ICMP message
//! again, so the large ping shows what the checksums cost per byte. The
//! build track (`tunlab track 01`) compares a learner's `handle` with
//! these numbers.
//!
//! Run with `cargo bench -p tunlab-benches --features bench --bench step01_responder`.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use step01_ping_tun::{Outcome, Responder};

/// The first packet of a lab 01 capture: an echo request from 10.0.0.1
/// to 10.0.0.2.
fn first_request(file: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pcaps/step01")
        .join(file);
    let packets = step01_ping_tun::pcap::read(&path).expect("the lab 01 captures are in pcaps/step01");
    packets.into_iter().next().expect("a capture with packets").data
}

fn handle(c: &mut Criterion) {
    let mut group = c.benchmark_group("step01/responder");
    for (name, file) in [
        ("handle/echo-84", "ping-default.pcap"),
        ("handle/echo-1428", "ping-s1400.pcap"),
    ] {
        let request = first_request(file);
        let mut responder = Responder::new("10.0.0.1/24".parse().expect("a valid prefix"));
        let mut out = vec![0u8; 2048];
        assert_eq!(
            responder.handle(&request, &mut out),
            Outcome::Reply(request.len()),
            "{file}: the reference answers its first request"
        );
        group.throughput(Throughput::Bytes(request.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| responder.handle(black_box(&request), black_box(&mut out)))
        });
    }
    group.finish();
}

criterion_group!(benches, handle);
criterion_main!(benches);
