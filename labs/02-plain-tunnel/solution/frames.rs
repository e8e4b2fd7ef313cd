//! Lab 02 reference solution: length-prefixed frames over a byte stream.
//!
//! The same rules as `FrameReader::next_frame` in
//! `steps/step02-plain-tunnel/src/framing.rs`, as one function over a slice.

/// Bytes of the length prefix in front of every message.
pub const PREFIX_LEN: usize = 2;

/// Bytes of the tunnel's message header (version, type, two reserved
/// bytes): no message is shorter.
pub const HEADER_LEN: usize = 4;

/// Why a stream cannot be framed any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix says `n` bytes, and no valid message has that
    /// length.
    BadLength(usize),
}

/// Finds the next frame at the start of `buffer`: `Ok(Some((message,
/// consumed)))`, `Ok(None)` when more bytes are needed, or
/// `Err(FrameError::BadLength(n))` when the prefix is impossible.
pub fn next_frame(buffer: &[u8], max_message: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    // Not even the prefix yet.
    let Some(&[high, low]) = buffer.get(..PREFIX_LEN) else {
        return Ok(None);
    };
    // Network byte order: the first byte is the high byte.
    let len = usize::from(u16::from_be_bytes([high, low]));
    // Judge the length as soon as it is known: a frame that can never be
    // valid must not make us wait for up to 65535 more bytes.
    if len < HEADER_LEN || len > max_message {
        return Err(FrameError::BadLength(len));
    }
    let consumed = PREFIX_LEN + len;
    // `get` instead of indexing: a short buffer means "wait", not a panic.
    match buffer.get(PREFIX_LEN..consumed) {
        Some(message) => Ok(Some((message, consumed))),
        None => Ok(None),
    }
}
