//! Every shipped capture carries checksums that verify, as tshark checks
//! them (IPv4 header, TCP, UDP, ICMP and ICMPv6). A capture recorded on a
//! veth with transmit checksum offload on holds partial UDP and TCP
//! checksums, which tshark reports as bad and which mislead a student
//! reading the capture: the labs record their fixtures with offload off
//! (`ethtool -K DEV tx off`, see pcaps/README.md).
//!
//! Needs tshark; without it the test says SKIPPED, and under CI
//! (`CI=true`) it fails instead.

use std::path::{Path, PathBuf};

use tunlab::captures::{first_few, tshark_bad_checksums};
use tunlab::env::{tool_test, workspace_root};

/// Every `.pcap` and `.pcapng` under `pcaps/`, sorted.
fn shipped_captures() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "pcap" || e == "pcapng") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&workspace_root().join("pcaps"), &mut out);
    out.sort();
    out
}

#[test]
fn no_shipped_capture_has_a_bad_checksum() {
    if !tool_test("no_shipped_capture_has_a_bad_checksum", "tshark") {
        return;
    }
    let captures = shipped_captures();
    // Steps 01 to 06 ship captures; an empty list means a wrong folder.
    assert!(captures.len() >= 20, "only {} captures found", captures.len());
    let mut failures = Vec::new();
    for capture in &captures {
        let bad = tshark_bad_checksums(capture).unwrap();
        if !bad.is_empty() {
            let name = capture.strip_prefix(workspace_root()).unwrap_or(capture);
            failures.push(format!(
                "{}: {} packets with a bad checksum, such as: {}",
                name.display(),
                bad.len(),
                first_few(&bad)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "tshark finds bad checksums (record again with offload off: pcaps/README.md):\n{}",
        failures.join("\n")
    );
}
