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
//! they are unused.
//!
//! # A server's handshake, one cost at a time
//!
//! A recorded initiation is still a valid one: its mac1 is right and it
//! opens. So the server takes an initiation in three steps, and the
//! caller, who keeps what all connections have seen (see
//! [`crate::policy::Handshakes`]), may stop after each:
//!
//! 1. [`poll`](SecureChannel::poll) checks the mac1 (one hash) and gives
//!    [`Event::Initiation`] with the ephemeral key in the clear: one the
//!    server accepted before is a replay, refused before any
//!    Diffie-Hellman;
//! 2. [`identify`](SecureChannel::identify) opens it (two Diffie-Hellman
//!    operations): the client's key, checked against the list, and its
//!    TAI64N timestamp, which must be newer than the last one of that key;
//! 3. [`accept`](SecureChannel::accept) writes the response (two more).
//!
//! Even a replay that gets through (one the server never accepted, say,
//! recorded while it was down) gets a response its sender cannot read
//! (that needs the client's ephemeral secret): the server acts on a
//! client only once its first sealed frame opens, which proves it holds
//! the keys.
//!
//! Memory for an unauthenticated peer is bounded: records are cut from the
//! byte stream by step 02's [`FrameReader`], whose buffer of two of the
//! longest records (2 x (2 + [`MAX_RECORD`]) = 32,820 bytes) is allocated
//! once and never grows; before the handshake a record must have exactly
//! the handshake message's length, checked as soon as its two length
//! bytes arrive, so garbage (an HTTP request, a port scanner's probe)
//! fails on its first two bytes.

use std::fmt;
use std::sync::Arc;

use step04_crypto::crypto::{self, TAG_LEN};
use step04_crypto::noise::{self, HandshakeError, Identity, SessionKeys};
use step04_crypto::wire::{INITIATION_LEN, InitiationPacket, RESPONSE_LEN, ResponsePacket};
use step04_crypto::{PublicKey, StaticSecret};

use step02_plain_tunnel::framing::{FrameError, FrameReader};

use crate::wire::{HEADER_LEN, MAX_FRAME, Repr};

/// Bytes of a record's length.
pub const LENGTH_LEN: usize = 2;
/// The longest record: the longest frame and its tag.
pub const MAX_RECORD: usize = MAX_FRAME + TAG_LEN;
/// The most unprocessed input a channel holds, its record reader's buffer:
/// the shell must call [`SecureChannel::poll`] until it returns `None`
/// before pushing more.
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
    /// Server: an initiation for our key (its mac1 is right), not opened.
    Initiated {
        keys: Arc<ServerKeys>,
        ephemeral: StaticSecret,
        message: [u8; INITIATION_LEN],
    },
    /// Server: the initiation opened, from a listed key.
    Identified {
        ephemeral: StaticSecret,
        incoming: noise::Incoming,
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
    /// Server: an initiation for our key came; its ephemeral public key,
    /// in the clear. Next: [`SecureChannel::identify`], or drop the
    /// channel.
    Initiation { ephemeral: [u8; 32] },
    /// Client: the handshake finished: frames may be sealed now. `peer`
    /// is the server's static public key.
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
    /// Step 02's reader of 2-byte length-prefixed frames: the records.
    records: FrameReader,
    failed: Option<Error>,
}
// ANCHOR_END: channel

impl fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::AwaitInitiation { .. } => "await-initiation",
            State::Initiated { .. } => "initiated",
            State::Identified { .. } => "identified",
            State::AwaitResponse { .. } => "await-response",
            State::Open { .. } => "open",
        };
        f.debug_struct("SecureChannel")
            .field("state", &state)
            .field("buffered", &self.records.buffered())
            .field("failed", &self.failed)
            .finish()
    }
}

/// A reader of records: any length up to the longest, each checked by the
/// channel as soon as its prefix arrives.
fn record_reader() -> FrameReader {
    FrameReader::new(MAX_RECORD)
}

impl From<FrameError> for Error {
    fn from(_: FrameError) -> Self {
        Error::UnexpectedRecord
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
            records: record_reader(),
            failed: None,
        })
    }

    /// A server's end for one accepted connection.
    pub fn server(keys: Arc<ServerKeys>, ephemeral: StaticSecret) -> Self {
        Self {
            state: State::AwaitInitiation { keys, ephemeral },
            records: record_reader(),
            failed: None,
        }
    }

    /// Whether frames can be sealed.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Open { .. }) && self.failed.is_none()
    }

    // ANCHOR: mirror
    /// An [`Opener`] of what this end seals, from the first record: for
    /// decrypting a recording of a session with this end's keys (a client
    /// replayed from its key log reads both directions this way); `None`
    /// before the handshake or once a record was sealed.
    pub fn mirror(&self) -> Option<Opener> {
        let State::Open { keys, send: 0, .. } = &self.state else {
            return None;
        };
        Some(Opener::new(keys.send.clone()))
    }
    // ANCHOR_END: mirror

    /// Whether part of a record is buffered: at the end of the stream, a
    /// record cut short.
    pub fn has_partial(&self) -> bool {
        self.records.buffered() > 0
    }

    /// Bytes received from TCP. Fails if they do not fit in the reader's
    /// buffer ([`INPUT_LIMIT`]): the shell must take every event
    /// ([`poll`](Self::poll) until `None`) before it pushes more.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.fail_again()?;
        if self.records.push(bytes) < bytes.len() {
            return self.fail(Error::Overflow);
        }
        Ok(())
    }

    fn fail_again(&self) -> Result<(), Error> {
        self.failed.map_or(Ok(()), Err)
    }

    fn fail<T>(&mut self, e: Error) -> Result<T, Error> {
        self.failed = Some(e);
        Err(e)
    }

    // ANCHOR: poll
    /// The next record's event, if a whole record is buffered.
    pub fn poll(&mut self) -> Result<Option<Event<'_>>, Error> {
        self.fail_again()?;
        let Self {
            state,
            records,
            failed,
        } = self;
        // The length each state takes, judged as soon as the prefix
        // arrives, before waiting for the bytes it announces.
        let fits = |len: usize| match state {
            State::AwaitInitiation { .. } => len == INITIATION_LEN,
            State::AwaitResponse { .. } => len == RESPONSE_LEN,
            State::Open { .. } => (HEADER_LEN + TAG_LEN..=MAX_RECORD).contains(&len),
            State::Initiated { .. } | State::Identified { .. } => false,
        };
        // Nothing may come before our response: wait for the caller.
        if matches!(state, State::Initiated { .. } | State::Identified { .. }) {
            return Ok(None);
        }
        let check = |len| {
            if fits(len) {
                Ok(())
            } else {
                Err(Error::UnexpectedRecord)
            }
        };
        let record = match records.next_checked(check) {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(None),
            Err(e) => {
                *failed = Some(e);
                return Err(e);
            }
        };
        let outcome = match state {
            State::AwaitInitiation { keys, ephemeral } => {
                let ok = InitiationPacket::new_checked(&*record)
                    .map_err(|_| Error::UnexpectedRecord)
                    .and_then(|msg| {
                        if noise::initiation_mac1_ok(&keys.identity, &msg) {
                            Ok(msg.ephemeral())
                        } else {
                            Err(Error::BadMac)
                        }
                    });
                match ok {
                    Ok(ephemeral_key) => {
                        let mut message = [0u8; INITIATION_LEN];
                        message.copy_from_slice(record);
                        let keys = keys.clone();
                        let ephemeral = std::mem::replace(ephemeral, StaticSecret::from([0; 32]));
                        *state = State::Initiated {
                            keys,
                            ephemeral,
                            message,
                        };
                        Ok(Event::Initiation {
                            ephemeral: ephemeral_key,
                        })
                    }
                    Err(e) => Err(e),
                }
            }
            State::Initiated { .. } | State::Identified { .. } => Err(Error::NotEstablished),
            State::AwaitResponse {
                identity,
                server,
                initiator,
            } => {
                let msg = ResponsePacket::new_checked(&*record).map_err(|_| Error::UnexpectedRecord);
                let result = msg.and_then(|msg| {
                    if !noise::response_mac1_ok(identity, &msg) {
                        return Err(Error::BadMac);
                    }
                    Ok(noise::consume_response(identity, initiator, &msg)?)
                });
                let peer = *server.as_bytes();
                match result {
                    Ok(keys) => {
                        *state = State::Open {
                            keys,
                            send: 0,
                            receive: 0,
                        };
                        Ok(Event::Established { peer })
                    }
                    Err(e) => Err(e),
                }
            }
            State::Open { keys, receive, .. } => {
                // The length, as it came, is the associated data.
                let len = record.len();
                let aad = (len as u16).to_be_bytes();
                let (sealed, tag) = record.split_at_mut(len - TAG_LEN);
                let mut t = [0u8; TAG_LEN];
                t.copy_from_slice(tag);
                match crypto::open(&keys.receive, *receive, &aad, sealed, &t) {
                    Ok(()) => {
                        *receive += 1;
                        Ok(Event::Frame(&*sealed))
                    }
                    Err(_) => Err(Error::BadRecord),
                }
            }
        };
        outcome.map(Some).inspect_err(|e| *failed = Some(*e))
    }
    // ANCHOR_END: poll

    // ANCHOR: identify
    /// Server, after [`Event::Initiation`]: opens the initiation (two
    /// Diffie-Hellman operations) and returns the client's static key and
    /// the TAI64N timestamp it sent, for the caller to judge; fails for a
    /// key not in the list.
    pub fn identify(&mut self) -> Result<([u8; 32], [u8; noise::TIMESTAMP_LEN]), Error> {
        self.fail_again()?;
        let (keys, ephemeral, message) = match &mut self.state {
            State::Initiated {
                keys,
                ephemeral,
                message,
            } => (
                keys.clone(),
                std::mem::replace(ephemeral, StaticSecret::from([0; 32])),
                *message,
            ),
            _ => return Err(Error::NotEstablished),
        };
        let msg = InitiationPacket::new_checked(&message[..]).map_err(|_| Error::UnexpectedRecord);
        let opened = msg.and_then(|msg| Ok(noise::consume_initiation(&keys.identity, &msg)?));
        let incoming = match opened {
            Ok(incoming) if keys.allowed.contains(&incoming.remote) => incoming,
            Ok(_) => return self.fail(Error::UnknownPeer),
            Err(e) => return self.fail(e),
        };
        let found = (*incoming.remote.as_bytes(), incoming.timestamp);
        self.state = State::Identified { ephemeral, incoming };
        Ok(found)
    }

    /// Server, after [`identify`](Self::identify): appends the response
    /// record to `out` (two more Diffie-Hellman operations); frames may be
    /// sealed now. Returns the client's static key.
    pub fn accept(&mut self, out: &mut Vec<u8>) -> Result<[u8; 32], Error> {
        self.fail_again()?;
        let State::Identified { ephemeral, incoming } = &mut self.state else {
            return Err(Error::NotEstablished);
        };
        let start = out.len();
        out.extend_from_slice(&(RESPONSE_LEN as u16).to_be_bytes());
        out.resize(start + LENGTH_LEN + RESPONSE_LEN, 0);
        let ephemeral = std::mem::replace(ephemeral, StaticSecret::from([0; 32]));
        let peer = *incoming.remote.as_bytes();
        match noise::respond(incoming, ephemeral, 0, &mut out[start + LENGTH_LEN..]) {
            Ok(keys) => {
                self.state = State::Open {
                    keys,
                    send: 0,
                    receive: 0,
                };
                Ok(peer)
            }
            Err(e) => {
                out.truncate(start);
                self.fail(e.into())
            }
        }
    }
    // ANCHOR_END: identify

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

// ANCHOR: opener
/// Opens the records one end of a session sealed, from its first one, and
/// can seal nothing: it holds only that end's sending key. For reading a
/// recording (see [`SecureChannel::mirror`]); a channel that could also
/// seal under that key from counter 0 would reuse the nonces of the
/// records it reads, and with ChaCha20-Poly1305 a reused nonce gives away
/// the XOR of two plaintexts and lets tags be forged (RFC 8439 section 4).
pub struct Opener {
    /// Wiped when dropped ([`crypto::Secret`]).
    key: crypto::Secret,
    receive: u64,
    records: FrameReader,
    failed: Option<Error>,
}
// ANCHOR_END: opener

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("receive", &self.receive)
            .field("buffered", &self.records.buffered())
            .field("failed", &self.failed)
            .finish()
    }
}

impl Opener {
    fn new(key: crypto::Secret) -> Self {
        Self {
            key,
            receive: 0,
            records: record_reader(),
            failed: None,
        }
    }

    /// Bytes of the recorded stream, as [`SecureChannel::push`] takes them.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.records.push(bytes) < bytes.len() {
            self.failed = Some(Error::Overflow);
            return Err(Error::Overflow);
        }
        Ok(())
    }

    /// The next frame, opened, if a whole record is buffered.
    pub fn poll(&mut self) -> Result<Option<&[u8]>, Error> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let check = |len| {
            if (HEADER_LEN + TAG_LEN..=MAX_RECORD).contains(&len) {
                Ok(())
            } else {
                Err(Error::UnexpectedRecord)
            }
        };
        let opened = match self.records.next_checked(check) {
            Ok(None) => return Ok(None),
            Ok(Some(record)) => {
                let len = record.len();
                let aad = (len as u16).to_be_bytes();
                let (sealed, tag) = record.split_at_mut(len - TAG_LEN);
                let mut t = [0u8; TAG_LEN];
                t.copy_from_slice(tag);
                match crypto::open(&self.key, self.receive, &aad, sealed, &t) {
                    Ok(()) => Ok(&*sealed),
                    Err(_) => Err(Error::BadRecord),
                }
            }
            Err(e) => Err(e),
        };
        match opened {
            Ok(frame) => {
                self.receive += 1;
                Ok(Some(frame))
            }
            Err(e) => {
                self.failed = Some(e);
                Err(e)
            }
        }
    }

    /// Whether part of a record is buffered.
    pub fn has_partial(&self) -> bool {
        self.records.buffered() > 0
    }
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
        let result = match server_handshake(&mut server, &mut to_client) {
            Ok(peer) => {
                assert_eq!(peer, *identity(1).public().as_bytes());
                client.push(&to_client).unwrap();
                match client.poll() {
                    Ok(Some(Event::Established { peer })) => {
                        assert_eq!(peer, *identity(2).public().as_bytes());
                        Ok(())
                    }
                    Ok(other) => panic!("client: {other:?}"),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        (Pair { client, server }, result)
    }

    /// A server's three steps, with nothing refused by a policy.
    fn server_handshake(server: &mut SecureChannel, out: &mut Vec<u8>) -> Result<[u8; 32], Error> {
        match server.poll()? {
            Some(Event::Initiation { .. }) => {}
            other => panic!("server: {other:?}"),
        }
        server.identify()?;
        server.accept(out)
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
        while let Some(event) = to.poll()? {
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
        server_handshake(&mut impostor, &mut resp).unwrap();
        client.push(&resp).unwrap();
        assert_eq!(client.poll(), Err(Error::Handshake));
    }

    #[test]
    fn garbage_fails_on_its_first_two_bytes() {
        let keys = Arc::new(ServerKeys {
            identity: identity(2),
            allowed: vec![],
        });
        let mut server = SecureChannel::server(keys, StaticSecret::from([4; 32]));
        server.push(b"GE").unwrap();
        assert_eq!(server.poll(), Err(Error::UnexpectedRecord));
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
                match ch.poll() {
                    Ok(Some(event)) => proptest::prop_assert!(false, "{event:?}"),
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
        }
    }

    /// All frames `opener` opens from `bytes`.
    fn opened(opener: &mut Opener, bytes: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        opener.push(bytes)?;
        let mut got = Vec::new();
        while let Some(frame) = opener.poll()? {
            got.push(frame.to_vec());
        }
        Ok(got)
    }

    #[test]
    fn a_mirror_opens_what_its_original_seals() {
        let mut p = established();
        let mut mirror = p.client.mirror().unwrap();
        let mut wire = Vec::new();
        p.client.seal(&hello(), &mut wire).unwrap();
        p.client.seal_repr(&Repr::Ping { opaque: 9 }, &mut wire).unwrap();
        let got = opened(&mut mirror, &wire).unwrap();
        assert_eq!(got, frames(&mut p.server, &wire).unwrap());
        assert_eq!(got.len(), 2);
        // In order only, and a failed opener stays failed.
        let mut again = established();
        let mut m = again.client.mirror().unwrap();
        let (mut r0, mut r1) = (Vec::new(), Vec::new());
        again.client.seal(&hello(), &mut r0).unwrap();
        again.client.seal(&hello(), &mut r1).unwrap();
        assert_eq!(opened(&mut m, &r1), Err(Error::BadRecord));
        assert_eq!(opened(&mut m, &r0), Err(Error::BadRecord));
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
    fn the_server_sees_the_ephemeral_then_the_key_and_timestamp_then_answers() {
        let keys = Arc::new(ServerKeys {
            identity: identity(2),
            allowed: vec![*identity(1).public()],
        });
        let sent = noise::tai64n(Duration::new(1_700_000_000, 42));
        let mut init = Vec::new();
        SecureChannel::client(
            Arc::new(identity(1)),
            *identity(2).public(),
            StaticSecret::from([3; 32]),
            sent,
            &mut init,
        )
        .unwrap();
        let mut server = SecureChannel::server(keys, StaticSecret::from([4; 32]));
        assert_eq!(server.identify(), Err(Error::NotEstablished), "nothing yet");
        server.push(&init).unwrap();
        let mut out = Vec::new();
        let ephemeral = *PublicKey::from(&StaticSecret::from([3; 32])).as_bytes();
        assert_eq!(server.poll(), Ok(Some(Event::Initiation { ephemeral })));
        assert!(out.is_empty(), "no answer before the caller says so");
        assert_eq!(
            server.accept(&mut out),
            Err(Error::NotEstablished),
            "not identified"
        );
        assert_eq!(server.identify(), Ok((*identity(1).public().as_bytes(), sent)));
        assert!(!server.is_established());
        server.accept(&mut out).unwrap();
        assert_eq!(out.len(), LENGTH_LEN + RESPONSE_LEN);
        assert!(server.is_established());
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
