//! Golden tests: replay the captures recorded in lab 01 (`pcaps/step01/`)
//! through the responder.
//!
//! In each capture, every echo request our program answered is followed by
//! the reply it wrote. Replaying the capture through a fresh [`Responder`]
//! must give, for every packet it answers, exactly the bytes recorded right
//! after it, and must answer nothing else. Linux's ping accepted each of
//! those replies in the lab, so this holds the code to what worked on the
//! wire. An insta snapshot per capture keeps its decoded lines.

use std::path::{Path, PathBuf};

use step01_ping_tun::checksum;
use step01_ping_tun::pcap::{self, Captured};
use step01_ping_tun::{Outcome, Responder, Summary};

fn captures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pcaps/step01");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    files.sort();
    files
}

/// Replays `packets` and returns how many replies matched, failing on the
/// first reply that differs from the recorded one.
fn replay(name: &str, packets: &[Captured]) -> usize {
    let mut responder = Responder::new("10.0.0.1/24".parse().unwrap());
    let mut out = vec![0u8; 65535];
    let mut replies = 0;
    let mut i = 0;
    while i < packets.len() {
        match responder.handle(&packets[i].data, &mut out) {
            Outcome::Reply(n) => {
                let recorded = packets.get(i + 1).unwrap_or_else(|| {
                    panic!("{name}: packet {i} was answered, but the capture ends without a reply")
                });
                assert_eq!(
                    out[..n],
                    recorded.data[..],
                    "{name}: our reply to packet {i} ({}) differs from the recorded reply ({})",
                    Summary(&packets[i].data),
                    Summary(&recorded.data)
                );
                replies += 1;
                i += 2;
            }
            Outcome::Drop(_) => i += 1,
        }
    }
    replies
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

#[test]
fn replies_match_recorded_replies_byte_for_byte() {
    let mut files = 0;
    insta::glob!("../../../pcaps", "step01/*.pcap", |path| {
        files += 1;
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let packets = pcap::read(path).unwrap();
        let replies = replay(&name, &packets);
        match name.as_str() {
            // The kernel answers pings to its own address: nothing crosses tun0.
            "ping-kernel" => assert_eq!(replies, 0, "{name}"),
            // Every scenario of lab 01 (7 of them, 3 pings each).
            "session" => assert_eq!(replies, 21, "{name}"),
            _ => assert_eq!(replies, 3, "{name}"),
        }
        let text: String = packets
            .iter()
            .map(|p| format!("{}\n", Summary(&p.data)))
            .collect();
        snapshot(&name, &text);
    });
    assert!(
        files >= 9,
        "expected the lab 01 captures in pcaps/step01, found {files}"
    );
}

/// Our RFC 1071 code agrees with the checksums Linux computed: every IPv4
/// header and every ICMP message in the captures verifies, the kernel's
/// requests and our replies alike, and flipping any single bit of them makes
/// verification fail.
#[test]
fn checksums_of_captured_packets_verify() {
    let mut checked = 0;
    for path in captures() {
        for packet in pcap::read(&path).unwrap() {
            let p = &packet.data;
            if p.first().map(|b| b >> 4) != Some(4) {
                continue;
            }
            let header_len = usize::from(p[0] & 0x0f) * 4;
            let (header, message) = p.split_at(header_len);
            assert!(
                checksum::verify(header),
                "{}: IPv4 header of {}",
                path.display(),
                Summary(p)
            );
            if p[9] == 1 {
                assert!(
                    checksum::verify(message),
                    "{}: ICMP message of {}",
                    path.display(),
                    Summary(p)
                );
                for bit in [0, 7, 13] {
                    let mut bad = message.to_vec();
                    let byte = bad.len() - 1 - bit % bad.len();
                    bad[byte] ^= 1 << (bit % 8);
                    assert!(
                        !checksum::verify(&bad),
                        "a flipped bit went unnoticed in {}",
                        Summary(p)
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 42, "only {checked} IPv4 packets in the captures");
}
