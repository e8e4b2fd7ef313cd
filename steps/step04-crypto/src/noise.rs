//! The handshake: one round trip in the shape of Noise IK, as WireGuard
//! does it.
//!
//! ```text
//! initiator (knows S_r)                               responder (knows S_i's it accepts)
//!   E_i = new ephemeral
//!   -> initiation: E_i, seal(S_i), seal(timestamp), mac1  ------------->
//!        es = DH(E_i, S_r): only the responder can read S_i
//!        ss = DH(S_i, S_r): only the real S_i can seal the timestamp
//!                                                     checks mac1, opens S_i (is it listed?),
//!                                                     opens the timestamp (newer than the last?)
//!                                                     E_r = new ephemeral
//!   <------------------------------------  response: E_r, seal(empty), mac1
//!        ee = DH(E_r, E_i): forward secrecy, both ephemerals
//!        se = DH(E_r, S_i): only the real S_i can open the response
//!   both: (k_i->r, k_r->i) = KDF(chaining key): one key per direction
//! ```
//!
//! Every DH result and every message byte is mixed into a chaining key
//! (`ck`, through HKDF) and a transcript hash (`h`, authenticated as the
//! associated data of each seal), so changing any byte of either message
//! makes the next seal fail to open.
//!
//! It differs from WireGuard (`Noise_IKpsk2`) on purpose and only in what
//! a reader can see: our own identifier and mac1 label (so it never
//! passes for WireGuard), no pre-shared key, and no cookie (`mac2`): the
//! handshake limiter ([`crate::limiter`]) stands in for it.

use std::fmt;
use std::time::Duration;

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

use crate::crypto::{KEY_LEN, Secret, TAG_LEN, dh, hash, kdf, mac, open, seal};
use crate::wire::{
    INITIATION_LEN, InitiationPacket, InitiationRepr, RESPONSE_LEN, ResponsePacket, ResponseRepr,
};

/// The protocol's name, hashed into the first chaining key. Not
/// `Noise_IK_...`: like WireGuard, we also mix each ephemeral public key
/// into the chaining key, which plain Noise IK does only in its
/// pre-shared-key modes.
pub const CONSTRUCTION: &[u8] = b"tunlab_IK_25519_ChaChaPoly_BLAKE2s";
pub const IDENTIFIER: &[u8] = b"tunlab step04 v1";
pub const LABEL_MAC1: &[u8] = b"tunlab mac1";
/// Bytes of a TAI64N timestamp.
pub const TIMESTAMP_LEN: usize = 12;

/// Why a handshake message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Its mac1 is wrong: it was not made for our public key (or was
    /// damaged). Costs one hash to find out.
    BadMac,
    /// A seal did not open, or a DH gave nothing (a low-order key): forged,
    /// damaged, or made with other keys.
    Failed,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::BadMac => "bad-mac",
            HandshakeError::Failed => "handshake-failed",
        })
    }
}

/// A static key pair, and the mac1 key of messages sent to it.
pub struct Identity {
    secret: StaticSecret,
    public: PublicKey,
    mac1_key: [u8; KEY_LEN],
}

impl Identity {
    pub fn new(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret);
        Self {
            mac1_key: mac1_key(&public),
            secret,
            public,
        }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }
}

/// The key of the mac1 on messages sent to `receiver`.
pub fn mac1_key(receiver: &PublicKey) -> [u8; KEY_LEN] {
    hash(&[LABEL_MAC1, receiver.as_bytes()])
}

/// Compares two MACs in time that does not depend on where they differ.
pub fn same(a: &[u8; TAG_LEN], b: &[u8; TAG_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// TAI64N (the format WireGuard uses): seconds since 1970 plus 2^62 + 10,
/// then nanoseconds, both big-endian, so comparing bytes compares times.
pub fn tai64n(since_unix_epoch: Duration) -> [u8; TIMESTAMP_LEN] {
    let mut t = [0u8; TIMESTAMP_LEN];
    t[..8].copy_from_slice(&((1u64 << 62) + 10 + since_unix_epoch.as_secs()).to_be_bytes());
    t[8..].copy_from_slice(&since_unix_epoch.subsec_nanos().to_be_bytes());
    t
}

/// Seals `plain` under nonce 0 with `key`, authenticating the transcript
/// hash `h`: the ciphertext and then the tag, `N` bytes in all (`N` is
/// 16 more than `plain`'s length, which the handshake fixes).
fn seal_whole<const N: usize>(key: &[u8; KEY_LEN], h: &[u8; KEY_LEN], plain: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let (text, tag) = out.split_at_mut(N - TAG_LEN);
    text.copy_from_slice(plain);
    tag.copy_from_slice(&seal(key, 0, h, text));
    out
}

/// The chaining key and hash both sides start from.
fn initial(responder: &PublicKey) -> ([u8; KEY_LEN], [u8; KEY_LEN]) {
    let ck = hash(&[CONSTRUCTION]);
    let h = hash(&[&hash(&[&ck, IDENTIFIER]), responder.as_bytes()]);
    (ck, h)
}

/// What a finished handshake gives each side: a key for each direction,
/// and the two indices that name the session in data messages. The keys
/// are wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    pub send: Secret,
    pub receive: Secret,
    /// The index the peer puts in messages to us.
    pub local_index: u32,
    /// The index we put in messages to the peer.
    pub remote_index: u32,
}

// Every field of `SessionKeys` that is secret wipes itself.
impl zeroize::ZeroizeOnDrop for SessionKeys {}

// The handshake state is wiped from memory when dropped (the static and
// ephemeral secrets wipe themselves: x25519-dalek's `zeroize`).
impl Drop for Initiator {
    fn drop(&mut self) {
        self.ck.zeroize();
        self.h.zeroize();
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.ck.zeroize();
        self.h.zeroize();
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .finish_non_exhaustive()
    }
}

/// The initiator's state between sending the initiation and reading the
/// response.
pub struct Initiator {
    ck: Secret,
    h: [u8; KEY_LEN],
    ephemeral: StaticSecret,
    /// Our index for the session: the response's receiver index.
    pub sender: u32,
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

// ANCHOR: initiate
/// Writes an initiation to `remote` into `out` (at least
/// [`INITIATION_LEN`] bytes).
pub fn initiate(
    local: &Identity,
    remote: &PublicKey,
    ephemeral: StaticSecret,
    sender: u32,
    timestamp: [u8; TIMESTAMP_LEN],
    out: &mut [u8],
) -> Result<Initiator, HandshakeError> {
    let out = out.get_mut(..INITIATION_LEN).ok_or(HandshakeError::Failed)?;
    let (ck, h) = initial(remote);
    let e = PublicKey::from(&ephemeral);
    let [ck] = kdf(&ck, e.as_bytes());
    let h = hash(&[&h, e.as_bytes()]);
    // es: seal our static key so only the responder can read it.
    let [ck, k] = kdf(&ck, dh(&ephemeral, remote).ok_or(HandshakeError::Failed)?);
    let sealed_static = seal_whole(&k, &h, local.public.as_bytes());
    let h = hash(&[&h, &sealed_static]);
    // ss: only the holder of our static secret can seal the timestamp.
    let [ck, k] = kdf(&ck, dh(&local.secret, remote).ok_or(HandshakeError::Failed)?);
    let sealed_timestamp = seal_whole(&k, &h, &timestamp);
    let h = hash(&[&h, &sealed_timestamp]);
    let mut msg = InitiationPacket::new_unchecked(out);
    InitiationRepr {
        sender,
        ephemeral: e.to_bytes(),
        sealed_static,
        sealed_timestamp,
        mac1: [0; TAG_LEN],
    }
    .emit(&mut msg);
    msg.fill_mac1(|covered| mac(&mac1_key(remote), covered));
    Ok(Initiator {
        ck,
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
    ck: Secret,
    h: [u8; KEY_LEN],
}

/// Checks an initiation's mac1 (one hash), nothing more.
pub fn initiation_mac1_ok(local: &Identity, msg: &InitiationPacket<&[u8]>) -> bool {
    same(&mac(&local.mac1_key, msg.mac1_covered()), &msg.mac1())
}

// ANCHOR: consume_initiation
/// Opens an initiation sent to us (its mac1 already checked).
pub fn consume_initiation(
    local: &Identity,
    msg: &InitiationPacket<&[u8]>,
) -> Result<Incoming, HandshakeError> {
    let (ck, h) = initial(&local.public);
    let e = PublicKey::from(msg.ephemeral());
    let [ck] = kdf(&ck, e.as_bytes());
    let h = hash(&[&h, e.as_bytes()]);
    let [ck, k] = kdf(&ck, dh(&local.secret, &e).ok_or(HandshakeError::Failed)?);
    let sealed = msg.sealed_static();
    let mut remote = [0u8; KEY_LEN];
    remote.copy_from_slice(&sealed[..KEY_LEN]);
    let tag = sealed[KEY_LEN..].try_into().map_err(|_| HandshakeError::Failed)?;
    open(&k, 0, &h, &mut remote, &tag).map_err(|_| HandshakeError::Failed)?;
    let remote = PublicKey::from(remote);
    let h = hash(&[&h, &sealed]);
    let [ck, k] = kdf(&ck, dh(&local.secret, &remote).ok_or(HandshakeError::Failed)?);
    let sealed = msg.sealed_timestamp();
    let mut timestamp = [0u8; TIMESTAMP_LEN];
    timestamp.copy_from_slice(&sealed[..TIMESTAMP_LEN]);
    let tag = sealed[TIMESTAMP_LEN..]
        .try_into()
        .map_err(|_| HandshakeError::Failed)?;
    open(&k, 0, &h, &mut timestamp, &tag).map_err(|_| HandshakeError::Failed)?;
    let h = hash(&[&h, &sealed]);
    Ok(Incoming {
        remote,
        timestamp,
        sender: msg.sender(),
        remote_ephemeral: e,
        ck,
        h,
    })
}
// ANCHOR_END: consume_initiation

// ANCHOR: respond
/// Writes the response to `incoming` into `out` (at least
/// [`RESPONSE_LEN`] bytes) and returns the session's keys.
pub fn respond(
    incoming: &Incoming,
    ephemeral: StaticSecret,
    sender: u32,
    out: &mut [u8],
) -> Result<SessionKeys, HandshakeError> {
    let out = out.get_mut(..RESPONSE_LEN).ok_or(HandshakeError::Failed)?;
    let e = PublicKey::from(&ephemeral);
    let [ck] = kdf(&incoming.ck, e.as_bytes());
    let h = hash(&[&incoming.h, e.as_bytes()]);
    // ee: forward secrecy. se: only the initiator can open what follows.
    let [ck] = kdf(
        &ck,
        dh(&ephemeral, &incoming.remote_ephemeral).ok_or(HandshakeError::Failed)?,
    );
    let [ck, k] = kdf(
        &ck,
        dh(&ephemeral, &incoming.remote).ok_or(HandshakeError::Failed)?,
    );
    let sealed_empty = seal_whole(&k, &h, &[]);
    // Noise's Split: the transport keys are the KDF of nothing.
    let [to_responder, to_initiator] = kdf(&ck, b"");
    let mut msg = ResponsePacket::new_unchecked(out);
    ResponseRepr {
        sender,
        receiver: incoming.sender,
        ephemeral: e.to_bytes(),
        sealed_empty,
        mac1: [0; TAG_LEN],
    }
    .emit(&mut msg);
    msg.fill_mac1(|covered| mac(&mac1_key(&incoming.remote), covered));
    Ok(SessionKeys {
        send: to_initiator,
        receive: to_responder,
        local_index: sender,
        remote_index: incoming.sender,
    })
}
// ANCHOR_END: respond

/// Checks a response's mac1.
pub fn response_mac1_ok(local: &Identity, msg: &ResponsePacket<&[u8]>) -> bool {
    same(&mac(&local.mac1_key, msg.mac1_covered()), &msg.mac1())
}

// ANCHOR: consume_response
/// Opens the response to our initiation (its mac1 already checked) and
/// returns the session's keys.
pub fn consume_response(
    local: &Identity,
    initiator: &Initiator,
    msg: &ResponsePacket<&[u8]>,
) -> Result<SessionKeys, HandshakeError> {
    let e = PublicKey::from(msg.ephemeral());
    let [ck] = kdf(&initiator.ck, e.as_bytes());
    let h = hash(&[&initiator.h, e.as_bytes()]);
    let [ck] = kdf(&ck, dh(&initiator.ephemeral, &e).ok_or(HandshakeError::Failed)?);
    let [ck, k] = kdf(&ck, dh(&local.secret, &e).ok_or(HandshakeError::Failed)?);
    open(&k, 0, &h, &mut [], &msg.sealed_empty()).map_err(|_| HandshakeError::Failed)?;
    // Noise's Split: the transport keys are the KDF of nothing.
    let [to_responder, to_initiator] = kdf(&ck, b"");
    Ok(SessionKeys {
        send: to_responder,
        receive: to_initiator,
        local_index: initiator.sender,
        remote_index: msg.sender(),
    })
}
// ANCHOR_END: consume_response

/// The initiator's state after an initiation it sent, rebuilt from the
/// recorded message with its static key and the ephemeral secret it drew
/// (from a key log), and the timestamp the message carries: for reading a
/// recording of the session (see [`crate::decrypt`]). Opening the sealed
/// timestamp takes the same two Diffie-Hellman results as sealing it (es
/// and ss, with `remote`, the responder's public key); then
/// [`initiate`] with that timestamp must write `msg` again, byte for
/// byte, or the keys are not the ones that made it.
pub fn reinitiate(
    local: &Identity,
    remote: &PublicKey,
    ephemeral: StaticSecret,
    msg: &[u8],
) -> Result<(Initiator, [u8; TIMESTAMP_LEN]), HandshakeError> {
    let packet = InitiationPacket::new_checked(msg).map_err(|_| HandshakeError::Failed)?;
    let (ck, h) = initial(remote);
    let e = PublicKey::from(&ephemeral);
    if e.as_bytes() != &packet.ephemeral() {
        return Err(HandshakeError::Failed);
    }
    let [ck] = kdf(&ck, e.as_bytes());
    let h = hash(&[&h, e.as_bytes()]);
    let [ck, _] = kdf(&ck, &dh(&ephemeral, remote).ok_or(HandshakeError::Failed)?);
    let h = hash(&[&h, &packet.sealed_static()]);
    let [_, k] = kdf(&ck, &dh(&local.secret, remote).ok_or(HandshakeError::Failed)?);
    let sealed = packet.sealed_timestamp();
    let mut timestamp = [0u8; TIMESTAMP_LEN];
    timestamp.copy_from_slice(&sealed[..TIMESTAMP_LEN]);
    let tag = sealed[TIMESTAMP_LEN..]
        .try_into()
        .map_err(|_| HandshakeError::Failed)?;
    open(&k, 0, &h, &mut timestamp, &tag).map_err(|_| HandshakeError::Failed)?;
    let mut again = [0u8; INITIATION_LEN];
    let initiator = initiate(local, remote, ephemeral, packet.sender(), timestamp, &mut again)?;
    if again[..] != msg[..] {
        return Err(HandshakeError::Failed);
    }
    Ok((initiator, timestamp))
}

/// Bytes of both handshake messages, for buffers.
pub const MAX_HANDSHAKE_LEN: usize = if INITIATION_LEN > RESPONSE_LEN {
    INITIATION_LEN
} else {
    RESPONSE_LEN
};

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(byte: u8) -> Identity {
        Identity::new(StaticSecret::from([byte; 32]))
    }

    fn handshake() -> (SessionKeys, SessionKeys, Vec<u8>, Vec<u8>) {
        let (client, server) = (identity(1), identity(2));
        let mut init = vec![0u8; INITIATION_LEN];
        let state = initiate(
            &client,
            server.public(),
            StaticSecret::from([3; 32]),
            7,
            tai64n(Duration::from_secs(1)),
            &mut init,
        )
        .unwrap();
        let msg = InitiationPacket::new_checked(&init[..]).unwrap();
        assert!(initiation_mac1_ok(&server, &msg));
        let incoming = consume_initiation(&server, &msg).unwrap();
        assert_eq!(incoming.remote, *client.public());
        assert_eq!(incoming.timestamp, tai64n(Duration::from_secs(1)));
        let mut resp = vec![0u8; RESPONSE_LEN];
        let server_keys = respond(&incoming, StaticSecret::from([4; 32]), 9, &mut resp).unwrap();
        let msg = ResponsePacket::new_checked(&resp[..]).unwrap();
        assert!(response_mac1_ok(&client, &msg));
        let client_keys = consume_response(&client, &state, &msg).unwrap();
        (client_keys, server_keys, init, resp)
    }

    #[test]
    fn both_sides_derive_the_same_two_keys() {
        let (c, s, _, _) = handshake();
        assert_eq!(c.send, s.receive);
        assert_eq!(c.receive, s.send);
        assert_ne!(c.send, c.receive, "one key per direction");
        assert_eq!((c.local_index, c.remote_index), (7, 9));
        assert_eq!((s.local_index, s.remote_index), (9, 7));
    }

    #[test]
    fn every_byte_of_the_initiation_matters() {
        let (_, _, init, _) = handshake();
        let server = identity(2);
        for i in 4..INITIATION_LEN {
            let mut bad = init.clone();
            bad[i] ^= 0x01;
            let msg = InitiationPacket::new_checked(&bad[..]).unwrap();
            let refused = !initiation_mac1_ok(&server, &msg) || consume_initiation(&server, &msg).is_err();
            // The sender index is covered by mac1 only.
            assert!(refused, "flipping byte {i} went unnoticed");
        }
    }

    #[test]
    fn an_initiation_for_someone_else_fails_mac1() {
        let (_, _, init, _) = handshake();
        let msg = InitiationPacket::new_checked(&init[..]).unwrap();
        assert!(!initiation_mac1_ok(&identity(5), &msg));
        // Even with mac1 skipped, another key cannot open it.
        assert_eq!(
            consume_initiation(&identity(5), &msg).err(),
            Some(HandshakeError::Failed)
        );
    }

    #[test]
    fn a_response_from_an_impostor_does_not_open() {
        let (client, server, impostor) = (identity(1), identity(2), identity(6));
        let mut init = vec![0u8; INITIATION_LEN];
        let state = initiate(
            &client,
            server.public(),
            StaticSecret::from([3; 32]),
            7,
            [0; 12],
            &mut init,
        )
        .unwrap();
        // The impostor cannot read the initiation; the best it can do is
        // answer as if it had, from its own keys.
        let mut forged_init = vec![0u8; INITIATION_LEN];
        initiate(
            &client,
            impostor.public(),
            StaticSecret::from([3; 32]),
            7,
            [0; 12],
            &mut forged_init,
        )
        .unwrap();
        let msg = InitiationPacket::new_checked(&forged_init[..]).unwrap();
        let incoming = consume_initiation(&impostor, &msg).unwrap();
        let mut resp = vec![0u8; RESPONSE_LEN];
        respond(&incoming, StaticSecret::from([8; 32]), 9, &mut resp).unwrap();
        let msg = ResponsePacket::new_checked(&resp[..]).unwrap();
        assert!(response_mac1_ok(&client, &msg), "mac1 only says who it is for");
        assert_eq!(
            consume_response(&client, &state, &msg).err(),
            Some(HandshakeError::Failed)
        );
    }

    #[test]
    fn a_low_order_ephemeral_is_refused() {
        let (_, _, init, _) = handshake();
        let server = identity(2);
        let mut bad = init.clone();
        bad[8..40].fill(0);
        let msg = InitiationPacket::new_checked(&bad[..]).unwrap();
        assert_eq!(
            consume_initiation(&server, &msg).err(),
            Some(HandshakeError::Failed)
        );
    }

    #[test]
    fn an_initiation_is_rebuilt_from_its_senders_secrets() {
        let (client, server) = (identity(1), identity(2));
        let (client_keys, _, init, resp) = handshake();
        let (state, timestamp) =
            reinitiate(&client, server.public(), StaticSecret::from([3; 32]), &init).unwrap();
        assert_eq!(timestamp, tai64n(Duration::from_secs(1)));
        assert_eq!(state.sender, 7);
        let msg = ResponsePacket::new_checked(&resp[..]).unwrap();
        assert_eq!(consume_response(&client, &state, &msg).unwrap(), client_keys);
        // Another ephemeral, another responder, or a damaged message: no.
        let fails = |local: &Identity, remote: &PublicKey, e: u8, msg: &[u8]| {
            reinitiate(local, remote, StaticSecret::from([e; 32]), msg).err()
        };
        let failed = Some(HandshakeError::Failed);
        assert_eq!(fails(&client, server.public(), 4, &init), failed);
        assert_eq!(fails(&client, identity(5).public(), 3, &init), failed);
        assert_eq!(fails(&identity(6), server.public(), 3, &init), failed);
        for i in 0..INITIATION_LEN {
            let mut bad = init.clone();
            bad[i] ^= 0x80;
            assert!(fails(&client, server.public(), 3, &bad).is_some(), "byte {i}");
        }
        assert_eq!(fails(&client, server.public(), 3, &init[..100]), failed);
    }

    #[test]
    fn timestamps_compare_as_bytes() {
        let a = tai64n(Duration::new(1_700_000_000, 999_999_999));
        let b = tai64n(Duration::new(1_700_000_001, 0));
        assert!(a < b);
        assert_eq!(&a[..8], &(0x4000_0000_0000_000au64 + 1_700_000_000).to_be_bytes());
    }
}
