//! Keys as text: base64 (RFC 4648, with padding) like `wg genkey`, and key
//! files that only their owner may read.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use x25519_dalek::{PublicKey, StaticSecret};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `bytes` in base64 with padding.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A 32-byte key from its 44 characters of base64.
pub fn decode_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().as_bytes();
    if text.len() != 44 || text[43] != b'=' {
        return None;
    }
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = [0u8; 32];
    let mut n = 0;
    for &c in &text[..43] {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = bits << 6 | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            if n == 32 {
                return None;
            }
            out[n] = (bits >> nbits) as u8;
            n += 1;
        }
    }
    // The last character carries 2 bits that must be zero.
    (n == 32 && bits & ((1 << nbits) - 1) == 0).then_some(out)
}

/// A public key as base64.
pub fn public_to_string(key: &PublicKey) -> String {
    encode(key.as_bytes())
}

/// The first 8 characters of a public key's base64: enough to tell peers
/// apart in logs.
pub struct Short<'a>(pub &'a PublicKey);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&public_to_string(self.0)[..8])
    }
}

/// Parses a public key given as base64.
pub fn parse_public(text: &str) -> anyhow::Result<PublicKey> {
    decode_key(text).map(PublicKey::from).with_context(|| {
        format!("`{text}` is not a public key (44 characters of base64, as `pubkey` prints)")
    })
}

/// Parses a private key given as base64 (the text of a key file).
pub fn parse_secret(text: &str) -> Option<StaticSecret> {
    decode_key(text).map(StaticSecret::from)
}

// ANCHOR: key_file
/// Reads a private key from `path`, refusing a file that anyone but its
/// owner may read or write: a key others can read is no longer secret.
pub fn read_key_file(path: &Path) -> anyhow::Result<StaticSecret> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading key file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "key file {} has mode {mode:03o}, so others may read it; run `chmod 600 {}` (and make a new key if others did)",
            path.display(),
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading key file {}", path.display()))?;
    parse_secret(&text).with_context(|| {
        format!(
            "{} does not hold a private key (make one with `genkey`)",
            path.display()
        )
    })
}
// ANCHOR_END: key_file

/// A new private key from the operating system's random source.
pub fn generate() -> StaticSecret {
    let mut bytes = [0u8; 32];
    crate::entropy::fill(&mut bytes);
    StaticSecret::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn base64_matches_rfc_4648_section_10() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn keys_round_trip_and_bad_text_is_refused() {
        let bytes: [u8; 32] = core::array::from_fn(|i| (i * 37 + 11) as u8);
        let text = encode(&bytes);
        assert_eq!(text.len(), 44);
        assert_eq!(decode_key(&text), Some(bytes));
        assert_eq!(decode_key(&format!("{text}\n")), Some(bytes));
        for bad in [
            "",
            "short=",
            &text[..43],
            &text.replace('=', "A"),
            &format!("!{}", &text[1..]),
        ] {
            assert_eq!(decode_key(bad), None, "{bad:?}");
        }
        // Nonzero bits in the last character's unused part.
        let mut sloppy = text.clone().into_bytes();
        sloppy[42] = b'/';
        assert_eq!(decode_key(std::str::from_utf8(&sloppy).unwrap()), None);
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = std::env::temp_dir().join(format!("step04-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.key");
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "{}", encode(&[5u8; 32])).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_key_file(&path).err().unwrap().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file(&path).unwrap().to_bytes(), [5u8; 32]);
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(read_key_file(&path).err().unwrap().to_string().contains("genkey"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
