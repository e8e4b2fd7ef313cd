//! The protocol's timers and limits, with the whitepaper's names and
//! values (section 6.1; the cookie's lifetime from section 5.4.7).
//!
//! Step 04 had most of these, with its own retry backoff and rate limit;
//! here every value is WireGuard's, because the other end now expects
//! them: a responder that waited longer than `REKEY_TIMEOUT` between
//! retries, or an initiator that kept a session past `REJECT_AFTER_TIME`,
//! would be a different protocol.

use std::time::Duration;

// ANCHOR: constants
/// After this many messages on a session, its initiator starts a new
/// handshake (2^60).
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// No message is sent or accepted with a counter this high (2^64 - 2^13 -
/// 1): counters never wrap, so a nonce is never used twice, with room for
/// the replay window behind the last one.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
/// After this long, the initiator of a session starts a new handshake
/// when it next sends.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// After this long, a session is dead: nothing is sent or accepted on it.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// How long to keep retrying a handshake before giving up (and dropping
/// the packets waiting for it).
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// How long to wait for a response before sending a new initiation; also
/// the least time between two initiations to one peer.
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many retries fit in `REKEY_ATTEMPT_TIME` (90 / 5 = 18).
pub const MAX_TIMER_HANDSHAKES: u32 = (REKEY_ATTEMPT_TIME.as_secs() / REKEY_TIMEOUT.as_secs()) as u32;
/// Up to this much (in milliseconds, exclusive) is added at random to each
/// `REKEY_TIMEOUT`, so that two peers that started together do not retry
/// in lockstep forever (section 6.1: "plus jitter").
pub const REKEY_TIMEOUT_JITTER_MAX_MS: u32 = 334;
/// After receiving data and sending nothing back for this long, send a
/// keepalive, so the sender knows the session still works (section 6.5).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// A cookie, and the responder's secret behind it, lives this long.
pub const COOKIE_REFRESH_TIME: Duration = Duration::from_secs(120);
/// Initiations from one peer closer together than this are dropped: at
/// most 50 a second (the Linux module's and wireguard-go's limit).
pub const MIN_INITIATION_INTERVAL: Duration = Duration::from_millis(20);
// ANCHOR_END: constants

/// Packets kept for a peer while its handshake is under way (the Linux
/// module's MAX_STAGED_PACKETS).
pub const MAX_STAGED_PACKETS: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_the_whitepapers() {
        assert_eq!(u128::from(REJECT_AFTER_MESSAGES), (1u128 << 64) - (1 << 13) - 1);
        assert_eq!(MAX_TIMER_HANDSHAKES, 18);
        // The receiving side's rekey point (section 6.2): 180 - 10 - 5.
        assert_eq!(
            REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT,
            Duration::from_secs(165)
        );
    }
}
