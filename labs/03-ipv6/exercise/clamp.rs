//! Lab 03 exercise: MSS clamping, with the RFC 1624 checksum update.
//!
//! A TCP SYN announces the largest segment its sender can receive (the
//! MSS option, RFC 9293 §3.7.1), computed from the sender's own interface:
//! 1440 bytes behind an IPv6 link of MTU 1500. Neither end knows about the
//! tunnel in between, which carries only 1348-byte packets in part two of
//! this lab. So each end of the tunnel lowers the MSS of every SYN and
//! SYN-ACK that passes, and the connection never sends a segment too big
//! for the tunnel.
//!
//! Changing two bytes of the TCP header breaks its checksum. Summing the
//! whole segment again would cost time and would also make a segment that
//! was already corrupt look valid; RFC 1624 updates the checksum from the
//! old and new value of the changed word instead. You write both halves:
//!
//! 1. [`update`]: the incremental update, RFC 1624 §3, equation 3;
//! 2. [`clamp_mss`]: find the MSS option of a SYN, lower it, and update the
//!    checksum. [`tcp_header`], which finds the TCP header in an IPv4 or
//!    IPv6 packet, is written for you.
//!
//! The tests replay real packets of lab 03 (`pcaps/step03/`): the SYN the
//! client's kernel sent must come out byte for byte as the server's TUN
//! device received it from `step03-ipv6`.
//!
//! Check your attempt with `cargo run -p tunlab -- check 03` (or `watch
//! 03`, which checks again each time you save). Stuck? `cargo run -p
//! tunlab -- hint 03` shows the next hint.

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
    // TODO: RFC 1624 equation 3, with the carries folded back in.
    // Replace the two lines below.
    let _ = (checksum, old, new);
    todo!("update the checksum for a word that changed from `old` to `new`")
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
    // TODO: find the TCP header, check SYN, walk the options, rewrite the
    // MSS and the checksum. Replace the two lines below.
    let _ = (packet, max_mss);
    todo!("clamp the MSS option of a SYN to `max_mss`")
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
