//! The host, behind a trait: the real one runs `ip` and `nft` and writes
//! `/proc/sys`; the tests' one only records what it was asked.
//!
//! The real one runs nothing but `ip` and `nft`, found in the system's own
//! directories ([`PROGRAM_DIRS`]), never through `$PATH`: a root process
//! that looked programs up in a `$PATH` its user can change would run the
//! user's `ip`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// What the journal needs from the host.
pub trait System: Send {
    /// Runs `argv` (no shell), with `stdin` if given; returns its stdout.
    /// `argv[0]` is one of [`PROGRAMS`], by name or by a path
    /// [`locate`](Self::locate) gave.
    fn run(&mut self, argv: &[String], stdin: Option<&str>) -> anyhow::Result<String>;
    /// The absolute path of `program`, one of [`PROGRAMS`].
    fn locate(&mut self, program: &str) -> anyhow::Result<String>;
    fn read_sysctl(&mut self, key: &str) -> anyhow::Result<String>;
    fn write_sysctl(&mut self, key: &str, value: &str) -> anyhow::Result<()>;
    /// The names under a sysctl directory: `net.ipv4.conf` gives `all`,
    /// `default`, `lo`, `eth0`...
    fn list_sysctl(&mut self, dir: &str) -> anyhow::Result<Vec<String>>;
    fn read_file(&mut self, path: &Path) -> anyhow::Result<String>;
    fn write_file(&mut self, path: &Path, content: &str) -> anyhow::Result<()>;
}

/// The only programs this step runs.
pub const PROGRAMS: [&str; 2] = ["ip", "nft"];

/// Where they are looked for, in this order.
pub const PROGRAM_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// `path` if it is one of [`PROGRAMS`] in one of [`PROGRAM_DIRS`]: its
/// name (`ip`), else `None`.
pub fn trusted_program(path: &str) -> Option<&'static str> {
    let (dir, name) = path.rsplit_once('/')?;
    if !PROGRAM_DIRS.contains(&dir) {
        return None;
    }
    PROGRAMS.iter().copied().find(|p| *p == name)
}

/// A sysctl key from its parts: `net.ipv4.conf.eth0.forwarding`, or with
/// slashes when a part has a dot of its own (`net/ipv4/conf/eth0.100/forwarding`,
/// as sysctl(8) writes it), so that the key names one path.
pub fn sysctl_key(parts: &[&str]) -> String {
    if parts.iter().any(|p| p.contains('.')) {
        parts.join("/")
    } else {
        parts.join(".")
    }
}

/// The parts of a sysctl key, each checked: letters, digits, `_`, `-`
/// (and `.` in the slash form), no empty part, no `.` or `..`.
pub fn sysctl_parts(key: &str) -> anyhow::Result<Vec<&str>> {
    let separator = if key.contains('/') { '/' } else { '.' };
    let parts: Vec<&str> = key.split(separator).collect();
    let part_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    };
    if parts.len() < 2 || !parts.iter().all(|p| part_ok(p)) {
        bail!("`{}` is not a sysctl name", key.escape_debug());
    }
    Ok(parts)
}

/// The file under /proc/sys of a sysctl key.
pub fn sysctl_path(key: &str) -> anyhow::Result<PathBuf> {
    let mut path = PathBuf::from("/proc/sys");
    path.extend(sysctl_parts(key)?);
    Ok(path)
}

/// This machine (this network namespace).
#[derive(Debug, Default)]
pub struct Host;

impl System for Host {
    fn run(&mut self, argv: &[String], stdin: Option<&str>) -> anyhow::Result<String> {
        let (program, args) = argv.split_first().context("an empty command")?;
        let path = if program.contains('/') {
            trusted_program(program)
                .map(|_| program.clone())
                .with_context(|| {
                    format!("refusing to run {program}: only ip and nft from {PROGRAM_DIRS:?}")
                })?
        } else {
            self.locate(program)?
        };
        let mut child = Command::new(&path)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {path}"))?;
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

    fn locate(&mut self, program: &str) -> anyhow::Result<String> {
        use std::os::unix::fs::PermissionsExt;
        if !PROGRAMS.contains(&program) {
            bail!("refusing to run {program}: only ip and nft");
        }
        PROGRAM_DIRS
            .iter()
            .map(|dir| format!("{dir}/{program}"))
            .find(|path| {
                std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
            .with_context(|| {
                format!(
                    "{program} is not in {} (is {} installed?)",
                    PROGRAM_DIRS.join(", "),
                    if program == "ip" { "iproute2" } else { "nftables" }
                )
            })
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

    fn list_sysctl(&mut self, dir: &str) -> anyhow::Result<Vec<String>> {
        let path = sysctl_path(dir)?;
        let mut names = std::fs::read_dir(&path)
            .with_context(|| format!("listing {}", path.display()))?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("listing {}", path.display()))?;
        names.sort();
        Ok(names)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_and_nft_from_the_system_directories_are_trusted() {
        assert_eq!(trusted_program("/usr/sbin/ip"), Some("ip"));
        assert_eq!(trusted_program("/sbin/nft"), Some("nft"));
        for bad in [
            "ip",
            "/tmp/ip",
            "/usr/sbin/../../tmp/ip",
            "/bin/sh",
            "/usr/local/sbin/ip",
            "/usr/sbin/ipx",
        ] {
            assert_eq!(trusted_program(bad), None, "{bad}");
        }
        assert!(
            Host.run(&["/bin/sh".into(), "-c".into(), "true".into()], None)
                .is_err()
        );
        assert!(Host.run(&["sh".into()], None).is_err());
    }

    #[test]
    fn sysctl_keys_name_one_path() {
        assert_eq!(
            sysctl_key(&["net", "ipv4", "conf", "eth0", "forwarding"]),
            "net.ipv4.conf.eth0.forwarding"
        );
        let vlan = sysctl_key(&["net", "ipv4", "conf", "eth0.100", "forwarding"]);
        assert_eq!(vlan, "net/ipv4/conf/eth0.100/forwarding");
        assert_eq!(
            sysctl_path(&vlan).unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
        for bad in [
            "",
            "net",
            "net..ipv4",
            "net/../../etc/shadow",
            "net/ipv4/",
            "net.ipv4 x",
            "/net/ipv4",
        ] {
            assert!(sysctl_path(bad).is_err(), "{bad}");
        }
    }
}
