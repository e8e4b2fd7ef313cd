//! The journal of host changes: each change is written down, with how to
//! undo it, before the next one is made, in a state file that outlives the
//! program. Undoing walks the journal backwards. After a crash (SIGKILL, a
//! power cut) the file is still there, and `down`, or the next start,
//! undoes what it lists.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::unistd::geteuid;

use step01_ping_tun::ifname;

use crate::system::{PROGRAM_DIRS, System, sysctl_parts, trusted_program};

/// The resolver file: the only file a journal puts back.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

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

// ANCHOR: allowed
/// What a state file may ask to be undone: exactly the kinds of undo this
/// step writes, and nothing else. The journal checks each undo against it
/// before writing it down, and `recover` checks each line against it
/// before undoing anything, so a state file someone else wrote cannot make
/// a root process run a shell, write /etc/shadow or set `kernel.` sysctls.
///
/// - `ip [-4|-6] route|rule|address del ...`, `ip link set dev NAME
///   down` (step 07's interface) and `nft delete table FAMILY NAME`, by
///   absolute path in the system's directories (see [`trusted_program`]),
///   with plain words as arguments;
/// - a `net.` sysctl, to a number;
/// - the resolver file, [`RESOLV_CONF`].
pub fn check_undo(action: &Action) -> anyhow::Result<()> {
    match action {
        Action::Command(argv) => check_command(argv),
        Action::Sysctl { key, value } => {
            let parts = sysctl_parts(key)?;
            if parts.first() != Some(&"net") {
                bail!("sysctl {key}: only net. sysctls are put back");
            }
            let number = |v: &str| {
                (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit() || b" \t-".contains(&b))
            };
            if !number(value) {
                bail!("sysctl {key}: `{}` is not a number", value.escape_debug());
            }
            Ok(())
        }
        Action::WriteFile { path, .. } if path == Path::new(RESOLV_CONF) => Ok(()),
        Action::WriteFile { path, .. } => {
            bail!("only {RESOLV_CONF} is ever put back, not {}", path.display())
        }
        Action::Nft(_) => bail!("an nftables script is not an undo this journal writes"),
    }
}

fn check_command(argv: &[String]) -> anyhow::Result<()> {
    let words: Vec<&str> = argv.iter().map(String::as_str).collect();
    let Some((&program, args)) = words.split_first() else {
        bail!("an empty command");
    };
    let Some(name) = trusted_program(program) else {
        bail!(
            "`{}` is not ip or nft in {}: refusing to run it",
            program.escape_debug(),
            PROGRAM_DIRS.join(", ")
        );
    };
    // A plain word: an address, a prefix, a device or table name, a
    // keyword; never an option (`-batch FILE`, `netns exec`...).
    let word = |w: &str| {
        !w.is_empty()
            && !w.starts_with('-')
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:/-".contains(&b))
    };
    let args = match args {
        [family, rest @ ..] if name == "ip" && matches!(*family, "-4" | "-6") => rest,
        _ => args,
    };
    let ok = match (name, args) {
        ("ip", [object, "del", rest @ ..]) => {
            matches!(*object, "route" | "rule" | "address")
                && !rest.is_empty()
                && rest.iter().all(|w| word(w))
        }
        // Step 07's interface, which its `down` also takes down.
        ("ip", ["link", "set", "dev", device, "down"]) => ifname::check(device).is_ok(),
        ("nft", ["delete", "table", family, table]) => {
            matches!(*family, "ip" | "ip6" | "inet") && word(table)
        }
        _ => false,
    };
    if !ok {
        bail!(
            "`{}` is not an undo this journal writes (ip route/rule/address del, ip link set down, nft delete table)",
            argv.join(" ").escape_debug()
        );
    }
    Ok(())
}
// ANCHOR_END: allowed

/// The same action with `ip` and `nft` by absolute path, as the journal
/// writes them down.
fn located(system: &mut dyn System, action: Action) -> anyhow::Result<Action> {
    Ok(match action {
        Action::Command(mut argv) => {
            if let Some(program) = argv.first_mut()
                && !program.contains('/')
            {
                *program = system.locate(program)?;
            }
            Action::Command(argv)
        }
        other => other,
    })
}

// The state file holds one line per change: its description and its undo
// action, fields separated by tabs. Multi-line content (a file to put
// back) goes into a side file of its own beside it, `STEM.N.saved`.
fn encode(what: &str, undo: &Action, side: &Path) -> anyhow::Result<(String, Option<String>)> {
    let check = |s: &str| {
        if s.contains(['\t', '\n', '\r']) {
            bail!(
                "`{}` cannot be journaled (a tab or newline in it)",
                s.escape_debug()
            );
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
        Action::WriteFile { path, content } => (
            vec![
                "file".into(),
                path.display().to_string(),
                side.display().to_string(),
            ],
            Some(content.clone()),
        ),
        Action::Nft(_) => bail!("an nftables script cannot be journaled as an undo"),
    };
    for f in &fields {
        check(f)?;
    }
    Ok((format!("{what}\t{}", fields.join("\t")), extra))
}

/// The side file number `n` of the state file `state`.
fn side_file(state: &Path, n: usize) -> PathBuf {
    state.with_extension(format!("{n}.saved"))
}

/// Whether `side` is a side file of `state`: in its directory, named
/// `STEM.N.saved`.
fn is_side_file(state: &Path, side: &Path) -> bool {
    let stem = state.with_extension("");
    let (Some(stem), Some(name)) = (stem.file_name(), side.file_name()) else {
        return false;
    };
    let number = name
        .to_str()
        .zip(stem.to_str())
        .and_then(|(name, stem)| name.strip_prefix(stem)?.strip_prefix('.')?.strip_suffix(".saved"));
    side.parent() == state.parent()
        && number.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// One line of the state file `state`: the description, the undo action,
/// and the side file holding its content, if any; checked by
/// [`check_undo`].
fn decode(state: &Path, line: &str) -> anyhow::Result<(String, Action, Option<PathBuf>)> {
    let mut fields = line.split('\t');
    let what = fields.next().unwrap_or_default().to_string();
    let kind = fields.next().unwrap_or_default();
    let rest: Vec<&str> = fields.collect();
    let (action, side) = match (kind, rest.as_slice()) {
        ("command", argv) if !argv.is_empty() => (
            Action::Command(argv.iter().map(|s| s.to_string()).collect()),
            None,
        ),
        ("sysctl", [key, value]) => (
            Action::Sysctl {
                key: key.to_string(),
                value: value.to_string(),
            },
            None,
        ),
        ("file", [path, side]) => {
            let side = PathBuf::from(side);
            if !is_side_file(state, &side) {
                bail!(
                    "{}: `{}` is not a side file of this state file",
                    state.display(),
                    side.display()
                );
            }
            let content = read_trusted(&side)?.with_context(|| {
                format!("{}: its side file {} is missing", state.display(), side.display())
            })?;
            (
                Action::WriteFile {
                    path: PathBuf::from(path),
                    content,
                },
                Some(side),
            )
        }
        _ => bail!("a line of the state file makes no sense: {line:?}"),
    };
    check_undo(&action).with_context(|| format!("{}: the line {line:?}", state.display()))?;
    Ok((what, action, side))
}

// ANCHOR: trusted
/// The most a state file (or a side file) may hold.
const MAX_STATE_FILE: u64 = 1 << 20;

/// Checks the directory a state file lives in: a directory (not a
/// symbolic link to one), owned by root or by us, that no one else may
/// write to. Anyone who can write to it can replace the file.
pub fn check_state_dir(dir: &Path) -> anyhow::Result<()> {
    check_state_dir_as(dir, geteuid().as_raw())
}

fn check_state_dir_as(dir: &Path, euid: u32) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("looking at {}", dir.display()))?;
    if !meta.file_type().is_dir() {
        bail!(
            "{} is not a directory (a symbolic link?): refusing to keep state there",
            dir.display()
        );
    }
    if meta.uid() != 0 && meta.uid() != euid {
        bail!(
            "{} belongs to uid {}, not to root: refusing to keep state there",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "{} may be written by others (mode {:o}): refusing to keep state there; \
             use a directory only root can write to, such as the default /run/tunlab",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// The directory of `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Reads a file a root process is about to act on, trusting it only after
/// looking at the open descriptor: no symbolic link followed (O_NOFOLLOW),
/// a regular file, owned by us (the effective user), not writable by group
/// or others, in a directory [`check_state_dir`] accepts. `None` when there
/// is no such file.
pub fn read_trusted(path: &Path) -> anyhow::Result<Option<String>> {
    read_trusted_as(path, geteuid().as_raw())
}

/// [`read_trusted`] for a process whose effective user is `euid`.
fn read_trusted_as(path: &Path, euid: u32) -> anyhow::Result<Option<String>> {
    let dir = parent_of(path);
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => check_state_dir_as(dir, euid)?,
    }
    // Not blocking: a FIFO put in the file's place would hang the open.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            bail!("{} is a symbolic link: refusing to follow it", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let meta = file
        .metadata()
        .with_context(|| format!("looking at {}", path.display()))?;
    if !meta.file_type().is_file() {
        bail!("{} is not a regular file: refusing to read it", path.display());
    }
    if meta.uid() != euid {
        bail!(
            "{} belongs to uid {}, not to us (uid {euid}): refusing to act on it; \
             look at it, and remove it if it is not yours",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "{} may be written by others (mode {:o}): refusing to act on it",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    let mut text = String::new();
    file.take(MAX_STATE_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    if text.len() as u64 > MAX_STATE_FILE {
        bail!(
            "{} is longer than any state file this step writes",
            path.display()
        );
    }
    Ok(Some(text))
}

/// Creates `path` for us alone: mode 0600, failing if anything (a file, a
/// symbolic link) is already there.
fn create_private(path: &Path) -> anyhow::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}
// ANCHOR_END: trusted

// ANCHOR: journal
/// The changes made so far, undone in reverse order when the journal is
/// dropped: on a normal exit, on an error, and while a panic unwinds.
pub struct Journal {
    path: PathBuf,
    /// The state file, open for appending since we created it: never
    /// opened again by name.
    file: File,
    done: Vec<(String, Action)>,
    sides: Vec<PathBuf>,
    /// The number of the next side file.
    next_side: usize,
    system: Box<dyn System>,
}

impl Journal {
    /// A new journal at `path`, in a directory only root (or we) may write
    /// to, created mode 0700 if missing. A journal left there by a run that
    /// did not finish must be undone first ([`recover`]).
    pub fn create(path: &Path, system: Box<dyn System>) -> anyhow::Result<Self> {
        let dir = parent_of(path);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        check_state_dir(dir)?;
        let mut file = create_private(path).context("creating the state file")?;
        // Who owns the journal: `down` refuses to undo a live run's changes.
        writeln!(file, "# pid {}", std::process::id())?;
        file.sync_data()?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            done: Vec::new(),
            sides: Vec::new(),
            next_side: 0,
            system,
        })
    }

    /// Writes down how to undo `change`, then makes it. If we die in
    /// between, the undo of a change never made fails harmlessly ("already
    /// gone"); the other order could lose a change. A change that fails is
    /// struck from the journal and stops the caller, who drops the journal
    /// and so undoes the rest. An undo that [`check_undo`] would refuse to
    /// read back is refused here, before anything is changed.
    pub fn apply(&mut self, change: Change) -> anyhow::Result<()> {
        let apply = located(self.system.as_mut(), change.apply)?;
        let undo = located(self.system.as_mut(), change.undo)?;
        check_undo(&undo).with_context(|| change.what.clone())?;
        let side = side_file(&self.path, self.next_side);
        let (line, content) = encode(&change.what, &undo, &side)?;
        if let Some(content) = &content {
            let mut f = create_private(&side)?;
            f.write_all(content.as_bytes())
                .and_then(|()| f.sync_data())
                .with_context(|| format!("writing {}", side.display()))?;
            self.next_side += 1;
            self.sides.push(side.clone());
        }
        let before = self.file.metadata()?.len();
        writeln!(self.file, "{line}")?;
        self.file.sync_data()?;
        if let Err(e) = perform(self.system.as_mut(), &apply) {
            self.file
                .set_len(before)
                .and_then(|()| self.file.sync_data())
                .with_context(|| format!("striking a change from {}", self.path.display()))?;
            if content.is_some() {
                self.sides.pop();
                let _ = std::fs::remove_file(&side);
            }
            return Err(e.context(change.what));
        }
        log::info!("host: {}", change.what);
        self.done.push((change.what, undo));
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
///
/// The file is trusted only after [`read_trusted`]'s checks, and every
/// line must pass [`check_undo`]: if one does not, nothing is undone and
/// the file is left for a person to look at.
pub fn recover(path: &Path, system: &mut dyn System) -> anyhow::Result<Option<Recovered>> {
    let Some(text) = read_trusted(path)? else {
        return Ok(None);
    };
    refuse_if_owned(path, &text)?;
    let mut done = Vec::new();
    let mut sides = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (what, action, side) = decode(path, line).context(
            "nothing was undone; look at the state file, undo by hand what it lists, and remove it",
        )?;
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
    use std::os::unix::fs::PermissionsExt;
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
        fn locate(&mut self, program: &str) -> anyhow::Result<String> {
            Ok(format!("/usr/sbin/{program}"))
        }
        fn read_sysctl(&mut self, _: &str) -> anyhow::Result<String> {
            Ok("0".into())
        }
        fn write_sysctl(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
            self.log.lock().unwrap().push(format!("sysctl {key}={value}"));
            Ok(())
        }
        fn list_sysctl(&mut self, _: &str) -> anyhow::Result<Vec<String>> {
            Ok(Vec::new())
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

    /// A state file path in a fresh directory of its own (made by the
    /// journal, mode 0700).
    fn state(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("step05-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("tun0.state")
    }

    /// A journal left as a SIGKILL leaves it, from `changes()`.
    fn killed_run(name: &str) -> (Fake, PathBuf) {
        let fake = Fake::default();
        let path = state(name);
        let mut j = Journal::create(&path, Box::new(fake.clone())).unwrap();
        for c in changes() {
            j.apply(c).unwrap();
        }
        // SIGKILL: no destructor runs.
        std::mem::forget(j);
        fake.log.lock().unwrap().clear();
        (fake, path)
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
            assert!(
                text.contains("\tcommand\t/usr/sbin/ip\troute\tdel\t"),
                "programs by absolute path: {text}"
            );
        }
        let log = fake.log.lock().unwrap().clone();
        assert_eq!(
            log,
            [
                "sysctl net.ipv4.ip_forward=1",
                "/usr/sbin/ip route add 0.0.0.0/1 dev tun0",
                "write /etc/resolv.conf \"nameserver 10.0.0.1\\n\"",
                "nft -f - <<< table inet t {",
                "/usr/sbin/nft delete table inet t",
                "write /etc/resolv.conf \"# old\\tfile\\nnameserver 192.0.2.53\\n\"",
                "/usr/sbin/ip route del 0.0.0.0/1 dev tun0",
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
    fn the_state_file_its_side_files_and_their_directory_are_ours_alone() {
        let path = state("modes");
        let mut j = Journal::create(&path, Box::new(Fake::default())).unwrap();
        for c in changes() {
            j.apply(c).unwrap();
        }
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&path), 0o600);
        let side = side_file(&path, 0);
        assert!(side.exists());
        assert_eq!(mode(&side), 0o600);
    }

    #[test]
    fn after_a_crash_recover_undoes_what_the_file_lists() {
        let (fake, path) = killed_run("crash");
        // The route went with the TUN device.
        fake.failing
            .lock()
            .unwrap()
            .push("/usr/sbin/ip route del 0.0.0.0/1 dev tun0".into());
        let mut other = fake.clone();
        let r = recover(&path, &mut other).unwrap().unwrap();
        assert_eq!(r.undone, ["table", "resolver", "sysctl forwarding"]);
        assert_eq!(r.failures.len(), 1);
        assert!(r.failures[0].starts_with("route: "));
        assert_eq!(fake.log.lock().unwrap().len(), 4);
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            0,
            "side files left"
        );
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
            .push("/usr/sbin/ip route add 0.0.0.0/1 dev tun0".into());
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
            // The next change (with a side file) still goes in.
            j.apply(it.next().unwrap()).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
        }
        let log = fake.log.lock().unwrap().clone();
        assert_eq!(log.last().unwrap(), "sysctl net.ipv4.ip_forward=0");
        assert!(!log.iter().any(|l| l.contains("route del")));
    }

    #[test]
    fn a_state_file_that_is_not_ours_is_refused_not_guessed() {
        let (_, path) = killed_run("bad");
        std::fs::write(&path, "something\tunknown\tx\n").unwrap();
        assert!(recover(&path, &mut Fake::default()).is_err());
        assert!(path.exists(), "left for a human to look at");
    }

    /// Recovers the killed run's state file at `path` after `tamper` did
    /// its work; the error, and what the host was asked to do.
    fn hostile(name: &str, tamper: impl FnOnce(&Path)) -> (String, Vec<String>) {
        let (fake, path) = killed_run(name);
        tamper(&path);
        let mut host = fake.clone();
        let err = match recover(&path, &mut host) {
            Ok(r) => panic!("{name}: recovered {r:?}"),
            Err(e) => format!("{e:#}"),
        };
        let log = fake.log.lock().unwrap().clone();
        (err, log)
    }

    fn append(path: &Path, line: &str) {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        writeln!(f, "{line}").unwrap();
    }

    #[test]
    fn hostile_lines_undo_nothing() {
        for (name, line, expect) in [
            (
                "shell",
                "x\tcommand\t/bin/sh\t-c\tid",
                "`/bin/sh` is not ip or nft",
            ),
            (
                "path",
                "x\tcommand\tip\troute\tdel\t0.0.0.0/1",
                "`ip` is not ip or nft",
            ),
            (
                "tmp-ip",
                "x\tcommand\t/tmp/ip\troute\tdel\tx",
                "`/tmp/ip` is not ip or nft",
            ),
            (
                "ip-exec",
                "x\tcommand\t/usr/sbin/ip\tnetns\texec\tns\t/bin/sh",
                "is not an undo this journal writes",
            ),
            (
                "ip-batch",
                "x\tcommand\t/usr/sbin/ip\t-batch\t/tmp/cmds",
                "is not an undo this journal writes",
            ),
            (
                "nft-file",
                "x\tcommand\t/usr/sbin/nft\t-f\t/tmp/rules",
                "is not an undo this journal writes",
            ),
            (
                "kernel",
                "x\tsysctl\tkernel.core_pattern\t|/tmp/x",
                "only net. sysctls",
            ),
            (
                "sysctl-path",
                "x\tsysctl\tnet/../kernel/modprobe\t/tmp/x",
                "not a sysctl name",
            ),
            (
                "sysctl-text",
                "x\tsysctl\tnet.ipv4.ip_forward\t1 /tmp",
                "is not a number",
            ),
        ] {
            let (err, log) = hostile(name, |p| append(p, line));
            assert!(err.contains(expect), "{name}: {err}");
            assert!(err.contains("nothing was undone"), "{name}: {err}");
            assert!(log.is_empty(), "{name}: the host was asked {log:?}");
        }
    }

    #[test]
    fn a_file_line_may_only_put_back_the_resolver_from_a_side_file_of_ours() {
        let (err, log) = hostile("shadow", |p| {
            let side = side_file(p, 7);
            std::fs::write(&side, "root::0:0:99999:7:::\n").unwrap();
            std::fs::set_permissions(&side, std::fs::Permissions::from_mode(0o600)).unwrap();
            append(p, &format!("x\tfile\t/etc/shadow\t{}", side.display()));
        });
        assert!(
            err.contains("only /etc/resolv.conf is ever put back, not /etc/shadow"),
            "{err}"
        );
        assert!(log.is_empty());
        let (err, _) = hostile("other-side", |p| {
            append(p, "x\tfile\t/etc/resolv.conf\t/tmp/resolv.conf");
        });
        assert!(err.contains("is not a side file of this state file"), "{err}");
        let (err, _) = hostile("side-mode", |p| {
            let side = side_file(p, 0);
            std::fs::set_permissions(&side, std::fs::Permissions::from_mode(0o666)).unwrap();
        });
        assert!(err.contains("may be written by others (mode 666)"), "{err}");
    }

    #[test]
    fn a_state_file_others_may_write_or_a_symlink_is_refused() {
        let (err, log) = hostile("0666", |p| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).unwrap();
        });
        assert!(err.contains("may be written by others (mode 666)"), "{err}");
        assert!(log.is_empty());
        let (err, log) = hostile("symlink", |p| {
            let real = p.with_extension("real");
            std::fs::rename(p, &real).unwrap();
            std::os::unix::fs::symlink(&real, p).unwrap();
        });
        assert!(err.contains("is a symbolic link: refusing to follow it"), "{err}");
        assert!(log.is_empty());
        let (err, _) = hostile("dir-0777", |p| {
            let dir = p.parent().unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        });
        assert!(err.contains("may be written by others (mode 777)"), "{err}");
    }

    #[test]
    fn a_state_file_of_another_user_is_refused() {
        let (fake, path) = killed_run("owner");
        let me = geteuid().as_raw();
        // As a process of another user would see it.
        let err = read_trusted_as(&path, me + 1).unwrap_err().to_string();
        assert!(err.contains(&format!("belongs to uid {me}, not to us")), "{err}");
        if me == 0 {
            // For real: the file handed to nobody (65534).
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            let err = format!("{:#}", recover(&path, &mut fake.clone()).unwrap_err());
            assert!(err.contains("belongs to uid 65534, not to us (uid 0)"), "{err}");
            assert!(fake.log.lock().unwrap().is_empty());
        }
        assert!(path.exists(), "left for a human to look at");
    }

    #[test]
    fn no_journal_is_kept_where_others_may_write() {
        let dir = std::env::temp_dir().join(format!("step05-journal-{}-shared", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = Journal::create(&dir.join("tun0.state"), Box::new(Fake::default()))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("may be written by others (mode 1777)"), "{err}");
        assert!(!dir.join("tun0.state").exists());
        // Something already in the state file's place is never followed.
        let path = state("occupied");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(path.parent().unwrap())
            .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert!(Journal::create(&path, Box::new(Fake::default())).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_undo_the_plans_write_is_one_recover_accepts() {
        let ok = |argv: &str| check_undo(&Action::Command(argv.split(' ').map(String::from).collect()));
        for argv in [
            "/usr/sbin/ip -4 route del 192.0.2.1/32 via 192.168.1.1 dev wlan0",
            "/sbin/ip -6 route del blackhole ::/1",
            "/usr/bin/ip route del 0.0.0.0/1 dev tun0",
            "/usr/sbin/nft delete table inet tunlab_step05_ks_tun0",
            "/usr/sbin/nft delete table ip tunlab_step06_deliver_tun0",
            "/usr/sbin/ip address del fd00::2/64 dev wg0",
            "/usr/sbin/ip link set dev wg0 down",
        ] {
            ok(argv).unwrap();
        }
        for argv in [
            "/usr/sbin/nft delete table bridge x",
            "/usr/sbin/nft delete table inet",
            "/usr/sbin/ip -4 route add 0.0.0.0/0 dev evil0",
            "/usr/sbin/ip -4 route del",
            "/usr/sbin/ip link del eth0",
            "/usr/sbin/ip link set dev eth0 up",
            "/usr/sbin/ip link set dev eth0 netns other down",
            "/usr/sbin/ip -4 route del 0.0.0.0/1 dev x;sh",
        ] {
            assert!(ok(argv).is_err(), "{argv}");
        }
        let sysctl = |key: &str, value: &str| {
            check_undo(&Action::Sysctl {
                key: key.into(),
                value: value.into(),
            })
        };
        sysctl("net.ipv4.ip_forward", "0").unwrap();
        sysctl("net/ipv4/conf/eth0.100/forwarding", "1").unwrap();
        assert!(sysctl("kernel.modprobe", "0").is_err());
        assert!(sysctl("vm.overcommit_memory", "1").is_err());
    }

    #[test]
    fn a_state_file_of_a_dead_or_other_process_is_not_refused() {
        let path = Path::new("/run/tunlab/x/step05-tun0.state");
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        // A live process, but not this program: its pid was reused.
        let other = refuse_if_owned(path, &format!("# pid {}\n", child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        other.unwrap();
        refuse_if_owned(path, &format!("# pid {}\n", std::process::id())).unwrap();
        refuse_if_owned(path, "").unwrap();
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
