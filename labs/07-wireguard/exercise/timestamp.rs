//! Lab 07 exercise: the TAI64N check of a WireGuard responder.
//!
//! A handshake initiation carries the initiator's clock, sealed, as a
//! TAI64N timestamp: 8 bytes of seconds since 1970 plus 2^62 + 10, then 4
//! bytes of nanoseconds, both big-endian, so that comparing the 12 bytes
//! compares the times. The responder keeps, per peer, the newest
//! timestamp it accepted, and refuses an initiation that is not newer: a
//! recorded initiation replayed later is refused without changing any
//! state (whitepaper section 5.4.2). It also refuses an initiation that
//! comes less than 20 ms after the last one it accepted from that peer:
//! each costs it Diffie-Hellman operations.
//!
//! Before sealing a timestamp, wireguard-go and the Linux module clear the
//! low 24 bits of the nanoseconds, so it says less about the sender's
//! clock. Write `tai64n` to do the same, and `Guard::check` to apply both
//! rules, in this order: replay first, then flood. Only an initiation it
//! accepts may change the guard.
//!
//! Check your attempt with `cargo run -p tunlab -- check 07`. Stuck? Read
//! `HINTS.md` next to this file, one hint at a time.

use std::time::{Duration, Instant};

/// TAI64 counts seconds from 2^62 (plus 10 s of leap seconds at 1970).
pub const TAI64_BASE: u64 = (1 << 62) + 10;
/// The low 24 bits of the nanoseconds are cleared (about 16.8 ms).
pub const WHITENER: u32 = (1 << 24) - 1;
/// Accepted initiations from one peer are at least this far apart.
pub const MIN_INTERVAL: Duration = Duration::from_millis(20);

/// The 12-byte TAI64N timestamp of `since_unix_epoch`: seconds plus
/// `TAI64_BASE`, big-endian, then the nanoseconds with their low 24 bits
/// cleared, big-endian.
pub fn tai64n(since_unix_epoch: Duration) -> [u8; 12] {
    let _ = since_unix_epoch;
    todo!("seconds plus TAI64_BASE, then the whitened nanoseconds, both big-endian")
}

/// What the responder does with an initiation whose timestamp opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Newer than every one accepted before, and not too soon: answer it.
    Accept,
    /// Not newer than the newest accepted: a replay (or reordered).
    Replay,
    /// Newer, but less than `MIN_INTERVAL` after the last accepted one.
    Flood,
}

/// The state a responder keeps per peer for this check.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    latest: Option<[u8; 12]>,
    last_accepted: Option<Instant>,
}

impl Guard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks an initiation's timestamp at `now`; only an accepted one
    /// changes the state.
    pub fn check(&mut self, timestamp: [u8; 12], now: Instant) -> Verdict {
        let _ = (timestamp, now, &self.latest, &self.last_accepted);
        todo!("Replay if not newer than latest; Flood if too soon; else remember it and Accept")
    }
}
