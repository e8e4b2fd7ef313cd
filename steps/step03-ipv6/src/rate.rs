//! Rate limits: a token bucket, for anything a step must not do more often
//! than so many times a second (ICMP errors in step 03, handshakes per
//! source in step 04).

use std::time::{Duration, Instant};

// ANCHOR: token_bucket
/// A token bucket: holds at most `burst` tokens, gains `rate` a second,
/// and each action takes one. Time comes in as an argument.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u32,
    burst: u32,
    tokens: u32,
    /// When the tokens were last topped up.
    since: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            since: None,
        }
    }

    /// Takes a token at `now` if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let since = *self.since.get_or_insert(now);
        let per_token = Duration::from_secs(1) / self.rate.max(1);
        let earned = now.saturating_duration_since(since).as_nanos() / per_token.as_nanos().max(1);
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned).min(self.burst);
            // Keep the remainder: time not yet worth a token still counts.
            self.since = Some(since + per_token * earned.min(self.burst.saturating_add(1)));
            if self.tokens == self.burst {
                self.since = Some(now);
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}
// ANCHOR_END: token_bucket

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100, 20);
        assert!((0..20).all(|_| bucket.take(t0)), "a full burst at once");
        assert!(!bucket.take(t0), "then nothing");
        // 10 ms earns one token at 100 a second.
        assert!(bucket.take(t0 + Duration::from_millis(10)));
        assert!(!bucket.take(t0 + Duration::from_millis(15)));
        assert!(bucket.take(t0 + Duration::from_millis(20)));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| bucket.take(later)).count(), 20);
    }
}
