//! Lab 03 exercise, a reference solution: MSS clamping, with the RFC 1624
//! checksum update. Compare it with `steps/step03-ipv6/src/clamp.rs` and
//! the `update` of `steps/step03-ipv6/src/checksum.rs`, which do the same
//! with etherparse finding the headers (IPv6 extension headers included).

/// What [`clamp_mss`] did. Only [`Clamp::Clamped`] changes the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clamp {
    /// Not a TCP segment (another protocol, or an IPv4 fragment).
    NotTcp,
    /// A TCP segment without the SYN flag: only SYNs carry an MSS
    /// (RFC 9293 §3.2).
    NotSyn,
    /// A SYN without an MSS option: left alone.
    NoOption,
    /// The MSS fits already.
    Unchanged { mss: u16 },
    /// The MSS was lowered from `from` to `to`, and the checksum updated.
    Clamped { from: u16, to: u16 },
    /// Headers or options that cannot be read: left exactly as they were.
    Malformed,
}

/// The TCP checksum field's offset in the TCP header (RFC 9293 §3.1).
pub const CHECKSUM: usize = 16;
/// The TCP flags byte's offset in the TCP header; SYN is bit `0x02`.
pub const FLAGS: usize = 13;
/// Where the options start: right after the 20-byte fixed header.
pub const OPTIONS: usize = 20;

/// The checksum after one 16-bit word of the data it covers changes from
/// `old` to `new`, without summing the data again.
///
/// RFC 1624 §3, equation 3: `HC' = ~(~HC + ~m + m')`, where `HC` is the
/// old checksum, `m` the old word and `m'` the new one, and `+` is one's
/// complement addition (carries out of bit 15 are added back in at bit
/// 0). Complementing `HC` gives back the sum of the data; adding `~m`
/// takes `m` out of it and adding `m'` puts the new word in.
///
/// It must give exactly what summing the new data from scratch gives. In
/// one's complement 0x0000 and 0xffff are both zero; a checksum summed
/// from scratch over a TCP segment is never 0xffff, and neither may yours
/// be (RFC 1624 §3 explains why the older equation 2 gets this wrong).
pub fn update(checksum: u16, old: u16, new: u16) -> u16 {
    // One's complement addition in a u32: the carries collect in the upper
    // half, and three 16-bit numbers cannot overflow it.
    let mut sum = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    // Fold the carries back in; once can carry again, so repeat.
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The sum is never +0 (0x0000) here unless every term was zero, so its
    // complement is never 0xffff: the same as a recomputation gives.
    !(sum as u16)
}

/// Lowers the MSS option of a TCP SYN (or SYN-ACK) in `packet`, a whole
/// IPv4 or IPv6 packet, to `max_mss` if it announces more, and updates the
/// TCP checksum with [`update`].
///
/// - Use [`tcp_header`] to find the TCP header; pass on what it says when
///   it finds none.
/// - A segment without the SYN flag is [`Clamp::NotSyn`].
/// - Walk the options, from [`OPTIONS`] to the end of the TCP header (RFC
///   9293 §3.1): kind 0 (end of option list) ends the walk, kind 1 (no
///   operation) is one byte, every other option is a kind byte, a length
///   byte counting the whole option (at least 2), and `length - 2` bytes of
///   data. The MSS option is kind 2, length 4, and the MSS as a big-endian
///   `u16`. An option that runs past the header, a length below 2 or an
///   MSS option whose length is not 4 make the packet [`Clamp::Malformed`].
/// - No MSS option: [`Clamp::NoOption`]. An MSS of at most `max_mss`:
///   [`Clamp::Unchanged`].
/// - Otherwise write `max_mss` in place of the MSS, update the checksum
///   field, and return [`Clamp::Clamped`].
///
/// The checksum sums the segment in 16-bit words counted from the start of
/// the TCP header (the pseudo-header before it is 12 or 40 bytes, even).
/// After an odd number of one-byte options the MSS sits at an odd offset:
/// then its two bytes belong to two different words, and it counts in the
/// sum with its bytes swapped (RFC 1071 §2 (B)): pass `mss.swap_bytes()`
/// and `max_mss.swap_bytes()` to [`update`].
///
/// Any input may arrive here, from either end of the tunnel: no packet may
/// make this function panic or loop for ever, and a packet it does not
/// clamp must stay exactly as it was.
pub fn clamp_mss(packet: &mut [u8], max_mss: u16) -> Clamp {
    let (start, len) = match tcp_header(packet) {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let Some(tcp) = packet.get_mut(start..start + len) else {
        return Clamp::Malformed;
    };
    if tcp[FLAGS] & 0x02 == 0 {
        return Clamp::NotSyn;
    }
    // Walk the options (RFC 9293 §3.1) to the MSS option's data.
    let mut at = OPTIONS;
    let mut found = None;
    while at < tcp.len() {
        match tcp[at] {
            0 => break,
            1 => at += 1,
            kind => {
                let Some(&length) = tcp.get(at + 1) else {
                    return Clamp::Malformed;
                };
                let length = usize::from(length);
                if length < 2 || at + length > tcp.len() {
                    return Clamp::Malformed;
                }
                if kind == 2 {
                    if length != 4 || found.is_some() {
                        return Clamp::Malformed;
                    }
                    found = Some(at + 2);
                }
                // Every step moves forward by at least 2: the walk ends.
                at += length;
            }
        }
    }
    let Some(at) = found else {
        return Clamp::NoOption;
    };
    let mss = u16::from_be_bytes([tcp[at], tcp[at + 1]]);
    if mss <= max_mss {
        return Clamp::Unchanged { mss };
    }
    let sum = u16::from_be_bytes([tcp[CHECKSUM], tcp[CHECKSUM + 1]]);
    // At an odd offset the MSS counts with its bytes swapped (RFC 1071 §2 (B)).
    let sum = if at % 2 == 0 {
        update(sum, mss, max_mss)
    } else {
        update(sum, mss.swap_bytes(), max_mss.swap_bytes())
    };
    tcp[at..at + 2].copy_from_slice(&max_mss.to_be_bytes());
    tcp[CHECKSUM..CHECKSUM + 2].copy_from_slice(&sum.to_be_bytes());
    Clamp::Clamped {
        from: mss,
        to: max_mss,
    }
}

/// Finds the TCP header in `packet`: `Ok((start, len))` when
/// `packet[start..start + len]` is the TCP header, options included.
///
/// IPv4 (RFC 791): IHL 32-bit words of header, Total Length bytes in all;
/// a fragment is not a whole segment. IPv6 (RFC 8200): a 40-byte header,
/// then TCP if Next Header is 6 (a packet with extension headers is
/// counted as not TCP, to keep this short). TCP (RFC 9293 §3.1): the Data
/// Offset, the top four bits of byte 12, is the header's length in 32-bit
/// words, at least 5.
pub fn tcp_header(packet: &[u8]) -> Result<(usize, usize), Clamp> {
    let (start, end) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let Some(&[_, _, total_hi, total_lo, _, _, frag_hi, frag_lo, _, protocol]) = packet.get(..10)
            else {
                return Err(Clamp::Malformed);
            };
            let total = usize::from(u16::from_be_bytes([total_hi, total_lo]));
            if ihl < 20 || total < ihl || total > packet.len() {
                return Err(Clamp::Malformed);
            }
            // More Fragments, or a non-zero Fragment Offset.
            let fragment = u16::from_be_bytes([frag_hi, frag_lo]) & 0x3fff != 0;
            if protocol != 6 || fragment {
                return Err(Clamp::NotTcp);
            }
            (ihl, total)
        }
        Some(6) => {
            let Some(&[_, _, _, _, len_hi, len_lo, next_header]) = packet.get(..7) else {
                return Err(Clamp::Malformed);
            };
            let end = 40 + usize::from(u16::from_be_bytes([len_hi, len_lo]));
            if end > packet.len() {
                return Err(Clamp::Malformed);
            }
            if next_header != 6 {
                return Err(Clamp::NotTcp);
            }
            (40, end)
        }
        _ => return Err(Clamp::Malformed),
    };
    let offset = packet.get(start + 12).ok_or(Clamp::Malformed)?;
    let len = usize::from(offset >> 4) * 4;
    if len < 20 || start + len > end {
        return Err(Clamp::Malformed);
    }
    Ok((start, len))
}
