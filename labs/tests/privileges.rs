//! How tunlab gets root, and what a run as root leaves behind: run as a
//! user with no way to root, it says so in one line with the command to
//! run and exits 77; run as root for a user (sudo's `SUDO_UID` and
//! `SUDO_GID`), everything it writes becomes that user's. Needs root (to
//! play the user); without it each test runs itself through sudo, or says
//! SKIPPED (a failure under CI).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tunlab::doctor::{Kernel, Needs};
use tunlab::env::{binary, lab_test};

/// Lab 01's needs, and tunlab itself, which these tests run.
const NEEDS: Needs = Needs {
    tools: &["ip", "ping", "tcpdump", "setpriv", "setsid"],
    kernel: &[Kernel::Tun, Kernel::Netns],
    binaries: &[("step01-ping-tun", "step01-ping-tun"), ("tunlab", "tunlab")],
};

/// `nobody`'s ids, the user the tests play.
const NOBODY: u32 = 65534;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tunlab-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn without_a_way_to_root_tunlab_says_what_to_run_and_exits_77() {
    if !lab_test(
        "without_a_way_to_root_tunlab_says_what_to_run_and_exits_77",
        &NEEDS,
    ) {
        return;
    }
    // A copy nobody may run (the checkout may be in a home nobody cannot
    // enter).
    let dir = temp_dir("no-root");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tunlab = dir.join("tunlab");
    std::fs::copy(binary("tunlab", "tunlab").unwrap(), &tunlab).unwrap();
    // As nobody, in a session of its own (no terminal for a password),
    // with nothing of our environment.
    let out = Command::new("setsid")
        .arg("--wait")
        .arg("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ])
        .arg(&tunlab)
        .args(["run", "01"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line, not: {stderr}");
    assert!(stderr.contains("lab 01 needs root"), "{stderr}");
    assert!(
        stderr.contains(&format!("{} run 01", tunlab.display())),
        "it names the command to run: {stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Every file and folder under `dir`, and `dir`.
fn all_under(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            all.extend(all_under(&entry.path()));
        }
    }
    all
}

#[test]
fn what_a_root_run_writes_for_a_user_becomes_that_users() {
    if !lab_test("what_a_root_run_writes_for_a_user_becomes_that_users", &NEEDS) {
        return;
    }
    let dir = temp_dir("hand-back");
    let out = dir.join("lab01");
    // As sudo starts it for a user: built already, SUDO_UID and SUDO_GID
    // set.
    let run = Command::new(binary("tunlab", "tunlab").unwrap())
        .args(["run", "01", "--out"])
        .arg(&out)
        .env("TUNLAB_ELEVATED", "1")
        .env("SUDO_UID", NOBODY.to_string())
        .env("SUDO_GID", NOBODY.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let files = all_under(&out);
    assert!(files.len() > 5, "{files:?}");
    assert!(files.iter().any(|f| f.ends_with("step01.log")));
    let roots: Vec<&PathBuf> = files
        .iter()
        .filter(|f| {
            let meta = f.symlink_metadata().unwrap();
            meta.uid() != NOBODY || meta.gid() != NOBODY
        })
        .collect();
    assert!(roots.is_empty(), "not the user's: {roots:?}");
    std::fs::remove_dir_all(dir).unwrap();
}
