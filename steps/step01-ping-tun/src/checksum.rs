//! The Internet checksum (RFC 1071).
//!
//! IPv4 headers and ICMP messages both carry it. The sender computes it over
//! the bytes with the checksum field set to zero and stores the result; the
//! receiver sums the bytes *including* the stored checksum, and a correct
//! packet sums to `0xffff` (so [`checksum`] over it returns 0).
//!
//! Step 01 uses this module to *verify* what arrives from the TUN device:
//! etherparse parses headers but does not check their checksums. Replies are
//! written with etherparse, which computes their checksums itself; the tests
//! check those with this module, so every reply is checked by a second,
//! independent implementation.

// ANCHOR: checksum
/// Adds `data` to a running one's complement sum (RFC 1071 §4.1).
///
/// The data is read as big-endian 16-bit words; an odd last byte is padded
/// with a zero byte on the right. Carries are kept in the upper half of the
/// `u32` and folded back by [`fold`]. A `u32` cannot overflow here for any
/// packet that fits in an IP datagram (at most 65535 bytes, so at most
/// 32768 words of at most 0xffff each).
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        acc += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        acc += u32::from(u16::from_be_bytes([*last, 0]));
    }
    acc
}

/// Folds the carries of a running sum back into 16 bits and takes the one's
/// complement: the value to store in a checksum field (RFC 1071 §4.1).
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum(0, data))
}

/// True when `data`, checksum field included, sums to all ones: RFC 1071
/// §1 "(3) To check a checksum, the 1's complement sum is computed over the
/// same set of octets, including the checksum field. If the result is all 1
/// bits (-0 in 1's complement arithmetic), the check succeeds."
pub fn verify(data: &[u8]) -> bool {
    checksum(data) == 0
}
// ANCHOR_END: checksum

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of RFC 1071 §3: the bytes 00 01 f2 03 f4 f5 f6 f7
    /// have the one's complement sum 0xddf2 (before the final complement).
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    /// The IPv4 header of an echo request that Linux's ping sent into a TUN
    /// device: its stored checksum 0xa588 is what we compute with the field
    /// zeroed. (The golden tests check every packet of `pcaps/step01` too.)
    #[test]
    fn real_ipv4_header() {
        let mut header = [
            0x45, 0x00, 0x00, 0x54, 0x81, 0x1e, 0x40, 0x00, 0x40, 0x01, 0xa5, 0x88, 0x0a, 0x00, 0x00, 0x01,
            0x0a, 0x00, 0x00, 0x02,
        ];
        assert!(verify(&header));
        header[10] = 0;
        header[11] = 0;
        assert_eq!(checksum(&header), 0xa588);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0xab]), checksum(&[0xab, 0x00]));
        assert_eq!(checksum(&[0x12, 0x34, 0x56]), checksum(&[0x12, 0x34, 0x56, 0x00]));
    }

    #[test]
    fn empty_and_all_zero() {
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(checksum(&[0; 20]), 0xffff);
    }

    /// Carries out of bit 15 must wrap around into bit 0.
    #[test]
    fn end_around_carry() {
        // 0xffff + 0x0001 = 0x1_0000, folded to 0x0001, complemented 0xfffe.
        assert_eq!(checksum(&[0xff, 0xff, 0x00, 0x01]), 0xfffe);
    }

    #[test]
    fn storing_the_checksum_makes_the_data_verify() {
        let mut data: Vec<u8> = (0..=255u8).cycle().take(1473).collect();
        data[2] = 0;
        data[3] = 0;
        let c = checksum(&data);
        data[2..4].copy_from_slice(&c.to_be_bytes());
        assert!(verify(&data));
        data[100] ^= 0x40;
        assert!(!verify(&data));
    }

    /// The largest IPv4 datagram of all-ones bytes cannot overflow the sum:
    /// 32767 words 0xffff (which add up to 0xffff, "minus zero") plus the
    /// padded last word 0xff00 fold to 0xff00, complemented 0x00ff.
    #[test]
    fn largest_datagram_does_not_overflow() {
        let data = vec![0xff; 65535];
        assert_eq!(checksum(&data), 0x00ff);
    }

    /// Splitting the data at an even offset gives the same sum, which is what
    /// lets pseudo-headers and headers be summed piece by piece.
    #[test]
    fn sum_is_incremental_at_even_offsets() {
        let data: Vec<u8> = (0..200u8).collect();
        for split in (0..data.len()).step_by(2) {
            let (a, b) = data.split_at(split);
            assert_eq!(fold(sum(sum(0, a), b)), checksum(&data));
        }
    }
}
