//! The anti-replay window: which message counters have been seen.
//!
//! RFC 6479 ("IPsec Anti-Replay Algorithm without Bit Shifting"): the
//! window is a ring of 64-bit blocks. Moving the window forward clears
//! whole blocks instead of shifting every bit, so a far jump costs at most
//! one pass over the ring and an ordinary step costs nothing.
//!
//! The receiver uses it in two steps, and the order is the whole point:
//!
//! 1. [`ReplayWindow::check`] before decrypting: cheap, changes nothing.
//! 2. [`ReplayWindow::mark`] only after the authentication tag verified.
//!
//! Marking before the tag check would let anyone on the path send one
//! forged message with a huge counter: the window would jump forward and
//! every genuine message after it would be "too old".

// ANCHOR: window
/// Blocks in the ring. 128 blocks of 64 bits, as in the Linux WireGuard
/// module: 1 KiB per session.
pub const BLOCKS: usize = 128;
const BLOCK_BITS: u64 = 64;
/// How far behind the greatest counter seen a counter may be and still be
/// accepted: one block less than the ring, because the block holding the
/// greatest counter is only partly in the window.
pub const WINDOW: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;

/// What [`ReplayWindow::check`] says of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not seen, and within (or ahead of) the window: decrypt it.
    Fresh,
    /// Seen before: a replay, or a duplicate made by the network.
    Duplicate,
    /// So far behind the greatest counter seen that we cannot tell.
    TooOld,
}

/// The counters seen on one session's receiving side.
#[derive(Clone)]
pub struct ReplayWindow {
    /// One more than the greatest counter marked; 0 before the first.
    next: u64,
    /// Bit `c % 64` of block `(c / 64) % BLOCKS` is set once counter `c`
    /// (within the window) has been marked.
    ring: [u64; BLOCKS],
}
// ANCHOR_END: window

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

fn slot(counter: u64) -> (usize, u64) {
    let block = (counter / BLOCK_BITS) as usize % BLOCKS;
    (block, 1 << (counter % BLOCK_BITS))
}

impl ReplayWindow {
    pub fn new() -> Self {
        Self {
            next: 0,
            ring: [0; BLOCKS],
        }
    }

    /// One more than the greatest counter marked so far.
    pub fn next(&self) -> u64 {
        self.next
    }

    // ANCHOR: check
    /// Would `counter` be accepted? Changes nothing, so it is safe to ask
    /// before the message is known to be genuine.
    pub fn check(&self, counter: u64) -> Check {
        if counter >= self.next {
            return Check::Fresh;
        }
        if self.next - counter > WINDOW {
            return Check::TooOld;
        }
        let (block, bit) = slot(counter);
        if self.ring[block] & bit != 0 {
            Check::Duplicate
        } else {
            Check::Fresh
        }
    }
    // ANCHOR_END: check

    // ANCHOR: mark
    /// Records `counter` as seen. Call it only after the message's tag has
    /// verified, and only for a counter [`check`](Self::check) called
    /// fresh; returns false (and changes nothing) for any other counter.
    #[must_use = "a counter that was not marked may come back: drop its message"]
    pub fn mark(&mut self, counter: u64) -> bool {
        if self.check(counter) != Check::Fresh || counter == u64::MAX {
            return false;
        }
        if counter >= self.next {
            // Move the window forward: clear every block between the one
            // holding the greatest counter so far and the new one (at most
            // the whole ring), instead of shifting bits.
            let top = self.next.saturating_sub(1) / BLOCK_BITS;
            let new_top = counter / BLOCK_BITS;
            let blocks = (new_top - top).min(BLOCKS as u64);
            for i in 1..=blocks {
                self.ring[((top + i) % BLOCKS as u64) as usize] = 0;
            }
            self.next = counter + 1;
        }
        let (block, bit) = slot(counter);
        self.ring[block] |= bit;
        true
    }
    // ANCHOR_END: mark
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(w: &mut ReplayWindow, counter: u64) -> bool {
        w.check(counter) == Check::Fresh && w.mark(counter)
    }

    #[test]
    fn in_order() {
        let mut w = ReplayWindow::new();
        for c in 0..10_000 {
            assert!(accept(&mut w, c), "counter {c}");
        }
        assert_eq!(w.next(), 10_000);
    }

    #[test]
    fn duplicates_are_rejected_in_order_or_not() {
        let mut w = ReplayWindow::new();
        for c in [0, 1, 2, 5, 3] {
            assert!(accept(&mut w, c));
        }
        for c in [0, 1, 2, 3, 5] {
            assert_eq!(w.check(c), Check::Duplicate, "counter {c}");
            assert!(!w.mark(c));
        }
        assert_eq!(w.check(4), Check::Fresh);
    }

    #[test]
    fn reordered_within_the_window_are_accepted_once() {
        let mut w = ReplayWindow::new();
        // Deliver 0..2000 in a shuffled but deterministic order.
        let order: Vec<u64> = (0..2000u64).map(|i| (i * 7919) % 2000).collect();
        for &c in &order {
            assert!(accept(&mut w, c), "counter {c}");
        }
        for &c in &order {
            assert_eq!(w.check(c), Check::Duplicate);
        }
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::new();
        let greatest = 3 * WINDOW + 17;
        assert!(accept(&mut w, greatest));
        // The oldest counter still in the window, and the first outside.
        let oldest = greatest + 1 - WINDOW;
        assert_eq!(w.check(oldest), Check::Fresh);
        assert_eq!(w.check(oldest - 1), Check::TooOld);
        assert!(accept(&mut w, oldest));
        assert_eq!(w.check(oldest), Check::Duplicate);
        assert_eq!(w.check(greatest), Check::Duplicate);
        assert_eq!(w.check(greatest - 1), Check::Fresh);
        assert_eq!(w.check(greatest + 1), Check::Fresh);
    }

    #[test]
    fn at_least_2048_counters_of_reordering() {
        const { assert!(WINDOW >= 2048) };
        let mut w = ReplayWindow::new();
        assert!(accept(&mut w, 5000));
        assert!(accept(&mut w, 5000 - 2048));
    }

    #[test]
    fn a_far_jump_forgets_everything_behind_the_window() {
        let mut w = ReplayWindow::new();
        for c in 0..300 {
            assert!(accept(&mut w, c));
        }
        assert!(accept(&mut w, 100_000));
        assert_eq!(w.check(299), Check::TooOld);
        // Counters in the new window were never seen, even those whose
        // slots held old bits before the jump.
        for c in (100_000 - WINDOW + 1)..100_000 {
            assert_eq!(w.check(c), Check::Fresh, "counter {c}");
        }
        assert!(accept(&mut w, 100_000 - 64));
        assert!(accept(&mut w, 100_001));
    }

    #[test]
    fn a_jump_of_exactly_the_ring_clears_every_block() {
        let mut w = ReplayWindow::new();
        for c in 0..(BLOCKS as u64 * 64) {
            assert!(accept(&mut w, c));
        }
        let c = 2 * BLOCKS as u64 * 64 + 5;
        assert!(accept(&mut w, c));
        for d in (c + 1 - WINDOW)..c {
            assert_eq!(w.check(d), Check::Fresh, "counter {d}");
        }
    }

    #[test]
    fn check_never_changes_state() {
        let mut w = ReplayWindow::new();
        assert!(accept(&mut w, 10));
        let next = w.next();
        for c in [0, 10, 11, u64::MAX, 1 << 40] {
            let _ = w.check(c);
        }
        assert_eq!(w.next(), next);
        assert_eq!(w.check(10), Check::Duplicate);
    }

    #[test]
    fn a_forged_huge_counter_does_not_block_legitimate_traffic() {
        let mut w = ReplayWindow::new();
        for c in 0..100 {
            assert!(accept(&mut w, c));
        }
        // A forgery with a huge counter passes the cheap check...
        assert_eq!(w.check(u64::MAX - 1), Check::Fresh);
        // ...but its tag fails, so it is never marked, and the genuine
        // messages that follow are still accepted.
        for c in 100..200 {
            assert!(accept(&mut w, c), "counter {c}");
        }
    }

    #[test]
    fn the_last_counter_is_never_marked() {
        let mut w = ReplayWindow::new();
        assert!(!w.mark(u64::MAX));
        assert!(accept(&mut w, u64::MAX - 1));
        assert_eq!(w.check(u64::MAX - 1), Check::Duplicate);
    }
}
