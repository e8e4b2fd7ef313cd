//! Tests for the lab 07 exercise. `tunlab check 07` compiles them together
//! with your `timestamp.rs`; every test must pass.

use std::time::{Duration, Instant};

use crate::exercise::{Guard, Verdict, tai64n};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn the_epoch_is_2_to_the_62_plus_10() {
    assert_eq!(
        hex(&tai64n(Duration::ZERO)),
        "400000000000000a00000000",
        "1970 is 2^62 + 10 seconds, big-endian, and no nanoseconds"
    );
}

#[test]
fn seconds_and_whitened_nanoseconds_big_endian() {
    // 2^62 + 10 + 1 700 000 000 = 0x400000006553f10a; 999 999 999 ns with
    // the low 24 bits cleared is 989 855 744 = 0x3b000000.
    assert_eq!(
        hex(&tai64n(Duration::new(1_700_000_000, 999_999_999))),
        "400000006553f10a3b000000"
    );
    // Within one 2^24 ns slot, two times give the same timestamp.
    assert_eq!(
        tai64n(Duration::new(5, 1_000)),
        tai64n(Duration::new(5, 16_000_000)),
        "clear the low 24 bits of the nanoseconds"
    );
}

#[test]
fn later_times_compare_greater_as_bytes() {
    let a = tai64n(Duration::new(1_700_000_000, 999_999_999));
    let b = tai64n(Duration::new(1_700_000_001, 0));
    assert!(a < b, "the seconds come first, big-endian");
    let c = tai64n(Duration::new(1_700_000_001, 500_000_000));
    assert!(b < c);
}

#[test]
fn a_replayed_initiation_is_refused_and_changes_nothing() {
    let t0 = Instant::now();
    let mut g = Guard::new();
    let first = tai64n(Duration::new(100, 0));
    assert_eq!(g.check(first, t0), Verdict::Accept);
    let later = t0 + Duration::from_secs(1);
    assert_eq!(g.check(first, later), Verdict::Replay, "the same timestamp again is a replay");
    let older = tai64n(Duration::new(99, 0));
    assert_eq!(g.check(older, later), Verdict::Replay, "an older one too");
    // The refused ones changed nothing: a newer one is still accepted.
    assert_eq!(g.check(tai64n(Duration::new(101, 0)), later), Verdict::Accept);
}

#[test]
fn two_initiations_within_20_ms_are_a_flood() {
    let t0 = Instant::now();
    let mut g = Guard::new();
    assert_eq!(g.check(tai64n(Duration::new(100, 0)), t0), Verdict::Accept);
    let soon = t0 + Duration::from_millis(19);
    assert_eq!(
        g.check(tai64n(Duration::new(100, 100_000_000)), soon),
        Verdict::Flood,
        "newer, but only 19 ms after the last accepted one"
    );
    // A flood is not remembered as accepted: 20 ms after the first, the
    // same timestamp is fine.
    let later = t0 + Duration::from_millis(20);
    assert_eq!(g.check(tai64n(Duration::new(100, 100_000_000)), later), Verdict::Accept);
}

#[test]
fn a_replay_is_a_replay_even_when_it_is_also_too_soon() {
    let t0 = Instant::now();
    let mut g = Guard::new();
    let ts = tai64n(Duration::new(100, 0));
    assert_eq!(g.check(ts, t0), Verdict::Accept);
    assert_eq!(
        g.check(ts, t0 + Duration::from_millis(1)),
        Verdict::Replay,
        "check the timestamp first, then the interval"
    );
}
