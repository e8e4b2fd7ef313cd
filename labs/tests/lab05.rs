//! Lab 05 end to end: a full tunnel from two clients through a server that
//! forwards and masquerades, checked for leaks, spoofing, a small-MTU path,
//! a client killed with SIGKILL (the kill switch holds until `down`), a
//! start over a killed run's leftovers, and every host left exactly as it
//! was. Needs root; without it the test says SKIPPED (and fails under CI).

use tunlab::env::lab_test;
use tunlab::lab05::{self, NEEDS};
use tunlab::labs::Options;

#[test]
fn lab05_routes_everything_through_the_tunnel_and_leaves_the_hosts_as_they_were() {
    if !lab_test(
        "lab05_routes_everything_through_the_tunnel_and_leaves_the_hosts_as_they_were",
        &NEEDS,
    ) {
        return;
    }
    let out = std::env::temp_dir().join(format!("tunlab-test-{}-lab05", std::process::id()));
    let report = lab05::run(&Options {
        out: out.clone(),
        fixtures: false,
        quiet: false,
    })
    .unwrap();
    report.assert_passed("lab 05");
    // The book quotes this run: every `<!-- output: lab 05 -->` block.
    tunlab::book_output::assert_lab_blocks("05", &report, &out);
    for check in [
        "host state recorded in client1, client2 and server before the tunnel",
        "client1 routes every address into tun0 but the server's (192.0.2.1 by veth0)",
        "client2 routes every address into tun0 but the server's (192.0.2.129 by veth0)",
        "client1's resolv.conf says nameserver 198.51.100.53 while it runs",
        "client1's kill switch is in its nftables ruleset (table inet tunlab_step05_ks_tun0)",
        "the server forwards and masquerades 10.0.0.0/24 and fd00::/64 (table inet tunlab_step05_tun0)",
        "curl from client1 to http://198.51.100.2/ shows the server's address (198.51.100.1)",
        "curl -6 from client1 to http://[2001:db8:100::2]/ shows the server's address (2001:db8:100::1)",
        "curl from client2 to http://198.51.100.2/ shows the server's address (198.51.100.1)",
        "curl -6 from client2 to http://[2001:db8:100::2]/ shows the server's address (2001:db8:100::1)",
        "ping -6 from client1 to 2001:db8:100::2 through the tunnel",
        "ping from client1 to client2 (10.0.0.3) through the server",
        "ping -6 from client1 to client2 (fd00::3) through the server",
        "client1 looks up www.example.test through the tunnel, at 198.51.100.53",
        "client1 sending from client2's address (10.0.0.3) gets no reply",
        "the server drops client1's packets from 10.0.0.3 as source-not-allowed",
        "20 MB downloaded by client1 over its 1400-byte path arrive intact (sha256 matches)",
        "client1's underlay capture holds the download",
        "no tunnel datagram on client1's 1400-byte path is fragmented",
        "no TCP on client1's underlay",
        "no DNS on client1's underlay",
        "no ping (ICMP or ICMPv6 echo) on client1's underlay",
        "client1's underlay carries only the tunnel's UDP to and from 192.0.2.1:51820",
        "after SIGKILL, client1's tun0 is gone",
        "after SIGKILL, the kill switch still blocks client1 (curl fails)",
        "after SIGKILL, nothing of those curls reaches client1's underlay",
        "with the kill switch on, client1's DHCP and DHCPv6 client messages leave, other UDP does not",
        "step05-full-tunnel down (no --tun) in client1 finds and undoes what the killed client left",
        "after down, client1's host state equals the state before",
        "after down, client1's state file is gone",
        "after down, a direct curl from client1 works, outside the tunnel (192.0.2.2)",
        "after down, a direct curl -6 from client1 works, outside the tunnel (2001:db8:1::2)",
        "client1 started over a killed run's leftovers undoes them first",
        "the restarted client1 goes through the tunnel again",
        "client1 exits with status 0 on SIGTERM",
        "client2 exits with status 0 on SIGTERM",
        "server exits with status 0 on SIGTERM",
        "after exit, client1's host state equals the state before",
        "after exit, client2's host state equals the state before",
        "after exit, server's host state equals the state before",
        "no state file is left in /run/tunlab for the lab's hosts",
    ] {
        report.assert_check(check);
    }
    // Nothing of the lab is left on the machine: no resolver copies.
    let leftovers: Vec<String> = std::fs::read_dir("/etc/netns")
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("tl-{}-", std::process::id())))
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "/etc/netns still holds {leftovers:?}");
    std::fs::remove_dir_all(out).unwrap();
}
