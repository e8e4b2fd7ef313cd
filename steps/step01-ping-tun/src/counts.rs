//! Counters by reason: why packets were dropped, or not translated, or
//! refused, one counter per reason.
//!
//! Every step counts what it does not deliver, by reason, and prints the
//! counts the same way: the total, then the reasons that happened, in a
//! fixed order. A step declares its reasons as an enum and implements
//! [`Reason`] for it (the list of variants and a stable name for each);
//! [`Counts`] does the counting and the printing.
//!
//! ```
//! use step01_ping_tun::counts::{Counts, Reason};
//!
//! #[derive(Debug, Clone, Copy, PartialEq, Eq)]
//! enum Why {
//!     Short,
//!     Odd,
//! }
//!
//! impl Reason for Why {
//!     const ALL: &'static [Self] = &[Why::Short, Why::Odd];
//!     fn name(self) -> &'static str {
//!         match self {
//!             Why::Short => "short",
//!             Why::Odd => "odd",
//!         }
//!     }
//! }
//!
//! let mut drops = Counts::<Why>::new();
//! assert_eq!(drops.to_string(), "0");
//! drops.increment(Why::Odd);
//! drops.increment(Why::Odd);
//! assert_eq!(drops.get(Why::Odd), 2);
//! assert_eq!(format!("dropped {drops}"), "dropped 2 (odd 2)");
//! ```

use std::fmt;
use std::marker::PhantomData;

/// The most reasons one enum may have. A fixed size keeps [`Counts`] a
/// plain array, with no allocation, whatever the enum.
pub const MAX_REASONS: usize = 32;

// ANCHOR: reason
/// The reasons a step counts: usually a fieldless enum.
pub trait Reason: Copy + Eq + 'static {
    /// Every reason, in the order they are printed. At most
    /// [`MAX_REASONS`].
    const ALL: &'static [Self];

    /// A short, stable name for logs and counter lines (`not-for-us`).
    /// Scripts, labs and the book read these names: do not rename one.
    fn name(self) -> &'static str;

    /// The reason's position in [`Reason::ALL`]. The default looks it up;
    /// an enum whose variants are listed in [`Reason::ALL`] in declaration
    /// order may return `self as usize` instead.
    fn index(self) -> usize {
        Self::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }
}
// ANCHOR_END: reason

// ANCHOR: counts
/// How many times each reason of `R` happened.
///
/// `Display` prints the total and then, in parentheses, each reason that
/// happened at least once with its count, in the order of
/// [`Reason::ALL`]: `3 (truncated 1, ipv6 2)`, or `0`. Steps print it
/// after a word of their own: `dropped 3 (truncated 1, ipv6 2)`.
pub struct Counts<R> {
    counts: [u64; MAX_REASONS],
    reasons: PhantomData<R>,
}

impl<R: Reason> Counts<R> {
    /// All zero.
    pub const fn new() -> Self {
        const {
            assert!(R::ALL.len() <= MAX_REASONS, "too many reasons for Counts");
        }
        Self {
            counts: [0; MAX_REASONS],
            reasons: PhantomData,
        }
    }

    /// Counts one more `reason`.
    pub fn increment(&mut self, reason: R) {
        if let Some(n) = self.counts.get_mut(reason.index()) {
            *n = n.saturating_add(1);
        }
    }

    /// How many times `reason` happened.
    pub fn get(&self, reason: R) -> u64 {
        self.counts.get(reason.index()).copied().unwrap_or(0)
    }

    /// How many times any reason happened.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &n| a.saturating_add(n))
    }

    /// Each reason with its count, in the order of [`Reason::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (R, u64)> + '_ {
        R::ALL.iter().map(|&r| (r, self.get(r)))
    }

    /// The reasons that happened at least once, with their counts.
    pub fn nonzero(&self) -> impl Iterator<Item = (R, u64)> + '_ {
        self.iter().filter(|&(_, n)| n > 0)
    }
}
// ANCHOR_END: counts

impl<R: Reason> Default for Counts<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> Clone for Counts<R> {
    fn clone(&self) -> Self {
        Self {
            counts: self.counts,
            reasons: PhantomData,
        }
    }
}

impl<R> PartialEq for Counts<R> {
    fn eq(&self, other: &Self) -> bool {
        self.counts == other.counts
    }
}

impl<R> Eq for Counts<R> {}

impl<R: Reason + fmt::Debug> fmt::Debug for Counts<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.nonzero()).finish()
    }
}

impl<R: Reason> fmt::Display for Counts<R> {
    /// `3 (truncated 1, ipv6 2)`, or `0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.total())?;
        let mut sep = " (";
        for (reason, n) in self.nonzero() {
            write!(f, "{sep}{} {n}", reason.name())?;
            sep = ", ";
        }
        if sep == ", " {
            f.write_str(")")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Three {
        A,
        B,
        C,
    }

    impl Reason for Three {
        const ALL: &'static [Self] = &[Three::A, Three::B, Three::C];
        fn name(self) -> &'static str {
            match self {
                Three::A => "a",
                Three::B => "bee",
                Three::C => "c-c",
            }
        }
    }

    /// Listed out of declaration order: the default `index` follows `ALL`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Shuffled {
        X,
        Y,
    }

    impl Reason for Shuffled {
        const ALL: &'static [Self] = &[Shuffled::Y, Shuffled::X];
        fn name(self) -> &'static str {
            match self {
                Shuffled::X => "x",
                Shuffled::Y => "y",
            }
        }
    }

    #[test]
    fn counts_print_in_the_order_of_all() {
        let mut c = Counts::<Three>::new();
        assert_eq!(c.to_string(), "0");
        assert_eq!(c.total(), 0);
        c.increment(Three::C);
        c.increment(Three::A);
        c.increment(Three::C);
        assert_eq!(c.get(Three::A), 1);
        assert_eq!(c.get(Three::B), 0);
        assert_eq!(c.get(Three::C), 2);
        assert_eq!(c.total(), 3);
        assert_eq!(c.to_string(), "3 (a 1, c-c 2)");
        assert_eq!(
            c.nonzero().collect::<Vec<_>>(),
            vec![(Three::A, 1), (Three::C, 2)]
        );
        assert_eq!(c.iter().count(), 3);
        assert_eq!(format!("{c:?}"), "{A: 1, C: 2}");
    }

    #[test]
    fn order_is_that_of_all_not_of_the_declaration() {
        let mut c = Counts::<Shuffled>::new();
        c.increment(Shuffled::X);
        c.increment(Shuffled::Y);
        assert_eq!(c.to_string(), "2 (y 1, x 1)");
        assert_eq!(Shuffled::X.index(), 1);
    }

    #[test]
    fn equality_and_clone() {
        let mut a = Counts::<Three>::default();
        let b = a.clone();
        assert_eq!(a, b);
        a.increment(Three::B);
        assert_ne!(a, b);
        assert_eq!(a.clone(), a);
    }
}
