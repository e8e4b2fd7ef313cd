//! Lab 04 reference solution: a sliding-window replay filter (RFC 6479).
//!
//! The same rules as WireGuard's `counter_validate` (Linux
//! `drivers/net/wireguard/receive.c`): a ring of `BLOCKS` 64-bit blocks, one
//! bit per counter, of which `BLOCKS - 1` blocks' worth of counters are the
//! window. The spare block is what lets the window slide by whole blocks:
//! the block being entered can be cleared while the oldest counters of the
//! window still have their bits.

/// Blocks of 64 bits in the ring.
pub const BLOCKS: usize = 128;

/// Bits in one block.
const BITS: u64 = u64::BITS as u64;

/// Counters the window remembers: `greatest - WINDOW + 1 ..= greatest`.
pub const WINDOW: u64 = (BLOCKS as u64 - 1) * BITS;

/// What [`ReplayWindow::check`] says about a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Never seen, and new enough: decrypt it.
    Fresh,
    /// Inside the window and already received: a replay (or a duplicate).
    Duplicate,
    /// Older than the window: no way to tell whether it was seen.
    TooOld,
}

/// The counters received so far, as far back as the window reaches.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// The greatest counter marked so far (0 before the first).
    greatest: u64,
    /// Bit `c % 64` of block `(c / 64) % BLOCKS` is set once counter `c` is
    /// marked, for every `c` in the window.
    bitmap: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// A window that has seen nothing: every counter is fresh.
    pub fn new() -> Self {
        Self {
            greatest: 0,
            bitmap: [0; BLOCKS],
        }
    }

    /// The block and the bit of `counter`.
    fn position(counter: u64) -> (usize, u64) {
        let block = (counter / BITS) % BLOCKS as u64;
        (block as usize, 1 << (counter % BITS))
    }

    /// Whether a message with this counter may be decrypted. Reads only:
    /// the tag has not been checked yet, so the counter may be forged.
    pub fn check(&self, counter: u64) -> Check {
        if counter > self.greatest {
            return Check::Fresh;
        }
        // counter <= greatest here, so this cannot underflow.
        if self.greatest - counter >= WINDOW {
            return Check::TooOld;
        }
        let (block, bit) = Self::position(counter);
        if self.bitmap[block] & bit != 0 {
            Check::Duplicate
        } else {
            Check::Fresh
        }
    }

    /// Records `counter` as received. Called only once the message's tag
    /// has verified, so only a real sender can move the window.
    pub fn mark(&mut self, counter: u64) {
        if counter > self.greatest {
            // Clear the blocks the window slides into: they still hold the
            // bits of counters a whole ring ago. At most the whole ring,
            // however far the jump.
            let current = self.greatest / BITS;
            let target = counter / BITS;
            let steps = (target - current).min(BLOCKS as u64);
            for i in 1..=steps {
                let block = ((current + i) % BLOCKS as u64) as usize;
                self.bitmap[block] = 0;
            }
            self.greatest = counter;
        } else if self.greatest - counter >= WINDOW {
            // Out of the window: its bit now belongs to a newer counter.
            return;
        }
        let (block, bit) = Self::position(counter);
        self.bitmap[block] |= bit;
    }
}
