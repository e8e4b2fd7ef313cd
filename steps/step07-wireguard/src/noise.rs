//! WireGuard's handshake: `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`
//! (whitepaper section 5.4), built from step 04's primitives.
//!
//! ```text
//! initiator (knows S_r, psk)                         responder (knows its peers' S_i, psk)
//!   E_i = new ephemeral
//!   -> initiation: E_i, seal(S_i), seal(TAI64N), mac1, mac2 ------------>
//!        es = DH(E_i, S_r)   ss = DH(S_i, S_r)
//!                                                    E_r = new ephemeral
//!   <---------------------------  response: E_r, seal(empty), mac1, mac2
//!        ee = DH(E_r, E_i)   se = DH(E_r, S_i)   then psk mixed in (the "psk2")
//!   both: (T_send_i, T_recv_i) = KDF2(C, empty)
//! ```
//!
//! Step 04 did the same dance with three differences, all visible here:
//! the names hashed into the first chaining key (section 5.4), the
//! pre-shared key mixed in after the last DH of the response (section
//! 5.4.3: `(C, tau, k) = KDF3(C, Q)`), and the hash of the response's
//! sealed empty payload, which step 04 left out.

use std::fmt;
use std::time::Duration;

use step04_crypto::crypto::{KEY_LEN, TAG_LEN, dh, hash, kdf, open, seal};
use step04_crypto::noise::SessionKeys;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

use crate::wire::{HandshakeMessage, Initiation, Response};

// ANCHOR: constants
/// The protocol's name, hashed into the first chaining key (section 5.4).
pub const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// WireGuard's identifier, hashed into the first hash (section 5.4).
pub const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
/// The label of mac1's key (section 5.4.4).
pub const LABEL_MAC1: &[u8] = b"mac1----";
/// The label of the cookie reply's key (section 5.4.7).
pub const LABEL_COOKIE: &[u8] = b"cookie--";
/// Bytes of a TAI64N timestamp.
pub const TIMESTAMP_LEN: usize = 12;
// ANCHOR_END: constants

/// Why a handshake message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// A seal did not open, or a DH gave nothing (a low-order key): forged,
    /// damaged, or made with other keys.
    Failed,
    /// The output buffer is too small for the message.
    NoRoom,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::Failed => "handshake-failed",
            HandshakeError::NoRoom => "no-room",
        })
    }
}

/// Our static key pair, and the keys of the MACs on messages sent to us.
pub struct Identity {
    secret: StaticSecret,
    public: PublicKey,
    /// `HASH(LABEL_MAC1 || S_pub)`: the key of mac1 on messages to us.
    pub mac1_key: [u8; KEY_LEN],
    /// `HASH(LABEL_COOKIE || S_pub)`: the key of our cookie replies.
    pub cookie_key: [u8; KEY_LEN],
}

impl Identity {
    pub fn new(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret);
        Self {
            mac1_key: mac1_key(&public),
            cookie_key: cookie_key(&public),
            secret,
            public,
        }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        self.mac1_key.zeroize();
        self.cookie_key.zeroize();
    }
}

/// `HASH(LABEL_MAC1 || receiver)`: the key of mac1 on messages to `receiver`.
pub fn mac1_key(receiver: &PublicKey) -> [u8; KEY_LEN] {
    hash(&[LABEL_MAC1, receiver.as_bytes()])
}

/// `HASH(LABEL_COOKIE || sender)`: the key under which `sender` seals its
/// cookie replies.
pub fn cookie_key(sender: &PublicKey) -> [u8; KEY_LEN] {
    hash(&[LABEL_COOKIE, sender.as_bytes()])
}

// ANCHOR: tai64n
/// The TAI64N timestamp of an initiation sent at `since_unix_epoch`, with
/// the nanoseconds rounded down to a multiple of 2^24 (about 16.8 ms), as
/// wireguard-go and the Linux module do: the timestamp only has to grow
/// from one initiation to the next (at most 50 a second are accepted), and
/// exact nanoseconds would tell an observer who can open it how the
/// sender's clock runs.
pub fn timestamp(since_unix_epoch: Duration) -> [u8; TIMESTAMP_LEN] {
    const WHITENER: u32 = (1 << 24) - 1;
    let coarse = Duration::new(
        since_unix_epoch.as_secs(),
        since_unix_epoch.subsec_nanos() & !WHITENER,
    );
    step04_crypto::noise::tai64n(coarse)
}
// ANCHOR_END: tai64n

/// The chaining key and hash both sides start from (section 5.4.2):
/// `C = HASH(CONSTRUCTION)`, `H = HASH(HASH(C || IDENTIFIER) || S_pub_r)`.
fn initial(responder: &PublicKey) -> ([u8; KEY_LEN], [u8; KEY_LEN]) {
    let ck = hash(&[CONSTRUCTION]);
    let h = hash(&[&hash(&[&ck, IDENTIFIER]), responder.as_bytes()]);
    (ck, h)
}

/// The initiator's state between sending the initiation and reading the
/// response.
pub struct Initiator {
    ck: [u8; KEY_LEN],
    h: [u8; KEY_LEN],
    ephemeral: StaticSecret,
    /// Our index for the session: the response's receiver index.
    pub sender: u32,
}

impl Drop for Initiator {
    fn drop(&mut self) {
        self.ck.zeroize();
        self.h.zeroize();
    }
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

// ANCHOR: initiate
/// Writes an initiation to `remote` into `out` (at least 148 bytes),
/// without its MACs: the caller adds them, as only it knows the cookie.
pub fn initiate(
    local: &Identity,
    remote: &PublicKey,
    ephemeral: StaticSecret,
    sender: u32,
    timestamp: [u8; TIMESTAMP_LEN],
    out: &mut [u8],
) -> Result<Initiator, HandshakeError> {
    let mut msg = Initiation::new_emit(out).ok_or(HandshakeError::NoRoom)?;
    let (ck, h) = initial(remote);
    let e = PublicKey::from(&ephemeral);
    let [ck] = kdf(&ck, e.as_bytes());
    let h = hash(&[&h, e.as_bytes()]);
    // es: only the responder can read our static key.
    let [ck, k] = kdf(&ck, &dh(&ephemeral, remote).ok_or(HandshakeError::Failed)?);
    let sealed = msg.sealed_static_mut();
    sealed[..KEY_LEN].copy_from_slice(local.public.as_bytes());
    let tag = seal(&k, 0, &h, &mut sealed[..KEY_LEN]);
    sealed[KEY_LEN..].copy_from_slice(&tag);
    let h = hash(&[&h, sealed]);
    // ss: only the holder of our static secret can seal the timestamp.
    let [ck, k] = kdf(&ck, &dh(&local.secret, remote).ok_or(HandshakeError::Failed)?);
    let sealed = msg.sealed_timestamp_mut();
    sealed[..TIMESTAMP_LEN].copy_from_slice(&timestamp);
    let tag = seal(&k, 0, &h, &mut sealed[..TIMESTAMP_LEN]);
    sealed[TIMESTAMP_LEN..].copy_from_slice(&tag);
    let h = hash(&[&h, sealed]);
    msg.set_sender(sender);
    msg.set_ephemeral(e.as_bytes());
    Ok(Initiator {
        ck: *ck,
        h,
        ephemeral,
        sender,
    })
}
// ANCHOR_END: initiate

/// An initiation that opened: who sent it and when, and the state to
/// respond from.
pub struct Incoming {
    /// The initiator's static public key. Not yet checked against the
    /// peers we accept.
    pub remote: PublicKey,
    pub timestamp: [u8; TIMESTAMP_LEN],
    /// The initiator's index for the session.
    pub sender: u32,
    remote_ephemeral: PublicKey,
    ck: [u8; KEY_LEN],
    h: [u8; KEY_LEN],
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.ck.zeroize();
        self.h.zeroize();
    }
}

// ANCHOR: consume_initiation
/// Opens an initiation sent to us (its mac1 already checked).
pub fn consume_initiation<T: AsRef<[u8]>>(
    local: &Identity,
    msg: &Initiation<T>,
) -> Result<Incoming, HandshakeError> {
    let (ck, h) = initial(&local.public);
    let e = PublicKey::from(msg.ephemeral());
    let [ck] = kdf(&ck, e.as_bytes());
    let h = hash(&[&h, e.as_bytes()]);
    let [ck, k] = kdf(&ck, &dh(&local.secret, &e).ok_or(HandshakeError::Failed)?);
    let sealed = msg.sealed_static();
    let mut remote = [0u8; KEY_LEN];
    remote.copy_from_slice(&sealed[..KEY_LEN]);
    let tag: [u8; TAG_LEN] = sealed[KEY_LEN..].try_into().map_err(|_| HandshakeError::Failed)?;
    open(&k, 0, &h, &mut remote, &tag).map_err(|_| HandshakeError::Failed)?;
    let remote = PublicKey::from(remote);
    let h = hash(&[&h, &sealed]);
    let [ck, k] = kdf(&ck, &dh(&local.secret, &remote).ok_or(HandshakeError::Failed)?);
    let sealed = msg.sealed_timestamp();
    let mut timestamp = [0u8; TIMESTAMP_LEN];
    timestamp.copy_from_slice(&sealed[..TIMESTAMP_LEN]);
    let tag: [u8; TAG_LEN] = sealed[TIMESTAMP_LEN..]
        .try_into()
        .map_err(|_| HandshakeError::Failed)?;
    open(&k, 0, &h, &mut timestamp, &tag).map_err(|_| HandshakeError::Failed)?;
    let h = hash(&[&h, &sealed]);
    Ok(Incoming {
        remote,
        timestamp,
        sender: msg.sender(),
        remote_ephemeral: e,
        ck: *ck,
        h,
    })
}
// ANCHOR_END: consume_initiation

// ANCHOR: respond
/// Writes the response to `incoming` into `out` (at least 92 bytes),
/// without its MACs, and returns the session's keys. `psk` is the
/// pre-shared key of the peer (all zeros when there is none).
pub fn respond(
    incoming: &Incoming,
    psk: &[u8; KEY_LEN],
    ephemeral: StaticSecret,
    sender: u32,
    out: &mut [u8],
) -> Result<SessionKeys, HandshakeError> {
    let mut msg = Response::new_emit(out).ok_or(HandshakeError::NoRoom)?;
    let e = PublicKey::from(&ephemeral);
    let [ck] = kdf(&incoming.ck, e.as_bytes());
    let h = hash(&[&incoming.h, e.as_bytes()]);
    // ee: forward secrecy. se: only the initiator can open what follows.
    let [ck] = kdf(
        &ck,
        &dh(&ephemeral, &incoming.remote_ephemeral).ok_or(HandshakeError::Failed)?,
    );
    let [ck] = kdf(
        &ck,
        &dh(&ephemeral, &incoming.remote).ok_or(HandshakeError::Failed)?,
    );
    // psk2: the pre-shared key, mixed in after every DH, so that breaking
    // the curve later (a quantum computer) is not enough to read a
    // recorded session (section 5.4.3).
    let [ck, tau, mut k] = kdf(&ck, psk);
    let h = hash(&[&h, &tau[..]]);
    let tag = seal(&k, 0, &h, &mut []);
    k.zeroize();
    let [to_responder, to_initiator] = kdf(&ck, b"");
    msg.set_sender(sender);
    msg.set_receiver(incoming.sender);
    msg.set_ephemeral(e.as_bytes());
    msg.set_sealed_empty(&tag);
    Ok(SessionKeys {
        send: to_initiator,
        receive: to_responder,
        local_index: sender,
        remote_index: incoming.sender,
    })
}
// ANCHOR_END: respond

// ANCHOR: consume_response
/// Opens the response to our initiation (its mac1 already checked) and
/// returns the session's keys.
pub fn consume_response<T: AsRef<[u8]>>(
    local: &Identity,
    initiator: &Initiator,
    psk: &[u8; KEY_LEN],
    msg: &Response<T>,
) -> Result<SessionKeys, HandshakeError> {
    let e = PublicKey::from(msg.ephemeral());
    let [ck] = kdf(&initiator.ck, e.as_bytes());
    let h = hash(&[&initiator.h, e.as_bytes()]);
    let [ck] = kdf(&ck, &dh(&initiator.ephemeral, &e).ok_or(HandshakeError::Failed)?);
    let [ck] = kdf(&ck, &dh(&local.secret, &e).ok_or(HandshakeError::Failed)?);
    let [ck, tau, mut k] = kdf(&ck, psk);
    let h = hash(&[&h, &tau[..]]);
    let opened = open(&k, 0, &h, &mut [], &msg.sealed_empty());
    k.zeroize();
    opened.map_err(|_| HandshakeError::Failed)?;
    let [to_responder, to_initiator] = kdf(&ck, b"");
    Ok(SessionKeys {
        send: to_responder,
        receive: to_initiator,
        local_index: initiator.sender,
        remote_index: msg.sender(),
    })
}
// ANCHOR_END: consume_response

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{INITIATION_LEN, RESPONSE_LEN};

    fn identity(byte: u8) -> Identity {
        Identity::new(StaticSecret::from([byte; 32]))
    }

    fn handshake(psk_i: [u8; 32], psk_r: [u8; 32]) -> Result<(SessionKeys, SessionKeys), HandshakeError> {
        let (client, server) = (identity(1), identity(2));
        let mut init = vec![0u8; INITIATION_LEN];
        let state = initiate(
            &client,
            server.public(),
            StaticSecret::from([3; 32]),
            7,
            timestamp(Duration::from_secs(1)),
            &mut init,
        )?;
        let msg = Initiation::new_checked(&init[..]).unwrap();
        let incoming = consume_initiation(&server, &msg)?;
        assert_eq!(incoming.remote, *client.public());
        let mut resp = vec![0u8; RESPONSE_LEN];
        let server_keys = respond(&incoming, &psk_r, StaticSecret::from([4; 32]), 9, &mut resp)?;
        let msg = Response::new_checked(&resp[..]).unwrap();
        let client_keys = consume_response(&client, &state, &psk_i, &msg)?;
        Ok((client_keys, server_keys))
    }

    #[test]
    fn both_sides_derive_the_same_two_keys() {
        let (c, s) = handshake([0; 32], [0; 32]).unwrap();
        assert_eq!(c.send, s.receive);
        assert_eq!(c.receive, s.send);
        assert_ne!(c.send, c.receive);
        assert_eq!((c.local_index, c.remote_index), (7, 9));
    }

    #[test]
    fn a_different_preshared_key_fails_the_response() {
        assert!(handshake([5; 32], [5; 32]).is_ok());
        assert_eq!(handshake([5; 32], [6; 32]).err(), Some(HandshakeError::Failed));
        assert_eq!(handshake([0; 32], [6; 32]).err(), Some(HandshakeError::Failed));
    }

    #[test]
    fn the_preshared_key_changes_the_session_keys() {
        let (a, _) = handshake([0; 32], [0; 32]).unwrap();
        let (b, _) = handshake([5; 32], [5; 32]).unwrap();
        assert_ne!(a.send, b.send);
    }

    #[test]
    fn the_timestamp_is_whitened() {
        let t = timestamp(Duration::new(1_700_000_000, 999_999_999));
        assert_eq!(&t[..8], &(0x4000_0000_0000_000au64 + 1_700_000_000).to_be_bytes());
        let nanos = u32::from_be_bytes(t[8..].try_into().unwrap());
        assert_eq!(nanos % (1 << 24), 0);
        assert!(999_999_999 - nanos < 1 << 24);
        // Within one 16.8 ms slot two timestamps are equal: a second
        // initiation that soon is refused as a replay, as it would be as
        // a flood anyway.
        assert_eq!(
            timestamp(Duration::new(5, 1_000)),
            timestamp(Duration::new(5, 16_000_000))
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_first_chaining_key_and_hash_are_every_implementations() {
        // boringtun keeps these two as constants (INITIAL_CHAIN_KEY and
        // INITIAL_CHAIN_HASH in noise/handshake.rs): HASH(CONSTRUCTION) and
        // HASH(that || IDENTIFIER). A wrong letter in either name changes
        // them, and no handshake with another implementation would work.
        let ck = hash(&[CONSTRUCTION]);
        assert_eq!(
            hex(&ck),
            "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36"
        );
        assert_eq!(
            hex(&hash(&[&ck, IDENTIFIER])),
            "2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3"
        );
    }
}
