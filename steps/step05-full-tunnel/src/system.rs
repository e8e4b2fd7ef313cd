//! The host, behind a trait: the real one runs `ip` and `nft` and writes
//! `/proc/sys`; the tests' one only records what it was asked.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// What the journal needs from the host.
pub trait System: Send {
    /// Runs `argv` (no shell), with `stdin` if given; returns its stdout.
    fn run(&mut self, argv: &[String], stdin: Option<&str>) -> anyhow::Result<String>;
    fn read_sysctl(&mut self, key: &str) -> anyhow::Result<String>;
    fn write_sysctl(&mut self, key: &str, value: &str) -> anyhow::Result<()>;
    fn read_file(&mut self, path: &Path) -> anyhow::Result<String>;
    fn write_file(&mut self, path: &Path, content: &str) -> anyhow::Result<()>;
}

/// This machine (this network namespace).
#[derive(Debug, Default)]
pub struct Host;

fn sysctl_path(key: &str) -> anyhow::Result<std::path::PathBuf> {
    if key.is_empty()
        || key.contains("..")
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        bail!("`{key}` is not a sysctl name");
    }
    Ok(Path::new("/proc/sys").join(key.replace('.', "/")))
}

impl System for Host {
    fn run(&mut self, argv: &[String], stdin: Option<&str>) -> anyhow::Result<String> {
        let (program, args) = argv.split_first().context("an empty command")?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {program} (is it installed?)"))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                argv.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn read_sysctl(&mut self, key: &str) -> anyhow::Result<String> {
        let path = sysctl_path(key)?;
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string())
    }

    fn write_sysctl(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let path = sysctl_path(key)?;
        std::fs::write(&path, value).with_context(|| format!("writing {value} to {}", path.display()))
    }

    fn read_file(&mut self, path: &Path) -> anyhow::Result<String> {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }

    fn write_file(&mut self, path: &Path, content: &str) -> anyhow::Result<()> {
        // In place: truncate and write, so a bind mount stays in place.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.write_all(content.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }
}
