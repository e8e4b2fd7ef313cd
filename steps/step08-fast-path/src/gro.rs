//! Coalescing on the way into the TUN device: the TCP segments of one
//! flow in a batch become one super-packet, which the kernel takes in one
//! write and hands to its TCP as one (the receive side's GRO, done here
//! because the packets arrive from a socket, not from a network card).
//!
//! tun-rs has a GRO table for this (`send_multiple`), but it copies every
//! packet it looks at into a new `Vec` (tun-rs 2.8.16, `tcp_gro`): one
//! allocation per packet, which this step does not allow itself. So the
//! coalescing is here, in the same shape as wireguard-go's
//! `tun/offload_linux.go` and the kernel's `tcp_gro_receive`: segments
//! are appended to the first of their flow while
//!
//! - the flow is the same: addresses, ports, and the acknowledgment
//!   number (a new ACK is a new event for the receiver),
//! - the IP headers agree on everything a segment could differ in (TOS,
//!   TTL, don't-fragment; IPv6's class, flow label, hop limit),
//! - the TCP headers carry the same options (timestamps included) and
//!   only ACK, with PSH allowed on the last one,
//! - the sequence numbers follow on, each segment as long as the first
//!   but the last, which may be shorter,
//! - the result fits in 64 KB, and
//! - each segment's TCP checksum is right: the super-packet goes to the
//!   kernel with `VIRTIO_NET_HDR_F_NEEDS_CSUM` (its checksum is computed
//!   again when it is cut up, or not checked at all), so a segment with a
//!   bad checksum merged into it would be accepted as good.
//!
//! Everything else is written as it came, in the order it came.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use step01_ping_tun::checksum;
use step03_ipv6::checksum::{fold, pseudo_header_v4, pseudo_header_v6, verify_transport};
use tun_rs::{VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_LEN, VirtioNetHdr};

use crate::plane::OFFSET;

const TCP: u8 = 6;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum field holds the
/// pseudo-header's sum, and the kernel completes it.
const NEEDS_CSUM: u8 = 1;
/// `GSO_NONE`: one packet.
pub const GSO_NONE: u8 = 0;

/// What identifies a flow's segments that may be merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    /// Source and destination ports.
    ports: [u8; 4],
    ack: [u8; 4],
}

/// A TCP segment that may be merged, located in its packet.
#[derive(Debug, Clone, Copy)]
struct Segment {
    key: Key,
    /// IP header length, TCP header length.
    iph: usize,
    tcph: usize,
    seq: u32,
    payload: usize,
    psh: bool,
}

/// A flow's super-packet under construction.
#[derive(Debug, Clone, Copy)]
struct Flow {
    key: Key,
    /// The buffer its first segment is in: the super-packet grows there.
    head: usize,
    iph: usize,
    tcph: usize,
    /// The first segment's payload length: every segment but the last.
    gso: usize,
    next_seq: u32,
    segments: usize,
    /// The packet's length so far.
    len: usize,
    /// False once a shorter or a PSH segment ended it, or something of
    /// its connection that may not be merged came after it.
    open: bool,
}

// ANCHOR: coalescer
/// The coalescer's state, reused for every batch.
pub struct Coalescer {
    flows: Vec<Flow>,
    writes: Vec<usize>,
}
// ANCHOR_END: coalescer

impl Default for Coalescer {
    fn default() -> Self {
        Self::new()
    }
}

impl Coalescer {
    pub fn new() -> Self {
        Self {
            flows: Vec::with_capacity(crate::worker::TUN_BATCH),
            writes: Vec::with_capacity(crate::worker::TUN_BATCH),
        }
    }

    // ANCHOR: coalesce
    /// Merges what may be merged among the packets `bufs[i][OFFSET..]`
    /// (`i < n`, each buffer cut to the end of its packet), writes the
    /// virtio-net header in front of each packet to write (in
    /// `bufs[i][OFFSET - 10..OFFSET]`), and returns the buffers to write,
    /// in order.
    pub fn coalesce(&mut self, bufs: &mut [Vec<u8>], n: usize) -> &[usize] {
        self.flows.clear();
        self.writes.clear();
        for i in 0..n.min(bufs.len()) {
            let packet = &bufs[i][OFFSET..];
            let Some(seg) = segment(packet) else {
                // Not mergeable: nothing of its connection may be merged
                // across it, or it would be overtaken.
                if let Some(conn) = connection(packet) {
                    for f in self.flows.iter_mut().filter(|f| same_connection(&f.key, &conn)) {
                        f.open = false;
                    }
                }
                self.writes.push(i);
                continue;
            };
            if self.append(bufs, i, &seg) {
                continue;
            }
            for f in self.flows.iter_mut().filter(|f| f.key == seg.key) {
                f.open = false;
            }
            // A segment with a bad checksum starts no flow: written as it
            // is, the kernel drops it.
            if verify_transport(&bufs[i][OFFSET..]) == Some(true) {
                let len = bufs[i].len() - OFFSET;
                self.flows.push(Flow {
                    key: seg.key,
                    head: i,
                    iph: seg.iph,
                    tcph: seg.tcph,
                    gso: seg.payload,
                    next_seq: seg.seq.wrapping_add(seg.payload as u32),
                    segments: 1,
                    len,
                    open: !seg.psh,
                });
            }
            self.writes.push(i);
        }
        for f in &self.flows {
            finish(&mut bufs[f.head], f);
        }
        // The rest go as they are: a header that says so.
        for &i in &self.writes {
            if !self.flows.iter().any(|f| f.head == i && f.segments > 1) {
                encode(&mut bufs[i], VirtioNetHdr::default());
            }
        }
        &self.writes
    }
    // ANCHOR_END: coalesce

    /// Appends segment `i` to its flow's super-packet if every rule
    /// allows it.
    fn append(&mut self, bufs: &mut [Vec<u8>], i: usize, seg: &Segment) -> bool {
        let Some(f) = self.flows.iter_mut().rev().find(|f| f.key == seg.key && f.open) else {
            return false;
        };
        let head = &bufs[f.head][OFFSET..];
        let packet = &bufs[i][OFFSET..];
        let fits = f.len + seg.payload <= usize::from(u16::MAX)
            && bufs[f.head].capacity() >= OFFSET + f.len + seg.payload;
        if seg.seq != f.next_seq
            || seg.payload > f.gso
            || seg.iph != f.iph
            || seg.tcph != f.tcph
            || !fits
            || !ip_headers_match(head, packet, seg.key.v6)
            || head[f.iph + 20..f.iph + f.tcph] != packet[seg.iph + 20..seg.iph + seg.tcph]
            || verify_transport(packet) != Some(true)
        {
            return false;
        }
        let (before, after) = bufs.split_at_mut(i);
        let payload = &after[0][OFFSET + seg.iph + seg.tcph..];
        before[f.head].extend_from_slice(payload);
        f.len += seg.payload;
        f.segments += 1;
        f.next_seq = f.next_seq.wrapping_add(seg.payload as u32);
        if seg.psh {
            // The super-packet ends here, and carries the PSH.
            before[f.head][OFFSET + f.iph + 13] |= PSH;
        }
        f.open = seg.payload == f.gso && !seg.psh;
        true
    }
}

/// The segment in `packet`, if it is one that may be merged: IPv4
/// without options and not a fragment, or IPv6 without extension
/// headers; TCP with only ACK (or ACK and PSH) and some payload.
fn segment(packet: &[u8]) -> Option<Segment> {
    let (v6, iph) = ip(packet)?;
    let tcp = packet.get(iph..)?;
    let tcph = usize::from(tcp.get(12)? >> 4) * 4;
    if !(20..=60).contains(&tcph) || tcp.len() < tcph {
        return None;
    }
    let flags = tcp[13];
    if flags != ACK && flags != ACK | PSH {
        return None;
    }
    let payload = tcp.len() - tcph;
    if payload == 0 {
        return None;
    }
    let mut key = connection(packet)?;
    key.ack.copy_from_slice(&tcp[8..12]);
    Some(Segment {
        key: Key { v6, ..key },
        iph,
        tcph,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        payload,
        psh: flags & PSH != 0,
    })
}

/// IPv4 (20-byte header, no fragment) or IPv6 (no extension header)
/// carrying TCP, whose length field matches the packet's: whether it is
/// IPv6, and the IP header's length.
fn ip(packet: &[u8]) -> Option<(bool, usize)> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let whole = usize::from(u16::from_be_bytes([packet[2], packet[3]])) == packet.len();
            let fragment = packet[6] & 0x3f != 0 || packet[7] != 0;
            (packet[0] == 0x45 && whole && !fragment && packet[9] == TCP).then_some((false, 20))
        }
        6 if packet.len() >= 40 => {
            let whole = usize::from(u16::from_be_bytes([packet[4], packet[5]])) + 40 == packet.len();
            (whole && packet[6] == TCP).then_some((true, 40))
        }
        _ => None,
    }
}

/// The connection (addresses and ports) of a TCP packet; the ACK number
/// left zero.
fn connection(packet: &[u8]) -> Option<Key> {
    let (v6, iph) = ip(packet)?;
    let tcp = packet.get(iph..iph + 4)?;
    let mut key = Key {
        v6,
        src: [0; 16],
        dst: [0; 16],
        ports: [0; 4],
        ack: [0; 4],
    };
    if v6 {
        key.src.copy_from_slice(&packet[8..24]);
        key.dst.copy_from_slice(&packet[24..40]);
    } else {
        key.src[..4].copy_from_slice(&packet[12..16]);
        key.dst[..4].copy_from_slice(&packet[16..20]);
    }
    key.ports.copy_from_slice(tcp);
    Some(key)
}

fn same_connection(a: &Key, b: &Key) -> bool {
    a.v6 == b.v6 && a.src == b.src && a.dst == b.dst && a.ports == b.ports
}

/// What an IP header may not differ in between merged segments.
fn ip_headers_match(a: &[u8], b: &[u8], v6: bool) -> bool {
    if v6 {
        // Version, traffic class, flow label; hop limit.
        a[..4] == b[..4] && a[7] == b[7]
    } else {
        // TOS; the flags (don't fragment); TTL.
        a[1] == b[1] && a[6] == b[6] && a[8] == b[8]
    }
}

fn encode(buf: &mut [u8], hdr: VirtioNetHdr) {
    // Room for it is always there: every buffer starts with OFFSET bytes.
    let _ = hdr.encode(&mut buf[OFFSET - VIRTIO_NET_HDR_LEN..OFFSET]);
}

// ANCHOR: finish
/// Gives a super-packet its lengths, its IPv4 header checksum, the
/// pseudo-header's sum in its TCP checksum field, and the virtio-net
/// header that tells the kernel how to cut it.
fn finish(buf: &mut [u8], f: &Flow) {
    if f.segments < 2 {
        return;
    }
    let packet = &mut buf[OFFSET..OFFSET + f.len];
    let tcp_len = (f.len - f.iph) as u16;
    let pseudo = if f.key.v6 {
        packet[4..6].copy_from_slice(&tcp_len.to_be_bytes());
        pseudo_header_v6(
            Ipv6Addr::from(f.key.src),
            Ipv6Addr::from(f.key.dst),
            TCP,
            u32::from(tcp_len),
        )
    } else {
        packet[2..4].copy_from_slice(&(f.len as u16).to_be_bytes());
        packet[10..12].fill(0);
        let sum = checksum::checksum(&packet[..20]);
        packet[10..12].copy_from_slice(&sum.to_be_bytes());
        let [a, b, c, d, ..] = f.key.src;
        let [e, g, h, k, ..] = f.key.dst;
        pseudo_header_v4(Ipv4Addr::new(a, b, c, d), Ipv4Addr::new(e, g, h, k), TCP, tcp_len)
    };
    // The sum folded but not complemented: the kernel adds the rest and
    // complements (virtio 1.1, 5.1.6.2: "the checksum field contains the
    // pseudo-header checksum").
    let partial = !fold(pseudo);
    packet[f.iph + 16..f.iph + 18].copy_from_slice(&partial.to_be_bytes());
    encode(
        buf,
        VirtioNetHdr {
            flags: NEEDS_CSUM,
            gso_type: if f.key.v6 {
                VIRTIO_NET_HDR_GSO_TCPV6
            } else {
                VIRTIO_NET_HDR_GSO_TCPV4
            },
            hdr_len: (f.iph + f.tcph) as u16,
            gso_size: f.gso as u16,
            csum_start: f.iph as u16,
            csum_offset: 16,
        },
    );
}
// ANCHOR_END: finish

/// The virtio-net header's GSO type of a buffer the coalescer prepared:
/// none for a packet written as it came.
pub fn gso_type(buf: &[u8]) -> u8 {
    VirtioNetHdr::decode(&buf[OFFSET - VIRTIO_NET_HDR_LEN..OFFSET]).map_or(GSO_NONE, |h| h.gso_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use step03_ipv6::checksum::transport_checksum;

    const CAP: usize = OFFSET + 65535;

    /// A TCP segment in a buffer as the worker holds it: `OFFSET` bytes
    /// of room, then the packet, with a right checksum.
    fn seg(v6: bool, seq: u32, payload: usize, flags: u8, ack: u32) -> Vec<u8> {
        let iph = if v6 { 40 } else { 20 };
        let len = iph + 32 + payload;
        let mut p = vec![0u8; len];
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            p[6] = TCP;
            p[7] = 64;
            p[8..24].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
            p[24..40].copy_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[4..6].copy_from_slice(&((seq / 1000) as u16).to_be_bytes());
            p[6] = 0x40;
            p[8] = 64;
            p[9] = TCP;
            p[12..16].copy_from_slice(&[10, 0, 0, 1]);
            p[16..20].copy_from_slice(&[10, 0, 0, 2]);
            let c = checksum::checksum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let t = &mut p[iph..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = 8 << 4; // 32 bytes: 12 bytes of options (timestamps)
        t[13] = flags;
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
        for (k, b) in t[32..].iter_mut().enumerate() {
            *b = (seq as usize + k) as u8;
        }
        let c = transport_checksum(&p).unwrap();
        p[iph + 16..iph + 18].copy_from_slice(&c.to_be_bytes());
        let mut buf = Vec::with_capacity(CAP);
        buf.resize(OFFSET, 0);
        buf.extend_from_slice(&p);
        buf
    }

    fn payload(buf: &[u8], iph: usize) -> &[u8] {
        &buf[OFFSET + iph + 32..]
    }

    #[test]
    fn consecutive_segments_of_a_flow_become_one_super_packet_that_splits_back() {
        for v6 in [false, true] {
            let iph = if v6 { 40 } else { 20 };
            let originals: Vec<Vec<u8>> = (0..10).map(|k| seg(v6, 1000 * k, 1000, ACK, 1)).collect();
            // (Not `clone`, which keeps no spare capacity.)
            let mut bufs: Vec<Vec<u8>> = (0..10).map(|k| seg(v6, 1000 * k, 1000, ACK, 1)).collect();
            let mut c = Coalescer::new();
            assert_eq!(c.coalesce(&mut bufs, 10), [0]);
            let head = &bufs[0];
            assert_eq!(head.len(), OFFSET + iph + 32 + 10_000);
            let all: Vec<u8> = originals.iter().flat_map(|b| payload(b, iph).to_vec()).collect();
            assert_eq!(payload(head, iph), &all[..]);
            let hdr = VirtioNetHdr::decode(&head[OFFSET - VIRTIO_NET_HDR_LEN..OFFSET]).unwrap();
            assert_eq!(
                (hdr.gso_size, hdr.csum_start, hdr.csum_offset),
                (1000, iph as u16, 16)
            );
            assert_eq!(hdr.hdr_len as usize, iph + 32);
            // What the kernel would do with it, by tun-rs's copy of its
            // segmentation: the same ten packets again.
            let mut input = head[OFFSET..].to_vec();
            let mut out = vec![vec![0u8; 2000]; 16];
            let mut sizes = vec![0; 16];
            let n = tun_rs::gso_split(&mut input, hdr, &mut out, &mut sizes, 0, v6).unwrap();
            assert_eq!(n, 10);
            for k in 0..10 {
                assert_eq!(
                    &out[k][..sizes[k]],
                    &originals[k][OFFSET..],
                    "v6 {v6}, segment {k}"
                );
            }
        }
    }

    #[test]
    fn what_may_not_be_merged_is_written_as_it_came_in_order() {
        let mut bad = seg(false, 3000, 1000, ACK, 1);
        bad[OFFSET + 20 + 16] ^= 0xff; // a wrong TCP checksum
        let mut bufs = vec![
            seg(false, 0, 1000, ACK, 1),
            seg(false, 1000, 1000, ACK, 1),
            seg(false, 2000, 1000, ACK, 2), // a new ACK: a new flow
            bad,                            // not merged, not a head
            seg(false, 9000, 1000, ACK, 2), // a gap in the sequence
            seg(false, 10000, 500, ACK, 2), // shorter: ends the flow...
            seg(false, 10500, 500, ACK, 2), // ...so this starts another
            seg(false, 11000, 1000, ACK | PSH, 3),
            seg(false, 12000, 1000, ACK, 3), // after a PSH: a new one
        ];
        let mut c = Coalescer::new();
        let writes = c.coalesce(&mut bufs, 9).to_vec();
        assert_eq!(writes, [0, 2, 3, 4, 6, 7, 8]);
        assert_eq!(gso_type(&bufs[0]), VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(gso_type(&bufs[2]), GSO_NONE);
        assert_eq!(gso_type(&bufs[4]), VIRTIO_NET_HDR_GSO_TCPV4, "9000 + 10000");
        assert_eq!(bufs[4].len(), OFFSET + 20 + 32 + 1500);
    }

    #[test]
    fn a_packet_that_is_not_a_mergeable_segment_closes_its_connections_flow() {
        let mut fin = seg(false, 2000, 0, ACK | 0x01, 1);
        let c = transport_checksum(&fin[OFFSET..]).unwrap();
        fin[OFFSET + 36..OFFSET + 38].copy_from_slice(&c.to_be_bytes());
        let mut bufs = vec![
            seg(false, 0, 1000, ACK, 1),
            seg(false, 1000, 1000, ACK, 1),
            fin,
            seg(false, 2000, 1000, ACK, 1),
        ];
        let mut c = Coalescer::new();
        // The last segment may not jump ahead of the FIN: it is written
        // after it, on its own.
        assert_eq!(c.coalesce(&mut bufs, 4), [0, 2, 3]);
    }

    #[test]
    fn the_super_packet_stays_within_64_kb_and_its_buffer() {
        let mut bufs: Vec<Vec<u8>> = (0..70).map(|k| seg(false, 1000 * k, 1000, ACK, 1)).collect();
        let mut c = Coalescer::new();
        let writes = c.coalesce(&mut bufs, 70).to_vec();
        assert_eq!(writes, [0, 65]);
        assert!(bufs[0].len() - OFFSET <= 65535);
        // A head whose buffer has no room left merges nothing.
        let mut small = seg(false, 0, 1000, ACK, 1);
        small.shrink_to_fit();
        let mut bufs = vec![small, seg(false, 1000, 1000, ACK, 1)];
        assert_eq!(c.coalesce(&mut bufs, 2), [0, 1]);
    }
}
