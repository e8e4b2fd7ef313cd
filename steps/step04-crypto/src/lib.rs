//! Step 04: encryption. An authenticated x25519 handshake, ChaCha20-Poly1305
//! on every inner packet, and a replay window, so that nobody on the path
//! can read, forge or replay tunnel traffic.
//!
//! - [`crypto`]: the primitives, one function each.
//! - [`noise`]: the handshake, in the shape of Noise IK.
//! - [`replay`]: the anti-replay window (RFC 6479).
//! - [`wire`]: the three message types.
//! - [`tunnel`]: the sans-IO core: sessions, peers, timers.
//! - [`allowed`]: which peer owns an inner address (longest-prefix match).
//! - [`limiter`]: which handshake messages get Diffie-Hellman work.
//! - [`entropy`]: where private keys, ephemeral keys and indices come from.
//! - [`keys`]: keys as base64 text.
//! - [`keyfile`]: key files and key logs only their owner can read.
//! - [`decrypt`]: reading a recorded session with one end's key log.

#![forbid(unsafe_code)]

pub mod allowed;
pub mod cli;
pub mod crypto;
pub mod decrypt;
pub mod entropy;
pub mod keyfile;
pub mod keys;
pub mod limiter;
pub mod noise;
pub mod replay;
pub mod run;
pub mod tunnel;
pub mod underlay;
pub mod wire;

pub use tunnel::{DropReason, Limits, PeerConfig, Tunnel};
/// The key types of the handshake, for the steps built on this one.
pub use x25519_dalek::{PublicKey, StaticSecret};
