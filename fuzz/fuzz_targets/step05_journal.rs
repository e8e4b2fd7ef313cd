//! Step 05's state journal as `down` and the next start read it back, as
//! root: `recover` on a state file and a side file holding arbitrary bytes.
//! Never a panic; everything it does to the host passes the journal's own
//! allow-list (`check_undo`: `ip` and `nft` by absolute path, with the
//! undos the journal writes; `net.` sysctls set to numbers; the resolver
//! file), no nftables script is ever run, and a file it refuses (any line
//! it does not accept) changes nothing at all.
//!
//! The input is the state file's bytes, a 0 byte, then its first side
//! file's (`STEM.0.saved`, where a `file` line's content lives). `@DIR@`
//! in the state file stands for the target's state directory, so that a
//! seed (written by the journal itself, `tunlab fuzz`) can name its side
//! file.
#![no_main]

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use step05_full_tunnel::journal::{self, Action};
use step05_full_tunnel::system::System;

/// A host that only writes down what it is asked to do.
#[derive(Default)]
struct Recording(Vec<Action>);

impl System for Recording {
    fn run(&mut self, argv: &[String], stdin: Option<&str>) -> anyhow::Result<String> {
        self.0.push(match stdin {
            Some(script) => Action::Nft(script.to_string()),
            None => Action::Command(argv.to_vec()),
        });
        Ok(String::new())
    }
    fn locate(&mut self, program: &str) -> anyhow::Result<String> {
        anyhow::bail!("recover never looks for {program}")
    }
    fn read_sysctl(&mut self, key: &str) -> anyhow::Result<String> {
        anyhow::bail!("recover never reads {key}")
    }
    fn write_sysctl(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        self.0.push(Action::Sysctl {
            key: key.to_string(),
            value: value.to_string(),
        });
        Ok(())
    }
    fn list_sysctl(&mut self, dir: &str) -> anyhow::Result<Vec<String>> {
        anyhow::bail!("recover never lists {dir}")
    }
    fn read_file(&mut self, path: &Path) -> anyhow::Result<String> {
        anyhow::bail!("recover never reads {}", path.display())
    }
    fn write_file(&mut self, path: &Path, content: &str) -> anyhow::Result<()> {
        self.0.push(Action::WriteFile {
            path: path.to_path_buf(),
            content: content.to_string(),
        });
        Ok(())
    }
}

/// This process's own state directory (mode 0700, as /run/tunlab/NETNS),
/// made for each input and removed after it.
fn state_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| std::env::temp_dir().join(format!("tunlab-fuzz-journal-{}", std::process::id())))
}

fn write_private(path: &Path, bytes: &[u8]) {
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, bytes))
        .expect("writing a state file of our own");
}

fuzz_target!(|data: &[u8]| {
    let (state, side) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let _ = std::fs::remove_dir_all(state_dir());
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(state_dir())
        .expect("a state directory of our own");
    let path = state_dir().join("step05-tun0.state");
    let dir = state_dir().display().to_string();
    let state = match std::str::from_utf8(state) {
        Ok(text) => text.replace("@DIR@", &dir).into_bytes(),
        Err(_) => state.to_vec(),
    };
    write_private(&path, &state);
    write_private(&state_dir().join("step05-tun0.0.saved"), side);
    let mut host = Recording::default();
    match journal::recover(&path, &mut host) {
        Ok(Some(_)) => {
            for action in &host.0 {
                if let Err(e) = journal::check_undo(action) {
                    panic!("recover did {action}, which the journal never writes: {e:#}");
                }
            }
            assert!(!path.exists(), "a recovered state file is removed");
        }
        Ok(None) => panic!("the state file was there"),
        Err(_) => assert!(
            host.0.is_empty(),
            "a refused state file changed the host: {:?}",
            host.0
        ),
    }
    let _ = std::fs::remove_dir_all(state_dir());
});
