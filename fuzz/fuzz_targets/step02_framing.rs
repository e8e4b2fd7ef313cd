//! Step 02's TCP framing on an arbitrary byte stream, cut into arbitrary
//! reads, as step 02 sets it up (frames of a message header to the largest
//! message) and as step 06 does for datagrams (too long ones skipped): never
//! a panic, and exactly the frames (or the error) that reading the stream
//! front to back in one piece gives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use step02_plain_tunnel::framing::{FrameError, FrameReader, PREFIX_LEN};
use step02_plain_tunnel::wire::HEADER_LEN;

const MAX: usize = 1500;

/// The frames of `stream` read in one piece: the reference. With `skip`,
/// a frame longer than `MAX` is passed over instead of ending the stream.
fn reference(stream: &[u8], skip: bool) -> (Vec<Vec<u8>>, bool) {
    let mut frames = Vec::new();
    let mut rest = stream;
    while rest.len() >= PREFIX_LEN {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if len > MAX && skip {
            rest = rest.get(PREFIX_LEN + len..).unwrap_or_default();
            continue;
        }
        if !(HEADER_LEN..=MAX).contains(&len) {
            return (frames, true);
        }
        if rest.len() < PREFIX_LEN + len {
            break;
        }
        frames.push(rest[PREFIX_LEN..PREFIX_LEN + len].to_vec());
        rest = &rest[PREFIX_LEN + len..];
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    // The first byte sets the size of every read (its low 7 bits: 1 to 128
    // bytes), and whether too long frames are skipped (its high bit).
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let (cut, skip) = (usize::from(first & 0x7f) + 1, first & 0x80 != 0);
    let (expected, bad) = reference(stream, skip);
    let mut reader = FrameReader::new(MAX).with_min(HEADER_LEN);
    if skip {
        reader = reader.skipping_too_long();
    }
    let mut frames = Vec::new();
    let mut error = false;
    let mut out = vec![0u8; MAX];
    'read: for chunk in stream.chunks(cut) {
        let mut chunk = chunk;
        while !chunk.is_empty() {
            let space = reader.space();
            assert!(
                !space.is_empty(),
                "no room while frames are taken as they complete"
            );
            let n = space.len().min(chunk.len());
            space[..n].copy_from_slice(&chunk[..n]);
            reader.filled(n);
            chunk = &chunk[n..];
            loop {
                match reader.next_frame(&mut out) {
                    Ok(Some(len)) => frames.push(out[..len].to_vec()),
                    Ok(None) => break,
                    Err(FrameError::BadLength(_)) => {
                        error = true;
                        break 'read;
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        }
    }
    assert_eq!(frames, expected, "the frames depend on how the stream was cut");
    assert_eq!(error, bad, "a bad length found in one reading and not the other");
});
