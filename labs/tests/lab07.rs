//! Lab 07 end to end: step 07 against wireguard-go and boringtun, each in
//! both roles, configured by wg; a wrong pre-shared key; a flood of
//! initiations; a capture decrypted with a key log. Needs root and the
//! WireGuard peers; without them the test says SKIPPED and how to install
//! them (and fails under CI).

use tunlab::env::lab_test;
use tunlab::lab07::{self, NEEDS};
use tunlab::labs::Options;

#[test]
fn lab07_interoperates_with_wireguard_go_and_boringtun() {
    if !lab_test("lab07_interoperates_with_wireguard_go_and_boringtun", &NEEDS) {
        return;
    }
    let out = std::env::temp_dir().join(format!("tunlab-test-{}-lab07", std::process::id()));
    let report = lab07::run(&Options {
        out: out.clone(),
        fixtures: false,
        quiet: false,
    })
    .unwrap();
    report.assert_passed("lab 07");
    // The book quotes this run: every `<!-- output: lab 07 -->` block.
    tunlab::book_output::assert_lab_blocks("07", &report, &out);
    for peer in ["wireguard-go", "boringtun"] {
        for role in ["initiator", "responder"] {
            let who = format!("{peer} (step 07 as {role})");
            for check in [
                format!("{who}: ping 10.0.0.{}", if role == "initiator" { 2 } else { 1 }),
                format!("{who}: 20 MB arrive intact (sha256 matches)"),
                format!("{who}: iperf3 TCP runs through"),
                format!("{who}: wg show on step 07 shows the peer, its endpoint, a handshake and traffic"),
                format!("{who}: wg show on {peer} shows step 07, its endpoint and traffic"),
                format!(
                    "{who}: wg showconf on step 07 names the peer, and wg syncconf takes it back unchanged"
                ),
                format!("{who}: a new handshake while a ping runs (the responder's latest handshake moves)"),
                format!("{who}: step 07 exits cleanly on SIGTERM"),
            ] {
                report.assert_check(&check);
            }
        }
        report.assert_check(&format!(
            "{peer} (step 07 as initiator): wg setconf of that file on step 07 reads back the same, and a new handshake follows"
        ));
        report.assert_check(&format!(
            "{peer} (step 07 as initiator): after wg setconf, ping 10.0.0.2"
        ));
        report.assert_check(&format!(
            "flood, {peer}: step 07 answers the flood with cookie replies"
        ));
        report.assert_check(&format!(
            "flood, {peer}: the real peer still connects during the flood, after a cookie round trip"
        ));
    }
    report.assert_check("a wrong pre-shared key: no ping gets through");
    report.assert_check("up FILE.conf brings up a full tunnel to wireguard-go");
    report.assert_check(
        "after up: ping through the tunnel, everything routed into it, the resolver from DNS (both servers, the search domain)",
    );
    report.assert_check("down FILE.conf after kill -9 puts the routes and the resolver back as they were");
    if tunlab::env::on_path("tshark") {
        report.assert_check(
            "a capture of step 07 and wireguard-go decrypts in tshark with step 07's own key log (wg.keylog_file)",
        );
    }
    std::fs::remove_dir_all(out).unwrap();
}
