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
//! datagrams out, no sockets.

use std::fmt;

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
/// Cuts a byte stream back into datagrams. Push bytes as they come, then
/// take datagrams with [`next_datagram`](Self::next_datagram) until it returns `None`.
///
/// Memory: a decoder holds at most one datagram's worth that is not yet
/// whole (at most 2 + 65,535 bytes) plus whatever was last pushed, so
/// a peer cannot make it grow by announcing large lengths.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed out.
    start: usize,
    /// Datagrams longer than this are skipped (and counted), not handed
    /// out.
    max: usize,
    /// Datagrams skipped for their length.
    pub too_long: u64,
}

impl Decoder {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max,
            too_long: 0,
        }
    }

    /// Bytes received from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole datagram, if one is buffered.
    pub fn next_datagram(&mut self) -> Option<&[u8]> {
        loop {
            let rest = &self.buf[self.start..];
            let &[a, b, ..] = rest else {
                return None;
            };
            let len = usize::from(u16::from_be_bytes([a, b]));
            if rest.len() < LENGTH_LEN + len {
                return None;
            }
            let at = self.start + LENGTH_LEN;
            self.start = at + len;
            if len > self.max {
                self.too_long += 1;
                continue;
            }
            return Some(&self.buf[at..at + len]);
        }
    }

    /// Bytes of a datagram not yet whole: at the end of the stream, a
    /// datagram cut short.
    pub fn partial(&self) -> usize {
        self.buf.len() - self.start
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
        d.push(&wire);
        assert_eq!(all(&mut d), [b"four".to_vec(), b"ok".to_vec()]);
        assert_eq!(d.too_long, 1);
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
                d.push(&chunk);
                while let Some(g) = d.next_datagram() {
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
                d.push(&wire[w[0]..w[1]]);
                got.extend(all(&mut d));
            }
            prop_assert_eq!(got, datagrams);
            prop_assert_eq!(d.partial(), 0);
        }
    }
}
