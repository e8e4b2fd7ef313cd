//! The encrypted data path of step 04: [`Tunnel::encapsulate`] and
//! [`Tunnel::decapsulate`] of one 1400-byte IPv4 packet on an established
//! session, the bare AEAD calls beneath them ([`seal`], [`open`]), and the
//! replay window ([`ReplayWindow`]) that every data message passes; and
//! what a handshake message costs the receiver (`step04/handshake/*`),
//! which is what the handshake limiter's budget bounds under a flood.
//!
//! Why it matters for a tunnel: these calls run once per packet, and with
//! one-packet-per-syscall I/O on two cores they set how many packets a
//! second the tunnel can carry. Comparing `tunnel/*` with `aead/*` shows
//! what the core adds around the cipher (routing, padding, the session
//! lookup, the window, the counters); comparing with step 02's bench shows
//! what encryption costs.
//!
//! How the tunnel is set up: two [`Tunnel`]s in memory, a client and a
//! server with fixed keys and a [`Scripted`] [`Entropy`](step04_crypto::entropy::Entropy),
//! carry one handshake back to back (initiation, response, first data
//! message), as `tests/peers.rs` does. Time is frozen at the handshake's
//! instant, so no timer (rekey, expiry) fires while measuring.
//!
//! Why decapsulate needs a fresh message each time: the replay window
//! refuses a counter it has seen, so decapsulating one message twice would
//! measure the cheap refusal, not the decryption. The benchmark therefore
//! uses the real API on both sides: in criterion's untimed setup the client
//! encapsulates a batch of genuine messages (counters in order), and the
//! server decapsulates each of them once in the timed part
//! (`iter_batched_ref`). The batch is small ([`BATCH`] messages, about
//! 90 KiB) so it stays in the cache, as a burst just read from a socket
//! would.
//!
//! Run with `cargo bench -p tunlab-benches --features bench --bench step04_data_path`.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use step02_plain_tunnel::Action;
use step04_crypto::crypto::{TAG_LEN, dh, open, seal};
use step04_crypto::entropy::Scripted;
use step04_crypto::noise::{self, Identity};
use step04_crypto::replay::{Check, ReplayWindow, WINDOW};
use step04_crypto::tunnel::MAX_OVERHEAD;
use step04_crypto::wire::{DATA_HEADER_LEN, INITIATION_LEN, InitiationPacket};
use step04_crypto::{PeerConfig, PublicKey, StaticSecret, Tunnel};

/// The inner packet's length: near the largest over a 1500-byte underlay.
const PACKET_LEN: usize = 1400;
/// WireGuard's default tunnel MTU.
const MTU: usize = 1420;
/// Messages sealed ahead for each timed batch of decapsulations.
const BATCH: u64 = 64;

const SERVER: &str = "192.0.2.1:51820";
const CLIENT: &str = "192.0.2.2:40000";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a valid socket address")
}

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

/// A client (key 1) and a server (key 2) that have completed a handshake
/// at `now`: each has a current session with the other.
fn established(now: Instant, packet: &[u8]) -> (Tunnel, Tunnel) {
    // The wall clock only dates the handshake's timestamp.
    let unix_now = Duration::from_secs(1_800_000_000);
    let (client_secret, server_secret) = (StaticSecret::from([1; 32]), StaticSecret::from([2; 32]));
    let (client_public, server_public) = (PublicKey::from(&client_secret), PublicKey::from(&server_secret));
    let mut client = Tunnel::new(
        client_secret,
        MTU,
        Box::new(Scripted::new(&[[10; 32]], &[0x100])),
        now,
        unix_now,
    );
    client.add_peer(PeerConfig {
        public: server_public,
        allowed: vec!["0.0.0.0/0".parse().expect("a valid prefix")],
        endpoint: Some(addr(SERVER)),
        keepalive: None,
    });
    let mut server = Tunnel::new(
        server_secret,
        MTU,
        Box::new(Scripted::new(&[[20; 32]], &[0x200])),
        now,
        unix_now,
    );
    server.add_peer(PeerConfig {
        public: client_public,
        allowed: vec!["10.0.0.2/32".parse().expect("a valid prefix")],
        endpoint: None,
        keepalive: None,
    });

    // The first packet is staged and the initiation goes out instead; the
    // response completes the client's side, and the staged packet, the
    // first data message, confirms the session to the server.
    let (mut wire, mut out) = (vec![0u8; 2048], vec![0u8; 2048]);
    let initiation = client
        .encapsulate(packet, now, &mut wire)
        .expect("the client accepts the packet")
        .expect("an initiation");
    let Ok(Action::Reply(response)) =
        server.decapsulate(addr(CLIENT), &wire[..initiation.len], now, &mut out)
    else {
        panic!("the server answers the initiation");
    };
    assert_eq!(
        client.decapsulate(addr(SERVER), &out[..response.len], now, &mut wire),
        Ok(Action::Nothing)
    );
    let first = client.poll(now, &mut wire).expect("the staged packet");
    assert_eq!(
        server.decapsulate(addr(CLIENT), &wire[..first.len], now, &mut out),
        Ok(Action::WriteToTun(PACKET_LEN))
    );
    assert!(client.has_session(0, now) && server.has_session(0, now));
    (client, server)
}

fn tunnel(c: &mut Criterion) {
    let now = Instant::now();
    let packet = inner_packet();
    let (mut client, mut server) = established(now, &packet);
    let mut out = vec![0u8; PACKET_LEN + MAX_OVERHEAD];

    let mut group = c.benchmark_group("step04/tunnel");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    group.bench_function("encapsulate/1400", |b| {
        b.iter(|| client.encapsulate(black_box(&packet), now, &mut out))
    });
    // Each message is sealed by the client in the untimed setup and opened
    // once by the server in the timed routine.
    group.bench_function("decapsulate/1400", |b| {
        b.iter_batched_ref(
            || {
                let mut message = vec![0u8; PACKET_LEN + MAX_OVERHEAD];
                let sent = client
                    .encapsulate(&packet, now, &mut message)
                    .expect("the client seals on its session")
                    .expect("a data message");
                message.truncate(sent.len);
                message
            },
            |message| {
                let action = server.decapsulate(addr(CLIENT), message, now, &mut out);
                debug_assert_eq!(action, Ok(Action::WriteToTun(PACKET_LEN)));
                action
            },
            BatchSize::NumIterations(BATCH),
        )
    });
    group.finish();
    // Every message the server saw was genuine and fresh.
    let stats = server.peer_stats(0).expect("the server's one peer");
    assert_eq!(stats.drops.total(), 0, "{}", stats.drops);
}

/// The AEAD alone, on the same bytes the tunnel seals: a 16-byte header as
/// associated data, and the packet padded to a multiple of 16.
fn aead(c: &mut Criterion) {
    let key = [7u8; 32];
    let header = [4u8; DATA_HEADER_LEN];
    let padded = PACKET_LEN.next_multiple_of(16);
    let mut body = inner_packet();
    body.resize(padded, 0);

    let mut group = c.benchmark_group("step04/aead");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    let mut counter = 0u64;
    group.bench_function("seal/1400", |b| {
        b.iter(|| {
            counter += 1;
            seal(&key, counter, &header, black_box(&mut body))
        })
    });
    // Opening decrypts in place, so each call copies the sealed bytes into
    // the output buffer first, as `Tunnel::decapsulate` does; a tag that
    // failed would skip the decryption and measure nothing useful.
    let mut sealed = inner_packet();
    sealed.resize(padded, 0);
    let tag: [u8; TAG_LEN] = seal(&key, 0, &header, &mut sealed);
    let mut plain = sealed.clone();
    assert!(
        open(&key, 0, &header, &mut plain, &tag).is_ok(),
        "the tag verifies"
    );
    group.bench_function("open/1400", |b| {
        b.iter(|| {
            plain.copy_from_slice(black_box(&sealed));
            open(&key, 0, &header, &mut plain, &tag)
        })
    });
    group.finish();
}

/// Accepts `counter` the way the tunnel does: check, then (once the tag
/// has verified, which is assumed here) mark.
fn accept(window: &mut ReplayWindow, counter: u64) -> bool {
    window.check(counter) == Check::Fresh && window.mark(counter)
}

fn replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("step04/replay");
    group.throughput(Throughput::Elements(1));

    // The common case: the next counter, which moves the window on by one
    // (and clears a block of the ring every 64 counters).
    let mut window = ReplayWindow::new();
    let mut next = 0u64;
    group.bench_function("in-order", |b| {
        b.iter(|| {
            let fresh = accept(&mut window, black_box(next));
            next += 1;
            fresh
        })
    });

    // A counter behind the greatest one but still inside the window and
    // not yet seen: a packet the network reordered. Each such counter can
    // be accepted only once, so a template window with `HOLES` holes (the
    // odd counters below its top) is copied, untimed, for each round of
    // `HOLES` acceptances, which are timed together.
    const HOLES: u64 = 4000;
    let mut template = ReplayWindow::new();
    for even in (0..=2 * HOLES).step_by(2) {
        assert!(accept(&mut template, even));
    }
    assert!(template.next() - 1 <= WINDOW, "every hole is inside the window");
    group.bench_function("reordered", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let round = (iters - done).min(HOLES);
                let mut window = template.clone();
                let start = Instant::now();
                for i in 0..round {
                    black_box(accept(&mut window, black_box(2 * i + 1)));
                }
                total += start.elapsed();
                done += round;
            }
            total
        })
    });

    // Refusals change nothing, so one window serves every call.
    let mut window = ReplayWindow::new();
    for counter in 0..=10 * WINDOW {
        accept(&mut window, counter);
    }
    let duplicate = window.next() - 1;
    let too_old = window.next() - 2 * WINDOW;
    assert_eq!(window.check(duplicate), Check::Duplicate);
    assert_eq!(window.check(too_old), Check::TooOld);
    group.bench_function("duplicate", |b| {
        b.iter(|| accept(&mut window, black_box(duplicate)))
    });
    group.bench_function("too-old", |b| b.iter(|| accept(&mut window, black_box(too_old))));
    group.finish();
}

/// What one handshake message costs the receiver: one X25519, and an
/// initiation that opens but names a key we do not list (two X25519, the
/// most a flood's initiation can cost once the limiter lets it through).
fn handshake(c: &mut Criterion) {
    let server = Identity::new(StaticSecret::from([2; 32]));
    let stranger = Identity::new(StaticSecret::from([9; 32]));
    let mut message = vec![0u8; INITIATION_LEN];
    noise::initiate(
        &stranger,
        server.public(),
        StaticSecret::from([3; 32]),
        7,
        noise::tai64n(Duration::from_secs(1)),
        &mut message,
    )
    .expect("an initiation");
    let initiation = InitiationPacket::new_checked(&message[..]).expect("a whole initiation");
    let mut group = c.benchmark_group("step04/handshake");
    group.throughput(Throughput::Elements(1));
    let secret = StaticSecret::from([4; 32]);
    let public = PublicKey::from(&StaticSecret::from([5; 32]));
    group.bench_function("x25519", |b| {
        b.iter(|| dh(black_box(&secret), black_box(&public)))
    });
    group.bench_function("mac1", |b| {
        b.iter(|| noise::initiation_mac1_ok(&server, black_box(&initiation)))
    });
    group.bench_function("initiation-from-an-unlisted-key", |b| {
        b.iter(|| noise::consume_initiation(&server, black_box(&initiation)))
    });
    group.finish();
}

criterion_group!(benches, tunnel, aead, replay, handshake);
criterion_main!(benches);
