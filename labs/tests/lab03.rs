//! Lab 03 end to end: an IPv6 underlay, dual-stack tunnel addresses, and a
//! path with a small MTU. Needs root; without it the test says SKIPPED (and
//! fails under CI).

use tunlab::env::lab_test;
use tunlab::lab03::{self, NEEDS};
use tunlab::labs::Options;

#[test]
fn lab03_carries_both_families_and_fits_the_path_mtu() {
    if !lab_test("lab03_carries_both_families_and_fits_the_path_mtu", &NEEDS) {
        return;
    }
    let out = std::env::temp_dir().join(format!("tunlab-test-{}-lab03", std::process::id()));
    let report = lab03::run(&Options {
        out: out.clone(),
        fixtures: false,
        quiet: false,
    })
    .unwrap();
    report.assert_passed("lab 03");
    // The book quotes this run: every `<!-- output: lab 03 -->` block.
    tunlab::book_output::assert_lab_blocks("03", &report, &out);
    for check in [
        "ping -6 client -> server (fd00::1) over an IPv6 underlay",
        "ping -6 server -> client (fd00::2) over an IPv6 underlay",
        "ping client -> server (10.0.0.1) over an IPv6 underlay",
        "curl over IPv6 through the tunnel fetches the file intact",
        "iperf3 -6 ran for 5 s through the tunnel",
        "tshark finds no bad checksum on the server's TUN",
        "tshark finds no bad checksum on the client's TUN",
        "curl through a path of MTU 1400 fetches the file intact",
        "the SYN the server's TUN receives carries the clamped MSS",
    ] {
        report.assert_check(check);
    }
    std::fs::remove_dir_all(out).unwrap();
}
