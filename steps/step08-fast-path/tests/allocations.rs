//! No allocation per packet in steady state: a global allocator that
//! counts the allocations of the thread that asks it to, around the
//! workers' loop carrying packets both ways, and around what the workers
//! do with offloads on: tun-rs cutting a TCP super-packet into packets,
//! and the coalescer putting them together again.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use step08_fast_path::gro::Coalescer;
use step08_fast_path::plane::OFFSET;
use step08_fast_path::udp::Features;
use tun_rs::{VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_LEN, VirtioNetHdr, gso_split};

// ANCHOR: allocator
/// The system allocator, counting what the current thread allocates
/// while its count is switched on (tests run in threads of their own, so
/// each counts only its own).
struct Counting;

thread_local! {
    static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
}

fn note() {
    // (`try_with`: a thread being torn down has no locals left.)
    let _ = COUNT.try_with(|c| {
        if let Some(n) = c.get() {
            c.set(Some(n + 1));
        }
    });
}

// SAFETY: every call is passed on to the system allocator unchanged;
// counting touches only a const-initialized thread local, which does not
// allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(Some(0)));
    f();
    COUNT.with(|c| c.replace(None)).unwrap_or(0)
}
// ANCHOR_END: allocator

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];

// ANCHOR: steady_state
#[test]
fn the_workers_loop_allocates_nothing_in_steady_state() {
    let (mut a, mut b) = pair(Features::ALL);
    // Every packet the test sends, made beforehand.
    let there: Vec<Vec<u8>> = (0..50).map(|i| packet(A, B, i, 1200)).collect();
    let back: Vec<Vec<u8>> = (0..50).map(|i| packet(B, A, i, 80)).collect();
    let mut into = vec![vec![0u8; 2048]; 50];
    let mut lens = vec![0usize; 50];
    let mut round = |a: &mut End, b: &mut End| {
        for p in &there {
            a.tun.send(p).unwrap();
        }
        for p in &back {
            b.tun.send(p).unwrap();
        }
        let (mut at_b, mut at_a) = (0, 0);
        pump(a, b, |a, b| {
            at_b = drain(b, &mut into, &mut lens, at_b);
            // (The same buffers for both directions: only counts matter.)
            let mut scratch_lens = [0usize; 50];
            let mut n = 0;
            while at_a < 50 && a.tun.recv(&mut into[n]).is_ok() {
                scratch_lens[n] = 1;
                n = (n + 1) % 50;
                at_a += 1;
            }
            at_b == 50 && at_a == 50
        });
    };
    // Warm up: the handshake (a starts it: b learns where a is), then the
    // first batches (buffers reach their size, the sockets' and tables'
    // first use).
    a.tun.send(&there[0]).unwrap();
    pump(&mut a, &mut b, |_, b| b.tun.recv(&mut [0u8; 2048]).is_ok());
    for _ in 0..20 {
        round(&mut a, &mut b);
    }
    let before = (a.totals(), b.totals());
    let n = allocations(|| {
        for _ in 0..100 {
            round(&mut a, &mut b);
        }
    });
    let after = (a.totals(), b.totals());
    assert_eq!(
        after.1.tun_packets_out - before.1.tun_packets_out,
        5000,
        "the packets went through"
    );
    assert_eq!(after.0.tun_packets_out - before.0.tun_packets_out, 5000);
    assert!(after.0.udp_gso_out > before.0.udp_gso_out, "with GSO");
    assert_eq!(n, 0, "allocations while carrying 10,000 packets");
}
// ANCHOR_END: steady_state

/// A TCP super-packet as the kernel hands it to a TUN device with
/// offloads: IPv4 and TCP headers, `segments` segments of payload, and
/// the virtio-net header in front.
fn super_packet(segments: usize, mss: usize) -> (VirtioNetHdr, Vec<u8>) {
    let len = 40 + segments * mss;
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = 0x40; // don't fragment
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&A);
    p[16..20].copy_from_slice(&B);
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5201u16.to_be_bytes());
    p[24..28].copy_from_slice(&1u32.to_be_bytes());
    p[32] = 5 << 4; // data offset: 20 bytes
    p[33] = 0x10; // ACK
    let hdr = VirtioNetHdr {
        // VIRTIO_NET_HDR_F_NEEDS_CSUM: the kernel left the TCP checksum to us.
        flags: 1,
        gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len: 40,
        gso_size: mss as u16,
        csum_start: 20,
        csum_offset: 16,
    };
    (hdr, p)
}

#[test]
fn splitting_and_coalescing_super_packets_allocates_nothing_in_steady_state() {
    let (hdr, mut template) = super_packet(45, 1380);
    // The kernel leaves the pseudo-header's sum in the checksum field.
    let sum = !step03_ipv6::checksum::fold(step03_ipv6::checksum::pseudo_header_v4(
        A.into(),
        B.into(),
        6,
        (template.len() - 20) as u16,
    ));
    template[36..38].copy_from_slice(&sum.to_be_bytes());
    let mut input = template.clone();
    let mut bufs: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; OFFSET + 1500]).collect();
    let mut sizes = vec![0usize; 64];
    let mut out: Vec<Vec<u8>> = (0..64).map(|_| Vec::with_capacity(OFFSET + 65535)).collect();
    let mut gro = Coalescer::new();
    let mut once = || {
        input.copy_from_slice(&template);
        // Read side: one super-packet cut into 45 packets.
        let n = gso_split(&mut input, hdr, &mut bufs, &mut sizes, OFFSET, false).unwrap();
        assert_eq!(n, 45);
        // Write side: the 45 packets put back together into one.
        for i in 0..n {
            out[i].clear();
            out[i].extend_from_slice(&bufs[i][..OFFSET + sizes[i]]);
        }
        assert_eq!(gro.coalesce(&mut out, n), [0]);
        let head = VirtioNetHdr::decode(&out[0][OFFSET - VIRTIO_NET_HDR_LEN..OFFSET]).unwrap();
        assert_eq!(head.gso_type, VIRTIO_NET_HDR_GSO_TCPV4, "coalesced again");
        assert_eq!(out[0].len(), OFFSET + template.len());
    };
    for _ in 0..5 {
        once();
    }
    let n = allocations(|| {
        for _ in 0..200 {
            once();
        }
    });
    assert_eq!(n, 0, "allocations while splitting and coalescing 9,000 packets");
}
