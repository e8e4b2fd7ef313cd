//! Where things are and who may do what: the checkout, the step binaries
//! (built as the user who runs tunlab, never by a cargo running as root),
//! root and how to get it (sudo, for the part of a lab that needs it), and
//! handing the files a root process wrote back to that user.
//!
//! The way in: the user types `cargo run -p tunlab -- run 01` (or `cargo
//! test`). tunlab builds what the lab needs as that user, then, unless it
//! is root already, runs itself again through `sudo` with
//! `TUNLAB_ELEVATED=1`, which tells the root copy that everything is built
//! and cargo must not run. The root copy runs the lab and, at its end,
//! gives what it wrote (captures, logs, keys) to `SUDO_UID:SUDO_GID`. So
//! no file in `target/` or `~/.cargo` is ever root's, and the next plain
//! `cargo build` works.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, bail};

use crate::doctor::{self, Needs};

/// Set (to `1`) in the environment of the copy of tunlab, or of a lab
/// test, that sudo runs: everything is built, so cargo must not run.
pub const ELEVATED: &str = "TUNLAB_ELEVATED";

/// The exit status of a program that could not run for want of
/// privileges (or of what a lab needs from the machine), as automake's
/// test drivers read it: skipped.
pub const EXIT_UNPRIVILEGED: u8 = 77;

/// The root of the workspace (where `Cargo.toml`, `pcaps/` and `labs/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The folder this program was built into (`target/debug`, or
/// `target/release`; a test's `deps/` is left out).
fn build_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let mut dir = exe.parent().context("no parent folder")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// `target/tunlab/NAME`: where a lab (or the bench) keeps its files unless
/// told otherwise.
pub fn out_dir(name: &str) -> PathBuf {
    let target = build_dir()
        .ok()
        .and_then(|d| d.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("tunlab").join(name)
}

/// `pcaps/STEP`, created if need be: where `--fixtures` records a step's
/// golden captures. What is written there is handed back like the rest.
pub fn fixtures_dir(step: &str) -> anyhow::Result<PathBuf> {
    let dir = workspace_root().join("pcaps").join(step);
    make_dir(&dir)?;
    Ok(dir)
}

/// The folders a root process searches besides `PATH` (sudo's
/// `secure_path` has them; a user's `PATH` often lacks the `sbin` ones,
/// where `nft` lives).
const SYSTEM_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Where `program` is: an executable file in a `PATH` folder or in one of
/// the system folders root searches.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SYSTEM_PATH.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata().is_ok_and(|m| {
                m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
}

/// True when `program` can be run (see [`find_program`]).
pub fn on_path(program: &str) -> bool {
    find_program(program).is_some()
}

/// Fails with the exact install command when any of `tools` is missing.
pub fn require_tools(tools: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "missing tools: {}; install them with: {}",
        missing.join(", "),
        doctor::install_command(&missing)
    )
}

// ---------------------------------------------------------------------
// Who we are.

/// Whether this process is root (the labs create network namespaces,
/// which needs CAP_SYS_ADMIN, and configure them, CAP_NET_ADMIN).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether this is the copy that sudo runs for a user who asked without
/// sudo: root, and everything already built.
pub fn elevated() -> bool {
    is_root() && std::env::var_os(ELEVATED).is_some_and(|v| v == "1")
}

/// The user whose files tunlab writes when it runs as root for someone
/// else: `SUDO_UID:SUDO_GID`, or else the owner of the checkout's
/// `target/` (when root runs a user's checkout by `su` or a root shell).
/// `None` when we are not root, or root works on root's own checkout.
pub fn owner() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let from_sudo = || {
        let uid: u32 = std::env::var("SUDO_UID").ok()?.parse().ok()?;
        let gid: u32 = std::env::var("SUDO_GID").ok()?.parse().ok()?;
        Some((uid, gid))
    };
    let from_checkout = || {
        let target = out_dir("x");
        let target = target.parent()?.parent()?;
        let meta = target.metadata().or_else(|_| workspace_root().metadata()).ok()?;
        Some((meta.uid(), meta.gid()))
    };
    from_sudo().or_else(from_checkout).filter(|&(uid, _)| uid != 0)
}

/// The paths to hand back to [`owner`] when tunlab ends.
static HAND_BACK: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Creates folder `dir` (and its missing parents) and remembers the
/// topmost one it created, and `dir` itself, for [`hand_back`].
pub fn make_dir(dir: &Path) -> anyhow::Result<()> {
    let mut first_new = None;
    let mut at = Some(dir);
    while let Some(path) = at {
        if path.exists() {
            break;
        }
        first_new = Some(path.to_path_buf());
        at = path.parent();
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut list = HAND_BACK.lock().unwrap_or_else(|e| e.into_inner());
    list.extend(first_new);
    list.push(dir.to_path_buf());
    Ok(())
}

/// Gives every file and folder under the paths [`make_dir`] remembered to
/// [`owner`], without following symbolic links. Does nothing unless tunlab
/// is root for someone else. Called when a command ends, and by the
/// signal handler.
pub fn hand_back() {
    let Some((uid, gid)) = owner() else {
        return;
    };
    let list = std::mem::take(&mut *HAND_BACK.lock().unwrap_or_else(|e| e.into_inner()));
    for path in list {
        chown_tree(&path, uid, gid);
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    let Ok(meta) = path.symlink_metadata() else {
        return;
    };
    let _ = std::os::unix::fs::lchown(path, Some(uid), Some(gid));
    if meta.is_dir()
        && let Ok(entries) = std::fs::read_dir(path)
    {
        for entry in entries.flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

// ---------------------------------------------------------------------
// Building the step binaries.

/// Builds the binary of `package` (a step crate) with the same profile and
/// target directory as this program, and returns its path. Building first
/// means a lab always runs the code as it is now, a student's edits too.
pub fn step_binary(package: &str) -> anyhow::Result<PathBuf> {
    binary(package, package)
}

/// Builds binary `bin` of `package` as [`step_binary`] does. In the copy
/// that sudo runs ([`elevated`]) nothing is built: the user's copy built
/// it before asking for root. Root that runs for another user builds as
/// that user ([`owner`]), so no file in `target/` becomes root's.
pub fn binary(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let dir = build_dir()?;
    let path = dir.join(bin);
    if elevated() {
        if !path.is_file() {
            bail!(
                "{} is not built (tunlab builds what a lab needs before it asks sudo for root): \
                 run tunlab without sudo, as yourself",
                path.display()
            );
        }
        return Ok(path);
    }
    let status = cargo_build(&[(package, bin)], true)?
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building {bin} of {package} failed ({status})");
    }
    Ok(path)
}

/// Builds `binaries` (package, binary) as [`binary`] does, in one cargo
/// run whose progress shows: cargo's own lines (and its progress bar on
/// a terminal), after a line saying what is built and how. For builds
/// that take minutes, such as the bench's release build. Nothing is built
/// in the copy that sudo runs ([`elevated`]).
pub fn build_visibly(binaries: &[(&str, &str)]) -> anyhow::Result<()> {
    if elevated() || binaries.is_empty() {
        return Ok(());
    }
    let mut cargo = cargo_build(binaries, false)?;
    let (_, profile) = profile()?;
    let names: Vec<&str> = binaries.iter().map(|(_, bin)| *bin).collect();
    println!(
        "building {} with the {profile} profile (cargo build; the first time takes minutes)",
        names.join(", ")
    );
    let status = cargo.status().context("running cargo build")?;
    if !status.success() {
        bail!("building {} failed ({status})", names.join(", "));
    }
    Ok(())
}

/// The target folder and the cargo profile this program was built with.
fn profile() -> anyhow::Result<(PathBuf, String)> {
    let dir = build_dir()?;
    let target_dir = dir.parent().context("no target folder")?.to_path_buf();
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    Ok((target_dir, profile.to_string()))
}

/// `cargo build` of `binaries` with this program's profile and target
/// folder, as the right user ([`cargo_command`]).
fn cargo_build(binaries: &[(&str, &str)], quiet: bool) -> anyhow::Result<Command> {
    let (target_dir, profile) = profile()?;
    let mut cargo = cargo_command()?;
    cargo.current_dir(workspace_root()).arg("build");
    if quiet {
        cargo.arg("--quiet");
    }
    for (package, bin) in binaries {
        cargo.args(["-p", package, "--bin", bin]);
    }
    cargo
        .args(["--profile", &profile, "--target-dir"])
        .arg(target_dir);
    Ok(cargo)
}

/// `cargo`, as the user it should run as: ourselves, or, when root works
/// for another user, that user (with their home, so their `~/.cargo` and
/// `~/.rustup` are used and stay theirs). When cargo itself already ran
/// as root in this target folder (`sudo cargo run ...`), the user's cargo
/// could not write there: root builds, as cargo did, and says how to
/// repair it.
pub fn cargo_command() -> anyhow::Result<Command> {
    let as_root = || {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        Ok(Command::new(cargo))
    };
    let Some((uid, gid)) = owner() else {
        return as_root();
    };
    let dir = build_dir()?;
    let roots = [dir.clone(), dir.join(".cargo-lock")]
        .iter()
        .any(|p| p.metadata().is_ok_and(|m| m.uid() == 0));
    if roots {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            eprintln!(
                "tunlab: cargo ran as root here ({} is root's), so root builds too; \
                 to build as yourself again: sudo chown -R {uid}:{gid} {}, then run tunlab without sudo",
                dir.display(),
                dir.parent().unwrap_or(&dir).display()
            );
        });
        return as_root();
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .with_context(|| format!("no user with uid {uid}, whose files these are"))?;
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("CARGO_HOME").map_or_else(|| user.dir.join(".cargo"), PathBuf::from);
            Some(home.join("bin").join("cargo")).filter(|p| p.is_file())
        })
        .or_else(|| find_program("cargo"))
        .with_context(|| format!("cannot find cargo to build as {}", user.name))?;
    let mut command = Command::new(cargo);
    command
        .uid(uid)
        .gid(gid)
        .env("HOME", &user.dir)
        .env("USER", &user.name);
    Ok(command)
}

// ---------------------------------------------------------------------
// Getting root.

/// Why tunlab cannot get root here, in one line with the command to run
/// instead.
#[derive(Debug)]
pub struct CannotElevate(pub String);

impl std::fmt::Display for CannotElevate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CannotElevate {}

/// What sudo would do for this user now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sudo {
    /// Not installed.
    Missing,
    /// Gives root without asking (cached credentials, or NOPASSWD).
    Ready,
    /// Gives root after a password.
    Password,
    /// Does not give this user root at all; sudo's own words.
    Refused(String),
}

/// What sudo would do for this user, asked without ever prompting: `sudo
/// -n true` (works now?), then `sudo -n -v`, which names a user sudoers
/// does not list at all.
pub fn sudo_state() -> Sudo {
    if !on_path("sudo") {
        return Sudo::Missing;
    }
    let sudo = |args: &[&str]| {
        Command::new("sudo")
            .args(args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
    };
    match sudo(&["-n", "true"]) {
        Ok(out) if out.status.success() => return Sudo::Ready,
        Ok(_) => {}
        Err(_) => return Sudo::Missing,
    }
    let said = sudo(&["-n", "-v"])
        .map(|out| String::from_utf8_lossy(&out.stderr).trim().to_string())
        .unwrap_or_default();
    if said.contains("may not run sudo") || said.contains("not in the sudoers") {
        Sudo::Refused(said)
    } else {
        Sudo::Password
    }
}

fn sudo_ready() -> bool {
    sudo_state() == Sudo::Ready
}

/// Whether there is a terminal sudo can ask a password on.
fn has_terminal() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

/// Makes sure sudo will give root (asking for the password on the
/// terminal if it must), or says in one line why not and what to run:
/// `as_root` is the command for a root shell.
pub fn sudo_ok(what: &str, as_root: &str) -> Result<(), CannotElevate> {
    let why = format!("{what} needs root (it creates network namespaces)");
    match sudo_state() {
        Sudo::Ready => return Ok(()),
        Sudo::Missing => {
            return Err(CannotElevate(format!(
                "{why}, and sudo is not installed; as root, run: {as_root}"
            )));
        }
        Sudo::Refused(said) => {
            return Err(CannotElevate(format!(
                "{why}, and sudo does not give it to you ({said}); as root, run: {as_root}"
            )));
        }
        Sudo::Password => {}
    }
    if !has_terminal() {
        return Err(CannotElevate(format!(
            "{why}, and sudo needs a password but there is no terminal to ask for it; \
             run it in a terminal, or as root: {as_root}"
        )));
    }
    let prompt = format!("[tunlab] {what} runs as root; password for %u: ");
    let validated = Command::new("sudo")
        .args(["-v", "-p", &prompt])
        .status()
        .is_ok_and(|s| s.success());
    if !validated {
        return Err(CannotElevate(format!(
            "{why}, and sudo did not give it; as root, run: {as_root}"
        )));
    }
    Ok(())
}

/// The command that runs `program args...` as root through sudo, with
/// [`ELEVATED`] set and the few variables it needs kept (sudo resets the
/// rest).
fn sudo_command(program: &Path, args: &[OsString]) -> Command {
    let mut command = Command::new("sudo");
    // Without a password prompt when sudo would not ask (sudo_ok just
    // checked); with one when its timestamps are off.
    if sudo_ready() {
        command.arg("-n");
    }
    command.args(["--", "env"]).arg(format!("{ELEVATED}=1"));
    for var in ["CI", "RUST_BACKTRACE", "RUST_LOG"] {
        if let Some(value) = std::env::var_os(var) {
            let mut pair = OsString::from(format!("{var}="));
            pair.push(value);
            command.arg(pair);
        }
    }
    command.arg(program).args(args);
    command
}

/// Runs this program again as root through sudo with `args`, after
/// making sure sudo will, and building `needs.binaries` as the user;
/// returns its exit code.
/// While it runs, Ctrl-C belongs to it (this copy waits), and SIGTERM and
/// SIGHUP are passed on.
pub fn run_as_root(what: &str, needs: &Needs, args: &[OsString]) -> anyhow::Result<u8> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let shown: Vec<String> = args
        .iter()
        .map(|a| step01_ping_tun::host::shell_quote(&a.to_string_lossy()))
        .collect();
    let as_root = format!("{} {}", exe.display(), shown.join(" "));
    // Asked first, so that a password prompt comes at once and not after
    // a long build.
    sudo_ok(what, &as_root)?;
    for (package, bin) in needs.binaries {
        binary(package, bin)?;
    }
    let mut child = sudo_command(&exe, args).spawn().context("running sudo")?;
    let pid = child.id();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGQUIT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .context("installing signal handlers")?;
    let handle = signals.handle();
    let relay = std::thread::spawn(move || {
        for signal in signals.forever() {
            // The terminal sends Ctrl-C and Ctrl-\ to the whole process
            // group, the root copy included: nothing to pass on.
            if (signal == signal_hook::consts::SIGTERM || signal == signal_hook::consts::SIGHUP)
                && let Ok(signal) = nix::sys::signal::Signal::try_from(signal)
            {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
            }
        }
    });
    let status = child.wait().context("waiting for sudo")?;
    handle.close();
    let _ = relay.join();
    Ok(exit_code(status))
}

/// A child's exit status as this program's: its code, or 128 + the signal
/// that ended it.
pub fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        _ => 1,
    }
}

// ---------------------------------------------------------------------
// Lab tests.

/// The outcome of getting root for this test binary, once: the first lab
/// test asks sudo (for a password on the terminal if it must), the others
/// wait for that answer.
static TEST_SUDO: OnceLock<Result<(), String>> = OnceLock::new();

/// For lab tests, at the top of each: true when the test's body must run
/// here (this process is root). Otherwise the body cannot run as this
/// user, and the answer is false:
///
/// - with sudo, the test runs under sudo: this builds what `needs` lists,
///   runs the test binary again as root for this one test, and fails if it
///   fails there (what it printed is shown then);
/// - without a way to root (no sudo, or no terminal for sudo's password),
///   or without what `needs` lists from the machine, it prints `SKIPPED
///   <test>: <reason>`; under CI (`CI=true`), where lab tests must run,
///   that is a failure instead.
pub fn lab_test(test: &str, needs: &Needs) -> bool {
    let missing = doctor::preflight(needs);
    if !missing.is_empty() {
        let reasons: Vec<String> = missing.iter().map(|l| l.to_string()).collect();
        skip(test, &reasons.join("; "));
        return false;
    }
    if is_root() {
        return true;
    }
    if let Err(reason) =
        TEST_SUDO.get_or_init(|| sudo_ok("a lab test", "cargo test -p tunlab").map_err(|e| e.0))
    {
        skip(test, reason);
        return false;
    }
    for (package, bin) in needs.binaries {
        if let Err(e) = binary(package, bin) {
            panic!("{test}: {e:#}");
        }
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => panic!("{test}: finding the test binary: {e}"),
    };
    let args: Vec<OsString> = [test, "--exact", "--nocapture", "--test-threads", "1"]
        .map(OsString::from)
        .into();
    let out = match sudo_command(&exe, &args).stdin(Stdio::null()).output() {
        Ok(out) => out,
        Err(e) => panic!("{test}: running sudo: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Captured by the test harness: shown when this test fails.
    println!("{stdout}");
    println!("{stderr}");
    // A skip under sudo is a skip here too (written past the capture).
    for line in stderr.lines().filter(|l| l.starts_with("SKIPPED ")) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{line}");
    }
    assert!(
        out.status.success(),
        "{test} failed when run as root through sudo ({})",
        out.status
    );
    let ran = stdout.contains("test result: ok. 1 passed");
    assert!(ran, "{test} did not run under sudo:\n{stdout}");
    false
}

/// For tests that run a tool of the machine (tshark, editcap): true when
/// `tool` is installed; otherwise `SKIPPED <test>: ...` with the command
/// that installs it, or under CI (`CI=true`) a failure.
pub fn tool_test(test: &str, tool: &str) -> bool {
    if on_path(tool) {
        return true;
    }
    skip(
        test,
        &format!("{tool} is missing: {}", doctor::install_command(&[tool])),
    );
    false
}

/// `SKIPPED <test>: <reason>`, or a failure under CI.
fn skip(test: &str, reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} cannot run under CI, where lab tests must run: {reason}");
    }
    // Written to stderr directly, not with eprintln!, which the test
    // harness captures and shows only for failing tests.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}
