//! Golden tests over the sessions recorded in lab 03 (`pcaps/step03/`).
//!
//! - `respond.pcap`: `step03-ipv6 respond` answering ping and ping -6. Each
//!   request replayed through a fresh [`DualResponder`] must give, byte for
//!   byte, the reply recorded after it.
//! - `routed-*-tun.pcap`: a tunnel whose path carries at most 1348-byte
//!   inner packets, with TUN devices of MTU 1500. Every packet the client's
//!   TUN device handed over is replayed through the client's [`PathHook`]:
//!   the ICMP errors it makes must be the ones recorded going back into the
//!   client's TUN, and the SYN it clamps must be, byte for byte, the SYN the
//!   server's TUN received.

use std::path::{Path, PathBuf};

use step01_ping_tun::pcap::{self, Captured};
use step01_ping_tun::run::Handler;
use step01_ping_tun::{Responder, Summary};
use step02_plain_tunnel::run::{InnerHook, Outbound};
use step03_ipv6::hook::PathHook;
use step03_ipv6::respond::DualResponder;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../pcaps/step03")
        .join(name)
}

fn read(name: &str) -> Vec<Captured> {
    pcap::read(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn is_syn(packet: &[u8]) -> bool {
    let Ok(ip) = etherparse::IpSlice::from_slice(packet) else {
        return false;
    };
    etherparse::TcpSlice::from_slice(ip.payload().payload).is_ok_and(|t| t.syn() && !t.ack())
}

#[test]
fn responder_replies_match_recorded_replies() {
    let packets = read("respond.pcap");
    let mut responder = DualResponder::new(
        Some(Responder::new("10.0.0.1/24".parse().unwrap())),
        Some("fd00::1/64".parse().unwrap()),
    );
    let mut out = vec![0u8; 65535];
    let (mut v4, mut v6) = (0, 0);
    let mut i = 0;
    while i < packets.len() {
        match responder.handle(&packets[i].data, &mut out) {
            Ok(n) => {
                let recorded = &packets.get(i + 1).expect("a reply after the request").data;
                assert_eq!(&out[..n], &recorded[..], "reply to {}", Summary(&packets[i].data));
                if packets[i].data[0] >> 4 == 6 {
                    v6 += 1
                } else {
                    v4 += 1
                }
                i += 2;
            }
            Err(_) => i += 1,
        }
    }
    // ping 10.0.0.2, ping -6 fd00::2 and ping -6 -s 1200 fd00::3, 3 each.
    assert_eq!((v4, v6), (3, 6));
    let text: String = packets
        .iter()
        .map(|p| format!("{}\n", Summary(&p.data)))
        .collect();
    insta::assert_snapshot!("respond", text);
}

#[test]
fn path_hook_reproduces_the_recorded_errors_and_clamped_syn() {
    let client = read("routed-client-tun.pcap");
    let server = read("routed-server-tun.pcap");
    let hook = PathHook::new(
        1348,
        Some("10.0.0.2".parse().unwrap()),
        Some("fd00::2".parse().unwrap()),
    );
    let mut reply = vec![0u8; 65535];
    let (mut errors, mut syns) = (0, 0);
    for (i, captured) in client.iter().enumerate() {
        let mut packet = captured.data.clone();
        let syn = is_syn(&packet);
        match hook.outbound(&mut packet, std::time::Instant::now(), &mut reply) {
            Outbound::Reply(n) => {
                // Written back into the client's TUN right after.
                assert!(
                    client[i + 1..].iter().any(|p| p.data == reply[..n]),
                    "our error for {} is not in the capture",
                    Summary(&captured.data)
                );
                errors += 1;
            }
            Outbound::Send if syn => {
                assert!(
                    server.iter().any(|p| p.data == packet),
                    "the clamped SYN {} did not arrive as such",
                    Summary(&packet)
                );
                syns += 1;
            }
            Outbound::Send | Outbound::Drop(_) => {}
        }
    }
    // One ping too big in each family; one HTTP fetch.
    assert_eq!(errors, 2);
    assert_eq!(syns, 1);
    for (name, packets) in [("routed-client-tun", &client), ("routed-server-tun", &server)] {
        let text: String = packets
            .iter()
            .map(|p| format!("{}\n", Summary(&p.data)))
            .collect();
        insta::assert_snapshot!(name, text);
    }
}
