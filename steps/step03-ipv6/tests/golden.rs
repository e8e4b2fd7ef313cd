//! Golden tests over the sessions recorded in lab 03 (`pcaps/step03/`).
//!
//! - `respond.pcap`: `step03-ipv6 respond` answering ping and ping -6. Each
//!   request replayed through a fresh [`DualResponder`] must give, byte for
//!   byte, the reply recorded after it.
//! - `routed-*-tun.pcap`: a tunnel whose path carries at most 1348-byte
//!   inner packets, with TUN devices of MTU 1500. Every packet the client's
//!   TUN device handed over is replayed through the client's
//!   [`PathPolicy`] around step 02's tunnel:
//!   the ICMP errors it makes must be the ones recorded going back into the
//!   client's TUN, and the SYN it clamps must be, byte for byte, the SYN the
//!   server's TUN received.

use std::path::{Path, PathBuf};

use step01_ping_tun::pcap::{self, Captured};
use step01_ping_tun::run::Handler;
use step01_ping_tun::{Responder, Summary};
use step02_plain_tunnel::run::{Core, Outgoing};
use step02_plain_tunnel::wire::HEADER_LEN;
use step02_plain_tunnel::{Role, Tunnel};
use step03_ipv6::hook::PathPolicy;
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
}

#[test]
fn path_hook_reproduces_the_recorded_errors_and_clamped_syn() {
    let client = read("routed-client-tun.pcap");
    let server = read("routed-server-tun.pcap");
    let tunnel = Tunnel::new(
        Role::Client {
            server: "192.0.2.1:51820".parse().unwrap(),
        },
        1500,
        None,
    );
    let mut policy = PathPolicy::new(
        tunnel,
        1348,
        Some("10.0.0.2".parse().unwrap()),
        Some("fd00::2".parse().unwrap()),
    );
    let mut out = vec![0u8; 65535];
    let (mut errors, mut syns) = (0, 0);
    for (i, captured) in client.iter().enumerate() {
        let mut packet = captured.data.clone();
        let syn = is_syn(&packet);
        match policy.encapsulate(&mut packet, std::time::Instant::now(), &mut out) {
            Ok(Outgoing::Answer(n)) => {
                // Written back into the client's TUN right after.
                assert!(
                    client[i + 1..].iter().any(|p| p.data == out[..n]),
                    "our error for {} is not in the capture",
                    Summary(&captured.data)
                );
                errors += 1;
            }
            Ok(Outgoing::Send(t)) if syn => {
                // The message carries the packet after step 02's header.
                let sent = &out[HEADER_LEN..t.len];
                assert!(
                    server.iter().any(|p| p.data == sent),
                    "the clamped SYN {} did not arrive as such",
                    Summary(sent)
                );
                syns += 1;
            }
            Ok(_) | Err(_) => {}
        }
    }
    // One ping too big in each family; one HTTP fetch.
    assert_eq!(errors, 2);
    assert_eq!(syns, 1);
}

/// One snapshot per capture, named by the file as it always was (glob!
/// would add the file's name to it), so that a run reports every capture
/// whose decoded lines changed, not only the first.
fn snapshot(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.remove_snapshot_suffix();
    settings.remove_input_file();
    settings.bind(|| insta::assert_snapshot!(name, text));
}

/// Every capture of lab 03, decoded.
#[test]
fn decoded_captures() {
    let mut files = 0;
    insta::glob!("../../../pcaps", "step03/*.pcap", |path| {
        files += 1;
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text: String = pcap::read(path)
            .unwrap()
            .iter()
            .map(|p| format!("{}\n", Summary(&p.data)))
            .collect();
        snapshot(&name, &text);
    });
    assert_eq!(files, 3, "respond and the routed tunnel's two TUN devices");
}
