//! Lab 04 end to end: the encrypted tunnel between two lab hosts, attacked
//! and disturbed (a replayed message, a client with an unlisted key, a
//! client that moves, a link that reorders and duplicates, a client killed
//! and started again, a flood of forged handshake initiations). Needs
//! root; without it the test says SKIPPED (and fails under CI).

use tunlab::env::lab_test;
use tunlab::lab04::{self, NEEDS};
use tunlab::labs::Options;

#[test]
fn lab04_hides_the_traffic_and_withstands_replay_roaming_and_restart() {
    if !lab_test(
        "lab04_hides_the_traffic_and_withstands_replay_roaming_and_restart",
        &NEEDS,
    ) {
        return;
    }
    let out = std::env::temp_dir().join(format!("tunlab-test-{}-lab04", std::process::id()));
    let report = lab04::run(&Options {
        out: out.clone(),
        fixtures: false,
        quiet: false,
    })
    .unwrap();
    report.assert_passed("lab 04");
    // The book quotes this run: every `<!-- output: lab 04 -->` block.
    tunlab::book_output::assert_lab_blocks("04", &report, &out);
    for check in [
        "ping client -> server (10.0.0.1)",
        "ping -6 client -> server (fd00::1)",
        "ping server -> client (10.0.0.2)",
        "ping -6 server -> client (fd00::2)",
        "10 MB sent with nc arrive intact (sha256 matches)",
        "the underlay capture holds the transfer",
        "the ping payload is not readable on the underlay",
        "no sample of the 10 MB file is readable on the underlay",
        "the underlay carries only UDP between the client and the server's port 51820",
        "the underlay shows the handshake: initiations of 132 bytes, responses of 76",
        "a replayed data message is dropped as a replay",
        "a replayed message does not move the client's endpoint",
        "a key file that others can read is refused (exit 1, chmod 600)",
        "ping from a client the server does not list fails",
        "the server counts the unlisted client's handshakes as unknown-peer",
        "a client whose key the server does not list gets no handshake",
        "ping keeps going while the client moves to 192.0.2.3",
        "the server follows the client to 192.0.2.3",
        "a client killed and started again gets a ping through within 10 s",
        "client exits cleanly on SIGTERM",
        "server exits cleanly on SIGTERM",
        "4 MB through a link that reorders and duplicates arrive intact (sha256 matches)",
        "the server drops the relay's duplicates as replays",
        "the flood was sent (tunlab-flood exits 0)",
        "ping keeps going through a flood of 30000 forged initiations",
        "a new client connects during the flood within 5 s",
        "the server spends Diffie-Hellman work on no more of the flood than its budget",
    ] {
        report.assert_check(check);
    }
    std::fs::remove_dir_all(out).unwrap();
}
