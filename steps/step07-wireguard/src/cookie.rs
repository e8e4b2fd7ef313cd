//! mac1, mac2 and the cookie reply: WireGuard's defence against a flood
//! of handshake initiations (whitepaper section 5.3 and 5.4.7).
//!
//! Every handshake message carries two MACs. mac1 is keyed with a hash
//! of the receiver's public key: it costs one hash to check, and only
//! someone who knows whom they are talking to can make it, so a
//! responder ignores port scans and garbage without a single
//! Diffie-Hellman. mac2 is keyed with a *cookie*, and is zero until the
//! sender has one.
//!
//! A responder *under load* answers a message whose mac2 is not right
//! with a cookie reply instead of a handshake response. The cookie is
//! `MAC(secret, source IP || source port)`, with a secret that changes
//! every two minutes, so it proves only one thing: whoever sends the next
//! initiation with that cookie receives packets at that address. Spoofed
//! floods, which never see the reply, can then be told apart from real
//! peers, and the real ones can be rate-limited per address.
//!
//! The cookie travels sealed with XChaCha20-Poly1305 (a 24-byte random
//! nonce, so nonces may be picked at random) under a key only the
//! responder's peers can compute, with the mac1 of the message it
//! answers as associated data: an attacker who cannot see the mac1 (the
//! initiation went from the real peer to the responder) cannot make a
//! reply the peer accepts.

use std::net::SocketAddr;
use std::time::Instant;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use step04_crypto::crypto::{KEY_LEN, TAG_LEN, mac};
use step04_crypto::noise::same;
use x25519_dalek::PublicKey;
use zeroize::Zeroize;

use crate::noise::{cookie_key, mac1_key};
use crate::timers::COOKIE_REFRESH_TIME;
use crate::wire::{COOKIE_NONCE_LEN, CookieReply, HandshakeMessage};

/// Bytes of a cookie: a BLAKE2s-128 MAC.
pub const COOKIE_LEN: usize = TAG_LEN;

/// The bytes a cookie binds: the IP address (4 or 16 bytes), then the
/// port in network byte order, as the Linux module hashes them.
fn address_bytes(from: SocketAddr, out: &mut [u8; 18]) -> &[u8] {
    let n = match from {
        SocketAddr::V4(a) => {
            out[..4].copy_from_slice(&a.ip().octets());
            4
        }
        SocketAddr::V6(a) => {
            out[..16].copy_from_slice(&a.ip().octets());
            16
        }
    };
    out[n..n + 2].copy_from_slice(&from.port().to_be_bytes());
    &out[..n + 2]
}

// ANCHOR: checker
/// The responder's side: checks mac1 and mac2 of messages sent to us, and
/// makes cookie replies.
pub struct CookieChecker {
    mac1_key: [u8; KEY_LEN],
    cookie_key: [u8; KEY_LEN],
    /// The secret cookies are made with, and when it was drawn; a new one
    /// every two minutes.
    secret: [u8; KEY_LEN],
    secret_born: Option<Instant>,
}

impl CookieChecker {
    /// For messages to `ours` (our public key).
    pub fn new(ours: &PublicKey) -> Self {
        Self {
            mac1_key: mac1_key(ours),
            cookie_key: cookie_key(ours),
            secret: [0; KEY_LEN],
            secret_born: None,
        }
    }

    /// Is mac1 right: was the message made for our public key?
    pub fn mac1_ok(&self, msg: &impl HandshakeMessage) -> bool {
        same(&mac(&self.mac1_key, msg.mac1_covered()), &msg.mac1())
    }

    /// The cookie of `from` under the current secret, if it is fresh.
    fn cookie(&self, from: SocketAddr, now: Instant) -> Option<[u8; COOKIE_LEN]> {
        let born = self.secret_born?;
        if now.saturating_duration_since(born) >= COOKIE_REFRESH_TIME {
            return None;
        }
        let mut buf = [0u8; 18];
        Some(mac(&self.secret, address_bytes(from, &mut buf)))
    }

    /// Is mac2 right: does the sender hold the cookie we would give
    /// `from` now?
    pub fn mac2_ok(&self, msg: &impl HandshakeMessage, from: SocketAddr, now: Instant) -> bool {
        self.cookie(from, now)
            .is_some_and(|cookie| same(&mac(&cookie, msg.mac2_covered()), &msg.mac2()))
    }

    /// Writes a cookie reply to `msg` (which came from `from`) into
    /// `out`, at least 64 bytes. `random` gives the nonce, and a new
    /// secret when the last one is two minutes old.
    pub fn reply(
        &mut self,
        msg: &impl HandshakeMessage,
        from: SocketAddr,
        now: Instant,
        random: &mut dyn FnMut(&mut [u8]),
        out: &mut [u8],
    ) -> Option<usize> {
        let mut reply = CookieReply::new_emit(out)?;
        if self.cookie(from, now).is_none() {
            random(&mut self.secret);
            self.secret_born = Some(now);
        }
        let mut cookie = self.cookie(from, now)?;
        let mut nonce = [0u8; COOKIE_NONCE_LEN];
        random(&mut nonce);
        reply.set_receiver(msg.sender());
        reply.set_nonce(&nonce);
        let cipher = XChaCha20Poly1305::new(&self.cookie_key.into());
        let tag = cipher
            .encrypt_inout_detached(&XNonce::from(nonce), &msg.mac1(), cookie.as_mut_slice().into())
            .ok()?;
        let sealed = reply.sealed_cookie_mut();
        sealed[..COOKIE_LEN].copy_from_slice(&cookie);
        sealed[COOKIE_LEN..].copy_from_slice(&tag);
        cookie.zeroize();
        Some(crate::wire::COOKIE_REPLY_LEN)
    }
}

impl Drop for CookieChecker {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}
// ANCHOR_END: checker

// ANCHOR: jar
/// The sender's side, one per peer: the MACs on the handshake messages we
/// send it, and the cookie it gave us.
pub struct CookieJar {
    mac1_key: [u8; KEY_LEN],
    cookie_key: [u8; KEY_LEN],
    /// The cookie from the peer's last cookie reply, and when it came.
    cookie: Option<([u8; COOKIE_LEN], Instant)>,
    /// The mac1 of the last handshake message we sent: a cookie reply
    /// must be sealed with it as associated data.
    last_mac1: Option<[u8; TAG_LEN]>,
}

impl CookieJar {
    /// For messages to `peer`.
    pub fn new(peer: &PublicKey) -> Self {
        Self {
            mac1_key: mac1_key(peer),
            cookie_key: cookie_key(peer),
            cookie: None,
            last_mac1: None,
        }
    }

    /// Fills in mac1, and mac2 when we hold a cookie younger than two
    /// minutes (zeros otherwise), at the end of a handshake message.
    pub fn add_macs(&mut self, message: &mut [u8], now: Instant) {
        let cookie = self
            .cookie
            .filter(|(_, at)| now.saturating_duration_since(*at) < COOKIE_REFRESH_TIME)
            .map(|(c, _)| c);
        let mut mac1 = [0u8; TAG_LEN];
        crate::wire::fill_macs(
            message,
            |covered| {
                mac1 = mac(&self.mac1_key, covered);
                mac1
            },
            |covered| cookie.map(|c| mac(&c, covered)),
        );
        self.last_mac1 = Some(mac1);
    }

    /// Takes the cookie from a reply to our last message; false when it
    /// does not open (forged, or for an older message).
    pub fn consume_reply<T: AsRef<[u8]>>(&mut self, reply: &CookieReply<T>, now: Instant) -> bool {
        let Some(last_mac1) = self.last_mac1 else {
            return false;
        };
        let sealed = reply.sealed_cookie();
        let mut cookie = [0u8; COOKIE_LEN];
        cookie.copy_from_slice(&sealed[..COOKIE_LEN]);
        let Ok(tag) = <[u8; TAG_LEN]>::try_from(&sealed[COOKIE_LEN..]) else {
            return false;
        };
        let cipher = XChaCha20Poly1305::new(&self.cookie_key.into());
        let opened = cipher.decrypt_inout_detached(
            &XNonce::from(reply.nonce()),
            &last_mac1,
            cookie.as_mut_slice().into(),
            &Tag::from(tag),
        );
        if opened.is_err() {
            return false;
        }
        self.cookie = Some((cookie, now));
        true
    }

    /// True while we hold a cookie that mac2 will use.
    pub fn has_cookie(&self, now: Instant) -> bool {
        self.cookie
            .is_some_and(|(_, at)| now.saturating_duration_since(at) < COOKIE_REFRESH_TIME)
    }
}

impl Drop for CookieJar {
    fn drop(&mut self) {
        if let Some((c, _)) = self.cookie.as_mut() {
            c.zeroize();
        }
    }
}
// ANCHOR_END: jar

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{INITIATION_LEN, Initiation};
    use std::time::Duration;
    use x25519_dalek::StaticSecret;

    fn keys() -> (PublicKey, PublicKey) {
        (
            PublicKey::from(&StaticSecret::from([1; 32])),
            PublicKey::from(&StaticSecret::from([2; 32])),
        )
    }

    fn message(jar: &mut CookieJar, now: Instant) -> Vec<u8> {
        let mut m = vec![0u8; INITIATION_LEN];
        m[0] = 1;
        m[4..8].copy_from_slice(&0x1234u32.to_le_bytes());
        jar.add_macs(&mut m, now);
        m
    }

    fn counter_random() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |buf: &mut [u8]| {
            for b in buf {
                n = n.wrapping_add(1);
                *b = n;
            }
        }
    }

    #[test]
    fn a_cookie_round_trip_gives_a_valid_mac2() {
        let (_, responder) = keys();
        let now = Instant::now();
        let from: SocketAddr = "192.0.2.7:51820".parse().unwrap();
        let mut checker = CookieChecker::new(&responder);
        let mut jar = CookieJar::new(&responder);
        let m = message(&mut jar, now);
        let msg = Initiation::new_checked(&m[..]).unwrap();
        assert!(checker.mac1_ok(&msg));
        assert_eq!(msg.mac2(), [0; 16], "no cookie yet");
        assert!(!checker.mac2_ok(&msg, from, now));
        let mut out = [0u8; 64];
        let len = checker
            .reply(&msg, from, now, &mut counter_random(), &mut out)
            .unwrap();
        assert_eq!(len, 64);
        let reply = CookieReply::new_checked(&out[..]).unwrap();
        assert_eq!(reply.receiver(), 0x1234);
        assert!(jar.consume_reply(&reply, now));
        let m = message(&mut jar, now + Duration::from_secs(1));
        let msg = Initiation::new_checked(&m[..]).unwrap();
        assert_ne!(msg.mac2(), [0; 16]);
        assert!(checker.mac2_ok(&msg, from, now + Duration::from_secs(1)));
        // The cookie is bound to the address and port...
        assert!(!checker.mac2_ok(&msg, "192.0.2.7:51821".parse().unwrap(), now));
        assert!(!checker.mac2_ok(&msg, "192.0.2.8:51820".parse().unwrap(), now));
        // ...and dies with the secret, two minutes on.
        assert!(!checker.mac2_ok(&msg, from, now + COOKIE_REFRESH_TIME));
        // The jar stops using it after two minutes too.
        let later = now + COOKIE_REFRESH_TIME;
        assert!(!jar.has_cookie(later));
        let m = message(&mut jar, later);
        assert_eq!(Initiation::new_checked(&m[..]).unwrap().mac2(), [0; 16]);
    }

    #[test]
    fn a_reply_for_another_message_or_key_is_refused() {
        let (initiator, responder) = keys();
        let now = Instant::now();
        let from: SocketAddr = "[2001:db8::7]:51820".parse().unwrap();
        let mut checker = CookieChecker::new(&responder);
        let mut jar = CookieJar::new(&responder);
        let m = message(&mut jar, now);
        let msg = Initiation::new_checked(&m[..]).unwrap();
        let mut out = [0u8; 64];
        checker
            .reply(&msg, from, now, &mut counter_random(), &mut out)
            .unwrap();
        // We sent another message since: its mac1 differs.
        let mut other = vec![0u8; INITIATION_LEN];
        other[0] = 1;
        other[8] = 9;
        jar.add_macs(&mut other, now);
        let reply = CookieReply::new_checked(&out[..]).unwrap();
        assert!(!jar.consume_reply(&reply, now));
        // A reply sealed by someone else's key does not open either.
        let mut jar2 = CookieJar::new(&responder);
        let m = message(&mut jar2, now);
        let msg = Initiation::new_checked(&m[..]).unwrap();
        let mut wrong = CookieChecker::new(&initiator);
        wrong
            .reply(&msg, from, now, &mut counter_random(), &mut out)
            .unwrap();
        assert!(!jar2.consume_reply(&CookieReply::new_checked(&out[..]).unwrap(), now));
        // Nor a reply whose sealed cookie was changed.
        checker
            .reply(&msg, from, now, &mut counter_random(), &mut out)
            .unwrap();
        out[40] ^= 1;
        assert!(!jar2.consume_reply(&CookieReply::new_checked(&out[..]).unwrap(), now));
    }

    #[test]
    fn a_jar_that_sent_nothing_takes_no_cookie() {
        let (_, responder) = keys();
        let mut jar = CookieJar::new(&responder);
        let mut out = [0u8; 64];
        out[0] = 3;
        assert!(!jar.consume_reply(&CookieReply::new_checked(&out[..]).unwrap(), Instant::now()));
    }
}
