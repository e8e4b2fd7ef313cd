//! Tests for the lab 02 exercise. `tunlab check 02` compiles them together
//! with your `frames.rs`; every test must pass.

use crate::exercise::{FrameError, HEADER_LEN, PREFIX_LEN, next_frame};

/// The largest message step 02 accepts over TCP: the 4-byte header and an
/// IP packet of the tunnel MTU, 1468 bytes.
const MAX: usize = 1472;

/// A Ping message: version 1, type 2, reserved 0 0.
const PING: [u8; 4] = [1, 2, 0, 0];

/// What `next_frame` returns.
type Found<'a> = Result<Option<(&'a [u8], usize)>, FrameError>;

/// The frame of `message`: its length as a big-endian u16, then the message.
fn frame(message: &[u8]) -> Vec<u8> {
    let len = u16::try_from(message.len()).expect("a test message fits a frame");
    let mut f = len.to_be_bytes().to_vec();
    f.extend_from_slice(message);
    f
}

/// A Data message of `len` bytes in all (header included), its payload
/// filled with a counter so that a wrong slice shows.
fn data(len: usize) -> Vec<u8> {
    let mut m = vec![1, 1, 0, 0];
    m.extend((0..len - HEADER_LEN).map(|i| i as u8));
    m
}

fn show(bytes: &[u8]) -> String {
    if bytes.len() <= 12 {
        format!("{bytes:02x?}")
    } else {
        format!("{} bytes starting {:02x?}", bytes.len(), &bytes[..8])
    }
}

fn show_found(found: &Found<'_>) -> String {
    match found {
        Ok(Some((message, consumed))) => {
            format!("Ok(Some((message: {}, consumed: {consumed})))", show(message))
        }
        other => format!("{other:?}"),
    }
}

/// Checks one call and, on failure, says what was expected and why.
#[track_caller]
fn expect(buffer: &[u8], max: usize, want: Found<'_>, why: &str) {
    let got = next_frame(buffer, max);
    assert!(
        got == want,
        "next_frame({}, max_message {max}) returned {}, expected {}.\n{why}",
        show(buffer),
        show_found(&got),
        show_found(&want)
    );
}

#[test]
fn whole_frame() {
    expect(
        &frame(&PING),
        MAX,
        Ok(Some((&PING, 6))),
        "the prefix [00, 04] says a 4-byte message follows, and all of it is there: \
         return the 4 bytes after the prefix (not the prefix itself), and say that the \
         frame took 2 + 4 = 6 bytes of the buffer.",
    );
    let message = data(84);
    expect(
        &frame(&message),
        MAX,
        Ok(Some((&message, 86))),
        "a Data message of 84 bytes: the message is the 84 bytes after the 2-byte \
         prefix, and the frame takes 86 bytes.",
    );
}

/// The prefix is in network byte order.
#[test]
fn length_is_big_endian() {
    let message = data(256);
    expect(
        &frame(&message),
        MAX,
        Ok(Some((&message, 258))),
        "the prefix [01, 00] is the big-endian u16 0x0100 = 256. BadLength(1) means it \
         was read little-endian: use u16::from_be_bytes.",
    );
}

/// Whatever follows the frame belongs to the next one.
#[test]
fn bytes_after_the_frame_are_left_alone() {
    let mut buffer = frame(&PING);
    buffer.extend_from_slice(&[0x00, 0x08, 1, 1]);
    expect(
        &buffer,
        MAX,
        Ok(Some((&PING, 6))),
        "the buffer holds a whole Ping frame and the start of the next frame. Return the \
         first message only, and consumed = 6: the caller keeps the rest for the next call.",
    );
}

/// TCP may deliver a frame in any number of pieces. Until the last byte
/// is there, the answer is "not yet".
#[test]
fn split_at_every_byte() {
    let message = data(100);
    let stream = frame(&message);
    for have in 0..stream.len() {
        expect(
            &stream[..have],
            MAX,
            Ok(None),
            &format!(
                "only the first {have} of the frame's {} bytes have arrived; wait for \
                 the rest (Ok(None)). Never return part of a message, and never index \
                 past the end of the buffer.",
                stream.len()
            ),
        );
    }
    expect(
        &stream,
        MAX,
        Ok(Some((&message, 102))),
        "with the last byte the frame is complete.",
    );
}

/// Two frames in one read: the caller calls again on what is left.
#[test]
fn two_frames_back_to_back() {
    let second = data(40);
    let mut stream = frame(&PING);
    stream.extend_from_slice(&frame(&second));
    expect(
        &stream,
        MAX,
        Ok(Some((&PING, 6))),
        "the first of two frames: the Ping, 6 bytes consumed.",
    );
    expect(
        &stream[6..],
        MAX,
        Ok(Some((&second, 42))),
        "after dropping the 6 bytes consumed, the second frame starts the buffer.",
    );
    expect(
        &stream[48..],
        MAX,
        Ok(None),
        "both frames consumed, nothing left: wait for more bytes.",
    );
}

#[test]
fn prefix_only() {
    expect(&[], MAX, Ok(None), "an empty buffer: no prefix yet.");
    expect(
        &[0x00],
        MAX,
        Ok(None),
        "one byte of the 2-byte prefix: the length is not known yet.",
    );
    expect(
        &[0x00, 0x04],
        MAX,
        Ok(None),
        "the prefix says 4 bytes follow, and none has arrived yet.",
    );
    expect(
        &[0x00, 0x08, 1, 1, 0],
        MAX,
        Ok(None),
        "the prefix says 8 bytes follow, and 3 have arrived.",
    );
}

/// Impossible lengths are errors as soon as the prefix is complete.
#[test]
fn bad_lengths() {
    for len in [0, 1, 3] {
        let prefix = (len as u16).to_be_bytes();
        expect(
            &prefix,
            MAX,
            Err(FrameError::BadLength(len)),
            &format!(
                "every message starts with the {HEADER_LEN}-byte header, so a frame of \
                 {len} bytes cannot hold one. Return the error as soon as the prefix \
                 is there."
            ),
        );
    }
    let mut short = vec![0x00, 0x03];
    short.extend_from_slice(&[1, 2, 0]);
    expect(
        &short,
        MAX,
        Err(FrameError::BadLength(3)),
        "a 3-byte frame is impossible even when its 3 bytes are all there.",
    );
    let too_long = frame(&data(MAX + 1));
    expect(
        &too_long[..PREFIX_LEN],
        MAX,
        Err(FrameError::BadLength(MAX + 1)),
        "the prefix says 1473 bytes, one more than max_message. Return the error at once: \
         a receiver that waited would buffer bytes it will never accept.",
    );
    expect(
        &too_long,
        MAX,
        Err(FrameError::BadLength(MAX + 1)),
        "the whole 1473-byte message has arrived, and it is still one byte too long.",
    );
    expect(
        &[0xff, 0xff],
        MAX,
        Err(FrameError::BadLength(65535)),
        "[ff, ff] is the largest length a prefix can say, 65535, far above max_message. \
         Waiting for 65535 bytes would stall the connection; it is an error now.",
    );
}

/// Lengths exactly at the limits are valid.
#[test]
fn limits_exactly() {
    let largest = data(MAX);
    expect(
        &frame(&largest),
        MAX,
        Ok(Some((&largest, MAX + PREFIX_LEN))),
        "a message of exactly max_message bytes is allowed (the limit is inclusive).",
    );
    expect(
        &frame(&PING),
        HEADER_LEN,
        Ok(Some((&PING, 6))),
        "a 4-byte message is the shortest valid one, and fits a max_message of 4.",
    );
    let message = data(100);
    expect(
        &frame(&message),
        100,
        Ok(Some((&message, 102))),
        "max_message is the caller's: with 100, a 100-byte message fits...",
    );
    expect(
        &frame(&data(101)),
        100,
        Err(FrameError::BadLength(101)),
        "...and a 101-byte one does not. Compare with the max_message argument, not a \
         constant.",
    );
}

/// Every possible prefix, in front of 10 bytes.
#[test]
fn every_prefix() {
    let tail = [1u8, 1, 0, 0, 0x45, 0, 0, 6, 7, 8];
    for len in 0..=usize::from(u16::MAX) {
        let mut buffer = (len as u16).to_be_bytes().to_vec();
        buffer.extend_from_slice(&tail);
        let want: Found<'_> = if !(HEADER_LEN..=MAX).contains(&len) {
            Err(FrameError::BadLength(len))
        } else if len > tail.len() {
            Ok(None)
        } else {
            Ok(Some((&tail[..len], PREFIX_LEN + len)))
        };
        expect(
            &buffer,
            MAX,
            want,
            "the prefix decides: a length outside 4..=max_message is BadLength, a valid \
             length longer than the bytes that follow means wait, and otherwise the \
             message is that many bytes after the prefix.",
        );
    }
}
