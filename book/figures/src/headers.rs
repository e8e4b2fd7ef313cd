//! The headers etherparse parses for the steps: IPv4 with an ICMP echo
//! (step 01), IPv6 and the TCP pseudo-headers (step 03).
//!
//! The layouts are tables of bit ranges, defined here, and the tests hold
//! each range to what etherparse reads from a real packet of `pcaps/`.
//! The figures show the values of those same packets.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use anyhow::{Context, bail};
use step01_ping_tun::checksum;
use step01_ping_tun::responder::DropReason;

use crate::layout::{self, Field, bracket, draw_grid, read_bits};
use crate::svg::{Anchor, Canvas, Font, MARGIN, Paint, Rect, TOP, WIDTH, color, line_height, wrap};
use crate::{Figure, Packet, capture};

/// How a field's value is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Dec,
    /// 16 bits in hex: checksums, identifiers nobody reads as numbers.
    Hex,
    Bin,
    Ipv4,
    Ipv6,
    /// An IP protocol number, with its name.
    Protocol,
    /// An ICMP type, with its name.
    IcmpType,
}

/// One row of a layout table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub bits: Range<u32>,
    pub show: Show,
}

const fn spec(name: &'static str, bits: Range<u32>, show: Show) -> Spec {
    Spec { name, bits, show }
}

/// The IPv4 header without options (RFC 791 §3.1).
pub const IPV4: &[Spec] = &[
    spec("version", 0..4, Show::Dec),
    spec("IHL", 4..8, Show::Dec),
    spec("DSCP", 8..14, Show::Dec),
    spec("ECN", 14..16, Show::Dec),
    spec("total length", 16..32, Show::Dec),
    spec("identification", 32..48, Show::Hex),
    spec("flags", 48..51, Show::Bin),
    spec("fragment offset", 51..64, Show::Dec),
    spec("TTL", 64..72, Show::Dec),
    spec("protocol", 72..80, Show::Protocol),
    spec("header checksum", 80..96, Show::Hex),
    spec("source address", 96..128, Show::Ipv4),
    spec("destination address", 128..160, Show::Ipv4),
];

/// An ICMP echo request or reply (RFC 792), from the start of the ICMP
/// message; the data follows.
pub const ICMP_ECHO: &[Spec] = &[
    spec("type", 0..8, Show::IcmpType),
    spec("code", 8..16, Show::Dec),
    spec("ICMP checksum", 16..32, Show::Hex),
    spec("identifier", 32..48, Show::Dec),
    spec("sequence number", 48..64, Show::Dec),
];

/// The IPv6 header (RFC 8200 §3).
pub const IPV6: &[Spec] = &[
    spec("version", 0..4, Show::Dec),
    spec("traffic class", 4..12, Show::Dec),
    spec("flow label", 12..32, Show::Hex),
    spec("payload length", 32..48, Show::Dec),
    spec("next header", 48..56, Show::Protocol),
    spec("hop limit", 56..64, Show::Dec),
    spec("source address", 64..192, Show::Ipv6),
    spec("destination address", 192..320, Show::Ipv6),
];

/// The IPv4 pseudo-header of TCP and UDP (RFC 9293 §3.1, RFC 768).
pub const PSEUDO_V4: &[Spec] = &[
    spec("source address", 0..32, Show::Ipv4),
    spec("destination address", 32..64, Show::Ipv4),
    spec("zero", 64..72, Show::Dec),
    spec("protocol", 72..80, Show::Dec),
    spec("TCP length", 80..96, Show::Dec),
];

/// The IPv6 pseudo-header of every upper-layer checksum (RFC 8200 §8.1).
pub const PSEUDO_V6: &[Spec] = &[
    spec("source address", 0..128, Show::Ipv6),
    spec("destination address", 128..256, Show::Ipv6),
    spec("upper-layer packet length", 256..288, Show::Dec),
    spec("zero", 288..312, Show::Dec),
    spec("next header", 312..320, Show::Dec),
];

/// What step 01's responder checks, field by field, and the reason it
/// counts a packet under when the check fails. The tests change each
/// field of a real echo request and hold the responder to this table: a
/// field listed here must make it drop the packet for this reason, and a
/// field not listed must not stop the reply.
pub const STEP01_CHECKS: &[(&str, DropReason)] = &[
    ("version", DropReason::NotIp),
    ("IHL", DropReason::Malformed),
    ("total length", DropReason::Truncated),
    ("flags", DropReason::Fragment),
    ("fragment offset", DropReason::Fragment),
    ("protocol", DropReason::NotIcmp),
    ("header checksum", DropReason::BadIpChecksum),
    ("destination address", DropReason::NotForUs),
    ("type", DropReason::NotEchoRequest),
    ("code", DropReason::NotEchoRequest),
    ("ICMP checksum", DropReason::BadIcmpChecksum),
];

/// Bits of the IPv4 header without options: where the ICMP message starts
/// in the packets of step 01.
pub const IPV4_BITS: u32 = 160;

/// `table` moved `by` bits further into the packet.
pub fn shifted(table: &[Spec], by: u32) -> Vec<Spec> {
    table
        .iter()
        .map(|s| Spec {
            bits: s.bits.start + by..s.bits.end + by,
            ..s.clone()
        })
        .collect()
}

/// The value of `spec` in `data`, as the figure shows it.
pub fn show(spec: &Spec, data: &[u8]) -> Option<String> {
    let v = read_bits(data, &spec.bits)?;
    let width = (spec.bits.end - spec.bits.start) as usize;
    Some(match spec.show {
        Show::Dec => v.to_string(),
        Show::Hex => format!("0x{v:0w$x}", w = width.div_ceil(4)),
        Show::Bin => format!("{v:0width$b}"),
        Show::Ipv4 => Ipv4Addr::from(u32::try_from(v).ok()?).to_string(),
        Show::Ipv6 => Ipv6Addr::from(v).to_string(),
        Show::Protocol => match v {
            1 => "1 (ICMP)".into(),
            6 => "6 (TCP)".into(),
            17 => "17 (UDP)".into(),
            58 => "58 (ICMPv6)".into(),
            other => other.to_string(),
        },
        Show::IcmpType => match v {
            0 => "0 (echo reply)".into(),
            8 => "8 (echo request)".into(),
            other => other.to_string(),
        },
    })
}

/// The fields of `table` with their values in `data`.
fn fields(table: &[Spec], data: &[u8], paint: impl Fn(&Spec) -> Paint) -> anyhow::Result<Vec<Field>> {
    table
        .iter()
        .map(|s| {
            let value = show(s, data).with_context(|| format!("the packet is too short for {}", s.name))?;
            Ok(Field::new(s.name, s.bits.clone()).value(value).paint(paint(s)))
        })
        .collect()
}

/// The first packet of `path` that `pick` accepts.
pub fn first_packet(path: &str, pick: impl Fn(&[u8]) -> bool) -> anyhow::Result<Packet> {
    capture(path)?
        .into_iter()
        .find(|p| pick(&p.ip))
        .with_context(|| format!("pcaps/{path} has no such packet"))
}

/// An IPv4 ICMP echo request without options.
pub fn is_echo_request_v4(ip: &[u8]) -> bool {
    ip.len() >= 28 && ip[0] == 0x45 && ip[9] == 1 && ip[20] == 8
}

/// The IPv4 header and ICMP echo of step 01's first recorded ping, with
/// the fields its responder checks highlighted.
pub fn ipv4_icmp_header() -> anyhow::Result<Figure> {
    let source = "step01/ping-default.pcap";
    let packet = first_packet(source, is_echo_request_v4)?.ip;
    let checked = |s: &Spec| {
        if STEP01_CHECKS.iter().any(|(name, _)| *name == s.name) {
            Paint::MARK
        } else {
            Paint::PLAIN
        }
    };
    let mut all = fields(IPV4, &packet, checked)?;
    all.extend(fields(&shifted(ICMP_ECHO, IPV4_BITS), &packet, checked)?);
    all.push(Field::bytes("echo data", 28..packet.len()));

    let mut c = Canvas::new("IPv4 header and ICMP echo request");
    let (x, w) = (60.0, 464.0);
    let grid = draw_grid(&mut c, x, TOP, w, &all);
    let bx = x + w + 12.0;
    bracket(
        &mut c,
        bx,
        grid.y_at(0),
        grid.y_at(20),
        &[
            ("IPv4 header", Font::Bold),
            ("RFC 791 §3.1", Font::Small),
            ("20 bytes", Font::Small),
        ],
    );
    bracket(
        &mut c,
        bx,
        grid.y_at(20),
        grid.y_at(28),
        &[("ICMP echo", Font::Bold), ("RFC 792", Font::Small)],
    );
    bracket(
        &mut c,
        bx,
        grid.y_at(28),
        grid.bottom,
        &[("data", Font::Bold), ("echoed back", Font::Small)],
    );

    // The legend: what each highlighted field's check is called.
    let mut y = grid.bottom + 26.0;
    layout::legend(
        &mut c,
        MARGIN,
        y,
        Paint::MARK,
        "checked by step 01's responder; a packet that fails is dropped and counted as:",
    );
    let mut reasons: Vec<(DropReason, Vec<&str>)> = Vec::new();
    for (name, reason) in STEP01_CHECKS {
        match reasons.iter_mut().find(|(r, _)| r == reason) {
            Some((_, names)) => names.push(name),
            None => reasons.push((*reason, vec![name])),
        }
    }
    let items: Vec<String> = reasons
        .iter()
        .map(|(reason, names)| format!("{} → {reason}", names.join(", ")))
        .collect();
    for line in wrap(&items.join("   ·   "), Font::Small, WIDTH - 2.0 * MARGIN - 20.0) {
        y += line_height(Font::Small) + 2.0;
        c.text(MARGIN + 20.0, y, &line, Font::Small, Anchor::Start, color::INK);
    }
    Ok(Figure::from_canvas(
        c,
        &format!(
            "The first echo request of pcaps/{source}, with its values. Bits are numbered from the most \
             significant bit of each 32-bit row, byte offsets on the left. A version of 6 is counted \
             as ipv6 rather than not-ip, and a packet shorter than its headers as truncated. The \
             reply goes back to the source address with the same DSCP, identifier, sequence number \
             and data; no other field stops it."
        ),
    ))
}

/// An IPv6 echo request.
fn is_echo_request_v6(ip: &[u8]) -> bool {
    ip.len() >= 48 && ip[0] >> 4 == 6 && ip[6] == 58 && ip[40] == 128
}

/// The IPv6 header of step 03's first recorded ping over IPv6.
pub fn ipv6_header() -> anyhow::Result<Figure> {
    let source = "step03/respond.pcap";
    let packet = first_packet(source, is_echo_request_v6)?.ip;
    let all = fields(IPV6, &packet, |_| Paint::PLAIN)?;
    let mut c = Canvas::new("IPv6 header");
    let (x, w) = (60.0, 464.0);
    let grid = draw_grid(&mut c, x, TOP, w, &all);
    bracket(
        &mut c,
        x + w + 12.0,
        grid.y_at(0),
        grid.bottom,
        &[
            ("IPv6 header", Font::Bold),
            ("RFC 8200 §3", Font::Small),
            ("always 40 bytes", Font::Small),
        ],
    );
    Ok(Figure::from_canvas(
        c,
        &format!(
            "The first IPv6 echo request of pcaps/{source}, with its values (the addresses are 16 bytes \
             each, drawn two rows tall). Compared with IPv4 there is no header length (the header is \
             always 40 bytes; options go in extension headers, chained by next header), no header \
             checksum (the pseudo-header makes every upper-layer checksum cover the addresses), and \
             no fragmentation fields (routers never fragment IPv6)."
        ),
    ))
}

/// A TCP segment in `ip` (IPv4 without options, or IPv6 with TCP as the
/// next header): the segment's bytes.
pub fn tcp_segment(ip: &[u8]) -> Option<&[u8]> {
    match ip.first()? >> 4 {
        4 if *ip.get(9)? == 6 && ip[0] == 0x45 => {
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            ip.get(20..total)
        }
        6 if *ip.get(6)? == 6 => {
            let len = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            ip.get(40..40 + len)
        }
        _ => None,
    }
}

/// A SYN without ACK.
fn is_syn(ip: &[u8]) -> bool {
    tcp_segment(ip).is_some_and(|t| t.len() >= 20 && t[13] & 0x12 == 0x02)
}

/// The pseudo-header of `table` for a TCP segment of `ip`, built from the
/// table: the addresses, the zero bytes, the protocol and the length go
/// where its rows say.
pub fn pseudo_header(table: &[Spec], ip: &[u8]) -> Option<Vec<u8>> {
    let segment = tcp_segment(ip)?;
    let (src, dst): (u128, u128) = if ip[0] >> 4 == 4 {
        (read_bits(ip, &(96..128))?, read_bits(ip, &(128..160))?)
    } else {
        (read_bits(ip, &(64..192))?, read_bits(ip, &(192..320))?)
    };
    let len = table.last()?.bits.end.div_ceil(8) as usize;
    let mut out = vec![0xff; len];
    for s in table {
        let value = match s.name {
            "source address" => src,
            "destination address" => dst,
            "zero" => 0,
            "protocol" | "next header" => 6,
            "TCP length" | "upper-layer packet length" => segment.len() as u128,
            _ => return None,
        };
        layout::write_bits(&mut out, &s.bits, value);
    }
    Some(out)
}

/// The TCP checksum of the segment in `ip` over the pseudo-header of
/// `table`: the checksum field counts as zero (RFC 9293 §3.1).
pub fn tcp_checksum(table: &[Spec], ip: &[u8]) -> Option<u16> {
    let pseudo = pseudo_header(table, ip)?;
    let mut segment = tcp_segment(ip)?.to_vec();
    segment[16..18].fill(0);
    Some(checksum::fold(checksum::sum(checksum::sum(0, &pseudo), &segment)))
}

/// The two pseudo-headers, with the SYNs of two recorded connections, and
/// how they feed the TCP checksum.
pub fn tcp_pseudo_header() -> anyhow::Result<Figure> {
    let v4_source = "step05/internet.pcap";
    let v6_source = "step03/routed-client-tun.pcap";
    let v4 = first_packet(v4_source, |ip| ip[0] >> 4 == 4 && is_syn(ip))?.ip;
    let v6 = first_packet(v6_source, |ip| ip[0] >> 4 == 6 && is_syn(ip))?.ip;
    let mut c = Canvas::new("The TCP pseudo-headers");
    let w = 272.0;
    let (x4, x6) = (52.0, 52.0 + w + 76.0);
    let head_y = TOP + 6.0;
    c.text(
        x4,
        head_y,
        "IPv4 (RFC 9293 §3.1)",
        Font::Bold,
        Anchor::Start,
        color::INK,
    );
    c.text(
        x6,
        head_y,
        "IPv6 (RFC 8200 §8.1)",
        Font::Bold,
        Anchor::Start,
        color::INK,
    );
    let mut examples = Vec::new();
    let mut bottoms = Vec::new();
    for (table, packet, x, source) in [(PSEUDO_V4, &v4, x4, v4_source), (PSEUDO_V6, &v6, x6, v6_source)] {
        let pseudo = pseudo_header(table, packet).context("not a TCP segment")?;
        let f = fields(table, &pseudo, |_| Paint::OUTER)?;
        let grid = draw_grid(&mut c, x, head_y + 10.0, w, &f);
        bottoms.push((x, grid.bottom));
        let segment = tcp_segment(packet).context("not a TCP segment")?;
        let recorded = u16::from_be_bytes([segment[16], segment[17]]);
        let computed = tcp_checksum(table, packet).context("not a TCP segment")?;
        if computed != recorded {
            bail!(
                "pcaps/{source}: the SYN's checksum is {recorded:#06x}, the pseudo-header gives {computed:#06x}"
            );
        }
        examples.push(format!("{source}: 0x{recorded:04x}"));
    }
    // What the sum covers, under both.
    let top = bottoms.iter().map(|(_, b)| *b).fold(0.0, f64::max) + 34.0;
    let boxes = [
        (
            "pseudo-header",
            "from the IP header; never sent",
            Paint::OUTER,
            190.0,
        ),
        ("TCP header", "checksum field taken as 0", Paint::PLAIN, 190.0),
        ("TCP data", "none in a SYN", Paint::PLAIN, 140.0),
    ];
    let total: f64 = boxes.iter().map(|b| b.3).sum();
    let mut bx = (WIDTH - total) / 2.0;
    let mut centers = Vec::new();
    for (name, note, paint, bw) in boxes {
        let r = Rect::new(bx, top, bw, 44.0);
        c.rect(r, paint, 0.0);
        let mut lines = vec![(name, Font::Bold, color::INK)];
        if !note.is_empty() {
            lines.push((note, Font::Small, color::MUTED));
        }
        c.text_block(r, &lines);
        centers.push(r.center_x());
        bx += bw;
    }
    for (x, bottom) in &bottoms {
        c.arrow(
            x + w / 2.0,
            bottom + 4.0,
            centers[0],
            top - 2.0,
            color::OUTER,
            false,
        );
    }
    let sum_y = top + 44.0 + 34.0;
    c.arrow(
        WIDTH / 2.0,
        top + 46.0,
        WIDTH / 2.0,
        sum_y - 14.0,
        color::INK,
        false,
    );
    let r = Rect::new(WIDTH / 2.0 - 240.0, sum_y - 12.0, 480.0, 40.0);
    c.rect(r, Paint::GOOD, 4.0);
    c.text_block(
        r,
        &[
            (
                "one's complement sum of 16-bit words (RFC 1071)",
                Font::Body,
                color::INK,
            ),
            (
                "its complement → the TCP checksum (bytes 16–17 of the TCP header)",
                Font::Small,
                color::INK,
            ),
        ],
    );
    Ok(Figure::from_canvas(
        c,
        &format!(
            "The values are those of the first SYN in each of two captures; summed with the segment, \
             they give the checksum the SYN carries ({}; {}). Because the addresses are in the sum, \
             a router that rewrites them (NAT) must update the TCP checksum too. UDP and ICMPv6 use \
             the same pseudo-headers.",
            examples[0], examples[1]
        ),
    ))
}

#[cfg(test)]
mod tests {
    use etherparse::{Icmpv4Slice, Icmpv4Type, Ipv4HeaderSlice, Ipv6HeaderSlice, TcpHeaderSlice};
    use step01_ping_tun::responder::{Outcome, Responder};

    use super::*;

    fn value(table: &[Spec], name: &str, data: &[u8]) -> u128 {
        let s = table
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name}"));
        read_bits(data, &s.bits).unwrap()
    }

    /// Each field of the IPv4 and ICMP tables reads what etherparse reads
    /// from a recorded echo request.
    #[test]
    fn ipv4_and_icmp_fields_are_where_etherparse_finds_them() {
        let ip = first_packet("step01/ping-default.pcap", is_echo_request_v4)
            .unwrap()
            .ip;
        let h = Ipv4HeaderSlice::from_slice(&ip).unwrap();
        let flags = u128::from(h.dont_fragment()) << 1 | u128::from(h.more_fragments());
        let expected: Vec<(&str, u128)> = vec![
            ("version", h.version().into()),
            ("IHL", h.ihl().into()),
            ("DSCP", h.dcp().value().into()),
            ("ECN", h.ecn().value().into()),
            ("total length", h.total_len().into()),
            ("identification", h.identification().into()),
            ("flags", flags),
            ("fragment offset", h.fragments_offset().value().into()),
            ("TTL", h.ttl().into()),
            ("protocol", h.protocol().0.into()),
            ("header checksum", h.header_checksum().into()),
            ("source address", u32::from_be_bytes(h.source()).into()),
            ("destination address", u32::from_be_bytes(h.destination()).into()),
        ];
        assert_eq!(expected.len(), IPV4.len());
        for (name, v) in expected {
            assert_eq!(value(IPV4, name, &ip), v, "IPv4 {name}");
        }
        let icmp = Icmpv4Slice::from_slice(&ip[20..]).unwrap();
        let Icmpv4Type::EchoRequest(echo) = icmp.icmp_type() else {
            panic!("not an echo request")
        };
        let expected: Vec<(&str, u128)> = vec![
            ("type", icmp.type_u8().into()),
            ("code", icmp.code_u8().into()),
            ("ICMP checksum", icmp.checksum().into()),
            ("identifier", echo.id.into()),
            ("sequence number", echo.seq.into()),
        ];
        assert_eq!(expected.len(), ICMP_ECHO.len());
        for (name, v) in expected {
            assert_eq!(value(&shifted(ICMP_ECHO, IPV4_BITS), name, &ip), v, "ICMP {name}");
        }
    }

    #[test]
    fn ipv6_fields_are_where_etherparse_finds_them() {
        let ip = first_packet("step03/respond.pcap", is_echo_request_v6)
            .unwrap()
            .ip;
        let h = Ipv6HeaderSlice::from_slice(&ip).unwrap();
        let expected: Vec<(&str, u128)> = vec![
            ("version", h.version().into()),
            ("traffic class", h.traffic_class().into()),
            ("flow label", h.flow_label().value().into()),
            ("payload length", h.payload_length().into()),
            ("next header", h.next_header().0.into()),
            ("hop limit", h.hop_limit().into()),
            ("source address", u128::from_be_bytes(h.source())),
            ("destination address", u128::from_be_bytes(h.destination())),
        ];
        assert_eq!(expected.len(), IPV6.len());
        for (name, v) in expected {
            assert_eq!(value(IPV6, name, &ip), v, "IPv6 {name}");
        }
    }

    /// A pseudo-header built from each table, summed with a recorded SYN,
    /// gives the checksum the SYN carries, and the same sum as step 03's
    /// own pseudo-header code.
    #[test]
    fn the_pseudo_header_tables_give_the_recorded_checksums() {
        let v4 = first_packet("step05/internet.pcap", |ip| ip[0] >> 4 == 4 && is_syn(ip))
            .unwrap()
            .ip;
        let v6 = first_packet("step03/routed-client-tun.pcap", |ip| {
            ip[0] >> 4 == 6 && is_syn(ip)
        })
        .unwrap()
        .ip;
        for (table, ip) in [(PSEUDO_V4, &v4), (PSEUDO_V6, &v6)] {
            let tcp = TcpHeaderSlice::from_slice(tcp_segment(ip).unwrap()).unwrap();
            assert_eq!(tcp_checksum(table, ip), Some(tcp.checksum()));
        }
        let h = Ipv4HeaderSlice::from_slice(&v4).unwrap();
        let len = tcp_segment(&v4).unwrap().len();
        assert_eq!(
            checksum::sum(0, &pseudo_header(PSEUDO_V4, &v4).unwrap()),
            step03_ipv6::checksum::pseudo_header_v4(h.source_addr(), h.destination_addr(), 6, len as u16)
        );
        let h = Ipv6HeaderSlice::from_slice(&v6).unwrap();
        let len = tcp_segment(&v6).unwrap().len();
        assert_eq!(
            checksum::fold(checksum::sum(0, &pseudo_header(PSEUDO_V6, &v6).unwrap())),
            checksum::fold(step03_ipv6::checksum::pseudo_header_v6(
                h.source_addr(),
                h.destination_addr(),
                6,
                len as u32
            ))
        );
        assert_eq!(pseudo_header(PSEUDO_V4, &v4).unwrap().len(), 12);
        assert_eq!(pseudo_header(PSEUDO_V6, &v6).unwrap().len(), 40);
    }

    /// A value for `field` that its check, if any, refuses: the test
    /// writes it into a good echo request.
    fn probe(field: &str, original: u128) -> u128 {
        match field {
            "version" => 5,
            "IHL" => 4,
            "total length" => original + 1,
            "flags" => original | 1, // more fragments
            "fragment offset" => 1,
            "protocol" => 17,
            "destination address" => u32::from(Ipv4Addr::new(192, 0, 2, 1)).into(),
            "type" => 0,
            "code" => 1,
            "source address" => u32::from(Ipv4Addr::new(198, 51, 100, 7)).into(),
            "TTL" => 1,
            "DSCP" => 46,
            "ECN" => 1,
            // Checksums, identification, identifier, sequence number.
            _ => original ^ 0x0101,
        }
    }

    /// The highlighted fields of the figure are exactly those whose
    /// change makes step 01's responder drop a recorded echo request, for
    /// the reason the legend gives.
    #[test]
    fn the_highlighted_fields_are_what_step01_checks() {
        let request = first_packet("step01/ping-default.pcap", is_echo_request_v4)
            .unwrap()
            .ip;
        let subnet = "10.0.0.1/24".parse().unwrap();
        let mut out = [0u8; 2048];
        assert!(matches!(
            Responder::new(subnet).handle(&request, &mut out),
            Outcome::Reply(_)
        ));
        let icmp = shifted(ICMP_ECHO, IPV4_BITS);
        for s in IPV4.iter().chain(&icmp) {
            let mut p = request.clone();
            let original = read_bits(&p, &s.bits).unwrap();
            layout::write_bits(&mut p, &s.bits, probe(s.name, original));
            assert_ne!(p, request, "{}: the probe changes nothing", s.name);
            // Fix the checksums the change broke, unless it is one.
            if s.name != "header checksum" {
                p[10..12].fill(0);
                let sum = checksum::checksum(&p[..20]);
                p[10..12].copy_from_slice(&sum.to_be_bytes());
            }
            if s.name != "ICMP checksum" {
                p[22..24].fill(0);
                let sum = checksum::checksum(&p[20..]);
                p[22..24].copy_from_slice(&sum.to_be_bytes());
            }
            let outcome = Responder::new(subnet).handle(&p, &mut out);
            match STEP01_CHECKS.iter().find(|(name, _)| *name == s.name) {
                Some((_, reason)) => assert_eq!(outcome, Outcome::Drop(*reason), "{}", s.name),
                None => assert!(matches!(outcome, Outcome::Reply(_)), "{}: {outcome:?}", s.name),
            }
        }
        for (name, _) in STEP01_CHECKS {
            assert!(
                IPV4.iter().chain(ICMP_ECHO).any(|s| s.name == *name),
                "{name} is in no table"
            );
        }
    }
}
