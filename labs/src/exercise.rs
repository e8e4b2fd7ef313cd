//! The checker of the coding exercises, in the manner of rustlings.
//!
//! A lab's exercise is one Rust file: `labs/NN-*/exercise/FILE` is the stub
//! a learner edits (it starts with `todo!()`), `labs/NN-*/solution/FILE` is
//! the reference solution, and `labs/NN-*/exercise/tests.rs` holds the
//! tests. The checker compiles an attempt together with the tests, as a test
//! crate of its own (`rustc --test`), outside the workspace: an unsolved
//! stub can never break the workspace's build or its test run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::labs::Lab;

/// What came of checking one attempt.
#[derive(Debug)]
pub struct Outcome {
    pub passed: bool,
    /// What the compiler or the tests printed.
    pub output: String,
}

/// The longest the tests of an attempt may run (an attempt may loop).
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The learner's file of `lab`'s exercise.
pub fn stub(lab: &Lab) -> Option<PathBuf> {
    lab.exercise.map(|f| lab.dir().join("exercise").join(f))
}

/// The reference solution of `lab`'s exercise.
pub fn solution(lab: &Lab) -> Option<PathBuf> {
    lab.exercise.map(|f| lab.dir().join("solution").join(f))
}

/// The hints for `lab`'s exercise, to print when an attempt fails.
pub fn hints(lab: &Lab) -> Option<String> {
    std::fs::read_to_string(lab.dir().join("exercise").join("HINTS.md")).ok()
}

/// Compiles `attempt` with the tests of `lab`'s exercise and runs them.
pub fn check(lab: &Lab, attempt: &Path) -> anyhow::Result<Outcome> {
    if lab.exercise.is_none() {
        bail!("lab {} has no exercise", lab.number);
    }
    let attempt = attempt
        .canonicalize()
        .with_context(|| format!("reading {}", attempt.display()))?;
    let tests = lab
        .dir()
        .join("exercise")
        .join("tests.rs")
        .canonicalize()
        .context("finding tests.rs")?;
    let work = std::env::temp_dir().join(format!(
        "tunlab-exercise-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&work)?;
    let result = compile_and_run(&work, &attempt, &tests);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn compile_and_run(work: &Path, attempt: &Path, tests: &Path) -> anyhow::Result<Outcome> {
    let root = work.join("check.rs");
    std::fs::write(
        &root,
        format!(
            "#[path = {:?}]\nmod exercise;\n#[path = {:?}]\nmod tests;\n",
            attempt.display().to_string(),
            tests.display().to_string()
        ),
    )?;
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let binary = work.join("check");
    let compiled = Command::new(&rustc)
        .args([
            "--edition",
            "2024",
            "--test",
            "--crate-name",
            "exercise_check",
            "-o",
        ])
        .arg(&binary)
        .arg(&root)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", rustc.to_string_lossy()))?;
    if !compiled.status.success() {
        return Ok(Outcome {
            passed: false,
            output: String::from_utf8_lossy(&compiled.stderr).into_owned(),
        });
    }
    let log = work.join("output.txt");
    let file = std::fs::File::create(&log)?;
    let mut child = Command::new(&binary)
        .args(["--test-threads", "1"])
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .context("running the exercise's tests")?;
    let deadline = Instant::now() + TEST_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = std::fs::read_to_string(&log).unwrap_or_default();
    let passed = match status {
        Some(status) => status.success(),
        None => {
            output.push_str(&format!(
                "\nthe tests did not finish within {TEST_TIMEOUT:?}: is there an endless loop?\n"
            ));
            false
        }
    };
    Ok(Outcome { passed, output })
}
