//! UDP datagrams over a stream. A mux stream is a byte stream, like TCP:
//! the bytes of two writes may arrive in one read, or one write's bytes
//! in two. So each datagram travels with its length in front, and the
//! receiver cuts the stream back into the same datagrams:
//!
//! ```text
//! length (u16, big-endian) | that many bytes | length | bytes | ...
//! ```
//!
//! A u16 covers every UDP payload over IPv4 (at most 65,507 bytes) and
//! IPv6 without jumbograms. The length may be 0: an empty datagram is a
//! valid datagram (some protocols use one as a probe). Sans-IO: bytes in,
//! datagrams out, no sockets. The framing is step 02's, and so is the
//! reader that undoes it.

use std::fmt;

use step02_plain_tunnel::framing::FrameReader;

/// Bytes of the length in front of each datagram.
pub const LENGTH_LEN: usize = 2;
/// The longest UDP payload over IPv4 (65,535 less the IPv4 and UDP
/// headers): the default limit for what a flow carries.
pub const MAX_DATAGRAM: usize = 65_507;

/// A datagram longer than the limit (or than a u16 can say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong(pub usize);

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a datagram of {} bytes is too long", self.0)
    }
}

impl std::error::Error for TooLong {}

// ANCHOR: encode
/// Appends `datagram`, with its length in front, to `out`.
pub fn encode(datagram: &[u8], out: &mut Vec<u8>) -> Result<(), TooLong> {
    let len = u16::try_from(datagram.len()).map_err(|_| TooLong(datagram.len()))?;
    out.reserve(LENGTH_LEN + datagram.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(datagram);
    Ok(())
}
// ANCHOR_END: encode

// ANCHOR: decoder
/// Cuts a byte stream back into datagrams: step 02's [`FrameReader`],
/// which reads any 2-byte length-prefixed stream, with empty frames
/// allowed and datagrams longer than the limit skipped (and counted) as
/// their bytes arrive. Put bytes in with [`push`](Self::push) (or read
/// into [`space`](Self::space)), then take datagrams with
/// [`next_datagram`](Self::next_datagram) until it returns `None`.
///
/// Memory: the reader's buffer, two of the longest datagrams, is
/// allocated once; a peer cannot make it grow by announcing large
/// lengths.
#[derive(Debug)]
pub struct Decoder {
    frames: FrameReader,
}

impl Decoder {
    /// A decoder for datagrams of up to `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            frames: FrameReader::new(max).skipping_too_long(),
        }
    }

    /// Copies as much of `bytes` as there is room for and returns how much
    /// that was: take the datagrams, then push the rest. Room for one
    /// whole datagram is always there once the whole ones are taken.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        self.frames.push(bytes)
    }

    /// Where the next bytes of the stream can be read to; then
    /// [`filled`](Self::filled).
    pub fn space(&mut self) -> &mut [u8] {
        self.frames.space()
    }

    /// Records that `n` bytes were read into [`space`](Self::space).
    pub fn filled(&mut self, n: usize) {
        self.frames.filled(n);
    }

    /// The next whole datagram, if one is buffered. (The reader takes
    /// every length from 0 and skips those over the limit, so no length
    /// is an error.)
    pub fn next_datagram(&mut self) -> Option<&[u8]> {
        match self.frames.next_in_place() {
            Ok(Some(d)) => Some(d),
            Ok(None) | Err(_) => None,
        }
    }

    /// Datagrams skipped for their length.
    pub fn too_long(&self) -> u64 {
        self.frames.skipped()
    }

    /// Bytes of a datagram not yet whole: at the end of the stream, a
    /// datagram cut short.
    pub fn partial(&self) -> usize {
        self.frames.buffered()
    }
}
// ANCHOR_END: decoder

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(d: &mut Decoder) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        while let Some(g) = d.next_datagram() {
            got.push(g.to_vec());
        }
        got
    }

    /// Pushes all of `bytes`, taking datagrams whenever the buffer is full.
    fn feed(d: &mut Decoder, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        loop {
            let n = d.push(bytes);
            bytes = &bytes[n..];
            got.extend(all(d));
            if bytes.is_empty() {
                return got;
            }
            assert!(n > 0, "no room after taking every whole datagram");
        }
    }

    #[test]
    fn test_encode() {
        let mut out = Vec::new();
        encode(b"abc", &mut out).unwrap();
        encode(b"", &mut out).unwrap();
        assert_eq!(out, [0, 3, b'a', b'b', b'c', 0, 0]);
        assert_eq!(encode(&vec![0; 65_536], &mut out), Err(TooLong(65_536)));
        assert_eq!(out.len(), 7, "nothing half-written");
    }

    #[test]
    fn test_decode() {
        let mut d = Decoder::new(MAX_DATAGRAM);
        d.push(&[0, 3, b'a', b'b']);
        assert_eq!(d.next_datagram(), None);
        assert_eq!(d.partial(), 4);
        d.push(&[b'c', 0, 0, 0]);
        assert_eq!(all(&mut d), [b"abc".to_vec(), vec![]]);
        assert_eq!(d.partial(), 1, "half a length");
    }

    #[test]
    fn datagrams_over_the_limit_are_skipped_and_counted() {
        let mut d = Decoder::new(4);
        let mut wire = Vec::new();
        for g in [&b"four"[..], b"five!", b"ok"] {
            encode(g, &mut wire).unwrap();
        }
        assert_eq!(feed(&mut d, &wire), [b"four".to_vec(), b"ok".to_vec()]);
        assert_eq!(d.too_long(), 1);
        assert_eq!(d.partial(), 0);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..10),
            max in 0usize..70_000,
        ) {
            let mut d = Decoder::new(max);
            for chunk in chunks {
                for g in feed(&mut d, &chunk) {
                    prop_assert!(g.len() <= max);
                }
                // Whatever stays is less than one whole datagram.
                prop_assert!(d.partial() < LENGTH_LEN + 65_536);
            }
        }

        #[test]
        fn split_anywhere_reassembles(
            datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
        ) {
            let mut wire = Vec::new();
            for g in &datagrams {
                encode(g, &mut wire).unwrap();
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            cuts.push(0);
            cuts.push(wire.len());
            cuts.sort_unstable();
            let mut d = Decoder::new(MAX_DATAGRAM);
            let mut got = Vec::new();
            for w in cuts.windows(2) {
                got.extend(feed(&mut d, &wire[w[0]..w[1]]));
            }
            prop_assert_eq!(got, datagrams);
            prop_assert_eq!(d.partial(), 0);
        }
    }
}
