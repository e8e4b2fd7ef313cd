//! Lab 02 exercise: length-prefixed frames over a byte stream.
//!
//! Over UDP every tunnel message is one datagram. Over TCP there are no
//! datagrams, only a stream of bytes: one `read` may return half a message,
//! or one and a half. So the TCP transport puts each message in a frame, a
//! 2-byte big-endian length and then the message:
//!
//! ```text
//! +--------+--------+------------------------------+
//! |  length (u16)   |  message (length bytes)      |
//! +--------+--------+------------------------------+
//! ```
//!
//! Here you write the function that finds the next whole message in the
//! bytes received so far.
//!
//! Check your attempt with `cargo run -p tunlab -- check 02` (or `watch
//! 02`, which checks again each time you save). Stuck? `cargo run -p
//! tunlab -- hint 02` shows the next hint.

/// Bytes of the length prefix in front of every message.
pub const PREFIX_LEN: usize = 2;

/// Bytes of the tunnel's message header (version, type, two reserved
/// bytes): no message is shorter.
pub const HEADER_LEN: usize = 4;

/// Why a stream cannot be framed any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix says `n` bytes, and no valid message has that
    /// length: fewer than [`HEADER_LEN`] or more than the largest message
    /// accepted. The connection must be closed: after a bad prefix there is
    /// no telling where the next frame starts.
    BadLength(usize),
}

/// Finds the next frame at the start of `buffer`, the bytes received so far.
///
/// - When `buffer` holds a whole frame, returns `Ok(Some((message,
///   consumed)))`: `message` is the message (without its prefix), borrowed
///   from `buffer`, and `consumed` is the number of bytes the frame takes,
///   prefix included. The caller drops those bytes and calls again: the next
///   frame may already be there.
/// - When more bytes are needed (not even a whole prefix, or a prefix whose
///   message has not all arrived), returns `Ok(None)`. Bytes after the frame
///   are never looked at.
/// - When the prefix is complete and says a length below [`HEADER_LEN`] or
///   above `max_message`, returns `Err(FrameError::BadLength(length))`, as
///   soon as the prefix is there: do not wait for a message that will never
///   be valid.
///
/// The length is a `u16` in network byte order (big-endian): the prefix
/// `[0x01, 0x00]` means 256 bytes. No input may make the function panic.
pub fn next_frame(buffer: &[u8], max_message: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    // TODO: read the prefix (if there are enough bytes), check the length,
    // and return the message once all of it has arrived. Replace the two
    // lines below.
    let _ = (buffer, max_message);
    todo!("find the next length-prefixed frame in `buffer`")
}
