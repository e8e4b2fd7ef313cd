//! Where the randomness comes from: new private keys ([`generate_key`]),
//! and the core's ephemeral keys and session indices. The core asks an
//! [`Entropy`] for those instead of reading the operating system itself,
//! so a test can hand it fixed values and get the same bytes every run,
//! and a recorded session can be replayed exactly.

use std::collections::VecDeque;

use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

/// Randomness for the core.
pub trait Entropy: Send {
    /// A fresh ephemeral private key for one handshake.
    fn ephemeral(&mut self) -> StaticSecret;
    /// A random 32-bit session index.
    fn index(&mut self) -> u32;
    /// Random bytes (a later step needs nonces and secrets of other
    /// sizes). By default, made of [`index`](Self::index) values.
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(4) {
            let random = self.index().to_le_bytes();
            chunk.copy_from_slice(&random[..chunk.len()]);
        }
    }
}

/// Fills `buf` from the operating system (getrandom(2)).
pub fn fill(buf: &mut [u8]) {
    // Without the kernel's random source no key can be made safely, and
    // nothing the network sends can cause this: stop rather than go on.
    getrandom::fill(buf).expect("the kernel's random source failed");
}

/// A new private key (static or ephemeral) from the operating system's
/// random source.
pub fn generate_key() -> StaticSecret {
    let mut bytes = Zeroizing::new([0u8; 32]);
    fill(bytes.as_mut());
    StaticSecret::from(*bytes)
}

/// The operating system's random source.
#[derive(Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn ephemeral(&mut self) -> StaticSecret {
        generate_key()
    }

    fn index(&mut self) -> u32 {
        let mut b = [0u8; 4];
        fill(&mut b);
        u32::from_le_bytes(b)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        fill(buf);
    }
}

/// Fixed values, in order, for tests and replays: the ephemerals and
/// indices it was given, then made-up ones (never for real use).
#[derive(Debug, Clone, Default)]
pub struct Scripted {
    pub ephemerals: VecDeque<[u8; 32]>,
    pub indices: VecDeque<u32>,
    made_up: u8,
}

impl Scripted {
    pub fn new(ephemerals: &[[u8; 32]], indices: &[u32]) -> Self {
        Self {
            ephemerals: ephemerals.iter().copied().collect(),
            indices: indices.iter().copied().collect(),
            made_up: 0,
        }
    }
}

impl Entropy for Scripted {
    fn ephemeral(&mut self) -> StaticSecret {
        let bytes = self.ephemerals.pop_front().unwrap_or_else(|| {
            self.made_up = self.made_up.wrapping_add(1);
            [self.made_up; 32]
        });
        StaticSecret::from(bytes)
    }

    fn index(&mut self) -> u32 {
        self.indices.pop_front().unwrap_or_else(|| {
            self.made_up = self.made_up.wrapping_add(1);
            0x5c00_0000 | u32::from(self.made_up)
        })
    }
}
