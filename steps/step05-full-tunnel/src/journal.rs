//! The journal of host changes: each change is written down, with how to
//! undo it, before the next one is made, in a state file that outlives the
//! program. Undoing walks the journal backwards. After a crash (SIGKILL, a
//! power cut) the file is still there, and `down`, or the next start,
//! undoes what it lists.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::system::System;

// ANCHOR: change
/// One change to the host: what it does, and how to take it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// One line for the log: `route 0.0.0.0/1 dev tun0`.
    pub what: String,
    pub apply: Action,
    pub undo: Action,
}

/// Something done to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run a command (no shell): `ip route add ...`.
    Command(Vec<String>),
    /// Run `nft -f -` with this script on its standard input.
    Nft(String),
    /// Write a value to a sysctl (`net.ipv4.ip_forward`).
    Sysctl { key: String, value: String },
    /// Replace a file's content, in place (a bind-mounted file such as a
    /// network namespace's resolv.conf cannot be renamed over).
    WriteFile { path: PathBuf, content: String },
}
// ANCHOR_END: change

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Command(argv) => f.write_str(&argv.join(" ")),
            Action::Nft(script) => write!(f, "nft -f - <<< {:?}", script.lines().next().unwrap_or("")),
            Action::Sysctl { key, value } => write!(f, "sysctl {key}={value}"),
            Action::WriteFile { path, content } => {
                write!(f, "write {} ({} bytes)", path.display(), content.len())
            }
        }
    }
}

/// Carries out an action.
pub fn perform(system: &mut dyn System, action: &Action) -> anyhow::Result<()> {
    match action {
        Action::Command(argv) => system.run(argv, None).map(drop),
        Action::Nft(script) => system
            .run(
                &["nft".to_string(), "-f".to_string(), "-".to_string()],
                Some(script),
            )
            .map(drop),
        Action::Sysctl { key, value } => system.write_sysctl(key, value),
        Action::WriteFile { path, content } => system.write_file(path, content),
    }
}

// The state file holds one line per change: its description and its undo
// action, fields separated by tabs. Multi-line content (a file to put
// back) goes into a file of its own beside it.
fn encode(
    what: &str,
    undo: &Action,
    state: &Path,
    n: usize,
) -> anyhow::Result<(String, Option<(PathBuf, String)>)> {
    let check = |s: &str| {
        if s.contains(['\t', '\n']) {
            bail!("`{s}` cannot be journaled (a tab or newline in it)");
        }
        Ok(())
    };
    check(what)?;
    let (fields, extra): (Vec<String>, _) = match undo {
        Action::Command(argv) => (
            ["command".to_string()]
                .into_iter()
                .chain(argv.iter().cloned())
                .collect(),
            None,
        ),
        Action::Sysctl { key, value } => (vec!["sysctl".into(), key.clone(), value.clone()], None),
        Action::Nft(script) => {
            let side = state.with_extension(format!("{n}.nft"));
            (
                vec!["nft".into(), side.display().to_string()],
                Some((side, script.clone())),
            )
        }
        Action::WriteFile { path, content } => {
            let side = state.with_extension(format!("{n}.saved"));
            (
                vec![
                    "file".into(),
                    path.display().to_string(),
                    side.display().to_string(),
                ],
                Some((side, content.clone())),
            )
        }
    };
    for f in &fields {
        check(f)?;
    }
    Ok((format!("{what}\t{}", fields.join("\t")), extra))
}

/// One line of the state file: the description, the undo action, and the
/// side file holding its content, if any.
fn decode(line: &str) -> anyhow::Result<(String, Action, Option<PathBuf>)> {
    let mut fields = line.split('\t');
    let what = fields.next().unwrap_or_default().to_string();
    let kind = fields.next().unwrap_or_default();
    let rest: Vec<&str> = fields.collect();
    let read = |side: &str| std::fs::read_to_string(side).with_context(|| format!("reading {side}"));
    Ok(match (kind, rest.as_slice()) {
        ("command", argv) if !argv.is_empty() => (
            what,
            Action::Command(argv.iter().map(|s| s.to_string()).collect()),
            None,
        ),
        ("sysctl", [key, value]) => (
            what,
            Action::Sysctl {
                key: key.to_string(),
                value: value.to_string(),
            },
            None,
        ),
        ("nft", [side]) => (what, Action::Nft(read(side)?), Some(PathBuf::from(side))),
        ("file", [path, side]) => (
            what,
            Action::WriteFile {
                path: PathBuf::from(path),
                content: read(side)?,
            },
            Some(PathBuf::from(side)),
        ),
        _ => bail!("a line of the state file makes no sense: {line:?}"),
    })
}

// ANCHOR: journal
/// The changes made so far, undone in reverse order when the journal is
/// dropped: on a normal exit, on an error, and while a panic unwinds.
pub struct Journal {
    path: PathBuf,
    done: Vec<(String, Action)>,
    sides: Vec<PathBuf>,
    system: Box<dyn System>,
}

impl Journal {
    /// A new journal at `path`. A journal left there by a run that did not
    /// finish must be undone first ([`recover`]).
    pub fn create(path: &Path, system: Box<dyn System>) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("creating the state file {}", path.display()))?;
        // Who owns the journal: `down` refuses to undo a live run's changes.
        writeln!(file, "# pid {}", std::process::id())?;
        file.sync_data()?;
        Ok(Self {
            path: path.to_path_buf(),
            done: Vec::new(),
            sides: Vec::new(),
            system,
        })
    }

    /// Writes down how to undo `change`, then makes it. If we die in
    /// between, the undo of a change never made fails harmlessly ("already
    /// gone"); the other order could lose a change. A change that fails is
    /// struck from the journal and stops the caller, who drops the journal
    /// and so undoes the rest.
    pub fn apply(&mut self, change: Change) -> anyhow::Result<()> {
        let (line, side) = encode(&change.what, &change.undo, &self.path, self.done.len())?;
        if let Some((path, content)) = &side {
            std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
            self.sides.push(path.clone());
        }
        let before = std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        writeln!(file, "{line}")?;
        file.sync_data()?;
        if let Err(e) = perform(self.system.as_mut(), &change.apply) {
            std::fs::write(&self.path, before)
                .with_context(|| format!("rewriting {}", self.path.display()))?;
            return Err(e.context(change.what));
        }
        log::info!("host: {}", change.what);
        self.done.push((change.what, change.undo));
        Ok(())
    }

    /// Undoes everything, newest first; returns the failures (each also
    /// logged), then removes the state file.
    pub fn undo_all(&mut self) -> Vec<String> {
        let (_, failures) = undo(self.system.as_mut(), std::mem::take(&mut self.done));
        remove_state(&self.path, &std::mem::take(&mut self.sides));
        failures
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.undo_all();
    }
}
// ANCHOR_END: journal

/// Undoes `done`, newest first: returns what was undone and what failed.
fn undo(system: &mut dyn System, done: Vec<(String, Action)>) -> (Vec<String>, Vec<String>) {
    let (mut undone, mut failures) = (Vec::new(), Vec::new());
    for (what, action) in done.into_iter().rev() {
        match perform(system, &action) {
            Ok(()) => {
                log::info!("host: undo {what}");
                undone.push(what);
            }
            Err(e) => {
                // A route through the TUN device is gone if the device is
                // (after a SIGKILL); say what failed and go on.
                log::warn!("host: undo {what}: {e:#}");
                failures.push(format!("{what}: {e:#}"));
            }
        }
    }
    (undone, failures)
}

fn remove_state(path: &Path, sides: &[PathBuf]) {
    for side in sides {
        let _ = std::fs::remove_file(side);
    }
    let _ = std::fs::remove_file(path);
}

// ANCHOR: recover
/// Undoes what a run that did not finish left in the state file at
/// `path`, if there is one; returns what was undone and what failed.
pub fn recover(path: &Path, system: &mut dyn System) -> anyhow::Result<Option<Recovered>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut done = Vec::new();
    let mut sides = Vec::new();
    refuse_if_owned(path, &text)?;
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (what, action, side) = decode(line)?;
        sides.extend(side);
        done.push((what, action));
    }
    let (undone, failures) = undo(system, done);
    remove_state(path, &sides);
    Ok(Some(Recovered { undone, failures }))
}
// ANCHOR_END: recover

/// The pid in a state file's first line.
fn owner(text: &str) -> Option<u32> {
    text.lines().next()?.strip_prefix("# pid ")?.trim().parse().ok()
}

// ANCHOR: owner
/// Refuses to go on when the state file (its text) belongs to a run that
/// is still going: that run undoes its own changes when it stops.
pub fn refuse_if_owned(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(pid) = owner(text)
        && pid != std::process::id()
        && alive(pid)
    {
        bail!(
            "the run with pid {pid} is still using {}: stop it (kill {pid}) and it undoes its changes itself",
            path.display()
        );
    }
    Ok(())
}
// ANCHOR_END: owner

/// True when `pid` is a running process of this same program (so not a
/// pid the kernel has since given to something else), and not a zombie.
fn alive(pid: u32) -> bool {
    let comm = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    comm(&pid.to_string()).is_some_and(|c| Some(c) == comm("self")) && !zombie(pid)
}

/// True when `pid` has exited but not been reaped yet (a zombie, state
/// `Z`): killed, its changes no longer anyone's.
pub fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|state| state.trim_start().starts_with('Z'))
    })
}

/// True when an undo failed because its object is already gone (a route
/// that went with the TUN device, a table deleted by hand), as opposed to
/// a real failure (a missing program, no permission).
pub fn already_gone(failure: &str) -> bool {
    [
        "Cannot find device",
        "No such process",
        "No such file or directory",
    ]
    .iter()
    .any(|m| failure.contains(m))
}

/// What [`recover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub undone: Vec<String>,
    pub failures: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A host that records what it is asked, and fails the commands it is
    /// told to.
    #[derive(Clone, Default)]
    struct Fake {
        log: Arc<Mutex<Vec<String>>>,
        failing: Arc<Mutex<Vec<String>>>,
    }

    impl System for Fake {
        fn run(&mut self, argv: &[String], stdin: Option<&str>) -> anyhow::Result<String> {
            let line = argv.join(" ");
            self.log.lock().unwrap().push(match stdin {
                Some(s) => format!("{line} <<< {}", s.lines().next().unwrap_or("")),
                None => line.clone(),
            });
            if self.failing.lock().unwrap().contains(&line) {
                bail!("RTNETLINK answers: No such process");
            }
            Ok(String::new())
        }
        fn read_sysctl(&mut self, _: &str) -> anyhow::Result<String> {
            Ok("0".into())
        }
        fn write_sysctl(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
            self.log.lock().unwrap().push(format!("sysctl {key}={value}"));
            Ok(())
        }
        fn read_file(&mut self, _: &Path) -> anyhow::Result<String> {
            Ok(String::new())
        }
        fn write_file(&mut self, path: &Path, content: &str) -> anyhow::Result<()> {
            self.log
                .lock()
                .unwrap()
                .push(format!("write {} {content:?}", path.display()));
            Ok(())
        }
    }

    fn changes() -> Vec<Change> {
        let cmd = |s: &str| Action::Command(s.split(' ').map(String::from).collect());
        vec![
            Change {
                what: "sysctl forwarding".into(),
                apply: Action::Sysctl {
                    key: "net.ipv4.ip_forward".into(),
                    value: "1".into(),
                },
                undo: Action::Sysctl {
                    key: "net.ipv4.ip_forward".into(),
                    value: "0".into(),
                },
            },
            Change {
                what: "route".into(),
                apply: cmd("ip route add 0.0.0.0/1 dev tun0"),
                undo: cmd("ip route del 0.0.0.0/1 dev tun0"),
            },
            Change {
                what: "resolver".into(),
                apply: Action::WriteFile {
                    path: "/etc/resolv.conf".into(),
                    content: "nameserver 10.0.0.1\n".into(),
                },
                undo: Action::WriteFile {
                    path: "/etc/resolv.conf".into(),
                    content: "# old\tfile\nnameserver 192.0.2.53\n".into(),
                },
            },
            Change {
                what: "table".into(),
                apply: Action::Nft("table inet t {\n}\n".into()),
                undo: cmd("nft delete table inet t"),
            },
        ]
    }

    fn state(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("step05-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("tun0.state")
    }

    #[test]
    fn dropping_the_journal_undoes_in_reverse_and_removes_the_state() {
        let fake = Fake::default();
        let path = state("drop");
        {
            let mut j = Journal::create(&path, Box::new(fake.clone())).unwrap();
            for c in changes() {
                j.apply(c).unwrap();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(
                text.lines().next(),
                Some(format!("# pid {}", std::process::id()).as_str())
            );
            assert_eq!(text.lines().count(), 5);
        }
        let log = fake.log.lock().unwrap().clone();
        assert_eq!(
            log,
            [
                "sysctl net.ipv4.ip_forward=1",
                "ip route add 0.0.0.0/1 dev tun0",
                "write /etc/resolv.conf \"nameserver 10.0.0.1\\n\"",
                "nft -f - <<< table inet t {",
                "nft delete table inet t",
                "write /etc/resolv.conf \"# old\\tfile\\nnameserver 192.0.2.53\\n\"",
                "ip route del 0.0.0.0/1 dev tun0",
                "sysctl net.ipv4.ip_forward=0",
            ]
        );
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            0,
            "side files left"
        );
    }

    #[test]
    fn after_a_crash_recover_undoes_what_the_file_lists() {
        let fake = Fake::default();
        let path = state("crash");
        let mut j = Journal::create(&path, Box::new(fake.clone())).unwrap();
        for c in changes() {
            j.apply(c).unwrap();
        }
        // SIGKILL: no destructor runs.
        std::mem::forget(j);
        fake.log.lock().unwrap().clear();
        // The route went with the TUN device.
        fake.failing
            .lock()
            .unwrap()
            .push("ip route del 0.0.0.0/1 dev tun0".into());
        let mut other = fake.clone();
        let r = recover(&path, &mut other).unwrap().unwrap();
        assert_eq!(r.undone, ["table", "resolver", "sysctl forwarding"]);
        assert_eq!(r.failures.len(), 1);
        assert!(r.failures[0].starts_with("route: "));
        assert_eq!(fake.log.lock().unwrap().len(), 4);
        assert!(!path.exists());
        assert_eq!(
            recover(&path, &mut other).unwrap(),
            None,
            "nothing left the second time"
        );
    }

    #[test]
    fn a_failed_change_is_not_journaled_and_the_earlier_ones_are_undone() {
        let fake = Fake::default();
        fake.failing
            .lock()
            .unwrap()
            .push("ip route add 0.0.0.0/1 dev tun0".into());
        let path = state("fail");
        {
            let mut j = Journal::create(&path, Box::new(fake.clone())).unwrap();
            let mut it = changes().into_iter();
            j.apply(it.next().unwrap()).unwrap();
            assert!(j.apply(it.next().unwrap()).is_err());
            assert_eq!(
                std::fs::read_to_string(&path).unwrap().lines().count(),
                2,
                "the pid and one change"
            );
        }
        let log = fake.log.lock().unwrap().clone();
        assert_eq!(log.last().unwrap(), "sysctl net.ipv4.ip_forward=0");
        assert!(!log.iter().any(|l| l.contains("route del")));
    }

    #[test]
    fn a_state_file_that_is_not_ours_is_refused_not_guessed() {
        let path = state("bad");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "something\tunknown\tx\n").unwrap();
        assert!(recover(&path, &mut Fake::default()).is_err());
        assert!(path.exists(), "left for a human to look at");
    }

    #[test]
    fn only_objects_that_are_gone_count_as_already_gone() {
        assert!(already_gone(
            "route: `ip -4 route del 0.0.0.0/1 dev tun0` failed: Cannot find device \"tun0\""
        ));
        assert!(already_gone("table: Error: No such file or directory"));
        assert!(!already_gone("table: running nft (is it installed?)"));
        assert!(!already_gone(
            "sysctl: writing 0 to /proc/sys/net/ipv4/ip_forward: Permission denied"
        ));
        assert_eq!(owner("# pid 42\nx\tcommand\ttrue\n"), Some(42));
        assert_eq!(owner("x\tcommand\ttrue\n"), None);
    }
}
