//! What a lab needs from the machine: root, system tools, step binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The Debian package of each tool the labs use.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("tcpdump", "tcpdump"),
    ("tshark", "tshark"),
    ("iperf3", "iperf3"),
    ("nft", "nftables"),
    ("curl", "curl"),
    ("nc", "netcat-openbsd"),
];

/// True when `program` is an executable file in one of the `PATH` folders.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let p = dir.join(program);
            p.metadata().is_ok_and(|m| {
                m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

/// Fails with the exact install command when any of `tools` is missing.
pub fn require_tools(tools: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing
        .iter()
        .map(|t| {
            PACKAGES
                .iter()
                .find(|(tool, _)| tool == t)
                .map_or(*t, |(_, pkg)| *pkg)
        })
        .collect();
    bail!(
        "missing tools: {}; install them with: sudo apt-get install --no-install-recommends {}",
        missing.join(", "),
        packages.join(" ")
    )
}

/// `None` when this process may build lab hosts (it is root: creating
/// network namespaces needs CAP_SYS_ADMIN and configuring them
/// CAP_NET_ADMIN), else the reason it may not.
pub fn missing_privilege() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse::<u32>().ok());
    match euid {
        Some(0) => None,
        _ => Some("labs create network namespaces, which needs root".to_string()),
    }
}

/// Fails with one line saying what to run instead when not root.
pub fn require_root() -> anyhow::Result<()> {
    match missing_privilege() {
        None => Ok(()),
        Some(why) => {
            let args: Vec<String> = std::env::args_os()
                .skip(1)
                .map(|a| step01_ping_tun::host::shell_quote(&a.to_string_lossy()))
                .collect();
            bail!("{why}; run: sudo -E cargo run -p tunlab -- {}", args.join(" "))
        }
    }
}

/// The root of the workspace (where `Cargo.toml`, `pcaps/` and `labs/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Builds the binary of `package` (a step crate) with the same profile and
/// target directory as this program, and returns its path. Building first
/// means a lab always runs the code as it is now, a student's edits too.
pub fn step_binary(package: &str) -> anyhow::Result<PathBuf> {
    binary(package, package)
}

/// Builds binary `bin` of `package` as [`step_binary`] does.
pub fn binary(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    // target/<profile>/tunlab, or target/<profile>/deps/<test> for tests.
    let mut dir = exe.parent().context("no parent folder")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let target_dir = dir.parent().context("no target folder")?;
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--bin",
            bin,
            "--profile",
            profile,
            "--target-dir",
        ])
        .arg(target_dir)
        .status()
        .with_context(|| format!("running {} build", cargo.to_string_lossy()))?;
    if !status.success() {
        bail!("building {bin} of {package} failed ({status})");
    }
    Ok(dir.join(bin))
}

/// For lab tests: true when the test can run. Otherwise prints
/// `SKIPPED <test>: <reason>` and returns false, except under CI (`CI=true`),
/// where a lab test that cannot run is a failure, so it panics.
pub fn lab_test_can_run(test: &str, tools: &[&str]) -> bool {
    let reason = match (missing_privilege(), require_tools(tools)) {
        (Some(why), _) => format!("{why} (run the tests as root: sudo -E cargo test --workspace)"),
        (None, Err(e)) => format!("{e:#}"),
        (None, Ok(())) => return true,
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} cannot run under CI, where lab tests must run: {reason}");
    }
    // Written to stderr directly, not with eprintln!, which the test
    // harness captures and shows only for failing tests.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
    false
}
