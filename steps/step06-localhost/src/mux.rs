//! Many visitor streams over the one control connection, each with its
//! own flow control. Sans-IO: frames in through [`Mux::handle`], frames
//! out through [`Mux::poll_transmit`], the application's bytes through
//! [`Mux::read`] and [`Mux::write`].
//!
//! # One connection for everything, or one per visitor?
//!
//! bore opens a fresh TCP connection from the client to the server for
//! every visitor and splices the two sockets: the kernel does all flow
//! control, a slow visitor slows only its own connection, and the code is
//! short. It costs a round trip (and, with our keys, a handshake) per
//! visitor, needs the server to match data connections to visitors, and
//! needs the client to be able to reach the server again and again.
//!
//! Here, as in ngrok, yamux or HTTP/2, every visitor is a *stream* inside
//! the control connection that already exists: no new connection, no new
//! handshake, one encrypted session. The price is that all streams share
//! one TCP connection:
//!
//! - **Head-of-line blocking.** TCP delivers bytes in order, so a lost
//!   segment holds back every stream's later frames until it is
//!   retransmitted, even streams whose own bytes all arrived. Only a
//!   transport with independent streams (QUIC) avoids that.
//! - **Flow control is ours to do.** If the receiver simply stopped
//!   reading the connection when one visitor's socket is full, every
//!   other visitor would stall behind it. So each stream has a credit
//!   window (HTTP/2's design, RFC 9113 section 5.2): a side may send at
//!   most [`INITIAL_WINDOW`] bytes on a stream beyond what the other side
//!   has granted back with Window frames, and it grants them back only as
//!   its application consumes them. The receiver therefore never buffers
//!   more than one window per stream, and never has to stop reading the
//!   connection: one slow (or dead) visitor stalls only itself.
//! - **Fairness is ours to do.** [`Mux::poll_transmit`] takes one frame
//!   of at most [`MAX_DATA`] bytes from each stream in turn.
//!
//! Stream ids: the server opens even ids, the client odd ones, each side
//! counting up, so the two never pick the same id and an id is never
//! reused. Close is a half-close, like TCP's FIN: no more data this way,
//! the other way goes on. Reset ends both ways at once and drops what is
//! buffered.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use crate::wire::{MAX_DATA, Proto, Repr};

// ANCHOR: window
/// The credit each side starts with on each stream, in bytes, and the
/// most a stream buffers each way.
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// Credit is granted back once this much has been consumed: fewer, larger
/// Window frames, while the sender never runs dry if the reader keeps up.
pub const WINDOW_UPDATE_THRESHOLD: u32 = INITIAL_WINDOW / 4;
// ANCHOR_END: window

/// How many session frames (Hello, Exposed, Pong...) may wait to be sent.
pub const CONTROL_QUEUE_LIMIT: usize = 64;

/// Which end of the control connection; decides the parity of the stream
/// ids this side opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// Limits.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Streams open at once. Each may hold up to two windows of buffers,
    /// so memory is at most `max_streams * 2 * INITIAL_WINDOW`.
    pub max_streams: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { max_streams: 256 }
    }
}

/// An error that ends the whole connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuxError {
    /// An Open with an id of the wrong parity, or not above the last one.
    BadStreamId,
    /// A session frame given to [`Mux::handle`] (a bug in the caller).
    NotAStreamFrame,
    /// Frames waiting to be sent beyond the limits: the peer sends but does
    /// not read.
    QueueFull,
    /// [`Mux::open`] with [`Config::max_streams`] streams open.
    TooManyStreams,
}

impl fmt::Display for MuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MuxError::BadStreamId => "bad stream id in open",
            MuxError::NotAStreamFrame => "not a stream frame",
            MuxError::QueueFull => "peer does not read its frames",
            MuxError::TooManyStreams => "too many streams",
        })
    }
}

impl std::error::Error for MuxError {}

/// Why a stream operation did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamError {
    /// Nothing to read yet, or no credit or buffer to write into: try again
    /// after the next frames are handled or sent.
    WouldBlock,
    /// The peer reset the stream (reported once; then [`Closed`](Self::Closed)).
    Reset,
    /// No such stream (any more), or writing after our Close.
    Closed,
}

/// Counted events; none of them ends the connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Data beyond the credit we granted: the stream is reset
    /// (RFC 9113 section 6.9.1 makes this a FLOW_CONTROL_ERROR too).
    pub credit_violations: u64,
    /// Data after the peer's Close, or credit past 2^32 - 1: the stream is
    /// reset.
    pub stream_errors: u64,
    /// Frames for streams we do not have (often ones just reset: they
    /// crossed our Reset on the wire).
    pub unknown_stream: u64,
    /// Opens beyond `max_streams`, answered with Reset.
    pub refused_streams: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
}

/// A FIFO of bytes in one `Vec`: appends at the back, a read offset at
/// the front, compacted (one `memmove`) once the consumed part is at least
/// half. Whole slices in and out, never byte by byte.
#[derive(Debug, Default)]
struct ByteQueue {
    bytes: Vec<u8>,
    start: usize,
}

impl ByteQueue {
    fn len(&self) -> usize {
        self.bytes.len() - self.start
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
    fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start >= self.bytes.len() / 2 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.extend_from_slice(data);
    }
    fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.bytes.len() {
            self.bytes.clear();
            self.start = 0;
        }
    }
    /// Drops the contents and the memory.
    fn free(&mut self) {
        *self = Self::default();
    }
}

#[derive(Debug)]
struct Stream {
    /// What the stream carries: a TCP visitor's bytes, or a UDP flow's
    /// length-prefixed datagrams. The mux does not care; the ends do.
    proto: Proto,
    send_buf: ByteQueue,
    /// Bytes we may still send (granted and not yet sent).
    send_credit: u32,
    recv_buf: ByteQueue,
    /// Bytes the peer may still send us.
    recv_window: u32,
    /// Bytes the application read that we have not granted back yet.
    unreported: u32,
    open_pending: bool,
    fin_queued: bool,
    fin_sent: bool,
    fin_received: bool,
    eof_seen: bool,
    reset: bool,
}

impl Stream {
    fn new(proto: Proto, open_pending: bool) -> Self {
        Self {
            proto,
            send_buf: ByteQueue::default(),
            send_credit: INITIAL_WINDOW,
            recv_buf: ByteQueue::default(),
            recv_window: INITIAL_WINDOW,
            unreported: 0,
            open_pending,
            fin_queued: false,
            fin_sent: false,
            fin_received: false,
            eof_seen: false,
            reset: false,
        }
    }

    fn finished(&self) -> bool {
        self.fin_sent && self.eof_seen
    }
}

// ANCHOR: mux
/// The streams of one control connection.
#[derive(Debug)]
pub struct Mux {
    side: Side,
    config: Config,
    streams: BTreeMap<u32, Stream>,
    next_id: u32,
    /// The highest id the peer has opened.
    peer_highest: u32,
    accepted: VecDeque<(u32, Proto)>,
    control: VecDeque<Vec<u8>>,
    resets: VecDeque<u32>,
    /// The stream that sent data last, for round-robin.
    cursor: u32,
    pub counters: Counters,
}
// ANCHOR_END: mux

impl Mux {
    pub fn new(side: Side, config: Config) -> Self {
        Self {
            side,
            config,
            streams: BTreeMap::new(),
            next_id: match side {
                Side::Client => 1,
                Side::Server => 2,
            },
            peer_highest: 0,
            accepted: VecDeque::new(),
            control: VecDeque::new(),
            resets: VecDeque::new(),
            cursor: 0,
            counters: Counters::default(),
        }
    }

    fn peer_parity(&self, id: u32) -> bool {
        match self.side {
            Side::Client => id.is_multiple_of(2),
            Side::Server => id % 2 == 1,
        }
    }

    /// Streams open (including ones the application has not seen end).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Bytes buffered now in every stream, both ways.
    pub fn buffered_total(&self) -> usize {
        self.streams
            .values()
            .map(|s| s.send_buf.len() + s.recv_buf.len())
            .sum()
    }

    /// Bytes buffered on a stream: (to send, received and unread).
    pub fn buffered(&self, id: u32) -> Option<(usize, usize)> {
        self.streams
            .get(&id)
            .map(|s| (s.send_buf.len(), s.recv_buf.len()))
    }

    /// Opens a stream carrying `proto`; the peer learns of it with the
    /// first frame sent.
    pub fn open(&mut self, proto: Proto) -> Result<u32, MuxError> {
        if self.streams.len() >= self.config.max_streams || self.next_id > u32::MAX - 2 {
            return Err(MuxError::TooManyStreams);
        }
        let id = self.next_id;
        self.next_id += 2;
        self.streams.insert(id, Stream::new(proto, true));
        Ok(id)
    }

    /// The next stream the peer opened, and what it carries.
    pub fn accept(&mut self) -> Option<(u32, Proto)> {
        self.accepted.pop_front()
    }

    /// Queues a session frame (Hello, Exposed, Pong...).
    pub fn send_control(&mut self, repr: &Repr<'_>) -> Result<(), MuxError> {
        if self.control.len() >= CONTROL_QUEUE_LIMIT {
            return Err(MuxError::QueueFull);
        }
        let mut frame = Vec::with_capacity(repr.buffer_len());
        repr.emit(&mut frame).map_err(|_| MuxError::NotAStreamFrame)?;
        self.control.push_back(frame);
        Ok(())
    }

    /// Drops a stream and tells the peer.
    pub fn reset(&mut self, id: u32) {
        if let Some(s) = self.streams.remove(&id)
            && !s.reset
        {
            self.send_reset(id);
        }
    }

    fn send_reset(&mut self, id: u32) {
        self.counters.resets_sent += 1;
        // One per stream id ever seen, so bounded by the streams; if the
        // peer never reads them, `poll_transmit` is never called and
        // `handle` refuses more work (see there).
        self.resets.push_back(id);
    }

    /// How many bytes [`write`](Self::write) would take now; `None` if the
    /// stream is gone, reset or closed our way. Whoever must write a
    /// datagram whole or not at all (a UDP flow) checks this first.
    pub fn send_capacity(&self, id: u32) -> Option<usize> {
        let s = self.streams.get(&id).filter(|s| !s.reset && !s.fin_queued)?;
        let limit = s.send_credit.min(INITIAL_WINDOW) as usize;
        Some(limit.saturating_sub(s.send_buf.len()))
    }

    /// Ends our direction of the stream (FIN) once its buffered data is
    /// sent.
    pub fn close(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.fin_queued = true;
        }
    }

    // ANCHOR: write
    /// Buffers up to `data.len()` bytes for the stream; returns how many.
    /// A stream buffers no more than its credit, and no more than
    /// [`INITIAL_WINDOW`] whatever the credit.
    pub fn write(&mut self, id: u32, data: &[u8]) -> Result<usize, StreamError> {
        let s = self.live(id)?;
        if s.fin_queued {
            return Err(StreamError::Closed);
        }
        let limit = s.send_credit.min(INITIAL_WINDOW) as usize;
        let n = limit.saturating_sub(s.send_buf.len()).min(data.len());
        if n == 0 && !data.is_empty() {
            return Err(StreamError::WouldBlock);
        }
        s.send_buf.push(&data[..n]);
        Ok(n)
    }
    // ANCHOR_END: write

    // ANCHOR: read
    /// Reads received bytes; `Ok(0)` is the end of the stream (the peer's
    /// Close). Reading is what grants the peer more credit.
    pub fn read(&mut self, id: u32, buf: &mut [u8]) -> Result<usize, StreamError> {
        let s = self.live(id)?;
        if s.recv_buf.is_empty() {
            if !s.fin_received {
                return Err(StreamError::WouldBlock);
            }
            s.eof_seen = true;
            if s.finished() {
                self.streams.remove(&id);
            }
            return Ok(0);
        }
        let n = buf.len().min(s.recv_buf.len());
        buf[..n].copy_from_slice(&s.recv_buf.as_slice()[..n]);
        s.recv_buf.consume(n);
        // n <= recv_buf.len() <= INITIAL_WINDOW, so this fits.
        s.unreported += n as u32;
        Ok(n)
    }
    // ANCHOR_END: read

    /// The stream, unless it is gone or reset (a reset is reported once,
    /// then the stream is forgotten).
    fn live(&mut self, id: u32) -> Result<&mut Stream, StreamError> {
        match self.streams.get(&id) {
            None => Err(StreamError::Closed),
            Some(s) if s.reset => {
                self.streams.remove(&id);
                Err(StreamError::Reset)
            }
            Some(_) => self.streams.get_mut(&id).ok_or(StreamError::Closed),
        }
    }

    /// Resets `id` because the peer broke the rules on it.
    fn stream_error(&mut self, id: u32) {
        self.streams.remove(&id);
        self.send_reset(id);
    }

    // ANCHOR: handle
    /// Takes one stream frame from the peer. Errors end the connection;
    /// everything else a peer can get wrong on one stream resets that
    /// stream and is counted.
    pub fn handle(&mut self, frame: &Repr<'_>) -> Result<(), MuxError> {
        if self.resets.len() > self.config.max_streams {
            return Err(MuxError::QueueFull);
        }
        match *frame {
            Repr::Open { stream, proto } => {
                if !self.peer_parity(stream) || stream <= self.peer_highest {
                    return Err(MuxError::BadStreamId);
                }
                self.peer_highest = stream;
                if self.streams.len() >= self.config.max_streams {
                    self.counters.refused_streams += 1;
                    self.send_reset(stream);
                } else {
                    self.streams.insert(stream, Stream::new(proto, false));
                    self.accepted.push_back((stream, proto));
                }
            }
            Repr::Data { stream, bytes } => {
                let Some(s) = self.streams.get_mut(&stream).filter(|s| !s.reset) else {
                    self.counters.unknown_stream += 1;
                    return Ok(());
                };
                if s.fin_received {
                    self.counters.stream_errors += 1;
                    self.stream_error(stream);
                } else if bytes.len() > s.recv_window as usize {
                    self.counters.credit_violations += 1;
                    self.stream_error(stream);
                } else {
                    s.recv_window -= bytes.len() as u32;
                    s.recv_buf.push(bytes);
                }
            }
            Repr::Window { stream, credit } => {
                let Some(s) = self.streams.get_mut(&stream).filter(|s| !s.reset) else {
                    self.counters.unknown_stream += 1;
                    return Ok(());
                };
                match s.send_credit.checked_add(credit) {
                    Some(c) => s.send_credit = c,
                    None => {
                        self.counters.stream_errors += 1;
                        self.stream_error(stream);
                    }
                }
            }
            Repr::Close { stream } => match self.streams.get_mut(&stream) {
                Some(s) if !s.reset => s.fin_received = true,
                _ => self.counters.unknown_stream += 1,
            },
            Repr::Reset { stream } => match self.streams.get_mut(&stream) {
                Some(s) if !s.reset => {
                    self.counters.resets_received += 1;
                    // Kept, empty, until the application hears of it.
                    s.reset = true;
                    s.send_buf.free();
                    s.recv_buf.free();
                }
                _ => self.counters.unknown_stream += 1,
            },
            _ => return Err(MuxError::NotAStreamFrame),
        }
        Ok(())
    }
    // ANCHOR_END: handle

    // ANCHOR: poll_transmit
    /// Appends the next frame to send to `out`; `false` when there is
    /// nothing to send. Session frames first, then resets, opens and
    /// credit, then one frame of data (or a Close) from the next stream in
    /// turn.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        if let Some(frame) = self.control.pop_front() {
            out.extend_from_slice(&frame);
            return true;
        }
        if let Some(stream) = self.resets.pop_front() {
            return emit(&Repr::Reset { stream }, out);
        }
        for (&stream, s) in self.streams.iter_mut() {
            if s.reset {
                continue;
            }
            if s.open_pending {
                s.open_pending = false;
                return emit(
                    &Repr::Open {
                        stream,
                        proto: s.proto,
                    },
                    out,
                );
            }
            // Grant credit back once enough was read, but not after the
            // peer's Close: it will send nothing more.
            if s.unreported >= WINDOW_UPDATE_THRESHOLD && !s.fin_received {
                let credit = std::mem::take(&mut s.unreported);
                s.recv_window += credit;
                return emit(&Repr::Window { stream, credit }, out);
            }
        }
        let after = self.streams.range(self.cursor.saturating_add(1)..);
        let order: Vec<u32> = after
            .chain(self.streams.range(..=self.cursor))
            .filter(|(_, s)| {
                !s.reset
                    && ((!s.send_buf.is_empty() && s.send_credit > 0)
                        || (s.fin_queued && !s.fin_sent && s.send_buf.is_empty()))
            })
            .map(|(&id, _)| id)
            .take(1)
            .collect();
        let Some(&stream) = order.first() else {
            return false;
        };
        self.cursor = stream;
        let Some(s) = self.streams.get_mut(&stream) else {
            return false;
        };
        if s.send_buf.is_empty() {
            s.fin_sent = true;
            if s.finished() {
                self.streams.remove(&stream);
            }
            return emit(&Repr::Close { stream }, out);
        }
        let n = s.send_buf.len().min(MAX_DATA).min(s.send_credit as usize);
        s.send_credit -= n as u32;
        let bytes = &s.send_buf.as_slice()[..n];
        let sent = emit(&Repr::Data { stream, bytes }, out);
        s.send_buf.consume(n);
        sent
    }
    // ANCHOR_END: poll_transmit
}

/// Emits a frame the mux built itself, so always a valid one.
fn emit(repr: &Repr<'_>, out: &mut Vec<u8>) -> bool {
    repr.emit(out).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Moves every frame `from` has to send into `to`; returns how many.
    fn pump_one_way(from: &mut Mux, to: &mut Mux) -> usize {
        let mut n = 0;
        let mut buf = Vec::new();
        while from.poll_transmit(&mut buf) {
            let repr = Repr::parse_bytes(&buf).expect("the mux emits valid frames");
            to.handle(&repr)
                .expect("a correct peer never ends the connection");
            buf.clear();
            n += 1;
        }
        n
    }

    fn pump(a: &mut Mux, b: &mut Mux) -> usize {
        pump_one_way(a, b) + pump_one_way(b, a)
    }

    fn pair() -> (Mux, Mux) {
        (
            Mux::new(Side::Server, Config::default()),
            Mux::new(Side::Client, Config::default()),
        )
    }

    /// `len` bytes that differ between streams and never repeat within
    /// a frame (the block is a prime number of bytes long).
    fn pattern(stream: usize, len: usize) -> Vec<u8> {
        let block: Vec<u8> = (0..4099).map(|i| (i * 31 + stream * 7 + i / 251) as u8).collect();
        let mut out = Vec::with_capacity(len + block.len());
        while out.len() < len {
            out.extend_from_slice(&block);
        }
        out.truncate(len);
        out
    }

    #[test]
    fn fifty_streams_one_never_read_the_others_complete() {
        const STREAMS: usize = 50;
        const LEN: usize = 1 << 20;
        const STUCK: usize = 17;
        let (mut server, mut client) = pair();
        let ids: Vec<u32> = (0..STREAMS).map(|_| server.open(Proto::Tcp).unwrap()).collect();
        let payloads: Vec<Vec<u8>> = (0..STREAMS).map(|i| pattern(i, LEN)).collect();
        let mut written = vec![0usize; STREAMS];
        let mut received: Vec<Vec<u8>> = vec![Vec::new(); STREAMS];
        let mut buf = vec![0u8; 8192];
        let mut done = 0;
        for round in 0.. {
            assert!(round < 20_000, "no progress after {round} rounds");
            for (i, &id) in ids.iter().enumerate() {
                if written[i] < LEN {
                    match server.write(id, &payloads[i][written[i]..]) {
                        Ok(n) => written[i] += n,
                        Err(StreamError::WouldBlock) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                    if written[i] == LEN {
                        server.close(id);
                    }
                }
            }
            pump(&mut server, &mut client);
            while let Some((id, _)) = client.accept() {
                assert_eq!(id % 2, 0, "server streams are even");
            }
            for (i, &id) in ids.iter().enumerate() {
                if i == STUCK {
                    continue;
                }
                loop {
                    match client.read(id, &mut buf) {
                        Ok(0) => {
                            done += 1;
                            client.close(id);
                            break;
                        }
                        Ok(n) => received[i].extend_from_slice(&buf[..n]),
                        Err(StreamError::WouldBlock | StreamError::Closed) => break,
                        Err(e) => panic!("{e:?}"),
                    }
                }
                // The receiver never holds more than one window.
                if let Some((_, recv)) = client.buffered(id) {
                    assert!(recv <= INITIAL_WINDOW as usize);
                }
            }
            pump(&mut server, &mut client);
            if done == STREAMS - 1 {
                break;
            }
        }
        for i in (0..STREAMS).filter(|&i| i != STUCK) {
            assert!(received[i] == payloads[i], "stream {i} differs");
        }
        // The unread stream holds exactly one window at the receiver, and
        // its sender, out of credit, took no more from its application.
        let stuck = ids[STUCK];
        assert_eq!(client.buffered(stuck), Some((0, INITIAL_WINDOW as usize)));
        assert_eq!(server.buffered(stuck), Some((0, 0)));
        assert_eq!(written[STUCK], INITIAL_WINDOW as usize);
        assert_eq!(server.counters, Counters::default());
        assert_eq!(client.counters, Counters::default());
        // The server sees each client's Close as the end of the stream, and
        // then all finished streams are forgotten on both sides.
        for i in (0..STREAMS).filter(|&i| i != STUCK) {
            assert_eq!(server.read(ids[i], &mut buf), Ok(0));
        }
        assert_eq!((server.stream_count(), client.stream_count()), (1, 1));
    }

    #[test]
    fn half_close_lets_the_other_way_go_on() {
        let (mut server, mut client) = pair();
        let id = client.open(Proto::Tcp).unwrap();
        assert_eq!(id, 1);
        client.write(id, b"request").unwrap();
        client.close(id);
        assert_eq!(client.write(id, b"more"), Err(StreamError::Closed));
        pump(&mut client, &mut server);
        assert_eq!(server.accept(), Some((id, Proto::Tcp)));
        let mut buf = [0u8; 64];
        assert_eq!(server.read(id, &mut buf), Ok(7));
        assert_eq!(&buf[..7], b"request");
        assert_eq!(server.read(id, &mut buf), Ok(0), "client's FIN");
        server.write(id, b"response").unwrap();
        pump(&mut server, &mut client);
        assert_eq!(client.read(id, &mut buf), Ok(8));
        assert_eq!(client.read(id, &mut buf), Err(StreamError::WouldBlock));
        server.close(id);
        pump(&mut server, &mut client);
        assert_eq!(client.read(id, &mut buf), Ok(0));
        assert_eq!((server.stream_count(), client.stream_count()), (0, 0));
        assert_eq!(client.read(id, &mut buf), Err(StreamError::Closed));
    }

    #[test]
    fn reset_ends_both_ways_and_late_frames_are_only_counted() {
        let (mut server, mut client) = pair();
        let id = server.open(Proto::Tcp).unwrap();
        server.write(id, &[1; 100]).unwrap();
        pump(&mut server, &mut client);
        assert_eq!(client.accept(), Some((id, Proto::Tcp)));
        // The server writes more while the client's reset is on its way.
        server.write(id, &[2; 100]).unwrap();
        client.reset(id);
        let mut data = Vec::new();
        assert!(server.poll_transmit(&mut data));
        pump_one_way(&mut client, &mut server);
        client.handle(&Repr::parse_bytes(&data).unwrap()).unwrap();
        assert_eq!(client.counters.unknown_stream, 1);
        assert_eq!(server.write(id, b"x"), Err(StreamError::Reset));
        assert_eq!(server.write(id, b"x"), Err(StreamError::Closed));
        assert_eq!(server.counters.resets_received, 1);
        assert_eq!(client.counters.resets_sent, 1);
        assert_eq!((server.stream_count(), client.stream_count()), (0, 0));
    }

    #[test]
    fn a_peer_that_ignores_credit_gets_its_stream_reset() {
        let mut server = Mux::new(Side::Server, Config::default());
        let mut frame = |repr: Repr<'_>| server.handle(&repr);
        frame(Repr::Open {
            stream: 1,
            proto: Proto::Tcp,
        })
        .unwrap();
        frame(Repr::Open {
            stream: 3,
            proto: Proto::Tcp,
        })
        .unwrap();
        let chunk = [0u8; MAX_DATA];
        for _ in 0..INITIAL_WINDOW as usize / MAX_DATA {
            frame(Repr::Data {
                stream: 1,
                bytes: &chunk,
            })
            .unwrap();
        }
        assert_eq!(server.counters.credit_violations, 0);
        assert_eq!(server.buffered(1), Some((0, INITIAL_WINDOW as usize)));
        // One byte more than granted.
        server
            .handle(&Repr::Data {
                stream: 1,
                bytes: b"!",
            })
            .unwrap();
        assert_eq!(server.counters.credit_violations, 1);
        assert_eq!(server.buffered(1), None, "its buffers are freed");
        let mut out = Vec::new();
        assert!(server.poll_transmit(&mut out));
        assert_eq!(Repr::parse_bytes(&out), Ok(Repr::Reset { stream: 1 }));
        // The other stream is unaffected.
        server
            .handle(&Repr::Data {
                stream: 3,
                bytes: b"fine",
            })
            .unwrap();
        assert_eq!(server.buffered(3), Some((0, 4)));
    }

    #[test]
    fn credit_comes_back_only_as_the_application_reads() {
        let (mut server, mut client) = pair();
        let id = server.open(Proto::Tcp).unwrap();
        let big = vec![9u8; 2 * INITIAL_WINDOW as usize];
        let n = server.write(id, &big).unwrap();
        assert_eq!(n, INITIAL_WINDOW as usize);
        pump(&mut server, &mut client);
        assert_eq!(server.write(id, &big), Err(StreamError::WouldBlock));
        let mut buf = vec![0u8; WINDOW_UPDATE_THRESHOLD as usize - 1];
        client.read(id, &mut buf).unwrap();
        pump(&mut server, &mut client);
        assert_eq!(
            server.write(id, &big),
            Err(StreamError::WouldBlock),
            "below threshold"
        );
        client.read(id, &mut [0u8; 1]).unwrap();
        pump(&mut server, &mut client);
        assert_eq!(server.write(id, &big), Ok(WINDOW_UPDATE_THRESHOLD as usize));
    }

    #[test]
    fn bad_open_ids_end_the_connection_and_extra_streams_are_refused() {
        let mut server = Mux::new(Side::Server, Config { max_streams: 2 });
        assert_eq!(
            server.handle(&Repr::Open {
                stream: 2,
                proto: Proto::Tcp
            }),
            Err(MuxError::BadStreamId),
            "even ids are the server's"
        );
        server
            .handle(&Repr::Open {
                stream: 5,
                proto: Proto::Tcp,
            })
            .unwrap();
        assert_eq!(
            server.handle(&Repr::Open {
                stream: 3,
                proto: Proto::Tcp
            }),
            Err(MuxError::BadStreamId),
            "ids only go up"
        );
        server
            .handle(&Repr::Open {
                stream: 7,
                proto: Proto::Tcp,
            })
            .unwrap();
        server
            .handle(&Repr::Open {
                stream: 9,
                proto: Proto::Tcp,
            })
            .unwrap();
        assert_eq!(server.counters.refused_streams, 1);
        assert_eq!(server.stream_count(), 2);
        assert_eq!(server.open(Proto::Tcp), Err(MuxError::TooManyStreams));
        assert_eq!(
            server.handle(&Repr::Ping { opaque: 1 }),
            Err(MuxError::NotAStreamFrame)
        );
    }

    #[test]
    fn data_after_close_is_a_stream_error() {
        let mut server = Mux::new(Side::Server, Config::default());
        server
            .handle(&Repr::Open {
                stream: 1,
                proto: Proto::Tcp,
            })
            .unwrap();
        server.handle(&Repr::Close { stream: 1 }).unwrap();
        server
            .handle(&Repr::Data {
                stream: 1,
                bytes: b"late",
            })
            .unwrap();
        assert_eq!(server.counters.stream_errors, 1);
        assert_eq!(server.stream_count(), 0);
    }

    #[test]
    fn a_udp_flow_is_opened_as_one_and_writes_whole_datagrams_or_none() {
        let (mut server, mut client) = pair();
        let id = server.open(Proto::Udp).unwrap();
        assert_eq!(server.send_capacity(id), Some(INITIAL_WINDOW as usize));
        pump(&mut server, &mut client);
        assert_eq!(client.accept(), Some((id, Proto::Udp)));
        // Fill the window but 10 bytes: an 11-byte datagram does not fit.
        let fill = vec![0u8; INITIAL_WINDOW as usize - 10];
        assert_eq!(server.write(id, &fill), Ok(fill.len()));
        assert_eq!(server.send_capacity(id), Some(10));
        pump(&mut server, &mut client);
        assert_eq!(
            server.send_capacity(id),
            Some(10),
            "sent, but not yet granted back"
        );
        let mut buf = vec![0u8; fill.len()];
        assert_eq!(client.read(id, &mut buf), Ok(fill.len()));
        pump(&mut server, &mut client);
        assert_eq!(server.send_capacity(id), Some(INITIAL_WINDOW as usize));
        server.close(id);
        assert_eq!(server.send_capacity(id), None, "closed our way");
        client.reset(id);
        assert_eq!(client.send_capacity(id), None);
        assert_eq!(client.send_capacity(99), None);
    }

    #[test]
    fn streams_take_turns() {
        let (mut server, mut client) = pair();
        let a = server.open(Proto::Tcp).unwrap();
        let b = server.open(Proto::Tcp).unwrap();
        server.write(a, &[0; 3 * MAX_DATA]).unwrap();
        server.write(b, &[0; 3 * MAX_DATA]).unwrap();
        let mut order = Vec::new();
        let mut buf = Vec::new();
        while server.poll_transmit(&mut buf) {
            if let Ok(Repr::Data { stream, .. }) = Repr::parse_bytes(&buf) {
                order.push(stream);
            }
            client.handle(&Repr::parse_bytes(&buf).unwrap()).unwrap();
            buf.clear();
        }
        assert_eq!(order, [a, b, a, b, a, b]);
    }

    proptest! {
        /// Whatever stream frames a peer sends, nothing panics, no stream
        /// buffers more than a window, and the streams stay bounded.
        #[test]
        fn arbitrary_frames_keep_memory_bounded(
            frames in proptest::collection::vec((0u8..6, 1u32..12, 1usize..MAX_DATA, 1u32..u32::MAX), 0..200)
        ) {
            let mut mux = Mux::new(Side::Server, Config { max_streams: 4 });
            let data = vec![0u8; MAX_DATA];
            for (kind, stream, len, credit) in frames {
                let repr = match kind {
                    0 => Repr::Open { stream, proto: if credit % 2 == 0 { Proto::Tcp } else { Proto::Udp } },
                    1 | 2 => Repr::Data { stream, bytes: &data[..len] },
                    3 => Repr::Window { stream, credit },
                    4 => Repr::Close { stream },
                    _ => Repr::Reset { stream },
                };
                if mux.handle(&repr).is_err() {
                    break;
                }
                prop_assert!(mux.stream_count() <= 4);
                for id in 1..12 {
                    if let Some((_, recv)) = mux.buffered(id) {
                        prop_assert!(recv <= INITIAL_WINDOW as usize);
                    }
                }
                let mut out = Vec::new();
                while mux.poll_transmit(&mut out) {}
            }
        }
    }
}
