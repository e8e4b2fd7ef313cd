//! Tests for the lab 01 exercise. `tunlab check 01` compiles them together
//! with your `checksum.rs`; every test must pass.

use crate::exercise::internet_checksum;

/// Checks one input and, on failure, says what was expected and why.
#[track_caller]
fn expect(data: &[u8], want: u16, why: &str) {
    let got = internet_checksum(data);
    let shown = if data.len() <= 24 {
        format!("{data:02x?}")
    } else {
        format!("{} bytes", data.len())
    };
    assert!(
        got == want,
        "internet_checksum({shown}) returned {got:#06x}, expected {want:#06x}.\n{why}"
    );
}

/// RFC 1071 §3 works this example by hand.
#[test]
fn rfc1071_example() {
    expect(
        &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7],
        0x220d,
        "RFC 1071 section 3: the words 0001 + f203 + f4f5 + f6f7 add up to 0x2ddf0; \
         folding the carry back in gives ddf0 + 2 = 0xddf2, and the checksum is its \
         complement, !0xddf2 = 0x220d.",
    );
}

/// The header of an echo request that Linux's ping sent into tun0 in this
/// lab: 10.0.0.1 > 10.0.0.2, total length 84, DF, TTL 64, ICMP. Its stored
/// checksum (bytes 10 and 11) is 0xa588.
#[test]
fn real_ipv4_header() {
    let mut header = [
        0x45, 0x00, 0x00, 0x54, 0x81, 0x1e, 0x40, 0x00, 0x40, 0x01, 0xa5, 0x88, //
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02,
    ];
    expect(
        &header,
        0x0000,
        "a receiver sums the header including its checksum field; a correct header \
         sums to 0xffff, so its checksum is 0 (RFC 1071 section 1, step 3). The bytes \
         come from a real packet, so a non-zero result means the algorithm is wrong.",
    );
    header[10] = 0;
    header[11] = 0;
    expect(
        &header,
        0xa588,
        "a sender computes the checksum with the checksum field set to zero and stores \
         the result there (RFC 791); Linux stored 0xa588 in this header. If you got \
         0x88a5, you read the words little-endian: bytes [0x45, 0x00] are the word \
         0x4500 (network byte order is big-endian).",
    );
}

/// The first byte of a pair is the high byte of the word.
#[test]
fn words_are_big_endian() {
    expect(
        &[0x12, 0x34],
        0xedcb,
        "bytes [0x12, 0x34] are the word 0x1234 (big-endian, network byte order), \
         and !0x1234 = 0xedcb. 0xcbed means the bytes were read as 0x3412.",
    );
}

/// An odd last byte is padded with a zero on the right.
#[test]
fn odd_length() {
    expect(
        &[0xab],
        0x54ff,
        "a lone byte 0xab is padded on the right to the word 0xab00 (RFC 1071 \
         section 4.1), and !0xab00 = 0x54ff. 0xff54 means it was padded on the left, \
         0xffff means it was ignored.",
    );
    expect(
        &[0x12, 0x34, 0x56],
        0x97cb,
        "the words are 0x1234 and 0x5600 (the last byte padded with a zero on the \
         right); 0x1234 + 0x5600 = 0x6834, and !0x6834 = 0x97cb.",
    );
}

#[test]
fn empty_input() {
    expect(
        &[],
        0xffff,
        "no words sum to 0, and the checksum is the complement of the sum: !0 = 0xffff.",
    );
}

/// A carry out of bit 15 is added back in at bit 0.
#[test]
fn end_around_carry() {
    expect(
        &[0xff, 0xff, 0x00, 0x01],
        0xfffe,
        "0xffff + 0x0001 = 0x1_0000: the carry out of bit 15 goes back in at bit 0, \
         giving 0x0001, and !0x0001 = 0xfffe. 0xffff means the carry was dropped \
         (a u16 sum that wrapped around).",
    );
}

/// Folding the carry in can produce a new carry.
#[test]
fn carry_after_folding() {
    expect(
        &[0xff, 0xff, 0xff, 0xff, 0x00, 0x01],
        0xfffe,
        "0xffff + 0xffff + 0x0001 = 0x1_ffff; folding once gives 0xffff + 0x1 = \
         0x1_0000, which carries again; folding again gives 0x0001, and !0x0001 = \
         0xfffe. Fold until the sum fits in 16 bits, not just once.",
    );
}

/// The largest IP datagram, all ones, must neither overflow nor panic.
#[test]
fn largest_datagram() {
    expect(
        &vec![0xff; 65535],
        0x00ff,
        "65535 bytes are 32767 words 0xffff and a last word 0xff00 (padded). 0xffff \
         is \"minus zero\" in one's complement: the 32767 words sum to 0xffff, adding \
         0xff00 gives 0x1_feff, which folds to 0xff00, and !0xff00 = 0x00ff. A panic \
         \"attempt to add with overflow\" means the accumulator is too small: use a \
         u32, or add the carry back after every addition.",
    );
}
