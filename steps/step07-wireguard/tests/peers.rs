//! Two WireGuard devices in memory: the handshake, the data path, every
//! timer of the whitepaper's section 6, cookies under load, pre-shared
//! keys, roaming and cryptokey routing, each checked by what crosses the
//! wire.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use step02_plain_tunnel::Action;
use step07_wireguard::device::{DropReason, LoadPolicy, MAX_OVERHEAD, Opened};
use step07_wireguard::timers::*;
use step07_wireguard::wire::{Data, Initiation, MessageType};

const INIT: u8 = MessageType::Initiation as u8;
const RESP: u8 = MessageType::Response as u8;
const COOKIE: u8 = MessageType::CookieReply as u8;
const DATA: u8 = MessageType::Data as u8;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

#[test]
fn a_handshake_then_packets_both_ways() {
    let mut p = Pair::new();
    p.a_sends(&a_to_b(1));
    p.settle();
    assert_eq!(p.b_tun, vec![a_to_b(1)], "the staged packet went through");
    assert_eq!((p.count(true, INIT), p.count(false, RESP)), (1, 1));
    p.b_sends(&b_to_a(1));
    p.settle();
    assert_eq!(p.a_tun, vec![b_to_a(1)]);
    // What `wg show` reads.
    let ia = p.a.peer_info(Pair::PEER).unwrap();
    let ib = p.b.peer_info(Pair::PEER).unwrap();
    assert_eq!(ia.last_handshake, Some(UNIX_START));
    assert_eq!(ib.endpoint, Some(addr(A)), "b learned where a is");
    assert_eq!(ia.stats.tx_bytes, ib.stats.rx_bytes);
    assert_eq!(ib.stats.tx_bytes, ia.stats.rx_bytes);
    assert_eq!(
        ia.stats.drops.total() + ib.stats.drops.total(),
        0,
        "{ia:?} {ib:?}"
    );
    assert_eq!(
        p.a.drops().total() + p.b.drops().total(),
        0,
        "{:?} {:?}",
        p.a.drops(),
        p.b.drops()
    );
}

#[test]
fn data_messages_are_padded_to_16_and_counters_start_at_zero() {
    let mut p = Pair::new();
    p.a_sends(&a_to_b(1));
    p.settle();
    let data: Vec<_> = p.log.iter().filter(|s| s.bytes[0] == DATA).collect();
    let first = Data::new_checked(&data[0].bytes[..]).unwrap();
    assert_eq!(first.counter(), 0);
    // "a to b 1" is 8 bytes: a 28-byte packet padded to 32.
    assert_eq!(a_to_b(1).len(), 28);
    assert_eq!(data[0].bytes.len(), 16 + 32 + 16);
    assert!(
        p.log
            .iter()
            .all(|s| s.bytes.len() % 16 == 0 || s.bytes[0] != DATA)
    );
}

#[test]
fn the_responder_waits_for_confirmation_before_sending() {
    let mut p = Pair::new();
    p.deliver_to_b = true;
    // b wants to send first, but it has no endpoint for a: dropped.
    p.b_sends(&b_to_a(0));
    assert_eq!(
        p.b.peer_stats(Pair::PEER)
            .unwrap()
            .drops
            .get(DropReason::NoEndpoint),
        1
    );
    // a starts a handshake; b answers, but its response is lost.
    p.deliver_to_a = false;
    p.a_sends(&a_to_b(1));
    p.settle();
    assert_eq!(p.count(false, RESP), 1);
    // b now knows a's endpoint, but its session is unconfirmed: what b
    // sends waits (staged), and no data message leaves b.
    p.b_sends(&b_to_a(1));
    p.settle();
    assert_eq!(p.count(false, DATA), 0);
    assert!(!p.b.has_session(Pair::PEER, p.now));
    // (b, which has a packet for a and no session, started its own
    // handshake: lost too.) Both retry after REKEY_TIMEOUT plus jitter;
    // when the two initiations cross, each answers the other's and drops
    // its own, and the next round (jitter keeps them apart) succeeds: a's
    // staged packet confirms the session to b, which sends its own.
    p.deliver_to_a = true;
    p.run_for(secs(30), ms(100));
    assert_eq!(p.b_tun, vec![a_to_b(1)]);
    assert_eq!(p.a_tun, vec![b_to_a(1)]);
}

#[test]
fn an_unanswered_initiation_is_retried_every_rekey_timeout_with_jitter_then_given_up() {
    let mut p = Pair::new();
    p.deliver_to_b = false;
    p.a_sends(&a_to_b(1));
    p.run_for(secs(120), ms(50));
    let times = p.times(true, INIT);
    // The first, then a retry while fewer than MAX_TIMER_HANDSHAKES + 1
    // have been made, then the expiry that gives up: 20 initiations over
    // about 100 seconds (wireguard-go logs "after 20 attempts").
    assert_eq!(times.len(), MAX_TIMER_HANDSHAKES as usize + 2, "{times:?}");
    for w in times.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= REKEY_TIMEOUT && gap < REKEY_TIMEOUT + ms(u64::from(REKEY_TIMEOUT_JITTER_MAX_MS) + 50),
            "gap {gap:?}"
        );
    }
    // The jitter varies.
    let gaps: HashSet<_> = times.windows(2).map(|w| (w[1] - w[0]).as_millis() / 50).collect();
    assert!(gaps.len() > 1, "no jitter: {gaps:?}");
    // Each attempt is a new initiation: new ephemeral, new sender index.
    let senders: HashSet<_> = p
        .log
        .iter()
        .filter(|s| s.bytes[0] == INIT)
        .map(|s| s.bytes[4..40].to_vec())
        .collect();
    assert_eq!(senders.len(), times.len());
    // The packet waiting for the handshake was dropped when a gave up.
    let drops = &p.a.peer_stats(Pair::PEER).unwrap().drops;
    assert_eq!(drops.get(DropReason::Unanswered), 1);
}

#[test]
fn initiations_are_never_closer_than_rekey_timeout() {
    let mut p = Pair::new();
    p.deliver_to_b = false;
    for i in 0..50 {
        p.a_sends(&a_to_b(i));
        p.run_for(ms(100), ms(100));
    }
    let times = p.times(true, INIT);
    assert!(times.len() <= 2, "{times:?}");
}

#[test]
fn a_passive_keepalive_answers_data_after_keepalive_timeout() {
    let mut p = Pair::new();
    p.a_sends(&a_to_b(1));
    p.settle();
    let keepalives = |p: &Pair| {
        p.log
            .iter()
            .filter(|s| s.from == p.b_addr && s.bytes[0] == DATA && s.bytes.len() == 32)
            .map(|s| s.at)
            .collect::<Vec<_>>()
    };
    p.run_for(secs(9), ms(500));
    assert!(keepalives(&p).is_empty());
    p.run_for(secs(2), ms(500));
    assert_eq!(keepalives(&p), vec![KEEPALIVE_TIMEOUT]);
    // No data since: no more keepalives.
    p.run_for(secs(30), secs(1));
    assert_eq!(keepalives(&p).len(), 1);
}

#[test]
fn data_with_no_answer_starts_a_new_handshake_after_15_seconds() {
    let mut p = Pair::new();
    p.a_sends(&a_to_b(1));
    p.settle();
    // b is gone (it crashed, say): nothing reaches it, nothing comes back.
    p.deliver_to_b = false;
    p.deliver_to_a = false;
    let before = p.count(true, INIT);
    p.a_sends(&a_to_b(2));
    p.run_for(secs(14), ms(100));
    assert_eq!(p.count(true, INIT), before);
    p.run_for(secs(2), ms(100));
    assert_eq!(p.count(true, INIT), before + 1);
}

#[test]
fn the_initiator_rekeys_after_rekey_after_time_and_traffic_flows_on() {
    let mut p = Pair::new();
    p.a_sends(&a_to_b(0));
    p.settle();
    let mut receivers = HashSet::new();
    let mut seen = HashSet::new();
    for i in 1..=300u32 {
        p.a_sends(&a_to_b(i));
        p.b_sends(&b_to_a(i));
        p.run_for(secs(1), secs(1));
        for s in &p.log {
            if s.bytes[0] == DATA && s.from == p.a_addr {
                let d = Data::new_checked(&s.bytes[..]).unwrap();
                receivers.insert(d.receiver());
                seen.insert((d.receiver(), d.counter()));
            }
        }
    }
    // Every packet went through, on at least 3 sessions (rekeys at about
    // 120 and 240 s), and no (session, counter) pair was used twice.
    assert_eq!(p.b_tun.len(), 301);
    assert_eq!(p.a_tun.len(), 300);
    assert!(receivers.len() >= 3, "{} sessions", receivers.len());
    let data_from_a = p
        .log
        .iter()
        .filter(|s| s.bytes[0] == DATA && s.from == p.a_addr)
        .count();
    assert_eq!(seen.len(), data_from_a, "a nonce was used twice");
    // Only a, the initiator, started handshakes.
    assert_eq!(p.count(false, INIT), 0);
    assert!(p.count(true, INIT) >= 3);
    let (da, db) = (
        &p.a.peer_stats(0).unwrap().drops,
        &p.b.peer_stats(0).unwrap().drops,
    );
    assert_eq!(da.total() + db.total(), 0, "{da} / {db}");
}

#[test]
fn a_session_is_never_used_after_reject_after_time() {
    let mut p = Pair::new();
    p.a_sends(&a_to_b(0));
    p.settle();
    // Keep a data message sealed on the first session.
    let mut out = vec![0u8; 2048];
    let t = p.a.encapsulate(&a_to_b(1), p.now, &mut out).unwrap().unwrap();
    let old = out[..t.len].to_vec();
    // Both go quiet past REJECT_AFTER_TIME.
    p.run_for(REJECT_AFTER_TIME + secs(1), secs(5));
    assert!(!p.a.has_session(Pair::PEER, p.now));
    let r = p.b.decapsulate(p.a_addr, &old, p.now, &mut out);
    assert!(matches!(
        r,
        Err(DropReason::UnknownIndex) | Err(DropReason::Expired)
    ));
    // A new packet starts a new handshake instead.
    let before = p.count(true, INIT);
    p.a_sends(&a_to_b(2));
    p.settle();
    assert_eq!(p.count(true, INIT), before + 1);
    assert_eq!(p.b_tun.last(), Some(&a_to_b(2)));
}

#[test]
fn keys_are_wiped_after_three_times_reject_after_time() {
    let mut p = Pair::new();
    p.a_sends(&a_to_b(0));
    p.settle();
    p.deliver_to_a = false;
    p.deliver_to_b = false;
    p.run_for(REJECT_AFTER_TIME * 3 + secs(2), secs(10));
    assert!(!p.a.has_session(Pair::PEER, p.now));
    assert!(!p.b.has_session(Pair::PEER, p.now));
}

#[test]
fn a_persistent_keepalive_starts_a_handshake_and_keeps_going() {
    let mut p = Pair::new();
    p.a.set_persistent_keepalive(Pair::PEER, 25, p.now);
    p.settle();
    // Turning it on sent a keepalive, which needed a handshake first.
    assert_eq!(p.count(true, INIT), 1);
    assert!(p.a.has_session(Pair::PEER, p.now));
    let keepalives = |p: &Pair| {
        p.log
            .iter()
            .filter(|s| s.from == p.a_addr && s.bytes[0] == DATA && s.bytes.len() == 32)
            .count()
    };
    let k0 = keepalives(&p);
    p.run_for(secs(100), secs(1));
    // About one every 25 seconds.
    let k = keepalives(&p) - k0;
    assert!((3..=5).contains(&k), "{k} keepalives in 100 s");
    // Off again: no more.
    p.a.set_persistent_keepalive(Pair::PEER, 0, p.now);
    let k1 = keepalives(&p);
    p.run_for(secs(100), secs(1));
    assert!(keepalives(&p) - k1 <= 1);
}

#[test]
fn a_preshared_key_is_used_and_a_wrong_one_fails() {
    let mut p = Pair::with_psk([7; 32], [7; 32]);
    p.a_sends(&a_to_b(1));
    p.settle();
    assert_eq!(p.b_tun, vec![a_to_b(1)]);
    let mut p = Pair::with_psk([7; 32], [8; 32]);
    p.a_sends(&a_to_b(1));
    p.settle();
    assert!(p.b_tun.is_empty());
    // b answered (it cannot tell), but a could not open the response.
    assert_eq!(p.count(false, RESP), 1);
    let drops = &p.a.peer_stats(Pair::PEER).unwrap().drops;
    assert_eq!(drops.get(DropReason::HandshakeFailed), 1);
    // One side with a key and the other without fails too.
    let mut p = Pair::with_psk([0; 32], [8; 32]);
    p.a_sends(&a_to_b(1));
    p.settle();
    assert!(p.b_tun.is_empty());
}

#[test]
fn the_peer_roams_on_authenticated_packets_only() {
    let mut p = Pair::new();
    p.a_sends(&a_to_b(1));
    p.settle();
    // a moves to a new address.
    p.a_addr = addr("192.0.2.99:40000");
    p.a_sends(&a_to_b(2));
    p.settle();
    assert_eq!(p.b.peer_info(Pair::PEER).unwrap().endpoint, Some(p.a_addr));
    // b's answer goes to the new address.
    p.b_sends(&b_to_a(1));
    assert_eq!(p.wire.back().unwrap().to, p.a_addr);
    p.settle();
    assert_eq!(p.a_tun, vec![b_to_a(1)]);
    // A forgery (a's next message, one bit changed) from elsewhere moves
    // nothing.
    let mut out = vec![0u8; 2048];
    let t = p.a.encapsulate(&a_to_b(3), p.now, &mut out).unwrap().unwrap();
    let mut forged = out[..t.len].to_vec();
    forged[t.len - 1] ^= 1;
    let r =
        p.b.decapsulate(addr("203.0.113.66:6666"), &forged, p.now, &mut out);
    assert_eq!(r, Err(DropReason::BadTag));
    assert_eq!(p.b.peer_info(Pair::PEER).unwrap().endpoint, Some(p.a_addr));
}

#[test]
fn replays_are_dropped_and_change_nothing() {
    let mut p = Pair::new();
    p.a_sends(&a_to_b(1));
    p.settle();
    let mut out = vec![0u8; 2048];
    let data = p
        .log
        .iter()
        .find(|s| s.bytes[0] == DATA && s.bytes.len() > 32)
        .unwrap()
        .clone();
    let attacker = addr("203.0.113.66:6666");
    assert_eq!(
        p.b.decapsulate(attacker, &data.bytes, p.now, &mut out),
        Err(DropReason::Replay)
    );
    assert_eq!(p.b.peer_info(Pair::PEER).unwrap().endpoint, Some(addr(A)));
    // A replayed initiation (timestamp not newer) gets no response and
    // leaves the session alone.
    let init = p.log.iter().find(|s| s.bytes[0] == INIT).unwrap().clone();
    p.run_for(secs(1), secs(1));
    assert_eq!(
        p.b.decapsulate(attacker, &init.bytes, p.now, &mut out),
        Err(DropReason::HandshakeReplay)
    );
    assert!(p.b.has_session(Pair::PEER, p.now));
    p.a_sends(&a_to_b(2));
    p.settle();
    assert_eq!(p.b_tun.last(), Some(&a_to_b(2)));
}

#[test]
fn a_flood_of_initiations_from_the_real_peer_is_limited() {
    let mut p = Pair::new();
    let mut out = vec![0u8; 2048];
    // Initiations made by a, delivered 1 ms apart: only the first is
    // answered within MIN_INITIATION_INTERVAL (and each must also carry a
    // newer timestamp).
    let mut responses = 0;
    for i in 0..10u64 {
        let t = p.now + ms(i * 30);
        let mut a = device(1, 40 + i as u8, p.t0);
        let pb = a.add_peer(public(2)).unwrap();
        a.add_allowed_ip(pb, "10.0.0.2/32".parse().unwrap());
        a.set_endpoint(pb, addr(B));
        let Ok(Some(init)) = a.encapsulate(&a_to_b(1), t, &mut out) else {
            panic!()
        };
        let msg = out[..init.len].to_vec();
        let at = p.now + ms(i);
        if let Ok(Action::Reply(_)) = p.b.decapsulate(addr(A), &msg, at, &mut out) {
            responses += 1;
        }
    }
    assert_eq!(responses, 1);
    let drops = &p.b.peer_stats(Pair::PEER).unwrap().drops;
    assert_eq!(
        drops.get(DropReason::HandshakeFlood) + drops.get(DropReason::HandshakeReplay),
        9
    );
}

#[test]
fn under_load_a_cookie_is_required_and_then_the_peer_gets_in() {
    let mut p = Pair::new();
    // Any handshake at all puts b under load.
    p.b.set_load_policy(LoadPolicy {
        handshakes_per_second: 0,
        ..LoadPolicy::default()
    });
    p.a_sends(&a_to_b(1));
    p.settle();
    // b answered the first initiation with a cookie reply, not a response.
    assert_eq!(p.count(false, COOKIE), 1);
    assert_eq!(p.count(false, RESP), 0);
    assert_eq!(p.b.cookie_replies(), 1);
    let first = p.log.iter().find(|s| s.bytes[0] == INIT).unwrap();
    assert_eq!(&first.bytes[132..], &[0; 16], "no mac2 before the cookie");
    // The retry, REKEY_TIMEOUT later, carries mac2 and is answered.
    p.run_for(secs(6), ms(100));
    let second = p.log.iter().filter(|s| s.bytes[0] == INIT).nth(1).unwrap();
    assert_ne!(&second.bytes[132..], &[0; 16]);
    assert_eq!(p.count(false, RESP), 1);
    assert_eq!(p.b_tun, vec![a_to_b(1)]);
}

#[test]
fn under_load_a_spoofed_flood_gets_only_cookie_replies() {
    let mut p = Pair::new();
    p.b.set_load_policy(LoadPolicy {
        handshakes_per_second: 5,
        ..LoadPolicy::default()
    });
    let mut out = vec![0u8; 2048];
    // An attacker that knows b's public key (so mac1 is right) sends
    // initiations from many forged addresses, and never sees the replies.
    let mut replies = 0;
    let mut responses = 0;
    for i in 0..200u32 {
        let mut x = device(90, i as u8, p.t0);
        let pb = x.add_peer(public(2)).unwrap();
        x.add_allowed_ip(pb, "10.0.0.2/32".parse().unwrap());
        x.set_endpoint(pb, addr(B));
        let Ok(Some(t)) = x.encapsulate(&a_to_b(1), p.now, &mut out) else {
            panic!()
        };
        let msg = out[..t.len].to_vec();
        let from = std::net::SocketAddr::from(([203, 0, 113, (i % 250) as u8], 1000 + i as u16));
        match p.b.decapsulate(from, &msg, p.now, &mut out) {
            Ok(Action::Reply(t)) if out[0] == COOKIE => {
                assert_eq!(t.len, 64);
                replies += 1
            }
            Ok(Action::Reply(_)) => responses += 1,
            _ => {}
        }
    }
    // The first few were processed (and refused: unknown peer); once
    // under load, every one got a 64-byte cookie reply and no DH work.
    assert_eq!(responses, 0);
    assert!(replies >= 190, "{replies}");
    assert_eq!(p.b.drops().get(DropReason::UnknownPeer), 5);
    // The real peer still gets in (after its cookie round trip).
    p.a_sends(&a_to_b(1));
    p.run_for(secs(6), ms(100));
    assert_eq!(p.b_tun, vec![a_to_b(1)]);
}

#[test]
fn a_peer_may_only_send_from_its_allowed_ips() {
    let mut p = Pair::new();
    p.a_sends(&a_to_b(1));
    p.settle();
    // b's packet from an address a did not give it.
    let mut out = vec![0u8; 2048];
    let spoofed = packet([10, 0, 0, 9], [10, 0, 0, 1], b"spoofed");
    // b may send it (a's allowed IPs route 10.0.0.1 to a)...
    let t = p.b.encapsulate(&spoofed, p.now, &mut out).unwrap().unwrap();
    let m = out[..t.len].to_vec();
    // ...but a refuses it.
    assert_eq!(
        p.a.decapsulate(p.b_addr, &m, p.now, &mut out),
        Err(DropReason::SourceNotAllowed)
    );
    // And a packet for an address no peer has is not sent at all.
    assert_eq!(
        p.a.encapsulate(&packet([10, 0, 0, 1], [10, 9, 9, 9], b"x"), p.now, &mut out),
        Err(DropReason::NoRoute)
    );
}

#[test]
fn many_peers_each_get_their_own_packets() {
    let t0 = std::time::Instant::now();
    let mut server = device(2, 20, t0);
    let mut clients = Vec::new();
    for i in 0..40u8 {
        let mut c = device(100 + i, i.wrapping_mul(3), t0);
        let ps = c.add_peer(public(2)).unwrap();
        c.add_allowed_ip(ps, "10.0.0.0/24".parse().unwrap());
        c.set_endpoint(ps, addr(B));
        let pc = server.add_peer(public(100 + i)).unwrap();
        server.add_allowed_ip(pc, format!("10.0.0.{}/32", 10 + i).parse().unwrap());
        clients.push(c);
    }
    // A catch-all for the rest of the subnet goes to client 0.
    let p0 = server.peer_id(&public(100)).unwrap();
    server.add_allowed_ip(p0, "10.0.0.0/24".parse().unwrap());
    let mut out = vec![0u8; 2048];
    let mut got = vec![Vec::new(); clients.len()];
    for (i, c) in clients.iter_mut().enumerate() {
        let from = std::net::SocketAddr::from(([192, 0, 2, 10 + i as u8], 51820));
        let hello = packet([10, 0, 0, 10 + i as u8], [10, 0, 0, 1], b"hello");
        let Ok(Some(t)) = c.encapsulate(&hello, t0, &mut out) else {
            panic!()
        };
        let init = out[..t.len].to_vec();
        let Ok(Action::Reply(t)) = server.decapsulate(from, &init, t0, &mut out) else {
            panic!()
        };
        let resp = out[..t.len].to_vec();
        let _ = c.decapsulate(addr(B), &resp, t0, &mut out);
        while let Some(t) = c.poll(t0, &mut out) {
            let m = out[..t.len].to_vec();
            let mut o2 = vec![0u8; 2048];
            if let Ok(Action::WriteToTun(n)) = server.decapsulate(from, &m, t0, &mut o2) {
                assert_eq!(&o2[..n], &hello[..]);
            }
        }
    }
    for i in 0..clients.len() as u8 {
        let to_client = packet([10, 0, 0, 1], [10, 0, 0, 10 + i], b"for you");
        let t = server.encapsulate(&to_client, t0, &mut out).unwrap().unwrap();
        assert_eq!(t.to, std::net::SocketAddr::from(([192, 0, 2, 10 + i], 51820)));
        for (j, c) in clients.iter_mut().enumerate() {
            let mut o2 = vec![0u8; 2048];
            if let Ok(Action::WriteToTun(n)) = c.decapsulate(addr(B), &out[..t.len], t0, &mut o2) {
                got[j].push(o2[..n].to_vec());
            }
        }
    }
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.len(), 1, "client {i} got {} packets", g.len());
    }
    // 10.0.0.200 is nobody's /32: the /24 sends it to client 0.
    let t = server
        .encapsulate(&packet([10, 0, 0, 1], [10, 0, 0, 200], b"x"), t0, &mut out)
        .unwrap()
        .unwrap();
    assert_eq!(t.to, std::net::SocketAddr::from(([192, 0, 2, 10], 51820)));
}

#[test]
fn a_removed_peer_is_gone_with_its_sessions() {
    let mut p = Pair::new();
    p.a_sends(&a_to_b(1));
    p.settle();
    let old = p
        .log
        .iter()
        .rev()
        .find(|s| s.bytes[0] == DATA && s.from == p.a_addr)
        .unwrap()
        .clone();
    p.b.remove_peer(Pair::PEER);
    assert!(p.b.peer_info(Pair::PEER).is_none());
    let mut out = vec![0u8; 2048];
    assert_eq!(
        p.b.decapsulate(p.a_addr, &old.bytes, p.now, &mut out),
        Err(DropReason::UnknownIndex)
    );
    assert_eq!(
        p.b.encapsulate(&b_to_a(1), p.now, &mut out),
        Err(DropReason::NoRoute)
    );
    // a's next initiation is refused: unknown peer.
    p.run_for(secs(200), secs(5));
    p.a_sends(&a_to_b(2));
    p.settle();
    assert!(p.b.drops().get(DropReason::UnknownPeer) >= 1);
}

#[test]
fn a_device_without_a_key_drops_everything_counted() {
    let t0 = std::time::Instant::now();
    let mut d = step07_wireguard::Device::new(
        MTU,
        Box::new(step04_crypto::entropy::Scripted::default()),
        t0,
        UNIX_START,
    );
    let mut out = vec![0u8; 2048];
    assert_eq!(d.encapsulate(&a_to_b(1), t0, &mut out), Err(DropReason::NoKey));
    let mut init = vec![0u8; 148];
    init[0] = INIT;
    assert_eq!(
        d.decapsulate(addr(A), &init, t0, &mut out),
        Err(DropReason::NoKey)
    );
    assert_eq!(d.drops().get(DropReason::NoKey), 2);
}

#[test]
fn in_place_calls_make_the_same_bytes_as_copying_ones() {
    let mut p = Pair::new();
    p.a_sends(&a_to_b(0));
    p.settle();
    let mut q = Pair::new();
    q.a_sends(&a_to_b(0));
    q.settle();
    for i in 1..20u32 {
        let packet = a_to_b(i * 37);
        let mut out = vec![0u8; 2048];
        let t = p.a.encapsulate(&packet, p.now, &mut out).unwrap().unwrap();
        let mut buf = vec![0u8; packet.len() + MAX_OVERHEAD + 16];
        buf[16..16 + packet.len()].copy_from_slice(&packet);
        let t2 =
            q.a.encapsulate_in_place(&mut buf, packet.len(), q.now)
                .unwrap()
                .unwrap();
        assert_eq!(&out[..t.len], &buf[..t2.len]);
        // And open in place on the other side.
        let mut msg = buf[..t2.len].to_vec();
        let opened =
            q.b.decapsulate_in_place(q.a_addr, &mut msg, q.now, &mut out)
                .unwrap();
        let Opened::Packet(range) = opened else {
            panic!("{opened:?}")
        };
        assert_eq!(&msg[range], &packet[..]);
    }
}

#[test]
fn a_new_private_key_stops_the_old_sessions_sending() {
    let mut p = Pair::new();
    p.a_sends(&a_to_b(1));
    p.settle();
    p.a.set_private_key(Some(secret(3)));
    assert!(!p.a.has_session(Pair::PEER, p.now));
    // Its peer is not a peer with our own key; setting our key to the
    // peer's own removes that peer.
    p.a.set_private_key(Some(secret(2)));
    assert!(p.a.peer_info(Pair::PEER).is_none());
    let _ = Initiation::new_checked(&[0u8; 148][..]);
}
