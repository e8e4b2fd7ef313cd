//! The Wireshark dissector (`wireshark/tunlab.lua`) run by the real tshark
//! over the shipped captures: every tunnel message is named with its
//! fields, handshakes are told from data, real WireGuard is left to
//! Wireshark's own dissector, and nothing is marked malformed.
//!
//! Needs tshark (with Lua, as Debian's is); without it the tests say
//! SKIPPED, and under CI (`CI=true`) they fail instead.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// True when tshark is there; otherwise SKIPPED (or a panic under CI).
fn have_tshark(test: &str) -> bool {
    if Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    let reason = "tshark is missing: scripts/install-deps.sh installs it";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} cannot run under CI: {reason}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
    false
}

/// tshark's fields for every packet of `file` that matches `filter`, with
/// the dissector loaded: one row per packet, one column per field.
fn fields(file: &Path, filter: &str, names: &[&str]) -> Vec<Vec<String>> {
    let script = root().join("wireshark").join("tunlab.lua");
    let mut command = Command::new("tshark");
    command
        .arg("-X")
        .arg(format!("lua_script:{}", script.display()))
        .arg("-r")
        .arg(file)
        .args([
            "-Y",
            filter,
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
        ]);
    for name in names {
        command.args(["-e", name]);
    }
    let out = command.output().expect("running tshark");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tshark failed on {}: {stderr}",
        file.display()
    );
    assert!(
        !stderr.contains("Lua: Error") && !stderr.contains("lua_script"),
        "the dissector failed to load: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

/// Packets tshark marks malformed or with an error-level expert note.
fn malformed(file: &Path) -> Vec<Vec<String>> {
    fields(
        file,
        "_ws.malformed || _ws.expert.severity == \"Error\"",
        &["frame.number", "_ws.expert.message"],
    )
}

fn pcap(path: &str) -> PathBuf {
    root().join("pcaps").join(path)
}

#[test]
fn step02_messages_are_named_with_their_inner_packets() {
    if !have_tshark("step02_messages_are_named_with_their_inner_packets") {
        return;
    }
    let file = pcap("step02/underlay.pcap");
    let rows = fields(
        &file,
        "udp.port == 51820",
        &["frame.number", "tunlab02.version", "tunlab02.type", "ip.src"],
    );
    // 11 tunnel datagrams (pcaps/README.md): each a version 1 message.
    assert_eq!(rows.len(), 11, "{rows:?}");
    for row in &rows {
        assert_eq!(row[1], "1", "version of frame {}", row[0]);
    }
    let types: Vec<&str> = rows.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(
        types.iter().filter(|t| **t == "2").count(),
        1,
        "one Ping: {types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| **t == "3").count(),
        1,
        "one Pong: {types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| **t == "1").count(),
        9,
        "nine Data: {types:?}"
    );
    // A Data message's inner IPv4 packet is dissected: two ip layers.
    assert!(rows.iter().any(|r| r[3] == "192.0.2.2,10.0.0.2"), "{rows:?}");
    assert!(malformed(&file).is_empty(), "{:?}", malformed(&file));
}

#[test]
fn step04_handshake_and_data_are_told_apart_from_wireguard() {
    if !have_tshark("step04_handshake_and_data_are_told_apart_from_wireguard") {
        return;
    }
    let file = pcap("step04/underlay.pcap");
    let names = [
        "frame.number",
        "tunlab04.type",
        "tunlab04.sender",
        "tunlab04.receiver",
        "tunlab04.counter",
        "wg.type",
    ];
    let rows = fields(&file, "udp.port == 51820", &names);
    assert!(rows.len() > 3, "{rows:?}");
    // Every message is ours, none is WireGuard's.
    for row in &rows {
        assert!(
            !row[1].is_empty(),
            "frame {} not dissected as step 04: {row:?}",
            row[0]
        );
        assert!(row[5].is_empty(), "frame {} taken for WireGuard: {row:?}", row[0]);
    }
    assert_eq!(rows[0][1], "1", "the session opens with an initiation");
    assert_eq!(rows[1][1], "2", "then a response");
    assert_eq!(
        rows[1][3], rows[0][2],
        "the response names the initiation's sender"
    );
    // Data messages to the server count 0, 1, 2, ... in order.
    let server_index = &rows[1][2];
    let counters: Vec<u64> = rows
        .iter()
        .filter(|r| r[1] == "4" && &r[3] == server_index)
        .map(|r| r[4].parse().unwrap())
        .collect();
    assert!(counters.len() >= 3, "{counters:?}");
    assert!(counters.windows(2).all(|w| w[1] == w[0] + 1), "{counters:?}");
    assert_eq!(counters[0], 0);
    assert!(malformed(&file).is_empty(), "{:?}", malformed(&file));
}

#[test]
fn step06_records_carry_the_handshake_then_counted_sealed_frames() {
    if !have_tshark("step06_records_carry_the_handshake_then_counted_sealed_frames") {
        return;
    }
    let file = pcap("step06/control.pcap");
    let rows = fields(
        &file,
        "tunlab06",
        &["frame.number", "tcp.srcport", "tunlab04.type", "tunlab06.counter"],
    );
    assert!(rows.len() >= 4, "{rows:?}");
    // The client (port 7835 is the server's) opens with an initiation, the
    // server answers with a response; then each side's counters run 0, 1, ...
    let client: Vec<&Vec<String>> = rows.iter().filter(|r| r[1] != "7835").collect();
    let server: Vec<&Vec<String>> = rows.iter().filter(|r| r[1] == "7835").collect();
    assert_eq!(client[0][2], "1", "{rows:?}");
    assert_eq!(server[0][2], "2", "{rows:?}");
    for side in [&client, &server] {
        let counters: Vec<u64> = side
            .iter()
            .skip(1)
            .flat_map(|r| r[3].split(','))
            .filter(|c| !c.is_empty())
            .map(|c| c.parse().unwrap())
            .collect();
        assert!(!counters.is_empty());
        assert!(
            counters.iter().enumerate().all(|(i, &c)| c == i as u64),
            "counters out of order: {counters:?}"
        );
    }
    assert!(malformed(&file).is_empty(), "{:?}", malformed(&file));
}

/// A pcap (LINKTYPE_RAW) of `packets`, one microsecond apart.
fn write_pcap(path: &Path, packets: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&101u32.to_le_bytes());
    for (i, p) in packets.iter().enumerate() {
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn step02_over_tcp_and_real_wireguard_on_the_same_port() {
    if !have_tshark("step02_over_tcp_and_real_wireguard_on_the_same_port") {
        return;
    }
    use etherparse::PacketBuilder;
    let (client, server) = ([192, 0, 2, 2], [192, 0, 2, 1]);
    // Step 02 over TCP: one segment with two frames, a Ping and a Pong.
    let frames = [0, 4, 1, 2, 0, 0, 0, 4, 1, 3, 0, 0];
    let mut tcp = Vec::new();
    PacketBuilder::ipv4(client, server, 64)
        .tcp(40000, 51820, 1, 65535)
        .psh()
        .ack(1)
        .write(&mut tcp, &frames)
        .unwrap();
    // Real WireGuard: a 148-byte initiation, which is not step 04's size.
    let mut initiation = vec![1, 0, 0, 0];
    initiation.resize(148, 7);
    let mut wg = Vec::new();
    PacketBuilder::ipv4(client, server, 64)
        .udp(40001, 51820)
        .write(&mut wg, &initiation)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tunlab-dissector-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("synthetic.pcap");
    write_pcap(&file, &[tcp, wg]);

    let rows = fields(
        &file,
        "frame",
        &["frame.number", "tunlab02.type", "tunlab04.type", "wg.type"],
    );
    assert_eq!(rows[0][1], "2,3", "both frames of the segment: {rows:?}");
    assert_eq!(
        rows[1][2], "",
        "a WireGuard initiation is not step 04's: {rows:?}"
    );
    assert_eq!(
        rows[1][3], "1",
        "Wireshark's WireGuard dissector names it: {rows:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
