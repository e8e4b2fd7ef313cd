//! Lab 08 end to end: step 08 against wireguard-go and boringtun, each in
//! both roles, and under a flood of initiations; its offloads seen in use
//! (tcpdump on the TUN devices, its counters); the fallback when the
//! kernel refuses GSO; the throughput exercise, whose flags must do what
//! they say. Needs root and the WireGuard peers; without them the test
//! says SKIPPED (and fails under CI).

use tunlab::env::lab_test;
use tunlab::lab08::{self, NEEDS};
use tunlab::labs::Options;

#[test]
fn lab08_the_fast_path_interoperates_and_uses_its_offloads() {
    if !lab_test("lab08_the_fast_path_interoperates_and_uses_its_offloads", &NEEDS) {
        return;
    }
    let out = std::env::temp_dir().join(format!("tunlab-test-{}-lab08", std::process::id()));
    let report = lab08::run(&Options {
        out: out.clone(),
        fixtures: false,
        quiet: false,
    })
    .unwrap();
    report.assert_passed("lab 08");
    // The book quotes this run: every `<!-- output: lab 08 -->` block.
    tunlab::book_output::assert_lab_blocks("08", &report, &out);
    for peer in ["wireguard-go", "boringtun"] {
        for role in ["initiator", "responder"] {
            let who = format!("{peer} (step 08 as {role})");
            for check in [
                format!("{who}: 20 MB arrive intact (sha256 matches)"),
                format!("{who}: iperf3 TCP runs through"),
                format!("{who}: wg show on step 08 shows the peer, its endpoint, a handshake and traffic"),
                format!("{who}: step 08 exits cleanly on SIGTERM"),
            ] {
                report.assert_check(&check);
            }
        }
        report.assert_check(&format!(
            "flood, {peer}: the real peer still connects during the flood, after a cookie round trip"
        ));
    }
    report.assert_check(
        "offload: the kernel hands step 08 TCP super-packets (tcpdump on its TUN device sees packets longer than the MTU)",
    );
    report.assert_check("offload: step 08 sends UDP GSO messages, several datagrams each");
    report.assert_check(
        "fallback: on a path with a smaller MTU the kernel refuses UDP GSO, and step 08 sends the datagrams one by one",
    );
    report.assert_check(
        "exercise, + UDP GRO: iperf3 runs through and the counters show exactly the techniques its flags leave on",
    );
    std::fs::remove_dir_all(out).unwrap();
}
