//! `--keylog`: what it writes for each handshake, and that Wireshark's
//! WireGuard dissector decrypts a session with nothing but that file.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use step01_ping_tun::pcap::Recorder;
use step04_crypto::keys::encode;
use step07_wireguard::device::Device;
use step07_wireguard::keylog::{KeyLog, ephemerals};
use step07_wireguard::wire::{Initiation, MessageType, Response};
use x25519_dalek::{PublicKey, StaticSecret};

const PSK: [u8; 32] = [7; 32];

/// A fresh folder for one test's files.
fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("step07-keylog-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Two devices with a pre-shared key, a (key 1) drawing its ephemeral keys
/// through a key log at `path`.
fn pair_with_keylog(path: &Path) -> (Pair, KeyLog) {
    let mut p = Pair::with_psk(PSK, PSK);
    let (log, entropy) = KeyLog::create(path).unwrap();
    let mut a = Device::new(MTU, Box::new(entropy), p.t0, UNIX_START);
    a.set_private_key(Some(secret(1)));
    let b = a.add_peer(public(2)).unwrap();
    a.add_allowed_ip(b, "10.0.0.2/32".parse().unwrap());
    a.set_endpoint(b, addr(B));
    a.set_preshared_key(b, PSK);
    p.a = a;
    (p, log)
}

/// Shows the key log every message a sent.
fn log_what_a_sent(p: &Pair, log: &mut KeyLog) {
    for m in p.log.iter().filter(|m| m.from == p.a_addr) {
        log.sent(&p.a, &m.bytes);
    }
}

/// The ephemeral public key of a handshake message.
fn ephemeral_of(message: &[u8]) -> [u8; 32] {
    match MessageType::of(message) {
        Some(MessageType::Initiation) => Initiation::new_checked(message).unwrap().ephemeral(),
        Some(MessageType::Response) => Response::new_checked(message).unwrap().ephemeral(),
        other => panic!("{other:?} is not a handshake message"),
    }
}

#[test]
fn each_handshake_gets_the_four_keys_in_extract_handshakes_format() {
    let dir = folder("format");
    let path = dir.join("a.keys");
    let (mut p, mut log) = pair_with_keylog(&path);
    p.a_sends(&a_to_b(1));
    p.settle();
    log_what_a_sent(&p, &mut log);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(lines[0], "New handshake session:");
    assert_eq!(
        lines[1],
        format!("  LOCAL_STATIC_PRIVATE_KEY = {}", encode(&[1; 32]))
    );
    assert_eq!(
        lines[2],
        format!("  REMOTE_STATIC_PUBLIC_KEY = {}", encode(public(2).as_bytes()))
    );
    assert!(lines[3].starts_with("  LOCAL_EPHEMERAL_PRIVATE_KEY = "));
    assert_eq!(lines[4], format!("  PRESHARED_KEY = {}", encode(&PSK)));
    // The ephemeral key is the one a's initiation carries.
    let init = p.log.iter().find(|m| m.from == p.a_addr).unwrap();
    let logged = ephemerals(&text);
    assert_eq!(logged.len(), 1);
    assert_eq!(
        PublicKey::from(&StaticSecret::from(logged[0])).to_bytes(),
        ephemeral_of(&init.bytes)
    );

    // As the responder, a logs its response's ephemeral key, with the
    // initiator as the remote: b starts a new handshake.
    p.now += Duration::from_secs(200);
    p.b_sends(&b_to_a(2));
    p.settle();
    assert!(
        p.log.iter().any(|m| m.from == p.a_addr && m.bytes[0] == 2),
        "a answered b's initiation"
    );
    log_what_a_sent(&p, &mut log);
    let text = std::fs::read_to_string(&path).unwrap();
    // One session for each handshake message a sent, initiation or
    // response, in order, each with the ephemeral key its message carries.
    let sent: Vec<[u8; 32]> = p
        .log
        .iter()
        .filter(|m| m.from == p.a_addr && matches!(m.bytes[0], 1 | 2))
        .map(|m| ephemeral_of(&m.bytes))
        .collect();
    let logged: Vec<[u8; 32]> = ephemerals(&text)
        .into_iter()
        .map(|k| PublicKey::from(&StaticSecret::from(k)).to_bytes())
        .collect();
    assert_eq!(logged, sent, "{text}");
    let remote = format!("  REMOTE_STATIC_PUBLIC_KEY = {}\n", encode(public(2).as_bytes()));
    assert_eq!(text.matches(&remote).count(), sent.len());

    // Shown again (and with them data messages and b's handshake
    // messages): no new session.
    log_what_a_sent(&p, &mut log);
    for m in &p.log {
        log.sent(&p.a, &m.bytes);
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    std::fs::remove_dir_all(dir).unwrap();
}

/// What crossed the wire as a pcap of bare IP packets (LINKTYPE_RAW).
fn write_pcap(p: &Pair, path: &Path) {
    let mut rec = Recorder::create(path).unwrap();
    for m in &p.log {
        let (SocketAddr::V4(from), SocketAddr::V4(to)) = (m.from, m.to) else {
            panic!("IPv4 only here")
        };
        let mut packet = Vec::new();
        etherparse::PacketBuilder::ipv4(from.ip().octets(), to.ip().octets(), 64)
            .udp(from.port(), to.port())
            .write(&mut packet, &m.bytes)
            .unwrap();
        rec.record(Duration::from_secs(1_800_000_000) + m.at, &packet)
            .unwrap();
    }
}

/// An echo request from `from` to the other end, or the reply to it.
fn echo(from_a: bool, request: bool, seq: u16) -> Vec<u8> {
    let (src, dst) = if from_a {
        ([10, 0, 0, 1], [10, 0, 0, 2])
    } else {
        ([10, 0, 0, 2], [10, 0, 0, 1])
    };
    let builder = etherparse::PacketBuilder::ipv4(src, dst, 64);
    let builder = if request {
        builder.icmpv4_echo_request(7, seq)
    } else {
        builder.icmpv4_echo_reply(7, seq)
    };
    let mut packet = Vec::new();
    builder.write(&mut packet, b"tunlab key log").unwrap();
    packet
}

// ANCHOR: tshark
/// A session recorded in memory, with a as the initiator and then as the
/// responder, decrypts in tshark given only a's key log: every echo
/// request and reply inside shows.
#[test]
fn tshark_decrypts_a_session_with_the_key_log_alone() {
    if !have_tshark() {
        return;
    }
    for a_initiates in [true, false] {
        let dir = folder(if a_initiates { "tshark-i" } else { "tshark-r" });
        let keys = dir.join("a.keys");
        let (mut p, mut log) = pair_with_keylog(&keys);
        // Whoever pings first starts the handshake.
        p.b.set_endpoint(Pair::PEER, addr(A));
        for seq in 1..=3 {
            if a_initiates {
                p.a_sends(&echo(true, true, seq));
                p.settle();
                p.b_sends(&echo(false, false, seq));
            } else {
                p.b_sends(&echo(false, true, seq));
                p.settle();
                p.a_sends(&echo(true, false, seq));
            }
            p.settle();
            p.now += Duration::from_millis(200);
        }
        assert_eq!(p.a_tun.len() + p.b_tun.len(), 6, "every ping went through");
        log_what_a_sent(&p, &mut log);
        let pcap = dir.join("session.pcap");
        write_pcap(&p, &pcap);
        let out = std::process::Command::new("tshark")
            .arg("-r")
            .arg(&pcap)
            .arg("-o")
            .arg(format!("wg.keylog_file:{}", keys.display()))
            .args(["-Y", "icmp", "-T", "fields", "-e", "icmp.type"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let types = String::from_utf8_lossy(&out.stdout);
        let requests = types.lines().filter(|l| *l == "8").count();
        let replies = types.lines().filter(|l| *l == "0").count();
        assert_eq!((requests, replies), (3, 3), "a initiates: {a_initiates}: {types}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
// ANCHOR_END: tshark
