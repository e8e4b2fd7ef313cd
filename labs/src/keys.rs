//! Key pairs for the encrypted steps (04 and later) and for WireGuard,
//! which read the same format: a private key file of mode 0600 and a
//! public key in base64, made with the step's own `genkey` and `pubkey`.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::report::Report;

/// One end's key pair: the private key in a file of mode 0600, and the
/// public key in base64.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub file: PathBuf,
    pub public: String,
}

impl KeyPair {
    /// `STEP genkey > file` (the file created with mode 0600 before
    /// anything is written to it), then `pubkey < file`. `binary` is step
    /// 04's or a later step's: their keys are the same.
    pub fn generate(binary: &Path, file: &Path) -> anyhow::Result<Self> {
        let name = program_name(binary);
        // A file that exists keeps its mode when opened, so start afresh.
        let _ = std::fs::remove_file(file);
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .with_context(|| format!("creating {}", file.display()))?;
        let status = Command::new(binary)
            .arg("genkey")
            .stdin(Stdio::null())
            .stdout(out)
            .status()
            .with_context(|| format!("running {name} genkey"))?;
        if !status.success() {
            bail!("{name} genkey > {} failed ({status})", file.display());
        }
        Self::load(binary, file)
    }

    /// The pair of an existing private key file: `pubkey < file`.
    pub fn load(binary: &Path, file: &Path) -> anyhow::Result<Self> {
        let name = program_name(binary);
        let key = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let out = Command::new(binary)
            .arg("pubkey")
            .stdin(key)
            .output()
            .with_context(|| format!("running {name} pubkey"))?;
        if !out.status.success() {
            bail!(
                "{name} pubkey < {} failed ({}): {}",
                file.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let public = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if public.len() != 44 {
            bail!("{name} pubkey printed {public:?}, not a 44-character base64 key");
        }
        Ok(Self {
            file: file.to_path_buf(),
            public,
        })
    }

    /// The short form the programs' logs use: the first 8 characters.
    pub fn short(&self) -> &str {
        self.public.get(..8).unwrap_or(&self.public)
    }

    pub fn file_str(&self) -> anyhow::Result<&str> {
        self.file.to_str().context("key path is not UTF-8")
    }
}

/// The file name of a program, for messages.
fn program_name(binary: &Path) -> String {
    binary.file_name().map_or_else(
        || binary.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Copies a key file into `to` with mode 0600: a key checked out by git has
/// the mode of the checkout (0644, usually), which the programs refuse.
pub fn private_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    let key = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    let _ = std::fs::remove_file(to);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .with_context(|| format!("creating {}", to.display()))?;
    std::io::Write::write_all(&mut file, &key)?;
    Ok(())
}

/// The key pairs of a lab's ends, by name (`server`, `client`, ...).
#[derive(Debug, Clone)]
pub struct Keys {
    pairs: Vec<(&'static str, KeyPair)>,
}

impl Keys {
    /// Fresh key pairs in `dir`, one per name: `NAME.key`.
    pub fn generate(binary: &Path, dir: &Path, names: &[&'static str]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let pairs = names
            .iter()
            .map(|&name| Ok((name, KeyPair::generate(binary, &dir.join(format!("{name}.key")))?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { pairs })
    }

    /// Fresh key pairs for a lab's ends, made in `dir` by the binary of
    /// step `package`, and noted in `report`: `fresh keys in DIR: server
    /// AbCdEfGh..., client ...`.
    pub fn fresh(package: &str, dir: &Path, names: &[&'static str], report: &Report) -> anyhow::Result<Self> {
        let keys = Self::generate(&crate::env::step_binary(package)?, dir, names)?;
        report.note(format!("fresh keys in {}: {}", dir.display(), keys.shorts()));
        Ok(keys)
    }

    /// The fixed test-only keys that a lab's golden captures were recorded
    /// with, `pcaps/stepNN/test-only-NAME.key` (kept in git; made once if
    /// missing), each copied with mode 0600 into `dir` as `NAME.key`.
    pub fn test_only(
        binary: &Path,
        pcaps: &Path,
        dir: &Path,
        names: &[&'static str],
        report: &Report,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut pairs = Vec::new();
        for &name in names {
            let kept = pcaps.join(format!("test-only-{name}.key"));
            if !kept.exists() {
                KeyPair::generate(binary, &kept)?;
                report.note(format!("created the test-only key {}", kept.display()));
            }
            let copy = dir.join(format!("{name}.key"));
            private_copy(&kept, &copy)?;
            pairs.push((name, KeyPair::load(binary, &copy)?));
        }
        Ok(Self { pairs })
    }

    /// The pair called `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&KeyPair> {
        self.pairs.iter().find(|(n, _)| *n == name).map(|(_, p)| p)
    }

    /// Adds (or replaces) the pair called `name`.
    pub fn insert(&mut self, name: &'static str, pair: KeyPair) {
        self.pairs.retain(|(n, _)| *n != name);
        self.pairs.push((name, pair));
    }

    /// `server AbCdEfGh..., client ...`: each short key, for a note.
    pub fn shorts(&self) -> String {
        let all: Vec<String> = self
            .pairs
            .iter()
            .map(|(n, p)| format!("{n} {}...", p.short()))
            .collect();
        all.join(", ")
    }
}

impl std::ops::Index<&str> for Keys {
    type Output = KeyPair;

    /// The pair called `name`. The names are the lab's own constants: a
    /// missing one is a mistake in the lab, not in what it runs.
    fn index(&self, name: &str) -> &KeyPair {
        match self.get(name) {
            Some(pair) => pair,
            None => panic!("no key pair called {name} (there are: {})", self.shorts()),
        }
    }
}
