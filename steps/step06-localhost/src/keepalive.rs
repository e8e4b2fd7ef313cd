//! Keepalive on the control connection. Sans-IO: the shell tells it when
//! something arrived, asks it at any time what to do now, and sleeps
//! until [`Keepalive::next_deadline`].
//!
//! TCP alone does not notice a peer that vanished (a pulled cable, a NAT
//! that forgot the mapping, a laptop put to sleep): with nothing to send,
//! nothing ever fails, and the server would hold the public port for a
//! client that is gone. So each side, once it has heard nothing for
//! [`PING_INTERVAL`], sends a Ping (and another every interval it stays
//! silent); a live peer answers each with a Pong. Hearing nothing at all
//! for [`DEAD_AFTER`] (the pings at 15 and 30 s unanswered) ends the connection. The
//! same pings keep NAT mappings on the path fresh in both directions.

use std::time::{Duration, Instant};

// ANCHOR: timers
/// Silence after which a side sends a Ping.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Silence after which a side gives the connection up.
pub const DEAD_AFTER: Duration = Duration::from_secs(45);
// ANCHOR_END: timers

/// The two timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub ping_interval: Duration,
    pub dead_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ping_interval: PING_INTERVAL,
            dead_after: DEAD_AFTER,
        }
    }
}

/// What the shell should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Send a Ping with this opaque value.
    Ping(u64),
    /// Close the connection: the peer has been silent for this long.
    Dead(Duration),
}

// ANCHOR: keepalive
/// The keepalive state of one connection.
#[derive(Debug)]
pub struct Keepalive {
    config: Config,
    last_received: Instant,
    last_ping: Option<Instant>,
    pings: u64,
}

impl Keepalive {
    /// Starts counting silence at `now` (the handshake just finished).
    pub fn new(config: Config, now: Instant) -> Self {
        Self {
            config,
            last_received: now,
            last_ping: None,
            pings: 0,
        }
    }

    /// Anything at all arrived from the peer.
    pub fn on_receive(&mut self, now: Instant) {
        self.last_received = self.last_received.max(now);
        self.last_ping = None;
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> Action {
        let silent = now.saturating_duration_since(self.last_received);
        if silent >= self.config.dead_after {
            return Action::Dead(silent);
        }
        let since_ping = self.last_ping.map(|t| now.saturating_duration_since(t));
        if silent >= self.config.ping_interval && since_ping.is_none_or(|d| d >= self.config.ping_interval) {
            self.last_ping = Some(now);
            self.pings += 1;
            return Action::Ping(self.pings);
        }
        Action::Nothing
    }

    /// When [`poll`](Self::poll) next has something to do.
    pub fn next_deadline(&self) -> Instant {
        let dead = self.last_received + self.config.dead_after;
        let ping = match self.last_ping {
            None => self.last_received + self.config.ping_interval,
            Some(t) => t + self.config.ping_interval,
        };
        ping.min(dead)
    }
}
// ANCHOR_END: keepalive

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_silent_peer_gets_two_pings_then_the_connection_ends() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(Config::default(), t0);
        assert_eq!(k.next_deadline(), t0 + 15 * S);
        assert_eq!(k.poll(t0 + 14 * S), Action::Nothing);
        assert_eq!(k.poll(t0 + 15 * S), Action::Ping(1));
        assert_eq!(k.poll(t0 + 15 * S), Action::Nothing, "one ping per interval");
        assert_eq!(k.next_deadline(), t0 + 30 * S);
        assert_eq!(k.poll(t0 + 29 * S), Action::Nothing);
        assert_eq!(k.poll(t0 + 30 * S), Action::Ping(2));
        assert_eq!(k.next_deadline(), t0 + 45 * S);
        assert_eq!(k.poll(t0 + 44 * S), Action::Nothing);
        assert_eq!(k.poll(t0 + 45 * S), Action::Dead(45 * S));
        assert_eq!(k.poll(t0 + 100 * S), Action::Dead(100 * S));
    }

    #[test]
    fn anything_received_resets_the_silence() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(Config::default(), t0);
        assert_eq!(k.poll(t0 + 16 * S), Action::Ping(1));
        // The pong (or any frame) arrives.
        k.on_receive(t0 + 17 * S);
        assert_eq!(k.next_deadline(), t0 + 32 * S);
        assert_eq!(k.poll(t0 + 31 * S), Action::Nothing);
        assert_eq!(k.poll(t0 + 32 * S), Action::Ping(2));
        assert_eq!(k.poll(t0 + 61 * S), Action::Ping(3));
        assert_eq!(k.poll(t0 + 62 * S), Action::Dead(45 * S));
        // A peer that talks all the time is never pinged.
        let mut k = Keepalive::new(Config::default(), t0);
        for i in 1..100 {
            k.on_receive(t0 + i * S);
            assert_eq!(k.poll(t0 + i * S), Action::Nothing);
        }
        // Time going backwards (it cannot with Instant, but a caller may
        // pass an older one) changes nothing.
        k.on_receive(t0);
        assert_eq!(k.next_deadline(), t0 + 114 * S);
    }
}
