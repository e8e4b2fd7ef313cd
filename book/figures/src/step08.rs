//! Step 08's figure: the system calls that carry 64 KB of one TCP stream
//! through the two ends of a tunnel, one packet per call (step 07) and
//! batched with offloads (step 08). The numbers are not typed in: the
//! super-packet is cut by tun-rs as step 08's workers cut it, sealed
//! lengths come from step 07's padding, the GSO messages from step 08's
//! planner and the writes from its coalescer.

use anyhow::{Context, bail};
use step07_wireguard::run::DEFAULT_MTU;
use step07_wireguard::wire::{DATA_OVERHEAD, padded_len};
use step08_fast_path::gro::Coalescer;
use step08_fast_path::plane::OFFSET;
use step08_fast_path::udp::plan;

use crate::Figure;
use crate::svg::{Anchor, Canvas, Font, MARGIN, Paint, Rect, TOP, color};

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

#[cfg(test)]
mod tests {
    use super::*;

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
