//! Step 06's frame parser on arbitrary bytes: never a panic; a frame that
//! parses is exactly what emitting its `Repr` writes (one encoding per
//! meaning, so nothing can be smuggled in the bytes the parser skips), its
//! length is `buffer_len`, and it shows as one line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use step06_localhost::wire::{Frame, HEADER_LEN, MAX_FRAME, Repr};

// ANCHOR: property
fuzz_target!(|bytes: &[u8]| {
    let checked = Frame::new_checked(bytes);
    if let Ok(frame) = &checked {
        // After new_checked no accessor may panic.
        let _ = (frame.kind(), frame.stream(), frame.u16_field());
        assert_eq!(frame.body().len(), frame.body_len());
        assert_eq!(bytes.len(), HEADER_LEN + frame.body_len());
        assert!(bytes.len() <= MAX_FRAME);
    }
    if let Ok(repr) = Repr::parse_bytes(bytes) {
        assert!(checked.is_ok(), "parsed what the view refused");
        assert_eq!(repr.check(), Ok(()), "parsed a frame it would not emit: {repr:?}");
        assert_eq!(repr.buffer_len(), bytes.len());
        let mut out = Vec::new();
        repr.emit(&mut out).expect("a parsed frame emits");
        assert_eq!(out, bytes, "{repr:?} emits other bytes than it was parsed from");
        let line = repr.to_string();
        assert!(!line.contains('\n'), "{line:?} is not one line");
    }
});
// ANCHOR_END: property
