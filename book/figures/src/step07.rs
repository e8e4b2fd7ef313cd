//! Step 07: the start of the sessions recorded with wireguard-go and
//! boringtun (`pcaps/step07/`), and the cookie mechanism under load, from
//! a run of step 07's core in memory. Both are read with step 07's own
//! wire views, so the names, sizes and indices are what the code and the
//! other implementations made.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use step02_plain_tunnel::Action;
use step04_crypto::entropy::Entropy;
use step07_wireguard::device::{Device, DropReason, LoadPolicy};
use step07_wireguard::timers::{COOKIE_REFRESH_TIME, REKEY_TIMEOUT};
use step07_wireguard::wire::{
    CookieReply, Data, HandshakeMessage, INITIATION_LEN, Initiation, MessageType, PADDING, RESPONSE_LEN,
    Response,
};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::ladder::{Ladder, Lane, Msg, Row};
use crate::svg::{Canvas, Paint, TOP, color};
use crate::tunnel::{Message, tunnel_messages};
use crate::{Figure, capture};

/// Step 07's port in the recordings; the peers listen on 51821.
const OURS: u16 = 51820;

/// What a message says about itself, read with step 07's views: a name
/// for the arrow and a line of sizes and indices under it.
struct Shown {
    kind: MessageType,
    label: String,
    detail: String,
    /// Bytes sealed, for a data message.
    sealed: Option<usize>,
}

fn show(m: &[u8]) -> anyhow::Result<Shown> {
    let kind = MessageType::of(m).context("a message of unknown type")?;
    let bad = |e| anyhow::anyhow!("a malformed {kind:?} message ({e})");
    let mac2 = |m: [u8; 16]| if m == [0; 16] { "" } else { ", mac2" };
    Ok(match kind {
        MessageType::Initiation => {
            let p = Initiation::new_checked(m).map_err(bad)?;
            Shown {
                kind,
                label: "handshake initiation".into(),
                detail: format!("{} bytes, sender {:#010x}{}", m.len(), p.sender(), mac2(p.mac2())),
                sealed: None,
            }
        }
        MessageType::Response => {
            let p = Response::new_checked(m).map_err(bad)?;
            Shown {
                kind,
                label: "handshake response".into(),
                detail: format!(
                    "{} bytes, sender {:#010x}, receiver {:#010x}",
                    m.len(),
                    p.sender(),
                    p.receiver()
                ),
                sealed: None,
            }
        }
        MessageType::CookieReply => {
            let p = CookieReply::new_checked(m).map_err(bad)?;
            Shown {
                kind,
                label: "cookie reply".into(),
                detail: format!("{} bytes, receiver {:#010x}", m.len(), p.receiver()),
                sealed: None,
            }
        }
        MessageType::Data => {
            let p = Data::new_checked(m).map_err(bad)?;
            let sealed = p.payload_len();
            let label = if sealed == 0 {
                format!("keepalive, counter {}", p.counter())
            } else {
                format!("data, counter {}", p.counter())
            };
            Shown {
                kind,
                label,
                detail: format!(
                    "{} bytes, receiver {:#010x}, {sealed} sealed",
                    m.len(),
                    p.receiver()
                ),
                sealed: Some(sealed),
            }
        }
    })
}

fn arrow_color(kind: MessageType) -> &'static str {
    match kind {
        MessageType::Initiation | MessageType::Response => color::OUTER,
        MessageType::CookieReply => color::MARK,
        MessageType::Data => color::SEALED,
    }
}

// ANCHOR: wireguard_handshake
/// The first messages of each session in `pcaps/step07/`: step 07 in the
/// middle, wireguard-go on the left (step 07 initiates), boringtun on the
/// right (it initiates).
pub fn wireguard_handshake() -> anyhow::Result<Figure> {
    let sessions = [("wireguard-go", 0), ("boringtun", 2)];
    let mut lanes = vec![Lane::new("", ""), Lane::new("", ""), Lane::new("", "")];
    let mut ladder_rows = Vec::new();
    for (peer, lane) in sessions {
        let source = format!("step07/{peer}-underlay.pcap");
        let messages = tunnel_messages(&source)?;
        let first = messages
            .first()
            .with_context(|| format!("pcaps/{source}: no messages"))?;
        let ours = if first.from.port() == OURS {
            first.from
        } else {
            first.to
        };
        let theirs = if first.from == ours { first.to } else { first.from };
        if ours.port() != OURS || MessageType::of(&first.bytes) != Some(MessageType::Initiation) {
            bail!("pcaps/{source}: the first message is not an initiation to or from port {OURS}");
        }
        lanes[1] = Lane::new("step 07", &ours.to_string());
        lanes[lane] = Lane::new(peer, &theirs.to_string());
        let initiator = if first.from == ours { "step 07" } else { peer };
        let responder = if first.from == ours { peer } else { "step 07" };
        ladder_rows.push(Row::Heading(format!(
            "{initiator} initiates, {responder} responds (pcaps/{source})"
        )));
        ladder_rows.extend(session_rows(&messages, ours, lane, peer)?);
    }
    let mut ladder = Ladder::new(lanes);
    ladder.time_column = Some("time, ms".into());
    ladder.note_width = 220.0;
    for row in ladder_rows {
        ladder.push(row);
    }
    // The packets inside, as step 07's TUN device saw them.
    let inner = capture("step07/wireguard-go-tun.pcap")?
        .first()
        .map(|p| p.ip.len())
        .context("pcaps/step07/wireguard-go-tun.pcap is empty")?;
    let mut c = Canvas::new("WireGuard between step 07 and the others, as recorded");
    ladder.draw(&mut c, TOP);
    Ok(Figure::from_canvas(
        c,
        &format!(
            "The start of the two sessions pcaps/step07/record.sh recorded, read with step 07's wire views \
             (wire.rs): sizes are UDP payloads, indices and counters as the wire carried them, times from \
             each session's first message. The initiator sends {INITIATION_LEN} bytes and the responder \
             answers with {RESPONSE_LEN}; each end picks its own sender index, and every later message to \
             it carries that index as its receiver. The {inner}-byte pings inside are sealed as they are, or \
             padded to a multiple of {PADDING} first: padding is the sender's choice, and each receiver \
             accepts both."
        ),
    ))
}

/// The rows for one recorded session: every message until both ends have
/// sent a packet, then a line for the rest.
fn session_rows(
    messages: &[Message],
    ours: SocketAddr,
    peer_lane: usize,
    peer: &str,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let start = messages[0].time;
    let (mut ours_sent, mut theirs_sent) = (false, false);
    let mut rest = (0usize, 0u64, 0u64);
    for m in messages {
        let from_us = m.from == ours;
        let shown = show(&m.bytes)?;
        if ours_sent && theirs_sent {
            if let Ok(p) = Data::new_checked(&m.bytes[..]) {
                rest.0 += 1;
                let top = if from_us { &mut rest.1 } else { &mut rest.2 };
                *top = (*top).max(p.counter());
            }
            continue;
        }
        let (a, b) = if from_us { (1, peer_lane) } else { (peer_lane, 1) };
        let ms = format!("{:.2}", (m.time - start).as_secs_f64() * 1000.0);
        rows.push(Row::Msg(
            Msg::new(a, b, shown.label.clone())
                .detail(shown.detail.clone())
                .color(arrow_color(shown.kind))
                .time(ms),
        ));
        let who = if from_us { "step 07" } else { peer };
        match (shown.kind, shown.sealed) {
            (MessageType::Response, _) => rows.push(Row::note(
                b,
                "the initiator has the session's keys; its first message on it confirms them",
                Paint::GOOD,
            )),
            (MessageType::Data, Some(0)) => rows.push(Row::note(
                a,
                format!("{who} confirms the session with an empty message first"),
                Paint::PLAIN,
            )),
            (MessageType::Data, Some(sealed)) => {
                let first = if from_us { !ours_sent } else { !theirs_sent };
                if first {
                    let how = if sealed % PADDING == 0 {
                        format!("{who} pads: {sealed} bytes sealed, a multiple of {PADDING}")
                    } else {
                        format!("{who} does not pad: {sealed} bytes sealed")
                    };
                    rows.push(Row::note(a, how, Paint::SEALED));
                }
                if from_us {
                    ours_sent = true;
                } else {
                    theirs_sent = true;
                }
            }
            _ => {}
        }
    }
    rows.push(Row::Gap(format!(
        "… {} more data messages (pings both ways), up to counter {} from step 07 and {} from {peer}",
        rest.0, rest.1, rest.2
    )));
    Ok(rows)
}
// ANCHOR_END: wireguard_handshake

/// Randomness that is the same at every run, so the figure is too: a
/// 64-bit xorshift generator. (A real device draws from the kernel.)
struct Repeatable(u64);

impl Repeatable {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

impl Entropy for Repeatable {
    fn ephemeral(&mut self) -> StaticSecret {
        let mut key = [0u8; 32];
        self.fill(&mut key);
        StaticSecret::from(key)
    }

    fn index(&mut self) -> u32 {
        (self.next() >> 32) as u32
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

/// One of the legitimate exchange's messages, as it crossed.
struct Crossed {
    at: Duration,
    from_a: bool,
    bytes: Vec<u8>,
}

/// What the run of [`cookie_run`] produced.
struct CookieRun {
    /// Every message between a and b, in order.
    crossed: Vec<Crossed>,
    /// Forged initiations sent before b's first cookie reply to them, and
    /// when that reply went.
    before_load: u32,
    under_load_at: Duration,
    /// Forged initiations in all, how many went in each second, and how
    /// many b answered with a cookie reply.
    forged: u32,
    per_second: u32,
    forged_cookies: u32,
    /// The first forged initiation b answered with a cookie reply, where
    /// it came from, and the reply.
    forged_message: Vec<u8>,
    forged_from: SocketAddr,
    forged_reply: Vec<u8>,
    /// b's Diffie-Hellman work on forged initiations (each then dropped:
    /// an unknown key).
    unknown_peer: u64,
    /// When a's packet reached b's TUN device.
    delivered_at: Duration,
}

/// The run: b (192.0.2.1) answers a flood of copies of one initiation with
/// a valid mac1, sent from forged addresses of 203.0.113.0/24 at
/// `per_second`, while a (198.51.100.2), a peer b knows, sends a packet at
/// 0.5 s. One millisecond a step; a message arrives in the step it is
/// sent.
fn cookie_run() -> anyhow::Result<CookieRun> {
    const MTU: usize = 1420;
    const PER_SECOND: u32 = 500;
    let t0 = Instant::now();
    let unix = Duration::from_secs(1_800_000_000);
    let b_addr: SocketAddr = "192.0.2.1:51820".parse()?;
    let a_addr: SocketAddr = "198.51.100.2:51820".parse()?;
    let key = |byte: u8| StaticSecret::from([byte; 32]);
    let device = |byte: u8, seed: u64| {
        let mut d = Device::new(MTU, Box::new(Repeatable(seed)), t0, unix);
        d.set_private_key(Some(key(byte)));
        d
    };
    let mut a = device(1, 0x1111_2222_3333_4444);
    let mut b = device(2, 0x5555_6666_7777_8888);
    b.set_load_policy(LoadPolicy::default());
    let mut attacker = device(9, 0x9999_aaaa_bbbb_cccc);
    let peer =
        |d: &mut Device, byte: u8, allowed: &str, endpoint: Option<SocketAddr>| -> anyhow::Result<()> {
            let id = d.add_peer(PublicKey::from(&key(byte))).context("a peer")?;
            d.add_allowed_ip(id, allowed.parse()?);
            if let Some(e) = endpoint {
                d.set_endpoint(id, e);
            }
            Ok(())
        };
    peer(&mut a, 2, "10.0.0.2/32", Some(b_addr))?;
    peer(&mut b, 1, "10.0.0.1/32", None)?;
    // The attacker knows b's public key (so mac1 is right), but b does
    // not know the attacker's.
    peer(&mut attacker, 2, "10.0.0.2/32", Some(b_addr))?;
    let packet = |src: [u8; 4], dst: [u8; 4]| {
        let mut p = vec![0u8; 84];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&84u16.to_be_bytes());
        p[8] = 64;
        p[9] = 1;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    };
    let mut out = vec![0u8; 2048];
    let forged_message = match attacker.encapsulate(&packet([10, 0, 0, 9], [10, 0, 0, 2]), t0, &mut out) {
        Ok(Some(t)) => out[..t.len].to_vec(),
        other => bail!("the attacker made no initiation: {other:?}"),
    };

    let mut run = CookieRun {
        crossed: Vec::new(),
        before_load: 0,
        under_load_at: Duration::ZERO,
        forged: 0,
        per_second: PER_SECOND,
        forged_cookies: 0,
        forged_message: forged_message.clone(),
        forged_from: b_addr,
        forged_reply: Vec::new(),
        unknown_peer: 0,
        delivered_at: Duration::ZERO,
    };
    // Messages between a and b not yet delivered: (to b?, bytes).
    let mut wire: Vec<(bool, Vec<u8>)> = Vec::new();
    let step = Duration::from_millis(1);
    let a_sends_at = Duration::from_millis(500);
    let mut at = Duration::ZERO;
    while at < Duration::from_secs(10) {
        let now = t0 + at;
        // The flood: one forged initiation every 1000 / PER_SECOND ms.
        if at.as_millis().is_multiple_of(u128::from(1000 / PER_SECOND)) {
            let n = run.forged;
            let from = SocketAddr::from(([203, 0, 113, (n % 250 + 1) as u8], 1024 + (n % 60000) as u16));
            let answer = b.decapsulate(from, &forged_message, now, &mut out);
            run.forged += 1;
            if let Ok(Action::Reply(t)) = answer {
                if run.forged_cookies == 0 {
                    run.under_load_at = at;
                    run.before_load = n;
                    run.forged_from = from;
                    run.forged_reply = out[..t.len].to_vec();
                }
                run.forged_cookies += 1;
            }
        }
        if at == a_sends_at {
            match a.encapsulate(&packet([10, 0, 0, 1], [10, 0, 0, 2]), now, &mut out) {
                Ok(Some(t)) => wire.push((true, out[..t.len].to_vec())),
                other => bail!("a sent no initiation: {other:?}"),
            }
        }
        for (device, to_b) in [(&mut a, true), (&mut b, false)] {
            while let Some(t) = device.poll(now, &mut out) {
                wire.push((to_b, out[..t.len].to_vec()));
            }
        }
        while !wire.is_empty() {
            let (to_b, bytes) = wire.remove(0);
            run.crossed.push(Crossed {
                at,
                from_a: to_b,
                bytes: bytes.clone(),
            });
            let (receiver, from) = if to_b { (&mut b, a_addr) } else { (&mut a, b_addr) };
            match receiver.decapsulate(from, &bytes, now, &mut out) {
                Ok(Action::Reply(t)) => wire.push((!to_b, out[..t.len].to_vec())),
                Ok(Action::WriteToTun(_)) if to_b => run.delivered_at = at,
                Ok(_) => {}
                Err(e) => bail!("{} refused a message: {e}", if to_b { "b" } else { "a" }),
            }
        }
        if run.delivered_at != Duration::ZERO {
            break;
        }
        at += step;
    }
    if run.delivered_at == Duration::ZERO {
        bail!("a's packet never reached b");
    }
    run.unknown_peer = b.drops().get(DropReason::UnknownPeer);
    if b.cookie_replies() != u64::from(run.forged_cookies) + 1 {
        bail!(
            "b counts {} cookie replies, the run {} to forged addresses and one to a",
            b.cookie_replies(),
            run.forged_cookies
        );
    }
    Ok(run)
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

// ANCHOR: cookie_reply
/// The cookie mechanism as step 07's core runs it under a flood: the
/// responder answers an initiation without mac2 with a cookie reply, and
/// the initiator's retry, with mac2, gets the response.
pub fn cookie_reply() -> anyhow::Result<Figure> {
    let run = cookie_run()?;
    let mut ladder = Ladder::new(vec![
        Lane::new("forged sources", "203.0.113.0/24"),
        Lane::new("b: step 07", "192.0.2.1:51820"),
        Lane::new("a: step 07, b's peer", "198.51.100.2:51820"),
    ]);
    ladder.time_column = Some("time, s".into());
    ladder.note_width = 210.0;
    ladder.msg(
        Msg::new(0, 1, format!("{} handshake initiations", run.before_load))
            .detail(format!(
                "{} a second, copies of one with a valid mac1",
                run.per_second
            ))
            .color(color::ERROR)
            .time(secs(Duration::ZERO)),
    );
    ladder.push(Row::note(
        1,
        "not under load yet: each costs a Diffie-Hellman, then is dropped (an unknown key)",
        Paint::ERROR,
    ));
    ladder.push(Row::Note {
        first: 1,
        last: 1,
        text: format!(
            "more than {} handshake messages in one second: b is under load",
            LoadPolicy::default().handshakes_per_second
        ),
        paint: Paint::MARK,
        time: Some(secs(run.under_load_at)),
    });
    let forged = show(&run.forged_message)?;
    ladder.msg(
        Msg::new(0, 1, "handshake initiation")
            .detail(format!("{}, from {}", forged.detail, run.forged_from))
            .color(color::ERROR),
    );
    let reply = show(&run.forged_reply)?;
    if reply.kind != MessageType::CookieReply {
        bail!("b answered the flood with a {:?}", reply.kind);
    }
    ladder.msg(
        Msg::new(1, 0, "cookie reply, to a forged address")
            .detail(reply.detail)
            .color(arrow_color(reply.kind))
            .dashed(),
    );
    let mut first_from_a = true;
    let mut retry_noted = false;
    for m in &run.crossed {
        let shown = show(&m.bytes)?;
        let (from, to) = if m.from_a { (2, 1) } else { (1, 2) };
        let mut detail = shown.detail.clone();
        if shown.kind == MessageType::Initiation && first_from_a {
            detail = detail.replace(", mac2", "") + ", mac2 all zeros";
        }
        ladder.msg(
            Msg::new(from, to, shown.label.clone())
                .detail(detail)
                .color(arrow_color(shown.kind))
                .time(secs(m.at)),
        );
        match shown.kind {
            MessageType::Initiation if first_from_a => {
                first_from_a = false;
                let m2 = Initiation::new_checked(&m.bytes[..]).map_err(|e| anyhow::anyhow!("{e}"))?;
                if m2.mac2() != [0; 16] {
                    bail!("a's first initiation already has a mac2");
                }
            }
            MessageType::CookieReply => {
                ladder.push(Row::note(
                    2,
                    format!(
                        "a opens the cookie (its initiation's mac1 is the seal's associated data) and keeps it {} s; it \
                         tries again after REKEY_TIMEOUT, {} s and a random jitter",
                        COOKIE_REFRESH_TIME.as_secs(),
                        REKEY_TIMEOUT.as_secs()
                    ),
                    Paint::MARK,
                ));
                ladder.push(Row::Gap(
                    "… the flood goes on; b answers each forged initiation with a cookie reply".into(),
                ));
            }
            MessageType::Initiation if !retry_noted => {
                retry_noted = true;
                ladder.push(Row::note(
                    1,
                    "mac2 is right for a's address, which is within its rate: worth the Diffie-Hellman work",
                    Paint::GOOD,
                ));
            }
            _ => {}
        }
    }
    ladder.push(Row::Gap(format!(
        "by {} s: {} forged initiations, {} answered with cookie replies no one reads",
        secs(run.delivered_at),
        run.forged,
        run.forged_cookies
    )));
    let mut c = Canvas::new("Under load: a cookie reply, the retry with mac2, the response");
    ladder.draw(&mut c, TOP);
    Ok(Figure::from_canvas(
        c,
        &format!(
            "A run of step 07's core in memory (book/figures/src/step07.rs), one millisecond a step: \
             b, with the default load policy, receives copies of one {}-byte initiation with a \
             valid mac1 from forged addresses, {} a second, while a, a peer b knows, sends a packet at \
             0.5 s. Sizes, indices and times are what the two devices made. b did Diffie-Hellman work for \
             {} forged initiations, all before it was under load; it answered the other {} with cookie \
             replies, which cost it a few BLAKE2s hashes and one seal each, and a's packet arrived at {} s.",
            run.forged_message.len(),
            run.per_second,
            run.unknown_peer,
            run.forged_cookies,
            secs(run.delivered_at),
        ),
    ))
}
// ANCHOR_END: cookie_reply
