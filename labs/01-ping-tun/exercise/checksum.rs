//! Lab 01 exercise: the Internet checksum.
//!
//! Every IPv4 header and every ICMP message carries this 16-bit checksum.
//! `step01-ping-tun` verifies it on every request it reads, and every reply
//! it writes must carry it. Here you write it yourself.
//!
//! Check your attempt with `cargo run -p tunlab -- check 01` (or `watch
//! 01`, which checks again each time you save). Stuck? `cargo run -p
//! tunlab -- hint 01` shows the next hint.

/// Returns the Internet checksum of `data` (RFC 1071).
///
/// 1. Read `data` as a sequence of 16-bit words in network byte order
///    (big-endian): bytes `[0x12, 0x34]` are the word `0x1234`.
/// 2. If the length is odd, the last byte is padded on the right with a zero
///    byte: a lone last byte `0xab` is the word `0xab00`.
/// 3. Add the words together in one's complement arithmetic: every carry out
///    of bit 15 is added back in at bit 0 ("end-around carry").
/// 4. Return the one's complement (every bit flipped) of that 16-bit sum.
///
/// `data` may be empty, and may be as long as the largest IP datagram
/// (65535 bytes); neither case may panic or overflow.
///
/// Two facts to test yourself with:
/// - the empty input sums to 0, so its checksum is `0xffff`;
/// - a header that already holds its correct checksum has checksum 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    // TODO: sum the big-endian 16-bit words of `data` (pad an odd last
    // byte with a zero on the right), fold the carries back into 16 bits,
    // and return the complement. Replace the two lines below.
    let _ = data;
    todo!("compute the RFC 1071 Internet checksum of `data`")
}
