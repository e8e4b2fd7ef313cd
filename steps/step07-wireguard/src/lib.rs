//! Step 07: WireGuard itself. The protocol of step 04 made exact (its
//! names, pre-shared keys, cookies under load, the whitepaper's timers),
//! so that this tunnel talks to wireguard-go and boringtun, and is
//! configured like them: by the unmodified `wg` tool over the
//! cross-platform userspace API.
//!
//! - [`wire`]: the four message types, byte for byte.
//! - [`noise`]: the handshake, `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`.
//! - [`cookie`]: mac1, mac2 and cookie replies.
//! - [`timers`]: the whitepaper's constants.
//! - [`allowed`]: cryptokey routing's longest-prefix table.
//! - [`device`]: the sans-IO core, many peers, configured at run time.
//! - [`uapi`]: the `get=1` / `set=1` configuration protocol.
//! - [`run`]: the I/O shell: TUN device, sockets, UAPI socket.
//! - [`keylog`]: `--keylog`, the keys Wireshark decrypts a capture with.
//! - [`conf`] and [`quick`]: wg-quick's file, `up` and `down`.
//! - [`cli`]: the command line.
//! - [`underlay`]: the messages in a capture, for `tunlab decode`.
//!
//! What it reuses from step 04: the primitives (BLAKE2s, HMAC, HKDF,
//! ChaCha20-Poly1305, X25519), the replay window, the entropy source, the
//! key encoding and the session keys.

#![forbid(unsafe_code)]

pub mod allowed;
pub mod cli;
pub mod conf;
pub mod cookie;
pub mod device;
pub mod keylog;
pub mod noise;
pub mod quick;
pub mod run;
pub mod timers;
pub mod uapi;
pub mod underlay;
pub mod wire;

pub use device::{Device, DropReason, PeerId};

/// Set in the environment of the background copy of the program that
/// `step07-wireguard IFNAME` and `up` start.
pub const DAEMON_ENV: &str = "STEP07_WIREGUARD_DAEMON";
