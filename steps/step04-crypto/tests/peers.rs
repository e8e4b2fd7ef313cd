//! Two tunnel ends in memory: the handshake, the data path, the timers,
//! and every attack the step is meant to stop, each shown rejected.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use step02_plain_tunnel::Action;
use step04_crypto::tunnel::{DropReason, Limits};
use step04_crypto::wire::{DataPacket, MessageType};
use step04_crypto::{PeerConfig, Tunnel};

const INITIATION: u8 = MessageType::Initiation.to_u8();
const RESPONSE: u8 = MessageType::Response.to_u8();
const DATA: u8 = MessageType::Data.to_u8();

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_handshake_then_packets_both_ways() {
    let mut p = Pair::new();
    // The first packet waits for the handshake, then goes through.
    let got = p.client_sends(&client_ping(1));
    assert_eq!(got, vec![client_ping(1)]);
    assert!(p.client.has_session(0, p.now) && p.server.has_session(0, p.now));
    assert_eq!(p.server.peer_endpoint(0), Some(addr(CLIENT)));
    // And back.
    let m = Pair::seal(&mut p.server, &server_ping(1), p.now);
    let (_, to_client) = p.exchange(vec![(false, m)]);
    assert_eq!(to_client, vec![server_ping(1)]);
    let (s, c) = (p.server.peer_stats(0).unwrap(), p.client.peer_stats(0).unwrap());
    assert_eq!((s.rx_packets, s.tx_packets, s.handshakes), (1, 1, 1));
    assert_eq!((c.rx_packets, c.tx_packets, c.handshakes), (1, 1, 1));
    assert_eq!(s.drops.total() + c.drops.total(), 0);
}

#[test]
fn nothing_on_the_wire_shows_the_inner_packet() {
    let mut p = Pair::new();
    p.client_sends(&client_ping(1));
    let packet = client_ping(2);
    let m = Pair::seal(&mut p.client, &packet, p.now);
    let needle = b"tunlab tunlab";
    assert!(!m.windows(needle.len()).any(|w| w == needle));
    // Padded to a multiple of 16, plus 16 of header and 16 of tag.
    assert_eq!(m.len(), 32 + packet.len().next_multiple_of(16));
}

#[test]
fn each_direction_has_its_own_key_and_counters_start_at_zero() {
    let mut p = Pair::new();
    let mut out = vec![0u8; 2048];
    // The same inner packet both ways (its addresses do not matter to the
    // cipher): only the keys can make the two messages differ.
    let same = ping([10, 0, 0, 2], [10, 0, 0, 2], 1, b"same bytes");
    let t = p.client.encapsulate(&same, p.now, &mut out).unwrap().unwrap();
    let init = out[..t.len].to_vec();
    let Ok(Action::Reply(r)) = p.server.decapsulate(addr(CLIENT), &init, p.now, &mut out) else {
        panic!("no response")
    };
    let response = out[..r.len].to_vec();
    assert_eq!(
        p.client.decapsulate(addr(SERVER), &response, p.now, &mut out),
        Ok(Action::Nothing)
    );
    let t = p.client.poll(p.now, &mut out).expect("the staged packet");
    let from_client = out[..t.len].to_vec();
    assert!(matches!(
        p.server.decapsulate(addr(CLIENT), &from_client, p.now, &mut out),
        Ok(Action::WriteToTun(_))
    ));
    let from_server = Pair::seal(&mut p.server, &same, p.now);
    let (c, s) = (
        DataPacket::new_checked(&from_client[..]).unwrap(),
        DataPacket::new_checked(&from_server[..]).unwrap(),
    );
    assert_eq!((c.counter(), s.counter()), (0, 0));
    assert_eq!(c.ciphertext().len(), s.ciphertext().len());
    assert_ne!(c.ciphertext(), s.ciphertext());
}

#[test]
fn a_nonce_is_never_used_twice_across_rekeys() {
    let mut p = Pair::new();
    p.client.set_limits(Limits {
        rekey_after_messages: 50,
        ..Limits::default()
    });
    p.client_sends(&client_ping(0));
    let mut seen = HashSet::new();
    let mut sessions = HashSet::new();
    for seq in 1..400 {
        let m = Pair::seal(&mut p.client, &client_ping(seq), p.now);
        let d = DataPacket::new_checked(&m[..]).unwrap();
        assert!(
            seen.insert((d.receiver(), d.counter())),
            "counter {} reused",
            d.counter()
        );
        sessions.insert(d.receiver());
        // Deliver it, and let the timers run the rekey.
        let (got, _) = p.exchange(vec![(true, m)]);
        assert_eq!(got, vec![client_ping(seq)]);
        p.advance(Duration::from_millis(30));
    }
    assert!(
        sessions.len() >= 7,
        "rekeyed every 50 messages: {} sessions",
        sessions.len()
    );
}

#[test]
fn a_replayed_data_message_is_dropped_and_changes_nothing() {
    let mut p = Pair::new();
    p.client_sends(&client_ping(1));
    let m = Pair::seal(&mut p.client, &client_ping(2), p.now);
    let (got, _) = p.exchange(vec![(true, m.clone())]);
    assert_eq!(got.len(), 1);
    let mut out = vec![0u8; 2048];
    // The attacker replays it from elsewhere.
    let err = p
        .server
        .decapsulate(addr("198.51.100.9:1"), &m, p.now, &mut out)
        .unwrap_err();
    assert_eq!(err, DropReason::Replay);
    assert_eq!(p.server.peer_stats(0).unwrap().drops.get(DropReason::Replay), 1);
    assert_eq!(
        p.server.peer_endpoint(0),
        Some(addr(CLIENT)),
        "no roaming on a replay"
    );
    assert_eq!(p.server.peer_stats(0).unwrap().rx_packets, 2);
}

#[test]
fn a_forged_message_with_a_huge_counter_does_not_block_traffic() {
    let mut p = Pair::new();
    p.client_sends(&client_ping(1));
    let m = Pair::seal(&mut p.client, &client_ping(2), p.now);
    let mut forged = m.clone();
    forged[8..16].copy_from_slice(&(1u64 << 50).to_le_bytes());
    let mut out = vec![0u8; 2048];
    let err = p
        .server
        .decapsulate(addr("198.51.100.9:1"), &forged, p.now, &mut out)
        .unwrap_err();
    assert_eq!(err, DropReason::BadTag, "the header is authenticated");
    // The genuine message, and those after it, still get through.
    let (got, _) = p.exchange(vec![(true, m)]);
    assert_eq!(got, vec![client_ping(2)]);
    assert_eq!(p.client_sends(&client_ping(3)), vec![client_ping(3)]);
    assert_eq!(p.server.peer_endpoint(0), Some(addr(CLIENT)));
}

#[test]
fn every_flipped_bit_of_a_data_message_is_caught() {
    let mut p = Pair::new();
    p.client_sends(&client_ping(1));
    let m = Pair::seal(&mut p.client, &client_ping(2), p.now);
    let mut out = vec![0u8; 2048];
    for bit in 0..m.len() * 8 {
        let mut bad = m.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(
            p.server.decapsulate(addr(CLIENT), &bad, p.now, &mut out).is_err(),
            "bit {bit}"
        );
    }
    let (got, _) = p.exchange(vec![(true, m)]);
    assert_eq!(got, vec![client_ping(2)], "the real one still opens");
}

#[test]
fn a_client_with_an_unlisted_key_gets_no_answer() {
    let mut p = Pair::new();
    let mut intruder = client(p.t0, 9, None);
    let mut out = vec![0u8; 2048];
    let t = intruder
        .encapsulate(&client_ping(1), p.now, &mut out)
        .unwrap()
        .unwrap();
    let init = out[..t.len].to_vec();
    let err = p
        .server
        .decapsulate(addr("192.0.2.9:1"), &init, p.now, &mut out)
        .unwrap_err();
    assert_eq!(err, DropReason::UnknownPeer);
    assert_eq!(p.server.drops().get(DropReason::UnknownPeer), 1);
    assert!(!intruder.has_session(0, p.now));
}

#[test]
fn a_replayed_initiation_is_refused_and_the_session_survives() {
    let mut p = Pair::new();
    let mut out = vec![0u8; 2048];
    let t = p
        .client
        .encapsulate(&client_ping(1), p.now, &mut out)
        .unwrap()
        .unwrap();
    let init = out[..t.len].to_vec();
    assert_eq!(init[0], INITIATION);
    p.exchange(vec![(true, init.clone())]);
    assert!(p.server.has_session(0, p.now));
    p.advance(secs(1));
    let before = p.server.peer_stats(0).unwrap().handshakes;
    let err = p
        .server
        .decapsulate(addr("198.51.100.9:1"), &init, p.now, &mut out)
        .unwrap_err();
    assert_eq!(err, DropReason::HandshakeReplay);
    assert_eq!(p.server.peer_stats(0).unwrap().handshakes, before);
    assert_eq!(p.server.peer_endpoint(0), Some(addr(CLIENT)));
    assert_eq!(p.client_sends(&client_ping(2)), vec![client_ping(2)]);
}

#[test]
fn a_late_duplicate_response_never_reaches_the_data_path() {
    let mut p = Pair::new();
    let mut out = vec![0u8; 2048];
    let t = p
        .client
        .encapsulate(&client_ping(1), p.now, &mut out)
        .unwrap()
        .unwrap();
    let init = out[..t.len].to_vec();
    let Ok(Action::Reply(r)) = p.server.decapsulate(addr(CLIENT), &init, p.now, &mut out) else {
        panic!("no response");
    };
    let response = out[..r.len].to_vec();
    assert_eq!(response[0], RESPONSE);
    p.exchange(vec![(false, response.clone())]);
    assert!(p.client.has_session(0, p.now));
    let err = p
        .client
        .decapsulate(addr(SERVER), &response, p.now, &mut out)
        .unwrap_err();
    assert_eq!(err, DropReason::UnexpectedResponse);
    assert_eq!(p.client.peer_stats(0).unwrap().handshakes, 1);
    assert_eq!(p.client_sends(&client_ping(2)), vec![client_ping(2)]);
}

#[test]
fn a_lost_initiation_is_retried_with_backoff_then_given_up() {
    let mut p = Pair::new();
    let mut out = vec![0u8; 2048];
    let first = p
        .client
        .encapsulate(&client_ping(1), p.now, &mut out)
        .unwrap()
        .unwrap();
    let first = out[..first.len].to_vec();
    let mut sent_at = vec![0u64];
    let mut inits = vec![first];
    for ms in (100..=120_000).step_by(100) {
        let now = p.t0 + Duration::from_millis(ms);
        while let Some(t) = p.client.poll(now, &mut out) {
            assert_eq!(out[0], INITIATION);
            sent_at.push(ms);
            inits.push(out[..t.len].to_vec());
        }
    }
    // 1, 2, 4, 8, 8, ... seconds apart, for 90 s.
    let gaps: Vec<u64> = sent_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(&gaps[..5], &[1000, 2000, 4000, 8000, 8000]);
    assert!(*sent_at.last().unwrap() < 90_000);
    // Each retry is a new initiation (new ephemeral and index).
    let unique: HashSet<&Vec<u8>> = inits.iter().collect();
    assert_eq!(unique.len(), inits.len());
}

#[test]
fn the_server_follows_a_roaming_client_only_on_authenticated_packets() {
    let mut p = Pair::new();
    p.client_sends(&client_ping(1));
    let mut out = vec![0u8; 2048];
    let m = Pair::seal(&mut p.client, &client_ping(2), p.now);
    let moved = addr("192.0.2.77:5555");
    // A forgery from the new address does not move the peer...
    let mut forged = m.clone();
    forged[20] ^= 0xff;
    assert!(p.server.decapsulate(moved, &forged, p.now, &mut out).is_err());
    assert_eq!(p.server.peer_endpoint(0), Some(addr(CLIENT)));
    // ...the genuine packet from there does, and replies go there.
    assert!(matches!(
        p.server.decapsulate(moved, &m, p.now, &mut out),
        Ok(Action::WriteToTun(_))
    ));
    assert_eq!(p.server.peer_endpoint(0), Some(moved));
    let t = p
        .server
        .encapsulate(&server_ping(1), p.now, &mut out)
        .unwrap()
        .unwrap();
    assert_eq!(t.to, moved);
}

#[test]
fn a_handshake_flood_costs_bounded_work_and_spares_the_session() {
    let mut p = Pair::new();
    p.client_sends(&client_ping(1));
    let mut out = vec![0u8; 2048];
    // An attacker replays garbage initiations that carry a valid mac1
    // (mac1 only needs our public key) as fast as it can.
    let mut stranger = client(p.t0, 9, None);
    let t = stranger
        .encapsulate(&client_ping(1), p.now, &mut out)
        .unwrap()
        .unwrap();
    let init = out[..t.len].to_vec();
    let mut limited = 0;
    for _ in 0..1000 {
        if p.server
            .decapsulate(addr("198.51.100.9:1"), &init, p.now, &mut out)
            == Err(DropReason::RateLimited)
        {
            limited += 1;
        }
    }
    let d = p.server.drops();
    assert_eq!(d.get(DropReason::UnknownPeer), 5, "only the burst costs a DH");
    assert_eq!(limited, 995);
    // Another source, and the real client, are not affected.
    assert_eq!(p.client_sends(&client_ping(2)), vec![client_ping(2)]);
    // A message not made for our key is refused before any DH.
    let mut wrong = init.clone();
    wrong[120] ^= 1;
    assert_eq!(
        p.server
            .decapsulate(addr("198.51.100.10:1"), &wrong, p.now, &mut out),
        Err(DropReason::BadMac)
    );
}

#[test]
fn the_initiator_rekeys_on_time_and_the_old_session_covers_packets_in_flight() {
    let mut p = Pair::new();
    p.client_sends(&client_ping(1));
    p.advance(secs(121));
    // Sent on the old session just before the rekey, delivered after.
    let in_flight = Pair::seal(&mut p.client, &client_ping(2), p.now);
    let old = DataPacket::new_checked(&in_flight[..]).unwrap().receiver();
    // The timers start the rekey; the server answers; the client confirms.
    p.exchange(Vec::new());
    assert_eq!(p.client.peer_stats(0).unwrap().handshakes, 2);
    let fresh = Pair::seal(&mut p.client, &client_ping(3), p.now);
    assert_ne!(DataPacket::new_checked(&fresh[..]).unwrap().receiver(), old);
    let (got, _) = p.exchange(vec![(true, in_flight.clone()), (true, fresh)]);
    assert_eq!(got, vec![client_ping(2), client_ping(3)]);
    // After reject_after_time the old session is gone.
    p.advance(secs(60));
    p.exchange(Vec::new());
    let mut out = vec![0u8; 2048];
    let err = p
        .server
        .decapsulate(addr(CLIENT), &in_flight, p.now, &mut out)
        .unwrap_err();
    assert!(
        matches!(err, DropReason::UnknownIndex | DropReason::Replay),
        "{err}"
    );
}

#[test]
fn a_session_past_reject_after_time_is_never_used() {
    let mut p = Pair::new();
    p.client_sends(&client_ping(1));
    let m = Pair::seal(&mut p.client, &client_ping(2), p.now);
    p.advance(secs(181));
    let mut out = vec![0u8; 2048];
    let err = p
        .server
        .decapsulate(addr(CLIENT), &m, p.now, &mut out)
        .unwrap_err();
    assert_eq!(err, DropReason::Expired);
    // The client does not send on it either: it starts a new handshake.
    let t = p
        .client
        .encapsulate(&client_ping(3), p.now, &mut out)
        .unwrap()
        .unwrap();
    assert_eq!(out[0], INITIATION, "{t:?}");
}

#[test]
fn counters_never_wrap() {
    let mut p = Pair::new();
    let limits = Limits {
        rekey_after_messages: 5,
        reject_after_messages: 8,
        ..Limits::default()
    };
    p.client.set_limits(limits.clone());
    p.server.set_limits(limits);
    p.client_sends(&client_ping(0));
    // Send without delivering: no rekey can finish, so the session runs
    // out of counters and refuses to go on.
    let mut out = vec![0u8; 2048];
    let mut counters = Vec::new();
    for seq in 1..20 {
        match p.client.encapsulate(&client_ping(seq), p.now, &mut out) {
            Ok(Some(t)) if out[0] == DATA => {
                counters.push(DataPacket::new_checked(&out[..t.len]).unwrap().counter())
            }
            _ => {}
        }
    }
    assert_eq!(counters, (1..8).collect::<Vec<u64>>());
}

#[test]
fn a_client_may_not_send_from_another_address() {
    let t0 = std::time::Instant::now();
    let mut server = server(t0, &[(1, "10.0.0.2/32"), (3, "10.0.0.3/32")]);
    let mut p = Pair::new();
    p.server = std::mem::replace(&mut server, client(t0, 9, None));
    p.client_sends(&client_ping(1));
    let spoofed = ping([10, 0, 0, 3], [10, 0, 0, 1], 1, b"I am client 3");
    let m = Pair::seal(&mut p.client, &spoofed, p.now);
    let mut out = vec![0u8; 2048];
    assert_eq!(
        p.server.decapsulate(addr(CLIENT), &m, p.now, &mut out),
        Err(DropReason::SourceNotAllowed)
    );
}

#[test]
fn the_server_routes_by_allowed_addresses() {
    let t0 = std::time::Instant::now();
    let mut server = server(t0, &[(1, "10.0.0.2/32"), (3, "10.0.0.3/32")]);
    let mut c1 = client(t0, 1, None);
    let mut c3 = client(t0, 3, None);
    let mut out = vec![0u8; 2048];
    for (c, from, src) in [
        (&mut c1, "192.0.2.2:1", [10, 0, 0, 2]),
        (&mut c3, "192.0.2.3:1", [10, 0, 0, 3]),
    ] {
        let t = c
            .encapsulate(&ping(src, [10, 0, 0, 1], 1, b"hi"), t0, &mut out)
            .unwrap()
            .unwrap();
        let init = out[..t.len].to_vec();
        let Ok(Action::Reply(r)) = server.decapsulate(addr(from), &init, t0, &mut out) else {
            panic!()
        };
        let resp = out[..r.len].to_vec();
        c.decapsulate(addr(SERVER), &resp, t0, &mut out).unwrap();
        let staged = c.poll(t0, &mut out).unwrap();
        let m = out[..staged.len].to_vec();
        assert!(matches!(
            server.decapsulate(addr(from), &m, t0, &mut out),
            Ok(Action::WriteToTun(_))
        ));
    }
    for (dst, to) in [([10, 0, 0, 2], "192.0.2.2:1"), ([10, 0, 0, 3], "192.0.2.3:1")] {
        let t = server
            .encapsulate(&ping([10, 0, 0, 1], dst, 1, b"hi"), t0, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(t.to, addr(to));
    }
    assert_eq!(
        server.encapsulate(&ping([10, 0, 0, 1], [10, 0, 0, 4], 1, b"hi"), t0, &mut out),
        Err(DropReason::NoRoute)
    );
}

/// Connects each client (key, underlay address, a tunnel address it may
/// use) to `server`: a handshake and a first packet from that address.
fn connect(server: &mut Tunnel, clients: &mut [(&mut Tunnel, &str, [u8; 4])], t0: std::time::Instant) {
    let mut out = vec![0u8; 2048];
    for (c, from, src) in clients.iter_mut() {
        let t = c
            .encapsulate(&ping(*src, [10, 0, 0, 1], 1, b"hi"), t0, &mut out)
            .unwrap()
            .unwrap();
        let init = out[..t.len].to_vec();
        let Ok(Action::Reply(r)) = server.decapsulate(addr(from), &init, t0, &mut out) else {
            panic!("no response for {from}")
        };
        let resp = out[..r.len].to_vec();
        c.decapsulate(addr(SERVER), &resp, t0, &mut out).unwrap();
        let staged = c.poll(t0, &mut out).unwrap();
        let m = out[..staged.len].to_vec();
        assert!(matches!(
            server.decapsulate(addr(from), &m, t0, &mut out),
            Ok(Action::WriteToTun(_))
        ));
    }
}

#[test]
fn overlapping_prefixes_route_to_the_most_specific_and_bind_sources_to_it() {
    let t0 = std::time::Instant::now();
    // Client 1 has 10.0.0.0/24, except 10.0.0.3, which is client 3's;
    // fd00::/64 likewise, except fd00::3.
    let mut server = server(t0, &[(1, "10.0.0.0/24"), (3, "10.0.0.3/32")]);
    server.add_peer(PeerConfig {
        public: public(5),
        allowed: vec!["fd00::/64".parse().unwrap()],
        endpoint: None,
        keepalive: None,
    });
    let (mut c1, mut c3) = (client(t0, 1, None), client(t0, 3, None));
    connect(
        &mut server,
        &mut [
            (&mut c1, "192.0.2.2:1", [10, 0, 0, 2]),
            (&mut c3, "192.0.2.3:1", [10, 0, 0, 3]),
        ],
        t0,
    );
    let mut out = vec![0u8; 2048];
    for (dst, to) in [
        ([10, 0, 0, 3], "192.0.2.3:1"),
        ([10, 0, 0, 4], "192.0.2.2:1"),
        ([10, 0, 0, 254], "192.0.2.2:1"),
    ] {
        let t = server
            .encapsulate(&ping([10, 0, 0, 1], dst, 1, b"hi"), t0, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(t.to, addr(to), "{dst:?}");
    }
    assert_eq!(
        server.encapsulate(&ping([10, 0, 0, 1], [10, 0, 1, 1], 1, b"hi"), t0, &mut out),
        Err(DropReason::NoRoute)
    );
    // Client 1 may send from any address of its /24 but client 3's: that
    // one routes to client 3, so client 1 cannot take it.
    let from_nine = Pair::seal(&mut c1, &ping([10, 0, 0, 9], [10, 0, 0, 1], 2, b"hi"), t0);
    assert!(matches!(
        server.decapsulate(addr("192.0.2.2:1"), &from_nine, t0, &mut out),
        Ok(Action::WriteToTun(_))
    ));
    let as_three = Pair::seal(&mut c1, &ping([10, 0, 0, 3], [10, 0, 0, 1], 3, b"hi"), t0);
    assert_eq!(
        server.decapsulate(addr("192.0.2.2:1"), &as_three, t0, &mut out),
        Err(DropReason::SourceNotAllowed)
    );
    // An IPv6 packet: no route for client 1 (fd00::/64 is client 5's).
    let v6 = {
        let b = etherparse::PacketBuilder::ipv6(
            [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            64,
        )
        .icmpv6_echo_request(1, 1);
        let mut v = Vec::new();
        b.write(&mut v, b"hi").unwrap();
        v
    };
    let m = Pair::seal(&mut c1, &v6, t0);
    assert_eq!(
        server.decapsulate(addr("192.0.2.2:1"), &m, t0, &mut out),
        Err(DropReason::SourceNotAllowed)
    );
}

#[test]
fn a_client_with_keepalive_connects_at_once_and_keeps_the_session_alive() {
    let t0 = std::time::Instant::now();
    let mut p = Pair {
        server: server(t0, &[(1, "10.0.0.2/32")]),
        client: client(t0, 1, Some(secs(25))),
        t0,
        now: t0,
    };
    p.exchange(Vec::new());
    assert!(p.client.has_session(0, p.now) && p.server.has_session(0, p.now));
    // Ten minutes of silence: keepalives and rekeys keep it up.
    for _ in 0..600 {
        p.advance(secs(1));
        p.exchange(Vec::new());
        assert!(p.client.has_session(0, p.now));
    }
    assert!(p.client.peer_stats(0).unwrap().handshakes >= 5);
    assert_eq!(p.client_sends(&client_ping(1)), vec![client_ping(1)]);
    assert_eq!(p.server.peer_stats(0).unwrap().drops.total(), 0);
}

#[test]
fn a_server_with_nowhere_to_send_drops_once_and_stays_quiet() {
    let mut p = Pair::new();
    let mut out = vec![0u8; 2048];
    assert_eq!(
        p.server.encapsulate(&server_ping(1), p.now, &mut out),
        Err(DropReason::NoEndpoint)
    );
    for _ in 0..100 {
        p.advance(Duration::from_millis(200));
        assert_eq!(p.server.poll(p.now, &mut out), None);
    }
    assert_eq!(p.server.peer_stats(0).unwrap().drops.total(), 1);
}

#[test]
fn a_responder_with_packets_waiting_does_not_cross_the_handshake_it_answered() {
    let mut p = Pair::new();
    // The server had a session, the client restarted and lost it.
    p.client_sends(&client_ping(1));
    p.client = client(p.t0, 1, None);
    p.advance(secs(200));
    p.exchange(Vec::new());
    let mut out = vec![0u8; 2048];
    // The server has something for the client, and the client's new
    // initiation arrives: the server answers and waits for confirmation.
    let sent = p.server.encapsulate(&server_ping(1), p.now, &mut out);
    assert!(matches!(sent, Ok(Some(_))) && out[0] == INITIATION, "{sent:?}");
    let t = p
        .client
        .encapsulate(&client_ping(2), p.now, &mut out)
        .unwrap()
        .unwrap();
    let init = out[..t.len].to_vec();
    let Ok(Action::Reply(_)) = p.server.decapsulate(addr(CLIENT), &init, p.now, &mut out) else {
        panic!("no response")
    };
    let handshakes_before = p.server.peer_stats(0).unwrap().handshakes;
    // Its timers fire before the confirmation comes: no new initiation
    // (after a second without one, it would try again).
    p.advance(Duration::from_millis(500));
    while let Some(t) = p.server.poll(p.now, &mut out) {
        assert_ne!(out[0], INITIATION, "{t:?}");
    }
    assert_eq!(p.server.peer_stats(0).unwrap().handshakes, handshakes_before);
}

#[test]
fn a_rekey_under_load_is_one_handshake() {
    let mut p = Pair::new();
    p.client_sends(&client_ping(0));
    p.advance(secs(121));
    let mut out = vec![0u8; 2048];
    // A packet on the old session makes the rekey due; the timers start it.
    let a = Pair::seal(&mut p.client, &client_ping(1), p.now);
    let t = p.client.poll(p.now, &mut out).expect("the rekey");
    assert_eq!(out[0], INITIATION);
    let init = out[..t.len].to_vec();
    // More packets go out on the old session while the handshake is on
    // its way.
    let b = Pair::seal(&mut p.client, &client_ping(2), p.now);
    let (got, _) = p.exchange(vec![(true, a), (true, b), (true, init)]);
    assert_eq!(got, vec![client_ping(1), client_ping(2)]);
    // The rekey is done: nothing more to start.
    p.advance(Duration::from_millis(100));
    while let Some(t) = p.client.poll(p.now, &mut out) {
        assert_ne!(out[0], INITIATION, "a second handshake: {t:?}");
    }
    assert_eq!(p.client.peer_stats(0).unwrap().handshakes, 2);
    assert_eq!(p.server.peer_stats(0).unwrap().drops.total(), 0);
}

#[test]
fn a_packet_while_the_responder_waits_for_confirmation_does_not_start_a_handshake() {
    let mut p = Pair::new();
    let mut out = vec![0u8; 2048];
    let t = p
        .client
        .encapsulate(&client_ping(1), p.now, &mut out)
        .unwrap()
        .unwrap();
    let init = out[..t.len].to_vec();
    let Ok(Action::Reply(_)) = p.server.decapsulate(addr(CLIENT), &init, p.now, &mut out) else {
        panic!("no response")
    };
    // The server's TUN gives it a packet for the client before the
    // client's confirmation arrives: it waits, and sends it after.
    assert_eq!(p.server.encapsulate(&server_ping(1), p.now, &mut out), Ok(None));
    let response = {
        let mut fresh = Pair::new();
        let t = fresh
            .client
            .encapsulate(&client_ping(1), fresh.now, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(out[..t.len], init[..], "the runs are deterministic");
        let Ok(Action::Reply(r)) = fresh.server.decapsulate(addr(CLIENT), &init, fresh.now, &mut out) else {
            panic!()
        };
        out[..r.len].to_vec()
    };
    let (to_server, to_client) = p.exchange(vec![(false, response)]);
    assert_eq!(to_server, vec![client_ping(1)]);
    assert_eq!(to_client, vec![server_ping(1)]);
    assert_eq!(p.server.peer_stats(0).unwrap().handshakes, 1);
    assert_eq!(p.client.peer_stats(0).unwrap().handshakes, 1);
}

#[test]
fn a_client_finds_a_restarted_server_within_seconds_of_sending() {
    let mut p = Pair::new();
    p.client_sends(&client_ping(1));
    // The server restarts: it has forgotten the session.
    p.server = server(p.t0, &[(1, "10.0.0.2/32")]);
    p.advance(secs(1));
    let mut delivered_at = None;
    for i in 1..=40u16 {
        p.advance(secs(1));
        if !p.client_sends(&client_ping(i)).is_empty() {
            delivered_at = Some(i);
            break;
        }
    }
    let at = delivered_at.expect("the client never got through");
    assert!((14..=17).contains(&at), "got through after {at} s");
    assert!(p.server.drops().get(DropReason::UnknownIndex) > 0);
}

#[test]
fn a_receiver_that_has_nothing_to_say_still_confirms_it_is_alive() {
    let mut p = Pair::new();
    p.client_sends(&client_ping(1));
    // One-way traffic for a minute: the server answers with a keepalive
    // every 10 s or so, and the client never thinks it gone.
    for seq in 2..60 {
        p.advance(secs(1));
        assert_eq!(p.client_sends(&client_ping(seq)), vec![client_ping(seq)]);
    }
    assert_eq!(
        p.client.peer_stats(0).unwrap().handshakes,
        1,
        "no handshake for silence"
    );
}

#[test]
fn packets_staged_for_a_handshake_that_gets_no_answer_are_counted() {
    let mut p = Pair::new();
    let mut out = vec![0u8; 2048];
    for seq in 1..=3 {
        let _ = p.client.encapsulate(&client_ping(seq), p.now, &mut out);
    }
    for _ in 0..100 {
        p.advance(secs(1));
        while p.client.poll(p.now, &mut out).is_some() {}
    }
    assert_eq!(
        p.client.peer_stats(0).unwrap().drops.get(DropReason::Unanswered),
        3
    );
}

#[test]
fn packets_the_server_drops_after_opening_them_do_not_make_the_client_rehandshake() {
    let t0 = std::time::Instant::now();
    let mut p = Pair {
        server: server(t0, &[(1, "10.0.0.2/32")]),
        client: client(t0, 1, Some(secs(25))),
        t0,
        now: t0,
    };
    p.exchange(Vec::new());
    // A router solicitation from the client's link-local address every
    // 4 s: sealed, opened, and dropped by the server (not the client's
    // address). The server answers nothing, but its passive keepalive
    // tells the client the session is alive.
    let rs = {
        let b = etherparse::PacketBuilder::ipv6(
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            255,
        )
        .icmpv6(etherparse::Icmpv6Type::RouterSolicitation);
        let mut v = Vec::new();
        b.write(&mut v, &[0u8; 4]).unwrap();
        v
    };
    for _ in 0..90 {
        p.advance(secs(1));
        if p.now.duration_since(t0).as_secs().is_multiple_of(4) {
            let mut out = vec![0u8; 2048];
            if let Ok(Some(t)) = p.client.encapsulate(&rs, p.now, &mut out) {
                let m = out[..t.len].to_vec();
                p.exchange(vec![(true, m)]);
            }
        }
        p.exchange(Vec::new());
    }
    assert_eq!(p.client.peer_stats(0).unwrap().handshakes, 1);
    assert!(
        p.server
            .peer_stats(0)
            .unwrap()
            .drops
            .get(DropReason::SourceNotAllowed)
            > 10
    );
}
