//! TCP MSS clamping: lowering the maximum segment size that TCP SYN segments
//! announce, so that neither end sends a segment too big for the tunnel.
//!
//! Each end of a TCP connection announces in its SYN the largest segment it
//! can receive (RFC 9293 §3.7.1), computed from its own interface MTU: 1460
//! bytes behind a 1500-byte Ethernet link. Neither end knows of the tunnel
//! in between, whose MTU is smaller. Path MTU discovery should lower the
//! segment size later, but it depends on ICMP errors that many firewalls
//! drop, and then the connection hangs as soon as a full-size segment is
//! sent (RFC 2923 §2.1, "black holes"). Routers at tunnel ends therefore
//! rewrite the MSS option of every SYN that passes, both ways (Linux does it
//! with `iptables -j TCPMSS --clamp-mss-to-pmtu`): the MSS is lowered once,
//! in the handshake, and no segment is ever too big.
//!
//! [`transport::locate`] finds the TCP header, and a small view of our own
//! writes the new MSS and the checksum in place, which is updated (RFC
//! 1624), not recomputed.

use etherparse::IpNumber;

use crate::checksum;
use crate::transport::{self, Fragment};

/// What [`clamp_mss`] did. Only [`Clamp::Clamped`] changes the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clamp {
    /// Not a TCP segment: another protocol, or a fragment.
    NotTcp,
    /// A TCP segment without SYN: the MSS option "MUST NOT be sent in other
    /// segments" (RFC 9293 §3.2, MUST-65).
    NotSyn,
    /// A SYN without an MSS option. We do not add one: the other end then
    /// assumes 536 bytes over IPv4 or 1220 over IPv6 (RFC 9293 §3.7.1,
    /// MUST-15), which fit the minimum MTUs of 576 and 1280 and so any
    /// tunnel. Adding an option would mean growing the header, moving the
    /// data, and fixing the IP length fields, for no gain.
    NoOption,
    /// The announced MSS fits the tunnel already.
    Unchanged { mss: u16 },
    /// The MSS was lowered from `from` to `to`, and the TCP checksum updated.
    Clamped { from: u16, to: u16 },
    /// An IP or TCP header that does not parse, or a SYN whose options
    /// cannot be walked (a length below 2, an option running past the
    /// header, an MSS option of the wrong length or a second one). RFC 9293
    /// §3.1 (MUST-7) tells TCP to be prepared for illegal option lengths;
    /// we leave such a packet exactly as it is, for the receiver to reject.
    Malformed,
}

// ANCHOR: max_mss
/// The largest MSS that fits a tunnel whose inner packets may be
/// `tunnel_mtu` bytes long: the MTU minus the fixed IPv4 (20 bytes) or IPv6
/// (40 bytes) header and the fixed TCP header (20 bytes). RFC 879 puts it as
/// "the IP maximum datagram size minus forty" for IPv4. Options are not
/// subtracted: RFC 6691 §2 says the MSS SHOULD NOT be decreased for them,
/// since the sender subtracts the options it actually sends. 0 for an MTU
/// too small to hold the headers.
pub fn max_mss(tunnel_mtu: u16, ipv6: bool) -> u16 {
    let ip_header = if ipv6 { 40 } else { 20 };
    tunnel_mtu.saturating_sub(ip_header + 20)
}
// ANCHOR_END: max_mss

// ANCHOR: clamp_mss
/// Lowers the MSS option of a TCP SYN or SYN-ACK in `packet` (a whole IPv4
/// or IPv6 packet) to `max_mss` if it announces more, and updates the TCP
/// checksum to match. Never panics, and changes nothing unless it returns
/// [`Clamp::Clamped`]. Apply it to packets in both directions, so that both
/// ends of each connection hear a small enough MSS.
///
/// The checksum is updated incrementally: recomputing it would also make a
/// segment that was corrupted before it reached us look valid, while an
/// updated checksum stays exactly as wrong as it was.
pub fn clamp_mss(packet: &mut [u8], max_mss: u16) -> Clamp {
    let (start, header_len) = match locate_syn(packet) {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let Some(header) = packet.get_mut(start..start + header_len) else {
        return Clamp::Malformed;
    };
    let mut tcp = TcpHeaderMut(header);
    let option = match find_mss(tcp.options()) {
        Ok(Some(option)) => option,
        Ok(None) => return Clamp::NoOption,
        Err(outcome) => return outcome,
    };
    // The option is kind, length, and the MSS as a 16-bit number.
    let at = field::OPTIONS + option + 2;
    let (Some(mss), Some(sum)) = (tcp.get(at), tcp.get(field::CHECKSUM)) else {
        return Clamp::Malformed;
    };
    if mss <= max_mss {
        return Clamp::Unchanged { mss };
    }
    // The pseudo-header is 12 or 40 bytes, so the MSS has the same offset
    // parity in the summed data as in the TCP header. After an odd number of
    // NOPs it is at an odd offset: its high byte is the low byte of one
    // 16-bit word and its low byte the high byte of the next, so it counts
    // in the sum with its bytes swapped (RFC 1071 §2 (B)).
    let sum = if at.is_multiple_of(2) {
        checksum::update(sum, mss, max_mss)
    } else {
        checksum::update(sum, mss.swap_bytes(), max_mss.swap_bytes())
    };
    tcp.set(at, max_mss);
    tcp.set(field::CHECKSUM, sum);
    Clamp::Clamped {
        from: mss,
        to: max_mss,
    }
}
// ANCHOR_END: clamp_mss

/// Finds the TCP header of a SYN with [`transport::locate`], which checks
/// the lengths of the IP packet and the TCP data offset: the header's offset
/// in the packet and its length, options included.
fn locate_syn(packet: &[u8]) -> Result<(usize, usize), Clamp> {
    let found = transport::locate(packet).map_err(|_| Clamp::Malformed)?;
    if found.protocol != IpNumber::TCP || found.fragment != Fragment::Whole {
        return Err(Clamp::NotTcp);
    }
    let segment = found.transport(packet).map_err(|_| Clamp::Malformed)?;
    let header = packet.get(segment.start..).unwrap_or_default();
    // RFC 9293 §3.1: the data offset is the high nibble of byte 12, the
    // SYN flag bit 1 of byte 13.
    let (Some(&offset), Some(&flags)) = (header.get(12), header.get(13)) else {
        return Err(Clamp::Malformed);
    };
    if flags & 0x02 == 0 {
        return Err(Clamp::NotSyn);
    }
    Ok((segment.start, usize::from(offset >> 4) * 4))
}

/// Option kinds (RFC 9293 §3.2).
mod kind {
    /// End of option list: the rest of the header is padding.
    pub const EOL: u8 = 0;
    /// No-operation: a single byte, used to align the next option.
    pub const NOP: u8 = 1;
    /// Maximum segment size: kind, length 4, and a 16-bit MSS.
    pub const MSS: u8 = 2;
}

/// Walks the TCP options and returns the offset of the MSS option among
/// them, if there is one.
///
/// RFC 9293 §3.1: an option is either a single byte of kind (EOL and NOP),
/// or a byte of kind, a byte of length that counts the kind and length bytes
/// too, and length - 2 bytes of data. Every option but EOL and NOP has a
/// length (MUST-68), so unknown options can be skipped.
fn find_mss(options: &[u8]) -> Result<Option<usize>, Clamp> {
    let mut found = None;
    let mut at = 0;
    while let Some(&option) = options.get(at) {
        match option {
            kind::EOL => break,
            kind::NOP => at += 1,
            _ => {
                let len = usize::from(*options.get(at + 1).ok_or(Clamp::Malformed)?);
                if len < 2 || at + len > options.len() {
                    return Err(Clamp::Malformed);
                }
                if option == kind::MSS {
                    if len != 4 || found.is_some() {
                        return Err(Clamp::Malformed);
                    }
                    found = Some(at);
                }
                at += len;
            }
        }
    }
    Ok(found)
}

/// Byte offsets in a TCP header (RFC 9293 §3.1).
mod field {
    pub const CHECKSUM: usize = 16;
    pub const OPTIONS: usize = 20;
}

/// A TCP header, options included, inside a packet being rewritten in
/// place. Every access is checked, so no header can make it panic.
struct TcpHeaderMut<'a>(&'a mut [u8]);

impl TcpHeaderMut<'_> {
    fn options(&self) -> &[u8] {
        self.0.get(field::OPTIONS..).unwrap_or_default()
    }

    /// The big-endian 16-bit number at `at`.
    fn get(&self, at: usize) -> Option<u16> {
        let bytes = self.0.get(at..)?.first_chunk::<2>()?;
        Some(u16::from_be_bytes(*bytes))
    }

    fn set(&mut self, at: usize, value: u16) {
        if let Some(bytes) = self.0.get_mut(at..).and_then(|rest| rest.first_chunk_mut::<2>()) {
            *bytes = value.to_be_bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use etherparse::{IpSlice, PacketBuilder, TcpOptionElement, TcpSlice};
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::checksum::captured::*;
    use crate::checksum::{transport_checksum, verify_transport};

    /// The MSS option's value in a packet, read with etherparse.
    fn mss_of(packet: &[u8]) -> Option<u16> {
        let ip = IpSlice::from_slice(packet).unwrap();
        let tcp = TcpSlice::from_slice(ip.payload().payload).unwrap();
        tcp.options_iterator().find_map(|option| match option {
            Ok(TcpOptionElement::MaximumSegmentSize(mss)) => Some(mss),
            _ => None,
        })
    }

    /// Clamps a copy of `packet`, checks that its checksum verifies exactly
    /// when it did before and that nothing but the MSS and the checksum
    /// changed, and returns what [`clamp_mss`] said and the copy.
    fn clamped(packet: &[u8], max: u16) -> (Clamp, Vec<u8>) {
        let mut out = packet.to_vec();
        let outcome = clamp_mss(&mut out, max);
        assert_eq!(verify_transport(&out), verify_transport(packet));
        let changed: Vec<usize> = (0..out.len()).filter(|&i| out[i] != packet[i]).collect();
        if let Clamp::Clamped { .. } = outcome {
            assert!(changed.len() <= 4, "{changed:?}");
        } else {
            assert!(changed.is_empty(), "{changed:?}");
        }
        (outcome, out)
    }

    /// Real SYNs from Linux, clamped for a tunnel with WireGuard's usual MTU,
    /// 1420: the checksum we update equals the one recomputed from scratch.
    #[test]
    fn real_syns_are_clamped() {
        assert_eq!(max_mss(1420, false), 1380);
        assert_eq!(max_mss(1420, true), 1360);
        for (packet, ipv6, from) in [(&SYN_V4[..], false, 1460), (&SYN_ACK_V4, false, 1460)]
            .into_iter()
            .chain([(&SYN_V6[..], true, 1440), (&SYN_ACK_V6, true, 1440)])
        {
            let to = max_mss(1420, ipv6);
            let (outcome, out) = clamped(packet, to);
            assert_eq!(outcome, Clamp::Clamped { from, to });
            assert_eq!(mss_of(&out), Some(to));
            let start = if ipv6 { 40 } else { 20 };
            let stored = u16::from_be_bytes([out[start + 16], out[start + 17]]);
            assert_eq!(transport_checksum(&out), Some(stored));
        }
    }

    /// The SYN of SYN_V4 byte for byte after clamping 1460 to 1368: the MSS
    /// bytes 05 b4 become 05 58, and the checksum 9f5e becomes 9fba
    /// (0x9f5e + 0x05b4 - 0x0558, as the sum fell by 0x5c).
    #[test]
    fn test_emit_clamped_syn() {
        let (outcome, out) = clamped(&SYN_V4, 1368);
        assert_eq!(outcome, Clamp::Clamped { from: 1460, to: 1368 });
        let mut expected = SYN_V4;
        expected[36..38].copy_from_slice(&[0x9f, 0xba]);
        expected[42..44].copy_from_slice(&[0x05, 0x58]);
        assert_eq!(out, expected);
    }

    #[test]
    fn small_enough_or_not_a_syn_is_left_alone() {
        assert_eq!(clamped(&SYN_V4, 1460).0, Clamp::Unchanged { mss: 1460 });
        assert_eq!(clamped(&SYN_V6, 9000).0, Clamp::Unchanged { mss: 1440 });
        assert_eq!(clamped(&DATA_V4, 500).0, Clamp::NotSyn);
        assert_eq!(clamped(&DATA_V6, 500).0, Clamp::NotSyn);
        assert_eq!(clamped(&UDP_V4, 500).0, Clamp::NotTcp);
        assert_eq!(clamped(&ECHO_V6, 500).0, Clamp::NotTcp);
    }

    /// An IPv4 or IPv6 SYN built by etherparse with these raw option bytes
    /// (padded with EOL to a multiple of 4).
    fn syn(ipv6: bool, options: &[u8]) -> Vec<u8> {
        let ip = if ipv6 {
            PacketBuilder::ipv6(
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [9; 16],
                64,
            )
        } else {
            PacketBuilder::ipv4([192, 0, 2, 1], [198, 51, 100, 7], 64)
        };
        let mut out = Vec::new();
        let tcp = ip.tcp(40000, 443, 0x0102_0304, 64240).syn();
        tcp.options_raw(options).unwrap().write(&mut out, &[]).unwrap();
        out
    }

    const MSS_1460: [u8; 4] = [2, 4, 0x05, 0xb4];
    const SACK_OK: [u8; 2] = [4, 2];
    const TIMESTAMPS: [u8; 10] = [8, 10, 1, 2, 3, 4, 0, 0, 0, 0];

    /// Options in other orders and alignments than Linux sends them.
    #[test]
    fn options_anywhere() {
        let cases: [&[&[u8]]; 5] = [
            &[&[1, 1], &MSS_1460],                       // NOP, NOP, MSS last
            &[&TIMESTAMPS, &MSS_1460],                   // MSS after timestamps
            &[&[1], &MSS_1460],                          // MSS value at an odd offset
            &[&SACK_OK, &[1], &MSS_1460, &[1, 3, 3, 7]], // odd, with more after it
            &[&[1], &TIMESTAMPS, &[1, 1, 1], &MSS_1460], // odd, far along
        ];
        for parts in cases {
            let options = parts.concat();
            for ipv6 in [false, true] {
                let packet = syn(ipv6, &options);
                let (outcome, out) = clamped(&packet, 1000);
                assert_eq!(outcome, Clamp::Clamped { from: 1460, to: 1000 }, "{options:?}");
                assert_eq!(mss_of(&out), Some(1000));
            }
        }
    }

    #[test]
    fn no_mss_option() {
        for options in [&[][..], &SACK_OK, &TIMESTAMPS, &[1, 1, 1, 1], &[0, 2, 4, 5, 0xb4]] {
            assert_eq!(
                clamped(&syn(false, options), 1000).0,
                Clamp::NoOption,
                "{options:?}"
            );
        }
    }

    /// Option lists that cannot be walked: the packet is left untouched.
    #[test]
    fn malformed_options_are_left_alone() {
        let cases: [&[u8]; 8] = [
            &[2, 0, 5, 0xb4],                // length 0
            &[2, 1, 5, 0xb4],                // length 1
            &[1, 1, 1, 2],                   // kind with no length byte
            &[1, 1, 2, 4],                   // MSS option cut by the header's end
            &[2, 3, 5, 0xb4],                // MSS of length 3
            &[2, 6, 5, 0xb4, 0, 0],          // MSS of length 6
            &[8, 12, 1, 2, 3, 4, 5, 6],      // timestamps running past the header
            &[2, 4, 5, 0xb4, 2, 4, 5, 0xb4], // two MSS options
        ];
        for options in cases {
            for ipv6 in [false, true] {
                assert_eq!(
                    clamped(&syn(ipv6, options), 1000).0,
                    Clamp::Malformed,
                    "{options:?}"
                );
            }
        }
        assert_eq!(clamped(&[0x45], 1000).0, Clamp::Malformed);
        let mut bad_offset = SYN_V4;
        bad_offset[32] = 0x40; // data offset 4 words
        assert_eq!(clamped(&bad_offset, 1000).0, Clamp::Malformed);
    }

    #[test]
    fn max_mss_of_small_mtus() {
        assert_eq!(max_mss(1500, false), 1460);
        assert_eq!(max_mss(1500, true), 1440);
        assert_eq!(max_mss(576, false), 536);
        assert_eq!(max_mss(1280, true), 1220);
        assert_eq!(max_mss(50, true), 0);
    }

    /// One TCP option other than MSS: NOP, SACK permitted, window scale,
    /// timestamps, or an unknown kind with a length.
    fn option() -> impl Strategy<Value = Vec<u8>> {
        let timestamps = (any::<u32>(), any::<u32>())
            .prop_map(|(a, b)| [[8, 10].as_slice(), &a.to_be_bytes(), &b.to_be_bytes()].concat());
        let unknown = (30u8..=253, vec(any::<u8>(), 0..6))
            .prop_map(|(kind, data)| [[kind, data.len() as u8 + 2].as_slice(), &data].concat());
        let window_scale = any::<u8>().prop_map(|shift| vec![3, 3, shift]);
        prop_oneof![
            Just(vec![1]),
            Just(SACK_OK.to_vec()),
            window_scale,
            timestamps,
            unknown
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random SYNs of both families with the MSS option anywhere among
        /// random others: afterwards the checksum still verifies, and the
        /// MSS is the smaller of what it was and the limit.
        #[test]
        fn random_syns(
            ipv6: bool,
            before in vec(option(), 0..4),
            after in vec(option(), 0..4),
            mss: u16,
            max: u16,
        ) {
            let options = [before.concat(), vec![2, 4], mss.to_be_bytes().to_vec(), after.concat()].concat();
            prop_assume!(options.len() <= 40);
            let packet = syn(ipv6, &options);
            prop_assert_eq!(verify_transport(&packet), Some(true));
            let (outcome, out) = clamped(&packet, max);
            let expected = if mss > max {
                Clamp::Clamped { from: mss, to: max }
            } else {
                Clamp::Unchanged { mss }
            };
            prop_assert_eq!(outcome, expected);
            // etherparse's option iterator stops at unknown kinds: read the
            // MSS where we put it.
            let at = if ipv6 { 40 } else { 20 } + 20 + before.concat().len() + 2;
            prop_assert_eq!(u16::from_be_bytes([out[at], out[at + 1]]), mss.min(max));
        }

        /// Any change to a real SYN: no panic, and the packet is either
        /// clamped (and then verifies, if it did before) or left untouched.
        #[test]
        fn corrupted_syns(at in 0usize..80, byte: u8, cut in 0usize..=80, ipv6: bool, max in 0u16..1500) {
            let mut packet = if ipv6 { SYN_V6.to_vec() } else { SYN_V4.to_vec() };
            let at = at % packet.len();
            packet[at] = byte;
            packet.truncate(cut);
            let verified = verify_transport(&packet);
            let mut out = packet.clone();
            match clamp_mss(&mut out, max) {
                Clamp::Clamped { .. } => prop_assert_eq!(verify_transport(&out), verified),
                _ => prop_assert_eq!(out, packet),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in vec(any::<u8>(), 0..120), max: u16) {
            let before = bytes.clone();
            if !matches!(clamp_mss(&mut bytes, max), Clamp::Clamped { .. }) {
                prop_assert_eq!(bytes, before);
            }
        }
    }
}
