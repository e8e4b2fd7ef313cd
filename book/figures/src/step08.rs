//! Step 08's figures: the system calls that carry 64 KB of one TCP stream
//! through the two ends of a tunnel, one packet per call (step 07) and
//! batched with offloads (step 08); the same super-packet stage by stage
//! through the offloads; and the workers with their queues and sockets.
//! The numbers are not typed in: the super-packet is built by step 08's
//! coalescer and cut by tun-rs as step 08's workers cut it, sealed
//! lengths come from step 07's padding, the GSO messages from step 08's
//! planner and the batch sizes from its worker.

use anyhow::{Context, bail};
use step04_crypto::crypto::TAG_LEN;
use step07_wireguard::run::DEFAULT_MTU;
use step07_wireguard::wire::{DATA_HEADER_LEN, DATA_OVERHEAD, padded_len};
use step08_fast_path::gro::Coalescer;
use step08_fast_path::plane::OFFSET;
use step08_fast_path::udp::{GSO_MAX_BYTES, GSO_MAX_SEGMENTS, plan};
use step08_fast_path::worker::{TUN_BATCH, UDP_BATCH};
use tun_rs::{VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_LEN, VirtioNetHdr};

use crate::Figure;
use crate::svg::{Anchor, Canvas, Font, MARGIN, Paint, Rect, TOP, WIDTH, color};

/// The IPv4 and TCP headers of a bulk transfer's segments (20 + 20 + 12
/// bytes of timestamps).
const HEADERS: usize = 52;

/// What one 64 KB TCP super-packet costs each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crossing {
    /// Packets of MTU size it is cut into.
    pub packets: usize,
    /// UDP messages step 08 sends them in (GSO), and receives them in
    /// (GRO: a GSO message arrives whole at a GRO socket).
    pub messages: usize,
    /// Writes step 08 makes to the TUN device at the far end.
    pub writes: usize,
}

/// A TCP segment with `payload` bytes at `seq`, in a buffer as a worker
/// holds it, with a correct checksum.
fn segment(seq: u32, payload: usize) -> Vec<u8> {
    let len = HEADERS + payload;
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let c = step01_ping_tun::checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5201u16.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..32].copy_from_slice(&1u32.to_be_bytes());
    p[32] = 8 << 4;
    p[33] = 0x10;
    p[40..52].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
    let c = step03_ipv6::checksum::transport_checksum(&p).unwrap_or(0);
    p[36..38].copy_from_slice(&c.to_be_bytes());
    let mut buf = Vec::with_capacity(OFFSET + 65535);
    buf.resize(OFFSET, 0);
    buf.extend_from_slice(&p);
    buf
}

/// The numbers of the figure, from the steps' code.
pub fn crossing() -> anyhow::Result<Crossing> {
    let mtu = usize::from(DEFAULT_MTU);
    let mss = mtu - HEADERS;
    // The kernel's TCP makes super-packets of up to 64 KB of whole
    // segments.
    let packets = (usize::from(u16::MAX) - HEADERS) / mss;
    // Sealed: padded to a multiple of 16 but never past the MTU (1420
    // stays 1420), plus the header and the tag.
    let sealed = DATA_OVERHEAD + padded_len(mtu, mtu);
    let lens = vec![sealed; packets];
    let to = vec![Some("192.0.2.2:51820".parse()?); packets];
    let mut messages = Vec::new();
    plan(&lens, &to, false, true, &mut messages);
    let mut bufs: Vec<Vec<u8>> = (0..packets).map(|k| segment((k * mss) as u32, mss)).collect();
    let writes = Coalescer::new().coalesce(&mut bufs, packets).len();
    if messages.iter().map(|m| m.count).sum::<usize>() != packets {
        bail!("the GSO plan lost datagrams");
    }
    Ok(Crossing {
        packets,
        messages: messages.len(),
        writes,
    })
}

/// One row of squares, one per system call, and what they are.
fn calls(c: &mut Canvas, y: f64, label: &str, kinds: &[(usize, Paint)], note: &str) -> f64 {
    let (size, gap) = (7.0, 2.0);
    let left = MARGIN + 110.0;
    c.text(MARGIN, y + 9.0, label, Font::Body, Anchor::Start, color::INK);
    let mut x = left;
    let mut row_y = y;
    let per_row = 60;
    let mut n = 0;
    for (count, paint) in kinds {
        for _ in 0..*count {
            if n > 0 && n % per_row == 0 {
                row_y += size + gap;
                x = left;
            }
            c.rect(Rect::new(x, row_y, size, size), *paint, 0.0);
            x += size + gap;
            n += 1;
        }
    }
    let bottom = row_y + size + 14.0;
    c.text(left, bottom, note, Font::Small, Anchor::Start, color::MUTED);
    bottom + 14.0
}

// ANCHOR: figure
/// The figure `fast-path-batching`.
pub fn fast_path_batching() -> anyhow::Result<Figure> {
    let x = crossing().context("computing the figure's numbers")?;
    let mut c = Canvas::new("64 KB of one TCP stream through a tunnel: the system calls");
    let tun = Paint::INNER;
    let udp = Paint::OUTER;
    let mut y = TOP;
    c.text(
        MARGIN,
        y,
        "Step 07: one packet per system call",
        Font::Bold,
        Anchor::Start,
        color::INK,
    );
    y += 10.0;
    y = calls(
        &mut c,
        y,
        "sending end",
        &[(x.packets, tun), (x.packets, udp)],
        &format!("{} reads from the TUN device, {} sendto", x.packets, x.packets),
    );
    y = calls(
        &mut c,
        y,
        "receiving end",
        &[(x.packets, udp), (x.packets, tun)],
        &format!("{} recvfrom, {} writes to the TUN device", x.packets, x.packets),
    );
    y += 8.0;
    c.text(
        MARGIN,
        y,
        "Step 08: batches and offloads",
        Font::Bold,
        Anchor::Start,
        color::INK,
    );
    y += 10.0;
    y = calls(
        &mut c,
        y,
        "sending end",
        &[(1, tun), (1, udp)],
        &format!(
            "1 read: one super-packet, cut into {} packets; 1 sendmmsg: {} GSO messages of up to 45 datagrams",
            x.packets, x.messages
        ),
    );
    calls(
        &mut c,
        y,
        "receiving end",
        &[(1, udp), (x.writes, tun)],
        &format!(
            "1 recvmmsg: {} GRO messages; {} write: the {} packets coalesced again",
            x.messages, x.writes, x.packets
        ),
    );
    let caption = format!(
        "Each square is a system call: blue on the TUN device, orange on the UDP socket. A 64 KB \
         TCP super-packet is {} packets of {DEFAULT_MTU} bytes. Step 07 makes {} system calls for it \
         at each end (and sleeps in poll(2) between bursts); step 08 makes {} at the sender and {} at \
         the receiver.",
        x.packets,
        2 * x.packets,
        2,
        1 + x.writes
    );
    Ok(Figure::from_canvas(c, &caption))
}
// ANCHOR_END: figure

/// What one 64 KB TCP super-packet looks like at each stage of step 08's
/// offloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offload {
    /// The virtio-net header in front of each read and write.
    pub vnet_len: usize,
    /// The super-packet: IP and TCP headers and all the payload.
    pub super_len: usize,
    /// What its virtio-net header says: the headers' length and the
    /// payload of each segment.
    pub hdr_len: usize,
    pub gso_size: usize,
    /// The packets it is cut into, and their length.
    pub packets: usize,
    pub packet_len: usize,
    /// Each packet sealed: header, padded packet, tag.
    pub sealed: usize,
    /// The datagrams of each GSO message, and its `UDP_SEGMENT`.
    pub messages: Vec<usize>,
    pub segment: usize,
    /// Writes to the TUN device at the far end.
    pub writes: usize,
}

/// The numbers of `fast-path-offload`: the super-packet is built by step
/// 08's coalescer (the same shape the kernel's TCP hands a TUN device
/// with TSO on), cut by tun-rs as a worker cuts what it reads, sealed
/// with step 07's padding, and planned by step 08's GSO planner.
pub fn offload() -> anyhow::Result<Offload> {
    let mtu = usize::from(DEFAULT_MTU);
    let mss = mtu - HEADERS;
    let n = (usize::from(u16::MAX) - HEADERS) / mss;
    let mut bufs: Vec<Vec<u8>> = (0..n).map(|k| segment((k * mss) as u32, mss)).collect();
    let writes = Coalescer::new().coalesce(&mut bufs, n).to_vec();
    let head = bufs
        .get(*writes.first().context("the coalescer wrote nothing")?)
        .context("the coalescer named no buffer")?;
    let hdr = VirtioNetHdr::decode(&head[OFFSET - VIRTIO_NET_HDR_LEN..OFFSET])?;
    if hdr.gso_type != VIRTIO_NET_HDR_GSO_TCPV4 {
        bail!("the coalescer made no TCPv4 super-packet");
    }
    let mut input = head[OFFSET..].to_vec();
    let super_len = input.len();
    let mut out = vec![vec![0u8; mtu]; GSO_MAX_SEGMENTS];
    let mut sizes = vec![0; GSO_MAX_SEGMENTS];
    let packets = tun_rs::gso_split(&mut input, hdr, &mut out, &mut sizes, 0, false)?;
    let packet_len = sizes[0];
    if packets != n || sizes[..packets].iter().any(|&s| s != packet_len) {
        bail!("the super-packet did not cut back into {n} packets of one length");
    }
    let sealed = DATA_OVERHEAD + padded_len(packet_len, mtu);
    let lens = vec![sealed; packets];
    let to = vec![Some("192.0.2.2:51820".parse()?); packets];
    let mut plan_out = Vec::new();
    plan(&lens, &to, false, true, &mut plan_out);
    let segment = plan_out
        .first()
        .and_then(|m| m.segment)
        .context("the planner made no GSO message")?;
    Ok(Offload {
        vnet_len: VIRTIO_NET_HDR_LEN,
        super_len,
        hdr_len: usize::from(hdr.hdr_len),
        gso_size: usize::from(hdr.gso_size),
        packets,
        packet_len,
        sealed,
        messages: plan_out.iter().map(|m| m.count).collect(),
        segment: usize::from(segment),
        writes: writes.len(),
    })
}

/// What a stage of `fast-path-offload` holds, drawn under its text.
enum Strip<'a> {
    /// A virtio-net header and one super-packet.
    Super,
    /// Packets, in groups (one per message), all in one paint.
    Pieces(&'a [usize], Paint),
}

/// One stage: a box with a bold title, lines of small text and a strip.
fn stage(c: &mut Canvas, r: Rect, paint: Paint, title: &str, lines: &[String], strip: Strip) {
    c.rect(r, paint_light(paint), 4.0);
    let x = r.x + 8.0;
    let mut y = r.y + 16.0;
    c.text_in(r, (x, y), title, Font::Bold, Anchor::Start, color::INK);
    for line in lines {
        y += 14.0;
        c.text_in(r, (x, y), line, Font::Small, Anchor::Start, color::MUTED);
    }
    let (sy, sh, w) = (r.bottom() - 16.0, 8.0, r.w - 16.0);
    match strip {
        Strip::Super => {
            c.rect(Rect::new(x, sy, 8.0, sh), Paint::MARK, 0.0);
            c.rect(Rect::new(x + 10.0, sy, w - 10.0, sh), Paint::INNER, 0.0);
        }
        Strip::Pieces(groups, paint) => {
            let count: usize = groups.iter().sum();
            let (gap, group_gap) = (1.0, 8.0);
            let room = w - gap * (count - groups.len()) as f64 - group_gap * (groups.len() - 1) as f64;
            let size = room / count as f64;
            let mut px = x;
            for (g, &k) in groups.iter().enumerate() {
                if g > 0 {
                    px += group_gap - gap;
                }
                for _ in 0..k {
                    c.rect(Rect::new(px, sy, size, sh), paint, 0.0);
                    px += size + gap;
                }
            }
        }
    }
}

/// A box's background: white, with the stage's colour as its outline.
fn paint_light(paint: Paint) -> Paint {
    Paint {
        fill: "#ffffff",
        stroke: paint.stroke,
    }
}

// ANCHOR: offload
/// The figure `fast-path-offload`.
pub fn fast_path_offload() -> anyhow::Result<Figure> {
    let o = offload().context("computing the figure's numbers")?;
    let mut c = Canvas::new("One 64 KB TCP super-packet through step 08's offloads");
    let (col, gap, h, between) = (300.0, WIDTH - 2.0 * MARGIN - 2.0 * 300.0, 74.0, 22.0);
    let left = MARGIN;
    let right = MARGIN + col + gap;
    let mut y = TOP;
    c.text(left, y, "sending end", Font::Bold, Anchor::Start, color::INK);
    c.text(right, y, "receiving end", Font::Bold, Anchor::Start, color::INK);
    y += 12.0;
    let whole = [o.packets];
    let row = |k: usize| y + k as f64 * (h + between);
    let vnet = format!(
        "virtio-net header ({} B): TCPv4, gso_size {}",
        o.vnet_len, o.gso_size
    );
    let body = format!(
        "+ a super-packet of {} B ({} B of headers)",
        o.super_len, o.hdr_len
    );
    let groups = o
        .messages
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" + ");
    let messages = |kind: &str| format!("{} {kind} messages: {groups} datagrams", o.messages.len());
    let cut = format!(
        "{} packets of {} B: {} B of headers + {}",
        o.packets, o.packet_len, o.hdr_len, o.gso_size
    );
    let sealed = format!(
        "{} messages of {} + {} + {} = {} B",
        o.packets, DATA_HEADER_LEN, o.packet_len, TAG_LEN, o.sealed
    );
    // The sender, down the left; the receiver, up the right.
    let sender: [(&str, Paint, Vec<String>, Strip); 4] = [
        (
            "1 read(2) from the TUN device",
            Paint::INNER,
            vec![vnet.clone(), body.clone()],
            Strip::Super,
        ),
        (
            "cut by tun-rs (gso_split)",
            Paint::INNER,
            vec![
                cut.clone(),
                "the headers copied, lengths and checksums fixed".into(),
            ],
            Strip::Pieces(&whole, Paint::INNER),
        ),
        (
            "each sealed in place",
            Paint::SEALED,
            vec![
                sealed.clone(),
                "header, packet, tag: padded to 16, not past the MTU".into(),
            ],
            Strip::Pieces(&whole, Paint::SEALED),
        ),
        (
            "1 sendmmsg(2) on the UDP socket",
            Paint::OUTER,
            vec![
                messages("GSO"),
                format!("UDP_SEGMENT {}: at most {GSO_MAX_BYTES} B each", o.segment),
            ],
            Strip::Pieces(&o.messages, Paint::OUTER),
        ),
    ];
    let receiver: [(&str, Paint, Vec<String>, Strip); 4] = [
        (
            "1 write(2) to the TUN device",
            Paint::INNER,
            vec![vnet, body],
            Strip::Super,
        ),
        (
            "coalesced (gro.rs)",
            Paint::INNER,
            vec![
                format!("{} packets of one flow, in order: {} write", o.packets, o.writes),
                "the kernel's TCP takes the 64 KB in one go".into(),
            ],
            Strip::Pieces(&whole, Paint::INNER),
        ),
        (
            "each opened in place",
            Paint::SEALED,
            vec![cut, "checked, decrypted, its padding removed".into()],
            Strip::Pieces(&whole, Paint::SEALED),
        ),
        (
            "1 recvmmsg(2) on the UDP socket",
            Paint::OUTER,
            vec![
                messages("GRO"),
                format!("segment size {}: split in place", o.segment),
            ],
            Strip::Pieces(&o.messages, Paint::OUTER),
        ),
    ];
    for (k, (title, paint, lines, strip)) in sender.into_iter().enumerate() {
        stage(
            &mut c,
            Rect::new(left, row(k), col, h),
            paint,
            title,
            &lines,
            strip,
        );
        if k > 0 {
            let x = left + col / 2.0;
            c.arrow(x, row(k) - between + 2.0, x, row(k) - 2.0, color::LINE, false);
        }
    }
    for (k, (title, paint, lines, strip)) in receiver.into_iter().enumerate() {
        stage(
            &mut c,
            Rect::new(right, row(k), col, h),
            paint,
            title,
            &lines,
            strip,
        );
        if k > 0 {
            let x = right + col / 2.0;
            c.arrow(x, row(k) - 2.0, x, row(k) - between + 2.0, color::LINE, false);
        }
    }
    let wire_y = row(3) + h / 2.0;
    c.arrow(left + col + 4.0, wire_y, right - 4.0, wire_y, color::OUTER, false);
    c.text(
        left + col + gap / 2.0,
        wire_y - 8.0,
        &format!("{} datagrams", o.packets),
        Font::Small,
        Anchor::Middle,
        color::OUTER,
    );
    c.text(
        left + col + gap / 2.0,
        wire_y + 16.0,
        &format!("of {} B", o.segment),
        Font::Small,
        Anchor::Middle,
        color::OUTER,
    );
    let caption = format!(
        "Blue: the TUN side (yellow: the virtio-net header); purple: sealed; orange: the UDP side. \
         The numbers are step 08's: its coalescer builds the super-packet, tun-rs cuts it as a \
         worker does, step 07 pads and seals, the GSO planner groups the datagrams. A GSO message \
         holds at most {GSO_MAX_BYTES} B, {} datagrams of {} B, so {} take {} messages, sent in one \
         sendmmsg; over a veth each usually arrives whole at a GRO socket. Step 08 makes {} system \
         calls for the 64 KB, where step 07 makes {}.",
        GSO_MAX_BYTES / o.segment,
        o.segment,
        o.packets,
        o.messages.len(),
        3 + o.writes,
        4 * o.packets
    );
    Ok(Figure::from_canvas(c, &caption))
}
// ANCHOR_END: offload

/// Workers drawn in `fast-path-workers`: enough to show the pattern.
const WORKERS: usize = 3;

/// The flows of `fast-path-workers`, one paint each, and how many of
/// their packets wait in the queue the kernel hashed them to.
const FLOWS: [(Paint, usize); WORKERS] = [(Paint::INNER, 4), (Paint::GOOD, 3), (Paint::MARK, 5)];

// ANCHOR: workers
/// The figure `fast-path-workers`.
pub fn fast_path_workers() -> anyhow::Result<Figure> {
    let mut c = Canvas::new("Step 08's workers: a TUN queue and a UDP socket each");
    let area = 440.0;
    let gap = 12.0;
    let w = (area - 16.0 - gap * (WORKERS - 1) as f64) / WORKERS as f64;
    let col = |k: usize| MARGIN + 8.0 + k as f64 * (w + gap);
    // The TUN device and its queues.
    let tun = Rect::new(MARGIN, TOP - 4.0, area, 92.0);
    c.rect(tun, paint_light(Paint::INNER), 4.0);
    c.text_in(
        tun,
        (tun.x + 8.0, tun.y + 16.0),
        "TUN device, IFF_MULTI_QUEUE",
        Font::Bold,
        Anchor::Start,
        color::INK,
    );
    c.text_in(
        tun,
        (tun.x + 8.0, tun.y + 30.0),
        "the kernel picks a packet's queue by a hash of its flow",
        Font::Small,
        Anchor::Start,
        color::MUTED,
    );
    let queue_y = tun.y + 40.0;
    for (k, (paint, packets)) in FLOWS.iter().enumerate() {
        let q = Rect::new(col(k), queue_y, w, 44.0);
        c.rect(q, Paint::WHITE, 3.0);
        c.text_in(
            q,
            (q.x + 6.0, q.y + 14.0),
            &format!("queue {k}: flow {}", char::from(b'A' + k as u8)),
            Font::Small,
            Anchor::Start,
            color::INK,
        );
        for p in 0..*packets {
            c.rect(
                Rect::new(q.x + 6.0 + p as f64 * 14.0, q.y + 22.0, 10.0, 10.0),
                *paint,
                0.0,
            );
        }
    }
    // The workers.
    let workers_y = tun.bottom() + 30.0;
    let wh = 76.0;
    for k in 0..WORKERS {
        let r = Rect::new(col(k), workers_y, w, wh);
        c.rect(r, Paint::PLAIN, 4.0);
        c.text_block(
            r,
            &[
                (&format!("worker {k}"), Font::Bold, color::INK),
                (&format!("reads ≤ {TUN_BATCH} packets"), Font::Small, color::MUTED),
                ("seals, opens in place", Font::Small, color::MUTED),
                (
                    &format!("≤ {UDP_BATCH} messages a call"),
                    Font::Small,
                    color::MUTED,
                ),
            ],
        );
        let x = r.center_x();
        c.arrow(
            x - 8.0,
            tun.bottom() + 2.0,
            x - 8.0,
            r.y - 2.0,
            color::INNER,
            false,
        );
        c.arrow(
            x + 8.0,
            r.y - 2.0,
            x + 8.0,
            tun.bottom() + 2.0,
            color::INNER,
            false,
        );
    }
    // The UDP sockets.
    let udp = Rect::new(MARGIN, workers_y + wh + 30.0, area, 86.0);
    c.rect(udp, paint_light(Paint::OUTER), 4.0);
    for k in 0..WORKERS {
        let s = Rect::new(col(k), udp.y + 8.0, w, 28.0);
        c.rect(s, Paint::WHITE, 3.0);
        c.text_block(s, &[(&format!("socket {k}"), Font::Small, color::INK)]);
        let x = s.center_x();
        c.arrow(
            x - 8.0,
            workers_y + wh + 2.0,
            x - 8.0,
            s.y - 2.0,
            color::OUTER,
            false,
        );
        c.arrow(
            x + 8.0,
            s.y - 2.0,
            x + 8.0,
            workers_y + wh + 2.0,
            color::OUTER,
            false,
        );
    }
    c.text_in(
        udp,
        (udp.x + 8.0, udp.y + 58.0),
        "UDP sockets on one port, SO_REUSEPORT",
        Font::Bold,
        Anchor::Start,
        color::INK,
    );
    c.text_in(
        udp,
        (udp.x + 8.0, udp.y + 73.0),
        "the kernel picks the socket by a hash of the addresses and ports",
        Font::Small,
        Anchor::Start,
        color::MUTED,
    );
    // What the workers share.
    let side_x = MARGIN + area + 24.0;
    let side_w = WIDTH - MARGIN - side_x;
    let device = Rect::new(side_x, TOP - 4.0, side_w, 92.0);
    c.rect(device, Paint::PLAIN, 4.0);
    c.text_block(
        device,
        &[
            ("control plane", Font::Bold, color::INK),
            ("step 07's Device, one Mutex:", Font::Small, color::MUTED),
            ("handshakes, timers, config;", Font::Small, color::MUTED),
            ("no worker takes it per packet", Font::Small, color::MUTED),
        ],
    );
    let plane = Rect::new(side_x, workers_y, side_w, wh);
    c.rect(plane, Paint::GOOD, 4.0);
    c.text_block(
        plane,
        &[
            ("data plane: one Plane", Font::Bold, color::INK),
            ("allowed IPs, peers, sessions,", Font::Small, color::MUTED),
            ("MTU; read-only, and each", Font::Small, color::MUTED),
            ("worker holds an Arc of it", Font::Small, color::MUTED),
        ],
    );
    let x = plane.center_x();
    c.arrow(x, device.bottom() + 2.0, x, plane.y - 2.0, color::GOOD, true);
    c.text(
        x - 6.0,
        (device.bottom() + plane.y) / 2.0 + 4.0,
        "copied on change",
        Font::Small,
        Anchor::End,
        color::MUTED,
    );
    let y = plane.y + plane.h / 2.0;
    c.arrow(plane.x - 2.0, y, col(WORKERS - 1) + w + 2.0, y, color::GOOD, true);
    let ledger = Rect::new(side_x, udp.y, side_w, udp.h);
    c.rect(ledger, Paint::PLAIN, 4.0);
    c.text_block(
        ledger,
        &[
            ("each worker's Ledger", Font::Bold, color::INK),
            ("bytes, timers, roaming: to", Font::Small, color::MUTED),
            ("the device once per wake-up", Font::Small, color::MUTED),
        ],
    );
    let caption = format!(
        "Squares are packets, one colour per flow. Step 08 runs {WORKERS} workers here (--threads; \
         one per CPU by default). The kernel hashes every packet of one flow to the same TUN \
         queue, and every datagram from one peer's address and port to the same socket, so one \
         worker handles a flow, in order. No worker takes the device's lock for a packet: it reads \
         the shared Plane, and touches only each session's send counter (one atomic addition per \
         batch) and replay window (a lock per session)."
    );
    Ok(Figure::from_canvas(c, &caption))
}
// ANCHOR_END: workers

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_super_packet_cuts_into_47_packets_sealed_into_2_gso_messages() {
        // 47 segments of 1368 bytes and 52 of headers: 64348 bytes, cut
        // back into packets of 1420, sealed to 1452; 45 of those fill a
        // GSO message (65340 of at most 65507 bytes).
        let o = offload().unwrap();
        assert_eq!(
            (o.vnet_len, o.super_len, o.hdr_len, o.gso_size),
            (10, 47 * 1368 + 52, 52, 1368)
        );
        assert_eq!((o.packets, o.packet_len, o.sealed), (47, 1420, 1452));
        assert_eq!((o.messages, o.segment, o.writes), (vec![45, 2], 1452, 1));
    }

    #[test]
    fn a_super_packet_is_47_packets_in_2_gso_messages_and_1_write() {
        // 65483 bytes of payload at an MSS of 1368: 47 segments; sealed
        // 1452 bytes each, at most 45 fit one GSO message (65507 bytes).
        assert_eq!(
            crossing().unwrap(),
            Crossing {
                packets: 47,
                messages: 2,
                writes: 1
            }
        );
    }
}
