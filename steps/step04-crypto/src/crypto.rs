//! The primitives, each in one function: BLAKE2s for hashing, HMAC and
//! HKDF over it for key derivation, keyed BLAKE2s for the handshake MAC,
//! ChaCha20-Poly1305 for encryption, X25519 for Diffie-Hellman.
//!
//! The same choices as WireGuard and the Noise protocol framework
//! (`Noise_IK_25519_ChaChaPoly_BLAKE2s`), so that a later step speaking
//! WireGuard itself changes names and constants, not primitives.

use std::cell::Cell;

use blake2::digest::consts::U16;
use blake2::digest::{Digest, Mac as _};
use blake2::{Blake2s256, Blake2sMac};
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// Bytes of a hash, a key, or a chaining key.
pub const KEY_LEN: usize = 32;
/// Bytes of a Poly1305 tag, and of a handshake MAC.
pub const TAG_LEN: usize = 16;

/// BLAKE2s-256 of the concatenation of `parts`.
pub fn hash(parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut h = Blake2s256::new();
    for part in parts {
        h.update(part);
    }
    h.finalize().into()
}

// ANCHOR: kdf
/// A 32-byte secret (a key, a chaining key, a Diffie-Hellman result),
/// wiped from memory when dropped.
pub type Secret = Zeroizing<[u8; KEY_LEN]>;

/// HMAC (RFC 2104) over BLAKE2s, whose block is 64 bytes.
pub fn hmac(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> Secret {
    const BLOCK: usize = 64;
    // The key XORed into each pad is as secret as the key itself.
    let mut ipad = Zeroizing::new([0x36u8; BLOCK]);
    let mut opad = Zeroizing::new([0x5cu8; BLOCK]);
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let mut inner = Blake2s256::new();
    inner.update(&ipad[..]);
    for part in parts {
        inner.update(part);
    }
    let mut inner_hash = Secret::default();
    inner.finalize_into((&mut *inner_hash).into());
    let mut outer = Blake2s256::new();
    outer.update(&opad[..]);
    outer.update(&inner_hash[..]);
    let mut out = Secret::default();
    outer.finalize_into((&mut *out).into());
    out
}

/// HKDF (RFC 5869) with HMAC-BLAKE2s, as Noise uses it: extract with the
/// chaining key as the salt, then expand into `N` outputs of 32 bytes
/// (Noise takes 2 or 3). The pseudorandom key between the two steps, like
/// the outputs, is wiped when dropped.
pub fn kdf<const N: usize>(chaining_key: &[u8; KEY_LEN], input: impl AsRef<[u8]>) -> [Secret; N] {
    let prk = hmac(chaining_key, &[input.as_ref()]);
    let mut out: [Secret; N] = core::array::from_fn(|_| Secret::default());
    for i in 0..N {
        // T(i) = HMAC(PRK, T(i - 1) | i), with T(0) empty.
        let next = match i.checked_sub(1) {
            Some(previous) => hmac(&prk, &[&out[previous][..], &[i as u8 + 1]]),
            None => hmac(&prk, &[&[1]]),
        };
        out[i] = next;
    }
    out
}
// ANCHOR_END: kdf

/// Keyed BLAKE2s-128: the MAC on handshake messages. The key may be 1 to
/// 32 bytes (WireGuard keys its mac2 with a 16-byte cookie).
pub fn mac<const K: usize>(key: &[u8; K], data: &[u8]) -> [u8; TAG_LEN] {
    const { assert!(K >= 1 && K <= KEY_LEN, "BLAKE2s takes a key of 1 to 32 bytes") };
    let mut m = <Blake2sMac<U16> as blake2::digest::KeyInit>::new_from_slice(key)
        .expect("BLAKE2s takes a key of 1 to 32 bytes");
    m.update(data);
    m.finalize().into_bytes().into()
}

// ANCHOR: aead
/// The 96-bit ChaCha20-Poly1305 nonce for message counter `counter`: 32
/// zero bits, then the counter, little-endian. Each key has its own
/// counter, which never repeats, so no (key, nonce) pair is ever used
/// twice.
pub fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(n)
}

/// Encrypts `buf` in place with `key` under `counter`, authenticating
/// `aad` as well; returns the tag to append.
pub fn seal(key: &[u8; KEY_LEN], counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
    let cipher = ChaCha20Poly1305::new(key.into());
    let tag = cipher
        .encrypt_inout_detached(&nonce(counter), aad, buf.into())
        .expect("ChaCha20-Poly1305 encrypts any message under 256 GiB");
    tag.into()
}

/// A tag that did not match: the message was forged or damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTag;

/// Decrypts `buf` in place if `tag` is right for it and `aad`; on a wrong
/// tag, returns `Err` and `buf` holds garbage.
pub fn open(
    key: &[u8; KEY_LEN],
    counter: u64,
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), BadTag> {
    let cipher = ChaCha20Poly1305::new(key.into());
    cipher
        .decrypt_inout_detached(&nonce(counter), aad, buf.into(), &Tag::from(*tag))
        .map_err(|_| BadTag)
}
// ANCHOR_END: aead

thread_local! {
    static DH_DONE: Cell<u64> = const { Cell::new(0) };
}

/// How many X25519 operations ([`dh`]) this thread has done: for tests
/// and benchmarks that measure the work a flood costs.
pub fn dh_count() -> u64 {
    DH_DONE.with(Cell::get)
}

/// X25519 between `secret` and `public`; `None` when the result is all
/// zeros, which a public key of low order forces whatever our secret is
/// (so it would prove nothing).
pub fn dh(secret: &StaticSecret, public: &PublicKey) -> Option<Secret> {
    DH_DONE.with(|n| n.set(n.get() + 1));
    let shared = secret.diffie_hellman(public);
    shared
        .was_contributory()
        .then(|| Zeroizing::new(*shared.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn blake2s_matches_rfc_7693_appendix_b() {
        assert_eq!(
            hex(&hash(&[b"abc"])),
            "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"
        );
        assert_eq!(hash(&[b"a", b"bc"]), hash(&[b"abc"]));
    }

    #[test]
    fn hmac_is_rfc_2104_over_blake2s() {
        // The definition, spelled out with a 32-byte key zero-padded to
        // the 64-byte block.
        let key = [7u8; 32];
        let mut k = [0u8; 64];
        k[..32].copy_from_slice(&key);
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = hash(&[&ipad, b"message"]);
        assert_eq!(*hmac(&key, &[b"mess", b"age"]), hash(&[&opad, &inner]));
    }

    /// Compiles only for types whose memory is wiped when dropped.
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}

    #[test]
    fn secrets_are_wiped_when_dropped() {
        // The cipher's copy of the key (chacha20poly1305's `zeroize`), the
        // hasher's state, through which the HMAC pads pass (blake2's: its
        // core here, and its block buffer, which says so only at run
        // time), and every key, chaining key, PRK and Diffie-Hellman
        // result of ours.
        wiped_on_drop::<ChaCha20Poly1305>();
        wiped_on_drop::<blake2::Blake2sVarCore>();
        wiped_on_drop::<Secret>();
        wiped_on_drop::<StaticSecret>();
        wiped_on_drop::<crate::noise::SessionKeys>();
        let secret = StaticSecret::from([4u8; 32]);
        let shared: Option<Secret> = dh(&secret, &PublicKey::from(&StaticSecret::from([5u8; 32])));
        let [_a, _b]: [Secret; 2] = kdf(&[1; 32], shared.unwrap());
    }

    #[test]
    fn kdf_outputs_chain() {
        let ck = [1u8; 32];
        let [a, b, c] = kdf::<3>(&ck, b"input");
        let prk = hmac(&ck, &[b"input"]);
        assert_eq!(a, hmac(&prk, &[&[1]]));
        assert_eq!(b, hmac(&prk, &[&a[..], &[2]]));
        assert_eq!(c, hmac(&prk, &[&b[..], &[3]]));
        assert_eq!(kdf::<2>(&ck, b"input"), [a, b]);
    }

    #[test]
    fn chacha20poly1305_matches_rfc_8439_section_2_8_2() {
        let key: [u8; 32] = core::array::from_fn(|i| 0x80 + i as u8);
        let nonce = [0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47];
        let aad = [
            0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
        ];
        let mut text = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".to_vec();
        let cipher = ChaCha20Poly1305::new((&key).into());
        let tag = cipher
            .encrypt_inout_detached(&Nonce::from(nonce), &aad, text.as_mut_slice().into())
            .unwrap();
        assert_eq!(hex(&text[..16]), "d31a8d34648e60db7b86afbc53ef7ec2");
        assert_eq!(hex(&tag), "1ae10b594f09e26a7e902ecbd0600691");
    }

    #[test]
    fn seal_and_open_round_trip_and_reject_changes() {
        let key = [9u8; 32];
        let mut buf = *b"an inner packet";
        let tag = seal(&key, 5, b"header", &mut buf);
        assert_ne!(&buf, b"an inner packet");
        let sealed = buf;
        assert!(open(&key, 5, b"header", &mut buf, &tag).is_ok());
        assert_eq!(&buf, b"an inner packet");
        for (counter, aad) in [(6, &b"header"[..]), (5, b"Header")] {
            let mut b = sealed;
            assert!(open(&key, counter, aad, &mut b, &tag).is_err());
        }
        let mut b = sealed;
        b[0] ^= 1;
        assert!(open(&key, 5, b"header", &mut b, &tag).is_err());
    }

    #[test]
    fn a_low_order_public_key_gives_no_shared_secret() {
        let secret = StaticSecret::from([3u8; 32]);
        assert!(dh(&secret, &PublicKey::from([0u8; 32])).is_none());
        let other = StaticSecret::from([4u8; 32]);
        let a = dh(&secret, &PublicKey::from(&other)).unwrap();
        let b = dh(&other, &PublicKey::from(&secret)).unwrap();
        assert_eq!(a, b);
    }
}
