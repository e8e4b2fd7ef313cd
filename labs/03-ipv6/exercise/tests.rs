//! Tests for the lab 03 exercise. `tunlab check 03` compiles them together
//! with your `clamp.rs`; every test must pass.
//!
//! The packets are real: copied byte for byte from the captures of lab 03
//! in `pcaps/step03/` (what each `step03-ipv6` read from and wrote to its
//! TUN device in part two, where the tunnel carries 1348-byte packets and
//! so clamps the MSS to 1348 - 40 - 20 = 1288 over IPv6), and one IPv4
//! packet from lab 05's `pcaps/step05/server-tun.pcap`.

use crate::exercise::{CHECKSUM, Clamp, clamp_mss, update};

/// `routed-client-tun.pcap`, packet 2: the SYN of `curl` as the client's
/// kernel wrote it into `tun0`, fd00::2 port 34894 > fd00::1 port 8000.
/// Options: MSS 1440 (05 a0), SACK permitted, timestamps, NOP, window
/// scale. TCP checksum 0x994c.
#[rustfmt::skip]
const SYN: [u8; 80] = [
    0x60, 0x00, 0x34, 0x1c, 0x00, 0x28, 0x06, 0x40, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0x4e, 0x1f, 0x40, 0x47, 0x10, 0x38, 0x92,
    0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfd, 0x20, 0x99, 0x4c, 0x00, 0x00, 0x02, 0x04, 0x05, 0xa0,
    0x04, 0x02, 0x08, 0x0a, 0xcb, 0xf7, 0xc4, 0x76, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
];

/// `routed-server-tun.pcap`, packet 3: the same SYN as the server's
/// `step03-ipv6` wrote it into the server's `tun0`, after the client's end
/// clamped it: MSS 1288 (05 08), checksum 0x99e4. Nothing else differs.
#[rustfmt::skip]
const SYN_CLAMPED: [u8; 80] = [
    0x60, 0x00, 0x34, 0x1c, 0x00, 0x28, 0x06, 0x40, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0x4e, 0x1f, 0x40, 0x47, 0x10, 0x38, 0x92,
    0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfd, 0x20, 0x99, 0xe4, 0x00, 0x00, 0x02, 0x04, 0x05, 0x08,
    0x04, 0x02, 0x08, 0x0a, 0xcb, 0xf7, 0xc4, 0x76, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
];

/// `routed-server-tun.pcap`, packet 4: the SYN-ACK as the server's kernel
/// wrote it, MSS 1440, checksum 0x3a94.
#[rustfmt::skip]
const SYN_ACK: [u8; 80] = [
    0x60, 0x09, 0x5d, 0xd4, 0x00, 0x28, 0x06, 0x40, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x1f, 0x40, 0x88, 0x4e, 0x6a, 0x11, 0x33, 0xd5,
    0x47, 0x10, 0x38, 0x93, 0xa0, 0x12, 0xfb, 0x04, 0x3a, 0x94, 0x00, 0x00, 0x02, 0x04, 0x05, 0xa0,
    0x04, 0x02, 0x08, 0x0a, 0x2f, 0xd5, 0x93, 0x07, 0xcb, 0xf7, 0xc4, 0x76, 0x01, 0x03, 0x03, 0x0a,
];

/// `routed-client-tun.pcap`, packet 3: that SYN-ACK as the client's
/// `step03-ipv6` wrote it, after the server's end clamped it: MSS 1288,
/// checksum 0x3b2c.
#[rustfmt::skip]
const SYN_ACK_CLAMPED: [u8; 80] = [
    0x60, 0x09, 0x5d, 0xd4, 0x00, 0x28, 0x06, 0x40, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x1f, 0x40, 0x88, 0x4e, 0x6a, 0x11, 0x33, 0xd5,
    0x47, 0x10, 0x38, 0x93, 0xa0, 0x12, 0xfb, 0x04, 0x3b, 0x2c, 0x00, 0x00, 0x02, 0x04, 0x05, 0x08,
    0x04, 0x02, 0x08, 0x0a, 0x2f, 0xd5, 0x93, 0x07, 0xcb, 0xf7, 0xc4, 0x76, 0x01, 0x03, 0x03, 0x0a,
];

/// `routed-client-tun.pcap`, packet 4: the client's ACK that completes the
/// handshake (no SYN flag), options NOP, NOP, timestamps.
#[rustfmt::skip]
const ACK: [u8; 72] = [
    0x60, 0x00, 0x34, 0x1c, 0x00, 0x20, 0x06, 0x40, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0x4e, 0x1f, 0x40, 0x47, 0x10, 0x38, 0x93,
    0x6a, 0x11, 0x33, 0xd6, 0x80, 0x10, 0x00, 0x40, 0x64, 0x14, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a,
    0xcb, 0xf7, 0xc4, 0x76, 0x2f, 0xd5, 0x93, 0x07,
];

/// `respond.pcap`, packet 2: an ICMP echo request over IPv4, 10.0.0.1 >
/// 10.0.0.2.
#[rustfmt::skip]
const PING_V4: [u8; 84] = [
    0x45, 0x00, 0x00, 0x54, 0xc6, 0xad, 0x40, 0x00, 0x40, 0x01, 0x5f, 0xf9, 0x0a, 0x00, 0x00, 0x01,
    0x0a, 0x00, 0x00, 0x02, 0x08, 0x00, 0xc6, 0x80, 0x43, 0x52, 0x00, 0x01, 0xff, 0x4c, 0x04, 0x6b,
    0x00, 0x00, 0x00, 0x00, 0x27, 0xa1, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11, 0x12, 0x13,
    0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23,
    0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33,
    0x34, 0x35, 0x36, 0x37,
];

/// `pcaps/step05/server-tun.pcap`, packet 4: a SYN-ACK over IPv4 from a web
/// server, 198.51.100.2 port 80 > 10.0.0.2, MSS 1460 (05 b4), TCP checksum
/// 0x8eae.
#[rustfmt::skip]
const SYN_ACK_V4: [u8; 60] = [
    0x45, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x40, 0x00, 0x3f, 0x06, 0x07, 0x85, 0xc6, 0x33, 0x64, 0x02,
    0x0a, 0x00, 0x00, 0x02, 0x00, 0x50, 0xaf, 0x84, 0x84, 0xdd, 0x73, 0x0b, 0xc6, 0xaa, 0xe6, 0xd4,
    0xa0, 0x12, 0xfe, 0x88, 0x8e, 0xae, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a,
    0xd3, 0x90, 0xe1, 0x15, 0xa1, 0x93, 0xdb, 0x06, 0x01, 0x03, 0x03, 0x0a,
];

/// The MSS of part two of lab 03 over IPv6: 1348 - 40 - 20.
const MAX_MSS_V6: u16 = 1288;
/// The same tunnel over IPv4: 1348 - 20 - 20.
const MAX_MSS_V4: u16 = 1308;

// ---------------------------------------------------------------------
// A reference to compare with: the TCP checksum summed from scratch, the
// way a receiver checks it. Not something to copy into your file: the
// point of the exercise is not to do this for every SYN.

fn ones_complement_sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The TCP segment of an IPv4 or IPv6 packet (no extension headers) and
/// the sum of its pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1).
fn segment_and_pseudo(packet: &[u8]) -> (usize, u32) {
    if packet[0] >> 4 == 6 {
        let len = packet.len() - 40;
        let acc = ones_complement_sum(0, &packet[8..40]);
        (
            40,
            ones_complement_sum(acc, &[0, 0, (len >> 8) as u8, len as u8, 0, 0, 0, 6]),
        )
    } else {
        let ihl = usize::from(packet[0] & 0x0f) * 4;
        let len = packet.len() - ihl;
        let acc = ones_complement_sum(0, &packet[12..20]);
        (
            ihl,
            ones_complement_sum(acc, &[0, 6, (len >> 8) as u8, len as u8]),
        )
    }
}

/// The TCP checksum `packet` should carry, summed from scratch with its
/// checksum field taken as zero.
fn recomputed(packet: &[u8]) -> u16 {
    let (start, pseudo) = segment_and_pseudo(packet);
    let mut copy = packet[start..].to_vec();
    copy[CHECKSUM] = 0;
    copy[CHECKSUM + 1] = 0;
    !fold(ones_complement_sum(pseudo, &copy))
}

/// Writes the right checksum into a packet the tests built.
fn fix_checksum(packet: &mut [u8]) {
    let (start, _) = segment_and_pseudo(packet);
    let sum = recomputed(packet);
    packet[start + CHECKSUM..start + CHECKSUM + 2].copy_from_slice(&sum.to_be_bytes());
}

fn stored(packet: &[u8]) -> u16 {
    let (start, _) = segment_and_pseudo(packet);
    u16::from_be_bytes([packet[start + CHECKSUM], packet[start + CHECKSUM + 1]])
}

/// Where the bytes of two packets first differ, for failure messages.
fn first_difference(got: &[u8], want: &[u8]) -> String {
    match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(i) => format!(
            "byte {i} is {:#04x}, expected {:#04x} (bytes 56 and 57 are the checksum, \
             62 and 63 the MSS)",
            got[i], want[i]
        ),
        None => "the lengths differ".into(),
    }
}

// ---------------------------------------------------------------------
// update

/// RFC 1624 §4 works this example: the sum of the other words is 0xcd7a,
/// m = 0x5555 gives HC = 0xdd2f, and m' = 0x3285 makes the new sum 0xffff.
#[test]
fn rfc1624_example_gives_0x0000_not_0xffff() {
    let got = update(0xdd2f, 0x5555, 0x3285);
    assert!(
        got == 0x0000,
        "update(0xdd2f, 0x5555, 0x3285) returned {got:#06x}, expected 0x0000.\n\
         Summed from scratch, the new checksum is ~(0xcd7a + 0x3285) = ~0xffff = 0x0000 \
         (RFC 1624 section 4). 0xffff is what RFC 1141's equation 2 (HC + m + ~m') gives: \
         use equation 3, ~(~HC + ~m + m')."
    );
}

#[test]
fn update_when_nothing_changes() {
    for sum in [0x0000, 0x1234, 0x994c, 0xfffe] {
        for word in [0x0000, 0x05a0, 0xffff] {
            let got = update(sum, word, word);
            assert!(
                got == sum,
                "update({sum:#06x}, {word:#06x}, {word:#06x}) returned {got:#06x}, expected \
                 {sum:#06x}: a word replaced by itself changes nothing."
            );
        }
    }
}

/// Every 16-bit word of the real SYN's TCP header (but the checksum
/// itself), changed to several values: the updated checksum must be the
/// one summed from scratch.
#[test]
fn update_equals_recomputation_on_the_recorded_syn() {
    for offset in (0..40).step_by(2).filter(|&o| o != CHECKSUM) {
        for new in [0x0000, 0x0001, 0x05a0, 0x8000, 0xfffe, 0xffff, 0x1f40] {
            let mut packet = SYN;
            let at = 40 + offset;
            let old = u16::from_be_bytes([packet[at], packet[at + 1]]);
            packet[at..at + 2].copy_from_slice(&u16::to_be_bytes(new));
            let want = recomputed(&packet);
            let got = update(stored(&SYN), old, new);
            assert!(
                got == want,
                "the word at TCP offset {offset} of the recorded SYN changed from {old:#06x} \
                 to {new:#06x}: update({:#06x}, {old:#06x}, {new:#06x}) returned {got:#06x}, \
                 but summing the new segment from scratch gives {want:#06x}.",
                stored(&SYN)
            );
        }
    }
}

// ---------------------------------------------------------------------
// clamp_mss on the recorded packets

#[test]
fn the_recorded_syn_comes_out_as_the_server_received_it() {
    let mut packet = SYN;
    let got = clamp_mss(&mut packet, MAX_MSS_V6);
    assert!(
        got == Clamp::Clamped { from: 1440, to: 1288 },
        "clamp_mss(the SYN of routed-client-tun.pcap, 1288) returned {got:?}, expected \
         Clamped {{ from: 1440, to: 1288 }}: its MSS option (bytes 60 to 63: 02 04 05 a0) \
         announces 1440."
    );
    assert!(
        packet == SYN_CLAMPED,
        "the clamped SYN differs from what step03-ipv6 delivered to the server \
         (routed-server-tun.pcap, packet 3): {}.\nExpected the MSS 05 08 (1288) and the \
         checksum 99 e4 (0x994c + 0x98, since the MSS fell by 0x5a0 - 0x508 = 0x98).",
        first_difference(&packet, &SYN_CLAMPED)
    );
}

#[test]
fn the_recorded_syn_ack_comes_out_as_the_client_received_it() {
    let mut packet = SYN_ACK;
    let got = clamp_mss(&mut packet, MAX_MSS_V6);
    assert!(
        got == Clamp::Clamped { from: 1440, to: 1288 },
        "clamp_mss(the SYN-ACK of routed-server-tun.pcap, 1288) returned {got:?}, expected \
         Clamped {{ from: 1440, to: 1288 }}: a SYN-ACK has the SYN flag too, and must be \
         clamped, or the client would send full-size segments."
    );
    assert!(
        packet == SYN_ACK_CLAMPED,
        "the clamped SYN-ACK differs from what step03-ipv6 delivered to the client \
         (routed-client-tun.pcap, packet 3): {}",
        first_difference(&packet, &SYN_ACK_CLAMPED)
    );
}

#[test]
fn an_ipv4_syn_ack() {
    let mut packet = SYN_ACK_V4;
    let got = clamp_mss(&mut packet, MAX_MSS_V4);
    assert!(
        got == Clamp::Clamped { from: 1460, to: 1308 },
        "clamp_mss(an IPv4 SYN-ACK with MSS 1460, 1308) returned {got:?}, expected \
         Clamped {{ from: 1460, to: 1308 }}. Over IPv4 the TCP header starts after IHL * 4 \
         = 20 bytes: tcp_header finds it for you."
    );
    assert!(
        packet[..20] == SYN_ACK_V4[..20],
        "the IPv4 header changed: only the TCP header's MSS and checksum may change."
    );
    assert!(
        packet[40..44] == [0x02, 0x04, 0x05, 0x1c],
        "the MSS option should now read 02 04 05 1c (1308), not {:02x?}",
        &packet[40..44]
    );
    let (got, want) = (stored(&packet), recomputed(&packet));
    assert!(
        got == want,
        "the TCP checksum is {got:#06x}, but summing the clamped segment from scratch gives \
         {want:#06x}."
    );
}

#[test]
fn a_small_enough_mss_is_left_alone() {
    for (packet, mss, max) in [
        (SYN_CLAMPED, 1288, MAX_MSS_V6),
        (SYN, 1440, 1440),
        (SYN, 1440, 9000),
    ] {
        let mut copy = packet;
        let got = clamp_mss(&mut copy, max);
        assert!(
            got == Clamp::Unchanged { mss },
            "clamp_mss(a SYN with MSS {mss}, {max}) returned {got:?}, expected \
             Unchanged {{ mss: {mss} }}: clamping only ever lowers the MSS."
        );
        assert!(copy == packet, "an unchanged packet must keep every byte");
    }
}

#[test]
fn only_syns_are_clamped() {
    let mut ack = ACK;
    let got = clamp_mss(&mut ack, 100);
    assert!(
        got == Clamp::NotSyn,
        "clamp_mss(the handshake's last ACK, 100) returned {got:?}, expected NotSyn: the \
         SYN flag (0x02 in byte 13 of the TCP header) is clear, and only SYNs carry an MSS \
         option."
    );
    assert!(ack == ACK, "a packet that is not clamped must keep every byte");

    let mut ping = PING_V4;
    let got = clamp_mss(&mut ping, 100);
    assert!(
        got == Clamp::NotTcp,
        "clamp_mss(an ICMP echo request, 100) returned {got:?}, expected NotTcp (from \
         tcp_header)."
    );
    assert!(
        ping == PING_V4,
        "a packet that is not clamped must keep every byte"
    );
}

// ---------------------------------------------------------------------
// clamp_mss on the recorded SYN with its options rearranged

/// The recorded SYN with its 20 bytes of options replaced (the checksum
/// fixed to match).
fn syn_with_options(options: [u8; 20]) -> [u8; 80] {
    let mut packet = SYN;
    packet[60..80].copy_from_slice(&options);
    fix_checksum(&mut packet);
    packet
}

/// The same options in another order: a NOP first puts the MSS at an odd
/// offset, so its two bytes fall into two different 16-bit words.
#[test]
fn an_mss_at_an_odd_offset() {
    #[rustfmt::skip]
    let packet = syn_with_options([
        0x01, 0x02, 0x04, 0x05, 0xa0, 0x04, 0x02, 0x08, 0x0a, 0xcb,
        0xf7, 0xc4, 0x76, 0x00, 0x00, 0x00, 0x00, 0x03, 0x03, 0x0a,
    ]);
    let mut copy = packet;
    let got = clamp_mss(&mut copy, MAX_MSS_V6);
    assert!(
        got == Clamp::Clamped { from: 1440, to: 1288 },
        "clamp_mss(a SYN whose options start with a NOP, then MSS 1440, 1288) returned \
         {got:?}, expected Clamped {{ from: 1440, to: 1288 }}: a NOP is one byte, then comes \
         the MSS option."
    );
    assert!(
        copy[63..65] == [0x05, 0x08],
        "the MSS (bytes 63 and 64) should now be 05 08, not {:02x?}",
        &copy[63..65]
    );
    let (got, want) = (stored(&copy), recomputed(&copy));
    assert!(
        got == want,
        "the TCP checksum is {got:#06x}, but summing the clamped segment from scratch gives \
         {want:#06x}. The MSS is at an odd offset of the TCP header here: its bytes count \
         in the sum swapped (RFC 1071 section 2 (B))."
    );
}

#[test]
fn a_syn_without_an_mss_option() {
    // NOPs where the MSS was.
    #[rustfmt::skip]
    let nops = syn_with_options([
        0x01, 0x01, 0x01, 0x01, 0x04, 0x02, 0x08, 0x0a, 0xcb, 0xf7,
        0xc4, 0x76, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
    ]);
    // An MSS after the end of the option list is padding, not an option.
    #[rustfmt::skip]
    let after_end = syn_with_options([
        0x04, 0x02, 0x00, 0x02, 0x04, 0x05, 0xa0, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ]);
    for (what, packet) in [
        ("only NOPs where the MSS was", nops),
        ("the MSS after an end of option list (kind 0)", after_end),
    ] {
        let mut copy = packet;
        let got = clamp_mss(&mut copy, MAX_MSS_V6);
        assert!(
            got == Clamp::NoOption,
            "clamp_mss(a SYN with {what}, 1288) returned {got:?}, expected NoOption."
        );
        assert!(
            copy == packet,
            "a packet that is not clamped must keep every byte"
        );
    }
}

#[test]
fn options_that_cannot_be_walked_are_malformed() {
    #[rustfmt::skip]
    let cases: [(&str, [u8; 20]); 4] = [
        ("an option of length 0 (a walk that never moves would loop for ever)", [
            0x04, 0x00, 0x02, 0x04, 0x05, 0xa0, 0x01, 0x01, 0x01, 0x01,
            0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        ]),
        ("an option of length 1", [
            0x08, 0x01, 0x02, 0x04, 0x05, 0xa0, 0x01, 0x01, 0x01, 0x01,
            0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        ]),
        ("an option running past the end of the header", [
            0x02, 0x04, 0x05, 0xa0, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
            0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x08, 0x0a,
        ]),
        ("an MSS option of length 3", [
            0x02, 0x03, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
            0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        ]),
    ];
    for (what, options) in cases {
        let packet = syn_with_options(options);
        let mut copy = packet;
        let got = clamp_mss(&mut copy, MAX_MSS_V6);
        assert!(
            got == Clamp::Malformed,
            "clamp_mss(a SYN with {what}, 1288) returned {got:?}, expected Malformed."
        );
        assert!(copy == packet, "a malformed packet must keep every byte");
    }
}

/// A packet cut short anywhere: a TCP read never ends mid-packet, but a
/// hostile peer can send anything. Never a panic, never a change.
#[test]
fn a_truncated_packet_never_panics() {
    for len in 0..SYN.len() {
        let mut cut = SYN[..len].to_vec();
        let got = clamp_mss(&mut cut, MAX_MSS_V6);
        assert!(
            got == Clamp::Malformed,
            "clamp_mss(the first {len} bytes of the SYN, 1288) returned {got:?}, expected \
             Malformed: the IPv6 payload length says 40 bytes of TCP follow."
        );
        assert!(cut == SYN[..len], "a malformed packet must keep every byte");
    }
}
