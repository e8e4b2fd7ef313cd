//! Golden test: a control connection recorded in lab 06, decrypted.
//!
//! The lab captures the server's control port with tcpdump
//! (`pcaps/step06/control.pcap`, Ethernet frames) while `expose --keylog`
//! writes the client's ephemeral private key of each handshake to
//! `client.keylog`. With the client's test-only key and the server's
//! public key, that is all it takes to read the session, as Wireshark
//! does with a key log ([`step06_localhost::recording`], which `tunlab
//! decode --keylog` uses too):
//!
//! 1. Each TCP connection's two byte streams are put back together from
//!    the segments, by sequence number.
//! 2. The client's initiation is made again from its static key, the
//!    logged ephemeral and the timestamp it carries, and must equal the
//!    recorded one byte for byte.
//! 3. The replayed client takes the recorded response and derives the
//!    session keys: it opens the server's records, and its
//!    [`mirror`](step06_localhost::secure::SecureChannel::mirror), an
//!    opener that cannot seal, opens the client's.
//! 4. Every record in both directions must open and parse; the frames,
//!    one line each in time order, are pinned by a snapshot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use step01_ping_tun::pcap::{self, DataLink};
use step04_crypto::keys;
use step04_crypto::noise::Identity;
use step04_crypto::run::read_keylog;
use step04_crypto::{PublicKey, StaticSecret};
use step06_localhost::recording;
use step06_localhost::wire::Repr;

const FILES: [&str; 4] = [
    "control.pcap",
    "client.keylog",
    "test-only-server.key",
    "test-only-client.key",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../pcaps/step06")
        .join(name)
}

/// Fails with what is missing and how to make it.
fn require_fixtures() {
    let missing: Vec<&str> = FILES.iter().copied().filter(|f| !fixture(f).exists()).collect();
    assert!(
        missing.is_empty(),
        "pcaps/step06/ lacks {}: lab 06 records them (tcpdump on the server's control port \
         into control.pcap, `expose --keylog client.keylog`, and the test-only keys it used); \
         see pcaps/README.md",
        missing.join(", ")
    );
}

/// A test-only key stored beside the capture. Git does not keep file
/// modes, so it is read as text, not through `read_key_file` (which
/// would rightly refuse a key file others can read).
fn key(name: &str) -> StaticSecret {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    keys::parse_secret(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_recorded_control_connection_decrypts() {
    require_fixtures();
    let server = PublicKey::from(&key("test-only-server.key"));
    let client = Arc::new(Identity::new(key("test-only-client.key")));
    let keylog = read_keylog(&std::fs::read_to_string(fixture("client.keylog")).unwrap());
    let (link, frames) = pcap::read_any(&fixture("control.pcap")).unwrap();
    assert_eq!(
        link,
        DataLink::ETHERNET,
        "tcpdump on a veth (or lo) records Ethernet"
    );
    let connections = recording::connections(link, &frames).unwrap();
    assert!(
        !connections.is_empty(),
        "no control connection in control.pcap: start tcpdump before the client connects"
    );
    assert!(
        keylog.len() >= connections.len(),
        "client.keylog has {} keys for {} connections: was it written by the same run?",
        keylog.len(),
        connections.len()
    );
    let mut text = String::new();
    let mut frames = 0;
    for (n, conn) in connections.iter().enumerate() {
        let opened = recording::decrypt(conn, &client, &server, &keylog)
            .unwrap_or_else(|e| panic!("connection {n}: {e}"));
        let _ = writeln!(
            text,
            "connection {n}: client port {} > server port {}",
            conn.client.port(),
            conn.server.port()
        );
        for record in opened {
            let line = match (&record.frame, record.from_client) {
                (None, true) => "handshake initiation".to_string(),
                (None, false) => "handshake response".to_string(),
                (Some(frame), from_client) => {
                    frames += 1;
                    let repr = Repr::parse_bytes(frame)
                        .unwrap_or_else(|e| panic!("a record opened to a bad frame ({e}): {frame:02x?}"));
                    let way = if from_client {
                        "client > server"
                    } else {
                        "server > client"
                    };
                    format!("{way}: {repr}")
                }
            };
            let _ = writeln!(text, "  {line}");
        }
    }
    assert!(frames >= 3, "a Hello, an Expose and an Exposed at least");
    insta::assert_snapshot!("control", text);
}
