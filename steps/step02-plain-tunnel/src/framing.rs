//! Length-prefixed framing for the TCP transport.
//!
//! UDP keeps message boundaries: one datagram, one message. TCP is a byte
//! stream: a read may return half a message, or one and a half. So over TCP
//! each message goes in a frame, a 2-byte big-endian length and then the
//! message:
//!
//! ```text
//! +--------+--------+-----------------------------+
//! |  length (u16)   |  message (length bytes)     |
//! +--------+--------+-----------------------------+
//! ```
//!
//! [`FrameReader`] collects bytes as they arrive, in any pieces, and hands
//! out whole messages. It is sans-IO: the caller reads into
//! [`FrameReader::space`] and reports how much arrived with
//! [`FrameReader::filled`].

use std::fmt;

use crate::wire::HEADER_LEN;

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 2;

/// Why a stream cannot be framed any further. Either way the connection
/// must be closed: after a bad length there is no telling where the next
/// frame starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A length prefix longer than the largest message we accept, or
    /// shorter than a message header.
    BadLength(usize),
    /// The peer closed the connection in the middle of a frame.
    Truncated { missing: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadLength(n) => write!(f, "a frame length of {n} bytes is impossible"),
            FrameError::Truncated { missing } => {
                write!(f, "the stream ended {missing} bytes short of a frame")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Writes the frame prefix for a message of `len` bytes. `None` when the
/// message does not fit a frame.
pub fn prefix(len: usize) -> Option<[u8; PREFIX_LEN]> {
    u16::try_from(len).ok().map(u16::to_be_bytes)
}

// ANCHOR: frame_reader
/// Reassembles frames from a byte stream.
#[derive(Debug)]
pub struct FrameReader {
    buffer: Vec<u8>,
    /// Bytes of `buffer` holding received data (from the start).
    len: usize,
    max_message: usize,
}

impl FrameReader {
    /// A reader for messages of at most `max_message` bytes. Its buffer is
    /// allocated once, here.
    pub fn new(max_message: usize) -> Self {
        let max_message = max_message.min(usize::from(u16::MAX));
        Self {
            buffer: vec![0; 2 * (PREFIX_LEN + max_message)],
            len: 0,
            max_message,
        }
    }

    /// Where the next read from the stream should go. Never empty while
    /// [`FrameReader::next_frame`] returns whole frames as they complete.
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.buffer[self.len..]
    }

    /// Records that `n` bytes were read into [`FrameReader::space`].
    pub fn filled(&mut self, n: usize) {
        self.len = (self.len + n).min(self.buffer.len());
    }

    /// The length of the message whose prefix starts the buffer: `Ok(None)`
    /// while the prefix is incomplete, an error if it is impossible.
    fn message_len(&self) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = self.buffer.get(..PREFIX_LEN).filter(|_| self.len >= PREFIX_LEN) else {
            return Ok(None);
        };
        let message_len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        if message_len < HEADER_LEN || message_len > self.max_message {
            return Err(FrameError::BadLength(message_len));
        }
        Ok(Some(message_len))
    }

    /// The next whole message, copied into `out`: `Ok(Some(len))`, or
    /// `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self, out: &mut [u8]) -> Result<Option<usize>, FrameError> {
        let Some(message_len) = self.message_len()? else {
            return Ok(None);
        };
        let frame_len = PREFIX_LEN + message_len;
        if self.len < frame_len {
            // Room for the rest is guaranteed: the buffer holds two frames.
            return Ok(None);
        }
        let out = out
            .get_mut(..message_len)
            .ok_or(FrameError::BadLength(message_len))?;
        out.copy_from_slice(&self.buffer[PREFIX_LEN..frame_len]);
        // Move what follows to the front. At most one frame's worth of bytes.
        self.buffer.copy_within(frame_len..self.len, 0);
        self.len -= frame_len;
        Ok(Some(message_len))
    }

    /// Called when the stream has ended: an error if it ended mid-frame,
    /// or if what is left starts with an impossible length.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.len == 0 {
            return Ok(());
        }
        let frame_len = match self.message_len()? {
            Some(message_len) => PREFIX_LEN + message_len,
            None => PREFIX_LEN,
        };
        Err(FrameError::Truncated {
            missing: frame_len.saturating_sub(self.len),
        })
    }
}
// ANCHOR_END: frame_reader

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &[u8]) -> Vec<u8> {
        let mut f = prefix(message.len()).unwrap().to_vec();
        f.extend_from_slice(message);
        f
    }

    /// Feeds `stream` in pieces of `chunk` bytes; returns the messages.
    fn feed(reader: &mut FrameReader, stream: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut messages = Vec::new();
        let mut out = vec![0u8; 70000];
        for piece in stream.chunks(chunk) {
            let mut piece = piece;
            while !piece.is_empty() {
                let space = reader.space();
                let n = space.len().min(piece.len());
                space[..n].copy_from_slice(&piece[..n]);
                reader.filled(n);
                piece = &piece[n..];
                while let Some(len) = reader.next_frame(&mut out)? {
                    messages.push(out[..len].to_vec());
                }
            }
        }
        Ok(messages)
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_messages() {
        let messages: Vec<Vec<u8>> = vec![
            vec![1, 2, 0, 0],
            vec![1, 1, 0, 0, 0x45, 9, 9],
            vec![1, 3, 0, 0],
            vec![1, 1, 0, 0, 7],
        ];
        let stream: Vec<u8> = messages.iter().flat_map(|m| frame(m)).collect();
        for chunk in 1..=stream.len() {
            let mut reader = FrameReader::new(100);
            assert_eq!(
                feed(&mut reader, &stream, chunk).unwrap(),
                messages,
                "chunk {chunk}"
            );
            assert_eq!(reader.finish(), Ok(()));
        }
    }

    #[test]
    fn largest_message_fits_and_one_more_byte_does_not() {
        let big = vec![7u8; 1500];
        let mut reader = FrameReader::new(1500);
        assert_eq!(feed(&mut reader, &frame(&big), 1000).unwrap(), vec![big.clone()]);
        let mut reader = FrameReader::new(1499);
        assert_eq!(
            feed(&mut reader, &frame(&big), 1000),
            Err(FrameError::BadLength(1500))
        );
    }

    #[test]
    fn impossible_lengths_are_errors() {
        let mut reader = FrameReader::new(1500);
        assert_eq!(
            feed(&mut reader, &[0xff, 0xff, 1, 2], 4),
            Err(FrameError::BadLength(65535))
        );
        let mut reader = FrameReader::new(1500);
        assert_eq!(
            feed(&mut reader, &[0, 3, 1, 2, 0], 5),
            Err(FrameError::BadLength(3))
        );
    }

    #[test]
    fn a_stream_that_ends_mid_frame_is_reported() {
        let mut reader = FrameReader::new(100);
        let stream = frame(&[1, 1, 0, 0, 1, 2, 3]);
        assert!(feed(&mut reader, &stream[..5], 5).unwrap().is_empty());
        assert_eq!(reader.finish(), Err(FrameError::Truncated { missing: 4 }));
        let mut reader = FrameReader::new(100);
        feed(&mut reader, &stream[..1], 1).unwrap();
        assert_eq!(reader.finish(), Err(FrameError::Truncated { missing: 1 }));
    }

    #[test]
    fn prefix_limits() {
        assert_eq!(prefix(65535), Some([0xff, 0xff]));
        assert_eq!(prefix(65536), None);
    }

    #[test]
    fn finish_after_an_impossible_length_reports_it() {
        // A prefix of 3 (shorter than a header) followed by more bytes than
        // that frame would hold: `next_frame` refuses it, and `finish`
        // must say why instead of computing a negative shortfall.
        let mut reader = FrameReader::new(100);
        let stream = [0, 3, 1, 2, 3, 4, 5, 6, 7];
        reader.space()[..stream.len()].copy_from_slice(&stream);
        reader.filled(stream.len());
        let mut out = [0u8; 100];
        assert_eq!(reader.next_frame(&mut out), Err(FrameError::BadLength(3)));
        assert_eq!(reader.finish(), Err(FrameError::BadLength(3)));
    }

    #[test]
    fn finish_counts_what_is_missing() {
        let mut reader = FrameReader::new(100);
        let stream = [0, 6, 1, 1, 0];
        reader.space()[..stream.len()].copy_from_slice(&stream);
        reader.filled(stream.len());
        assert_eq!(reader.finish(), Err(FrameError::Truncated { missing: 3 }));
    }
}
