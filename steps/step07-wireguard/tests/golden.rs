//! Sessions recorded between step07-wireguard and the two other
//! implementations (pcaps/step07/record.sh, described in pcaps/README.md),
//! replayed through a fresh device with the recorded keys: every message
//! the other side sent must verify and decrypt to what our TUN device got,
//! and, given our recorded ephemeral keys, indices and timestamp, every
//! message we sent must come out again byte for byte. The other side's
//! bytes were made by code no one here wrote, so this checks the protocol
//! against WireGuard itself, not against our own reading of it. Insta
//! snapshots keep the captures' decoded lines.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use step01_ping_tun::Summary;
use step01_ping_tun::pcap::{DataLink, ip_in_ethernet, read, read_any};
use step02_plain_tunnel::Action;
use step04_crypto::entropy::Scripted;
use step04_crypto::keys;
use step07_wireguard::device::{Device, DropReason};
use step07_wireguard::keylog::ephemerals;
use step07_wireguard::noise::{Identity, consume_initiation};
use step07_wireguard::underlay::DECODER;
use step07_wireguard::wire::{Initiation, MessageSummary, MessageType, Response};
use x25519_dalek::{PublicKey, StaticSecret};

const OURS: &str = "192.0.2.1:51820";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pcaps/step07")
}

fn key(name: &str) -> [u8; 32] {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    keys::decode(&text).unwrap()
}

/// One datagram on the underlay.
struct Datagram {
    at: Duration,
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
}

fn underlay(peer: &str) -> Vec<Datagram> {
    let (_, frames) = read_any(&dir().join(format!("{peer}-underlay.pcap"))).unwrap();
    frames
        .iter()
        .filter_map(|f| {
            let ip = ip_in_ethernet(&f.data)?;
            let p = SlicedPacket::from_ip(ip).ok()?;
            let (src, dst): (IpAddr, IpAddr) = match p.net? {
                NetSlice::Ipv4(v4) => (
                    v4.header().source_addr().into(),
                    v4.header().destination_addr().into(),
                ),
                NetSlice::Ipv6(v6) => (
                    v6.header().source_addr().into(),
                    v6.header().destination_addr().into(),
                ),
                _ => return None,
            };
            let TransportSlice::Udp(udp) = p.transport? else {
                return None;
            };
            Some(Datagram {
                at: f.timestamp,
                from: SocketAddr::new(src, udp.source_port()),
                to: SocketAddr::new(dst, udp.destination_port()),
                payload: udp.payload().to_vec(),
            })
        })
        .collect()
}

/// At a time: a datagram the peer sent us, or a packet our TUN device
/// gave us.
type Event<'a> = (Duration, Option<&'a Datagram>, Option<&'a [u8]>);

/// TAI64N to time since the Unix epoch.
fn from_tai64n(t: [u8; 12]) -> Duration {
    let secs = u64::from_be_bytes(t[..8].try_into().unwrap()) - ((1 << 62) + 10);
    Duration::new(secs, u32::from_be_bytes(t[8..].try_into().unwrap()))
}

/// Replays one recorded session; returns (messages of ours matched,
/// messages of theirs opened).
fn replay(peer: &str, we_initiate: bool) -> (usize, usize) {
    let ours: SocketAddr = OURS.parse().unwrap();
    let datagrams = underlay(peer);
    let tun = read(&dir().join(format!("{peer}-tun.pcap"))).unwrap();
    let our_secret = key("test-only-tunlab.key");
    let their_secret = key(&format!("test-only-{peer}.key"));
    let their_public = PublicKey::from(&StaticSecret::from(their_secret));
    let psk = key("test-only.psk");
    let ephemerals = ephemerals(&std::fs::read_to_string(dir().join(format!("{peer}.keylog"))).unwrap());
    // Our indices are in our handshake messages, in the clear.
    let our_messages: Vec<&Datagram> = datagrams.iter().filter(|d| d.from == ours).collect();
    let indices: Vec<u32> = our_messages
        .iter()
        .filter(|d| {
            matches!(
                MessageType::of(&d.payload),
                Some(MessageType::Initiation | MessageType::Response)
            )
        })
        .map(|d| u32::from_le_bytes(d.payload[4..8].try_into().unwrap()))
        .collect();
    assert!(!ephemerals.is_empty() && ephemerals.len() == indices.len());

    // Events in time order: packets our TUN device gave us, datagrams the
    // peer sent us.
    let is_ours = |p: &[u8]| match p[0] >> 4 {
        4 => p[12..16] == [10, 7, 0, 1],
        _ => p[8..24] == "fd07::1".parse::<std::net::Ipv6Addr>().unwrap().octets(),
    };
    let t_first = datagrams[0].at.min(tun[0].timestamp);
    let mut events: Vec<Event<'_>> = Vec::new();
    for d in datagrams.iter().filter(|d| d.to == ours) {
        events.push((d.at, Some(d), None));
    }
    for p in tun.iter().filter(|p| is_ours(&p.data)) {
        events.push((p.timestamp, None, Some(&p.data)));
    }
    events.sort_by_key(|e| e.0);
    let inbound: Vec<&[u8]> = tun
        .iter()
        .filter(|p| !is_ours(&p.data))
        .map(|p| &p.data[..])
        .collect();

    // Our initiation's timestamp, read with the responder's key, sets our
    // clock: the wall time at the first packet we read is that timestamp.
    let t0 = Instant::now();
    let mut unix_at_t0 = Duration::from_secs(1_800_000_000);
    if we_initiate {
        let init = our_messages.iter().find(|d| d.payload[0] == 1).unwrap();
        let responder = Identity::new(StaticSecret::from(their_secret));
        let incoming =
            consume_initiation(&responder, &Initiation::new_checked(&init.payload[..]).unwrap()).unwrap();
        let first_read = events.iter().find(|e| e.2.is_some()).unwrap().0;
        unix_at_t0 = from_tai64n(incoming.timestamp) - (first_read - t_first);
    }
    // Our initiations carry a timestamp whose nanoseconds are a multiple of
    // 2^24, as the Linux module's and wireguard-go's do (boringtun sends
    // its clock's nanoseconds as they are: the whitepaper asks only for a
    // timestamp that grows).
    for d in datagrams.iter().filter(|d| d.payload[0] == 1) {
        let receiver = if d.from == ours { their_secret } else { our_secret };
        let identity = Identity::new(StaticSecret::from(receiver));
        let incoming =
            consume_initiation(&identity, &Initiation::new_checked(&d.payload[..]).unwrap()).unwrap();
        let t = from_tai64n(incoming.timestamp);
        let whitened = t.subsec_nanos().is_multiple_of(1 << 24);
        match peer {
            "boringtun" if d.from != ours => assert!(!whitened || t.subsec_nanos() == 0),
            _ => assert!(
                whitened,
                "{peer}: an initiation from {} at {t:?} is not whitened",
                d.from
            ),
        }
    }
    let mut device = Device::new(
        1420,
        Box::new(Scripted::new(&ephemerals, &indices)),
        t0,
        unix_at_t0,
    );
    device.set_private_key(Some(StaticSecret::from(our_secret)));
    let id = device.add_peer(their_public).unwrap();
    device.set_preshared_key(id, psk);
    device.add_allowed_ip(id, "10.7.0.2/32".parse().unwrap());
    device.add_allowed_ip(id, "fd07::2/128".parse().unwrap());
    if we_initiate {
        device.set_endpoint(id, "192.0.2.2:51821".parse().unwrap());
    }

    let mut sent: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let mut written: Vec<Vec<u8>> = Vec::new();
    let mut opened = 0;
    let mut out = vec![0u8; 4096];
    for (at, datagram, packet) in events {
        let now = t0 + (at - t_first);
        if let Some(d) = datagram {
            match device.decapsulate(d.from, &d.payload, now, &mut out) {
                Ok(Action::WriteToTun(n)) => written.push(out[..n].to_vec()),
                Ok(Action::Reply(t)) => sent.push((t.to, out[..t.len].to_vec())),
                Ok(Action::Nothing) => {}
                Err(e) => panic!("{peer}: their {} was refused: {e}", MessageSummary(&d.payload)),
            }
            opened += 1;
        }
        if let Some(p) = packet {
            match device.encapsulate(p, now, &mut out) {
                Ok(Some(t)) => sent.push((t.to, out[..t.len].to_vec())),
                Ok(None) => {}
                Err(e) => panic!("{peer}: our packet was dropped: {e}"),
            }
        }
        while let Some(t) = device.poll(now, &mut out) {
            sent.push((t.to, out[..t.len].to_vec()));
        }
    }
    // What the peer sent decrypted to exactly what our TUN device got.
    assert_eq!(written.len(), inbound.len(), "{peer}");
    for (w, r) in written.iter().zip(&inbound) {
        assert_eq!(&w[..], *r, "{peer}: a decrypted packet differs");
    }
    // What we sent is what we had sent, byte for byte.
    assert_eq!(
        sent.len(),
        our_messages.len(),
        "{peer}: how many messages we sent"
    );
    for (i, ((to, bytes), recorded)) in sent.iter().zip(&our_messages).enumerate() {
        assert_eq!(*to, recorded.to, "{peer}: message {i} went elsewhere");
        assert_eq!(
            bytes,
            &recorded.payload,
            "{peer}: our message {i} ({}) differs from the recording",
            MessageSummary(bytes)
        );
    }
    assert_eq!(device.drops().total(), 0);
    assert_eq!(device.peer_stats(id).unwrap().drops.get(DropReason::BadTag), 0);
    (sent.len(), opened)
}

#[test]
fn a_session_with_wireguard_go_replays_byte_for_byte() {
    let (ours, theirs) = replay("wireguard-go", true);
    // Initiation, 6 pings; response and 6 replies.
    assert!(ours >= 7 && theirs >= 7, "{ours} {theirs}");
}

#[test]
fn a_session_with_boringtun_replays_byte_for_byte() {
    let (ours, theirs) = replay("boringtun", false);
    // Response, 6 replies; initiation, keepalive and 6 pings.
    assert!(ours >= 7 && theirs >= 8, "{ours} {theirs}");
}

#[test]
fn a_changed_byte_in_the_recording_is_caught() {
    // The replay is not vacuous: the same check on a response with one bit
    // changed fails to open.
    let datagrams = underlay("wireguard-go");
    let resp = datagrams.iter().find(|d| d.payload[0] == 2).unwrap();
    let mut bad = resp.payload.clone();
    bad[50] ^= 1;
    assert!(Response::new_checked(&bad[..]).is_ok());
    let t0 = Instant::now();
    let mut device = Device::new(1420, Box::new(Scripted::default()), t0, Duration::ZERO);
    device.set_private_key(Some(StaticSecret::from(key("test-only-tunlab.key"))));
    let mut out = vec![0u8; 256];
    // Without our initiation in flight it is unexpected; either way it is
    // refused and counted.
    assert!(device.decapsulate(resp.from, &bad, t0, &mut out).is_err());
    assert_eq!(device.drops().total(), 1);
}

/// Every capture of step 07, decoded as `tunlab decode --step 07` shows
/// it: the underlay with step 07's decoder, the TUN device's packets as
/// they are. One snapshot per capture, named by the file.
#[test]
fn decoded_captures() {
    let mut files = 0;
    insta::glob!("../../../pcaps", "step07/*.pcap", |path| {
        files += 1;
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let (link, packets) = read_any(path).unwrap();
        let text: String = packets
            .iter()
            .map(|p| match link {
                DataLink::ETHERNET => {
                    let ip = ip_in_ethernet(&p.data).unwrap();
                    let line = DECODER.summary(ip, 51820);
                    format!("{}\n", line.unwrap_or_else(|| Summary(ip).to_string()))
                }
                _ => format!("{}\n", Summary(&p.data)),
            })
            .collect();
        let mut settings = insta::Settings::clone_current();
        settings.remove_snapshot_suffix();
        settings.remove_input_file();
        settings.bind(|| insta::assert_snapshot!(name, text));
    });
    assert_eq!(files, 4, "the underlay and the TUN device, with each peer");
}

/// The key log step 07 wrote while each session was recorded is all
/// tshark needs to show every packet inside: as many echo requests and
/// replies as step 07's TUN device read and wrote.
#[test]
fn the_recorded_key_logs_decrypt_the_recorded_sessions_in_tshark() {
    if !common::have_tshark() {
        return;
    }
    for peer in ["wireguard-go", "boringtun"] {
        let out = std::process::Command::new("tshark")
            .arg("-r")
            .arg(dir().join(format!("{peer}-underlay.pcap")))
            .arg("-o")
            .arg(format!(
                "wg.keylog_file:{}",
                dir().join(format!("{peer}.keylog")).display()
            ))
            .args([
                "-Y",
                "icmp.type == 8 || icmp.type == 0 || icmpv6.type == 128 || icmpv6.type == 129",
                "-T",
                "fields",
                "-e",
                "frame.number",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let decrypted = String::from_utf8_lossy(&out.stdout).lines().count();
        let inside = read(&dir().join(format!("{peer}-tun.pcap"))).unwrap().len();
        assert_eq!((peer, decrypted), (peer, inside));
    }
}
