//! The HMAC and HKDF of `crypto` are written out in full, for the
//! chapter to show. Here they are checked against RustCrypto's `hmac` and
//! `hkdf` crates (instantiated with the same BLAKE2s), an implementation
//! someone else wrote, on arbitrary keys and inputs.

use blake2::Blake2s256;
use hkdf::SimpleHkdf;
use hmac::{KeyInit, Mac, SimpleHmac};
use proptest::prelude::*;
use step04_crypto::crypto::{hmac, kdf};

fn their_hmac(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut mac = <SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// HKDF (RFC 5869) with the chaining key as salt and no info, which is
/// what Noise's KDF is: `N` outputs of 32 bytes.
fn their_hkdf<const N: usize>(chaining_key: &[u8; 32], input: &[u8]) -> Vec<[u8; 32]> {
    let mut okm = vec![0u8; 32 * N];
    SimpleHkdf::<Blake2s256>::new(Some(chaining_key), input)
        .expand(&[], &mut okm)
        .unwrap();
    okm.chunks(32).map(|c| c.try_into().unwrap()).collect()
}

proptest! {
    #[test]
    fn hmac_matches_the_hmac_crate(
        key in any::<[u8; 32]>(),
        message in proptest::collection::vec(any::<u8>(), 0..300),
        split in any::<prop::sample::Index>(),
    ) {
        // In two parts, as the handshake passes them.
        let (a, b) = message.split_at(split.index(message.len() + 1));
        prop_assert_eq!(*hmac(&key, &[a, b]), their_hmac(&key, &message));
    }

    #[test]
    fn kdf_matches_the_hkdf_crate(
        chaining_key in any::<[u8; 32]>(),
        input in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let ours: Vec<[u8; 32]> = kdf::<3>(&chaining_key, &input).iter().map(|k| **k).collect();
        prop_assert_eq!(ours, their_hkdf::<3>(&chaining_key, &input));
        let ours: Vec<[u8; 32]> = kdf::<1>(&chaining_key, &input).iter().map(|k| **k).collect();
        prop_assert_eq!(ours, their_hkdf::<1>(&chaining_key, &input));
    }
}

#[test]
fn the_noise_kdf_of_an_empty_input_and_a_dh_sized_one() {
    // The two input sizes the handshake uses most: nothing (the final
    // split) and a 32-byte Diffie-Hellman result.
    for input in [&[][..], &[0x42; 32][..]] {
        let ck = [7u8; 32];
        let ours: Vec<[u8; 32]> = kdf::<2>(&ck, input).iter().map(|k| **k).collect();
        assert_eq!(ours, their_hkdf::<2>(&ck, input));
    }
}
