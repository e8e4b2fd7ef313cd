//! A short soak (48 s): step 05's VPN through the impairment relay, with a
//! client restart, a roam, rekeys every 10 s, iperf3 both ways and pings;
//! no panic, no stall after the impairment stops, no memory growth past
//! the warm-up. The 30-minute run is `tunlab soak --minutes 30`. Needs
//! root; without it the test says SKIPPED (and fails under CI).

use std::time::Duration;

use tunlab::env::lab_test;
use tunlab::soak::{self, NEEDS, Options};

#[test]
fn a_short_soak_sees_no_panic_no_stall_and_no_growth() {
    if !lab_test("a_short_soak_sees_no_panic_no_stall_and_no_growth", &NEEDS) {
        return;
    }
    let out = std::env::temp_dir().join(format!("tunlab-test-{}-soak", std::process::id()));
    let result = soak::run(&Options {
        duration: Duration::from_secs(48),
        out: out.clone(),
        quiet: false,
    })
    .unwrap();
    let summary = soak::summary(&result);
    println!("{summary}");
    assert!(result.passed(), "the soak failed:\n{summary}");
    assert_eq!(
        (result.restarts, result.roams),
        (1, 1),
        "one restart and one roam in 48 s"
    );
    assert!(result.samples.len() >= 20, "{} samples", result.samples.len());
    // What the soak wrote is what the book shows: the table is made from
    // the JSON alone.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("soak.json")).unwrap()).unwrap();
    assert_eq!(
        soak::markdown(&json).unwrap(),
        std::fs::read_to_string(out.join("soak.md")).unwrap()
    );
    assert_eq!(json["cycles"].as_array().map(Vec::len), Some(3));
    std::fs::remove_dir_all(&out).unwrap();
}
