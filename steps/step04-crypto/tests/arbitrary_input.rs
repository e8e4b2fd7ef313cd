//! Property tests: arbitrary bytes, truncations and bit flips of valid
//! messages, fed to the handshake and data paths. Never a panic; each
//! message refused is exactly one counted drop; and it changes nothing:
//! the genuine message, delivered after it, is still accepted.

mod common;

use common::*;
use proptest::prelude::*;
use step02_plain_tunnel::Action;
use step04_crypto::Tunnel;
use step04_crypto::wire::{DataPacket, InitiationPacket, MessageSummary, Repr, ResponsePacket};

fn total_drops(t: &Tunnel) -> u64 {
    t.drops().total() + t.peer_stats(0).map_or(0, |s| s.drops.total())
}

/// Which message of a first exchange is tampered with.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// The client's initiation, on its way to the server.
    Initiation,
    /// The server's response, on its way to the client.
    Response,
    /// The client's first data message (the ping it staged).
    Data,
}

/// Runs a first exchange (initiation, response, data) in which the
/// message of `stage` is first replaced by `tamper(message)` and then
/// delivered as it was. The tampered one must be refused with one counted
/// drop, and the exchange must then complete as if it had never been.
fn exchange_with(stage: Stage, tamper: impl Fn(&[u8]) -> Vec<u8>) -> Result<(), TestCaseError> {
    let mut p = Pair::new();
    let mut out = vec![0u8; 2048];
    // Delivers `message` (after its tampered twin, when it is the target);
    // returns what the receiver did and the bytes it wrote.
    let deliver = |to: &mut Tunnel,
                   from: &str,
                   message: &[u8],
                   is_target: bool|
     -> Result<(Action, Vec<u8>), TestCaseError> {
        let mut scratch = vec![0u8; 2048];
        if is_target {
            let bad = tamper(message);
            let before = total_drops(to);
            let result = to.decapsulate(addr("198.51.100.9:9"), &bad, p.now, &mut scratch);
            prop_assert!(result.is_err(), "tampered message accepted: {:?}", result);
            prop_assert_eq!(total_drops(to), before + 1, "refused but not counted once");
        }
        let mut out = vec![0u8; 2048];
        let action = to
            .decapsulate(addr(from), message, p.now, &mut out)
            .map_err(|e| {
                TestCaseError::fail(format!(
                    "the genuine message was refused after the tampered one: {e}"
                ))
            })?;
        let len = match action {
            Action::Reply(t) => t.len,
            Action::WriteToTun(n) => n,
            Action::Nothing => 0,
        };
        Ok((action, out[..len].to_vec()))
    };
    let t = p
        .client
        .encapsulate(&client_ping(1), p.now, &mut out)
        .unwrap()
        .unwrap();
    let init = out[..t.len].to_vec();
    let (action, response) = deliver(&mut p.server, CLIENT, &init, matches!(stage, Stage::Initiation))?;
    prop_assert!(matches!(action, Action::Reply(_)), "no response");
    let (action, _) = deliver(&mut p.client, SERVER, &response, matches!(stage, Stage::Response))?;
    prop_assert_eq!(action, Action::Nothing);
    let t = p.client.poll(p.now, &mut out).expect("the staged ping");
    let data = out[..t.len].to_vec();
    let (action, packet) = deliver(&mut p.server, CLIENT, &data, matches!(stage, Stage::Data))?;
    prop_assert!(matches!(action, Action::WriteToTun(_)));
    prop_assert_eq!(packet, client_ping(1));
    prop_assert_eq!(p.server.peer_endpoint(0), Some(addr(CLIENT)));
    Ok(())
}

fn stage() -> impl Strategy<Value = Stage> {
    prop_oneof![Just(Stage::Initiation), Just(Stage::Response), Just(Stage::Data)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..300),
        kind in prop_oneof![Just(None), Just(Some(1u8)), Just(Some(2u8)), Just(Some(4u8))],
        len in prop_oneof![Just(None), Just(Some(132usize)), Just(Some(76usize))],
    ) {
        // Most cases look like one of our types, some with a handshake
        // message's exact length, to get past the first checks.
        if let Some(len) = len {
            bytes.resize(len, 0);
        }
        if let (Some(kind), true) = (kind, bytes.len() >= 4) {
            bytes[..4].copy_from_slice(&[kind, 0, 0, 0]);
        }
        let _ = MessageSummary(&bytes).to_string();
        if let Ok(p) = InitiationPacket::new_checked(&bytes[..]) {
            let _ = (p.sender(), p.ephemeral(), p.sealed_static(), p.sealed_timestamp(), p.mac1());
        }
        if let Ok(p) = ResponsePacket::new_checked(&bytes[..]) {
            let _ = (p.sender(), p.receiver(), p.ephemeral(), p.sealed_empty(), p.mac1());
        }
        if let Ok(p) = DataPacket::new_checked(&bytes[..]) {
            let _ = (p.receiver(), p.counter(), p.header(), p.ciphertext(), p.tag());
        }
        // What parses emits back to the same bytes (a data message's
        // header; its sealed part is not the wire format's).
        if let Ok(repr) = Repr::parse(&bytes) {
            let mut again = bytes.clone();
            let cleared = match repr {
                Repr::Data(_) => 16,
                _ => bytes.len(),
            };
            again[..cleared].fill(0);
            prop_assert_eq!(repr.emit(&mut again), Some(bytes.len()));
            prop_assert_eq!(again, bytes);
        }
    }

    #[test]
    fn arbitrary_bytes_are_refused_and_change_nothing(
        stage in stage(),
        bytes in proptest::collection::vec(any::<u8>(), 0..1600),
        kind in prop_oneof![Just(None), Just(Some(1u8)), Just(Some(2u8)), Just(Some(4u8))],
    ) {
        exchange_with(stage, |_| {
            let mut bytes = bytes.clone();
            // Most cases look like one of our types, to get past the
            // first check.
            if let (Some(kind), true) = (kind, bytes.len() >= 4) {
                bytes[..4].copy_from_slice(&[kind, 0, 0, 0]);
            }
            bytes
        })?;
    }

    #[test]
    fn truncated_messages_are_refused_and_change_nothing(stage in stage(), cut in 0usize..200) {
        exchange_with(stage, |m| m[..cut % m.len()].to_vec())?;
    }

    #[test]
    fn flipped_bits_are_refused_and_change_nothing(stage in stage(), bit in 0usize..1100) {
        exchange_with(stage, |m| {
            let mut m = m.to_vec();
            let bit = bit % (m.len() * 8);
            m[bit / 8] ^= 1 << (bit % 8);
            m
        })?;
    }
}
