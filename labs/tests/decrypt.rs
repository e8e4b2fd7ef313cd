//! `tunlab decode` on what a user brings: a capture Wireshark saved as
//! pcapng, and the shipped encrypted sessions with their key logs
//! (`--keylog`), the step 04 session written out as a pcap of the inner
//! packets that must be, packet for packet, what the two TUN devices
//! carried, and that tshark reads.
//!
//! Runs the real `tunlab` binary. The pcapng test needs editcap and the
//! tshark check tshark (both from Wireshark's packages); without them
//! those tests say SKIPPED, and under CI (`CI=true`) they fail instead.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use step01_ping_tun::pcap;
use tunlab::env::{tool_test, workspace_root};

fn fixture(path: &str) -> PathBuf {
    workspace_root().join("pcaps").join(path)
}

/// A folder of this test's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tunlab-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A copy of a shipped test-only key with mode 600, as key files must
    /// be (git does not keep modes).
    fn key(&self, shipped: &str) -> PathBuf {
        let path = self.0.join(Path::new(shipped).file_name().unwrap());
        std::fs::copy(fixture(shipped), &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tunlab<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_tunlab"))
        .current_dir(workspace_root())
        .args(args)
        .output()
        .expect("running tunlab")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A shipped capture saved as pcapng (with editcap, as Wireshark would
/// save it) decodes to the same lines, times included.
#[test]
fn decode_reads_pcapng_as_it_reads_pcap() {
    if !tool_test("decode_reads_pcapng_as_it_reads_pcap", "editcap") {
        return;
    }
    let scratch = Scratch::new("pcapng");
    for shipped in ["step04/underlay.pcap", "step01/session.pcap"] {
        let pcapng = scratch.0.join("capture.pcapng");
        let made = Command::new("editcap")
            .args(["-F", "pcapng"])
            .arg(fixture(shipped))
            .arg(&pcapng)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(
            std::fs::read(&pcapng)
                .unwrap()
                .starts_with(&[0x0a, 0x0d, 0x0d, 0x0a])
        );
        let lines = |file: &Path| {
            let out = tunlab([Path::new("decode"), file]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            // The first line names the file.
            text(&out.stdout)
                .lines()
                .skip(1)
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let from_pcap = lines(&fixture(shipped));
        assert!(from_pcap.len() > 10, "{from_pcap:?}");
        assert_eq!(lines(&pcapng), from_pcap, "{shipped}");
    }
}

/// The step 04 session, decrypted from the server's side (its key and its
/// key log), written as a pcap: the inner packets, which both TUN
/// recordings hold, the routed ones in the order the server's TUN
/// carried them; and tshark reads the file.
#[test]
fn the_step04_session_decrypts_to_the_tun_devices_packets() {
    let scratch = Scratch::new("step04");
    let key = scratch.key("step04/test-only-server.key");
    let inner = scratch.0.join("inner.pcap");
    let out = tunlab([
        Path::new("decode"),
        &fixture("step04/underlay.pcap"),
        Path::new("--keylog"),
        &fixture("step04/server.keylog"),
        Path::new("--key"),
        &key,
        Path::new("--write"),
        &inner,
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("handshake, keys derived from the responder's key log"),
        "{stdout}"
    );
    assert!(stdout.contains("0 not read"), "{stdout}");

    let written = pcap::read(&inner).unwrap();
    let client_tun = pcap::read(&fixture("step04/client-tun.pcap")).unwrap();
    let server_tun = pcap::read(&fixture("step04/server-tun.pcap")).unwrap();
    // The client's router solicitation, and 8 packets each way.
    assert_eq!(written.len(), 17);
    for p in &written {
        assert!(
            client_tun.iter().any(|c| c.data == p.data),
            "not in client-tun.pcap: {}",
            step01_ping_tun::Summary(&p.data)
        );
    }
    // The server's TUN has all but the client's router solicitation (which
    // it dropped), and its own (which went to no peer): the link-local ones.
    let link_local = |p: &[u8]| p[0] >> 4 == 6 && p[8] == 0xfe && p[9] & 0xc0 == 0x80;
    let routed = |packets: &[pcap::Captured]| -> Vec<Vec<u8>> {
        packets
            .iter()
            .map(|c| c.data.clone())
            .filter(|p| !link_local(p))
            .collect()
    };
    assert_eq!(routed(&written), routed(&server_tun));
    // The times are the underlay's: each packet crossed the wire between
    // the moments the two TUN devices saw it.
    let first = |packets: &[pcap::Captured], data: &[u8]| {
        packets.iter().find(|c| c.data == data).map(|c| c.timestamp)
    };
    for p in written.iter().filter(|p| !link_local(&p.data)) {
        let (a, b) = (
            first(&client_tun, &p.data).unwrap(),
            first(&server_tun, &p.data).unwrap(),
        );
        assert!(a.min(b) <= p.timestamp && p.timestamp <= a.max(b), "{p:?}");
    }

    if !tool_test("the_step04_session_decrypts_to_the_tun_devices_packets", "tshark") {
        return;
    }
    let tshark = Command::new("tshark")
        .arg("-r")
        .arg(&inner)
        .args(["-T", "fields", "-e", "frame.protocols"])
        .output()
        .unwrap();
    assert!(tshark.status.success(), "{}", text(&tshark.stderr));
    let protocols = text(&tshark.stdout);
    assert_eq!(protocols.lines().count(), 17, "{protocols}");
    assert_eq!(
        protocols.lines().filter(|l| *l == "raw:ip:icmp:data").count(),
        12,
        "{protocols}"
    );
    assert_eq!(
        protocols.lines().filter(|l| *l == "raw:ipv6:icmpv6:data").count(),
        4,
        "{protocols}"
    );
}

/// The step 06 control connection, from the client's side: its key, its
/// key log (`expose --keylog`) and the server's public key.
#[test]
fn the_step06_control_connection_decrypts_from_the_clients_key_log() {
    let scratch = Scratch::new("step06");
    let key = scratch.key("step06/test-only-client.key");
    let server_key = std::fs::read_to_string(fixture("step06/test-only-server.key")).unwrap();
    let server_public = step04_crypto::keys::public_to_string(&step04_crypto::PublicKey::from(
        &step04_crypto::keys::parse_secret(&server_key).unwrap(),
    ));
    let decode = |peer: Option<&str>| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "decode".into(),
            fixture("step06/control.pcap").into(),
            "--keylog".into(),
            fixture("step06/client.keylog").into(),
            "--key".into(),
            key.clone().into(),
        ];
        if let Some(peer) = peer {
            args.extend(["--peer-key".into(), peer.into()]);
        }
        tunlab(args)
    };
    let out = decode(Some(&server_public));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let mut expected = [
        "handshake initiation",
        "handshake response",
        "hello v1",
        "expose tcp port 8080",
        "exposed port 8080",
        "open #",
    ]
    .into_iter();
    // In this order.
    let mut next = expected.next();
    for line in stdout.lines() {
        if next.is_some_and(|e| line.contains(e)) {
            next = expected.next();
        }
    }
    assert_eq!(next, None, "{stdout}");
    assert!(stdout.contains("0 not read"), "{stdout}");

    // Without the server's key: not read, and said why.
    let out = decode(None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("needs the server's public key (--peer-key)"));
    // The server's key where the client's belongs: a different public key,
    // so the replayed initiation differs.
    let wrong = decode(Some(&step04_crypto::keys::public_to_string(
        &step04_crypto::PublicKey::from(
            &step04_crypto::keys::parse_secret(
                &std::fs::read_to_string(fixture("step06/test-only-client.key")).unwrap(),
            )
            .unwrap(),
        ),
    )));
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        text(&wrong.stdout).contains("not read: the key log matches"),
        "{}",
        text(&wrong.stdout)
    );
}

/// A key log of another session reads nothing, and says so; a key file
/// others may read is refused.
#[test]
fn a_key_log_of_another_run_or_an_open_key_file_is_refused() {
    let scratch = Scratch::new("refused");
    let key = scratch.key("step04/test-only-server.key");
    let out = tunlab([
        Path::new("decode"),
        &fixture("step04/underlay.pcap"),
        Path::new("--keylog"),
        &fixture("step06/client.keylog"),
        Path::new("--key"),
        &key,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("handshake not read: the key log holds neither ephemeral key of this handshake"),
        "{stdout}"
    );
    assert!(
        stdout.contains("a session whose handshake is not in the capture"),
        "{stdout}"
    );

    let out = tunlab([
        Path::new("decode"),
        &fixture("step04/underlay.pcap"),
        Path::new("--keylog"),
        &fixture("step04/server.keylog"),
        Path::new("--key"),
        &fixture("step04/test-only-server.key"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    // Git does not keep modes: a checkout's copy is readable by all.
    if std::fs::metadata(fixture("step04/test-only-server.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o077
        != 0
    {
        assert!(stderr.contains("chmod 600"), "{stderr}");
    }
}

/// A step 07 capture is WireGuard's own protocol: decode does not claim
/// to read it, and names the tshark command that does, instead of calling
/// its handshake missing.
#[test]
fn a_step07_capture_points_to_wiresharks_own_dissector() {
    let scratch = Scratch::new("step07");
    let key = scratch.key("step07/test-only-tunlab.key");
    let out = tunlab([
        Path::new("decode"),
        &fixture("step07/wireguard-go-underlay.pcap"),
        Path::new("--keylog"),
        &fixture("step07/wireguard-go.keylog"),
        Path::new("--key"),
        &key,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let hint = stdout
        .lines()
        .find(|l| l.contains("handshake not read: a WireGuard initiation (step 07)"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        hint.contains("tshark -o wg.keylog_file:")
            && hint.contains("step07/wireguard-go.keylog -r ")
            && hint.contains("step07/wireguard-go-underlay.pcap"),
        "{hint}"
    );
    assert!(stdout.contains("0 sessions read"), "{stdout}");

    // And the command it names does read the session: the pings inside.
    if !tool_test("a_step07_capture_points_to_wiresharks_own_dissector", "tshark") {
        return;
    }
    let tshark = Command::new("tshark")
        .current_dir(workspace_root())
        .arg("-o")
        .arg(format!(
            "wg.keylog_file:{}",
            fixture("step07/wireguard-go.keylog").display()
        ))
        .arg("-r")
        .arg(fixture("step07/wireguard-go-underlay.pcap"))
        .args(["-T", "fields", "-e", "frame.protocols"])
        .output()
        .unwrap();
    assert!(tshark.status.success(), "{}", text(&tshark.stderr));
    let protocols = text(&tshark.stdout);
    assert_eq!(
        protocols
            .lines()
            .filter(|l| l.ends_with(":wg:ip:icmp:data"))
            .count(),
        6,
        "{protocols}"
    );
}
