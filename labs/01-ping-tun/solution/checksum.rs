//! Lab 01 reference solution: the Internet checksum (RFC 1071).
//!
//! The same algorithm as `steps/step01-ping-tun/src/checksum.rs`, in one
//! function.

/// Returns the Internet checksum of `data` (RFC 1071).
///
/// The data is read as big-endian 16-bit words, an odd last byte padded with
/// a zero byte on the right; the words are added in one's complement
/// arithmetic and the result is complemented.
pub fn internet_checksum(data: &[u8]) -> u16 {
    // A u32 accumulator keeps the carries out of bit 15 in its upper half.
    // It cannot overflow for any IP datagram: at most 32768 words of at most
    // 0xffff sum to less than 2^31.
    let mut sum: u32 = 0;

    // RFC 1071 §4.1: add the data as 16-bit words in network byte order.
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    // An odd last byte is the high byte of a word whose low byte is zero.
    if let [last] = words.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }

    // Fold the carries back in (the end-around carry). One fold can carry
    // again (0x1_ffff -> 0x1_0000), so repeat until 16 bits are left.
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }

    // The checksum is the one's complement of the one's complement sum.
    !(sum as u16)
}
