//! Handshake floods, in memory: an attacker who knows the server's public
//! key sends valid-looking initiations (mac1 right) from thousands of
//! forged source addresses, while an established client keeps sending and
//! rekeys, and a new client connects. The Diffie-Hellman operations each
//! end does are counted (`crypto::dh_count`), as the cost of a flood.

mod common;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use step02_plain_tunnel::{Action, Transmit};
use step04_crypto::Tunnel;
use step04_crypto::crypto::{dh_count, mac};
use step04_crypto::noise::{self, Identity};
use step04_crypto::tunnel::{DropReason, Limits};
use step04_crypto::wire::{INITIATION_LEN, ResponsePacket};

const CLIENT3: &str = "192.0.2.3:40000";

/// Valid-looking initiations to the server (key 2) from a stranger (key
/// 9): mac1 is right, so each one is worth Diffie-Hellman work to find
/// out that the key is not a peer's. `n` different ones.
fn forged_initiations(n: u8) -> Vec<Vec<u8>> {
    let stranger = Identity::new(secret(9));
    (0..n)
        .map(|i| {
            let mut m = vec![0u8; INITIATION_LEN];
            noise::initiate(
                &stranger,
                &public(2),
                secret(100u8.wrapping_add(i)),
                u32::from(i),
                noise::tai64n(Duration::from_secs(u64::from(i))),
                &mut m,
            )
            .unwrap();
            m
        })
        .collect()
}

/// The `i`th of `n` forged source addresses: half IPv4 (198.18.0.0/15),
/// half IPv6, each in a /64 of its own.
fn forged_source(i: u32, n: u32) -> SocketAddr {
    let i = i % n;
    let ip = if i.is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::from(0xc612_0000 | (i / 2)))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xf, (i / 2) as u16, 0, 0, 0, 1))
    };
    SocketAddr::new(ip, 1024 + (i % 50_000) as u16)
}

/// Three ends on one simulated network, messages delivered at once.
struct Net {
    server: Tunnel,
    client: Tunnel,
    newcomer: Tunnel,
    /// Diffie-Hellman operations each end did.
    dh: [u64; 3],
    /// Whether the newcomer has started.
    started: bool,
    /// Inner packets each TUN device got.
    tun: [Vec<Vec<u8>>; 3],
}

impl Net {
    /// Runs `f` on end `which` (0 server, 1 client, 2 newcomer), counting
    /// its Diffie-Hellman work.
    fn on<T>(&mut self, which: usize, f: impl FnOnce(&mut Tunnel) -> T) -> T {
        let before = dh_count();
        let end = match which {
            0 => &mut self.server,
            1 => &mut self.client,
            _ => &mut self.newcomer,
        };
        let out = f(end);
        self.dh[which] += dh_count() - before;
        out
    }

    /// Delivers `wire` (to, from, message), and what it causes, and what
    /// every end's timers send, until all is quiet.
    fn settle(&mut self, now: Instant, mut wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>) {
        let mut out = vec![0u8; 2048];
        let addrs = [addr(SERVER), addr(CLIENT), addr(CLIENT3)];
        for _ in 0..100 {
            let ends = if self.started { 3 } else { 2 };
            for (which, &from) in addrs.iter().enumerate().take(ends) {
                while let Some(Transmit { to, len }) = self.on(which, |t| t.poll(now, &mut out)) {
                    wire.push_back((to, from, out[..len].to_vec()));
                }
            }
            if wire.is_empty() {
                return;
            }
            while let Some((to, from, message)) = wire.pop_front() {
                let Some(which) = addrs.iter().position(|a| *a == to) else {
                    continue;
                };
                match self.on(which, |t| t.decapsulate(from, &message, now, &mut out)) {
                    Ok(Action::WriteToTun(n)) => self.tun[which].push(out[..n].to_vec()),
                    Ok(Action::Reply(t)) => wire.push_back((t.to, to, out[..t.len].to_vec())),
                    Ok(Action::Nothing) | Err(_) => {}
                }
            }
        }
        panic!("the network never went quiet");
    }

    /// Sends an inner packet from end `which` into the tunnel.
    fn send(&mut self, which: usize, now: Instant, packet: &[u8]) {
        let mut out = vec![0u8; 2048];
        let from = [addr(SERVER), addr(CLIENT), addr(CLIENT3)][which];
        let sent = self.on(which, |t| t.encapsulate(packet, now, &mut out));
        let wire = match sent {
            Ok(Some(t)) => VecDeque::from([(t.to, from, out[..t.len].to_vec())]),
            _ => VecDeque::new(),
        };
        self.settle(now, wire);
    }
}

#[test]
fn under_an_initiation_flood_data_flows_a_rekey_and_a_new_client_get_through() {
    let t0 = Instant::now();
    let mut net = Net {
        server: server(t0, &[(1, "10.0.0.2/32"), (3, "10.0.0.3/32")]),
        client: client(t0, 1, Some(Duration::from_secs(25))),
        newcomer: client(t0, 3, Some(Duration::from_secs(25))),
        dh: [0; 3],
        started: false,
        tun: Default::default(),
    };
    let limits = Limits::default();
    // The established client: a session at 0 s, kept alive until the
    // flood, which begins at 112 s and lasts 12 s. Its session is 120 s
    // old at 120 s: it rekeys during the flood.
    for s in 0..112 {
        net.settle(t0 + Duration::from_secs(s), VecDeque::new());
    }
    assert!(net.client.has_session(0, t0 + Duration::from_secs(112)));
    assert_eq!(net.client.peer_stats(0).unwrap().handshakes, 1);
    let dh_before = net.dh;

    let forged = forged_initiations(64);
    // 8000 initiations a second from 20,000 addresses (each one comes
    // back every 2.5 s, which a table of 4096 could not hold).
    const RATE: u32 = 8000;
    const SOURCES: u32 = 20_000;
    let (flood_start, flood_end) = (112_000u64, 124_000u64);
    let newcomer_start = 114_000u64;
    let (mut flooded, mut pings, mut pongs) = (0u32, 0u16, 0usize);
    let mut refused = step04_crypto::tunnel::Drops::default();
    let mut newcomer_done = None;
    let mut out = vec![0u8; 2048];
    for ms in flood_start..flood_end {
        let now = t0 + Duration::from_millis(ms);
        for _ in 0..RATE / 1000 {
            let from = forged_source(flooded, SOURCES);
            let message = &forged[flooded as usize % forged.len()];
            match net.on(0, |s| s.decapsulate(from, message, now, &mut out)) {
                Err(reason) => refused.increment(reason),
                Ok(action) => panic!("a forged initiation got {action:?}"),
            }
            flooded += 1;
        }
        // The established client pings ten times a second, and the server
        // answers each ping.
        if ms % 100 == 0 {
            pings += 1;
            net.send(1, now, &client_ping(pings));
            net.send(0, now, &server_ping(pings));
        }
        // The new client starts at 114 s (its keepalive makes it
        // handshake at once) and pings once connected.
        if ms >= newcomer_start {
            net.started = true;
            net.settle(now, VecDeque::new());
            if newcomer_done.is_none() && net.server.has_session(1, now) && net.newcomer.has_session(0, now) {
                newcomer_done = Some(ms - newcomer_start);
                net.send(2, now, &ping([10, 0, 0, 3], [10, 0, 0, 1], 1, b"hello"));
            }
        }
        pongs = net.tun[1].len();
    }

    let flood_secs = (flood_end - flood_start) / 1000;
    let server_dh = net.dh[0] - dh_before[0];
    let d = &refused;
    eprintln!(
        "{flooded} forged initiations from {SOURCES} addresses in {flood_secs} s; \
         the server did {server_dh} Diffie-Hellman operations \
         (without its budget: at least {}); the new client was in after {} ms; \
         the forgeries: dropped {d}",
        2 * u64::from(flooded),
        newcomer_done.unwrap_or(u64::MAX)
    );
    // The established client: every ping through, both ways, and its
    // rekey done under the flood.
    assert_eq!(
        net.tun[0].len(),
        usize::from(pings) + 1,
        "pings (and the new client's)"
    );
    assert_eq!(pongs, usize::from(pings), "answers");
    assert_eq!(
        net.client.peer_stats(0).unwrap().handshakes,
        2,
        "the rekey at 120 s"
    );
    // The new client: in within a few seconds, and its ping through.
    let took = newcomer_done.expect("the new client never got in");
    assert!(took <= 3000, "the new client took {took} ms");
    assert!(net.tun[0].iter().any(|p| p[12..16] == [10, 0, 0, 3]));
    // The work: the budget's worth of handshake messages a second (each
    // at most 2 Diffie-Hellman operations to refuse, 4 to answer), not
    // one per forged initiation.
    let budget = u64::from(limits.handshake_budget);
    let bound = 4 * budget * (flood_secs + 1);
    assert!(
        server_dh <= bound,
        "{server_dh} Diffie-Hellman operations, more than {bound}"
    );
    assert!(
        d.get(DropReason::Overloaded) > u64::from(flooded) * 9 / 10,
        "most of the flood is refused before any work: {d}"
    );
    // Each forgery is one counted drop; the rest are real clients' first
    // tries, refused as first contacts (the new client's, and the
    // established client's first rekey initiation), whose retries got in.
    let all = net.server.drops();
    assert_eq!(all.get(DropReason::UnknownPeer), d.get(DropReason::UnknownPeer));
    let first_tries = all.get(DropReason::Overloaded) - d.get(DropReason::Overloaded);
    assert_eq!(all.total(), d.total() + first_tries);
    assert!(first_tries <= 2, "{first_tries} real first tries refused");
}

#[test]
fn forged_responses_cost_bounded_work_and_the_real_one_still_completes() {
    let mut p = Pair::new();
    let mut out = vec![0u8; 2048];
    // The client's initiation goes out; an attacker on the path sees it,
    // and so its sender index, and the server's real response.
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
    // Forgeries of it: the tag changed, mac1 made right again (it needs
    // only the client's public key), from 5000 addresses in one second.
    let mut forged = response.clone();
    forged[44] ^= 0xff;
    let covered = ResponsePacket::new_checked(&forged[..])
        .unwrap()
        .mac1_covered()
        .to_vec();
    let mac1 = mac(&noise::mac1_key(&public(1)), &covered);
    forged[60..76].copy_from_slice(&mac1);
    let before = dh_count();
    for i in 0..5000u32 {
        let now = p.now + Duration::from_micros(u64::from(i) * 200);
        let result = p
            .client
            .decapsulate(forged_source(i, 5000), &forged, now, &mut out);
        assert!(result.is_err(), "a forged response was accepted");
    }
    let spent = dh_count() - before;
    let d = p.client.drops();
    eprintln!("5000 forged responses cost the client {spent} Diffie-Hellman operations; dropped {d}");
    let budget = u64::from(Limits::default().handshake_budget);
    assert!(spent <= 2 * 2 * budget, "{spent} Diffie-Hellman operations");
    assert!(d.get(DropReason::Overloaded) > 4000, "{d}");
    // The real response, at the end of that second, from the server's
    // address: where the initiation went, so no first contact; the half
    // of the budget the forgeries could not use is there for it.
    let late = p.now + Duration::from_millis(999);
    assert_eq!(
        p.client.decapsulate(addr(SERVER), &response, late, &mut out),
        Ok(Action::Nothing)
    );
    p.now = late;
    let (to_server, _) = p.exchange(Vec::new());
    assert_eq!(
        to_server,
        vec![client_ping(1)],
        "the staged ping, on the new session"
    );
    assert_eq!(p.client.peer_stats(0).unwrap().handshakes, 1);
}
