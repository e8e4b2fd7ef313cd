//! Build track, step 04: write [`ReplayWindow::check`] and [`ReplayWindow::mark`] yourself.
//!
//! This file is `steps/step04-crypto/src/replay.rs` with those bodies taken out
//! (each says `todo!()`). `cargo run -p tunlab -- track 04` copies the
//! step's crate to `target/track/step04/`, puts this file in place of
//! `src/replay.rs` (with the original's unit tests appended), and runs the
//! crate's own tests, golden captures included; once they pass, it runs the
//! micro-benchmark `step04/replay`: yours must be within 3 times the
//! reference's time per counter.
//! Everything else here is as in the step: change it if you like, but
//! keep the public names and what the tests use. The book's "Build track"
//! page says more.
//!
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

    /// Would `counter` be accepted? Changes nothing, so it is safe to ask
    /// before the message is known to be genuine.
    pub fn check(&self, counter: u64) -> Check {
        // At or past `self.next`: Fresh. More than WINDOW behind it: TooOld.
        // Otherwise the counter's bit (`slot`) says Duplicate or Fresh.
        todo!("say whether `counter` is fresh, a duplicate or too old")
    }

    /// Records `counter` as seen. Call it only after the message's tag has
    /// verified, and only for a counter [`check`](Self::check) called
    /// fresh; returns false (and changes nothing) for any other counter.
    #[must_use = "a counter that was not marked may come back: drop its message"]
    pub fn mark(&mut self, counter: u64) -> bool {
        // Only a counter `check` calls Fresh, and never u64::MAX (no next
        // after it). A new greatest counter clears the blocks the window moves
        // into (at most BLOCKS of them, however far it jumps) before its bit is
        // set, and moves `self.next`.
        todo!("record `counter`, sliding the window forward if it is new")
    }
}
