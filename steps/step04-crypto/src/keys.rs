//! Keys as text: 32 bytes in base64 (RFC 4648, section 4, with padding),
//! 44 characters, as `wg genkey` writes them.
//!
//! The conversion goes through `base64ct`, whose running time depends on
//! the length of its input and not on the characters in it: a decoder
//! that looks each character up in a table, or stops at the first bad
//! one, takes a time that says something about a private key to whoever
//! can measure it. This module only converts; reading and writing files
//! is [`crate::keyfile`]'s, making keys [`crate::entropy`]'s.

use std::fmt;

use base64ct::{Base64, Encoding};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Characters of a key in base64: 43, then one `=` of padding.
pub const KEY_TEXT_LEN: usize = 44;

/// Why text is not a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Not 44 characters (after trimming white space).
    Length(usize),
    /// 44 characters, but not the base64 of 32 bytes.
    NotBase64,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Length(n) => write!(
                f,
                "not a key: {n} characters where a key has {KEY_TEXT_LEN} (base64, as genkey and pubkey print it)"
            ),
            KeyError::NotBase64 => {
                f.write_str("not a key: not the base64 of 32 bytes (as genkey and pubkey print it)")
            }
        }
    }
}

impl std::error::Error for KeyError {}

/// Writes `key`'s base64 into `buf`.
fn encode_into<'a>(key: &[u8; KEY_LEN], buf: &'a mut [u8; KEY_TEXT_LEN]) -> &'a str {
    Base64::encode(key, buf).expect("32 bytes are 44 characters of base64")
}

/// A key's base64 (for public keys: a private key's text should go
/// through [`encode_secret`], which wipes it).
pub fn encode(key: &[u8; KEY_LEN]) -> String {
    encode_into(key, &mut [0u8; KEY_TEXT_LEN]).to_owned()
}

/// A private key's base64, wiped from memory when dropped.
pub fn encode_secret(secret: &StaticSecret) -> Zeroizing<String> {
    let mut buf = Zeroizing::new([0u8; KEY_TEXT_LEN]);
    let mut text = Zeroizing::new(String::with_capacity(KEY_TEXT_LEN));
    text.push_str(encode_into(secret.as_bytes(), &mut buf));
    text
}

/// Decodes the 44 characters of a key into `out`. White space around
/// them (the newline of a file) is ignored.
fn decode_into(text: &str, out: &mut [u8; KEY_LEN]) -> Result<(), KeyError> {
    let text = text.trim();
    if text.len() != KEY_TEXT_LEN {
        return Err(KeyError::Length(text.len()));
    }
    // base64ct refuses bad characters, bad padding, and last characters
    // whose unused bits are not zero (so each key has one text).
    match Base64::decode(text, out) {
        Ok(bytes) if bytes.len() == KEY_LEN => Ok(()),
        _ => Err(KeyError::NotBase64),
    }
}

/// A key's 32 bytes from its base64.
pub fn decode(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let mut out = [0u8; KEY_LEN];
    decode_into(text, &mut out)?;
    Ok(out)
}

/// A public key as base64.
pub fn public_to_string(key: &PublicKey) -> String {
    encode(key.as_bytes())
}

/// Parses a public key given as base64.
pub fn parse_public(text: &str) -> Result<PublicKey, KeyError> {
    decode(text).map(PublicKey::from)
}

/// Parses a private key given as base64 (the text of a key file).
pub fn parse_secret(text: &str) -> Result<StaticSecret, KeyError> {
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    decode_into(text, &mut bytes)?;
    Ok(StaticSecret::from(*bytes))
}

/// The first 8 characters of a public key's base64: enough to tell peers
/// apart in logs.
pub struct Short<'a>(pub &'a PublicKey);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_into(self.0.as_bytes(), &mut [0u8; KEY_TEXT_LEN])[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_section_10() {
        // The RFC's vectors are shorter than a key; base64ct's general
        // encoder is the one `encode` calls.
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(Base64::encode(plain.as_bytes(), &mut [0u8; 8]), Ok(coded));
        }
    }

    #[test]
    fn a_key_reads_and_prints_as_wireguards_tools_do() {
        // `base64` (coreutils) of the bytes 0 to 31.
        let bytes: [u8; 32] = core::array::from_fn(|i| i as u8);
        assert_eq!(encode(&bytes), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
        // `echo d3d3...c= | wg pubkey` (wireguard-tools v1.0.20210914):
        // the private key 0x77 * 32, and its public key.
        let text = "d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3c=";
        let secret = parse_secret(text).unwrap();
        assert_eq!(secret.to_bytes(), [0x77; 32]);
        assert_eq!(*encode_secret(&secret), text);
        assert_eq!(
            public_to_string(&PublicKey::from(&secret)),
            "HPV5q6RaELodHvBtkfyiqp7QoRUFFWUxVUBdCxjLmmc="
        );
    }

    #[test]
    fn keys_round_trip_and_bad_text_is_refused() {
        let bytes: [u8; 32] = core::array::from_fn(|i| (i * 37 + 11) as u8);
        let text = encode(&bytes);
        assert_eq!(text.len(), 44);
        assert_eq!(decode(&text), Ok(bytes));
        assert_eq!(decode(&format!("{text}\n")), Ok(bytes));
        assert_eq!(parse_secret(&text).unwrap().to_bytes(), bytes);
        assert_eq!(decode(""), Err(KeyError::Length(0)));
        assert_eq!(decode("short="), Err(KeyError::Length(6)));
        assert_eq!(decode(&text[..43]), Err(KeyError::Length(43)));
        for bad in [&text.replace('=', "A"), &format!("!{}", &text[1..])] {
            assert_eq!(decode(bad), Err(KeyError::NotBase64), "{bad:?}");
        }
        // 44 characters that decode to 31 bytes.
        assert_eq!(decode(&format!("{}==", &text[..42])), Err(KeyError::NotBase64));
        // Nonzero bits in the last character's unused part.
        let mut sloppy = text.clone().into_bytes();
        sloppy[42] = b'/';
        assert_eq!(
            decode(std::str::from_utf8(&sloppy).unwrap()),
            Err(KeyError::NotBase64)
        );
    }

    #[test]
    fn short_names_are_the_first_eight_characters() {
        let key = PublicKey::from([0u8; 32]);
        assert_eq!(Short(&key).to_string(), "AAAAAAAA");
        assert_eq!(Short(&key).to_string(), public_to_string(&key)[..8]);
    }
}
