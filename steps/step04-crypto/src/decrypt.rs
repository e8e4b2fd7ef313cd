//! Reading a recorded session: with one end's static private key and the
//! ephemeral private keys it wrote to its key log (`--keylog`), the
//! session keys of a handshake seen on the wire can be worked out again,
//! and every data message of that session opened, in both directions.
//! This is what Wireshark does for WireGuard with a key log, and what
//! `tunlab decode --keylog` does for our captures.
//!
//! Why one end's secrets are enough: the session keys come from the four
//! Diffie-Hellman results of the handshake (see [`crate::noise`]), and
//! each end can compute all four from its own two private keys and the
//! other end's two public keys. The other end's ephemeral public key is
//! on the wire; its static public key is on the wire too, sealed, when the
//! initiator's is wanted (the responder opens it), and must be given when
//! the responder's is (the initiator was configured with it).
//!
//! Nothing is taken on trust: the logging end's handshake message is made
//! again from the logged keys and must equal the recorded one byte for
//! byte, and every data message must pass its tag.

use std::fmt;

use step02_plain_tunnel::tunnel::ip_packet_len;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::crypto::open;
use crate::noise::{self, HandshakeError, Identity, SessionKeys};
use crate::wire::{DataPacket, InitiationPacket, RESPONSE_LEN, ResponsePacket};

/// Which end of the handshake wrote the key log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It sent the initiation (step 04's client, step 06's `expose`).
    Initiator,
    /// It answered (step 04's server).
    Responder,
}

/// Which way a data message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToResponder,
    ToInitiator,
}

/// Why a handshake or a data message could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Not a well-formed initiation and its response.
    NotAHandshake,
    /// No key in the key log made either ephemeral key of this handshake:
    /// the key log of another run, or of the other end.
    NotLogged,
    /// The logging end initiated: its peer's static public key is needed.
    NeedPeerKey,
    /// The logged ephemeral key is this handshake's, but the static key
    /// (or the peer's public key) is not the one that made it.
    WrongKey,
    /// A data message of another session (its receiver index is neither
    /// end's index).
    OtherSession,
    /// Not a data message.
    NotData,
    /// The tag did not verify.
    BadTag,
    /// It opened, but to something that is not an IP packet.
    NotIp,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::NotAHandshake => "not an initiation and its response",
            Error::NotLogged => "the key log holds neither ephemeral key of this handshake",
            Error::NeedPeerKey => {
                "the key log's end sent the initiation: its peer's public key is needed too"
            }
            Error::WrongKey => "the key log matches, but the static key (or the peer's public key) does not",
            Error::OtherSession => "a data message of another session",
            Error::NotData => "not a data message",
            Error::BadTag => "the tag does not verify",
            Error::NotIp => "it opened to something that is not an IP packet",
        })
    }
}

impl std::error::Error for Error {}

impl From<HandshakeError> for Error {
    fn from(_: HandshakeError) -> Self {
        Error::WrongKey
    }
}

/// The keys of one recorded handshake, seen from the end that logged them.
#[derive(Debug)]
pub struct Session {
    pub role: Role,
    /// The TAI64N timestamp the initiation carried.
    pub timestamp: [u8; noise::TIMESTAMP_LEN],
    /// The logging end's view: `send` opens what it sent, `receive` what
    /// it received; the indices name the session in data messages.
    keys: SessionKeys,
}

/// A data message, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub direction: Direction,
    pub counter: u64,
    /// The inner IP packet's length in the output buffer, without the
    /// padding; 0 for a keepalive.
    pub len: usize,
}

impl Session {
    /// Works out the session keys of `initiation` and `response` (the
    /// bytes of the two UDP payloads, or of the two records without their
    /// length) from `local`, the static key of the end that wrote the key
    /// log, and `keylog`, the ephemeral private keys it logged (in any
    /// order: the one this handshake used is found by its public key).
    /// `peer` is the other end's static public key; needed only when the
    /// logging end initiated.
    pub fn derive(
        local: &Identity,
        keylog: &[[u8; 32]],
        peer: Option<&PublicKey>,
        initiation: &[u8],
        response: &[u8],
    ) -> Result<Self, Error> {
        let init = InitiationPacket::new_checked(initiation).map_err(|_| Error::NotAHandshake)?;
        let resp = ResponsePacket::new_checked(response).map_err(|_| Error::NotAHandshake)?;
        if resp.receiver() != init.sender() {
            return Err(Error::NotAHandshake);
        }
        let logged = |public: [u8; 32]| {
            keylog
                .iter()
                .map(|k| StaticSecret::from(*k))
                .find(|k| PublicKey::from(k).to_bytes() == public)
        };
        if let Some(ephemeral) = logged(resp.ephemeral()) {
            // The responder: open the initiation with our static key, and
            // answer it again with the logged ephemeral.
            let incoming = noise::consume_initiation(local, &init)?;
            let mut again = [0u8; RESPONSE_LEN];
            let keys = noise::respond(&incoming, ephemeral, resp.sender(), &mut again)?;
            if again[..] != response[..] {
                return Err(Error::WrongKey);
            }
            return Ok(Self {
                role: Role::Responder,
                timestamp: incoming.timestamp,
                keys,
            });
        }
        if let Some(ephemeral) = logged(init.ephemeral()) {
            // The initiator: rebuild its state from the initiation, then
            // read the response as it did.
            let peer = peer.ok_or(Error::NeedPeerKey)?;
            let (initiator, timestamp) = noise::reinitiate(local, peer, ephemeral, initiation)?;
            let keys = noise::consume_response(local, &initiator, &resp)?;
            return Ok(Self {
                role: Role::Initiator,
                timestamp,
                keys,
            });
        }
        Err(Error::NotLogged)
    }

    /// The key of each direction: what the initiator sent, what the
    /// responder sent.
    fn key(&self, direction: Direction) -> &[u8; 32] {
        match (self.role, direction) {
            (Role::Initiator, Direction::ToResponder) | (Role::Responder, Direction::ToInitiator) => {
                &self.keys.send
            }
            _ => &self.keys.receive,
        }
    }

    /// The session index data messages to `direction`'s end carry.
    pub fn index(&self, direction: Direction) -> u32 {
        match (self.role, direction) {
            (Role::Initiator, Direction::ToInitiator) | (Role::Responder, Direction::ToResponder) => {
                self.keys.local_index
            }
            _ => self.keys.remote_index,
        }
    }

    /// Opens a data message of this session into `out` (at least as long
    /// as the message): which way it went, its counter, and the inner
    /// packet's length (the padding cut off by the packet's own length
    /// field, as the receiving end does).
    pub fn open(&self, message: &[u8], out: &mut [u8]) -> Result<Opened, Error> {
        let msg = DataPacket::new_checked(message).map_err(|_| Error::NotData)?;
        let direction = [Direction::ToResponder, Direction::ToInitiator]
            .into_iter()
            .find(|d| self.index(*d) == msg.receiver())
            .ok_or(Error::OtherSession)?;
        let sealed = msg.ciphertext();
        let plain = out.get_mut(..sealed.len()).ok_or(Error::NotData)?;
        plain.copy_from_slice(sealed);
        open(
            self.key(direction),
            msg.counter(),
            msg.header(),
            plain,
            &msg.tag(),
        )
        .map_err(|_| Error::BadTag)?;
        let len = if plain.is_empty() {
            0
        } else {
            match ip_packet_len(plain) {
                Some(len) if len <= plain.len() => len,
                _ => return Err(Error::NotIp),
            }
        };
        Ok(Opened {
            direction,
            counter: msg.counter(),
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use step02_plain_tunnel::Action;

    use super::*;
    use crate::entropy::Scripted;
    use crate::{PeerConfig, Tunnel};

    /// What went between the two ends: the initiation, the response, the
    /// client's data message, the server's, and the ping inside the first.
    type Recorded = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

    /// A handshake and one data message each way between two in-memory
    /// tunnels with fixed keys.
    fn session() -> Recorded {
        let t0 = Instant::now();
        let clock = Duration::from_secs(1_800_000_000);
        let secret = |b: u8| StaticSecret::from([b; 32]);
        let mut server = Tunnel::new(
            secret(2),
            1440,
            Box::new(Scripted::new(&[[4; 32]], &[11])),
            t0,
            clock,
        );
        let mut client = Tunnel::new(
            secret(1),
            1440,
            Box::new(Scripted::new(&[[3; 32]], &[10])),
            t0,
            clock,
        );
        server.add_peer(PeerConfig {
            public: PublicKey::from(&secret(1)),
            allowed: vec!["10.0.0.2/32".parse().unwrap()],
            endpoint: None,
            keepalive: None,
        });
        client.add_peer(PeerConfig {
            public: PublicKey::from(&secret(2)),
            allowed: vec!["0.0.0.0/0".parse().unwrap()],
            endpoint: Some("192.0.2.1:51820".parse().unwrap()),
            // A client with a keepalive starts its handshake at once.
            keepalive: Some(Duration::from_secs(25)),
        });
        let from = "192.0.2.2:40000".parse().unwrap();
        let mut out = vec![0u8; 2048];
        let t = client.poll(t0, &mut out).unwrap();
        let initiation = out[..t.len].to_vec();
        let Ok(Action::Reply(r)) = server.decapsulate(from, &initiation, t0, &mut out) else {
            panic!("no response")
        };
        let response = out[..r.len].to_vec();
        let _ = client.decapsulate(t.to, &response, t0, &mut out);
        let ping = {
            let b =
                etherparse::PacketBuilder::ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64).icmpv4_echo_request(1, 1);
            let mut p = Vec::new();
            b.write(&mut p, b"tunlab").unwrap();
            p
        };
        let d = client.encapsulate(&ping, t0, &mut out).unwrap().unwrap();
        let up = out[..d.len].to_vec();
        let Ok(Action::WriteToTun(_)) = server.decapsulate(from, &up, t0, &mut out) else {
            panic!("not opened")
        };
        let mut pong = ping.clone();
        pong[12..16].copy_from_slice(&[10, 0, 0, 1]);
        pong[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let d = server.encapsulate(&pong, t0, &mut out).unwrap().unwrap();
        let down = out[..d.len].to_vec();
        (initiation, response, up, down, ping)
    }

    #[test]
    fn either_end_reads_both_directions() {
        let (init, resp, up, down, ping) = session();
        let (client, server) = (
            Identity::new(StaticSecret::from([1; 32])),
            Identity::new(StaticSecret::from([2; 32])),
        );
        let mut out = vec![0u8; 2048];
        let as_server = Session::derive(&server, &[[9; 32], [4; 32]], None, &init, &resp).unwrap();
        assert_eq!(as_server.role, Role::Responder);
        let as_client = Session::derive(&client, &[[3; 32]], Some(server.public()), &init, &resp).unwrap();
        assert_eq!(as_client.role, Role::Initiator);
        assert_eq!(as_client.timestamp, as_server.timestamp);
        for session in [&as_server, &as_client] {
            let opened = session.open(&up, &mut out).unwrap();
            // Counter 0 was the client's keepalive after the response.
            assert_eq!((opened.direction, opened.counter), (Direction::ToResponder, 1));
            assert_eq!(&out[..opened.len], &ping[..]);
            let opened = session.open(&down, &mut out).unwrap();
            assert_eq!(opened.direction, Direction::ToInitiator);
            assert_eq!(out[..opened.len][16..20], [10, 0, 0, 2]);
            assert_eq!(session.index(Direction::ToResponder), 11);
            assert_eq!(session.index(Direction::ToInitiator), 10);
        }
    }

    #[test]
    fn what_cannot_be_read_says_why() {
        let (init, resp, up, _, _) = session();
        let (client, server) = (
            Identity::new(StaticSecret::from([1; 32])),
            Identity::new(StaticSecret::from([2; 32])),
        );
        let derive = |local: &Identity, log: &[[u8; 32]], peer: Option<&PublicKey>| {
            Session::derive(local, log, peer, &init, &resp).err()
        };
        assert_eq!(derive(&server, &[[9; 32]], None), Some(Error::NotLogged));
        assert_eq!(derive(&client, &[[3; 32]], None), Some(Error::NeedPeerKey));
        assert_eq!(
            derive(&client, &[[3; 32]], Some(client.public())),
            Some(Error::WrongKey)
        );
        // The server's ephemeral with the client's static key.
        assert_eq!(derive(&client, &[[4; 32]], None), Some(Error::WrongKey));
        assert_eq!(
            Session::derive(&server, &[[4; 32]], None, &resp, &init).err(),
            Some(Error::NotAHandshake)
        );
        let session = Session::derive(&server, &[[4; 32]], None, &init, &resp).unwrap();
        let mut out = vec![0u8; 2048];
        let mut bad = up.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(session.open(&bad, &mut out), Err(Error::BadTag));
        let mut other = up.clone();
        other[7] ^= 0x80;
        assert_eq!(session.open(&other, &mut out), Err(Error::OtherSession));
        assert_eq!(session.open(&init, &mut out), Err(Error::NotData));
        assert_eq!(session.open(&up, &mut out[..10]), Err(Error::NotData));
    }
}
