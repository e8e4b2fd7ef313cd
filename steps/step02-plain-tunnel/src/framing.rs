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
//! out whole frames. It is sans-IO: the caller reads into
//! [`FrameReader::space`] and reports how much arrived with
//! [`FrameReader::filled`] (or copies bytes it already has with
//! [`FrameReader::push`]). Any protocol that puts a 2-byte length in front
//! of its messages can use it: step 02's frames (a message of at least a
//! header, at most the tunnel's largest), step 06's datagrams over a stream
//! (empty ones allowed, too long ones skipped) and its records (an exact
//! length for each handshake message, checked with
//! [`FrameReader::next_checked`]).

use std::fmt;

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 2;

/// Why a stream cannot be framed any further. Either way the connection
/// must be closed: after a bad length there is no telling where the next
/// frame starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A length prefix longer than the largest frame we accept, or shorter
    /// than the shortest.
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
/// Reassembles length-prefixed frames from a byte stream.
///
/// Its buffer holds two of the largest frames and is allocated once, in
/// [`FrameReader::new`]: a peer cannot make it grow, whatever lengths it
/// announces. A frame's length is checked as soon as its prefix arrives,
/// before waiting for the bytes it announces.
#[derive(Debug)]
pub struct FrameReader {
    buffer: Vec<u8>,
    /// Bytes of `buffer` before `start` have been handed out.
    start: usize,
    /// Bytes of `buffer` before `end` hold received data.
    end: usize,
    min_frame: usize,
    max_frame: usize,
    /// Frames longer than `max_frame`: refused, or skipped.
    skip_too_long: bool,
    /// Bytes of a skipped frame still to come.
    skipping: usize,
    /// Frames skipped for their length.
    skipped: u64,
}

impl FrameReader {
    /// A reader for frames of 0 to `max_frame` bytes (at most 65,535, what
    /// the prefix can say). A longer one is an error, [`FrameError::BadLength`].
    pub fn new(max_frame: usize) -> Self {
        let max_frame = max_frame.min(usize::from(u16::MAX));
        Self {
            buffer: vec![0; 2 * (PREFIX_LEN + max_frame)],
            start: 0,
            end: 0,
            min_frame: 0,
            max_frame,
            skip_too_long: false,
            skipping: 0,
            skipped: 0,
        }
    }

    /// Frames shorter than `min_frame` are errors too.
    pub fn with_min(mut self, min_frame: usize) -> Self {
        self.min_frame = min_frame;
        self
    }

    /// Frames longer than the largest are skipped as their bytes arrive,
    /// and counted ([`FrameReader::skipped`]), instead of ending the stream.
    pub fn skipping_too_long(mut self) -> Self {
        self.skip_too_long = true;
        self
    }

    /// How many frames were skipped for their length.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Bytes received and not yet handed out: at the end of the stream,
    /// a frame cut short.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Where the next read from the stream should go. Never empty while
    /// the caller takes every whole frame before it reads again.
    pub fn space(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buffer[self.end..]
    }

    /// Records that `n` bytes were read into [`FrameReader::space`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buffer.len());
    }

    /// Copies as much of `bytes` as there is room for, and returns how
    /// much that was: take the whole frames, then push the rest.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let space = self.space();
        let n = space.len().min(bytes.len());
        space[..n].copy_from_slice(&bytes[..n]);
        self.filled(n);
        n
    }

    /// The next whole frame, in place: `Ok(None)` while more bytes are
    /// needed. It stays valid until the next call.
    pub fn next_in_place(&mut self) -> Result<Option<&mut [u8]>, FrameError> {
        self.next_checked(|_| Ok(()))
    }

    /// [`FrameReader::next_in_place`], with `check` also judging each frame's length
    /// (within the reader's bounds) as soon as its prefix has arrived: a
    /// protocol that expects an exact length in its present state refuses
    /// any other before the bytes come. `check` may see the same frame
    /// more than once while they do.
    pub fn next_checked<E: From<FrameError>>(
        &mut self,
        check: impl FnOnce(usize) -> Result<(), E>,
    ) -> Result<Option<&mut [u8]>, E> {
        loop {
            if self.skipping > 0 {
                let n = self.skipping.min(self.end - self.start);
                self.start += n;
                self.skipping -= n;
                if self.skipping > 0 {
                    return Ok(None);
                }
            }
            let Some(len) = self.announced() else {
                return Ok(None);
            };
            if len > self.max_frame && self.skip_too_long {
                self.start += PREFIX_LEN;
                self.skipping = len;
                self.skipped += 1;
                continue;
            }
            if len < self.min_frame || len > self.max_frame {
                return Err(FrameError::BadLength(len).into());
            }
            check(len)?;
            let at = self.start + PREFIX_LEN;
            if self.end < at + len {
                // Room for the rest is sure: the buffer holds two frames.
                return Ok(None);
            }
            self.start = at + len;
            return Ok(Some(&mut self.buffer[at..at + len]));
        }
    }

    /// The next whole frame copied into `out`: `Ok(Some(len))`, or
    /// `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self, out: &mut [u8]) -> Result<Option<usize>, FrameError> {
        let room = out.len();
        let fits = |len| {
            if len <= room {
                Ok(())
            } else {
                Err(FrameError::BadLength(len))
            }
        };
        let Some(frame) = self.next_checked(fits)? else {
            return Ok(None);
        };
        out[..frame.len()].copy_from_slice(frame);
        Ok(Some(frame.len()))
    }

    /// The length the prefix at `start` announces, once it is whole.
    fn announced(&self) -> Option<usize> {
        let prefix = self
            .buffer
            .get(self.start..self.end)?
            .first_chunk::<PREFIX_LEN>()?;
        Some(usize::from(u16::from_be_bytes(*prefix)))
    }

    /// Called when the stream has ended: an error if it ended mid-frame,
    /// or if what is left starts with an impossible length.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.skipping > 0 {
            let missing = self.skipping.saturating_sub(self.buffered());
            return if missing == 0 {
                Ok(())
            } else {
                Err(FrameError::Truncated { missing })
            };
        }
        if self.buffered() == 0 {
            return Ok(());
        }
        let frame_len = match self.announced() {
            Some(len) if len < self.min_frame || (len > self.max_frame && !self.skip_too_long) => {
                return Err(FrameError::BadLength(len));
            }
            Some(len) => PREFIX_LEN + len,
            None => PREFIX_LEN,
        };
        Err(FrameError::Truncated {
            missing: frame_len.saturating_sub(self.end - self.start),
        })
    }
}
// ANCHOR_END: frame_reader

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::HEADER_LEN;

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
            let mut reader = FrameReader::new(100).with_min(HEADER_LEN);
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
        let mut reader = FrameReader::new(1500).with_min(HEADER_LEN);
        assert_eq!(feed(&mut reader, &frame(&big), 1000).unwrap(), vec![big.clone()]);
        let mut reader = FrameReader::new(1499).with_min(HEADER_LEN);
        assert_eq!(
            feed(&mut reader, &frame(&big), 1000),
            Err(FrameError::BadLength(1500))
        );
    }

    #[test]
    fn impossible_lengths_are_errors() {
        let mut reader = FrameReader::new(1500).with_min(HEADER_LEN);
        assert_eq!(
            feed(&mut reader, &[0xff, 0xff, 1, 2], 4),
            Err(FrameError::BadLength(65535))
        );
        let mut reader = FrameReader::new(1500).with_min(HEADER_LEN);
        assert_eq!(
            feed(&mut reader, &[0, 3, 1, 2, 0], 5),
            Err(FrameError::BadLength(3))
        );
    }

    #[test]
    fn a_stream_that_ends_mid_frame_is_reported() {
        let mut reader = FrameReader::new(100).with_min(HEADER_LEN);
        let stream = frame(&[1, 1, 0, 0, 1, 2, 3]);
        assert!(feed(&mut reader, &stream[..5], 5).unwrap().is_empty());
        assert_eq!(reader.finish(), Err(FrameError::Truncated { missing: 4 }));
        let mut reader = FrameReader::new(100).with_min(HEADER_LEN);
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
        let mut reader = FrameReader::new(100).with_min(HEADER_LEN);
        let stream = [0, 3, 1, 2, 3, 4, 5, 6, 7];
        reader.space()[..stream.len()].copy_from_slice(&stream);
        reader.filled(stream.len());
        let mut out = [0u8; 100];
        assert_eq!(reader.next_frame(&mut out), Err(FrameError::BadLength(3)));
        assert_eq!(reader.finish(), Err(FrameError::BadLength(3)));
    }

    #[test]
    fn finish_counts_what_is_missing() {
        let mut reader = FrameReader::new(100).with_min(HEADER_LEN);
        let stream = [0, 6, 1, 1, 0];
        reader.space()[..stream.len()].copy_from_slice(&stream);
        reader.filled(stream.len());
        assert_eq!(reader.finish(), Err(FrameError::Truncated { missing: 3 }));
    }

    /// Frames as step 06's datagrams are: empty ones allowed, too long ones
    /// skipped and counted, whatever the pieces the stream comes in.
    #[test]
    fn empty_frames_and_skipped_ones() {
        let frames: Vec<Vec<u8>> = vec![
            vec![],
            vec![1; 10],
            vec![2; 40],
            vec![],
            vec![3; 11],
            vec![4; 200],
        ];
        let stream: Vec<u8> = frames.iter().flat_map(|m| frame(m)).collect();
        let kept: Vec<Vec<u8>> = frames.iter().filter(|f| f.len() <= 11).cloned().collect();
        for chunk in 1..=stream.len() {
            let mut reader = FrameReader::new(11).skipping_too_long();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                let mut piece = piece;
                while !piece.is_empty() {
                    let n = reader.push(piece);
                    piece = &piece[n..];
                    while let Some(f) = reader.next_in_place().unwrap() {
                        got.push(f.to_vec());
                    }
                }
            }
            assert_eq!(got, kept, "chunk {chunk}");
            assert_eq!(reader.skipped(), 2);
            assert_eq!(reader.finish(), Ok(()));
        }
    }

    #[test]
    fn a_stream_that_ends_in_a_skipped_frame_is_reported() {
        let mut reader = FrameReader::new(4).skipping_too_long();
        reader.push(&[0, 10, 1, 2, 3]);
        assert_eq!(reader.next_in_place().unwrap(), None);
        assert_eq!(reader.finish(), Err(FrameError::Truncated { missing: 7 }));
        reader.push(&[4, 5, 6, 7, 8, 9, 10, 0, 1, 9]);
        assert_eq!(reader.next_in_place().unwrap().map(|f| f.to_vec()), Some(vec![9]));
        assert_eq!(reader.finish(), Ok(()));
    }

    /// A protocol whose next record must have an exact length, as step
    /// 06's handshake does: a wrong length is refused as soon as the
    /// prefix arrives, before its bytes.
    #[test]
    fn next_checked_refuses_before_the_bytes_arrive() {
        #[derive(Debug, PartialEq)]
        enum Error {
            Frame(FrameError),
            Unexpected(usize),
        }
        impl From<FrameError> for Error {
            fn from(e: FrameError) -> Self {
                Error::Frame(e)
            }
        }
        let expect = |want: usize| {
            move |len: usize| {
                if len == want {
                    Ok(())
                } else {
                    Err(Error::Unexpected(len))
                }
            }
        };
        let mut reader = FrameReader::new(100);
        reader.push(&[0, 3, 7, 7]);
        assert_eq!(reader.next_checked(expect(3)), Ok(None));
        reader.push(&[7, 0, 5]);
        assert_eq!(
            reader.next_checked(expect(3)).map(|f| f.map(|f| f.to_vec())),
            Ok(Some(vec![7; 3]))
        );
        // The next is announced as 5 bytes, and 4 were expected: refused
        // with none of them there.
        assert_eq!(reader.next_checked(expect(4)), Err(Error::Unexpected(5)));
        let mut reader = FrameReader::new(2);
        reader.push(&[0, 3]);
        assert_eq!(
            reader.next_checked(expect(3)),
            Err(Error::Frame(FrameError::BadLength(3)))
        );
    }

    /// A frame is handed out in place, and may be changed there (decrypted,
    /// say) before the next is asked for.
    #[test]
    fn frames_in_place() {
        let mut reader = FrameReader::new(8);
        reader.push(&frame(b"abc"));
        reader.push(&frame(b"de"));
        let f = reader.next_in_place().unwrap().unwrap();
        f.make_ascii_uppercase();
        assert_eq!(f, b"ABC");
        assert_eq!(
            reader.next_in_place().unwrap().map(|f| f.to_vec()),
            Some(b"de".to_vec())
        );
        assert_eq!(reader.buffered(), 0);
    }

    proptest::proptest! {
        /// Random frames, some too long and skipped, in random pieces:
        /// the frames that fit come out, in order, and nothing else.
        #[test]
        fn any_frames_any_pieces(
            frames in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..60), 0..20),
            chunk in 1usize..100,
            max in 0usize..50,
        ) {
            let stream: Vec<u8> = frames.iter().flat_map(|m| frame(m)).collect();
            let mut reader = FrameReader::new(max).skipping_too_long();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                let mut piece = piece;
                while !piece.is_empty() {
                    let n = reader.push(piece);
                    proptest::prop_assert!(n > 0);
                    piece = &piece[n..];
                    while let Some(f) = reader.next_in_place().unwrap() {
                        got.push(f.to_vec());
                    }
                }
            }
            let kept: Vec<Vec<u8>> = frames.iter().filter(|f| f.len() <= max).cloned().collect();
            proptest::prop_assert_eq!(got, kept);
            proptest::prop_assert_eq!(reader.finish(), Ok(()));
        }
    }
}
