//! The command line as a user meets it: key files made and refused, the
//! key log refused, and malformed arguments as usage errors. Nothing here
//! needs privileges or opens a device: every refusal checked comes before
//! the TUN device would be made (and, as root, the program runs in a new
//! network namespace of its own, in case it ever did not).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_step04-crypto");

/// Runs the program with `args`, as root inside a network namespace of
/// its own, for at most 10 seconds.
fn run(args: &[&str]) -> Output {
    let root = nix::unistd::geteuid().is_root();
    let mut cmd = if root {
        let mut c = Command::new("unshare");
        c.args(["--net", "--", "timeout", "10", BIN]);
        c
    } else {
        let mut c = Command::new("timeout");
        c.args(["10", BIN]);
        c
    };
    cmd.args(args).stdin(Stdio::null()).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn pubkey_of(path: &Path) -> Output {
    Command::new(BIN)
        .arg("pubkey")
        .stdin(File::open(path).unwrap())
        .output()
        .unwrap()
}

#[test]
fn genkey_out_makes_a_new_private_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("new.key");
    let key_arg = key.to_str().unwrap();
    let out = run(&["genkey", "--out", key_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&key), 0o600);
    let text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(text.len(), 45, "44 characters and a newline: {text:?}");
    let public = pubkey_of(&key);
    assert!(public.status.success());
    assert_eq!(public.stdout.len(), 45);

    let again = run(&["genkey", "--out", key_arg]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("exists already"), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text, "left alone");
}

#[test]
fn genkey_to_a_file_others_could_open_closes_it_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    for (created, warned) in [(0o644, true), (0o600, false)] {
        let key = dir.path().join(format!("{created:o}.key"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(created)
            .open(&key)
            .unwrap();
        // The mode asked for, whatever the umask of the test run.
        file.set_permissions(std::fs::Permissions::from_mode(created))
            .unwrap();
        let out = Command::new(BIN).arg("genkey").stdout(file).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(mode(&key), 0o600, "created {created:o}");
        assert_eq!(
            stderr(&out).contains("warning"),
            warned,
            "created {created:o}: {}",
            stderr(&out)
        );
        assert!(pubkey_of(&key).status.success());
    }
}

#[test]
fn pubkey_refuses_what_is_not_a_key() {
    let mut child = Command::new(BIN)
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("genkey"), "{}", stderr(&out));
}

/// A private key file made by `genkey --out`.
fn key_file(dir: &Path, name: &str) -> String {
    let key = dir.join(name);
    let out = run(&["genkey", "--out", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    key.to_str().unwrap().to_string()
}

const SERVER_KEY: &str = "HPV5q6RaELodHvBtkfyiqp7QoRUFFWUxVUBdCxjLmmc=";

fn client(key: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "client",
        "--server",
        "192.0.2.1:51820",
        "--server-key",
        SERVER_KEY,
        "--address",
        "10.0.0.2/24",
        "--tun",
        "tun-s04cli",
        "--key",
        key,
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn a_key_file_behind_a_symbolic_link_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "real.key");
    let link = dir.path().join("link.key");
    std::os::unix::fs::symlink(&key, &link).unwrap();
    let out = client(link.to_str().unwrap(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
}

#[test]
fn a_key_log_others_can_read_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "client.key");
    let log = dir.path().join("client.keylog");
    std::fs::write(&log, "kept\n").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = client(&key, &["--keylog", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("key log") && stderr(&out).contains("mode 644"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "kept\n");
    // Nor through a symbolic link to a file of ours.
    let private = dir.path().join("private.keylog");
    std::fs::write(&private, "").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.path().join("link.keylog");
    std::os::unix::fs::symlink(&private, &link).unwrap();
    let out = client(&key, &["--keylog", link.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
}

#[test]
fn a_malformed_peer_or_server_key_is_a_usage_error_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "server.key");
    for (peer, why) in [
        ("nokey", "expected PUBKEY=CIDR"),
        ("AAAA=10.0.0.2/32", "the public key"),
        (&format!("{SERVER_KEY}=10.0.0.2/33"), "the addresses"),
        (&format!("{SERVER_KEY}=10.0.0.2/32,fd00::2"), "the addresses"),
    ] {
        let out = run(&[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--key",
            &key,
            "--address",
            "10.0.0.1/24",
            "--tun",
            "tun-s04cli",
            "--peer",
            peer,
        ]);
        let said = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{peer}: {said}");
        assert!(said.contains("--peer") && said.contains(why), "{peer}: {said}");
    }
    let mut args = vec!["client", "--server", "192.0.2.1:51820", "--key", &key];
    args.extend(["--address", "10.0.0.2/24", "--server-key", "AAAA"]);
    let out = run(&args);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("--server-key") && said.contains("not a key"),
        "{said}"
    );
}
