//! Golden test: a control connection recorded in lab 06, decrypted.
//!
//! The lab captures the server's control port with tcpdump
//! (`pcaps/step06/control.pcap`, Ethernet frames) while `expose --keylog`
//! writes the client's ephemeral private key of each handshake to
//! `client.keylog`. With the test-only keys stored beside them, that is
//! all it takes to read the session, as Wireshark does with a key log:
//!
//! 1. Each TCP connection's two byte streams are put back together from
//!    the segments, by sequence number.
//! 2. The server's key opens the client's initiation, which gives its
//!    timestamp; a client replayed with the same static key, the logged
//!    ephemeral (through a scripted [`Entropy`](step04_crypto::entropy))
//!    and that timestamp must write the recorded initiation byte for byte.
//! 3. The replayed client takes the recorded response and derives the
//!    session keys: it opens the server's records, and its
//!    [`mirror`](SecureChannel::mirror), an opener that cannot seal,
//!    opens the client's.
//! 4. Every record in both directions must open and parse; the frames,
//!    one line each in time order, are pinned by a snapshot.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use step01_ping_tun::pcap::{self, DataLink};
use step04_crypto::entropy::{Entropy, Scripted};
use step04_crypto::keys;
use step04_crypto::noise::{self, Identity};
use step04_crypto::run::read_keylog;
use step04_crypto::wire::{INITIATION_LEN, InitiationPacket, RESPONSE_LEN};
use step04_crypto::{PublicKey, StaticSecret};
use step06_localhost::secure::{Event, Opener, SecureChannel};
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

/// One TCP segment.
struct Segment {
    time: Duration,
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    syn: bool,
    ack: bool,
    payload: Vec<u8>,
}

/// The TCP segment in an IP packet (IPv4 without fragments, or IPv6 with
/// TCP as the first next header), by hand: RFC 791, RFC 8200, RFC 9293
/// section 3.1.
fn tcp_segment(time: Duration, ip: &[u8]) -> Option<Segment> {
    let (src, dst, tcp): (IpAddr, IpAddr, &[u8]) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            if *ip.get(9)? != 6 || ihl < 20 || total < ihl {
                return None;
            }
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (src.into(), dst.into(), ip.get(ihl..total)?)
        }
        6 => {
            let len = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            if *ip.get(6)? != 6 {
                return None;
            }
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (src.into(), dst.into(), ip.get(40..40 + len)?)
        }
        _ => return None,
    };
    let port = |at: usize| Some(u16::from_be_bytes([*tcp.get(at)?, *tcp.get(at + 1)?]));
    let offset = usize::from(tcp.get(12)? >> 4) * 4;
    let flags = *tcp.get(13)?;
    Some(Segment {
        time,
        src: SocketAddr::new(src, port(0)?),
        dst: SocketAddr::new(dst, port(2)?),
        seq: u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?),
        syn: flags & 0x02 != 0,
        ack: flags & 0x10 != 0,
        payload: tcp.get(offset..)?.to_vec(),
    })
}

/// One direction of a connection: its bytes in order, and when each
/// segment's last byte arrived.
#[derive(Default)]
struct Stream {
    bytes: Vec<u8>,
    /// (offset just past a segment's bytes, its time), by offset.
    arrivals: Vec<(usize, Duration)>,
}

impl Stream {
    /// When the byte just before `end` was captured.
    fn time_of(&self, end: usize) -> Duration {
        self.arrivals
            .iter()
            .find(|(e, _)| *e >= end)
            .map_or(Duration::MAX, |(_, t)| *t)
    }
}

/// Puts one direction back together from its segments: `isn` is the
/// sequence number of its SYN, whose successor numbers the first byte.
/// Retransmitted bytes land on themselves; a hole is a lost capture.
fn reassemble<'a>(isn: u32, segments: impl Iterator<Item = &'a Segment>) -> Stream {
    let mut pieces: BTreeMap<usize, (&[u8], Duration)> = BTreeMap::new();
    for s in segments.filter(|s| !s.payload.is_empty()) {
        let at = s.seq.wrapping_sub(isn.wrapping_add(1)) as usize;
        pieces.entry(at).or_insert((&s.payload, s.time));
    }
    let mut stream = Stream::default();
    for (at, (bytes, time)) in pieces {
        assert!(
            at <= stream.bytes.len(),
            "the capture lacks bytes {}..{at} of a stream: tcpdump dropped a segment",
            stream.bytes.len()
        );
        let end = at + bytes.len();
        if end > stream.bytes.len() {
            stream.bytes.extend_from_slice(&bytes[stream.bytes.len() - at..]);
            stream.arrivals.push((end, time));
        }
    }
    stream
}

/// A TCP connection: the client's bytes and the server's.
struct Connection {
    client: SocketAddr,
    server: SocketAddr,
    up: Stream,
    down: Stream,
}

/// The capture's control connections, in the order they were opened.
fn connections() -> Vec<Connection> {
    let (link, frames) = pcap::read_any(&fixture("control.pcap")).unwrap();
    assert_eq!(
        link,
        DataLink::ETHERNET,
        "tcpdump on a veth (or lo) records Ethernet"
    );
    let segments: Vec<Segment> = frames
        .iter()
        .filter_map(|f| tcp_segment(f.timestamp, pcap::ip_in_ethernet(&f.data)?))
        .collect();
    let syns: Vec<&Segment> = segments.iter().filter(|s| s.syn && !s.ack).collect();
    assert!(
        !syns.is_empty(),
        "no SYN in control.pcap: start tcpdump before the client connects"
    );
    let mut out = Vec::new();
    for syn in syns {
        let (client, server) = (syn.src, syn.dst);
        // A retransmitted SYN opens the same connection.
        if out
            .iter()
            .any(|c: &Connection| c.client == client && c.server == server)
        {
            continue;
        }
        let Some(syn_ack) = segments
            .iter()
            .find(|s| s.syn && s.ack && s.src == server && s.dst == client)
        else {
            continue; // refused: the server was not up yet
        };
        let up = reassemble(
            syn.seq,
            segments.iter().filter(|s| s.src == client && s.dst == server),
        );
        let down = reassemble(
            syn_ack.seq,
            segments.iter().filter(|s| s.src == server && s.dst == client),
        );
        // Only our control connections: they open with an initiation.
        if up.bytes.starts_with(&(INITIATION_LEN as u16).to_be_bytes()) {
            out.push(Connection {
                client,
                server,
                up,
                down,
            });
        }
    }
    out
}

/// Cuts a stream into its records (each a 2-byte length and that many
/// bytes): (offset just past the record, the record with its length).
fn records(stream: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(&[a, b]) = stream.get(at..at + 2) {
        let end = at + 2 + usize::from(u16::from_be_bytes([a, b]));
        assert!(
            end <= stream.len(),
            "a record cut short at the end of the capture"
        );
        out.push((end, &stream[at..end]));
        at = end;
    }
    assert_eq!(at, stream.len(), "half a length at the end of the capture");
    out
}

/// Shows a frame a record opened to.
fn show(frame: &[u8]) -> String {
    match Repr::parse_bytes(frame) {
        Ok(repr) => repr.to_string(),
        Err(e) => panic!("a record opened to a bad frame ({e}): {frame:02x?}"),
    }
}

/// Opens one record with `channel` and shows its frame.
fn open_record(channel: &mut SecureChannel, record: &[u8]) -> String {
    channel.push(record).unwrap();
    let line = match channel.poll() {
        Ok(Some(Event::Frame(frame))) => show(frame),
        other => panic!("a record did not open: {other:?}"),
    };
    assert!(!channel.has_partial());
    line
}

/// Opens one record with `opener` and shows its frame.
fn open_with(opener: &mut Opener, record: &[u8]) -> String {
    opener.push(record).unwrap();
    let line = match opener.poll() {
        Ok(Some(frame)) => show(frame),
        other => panic!("a record did not open: {other:?}"),
    };
    assert!(!opener.has_partial());
    line
}

#[test]
fn the_recorded_control_connection_decrypts() {
    require_fixtures();
    let server_identity = Identity::new(key("test-only-server.key"));
    let client_secret = key("test-only-client.key");
    let client_public = PublicKey::from(&client_secret);
    let client_identity = Arc::new(Identity::new(client_secret));
    let ephemerals = read_keylog(&std::fs::read_to_string(fixture("client.keylog")).unwrap());
    let connections = connections();
    assert!(!connections.is_empty(), "no control connection in control.pcap");
    assert!(
        ephemerals.len() >= connections.len(),
        "client.keylog has {} keys for {} connections: was it written by the same run?",
        ephemerals.len(),
        connections.len()
    );
    // The client draws one ephemeral per connection, in order.
    let mut entropy = Scripted::new(&ephemerals, &[]);
    let mut text = String::new();
    let mut frames = 0;
    for (n, conn) in connections.iter().enumerate() {
        let up = records(&conn.up.bytes);
        let down = records(&conn.down.bytes);
        let (initiation, response) = (up[0].1, down[0].1);
        assert_eq!(initiation.len(), 2 + INITIATION_LEN);
        assert_eq!(response.len(), 2 + RESPONSE_LEN);

        // The server's key opens the initiation: the client's key and the
        // time it sent.
        let msg = InitiationPacket::new_checked(&initiation[2..]).unwrap();
        assert!(
            noise::initiation_mac1_ok(&server_identity, &msg),
            "the initiation is not for test-only-server.key"
        );
        let incoming = noise::consume_initiation(&server_identity, &msg).unwrap();
        assert_eq!(incoming.remote, client_public, "sent with test-only-client.key");

        // The client again, with the logged ephemeral: the same bytes.
        let mut replayed = Vec::new();
        let mut client = SecureChannel::client(
            client_identity.clone(),
            *server_identity.public(),
            entropy.ephemeral(),
            incoming.timestamp,
            &mut replayed,
        )
        .unwrap();
        assert!(
            replayed == initiation,
            "connection {n}: the replayed initiation differs (key log of another run?)"
        );
        client.push(response).unwrap();
        assert!(matches!(client.poll(), Ok(Some(Event::Established { .. }))));
        let mut mirror = client.mirror().unwrap();

        let mut lines: Vec<(Duration, String)> = Vec::new();
        lines.push((conn.up.time_of(up[0].0), "handshake initiation".into()));
        lines.push((conn.down.time_of(down[0].0), "handshake response".into()));
        for &(end, record) in &up[1..] {
            let frame = open_with(&mut mirror, record);
            lines.push((conn.up.time_of(end), format!("client > server: {frame}")));
        }
        for &(end, record) in &down[1..] {
            let frame = open_record(&mut client, record);
            lines.push((conn.down.time_of(end), format!("server > client: {frame}")));
        }
        frames += up.len() + down.len() - 2;
        // Time order; records of one direction keep theirs.
        lines.sort_by_key(|(t, _)| *t);
        let _ = writeln!(
            text,
            "connection {n}: client port {} > server port {}",
            conn.client.port(),
            conn.server.port()
        );
        for (_, line) in lines {
            let _ = writeln!(text, "  {line}");
        }
    }
    assert!(frames >= 3, "a Hello, an Expose and an Exposed at least");
    insta::assert_snapshot!("control", text);
}
