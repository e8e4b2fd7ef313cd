//! Lab 02 end to end: two lab hosts joined by a veth underlay, the real
//! step 02 binaries on both, over UDP and over TCP. Needs root; without it
//! the test says SKIPPED (and fails under CI).

use tunlab::env::lab_test;
use tunlab::lab02::{self, NEEDS};
use tunlab::labs::Options;

#[test]
fn lab02_carries_traffic_both_ways_over_udp_and_tcp() {
    if !lab_test("lab02_carries_traffic_both_ways_over_udp_and_tcp", &NEEDS) {
        return;
    }
    let out = std::env::temp_dir().join(format!("tunlab-test-{}-lab02", std::process::id()));
    let report = lab02::run(&Options {
        out: out.clone(),
        fixtures: false,
        quiet: false,
    })
    .unwrap();
    report.assert_passed("lab 02");
    // The book quotes this run: every `<!-- output: lab 02 -->` block.
    tunlab::book_output::assert_lab_blocks("02", &report, &out);
    for transport in ["udp", "tcp"] {
        for check in [
            "ping client -> server (10.0.0.1)",
            "ping server -> client (10.0.0.2)",
            "the ping payload is readable on the underlay",
            "10 MB sent with nc arrive intact (sha256 matches)",
            "iperf3 ran for 5 s through the tunnel",
        ] {
            let name = format!("{transport}: {check}");
            report.assert_check(&name);
        }
    }
    // The meltdown experiment ran every transfer to the end, intact.
    for condition in lab02::CONDITIONS {
        for transport in ["udp", "tcp"] {
            let name = format!(
                "meltdown: {transport} transport, {}: the transfer arrives intact",
                condition.name
            );
            report.assert_check(&name);
        }
    }
    std::fs::remove_dir_all(out).unwrap();
}
