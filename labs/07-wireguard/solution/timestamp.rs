//! Lab 07 exercise, solved: the TAI64N check of a WireGuard responder.

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
    let mut t = [0u8; 12];
    t[..8].copy_from_slice(&(TAI64_BASE + since_unix_epoch.as_secs()).to_be_bytes());
    t[8..].copy_from_slice(&(since_unix_epoch.subsec_nanos() & !WHITENER).to_be_bytes());
    t
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
        if self.latest.is_some_and(|latest| timestamp <= latest) {
            return Verdict::Replay;
        }
        if self
            .last_accepted
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_INTERVAL)
        {
            return Verdict::Flood;
        }
        self.latest = Some(timestamp);
        self.last_accepted = Some(now);
        Verdict::Accept
    }
}
