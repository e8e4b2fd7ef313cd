//! Lab 04 exercise: the replay window.
//!
//! Every data message carries a 64-bit counter, one more for each message
//! the sender encrypts with the session's key. An attacker on the path can
//! record a message and send it again: its tag still verifies, because it
//! is the very same message. So the receiver remembers which counters it
//! has seen and drops any it sees twice.
//!
//! It cannot remember every counter forever, and UDP reorders datagrams,
//! so it remembers a *window* of the most recent ones, one bit each (RFC
//! 6479, "IPsec Anti-Replay Algorithm without Bit Shifting"):
//!
//! ```text
//!  counters:  ...  too old  | greatest - WINDOW + 1  ...  greatest | fresh ...
//!                           |<---------- WINDOW counters ---------->|
//!                             a bit each: 1 = received, 0 = not yet
//! ```
//!
//! The bits live in a ring of `BLOCKS` 64-bit blocks: counter `c` is bit
//! `c % 64` of block `(c / 64) % BLOCKS`. The window is one block smaller
//! than the ring, `WINDOW = (BLOCKS - 1) * 64 = 8128` counters, so the
//! window can slide forward a whole block at a time: the block it slides
//! into is cleared (it still holds bits of counters a whole ring ago) while
//! the oldest counters of the window keep theirs.
//!
//! The receiver asks twice, in this order:
//!
//! 1. `check(counter)` before decrypting: is it worth decrypting at all?
//!    Only reads: the tag has not been verified yet, so the counter may be
//!    forged.
//! 2. `mark(counter)` after the tag verified: now the counter is real, and
//!    the window moves.
//!
//! Check your attempt with `cargo run -p tunlab -- check 04` (or `watch
//! 04`, which checks again each time you save). Stuck? `cargo run -p
//! tunlab -- hint 04` shows the next hint.

/// Blocks of 64 bits in the ring.
pub const BLOCKS: usize = 128;

/// Counters the window remembers: `greatest - WINDOW + 1 ..= greatest`,
/// where `greatest` is the greatest counter marked so far. 8128.
pub const WINDOW: u64 = (BLOCKS as u64 - 1) * 64;

/// What [`ReplayWindow::check`] says about a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Never marked, and new enough: decrypt it. A counter greater than
    /// every counter marked so far is always fresh.
    Fresh,
    /// Inside the window and already marked: a replay (or a duplicate the
    /// network made).
    Duplicate,
    /// At most `greatest - WINDOW`: too old to tell whether it was seen,
    /// so it is dropped.
    TooOld,
}

/// The counters received so far, as far back as the window reaches.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    // These fields are a suggestion; change them if you like.
    /// The greatest counter marked so far (0 before the first).
    greatest: u64,
    /// Bit `c % 64` of block `(c / 64) % BLOCKS` is set once counter `c`
    /// is marked.
    bitmap: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// A window that has seen nothing: every counter, 0 included, is fresh.
    pub fn new() -> Self {
        Self {
            greatest: 0,
            bitmap: [0; BLOCKS],
        }
    }

    /// Whether a message with this counter may be decrypted: `Fresh`,
    /// `Duplicate` (inside the window, already marked) or `TooOld` (at most
    /// `greatest - WINDOW`).
    ///
    /// Called before the tag is verified, for every datagram anyone sends:
    /// it must be cheap, and it must not change anything (it takes `&self`).
    /// No input may make it panic.
    pub fn check(&self, counter: u64) -> Check {
        // TODO: compare with the greatest counter, then look up the bit.
        // Replace the two lines below.
        let _ = (counter, self.greatest, self.bitmap);
        todo!("say whether `counter` is fresh, a duplicate or too old")
    }

    /// Records `counter` as received. Called only after `check` said
    /// `Fresh` and the message's tag verified.
    ///
    /// A counter greater than the greatest so far slides the window
    /// forward: the blocks it slides into must be cleared first. However
    /// far it jumps (a counter may jump by billions), this must take at
    /// most `BLOCKS` steps. A counter that is too old changes nothing.
    pub fn mark(&mut self, counter: u64) {
        // TODO: slide the window if `counter` is new, then set its bit.
        // Replace the two lines below.
        let _ = counter;
        todo!("record `counter` in the window")
    }
}
