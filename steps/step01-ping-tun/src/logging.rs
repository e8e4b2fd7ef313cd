//! Logging drops without letting a flood fill the log.
//!
//! Every dropped packet is counted, and each used to be logged too, at the
//! default level: a peer (or anyone who can reach the port) sending junk
//! at line rate then made the program spend its time writing log lines and
//! filled the journal. [`DropLog`] logs the first drops of each second at
//! the default level, as before, and the rest only at debug level (`-v`);
//! when it next logs, it says how many it kept quiet. The counters count
//! every drop either way.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Drop lines logged at the default level per second, at most.
pub const DROP_LINES_PER_SECOND: u32 = 10;

/// Whether a line may be written now: at most `limit` in each `window`.
/// Time comes in as an argument.
#[derive(Debug, Clone)]
pub struct Throttle {
    limit: u32,
    window: Duration,
    /// When the present window began.
    start: Option<Instant>,
    /// Lines written in the present window.
    written: u32,
    /// Lines held back since a line was last written.
    held_back: u64,
}

/// What [`Throttle::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write the line, after saying that `held_back` lines were not
    /// written since the last one (when there were any).
    Write { held_back: u64 },
    /// Hold this line back.
    HoldBack,
}

impl Throttle {
    /// At most `limit` lines (at least 1) in each `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1),
            window,
            start: None,
            written: 0,
            held_back: 0,
        }
    }

    /// Whether a line may be written at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        self.roll(now);
        if self.written < self.limit {
            self.written += 1;
            Verdict::Write {
                held_back: std::mem::take(&mut self.held_back),
            }
        } else {
            self.held_back += 1;
            Verdict::HoldBack
        }
    }

    /// Lines held back, once their window is over: for a caller that
    /// looks now and then (or at exit) to say so even when no further
    /// line comes. 0 while the window lasts.
    pub fn flush(&mut self, now: Instant) -> u64 {
        self.roll(now);
        if self.written == 0 {
            std::mem::take(&mut self.held_back)
        } else {
            0
        }
    }

    /// Starts a new window when the present one is over.
    fn roll(&mut self, now: Instant) {
        let start = *self.start.get_or_insert(now);
        if now.saturating_duration_since(start) >= self.window {
            self.start = Some(now);
            self.written = 0;
        }
    }
}

/// The drop lines of an I/O shell, shared by its threads: the first
/// [`DROP_LINES_PER_SECOND`] of each second at info level, the others at
/// debug level, and a line saying how many were held back.
#[derive(Debug)]
pub struct DropLog {
    throttle: Mutex<Throttle>,
}

impl Default for DropLog {
    fn default() -> Self {
        Self::new()
    }
}

impl DropLog {
    pub fn new() -> Self {
        Self {
            throttle: Mutex::new(Throttle::new(DROP_LINES_PER_SECOND, Duration::from_secs(1))),
        }
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs one drop at `now`: `line` is what to say (`drop (ipv6): IP6 ...`).
    pub fn drop(&self, now: Instant, line: fmt::Arguments<'_>) {
        let verdict = self.throttle().check(now);
        match verdict {
            Verdict::Write { held_back } => {
                held_back_line(held_back);
                log::info!("{line}");
            }
            Verdict::HoldBack => log::debug!("{line}"),
        }
    }

    /// Says how many drops were held back, once their second is over; for
    /// the I/O loop's timer, and at exit.
    pub fn flush(&self, now: Instant) {
        let held_back = self.throttle().flush(now);
        held_back_line(held_back);
    }
}

fn held_back_line(n: u64) {
    if n > 0 {
        log::info!(
            "{n} more drops not logged (at most {DROP_LINES_PER_SECOND} a second; -v logs each, the counters count all)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rest_held_back_and_told() {
        let t0 = Instant::now();
        let mut t = Throttle::new(3, Duration::from_secs(1));
        for _ in 0..3 {
            assert_eq!(t.check(t0), Verdict::Write { held_back: 0 });
        }
        for _ in 0..5 {
            assert_eq!(t.check(t0 + Duration::from_millis(500)), Verdict::HoldBack);
        }
        assert_eq!(
            t.flush(t0 + Duration::from_millis(999)),
            0,
            "the window is not over"
        );
        // A new second: the next line says how many were held back.
        assert_eq!(
            t.check(t0 + Duration::from_secs(1)),
            Verdict::Write { held_back: 5 }
        );
        assert_eq!(
            t.check(t0 + Duration::from_secs(1)),
            Verdict::Write { held_back: 0 }
        );
    }

    #[test]
    fn flush_tells_when_no_line_follows() {
        let t0 = Instant::now();
        let mut t = Throttle::new(1, Duration::from_secs(1));
        t.check(t0);
        t.check(t0);
        t.check(t0);
        assert_eq!(t.flush(t0 + Duration::from_secs(2)), 2);
        assert_eq!(t.flush(t0 + Duration::from_secs(3)), 0);
        assert_eq!(
            t.check(t0 + Duration::from_secs(3)),
            Verdict::Write { held_back: 0 }
        );
    }
}
