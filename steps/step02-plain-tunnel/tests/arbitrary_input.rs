//! Property tests: arbitrary bytes into every parser and into
//! `decapsulate` never panic, and every message that is not accepted is a
//! counted drop.

use std::time::Instant;

use proptest::prelude::*;
use step02_plain_tunnel::framing::FrameReader;
use step02_plain_tunnel::wire::{Message, MessageSummary, Repr};
use step02_plain_tunnel::{Role, Tunnel};

proptest! {
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = Repr::parse_bytes(&bytes);
        if let Ok(m) = Message::new_checked(&bytes[..]) {
            let _ = (m.version(), m.message_type(), m.payload().len());
        }
        let _ = MessageSummary(&bytes).to_string();
    }

    #[test]
    fn decapsulate_accepts_or_counts(bytes in proptest::collection::vec(any::<u8>(), 0..2000), data_header in any::<bool>()) {
        let mut bytes = bytes;
        if data_header && bytes.len() >= 4 {
            // Half the cases look like Data messages, to reach the inner checks.
            bytes[..4].copy_from_slice(&[1, 1, 0, 0]);
        }
        let mut server = Tunnel::new(Role::Server, 1468, None);
        let mut out = vec![0u8; 2000];
        let result = server.decapsulate("192.0.2.2:1".parse().unwrap(), &bytes, Instant::now(), &mut out);
        let c = server.counters();
        match result {
            Ok(_) => prop_assert_eq!(c.drops.total(), 0),
            Err(reason) => {
                prop_assert_eq!(c.drops.get(reason), 1);
                prop_assert_eq!(c.drops.total(), 1);
            }
        }
    }

    #[test]
    fn frame_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000), chunk in 1usize..600) {
        let mut reader = FrameReader::new(1472).with_min(step02_plain_tunnel::wire::HEADER_LEN);
        let mut out = vec![0u8; 1472];
        'feed: for piece in bytes.chunks(chunk) {
            let mut piece = piece;
            while !piece.is_empty() {
                let space = reader.space();
                prop_assert!(!space.is_empty());
                let n = space.len().min(piece.len());
                space[..n].copy_from_slice(&piece[..n]);
                reader.filled(n);
                piece = &piece[n..];
                loop {
                    match reader.next_frame(&mut out) {
                        Ok(Some(len)) => prop_assert!((4..=1472).contains(&len)),
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
            }
        }
        let _ = reader.finish();
    }
}
