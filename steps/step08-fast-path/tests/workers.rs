//! Two fast-path ends on loopback: packets cross in both directions, in
//! order, with every combination of the techniques, and the counters say
//! which were used.

mod common;

use common::*;
use step08_fast_path::udp::Features;

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];

/// Sends `count` packets of `len` bytes from `from` to `to` in bursts, and
/// returns the sequence numbers that came out at `to`, in order.
fn carry(a: &mut End, b: &mut End, a_to_b: bool, count: u32, len: usize) -> Vec<u32> {
    let mut into = vec![vec![0u8; 2048]; count as usize];
    let mut lens = vec![0; count as usize];
    let mut got = 0;
    let mut sent = 0;
    while sent < count {
        // Bursts small enough for the socket pair's buffer.
        for _ in 0..50.min(count - sent) {
            let (src, dst) = if a_to_b { (A, B) } else { (B, A) };
            let p = packet(src, dst, sent, len);
            let tun = if a_to_b { &a.tun } else { &b.tun };
            tun.send(&p).unwrap();
            sent += 1;
        }
        let mut idle = 0;
        pump(a, b, |a, b| {
            let to = if a_to_b { &*b } else { &*a };
            let before = got;
            got = drain(to, &mut into, &mut lens, got);
            idle = if got == before { idle + 1 } else { 0 };
            got as u32 == sent || idle > 200
        });
    }
    into[..got]
        .iter()
        .zip(&lens)
        .map(|(p, &l)| {
            assert_eq!(l, len, "the packet came out whole");
            seq(p)
        })
        .collect()
}

fn features(mmsg: bool, gso: bool, gro: bool) -> Features {
    Features { mmsg, gso, gro }
}

#[test]
fn packets_cross_both_ways_in_order_with_every_combination() {
    for mmsg in [true, false] {
        for gso in [true, false] {
            for gro in [true, false] {
                let f = features(mmsg, gso, gro);
                let (mut a, mut b) = pair(f);
                let there = carry(&mut a, &mut b, true, 500, 1000);
                assert_eq!(
                    there,
                    (0..500).collect::<Vec<_>>(),
                    "{f:?}: a to b, all, in order"
                );
                let back = carry(&mut a, &mut b, false, 300, 200);
                assert_eq!(back, (0..300).collect::<Vec<_>>(), "{f:?}: b to a");
                let (ta, tb) = (a.totals(), b.totals());
                // What each technique leaves in the counters.
                assert_eq!(ta.udp_gso_out > 0, gso, "{f:?}: {ta:?}");
                assert_eq!(tb.udp_gro_in > 0, gso && gro, "{f:?}: {tb:?}");
                if !mmsg {
                    assert!(ta.udp_send_calls >= ta.udp_datagrams_out.div_ceil(64));
                }
                assert_eq!(ta.drops + tb.drops, 0, "{f:?}");
            }
        }
    }
}

#[test]
fn batching_takes_many_packets_per_wake_up() {
    let (mut a, mut b) = pair(Features::ALL);
    // The handshake first (the packets that wait for it leave one by one,
    // from the device).
    carry(&mut a, &mut b, true, 10, 1000);
    let before = a.totals();
    carry(&mut a, &mut b, true, 200, 1000);
    let after = a.totals();
    // Four bursts of 50: each is read in one round and sent in one call
    // (one GSO message of 50 datagrams, in one sendmmsg).
    assert_eq!(after.udp_datagrams_out - before.udp_datagrams_out, 200);
    assert_eq!(after.udp_send_calls - before.udp_send_calls, 4, "{after:?}");
    assert_eq!(after.udp_gso_out - before.udp_gso_out, 4);
}

#[test]
fn packets_for_a_peer_without_a_session_wait_for_the_handshake() {
    let (mut a, mut b) = pair(Features::ALL);
    // Before any handshake, the first packets are staged by the device;
    // they come out at b once the handshake is done.
    for i in 0..5 {
        a.tun.send(&packet(A, B, i, 100)).unwrap();
    }
    let mut into = vec![vec![0u8; 2048]; 5];
    let mut lens = vec![0; 5];
    let mut got = 0;
    pump(&mut a, &mut b, |_, b| {
        got = drain(b, &mut into, &mut lens, got);
        got == 5
    });
    assert_eq!(into.iter().map(|p| seq(p)).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
}

#[test]
fn a_forged_data_message_is_dropped_and_counted() {
    let (mut a, mut b) = pair(Features::ALL);
    carry(&mut a, &mut b, true, 10, 100);
    // A data message for b's session index with a wrong tag: what b's
    // plane must refuse before it reaches its TUN side.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut forged = vec![4u8, 0, 0, 0];
    forged.extend_from_slice(&[0xff; 4 + 8 + 32 + 16]);
    socket.send_to(&forged, ("127.0.0.1", b.port)).unwrap();
    pump(&mut a, &mut b, |_, b| b.totals().drops > 0);
    assert_eq!(b.totals().drops, 1);
}

#[test]
fn workers_in_their_own_threads_follow_a_new_listen_port() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use step07_wireguard::run::Control;
    use step07_wireguard::uapi::Op;

    let (mut a, mut b) = pair(Features::ALL);
    carry(&mut a, &mut b, true, 5, 100);
    // b moves to another port, as `wg set b listen-port N` does, while
    // its worker sleeps in poll(2) on the old sockets; a is told.
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |mut worker: step08_fast_path::worker::Worker, stop: Arc<AtomicBool>| {
        std::thread::spawn(move || worker.run(|| stop.load(Ordering::Relaxed)).unwrap())
    };
    let (ta, tb) = (a.tun, b.tun);
    let (sa, sb) = (Arc::clone(&a.shared), Arc::clone(&b.shared));
    let ha = spawn(a.worker, Arc::clone(&stop));
    let hb = spawn(b.worker, Arc::clone(&stop));
    std::thread::sleep(std::time::Duration::from_millis(50));
    let free = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    sb.set(vec![Op::ListenPort(port)], std::time::Instant::now())
        .unwrap();
    {
        let mut device = sa.device.lock().unwrap();
        let id = device.peer_ids()[0];
        device.set_endpoint(id, std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        sa.publish(&device);
    }
    tb.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    tb.set_nonblocking(false).unwrap();
    ta.send(&packet(A, B, 77, 100)).unwrap();
    let mut buf = [0u8; 2048];
    let got = tb.recv(&mut buf).map_err(|e| e.to_string());
    stop.store(true, Ordering::Relaxed);
    ha.join().unwrap();
    hb.join().unwrap();
    assert_eq!(got, Ok(100), "the packet came out at b");
    assert_eq!(seq(&buf), 77);
}
