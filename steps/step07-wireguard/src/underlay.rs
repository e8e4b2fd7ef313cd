//! Step 07's messages as they are seen on the underlay, for the capture
//! decoder (`tunlab decode --step 07`): see
//! [`step02_plain_tunnel::underlay`].
//!
//! WireGuard's messages and step 04's share their header (a type byte,
//! three zero bytes, little-endian indices and counters) and their data
//! message, so the bytes alone tell them apart only by the handshake
//! messages' lengths: 148 and 92 bytes here, 132 and 76 in step 04. Hence
//! two decoders: [`DECODER`] for a capture known to be WireGuard's, and
//! [`SHAPED`] for a capture of unknown origin.

use step02_plain_tunnel::underlay::Decoder;

use crate::wire::{
    COOKIE_REPLY_LEN, DATA_OVERHEAD, INITIATION_LEN, MessageSummary, MessageType, RESPONSE_LEN,
};

/// Step 07's decoder, for `--step 07`: every payload on the tunnel's port
/// is taken for a WireGuard message, and one that is not well formed is
/// shown with what is wrong with it (`malformed (bad-type), 9 bytes`).
/// Step 08 sends the same messages.
pub const DECODER: Decoder = Decoder {
    step: "07",
    claims: any_payload,
    message: message_line,
};

/// Step 07's decoder for a capture whose step is not known: it claims
/// only a payload shaped exactly like one of WireGuard's messages (its
/// type, zero reserved bytes, and its type's length), so that step 04's
/// handshake messages, four and sixteen bytes shorter, are left to step
/// 04's decoder. A data message looks the same in both and is shown the
/// same by either.
pub const SHAPED: Decoder = Decoder {
    step: "07",
    claims: wireguard_shaped,
    message: message_line,
};

fn any_payload(_: &[u8]) -> bool {
    true
}

/// Whether `payload` has the type, reserved bytes and length of one of
/// WireGuard's four messages (whitepaper section 5.4).
pub fn wireguard_shaped(payload: &[u8]) -> bool {
    if payload.get(1..4) != Some(&[0, 0, 0]) {
        return false;
    }
    match MessageType::of(payload) {
        Some(MessageType::Initiation) => payload.len() == INITIATION_LEN,
        Some(MessageType::Response) => payload.len() == RESPONSE_LEN,
        Some(MessageType::CookieReply) => payload.len() == COOKIE_REPLY_LEN,
        Some(MessageType::Data) => payload.len() >= DATA_OVERHEAD,
        None => false,
    }
}

fn message_line(payload: &[u8]) -> String {
    MessageSummary(payload).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use step02_plain_tunnel::underlay::PORT;

    /// A UDP/IPv4 datagram from 192.0.2.2:51821 to 192.0.2.1:`dport`.
    fn datagram(dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv4([192, 0, 2, 2], [192, 0, 2, 1], 64)
            .udp(51821, dport)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    /// A message of `len` bytes of type `kind`, its fields numbered.
    fn message(kind: u8, len: usize) -> Vec<u8> {
        let mut m: Vec<u8> = (0..len).map(|i| i as u8).collect();
        m[0] = kind;
        m[1..4].fill(0);
        m
    }

    #[test]
    fn each_message_is_named_with_its_indices() {
        let line = |m: &[u8]| DECODER.summary(&datagram(PORT, m), PORT).unwrap();
        assert_eq!(
            line(&message(1, 148)),
            "IP 192.0.2.2.51821 > 192.0.2.1.51820: UDP, length 148 | handshake initiation, sender 0x07060504, mac2"
        );
        let mut init = message(1, 148);
        init[132..].fill(0);
        assert!(line(&init).ends_with("handshake initiation, sender 0x07060504"));
        assert!(
            line(&message(2, 92))
                .ends_with("handshake response, sender 0x07060504, receiver 0x0b0a0908, mac2")
        );
        assert!(line(&message(3, 64)).ends_with("UDP, length 64 | cookie reply, receiver 0x07060504"));
        assert!(
            line(&message(4, 128))
                .ends_with("data, receiver 0x07060504, counter 1084818905618843912, 96 bytes sealed")
        );
        assert!(
            line(&message(4, 32)).ends_with("keepalive, receiver 0x07060504, counter 1084818905618843912")
        );
        assert_eq!(
            DECODER.summary(&datagram(7000, &message(4, 32)), PORT),
            None,
            "another port"
        );
    }

    #[test]
    fn on_the_port_junk_is_shown_as_junk() {
        let line = |m: &[u8]| DECODER.summary(&datagram(PORT, m), PORT).unwrap();
        assert!(line(&[]).ends_with("| malformed (truncated), 0 bytes"));
        assert!(line(&[9, 0, 0, 0]).ends_with("| malformed (bad-type), 4 bytes"));
        assert!(line(&message(1, 132)).ends_with("| malformed (truncated), 132 bytes"));
        let mut reserved = message(3, 64);
        reserved[2] = 1;
        assert!(line(&reserved).ends_with("| malformed (bad-reserved), 64 bytes"));
    }

    #[test]
    fn only_wireguards_shapes_are_claimed_when_the_step_is_unknown() {
        for (kind, len) in [(1, 148), (2, 92), (3, 64), (4, 32), (4, 1452)] {
            assert!(wireguard_shaped(&message(kind, len)), "{kind} {len}");
        }
        // Step 04's initiation and response, step 02's header, junk.
        for m in [
            message(1, 132),
            message(2, 76),
            message(3, 63),
            message(4, 31),
            message(5, 148),
        ] {
            assert!(!wireguard_shaped(&m), "{} {}", m[0], m.len());
        }
        assert!(!wireguard_shaped(&[1, 1, 0, 0]));
        assert!(!wireguard_shaped(&[]));
        assert_eq!(SHAPED.summary(&datagram(PORT, &message(1, 132)), PORT), None);
    }
}
