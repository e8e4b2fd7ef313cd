//! Tests for the lab 04 exercise. `tunlab check 04` compiles them together
//! with your `replay.rs`; every test must pass.

use crate::exercise::{BLOCKS, Check, ReplayWindow, WINDOW};

/// Checks one counter and, on failure, says what was expected and why.
#[track_caller]
fn expect(window: &ReplayWindow, counter: u64, want: Check, why: &str) {
    let got = window.check(counter);
    assert!(
        got == want,
        "check({counter}) returned {got:?}, expected {want:?}.\n{why}"
    );
}

/// What the receiver does with one message whose tag verifies: check, and
/// mark only if fresh. Returns what `check` said.
fn receive(window: &mut ReplayWindow, counter: u64) -> Check {
    let verdict = window.check(counter);
    if verdict == Check::Fresh {
        window.mark(counter);
    }
    verdict
}

/// The window of the tests: one block less than the ring.
#[test]
fn the_window_is_8128_counters() {
    assert_eq!(BLOCKS, 128, "keep BLOCKS at 128: the tests count on it");
    assert_eq!(
        WINDOW, 8128,
        "WINDOW is (BLOCKS - 1) * 64: one block of the ring is kept free for sliding"
    );
}

#[test]
fn a_new_window_takes_anything() {
    let window = ReplayWindow::new();
    for counter in [0, 1, 63, 64, 8127, 8128, 1 << 40, u64::MAX] {
        expect(
            &window,
            counter,
            Check::Fresh,
            "nothing has been marked yet, so no counter can be a duplicate, and none \
             is older than a window that has not started. (Counter 0 is the first \
             message of every session.)",
        );
    }
}

#[test]
fn in_order() {
    let mut window = ReplayWindow::new();
    for counter in 0..20_000 {
        let got = receive(&mut window, counter);
        assert!(
            got == Check::Fresh,
            "after marking 0..{counter}, check({counter}) returned {got:?}, expected Fresh: \
             each counter of an in-order stream is new."
        );
    }
    for counter in 20_000 - WINDOW..20_000 {
        expect(
            &window,
            counter,
            Check::Duplicate,
            "every counter of the last WINDOW has been marked: sending it again is a replay.",
        );
    }
}

#[test]
fn a_duplicate_is_caught() {
    let mut window = ReplayWindow::new();
    window.mark(0);
    expect(&window, 0, Check::Duplicate, "counter 0 was just marked.");
    window.mark(7);
    expect(&window, 7, Check::Duplicate, "counter 7 was just marked.");
    expect(
        &window,
        0,
        Check::Duplicate,
        "counter 0 is still inside the window after 7 was marked.",
    );
    for counter in 1..7 {
        expect(
            &window,
            counter,
            Check::Fresh,
            "1 to 6 never arrived: a later counter (7) must not mark the ones it skipped.",
        );
    }
    expect(&window, 8, Check::Fresh, "8 is greater than anything marked.");
}

/// UDP may deliver out of order: any order within the window is fine.
#[test]
fn reordered_within_the_window() {
    let mut window = ReplayWindow::new();
    // A fixed permutation of 0..1000 (7 is coprime to 1000).
    let order: Vec<u64> = (0..1000).map(|i| (i * 7 + 3) % 1000).collect();
    for &counter in &order {
        let got = receive(&mut window, counter);
        assert!(
            got == Check::Fresh,
            "counters 0..1000 arriving in a shuffled order: check({counter}) returned {got:?}, \
             expected Fresh. A counter below the greatest is fine as long as it is inside the \
             window and was not marked before."
        );
    }
    for &counter in &order {
        expect(
            &window,
            counter,
            Check::Duplicate,
            "every one of 0..1000 has been marked once: the second time is a replay.",
        );
    }
    // Late but within the window, after a jump forward.
    window.mark(5000);
    expect(
        &window,
        4999,
        Check::Fresh,
        "4999 was never marked and is inside the window (greatest 5000).",
    );
}

/// The exact edges: the window is `greatest - WINDOW + 1 ..= greatest`.
#[test]
fn window_edges_exactly() {
    let mut window = ReplayWindow::new();
    let greatest = 10_000;
    window.mark(greatest);
    expect(
        &window,
        greatest - WINDOW + 1,
        Check::Fresh,
        "10000 - 8128 + 1 = 1873 is the oldest counter of the window (greatest - WINDOW + 1): \
         never marked, so Fresh. TooOld here means the comparison is off by one (> vs >=).",
    );
    expect(
        &window,
        greatest - WINDOW,
        Check::TooOld,
        "10000 - 8128 = 1872 is just outside the window (greatest - WINDOW): TooOld. Fresh here \
         means the window is one counter too long, and its bit shares a block with counters \
         the window has moved past.",
    );
    expect(&window, 0, Check::TooOld, "0 is far below the window.");
    expect(&window, greatest, Check::Duplicate, "the greatest itself was marked.");
    expect(&window, greatest + 1, Check::Fresh, "one more than the greatest is new.");

    // The oldest counter of the window can still be marked, and is then a duplicate.
    window.mark(greatest - WINDOW + 1);
    expect(
        &window,
        greatest - WINDOW + 1,
        Check::Duplicate,
        "1873 was just marked: the oldest counter of the window has a bit like any other.",
    );
    // One step forward pushes it out.
    window.mark(greatest + 1);
    expect(
        &window,
        greatest - WINDOW + 1,
        Check::TooOld,
        "with greatest 10001 the window starts at 1874: 1873 fell out.",
    );
}

/// Early in a session the window reaches below 0: nothing is too old yet.
#[test]
fn small_counters_near_zero() {
    let mut window = ReplayWindow::new();
    window.mark(5);
    expect(
        &window,
        0,
        Check::Fresh,
        "with greatest 5, 5 - 8128 is below zero: counter 0 is inside the window. (A panic \
         here, 'attempt to subtract with overflow', comes from computing greatest - WINDOW.)",
    );
    window.mark(WINDOW - 1);
    expect(
        &window,
        0,
        Check::Fresh,
        "greatest 8127: the window is 0..=8127, so 0 is its oldest counter, never marked.",
    );
    window.mark(WINDOW);
    expect(
        &window,
        0,
        Check::TooOld,
        "greatest 8128: the window is 1..=8128, so 0 is too old.",
    );
    expect(&window, 5, Check::Duplicate, "5 is still inside the window, and marked.");
}

/// A counter pushed out of the window is too old, marked or not.
#[test]
fn too_old() {
    let mut window = ReplayWindow::new();
    for counter in 0..100 {
        window.mark(counter);
    }
    window.mark(100 + WINDOW);
    for counter in 0..=100 {
        expect(
            &window,
            counter,
            Check::TooOld,
            "greatest 8228: the window is 101..=8228, so 0..=100 are too old, whether they \
             were marked (0..100) or not (100). TooOld comes before looking at the bit.",
        );
    }
    expect(&window, 101, Check::Fresh, "101 is the oldest counter of the window.");
    // Marking a too-old counter must not set a bit for a newer one.
    window.mark(20);
    expect(
        &window,
        20 + 128 * 64,
        Check::Fresh,
        "mark(20) with greatest 8228 must do nothing: 20 is too old. Its bit position \
         (block 0, bit 20) now belongs to counter 20 + 8192 = 8212, inside the window and \
         never marked.",
    );
}

/// A jump by less than the window keeps what is still inside it and clears
/// the blocks it slides into.
#[test]
fn a_jump_clears_the_blocks_it_enters() {
    let mut window = ReplayWindow::new();
    for counter in 0..=1000 {
        window.mark(counter);
    }
    let greatest = 1000 + WINDOW;
    window.mark(greatest);
    for counter in 1001..greatest {
        let got = window.check(counter);
        assert!(
            got == Check::Fresh,
            "after marking 0..=1000, then {greatest}: check({counter}) returned {got:?}, \
             expected Fresh. It was never marked; its bit sits in a block of the ring that \
             once held counter {} and must have been cleared when the window slid into it.",
            counter % (BLOCKS as u64 * 64)
        );
    }
    expect(&window, greatest, Check::Duplicate, "the greatest was marked.");
    expect(&window, 1000, Check::TooOld, "the window is now 1001..=9128.");
}

/// A jump far beyond the window forgets everything before it, at once.
#[test]
fn a_far_jump_clears_every_old_bit() {
    let mut window = ReplayWindow::new();
    for counter in 0..(BLOCKS as u64 * 64) {
        window.mark(counter);
    }
    let greatest = 100_000 + 8191;
    window.mark(greatest);
    for counter in greatest - WINDOW + 1..greatest {
        let got = window.check(counter);
        assert!(
            got == Check::Fresh,
            "every bit of the ring was set (0..8192 marked), then {greatest} was marked: \
             check({counter}) returned {got:?}, expected Fresh. A jump of more than the ring \
             must clear every block."
        );
    }
    expect(&window, 8191, Check::TooOld, "far below the window now.");
    // Billions ahead: at most BLOCKS steps, not one per block jumped.
    let far = 1u64 << 62;
    window.mark(far);
    expect(&window, far, Check::Duplicate, "just marked.");
    expect(&window, far - 1, Check::Fresh, "never marked, inside the window.");
    expect(&window, greatest, Check::TooOld, "far below the window now.");
    window.mark(u64::MAX);
    expect(&window, u64::MAX, Check::Duplicate, "the largest counter, marked.");
    expect(&window, u64::MAX - WINDOW + 1, Check::Fresh, "the oldest of the window.");
    expect(&window, u64::MAX - WINDOW, Check::TooOld, "just below the window.");
}

/// `check` only reads: checking is not receiving.
#[test]
fn check_does_not_change_state() {
    let mut window = ReplayWindow::new();
    for counter in [0, 1, 2, 500, 1 << 20, u64::MAX] {
        window.check(counter);
        window.check(counter);
    }
    for counter in [0, 1, 2, 500] {
        expect(
            &window,
            counter,
            Check::Fresh,
            "these counters were only checked, twice each, never marked: still Fresh. \
             check must not record anything (not even through a Cell).",
        );
    }
    window.mark(10);
    window.check(20_000);
    expect(
        &window,
        10,
        Check::Duplicate,
        "check(20000) must not move the window: 10 is still inside it, and marked.",
    );
    expect(&window, 9, Check::Fresh, "9 is inside the window and was never marked.");
}

/// The attack that the order check-then-mark defeats: a forged message with
/// a huge counter fails its tag check, so it is checked and never marked.
/// If checking moved the window, every real message after it would be too
/// old and the tunnel would be dead until the next handshake.
#[test]
fn a_forged_huge_counter_does_not_block_real_traffic() {
    let mut window = ReplayWindow::new();
    for counter in 0..100 {
        assert_eq!(receive(&mut window, counter), Check::Fresh);
    }
    // The forgery: checked (Fresh: it is greater than anything marked), then
    // its tag fails, so it is never marked.
    expect(
        &window,
        u64::MAX - 1,
        Check::Fresh,
        "a counter greater than the greatest is Fresh: only the tag can tell it is forged.",
    );
    for counter in 100..20_000 {
        let got = receive(&mut window, counter);
        assert!(
            got == Check::Fresh,
            "after a forged counter u64::MAX - 1 was checked (and never marked), the real \
             counter {counter} came back {got:?}, expected Fresh. The forgery must leave no \
             trace."
        );
    }
}
