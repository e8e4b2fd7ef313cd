//! Lab 06 end to end: a service that listens only on the client's
//! 127.0.0.1, published through the server at layer 4 (`server` and
//! `expose`) and at layer 3 (`vpn-server --forward` and `vpn-client
//! --deliver`): the page, 50 concurrent 1 MB echoes, UDP echo, a client
//! killed and back on the same port, an unlisted key refused, and every
//! host left as it was. Needs root; without it the test says SKIPPED (and
//! fails under CI).

use tunlab::env::lab_test;
use tunlab::lab06::{self, NEEDS};
use tunlab::labs::Options;

#[test]
fn lab06_publishes_a_loopback_service_at_layer_4_and_layer_3() {
    if !lab_test(
        "lab06_publishes_a_loopback_service_at_layer_4_and_layer_3",
        &NEEDS,
    ) {
        return;
    }
    let out = std::env::temp_dir().join(format!("tunlab-test-{}-lab06", std::process::id()));
    let started = std::time::Instant::now();
    let report = lab06::run(&Options {
        out: out.clone(),
        fixtures: false,
        quiet: false,
    })
    .unwrap();
    report.assert_passed("lab 06");
    // The book quotes this run: every `<!-- output: lab 06 -->` block.
    tunlab::book_output::assert_lab_blocks("06", &report, &out);
    for check in [
        "the client's services listen on 127.0.0.1 only (8080/tcp, 9000/tcp, 9000/udp)",
        "the visitor cannot reach http://192.0.2.2:8080/ (it has no route to the client)",
        "the server, on the client's own link, is refused at http://192.0.2.2:8080/ (loopback only)",
        // Layer 4.
        "L4: the server listens on 198.51.100.1:8080 and :9000 for the client",
        "L4: while it runs, neither the client nor the server has changed its routes, rules, nftables or sysctls",
        "L4: the visitor gets the client's page at http://198.51.100.1:8080/",
        "L4: 50 visitors at once each echo 1 MB through 198.51.100.1:9000, every sha256 matches",
        "L4: 20 UDP datagrams to 198.51.100.1:9000 all come back equal",
        "L4: a client whose key the server does not list gets no port (198.51.100.1:8081)",
        "L4: a replayed initiation gets no answer, and the server says it was a replay",
        "L4: one host holding 100 silent visitors gets 64 streams, and another address still gets the page",
        "L4: a second client asking for port 8080, which the first holds, gets port-in-use",
        "L4: a client killed with SIGKILL and started again serves on 198.51.100.1:8080 again within 10 s",
        "L4: after exit, the client's host state equals the state before",
        "L4: after exit, the server's host state equals the state before",
        // Layer 3.
        "L3: the server forwards and DNATs 18080 and 19000 to 10.0.0.2 (table inet tunlab_step06_tun0)",
        "L3: the client DNATs 8080 and 9000 from tun0 to 127.0.0.1, with route_localnet on tun0 (table ip tunlab_step06_deliver_tun0)",
        "L3: the visitor gets the client's page at http://198.51.100.1:18080/",
        "L3: 50 visitors at once each echo 1 MB through 198.51.100.1:19000, every sha256 matches",
        "L3: 20 UDP datagrams to 198.51.100.1:19000 all come back equal",
        "L3: a client whose key the server does not list gets no handshake",
        "L3: step06-localhost down in the client undoes what the killed client left",
        "L3: after SIGKILL and down, the client's host state equals the state before",
        "L3: a client killed with SIGKILL and started again serves on 198.51.100.1:18080 again within 10 s",
        "L3: the client (l3) exits with status 0 on SIGTERM",
        "L3: after the client (l3) exits, its host state equals the state before",
        "L3: step06-localhost down in the server undoes what the killed server left",
        "L3: after SIGKILL and down, the server's host state equals the state before",
        "L3: a fresh server and client on the restored hosts serve the page again",
        "L3: the server (l3-fresh) exits with status 0 on SIGTERM",
        "L3: after the server (l3-fresh) exits, its host state equals the state before",
        "L3: the server (l3-fresh) leaves no state file in /run/tunlab",
    ] {
        report.assert_check(check);
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("lab 06 took {secs:.1} s");
    std::fs::remove_dir_all(out).unwrap();
}
