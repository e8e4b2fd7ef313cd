//! The control connection, authenticated and encrypted with step 04's
//! keys and handshake.
//!
//! Over TCP everything is a record: a 2-byte length (big-endian), then
//! that many bytes.
//!
//! ```text
//! client                                                       server
//!   [132] step 04 initiation (client's static key, sealed)  ->
//!                                                              mac1 ok? key listed?
//!   <-  [76] step 04 response
//!   [n + 16] seal(frame 0) with counter 0, the length as AAD ->
//!   <-  [n + 16] seal(frame 0) with counter 0
//!   ...
//! ```
//!
//! # Why the counter is implicit and there is no replay window
//!
//! Step 04 runs over UDP, where datagrams get lost, duplicated and
//! reordered, so each data message carries its counter and the receiver
//! keeps a window of the counters it has seen. TCP already delivers every
//! byte once and in order, so the n-th record a side receives is the n-th
//! its peer sealed: the receiver *knows* the counter and need not be told
//! (TLS 1.3 does the same, RFC 8446 section 5.3). Anything an attacker
//! does to the stream (drop, repeat, reorder or cut records) makes the
//! expected counter differ from the one used to seal, the tag fails, and
//! the connection ends. On TCP that is the only safe answer anyway: a
//! byte stream with a hole in it cannot be resumed.
//!
//! The handshake's sender and receiver indices name a session among many
//! on one UDP socket; here the TCP connection itself is the session, so
//! they are unused. A replayed initiation gets a response but its sender
//! cannot read it (that needs the client's ephemeral secret): the server
//! therefore acts on a client only when its first sealed frame opens,
//! which proves it holds the keys.
//!
//! Memory for an unauthenticated peer is bounded: before the handshake a
//! record must have exactly the handshake message's length, so a server
//! keeps at most that one message (plus what a single read brought: 512
//! bytes in the shell), and garbage (an HTTP request, a port scanner's
//! probe) fails on its first two bytes.

use std::fmt;
use std::sync::Arc;

use step04_crypto::crypto::{self, TAG_LEN};
use step04_crypto::noise::{self, HandshakeError, Identity, SessionKeys};
use step04_crypto::wire::{INITIATION_LEN, InitiationPacket, RESPONSE_LEN, ResponsePacket};
use step04_crypto::{PublicKey, StaticSecret};

use crate::wire::{HEADER_LEN, MAX_FRAME, Repr};

/// Bytes of a record's length.
pub const LENGTH_LEN: usize = 2;
/// The longest record: the longest frame and its tag.
pub const MAX_RECORD: usize = MAX_FRAME + TAG_LEN;
/// The most unprocessed input a channel holds: the shell must call
/// [`SecureChannel::poll`] until it returns `None` before pushing more.
pub const INPUT_LIMIT: usize = 2 * (LENGTH_LEN + MAX_RECORD);

/// Why the channel failed. Every error ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A record whose length does not fit where it came: not a handshake
    /// message before the handshake, too short or too long after it.
    UnexpectedRecord,
    /// The initiation's mac1 is wrong: sent to another public key (the
    /// client has the wrong server key) or damaged.
    BadMac,
    /// The handshake did not open: forged, damaged or other keys.
    Handshake,
    /// The client's public key is not in the server's list.
    UnknownPeer,
    /// A sealed record did not open: changed, cut, replayed or reordered.
    BadRecord,
    /// A frame to seal before the handshake finished.
    NotEstablished,
    /// More input pushed than [`INPUT_LIMIT`].
    Overflow,
    /// A frame to seal longer than [`MAX_FRAME`].
    TooLong,
    /// 2^64 records sealed with one key (never in practice).
    Exhausted,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::UnexpectedRecord => "unexpected record (not our protocol?)",
            Error::BadMac => "handshake not for our key (wrong --server-key?)",
            Error::Handshake => "handshake failed (wrong keys?)",
            Error::UnknownPeer => "client key not accepted (not listed with --peer)",
            Error::BadRecord => "record failed authentication",
            Error::NotEstablished => "handshake not finished",
            Error::Overflow => "input buffer full",
            Error::TooLong => "frame too long",
            Error::Exhausted => "counter exhausted",
        })
    }
}

impl std::error::Error for Error {}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::BadMac => Error::BadMac,
            HandshakeError::Failed => Error::Handshake,
        }
    }
}

/// A server's key and the client keys it accepts, shared by its
/// connections.
pub struct ServerKeys {
    pub identity: Identity,
    pub allowed: Vec<PublicKey>,
}

enum State {
    /// Server: waiting for the initiation.
    AwaitInitiation {
        keys: Arc<ServerKeys>,
        ephemeral: StaticSecret,
    },
    /// Client: initiation sent, waiting for the response.
    AwaitResponse {
        identity: Arc<Identity>,
        server: PublicKey,
        initiator: noise::Initiator,
    },
    Open {
        keys: SessionKeys,
        send: u64,
        receive: u64,
    },
}

/// What [`SecureChannel::poll`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The handshake finished: frames may be sealed now. `peer` is the
    /// other end's static public key.
    Established { peer: [u8; 32] },
    /// One frame, opened (not yet parsed: see [`Repr::parse_bytes`]).
    Frame(&'a [u8]),
}

// ANCHOR: channel
/// One end of a secure control connection: bytes from TCP go in through
/// [`push`](Self::push) and come out of [`poll`](Self::poll) as frames;
/// frames go in through [`seal`](Self::seal) and come out as bytes for
/// TCP. No I/O, no clock.
pub struct SecureChannel {
    state: State,
    input: Vec<u8>,
    /// Bytes at the front of `input` that the last `poll` handed out.
    consumed: usize,
    failed: Option<Error>,
}
// ANCHOR_END: channel

impl fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::AwaitInitiation { .. } => "await-initiation",
            State::AwaitResponse { .. } => "await-response",
            State::Open { .. } => "open",
        };
        f.debug_struct("SecureChannel")
            .field("state", &state)
            .field("buffered", &self.input.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl SecureChannel {
    /// A client's end: appends the initiation record to `out`.
    /// `timestamp` is step 04's TAI64N of the current time. Fails only for
    /// a server key of low order, which no real key is.
    pub fn client(
        identity: Arc<Identity>,
        server: PublicKey,
        ephemeral: StaticSecret,
        timestamp: [u8; noise::TIMESTAMP_LEN],
        out: &mut Vec<u8>,
    ) -> Result<Self, Error> {
        let start = out.len();
        out.extend_from_slice(&(INITIATION_LEN as u16).to_be_bytes());
        out.resize(start + LENGTH_LEN + INITIATION_LEN, 0);
        let initiator = noise::initiate(
            &identity,
            &server,
            ephemeral,
            0,
            timestamp,
            &mut out[start + LENGTH_LEN..],
        )
        .inspect_err(|_| out.truncate(start))?;
        Ok(Self {
            state: State::AwaitResponse {
                identity,
                server,
                initiator,
            },
            input: Vec::new(),
            consumed: 0,
            failed: None,
        })
    }

    /// A server's end for one accepted connection.
    pub fn server(keys: Arc<ServerKeys>, ephemeral: StaticSecret) -> Self {
        Self {
            state: State::AwaitInitiation { keys, ephemeral },
            input: Vec::new(),
            consumed: 0,
            failed: None,
        }
    }

    /// Whether frames can be sealed.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Open { .. }) && self.failed.is_none()
    }

    // ANCHOR: mirror
    /// A channel that opens what this one seals, from the first record:
    /// the same session keys with the directions swapped. For decrypting
    /// a recording of a session with this end's keys (a client replayed
    /// from its key log reads both directions this way); `None` before
    /// the handshake or once a record was sealed.
    pub fn mirror(&self) -> Option<SecureChannel> {
        let State::Open { keys, send: 0, .. } = &self.state else {
            return None;
        };
        let mut keys = keys.clone();
        std::mem::swap(&mut keys.send, &mut keys.receive);
        Some(Self {
            state: State::Open {
                keys,
                send: 0,
                receive: 0,
            },
            input: Vec::new(),
            consumed: 0,
            failed: None,
        })
    }
    // ANCHOR_END: mirror

    /// Whether part of a record is buffered: at the end of the stream, a
    /// record cut short.
    pub fn has_partial(&self) -> bool {
        self.input.len() > self.consumed
    }

    /// Bytes received from TCP. Fails if more than [`INPUT_LIMIT`] would be
    /// buffered.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.fail_again()?;
        self.input.drain(..self.consumed);
        self.consumed = 0;
        if self.input.len() + bytes.len() > INPUT_LIMIT {
            return self.fail(Error::Overflow);
        }
        self.input.extend_from_slice(bytes);
        Ok(())
    }

    fn fail_again(&self) -> Result<(), Error> {
        self.failed.map_or(Ok(()), Err)
    }

    fn fail<T>(&mut self, e: Error) -> Result<T, Error> {
        self.failed = Some(e);
        self.input = Vec::new();
        self.consumed = 0;
        Err(e)
    }

    // ANCHOR: poll
    /// The next record's event, if a whole record is buffered. Bytes to
    /// send (the server's handshake response) are appended to `out`.
    pub fn poll(&mut self, out: &mut Vec<u8>) -> Result<Option<Event<'_>>, Error> {
        self.fail_again()?;
        self.input.drain(..self.consumed);
        self.consumed = 0;
        let Some(&[a, b]) = self.input.get(..LENGTH_LEN) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([a, b]));
        // Check the length before waiting for the bytes it announces.
        let fits = match self.state {
            State::AwaitInitiation { .. } => len == INITIATION_LEN,
            State::AwaitResponse { .. } => len == RESPONSE_LEN,
            State::Open { .. } => (HEADER_LEN + TAG_LEN..=MAX_RECORD).contains(&len),
        };
        if !fits {
            return self.fail(Error::UnexpectedRecord);
        }
        if self.input.len() < LENGTH_LEN + len {
            return Ok(None);
        }
        self.consumed = LENGTH_LEN + len;
        let record = LENGTH_LEN..LENGTH_LEN + len;
        match &mut self.state {
            State::AwaitInitiation { keys, ephemeral } => {
                let msg =
                    InitiationPacket::new_checked(&self.input[record]).map_err(|_| Error::UnexpectedRecord);
                let result = msg.and_then(|msg| {
                    if !noise::initiation_mac1_ok(&keys.identity, &msg) {
                        return Err(Error::BadMac);
                    }
                    let incoming = noise::consume_initiation(&keys.identity, &msg)?;
                    if !keys.allowed.contains(&incoming.remote) {
                        return Err(Error::UnknownPeer);
                    }
                    let start = out.len();
                    out.extend_from_slice(&(RESPONSE_LEN as u16).to_be_bytes());
                    out.resize(start + LENGTH_LEN + RESPONSE_LEN, 0);
                    let ephemeral = std::mem::replace(ephemeral, StaticSecret::from([0; 32]));
                    let keys = noise::respond(&incoming, ephemeral, 0, &mut out[start + 2..]);
                    keys.map(|k| (k, incoming.remote)).map_err(|e| {
                        out.truncate(start);
                        e.into()
                    })
                });
                match result {
                    Ok((keys, peer)) => self.established(keys, peer),
                    Err(e) => self.fail(e),
                }
            }
            State::AwaitResponse {
                identity,
                server,
                initiator,
            } => {
                let msg =
                    ResponsePacket::new_checked(&self.input[record]).map_err(|_| Error::UnexpectedRecord);
                let result = msg.and_then(|msg| {
                    if !noise::response_mac1_ok(identity, &msg) {
                        return Err(Error::BadMac);
                    }
                    Ok(noise::consume_response(identity, initiator, &msg)?)
                });
                let server = *server;
                match result {
                    Ok(keys) => self.established(keys, server),
                    Err(e) => self.fail(e),
                }
            }
            State::Open { keys, receive, .. } => {
                let aad = [a, b];
                let (sealed, tag) = self.input[record].split_at_mut(len - TAG_LEN);
                let mut t = [0u8; TAG_LEN];
                t.copy_from_slice(tag);
                if crypto::open(&keys.receive, *receive, &aad, sealed, &t).is_err() {
                    return self.fail(Error::BadRecord);
                }
                *receive += 1;
                Ok(Some(Event::Frame(
                    &self.input[LENGTH_LEN..LENGTH_LEN + len - TAG_LEN],
                )))
            }
        }
    }
    // ANCHOR_END: poll

    fn established(&mut self, keys: SessionKeys, peer: PublicKey) -> Result<Option<Event<'_>>, Error> {
        self.state = State::Open {
            keys,
            send: 0,
            receive: 0,
        };
        Ok(Some(Event::Established {
            peer: *peer.as_bytes(),
        }))
    }

    // ANCHOR: seal
    /// Appends `frame`, sealed, as one record to `out`.
    pub fn seal(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(frame);
        self.seal_in_place(out, start)
    }

    /// Appends `repr`, emitted and sealed, as one record to `out`, with no
    /// copy in between.
    pub fn seal_repr(&mut self, repr: &Repr<'_>, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        out.extend_from_slice(&[0, 0]);
        if repr.emit(out).is_err() {
            out.truncate(start);
            return Err(Error::TooLong);
        }
        self.seal_in_place(out, start)
    }

    /// Seals `out[start + 2..]` in place and fills in the length before it.
    fn seal_in_place(&mut self, out: &mut Vec<u8>, start: usize) -> Result<(), Error> {
        let frame_len = out.len() - start - LENGTH_LEN;
        let checked = match (&mut self.state, self.failed) {
            (_, Some(e)) => Err(e),
            (State::Open { .. }, None) if frame_len > MAX_FRAME => Err(Error::TooLong),
            (State::Open { send: u64::MAX, .. }, None) => Err(Error::Exhausted),
            (State::Open { keys, send, .. }, None) => Ok((keys, send)),
            _ => Err(Error::NotEstablished),
        };
        let (keys, send) = match checked {
            Ok(k) => k,
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        };
        let aad = ((frame_len + TAG_LEN) as u16).to_be_bytes();
        out[start..start + LENGTH_LEN].copy_from_slice(&aad);
        let tag = crypto::seal(&keys.send, *send, &aad, &mut out[start + LENGTH_LEN..]);
        out.extend_from_slice(&tag);
        *send += 1;
        Ok(())
    }
    // ANCHOR_END: seal
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn identity(byte: u8) -> Identity {
        Identity::new(StaticSecret::from([byte; 32]))
    }

    struct Pair {
        client: SecureChannel,
        server: SecureChannel,
    }

    /// A client (key 1) and a server (key 2) that lists `allowed`, with the
    /// client aiming at `server_key`; returns the pair and the error, if
    /// any, each side's handshake step gave.
    fn connect(allowed: &[u8], server_key: u8) -> (Pair, Result<(), Error>) {
        let keys = Arc::new(ServerKeys {
            identity: identity(2),
            allowed: allowed
                .iter()
                .map(|&b| PublicKey::from(&StaticSecret::from([b; 32])))
                .collect(),
        });
        let mut to_server = Vec::new();
        let mut client = SecureChannel::client(
            Arc::new(identity(1)),
            *identity(server_key).public(),
            StaticSecret::from([3; 32]),
            noise::tai64n(Duration::from_secs(1)),
            &mut to_server,
        )
        .unwrap();
        let mut server = SecureChannel::server(keys, StaticSecret::from([4; 32]));
        let mut to_client = Vec::new();
        server.push(&to_server).unwrap();
        let result = match server.poll(&mut to_client) {
            Ok(Some(Event::Established { peer })) => {
                assert_eq!(peer, *identity(1).public().as_bytes());
                client.push(&to_client).unwrap();
                match client.poll(&mut Vec::new()) {
                    Ok(Some(Event::Established { peer })) => {
                        assert_eq!(peer, *identity(2).public().as_bytes());
                        Ok(())
                    }
                    Ok(other) => panic!("client: {other:?}"),
                    Err(e) => Err(e),
                }
            }
            Ok(other) => panic!("server: {other:?}"),
            Err(e) => Err(e),
        };
        (Pair { client, server }, result)
    }

    fn established() -> Pair {
        let (pair, result) = connect(&[1], 2);
        result.unwrap();
        pair
    }

    /// All frames `to` can open from `bytes`.
    fn frames(to: &mut SecureChannel, bytes: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        to.push(bytes)?;
        let mut got = Vec::new();
        while let Some(event) = to.poll(&mut Vec::new())? {
            match event {
                Event::Frame(f) => got.push(f.to_vec()),
                other => panic!("{other:?}"),
            }
        }
        Ok(got)
    }

    fn hello() -> Vec<u8> {
        let mut f = Vec::new();
        Repr::Hello { version: 1 }.emit(&mut f).unwrap();
        f
    }

    #[test]
    fn frames_cross_both_ways_after_the_handshake() {
        let mut p = established();
        let mut wire = Vec::new();
        p.client.seal(&hello(), &mut wire).unwrap();
        p.client.seal_repr(&Repr::Ping { opaque: 5 }, &mut wire).unwrap();
        assert_eq!(wire.len(), 2 * (LENGTH_LEN + TAG_LEN + HEADER_LEN) + 2 + 8);
        // The frame's bytes do not appear in the clear.
        assert!(!wire.windows(hello().len()).any(|w| w == hello()));
        let got = frames(&mut p.server, &wire).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(Repr::parse_bytes(&got[0]), Ok(Repr::Hello { version: 1 }));
        assert_eq!(Repr::parse_bytes(&got[1]), Ok(Repr::Ping { opaque: 5 }));
        let mut back = Vec::new();
        p.server.seal_repr(&Repr::Pong { opaque: 5 }, &mut back).unwrap();
        let got = frames(&mut p.client, &back).unwrap();
        assert_eq!(Repr::parse_bytes(&got[0]), Ok(Repr::Pong { opaque: 5 }));
    }

    #[test]
    fn records_split_anywhere_still_arrive() {
        let mut p = established();
        let mut wire = Vec::new();
        for i in 0..3u64 {
            p.client.seal_repr(&Repr::Ping { opaque: i }, &mut wire).unwrap();
        }
        let mut got = Vec::new();
        for byte in &wire {
            got.extend(frames(&mut p.server, std::slice::from_ref(byte)).unwrap());
        }
        assert_eq!(got.len(), 3);
        assert!(!p.server.has_partial());
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut wire = Vec::new();
        established().client.seal(&hello(), &mut wire).unwrap();
        for i in 0..wire.len() {
            for bit in [0x01, 0x80] {
                let mut p = established();
                let mut bad = Vec::new();
                p.client.seal(&hello(), &mut bad).unwrap();
                bad[i] ^= bit;
                let result = frames(&mut p.server, &bad);
                // A changed length either fails at once or waits for bytes
                // that never come (a cut record); nothing opens.
                assert!(
                    result.is_err() || (result == Ok(vec![]) && p.server.has_partial()),
                    "byte {i} bit {bit:#x}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn replayed_dropped_or_reordered_records_fail() {
        let mut p = established();
        let (mut r0, mut r1) = (Vec::new(), Vec::new());
        p.client.seal(&hello(), &mut r0).unwrap();
        p.client.seal(&hello(), &mut r1).unwrap();
        // Replay: the same record twice.
        let mut q = established();
        let mut again = Vec::new();
        q.client.seal(&hello(), &mut again).unwrap();
        assert_eq!(frames(&mut q.server, &again).unwrap().len(), 1);
        assert_eq!(frames(&mut q.server, &again), Err(Error::BadRecord));
        // Drop (or reorder): record 1 first.
        assert_eq!(frames(&mut p.server, &r1), Err(Error::BadRecord));
        // A failed channel stays failed.
        assert_eq!(frames(&mut p.server, &r0), Err(Error::BadRecord));
        assert_eq!(p.server.seal(&hello(), &mut Vec::new()), Err(Error::BadRecord));
    }

    #[test]
    fn a_truncated_record_waits_and_shows_as_partial() {
        let mut p = established();
        let mut wire = Vec::new();
        p.client.seal(&hello(), &mut wire).unwrap();
        assert_eq!(frames(&mut p.server, &wire[..wire.len() - 1]), Ok(vec![]));
        assert!(p.server.has_partial(), "at EOF this is a cut record");
    }

    #[test]
    fn a_client_aiming_at_another_key_fails_mac1() {
        let (_, result) = connect(&[1], 9);
        assert_eq!(result, Err(Error::BadMac));
    }

    #[test]
    fn an_unlisted_client_is_refused() {
        let (p, result) = connect(&[7, 8], 2);
        assert_eq!(result, Err(Error::UnknownPeer));
        assert!(!p.server.is_established());
    }

    #[test]
    fn an_impostor_server_cannot_finish_the_handshake() {
        // The impostor (key 9) lists the client and answers an initiation
        // the client made for it, but the client expects key 2.
        let keys = Arc::new(ServerKeys {
            identity: identity(9),
            allowed: vec![*identity(1).public()],
        });
        let mut init = Vec::new();
        let mut client = SecureChannel::client(
            Arc::new(identity(1)),
            *identity(2).public(),
            StaticSecret::from([3; 32]),
            [0; 12],
            &mut init,
        )
        .unwrap();
        let mut forged = Vec::new();
        let _ = SecureChannel::client(
            Arc::new(identity(1)),
            *identity(9).public(),
            StaticSecret::from([3; 32]),
            [0; 12],
            &mut forged,
        )
        .unwrap();
        let mut impostor = SecureChannel::server(keys, StaticSecret::from([4; 32]));
        impostor.push(&forged).unwrap();
        let mut resp = Vec::new();
        assert!(matches!(
            impostor.poll(&mut resp),
            Ok(Some(Event::Established { .. }))
        ));
        client.push(&resp).unwrap();
        assert_eq!(client.poll(&mut Vec::new()), Err(Error::Handshake));
    }

    #[test]
    fn garbage_fails_on_its_first_two_bytes() {
        let keys = Arc::new(ServerKeys {
            identity: identity(2),
            allowed: vec![],
        });
        let mut server = SecureChannel::server(keys, StaticSecret::from([4; 32]));
        server.push(b"GE").unwrap();
        assert_eq!(server.poll(&mut Vec::new()), Err(Error::UnexpectedRecord));
        assert_eq!(server.push(b"T / HTTP/1.1\r\n"), Err(Error::UnexpectedRecord));
    }

    #[test]
    fn oversized_input_and_frames_are_refused() {
        let mut p = established();
        // A record longer than any frame fails before its bytes arrive.
        assert_eq!(
            frames(&mut p.server, &((MAX_RECORD + 1) as u16).to_be_bytes()),
            Err(Error::UnexpectedRecord)
        );
        let mut p = established();
        assert_eq!(p.server.push(&vec![0; INPUT_LIMIT + 1]), Err(Error::Overflow));
        let mut p = established();
        let mut out = vec![7];
        assert_eq!(
            p.client.seal(&vec![0; MAX_FRAME + 1], &mut out),
            Err(Error::TooLong)
        );
        assert_eq!(out, [7], "nothing half-written");
    }

    proptest::proptest! {
        /// Whatever arrives, before or after the handshake, in whatever
        /// pieces, nothing panics and nothing opens.
        #[test]
        fn arbitrary_bytes_never_panic_or_open(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..8),
            established_first in proptest::prelude::any::<bool>(),
        ) {
            let mut ch = if established_first {
                established().server
            } else {
                SecureChannel::server(
                    Arc::new(ServerKeys { identity: identity(2), allowed: vec![*identity(1).public()] }),
                    StaticSecret::from([4; 32]),
                )
            };
            for chunk in chunks {
                if ch.push(&chunk).is_err() {
                    break;
                }
                let mut out = Vec::new();
                match ch.poll(&mut out) {
                    Ok(Some(event)) => proptest::prop_assert!(false, "{event:?}"),
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn a_mirror_opens_what_its_original_seals() {
        let mut p = established();
        let mut mirror = p.client.mirror().unwrap();
        let mut wire = Vec::new();
        p.client.seal(&hello(), &mut wire).unwrap();
        p.client.seal_repr(&Repr::Ping { opaque: 9 }, &mut wire).unwrap();
        let got = frames(&mut mirror, &wire).unwrap();
        assert_eq!(got, frames(&mut p.server, &wire).unwrap());
        assert_eq!(got.len(), 2);
        // Too late once sealing began; never before the handshake.
        assert!(p.client.mirror().is_none());
        let keys = Arc::new(ServerKeys {
            identity: identity(2),
            allowed: vec![],
        });
        assert!(
            SecureChannel::server(keys, StaticSecret::from([4; 32]))
                .mirror()
                .is_none()
        );
    }

    #[test]
    fn nothing_is_sealed_before_the_handshake() {
        let keys = Arc::new(ServerKeys {
            identity: identity(2),
            allowed: vec![],
        });
        let mut server = SecureChannel::server(keys, StaticSecret::from([4; 32]));
        let mut out = Vec::new();
        assert_eq!(server.seal(&hello(), &mut out), Err(Error::NotEstablished));
        assert!(out.is_empty());
    }
}
