//! The loop around a lab's coding exercise, in the manner of rustlings:
//! `tunlab hint NN` shows the next hint only, `tunlab check NN` shows the
//! failing test in a few lines and says which hint to read next, and
//! `tunlab watch NN` checks again every time the exercise file is saved.
//!
//! - [`Hints`]: a lab's `exercise/HINTS.md`, split into its numbered hints.
//! - [`Progress`]: what a learner has seen and tried, per lab, kept in a
//!   small JSON file (`target/tunlab/progress.json`), so that the next
//!   `hint` knows which hint comes next.
//! - [`TestRun`]: what a test binary printed, boiled down to the tests that
//!   failed, their assertion messages, or the first compiler error.
//! - [`watch`]: polls the exercise file's modification time (no file
//!   watcher crate: a poll every fraction of a second is cheap, works on
//!   every file system, and survives editors that save by renaming).
//!
//! The last hint is nearly the answer, so it is held back until the
//! learner has failed twice with two different attempts: never on the
//! first failure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::env;
use crate::exercise;
use crate::labs::Lab;

/// The command a learner types, as the book and the READMEs write it.
pub fn command(verb: &str, lab: &Lab) -> String {
    format!("cargo run -p tunlab -- {verb} {}", lab.number)
}

// ---------------------------------------------------------------------
// Hints.

/// One numbered hint of a `HINTS.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// 1, 2, ...
    pub number: usize,
    /// The hint's text, its list marker removed and its lines dedented.
    pub text: String,
}

/// The hints of one exercise, in order. The last one is nearly the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hints {
    pub hints: Vec<Hint>,
}

impl Hints {
    /// Splits a `HINTS.md` into its hints: each starts with a line `N. `
    /// at the start of a line, and takes the lines after it up to the next
    /// (they are indented by three spaces, which are removed). What comes
    /// before the first hint (the title, "read them in order") is left out.
    pub fn parse(markdown: &str) -> Self {
        let mut hints: Vec<Hint> = Vec::new();
        let mut in_code = false;
        for line in markdown.lines() {
            let marker = line
                .split_once(". ")
                .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)))
                .filter(|_| !in_code && !line.starts_with(' '));
            if let Some((number, rest)) = marker {
                hints.push(Hint {
                    number,
                    text: rest.to_string(),
                });
                continue;
            }
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
            }
            if let Some(hint) = hints.last_mut() {
                hint.text.push('\n');
                hint.text.push_str(line.strip_prefix("   ").unwrap_or(line));
            }
        }
        for hint in &mut hints {
            hint.text = hint.text.trim_end().to_string();
        }
        Self { hints }
    }

    /// The hints of `lab`'s exercise (`exercise/HINTS.md`).
    pub fn of(lab: &Lab) -> anyhow::Result<Self> {
        let Some(text) = exercise::hints(lab) else {
            bail!("lab {} has no exercise/HINTS.md", lab.number);
        };
        let hints = Self::parse(&text);
        if hints.hints.is_empty() {
            bail!("lab {}'s HINTS.md has no numbered hints", lab.number);
        }
        Ok(hints)
    }

    pub fn len(&self) -> usize {
        self.hints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hints.is_empty()
    }

    /// Hint `number` (from 1).
    pub fn get(&self, number: usize) -> Option<&Hint> {
        number.checked_sub(1).and_then(|i| self.hints.get(i))
    }
}

// ---------------------------------------------------------------------
// Progress.

/// What one learner did on one lab's exercise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabProgress {
    /// How many hints have been shown (the next `hint` shows one more).
    pub hints_seen: usize,
    /// Failed checks of different attempts (checking the same file twice
    /// counts once).
    pub failures: u32,
    /// A fingerprint of the attempt that failed last.
    pub last_failed: Option<u64>,
    /// Whether an attempt has passed.
    pub passed: bool,
}

impl LabProgress {
    /// Whether the last hint (nearly the answer) may be shown: after two
    /// failed attempts, or once the exercise has passed.
    pub fn last_hint_open(&self) -> bool {
        self.failures >= 2 || self.passed
    }

    /// How many of `total` hints may be shown now.
    pub fn available(&self, total: usize) -> usize {
        if self.last_hint_open() {
            total
        } else {
            total.saturating_sub(1)
        }
    }

    /// Records the outcome of checking an attempt whose content is
    /// `attempt`.
    pub fn record(&mut self, attempt: &[u8], passed: bool) {
        if passed {
            self.passed = true;
            return;
        }
        let print = fingerprint(attempt);
        if self.last_failed != Some(print) {
            self.failures = self.failures.saturating_add(1);
            self.last_failed = Some(print);
        }
    }
}

/// FNV-1a: a fingerprint that stays the same across Rust versions (std's
/// hasher may not), so a file checked twice counts as one attempt.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Every lab's [`LabProgress`], kept in a JSON file. A file that is
/// missing or unreadable is a fresh start, never an error: the hints are
/// a help, and must not stand in the way of a check.
#[derive(Debug, Clone)]
pub struct Progress {
    path: PathBuf,
    labs: BTreeMap<String, LabProgress>,
}

impl Progress {
    /// `target/tunlab/progress.json`, next to the labs' own files: `cargo
    /// clean` starts over.
    pub fn default_path() -> PathBuf {
        env::out_dir("progress.json")
    }

    pub fn load(path: &Path) -> Self {
        let labs = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|v| v.get("labs").and_then(Value::as_object).cloned())
            .map(|labs| {
                labs.into_iter()
                    .map(|(number, v)| {
                        let n = |key: &str| v.get(key).and_then(Value::as_u64);
                        let entry = LabProgress {
                            hints_seen: n("hints_seen").unwrap_or(0) as usize,
                            failures: n("failures").unwrap_or(0).min(u64::from(u32::MAX)) as u32,
                            last_failed: n("last_failed"),
                            passed: v.get("passed").and_then(Value::as_bool).unwrap_or(false),
                        };
                        (number, entry)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            path: path.to_path_buf(),
            labs,
        }
    }

    pub fn lab(&self, number: &str) -> LabProgress {
        self.labs.get(number).cloned().unwrap_or_default()
    }

    pub fn lab_mut(&mut self, number: &str) -> &mut LabProgress {
        self.labs.entry(number.to_string()).or_default()
    }

    /// Writes the file (and its folder). When tunlab runs as root for
    /// another user, the file is handed to that user, so that their next
    /// `hint` can update it.
    pub fn save(&self) -> anyhow::Result<()> {
        let labs: serde_json::Map<String, Value> = self
            .labs
            .iter()
            .map(|(number, p)| {
                let entry = json!({
                    "hints_seen": p.hints_seen,
                    "failures": p.failures,
                    "last_failed": p.last_failed,
                    "passed": p.passed,
                });
                (number.clone(), entry)
            })
            .collect();
        let text = serde_json::to_string_pretty(&json!({ "labs": labs }))?;
        if let Some(dir) = self.path.parent() {
            env::make_dir(dir)?;
        }
        std::fs::write(&self.path, text + "\n")
            .with_context(|| format!("writing {}", self.path.display()))?;
        if let Some((uid, gid)) = env::owner() {
            let _ = std::os::unix::fs::lchown(&self.path, Some(uid), Some(gid));
        }
        Ok(())
    }
}

/// What `tunlab hint NN` prints, and the progress it leaves: the next
/// hint (or, with `all`, every hint that may be shown), then what comes
/// next.
pub fn hint_text(lab: &Lab, hints: &Hints, progress: &mut LabProgress, all: bool) -> String {
    let total = hints.len();
    let available = progress.available(total);
    let mut out = String::new();
    let show = |out: &mut String, hint: &Hint| {
        let last = if hint.number == total { " (the last)" } else { "" };
        let _ = writeln!(out, "Lab {} hint {} of {total}{last}:\n", lab.number, hint.number);
        for line in hint.text.replace("**", "").lines() {
            let _ = writeln!(out, "{}", format!("  {line}").trim_end());
        }
        out.push('\n');
    };
    if all {
        for hint in hints.hints.iter().take(available) {
            show(&mut out, hint);
        }
        progress.hints_seen = progress.hints_seen.max(available);
    } else if progress.hints_seen < available {
        progress.hints_seen += 1;
        if let Some(hint) = hints.get(progress.hints_seen) {
            show(&mut out, hint);
        }
    } else if progress.hints_seen >= total {
        // All seen: show the last again.
        if let Some(hint) = hints.get(total) {
            show(&mut out, hint);
        }
    }
    // What comes next.
    let mut next = String::new();
    let seen = progress.hints_seen;
    if seen < available {
        let _ = writeln!(
            next,
            "Next: `{}` shows hint {} of {total}.",
            command("hint", lab),
            seen + 1
        );
    } else if available < total {
        let _ = writeln!(
            next,
            "Hint {total} of {total} is nearly the answer: it opens after your second failed \
             attempt (change your file and run `{}` again; checking the same file twice counts \
             once).{}",
            command("check", lab),
            if seen == 0 {
                String::new()
            } else {
                format!(
                    " Until then, `{} --all` shows the hints you have read, and the failing \
                     test's message says what it expected.",
                    command("hint", lab)
                )
            }
        );
    } else {
        let _ = writeln!(
            next,
            "That was the last hint; `{} --all` shows them all again.",
            command("hint", lab)
        );
    }
    out.push_str(&wrap(&next, 78));
    out
}

/// `text` with its lines broken at spaces to at most `width` columns,
/// never inside a `command in backticks`.
pub fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut words: Vec<String> = Vec::new();
        for word in line.split(' ') {
            match words.last_mut() {
                Some(open) if open.matches('`').count() % 2 == 1 => {
                    open.push(' ');
                    open.push_str(word);
                }
                _ => words.push(word.to_string()),
            }
        }
        let mut column = 0;
        for word in &words {
            if column > 0 && column + 1 + word.len() > width {
                out.push('\n');
                column = 0;
            } else if column > 0 {
                out.push(' ');
                column += 1;
            }
            out.push_str(word);
            column += word.len();
        }
        out.push('\n');
    }
    out
}

/// The line that tells a learner whose attempt just failed which hint to
/// read next.
pub fn next_hint_line(lab: &Lab, hints: &Hints, progress: &LabProgress) -> String {
    let total = hints.len();
    let available = progress.available(total);
    let seen = progress.hints_seen;
    if seen < available {
        format!(
            "Stuck? Read hint {} of {total}: `{}`.",
            seen + 1,
            command("hint", lab)
        )
    } else if available < total {
        format!(
            "You have read hints 1 to {seen} of {total}; the last, nearly the answer, opens \
             after a second failed attempt."
        )
    } else {
        format!(
            "You have read all {total} hints (`{} --all` shows them again).",
            command("hint", lab)
        )
    }
}

// ---------------------------------------------------------------------
// What the tests said.

/// One test that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// As libtest names it: `tests::in_order`.
    pub name: String,
    /// Where it panicked (`labs/04-crypto/exercise/tests.rs:61:5`), the
    /// checkout's path left out.
    pub location: Option<String>,
    /// The panic's message: the assertion and what the test says about it.
    pub message: String,
}

impl Failure {
    /// The name without the module path (`in_order`).
    pub fn short_name(&self) -> &str {
        self.name.rsplit("::").next().unwrap_or(&self.name)
    }
}

/// What a test binary (or several, from `cargo test`) printed, boiled
/// down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestRun {
    /// The names of the tests that passed.
    pub passed: Vec<String>,
    /// The tests that failed, in the order they ran.
    pub failed: Vec<Failure>,
    /// The first compiler error, when the attempt did not compile, and how
    /// many there were.
    pub compile_error: Option<(String, usize)>,
    /// The tests did not finish in time.
    pub timed_out: bool,
}

impl TestRun {
    /// Reads libtest's output (`test NAME ... ok`, the `---- NAME stdout
    /// ----` sections of the failures) or, when there is none, rustc's
    /// errors. Paths under the checkout are shown relative to it.
    pub fn parse(output: &str) -> Self {
        let root = format!("{}/", env::workspace_root().display());
        let output = output.replace(&root, "");
        let mut run = TestRun {
            timed_out: output.contains("the tests did not finish within"),
            ..TestRun::default()
        };
        let mut failed_names = Vec::new();
        for line in output.lines() {
            let Some(rest) = line.strip_prefix("test ") else {
                continue;
            };
            if let Some(name) = rest.strip_suffix(" ... ok") {
                run.passed.push(name.to_string());
            } else if let Some(name) = rest.strip_suffix(" ... FAILED") {
                failed_names.push(name.to_string());
            }
        }
        let sections = failure_sections(&output);
        for name in failed_names {
            let (location, message) = sections
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, body)| panic_of(body))
                .unwrap_or((None, String::new()));
            run.failed.push(Failure {
                name,
                location,
                message,
            });
        }
        if run.passed.is_empty() && run.failed.is_empty() {
            run.compile_error = first_compile_error(&output);
        }
        run
    }

    pub fn total(&self) -> usize {
        self.passed.len() + self.failed.len()
    }

    /// Whether this says anything about tests: they ran, or did not build.
    pub fn is_empty(&self) -> bool {
        self.total() == 0 && self.compile_error.is_none()
    }
}

/// The `---- NAME stdout ----` sections: each test's name and what it
/// printed (its panic message, since Rust 1.80 or so, among it).
fn failure_sections(output: &str) -> Vec<(String, String)> {
    let mut sections: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in output.lines() {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            sections.extend(current.take());
            current = Some((name.to_string(), String::new()));
            continue;
        }
        // The list of failures after the sections, or the next binary.
        if line == "failures:" || line.starts_with("test result:") || line.starts_with("running ") {
            sections.extend(current.take());
            continue;
        }
        if let Some((_, body)) = &mut current {
            body.push_str(line);
            body.push('\n');
        }
    }
    sections.extend(current);
    sections
}

/// Where a test panicked and its message: the lines after `thread 'NAME'
/// (ID) panicked at FILE:LINE:COL:` up to the `note:` or backtrace that
/// ends them.
fn panic_of(body: &str) -> (Option<String>, String) {
    let mut location = None;
    let mut message = Vec::new();
    let mut in_message = false;
    for line in body.lines() {
        if line.starts_with("thread ") && line.contains(" panicked at ") {
            location = line
                .split_once(" panicked at ")
                .map(|(_, at)| at.trim_end_matches(':').to_string());
            in_message = true;
            message.clear();
            continue;
        }
        if in_message {
            if line.starts_with("note: ") || line.starts_with("stack backtrace:") {
                in_message = false;
                continue;
            }
            message.push(line);
        }
    }
    let message = message.join("\n").trim().to_string();
    (location, message)
}

/// rustc's first error, with the lines that show where (up to the blank
/// line that ends it), and how many errors there were.
fn first_compile_error(output: &str) -> Option<(String, usize)> {
    let errors = output
        .lines()
        .filter(|l| l.starts_with("error[") || l.starts_with("error:") && !l.starts_with("error: aborting"))
        .count();
    let mut first = Vec::new();
    for line in output.lines() {
        if first.is_empty() {
            if (line.starts_with("error[") || line.starts_with("error:"))
                && !line.starts_with("error: aborting")
            {
                first.push(line);
            }
        } else if line.trim().is_empty() {
            break;
        } else {
            first.push(line);
        }
    }
    (!first.is_empty()).then(|| (first.join("\n"), errors))
}

/// A few lines on a failed attempt: the first failing test, its location
/// and message (at most `max_lines` of it), and the names of the others.
pub fn explain_failure(run: &TestRun, max_lines: usize) -> String {
    let mut out = String::new();
    if let Some((error, count)) = &run.compile_error {
        let _ = writeln!(
            out,
            "your file does not compile ({count} error{}); the first:",
            if *count == 1 { "" } else { "s" }
        );
        for line in error.lines().take(max_lines) {
            let _ = writeln!(out, "  {line}");
        }
        return out;
    }
    if run.timed_out {
        let _ = writeln!(
            out,
            "the tests did not finish in time: is there a loop that never ends?"
        );
    }
    // The first failure that fits in `max_lines` (a property test's
    // minimal input can run to pages), else the first.
    let shown = run
        .failed
        .iter()
        .position(|f| f.message.lines().count() <= max_lines)
        .unwrap_or(0);
    let Some(first) = run.failed.get(shown) else {
        if run.total() == 0 && !run.timed_out {
            let _ = writeln!(out, "no test ran");
        }
        return out;
    };
    let _ = writeln!(
        out,
        "{} of {} tests fail; {} {}{}:",
        run.failed.len(),
        run.total(),
        if shown == 0 { "the first," } else { "among them" },
        first.name,
        first
            .location
            .as_deref()
            .map(|l| format!(" (at {l})"))
            .unwrap_or_default()
    );
    let lines: Vec<&str> = first.message.lines().collect();
    for line in lines.iter().take(max_lines) {
        let _ = writeln!(out, "  {line}");
    }
    if lines.len() > max_lines {
        let _ = writeln!(out, "  [{} more lines]", lines.len() - max_lines);
    }
    if run.failed.len() > 1 {
        const NAMED: usize = 3;
        let others: Vec<&str> = run
            .failed
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != shown)
            .map(|(_, f)| f.short_name())
            .collect();
        let more = others.len().saturating_sub(NAMED);
        let _ = write!(
            out,
            "also failing: {}",
            others[..others.len().min(NAMED)].join(", ")
        );
        if more > 0 {
            let _ = write!(out, " and {more} more");
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------
// Checking an attempt.

/// The outcome of checking one attempt, with the learner's progress
/// updated and saved.
#[derive(Debug)]
pub struct Checked {
    pub passed: bool,
    pub run: TestRun,
    pub progress: LabProgress,
    /// Everything the compiler and the tests printed.
    pub output: String,
}

/// Checks `attempt` against `lab`'s exercise tests. The learner's progress
/// is not touched: [`record`] does that.
pub fn check(lab: &Lab, attempt: &Path) -> anyhow::Result<Checked> {
    let outcome = exercise::check(lab, attempt)?;
    Ok(Checked {
        passed: outcome.passed,
        run: TestRun::parse(&outcome.output),
        progress: LabProgress::default(),
        output: outcome.output,
    })
}

/// Records the outcome of a check of `attempt` in the progress file at
/// `progress`, and keeps the lab's updated progress in `checked`.
pub fn record(lab: &Lab, attempt: &Path, checked: &mut Checked, progress: &Path) {
    let content = std::fs::read(attempt).unwrap_or_default();
    let mut all = Progress::load(progress);
    let entry = all.lab_mut(lab.number);
    entry.record(&content, checked.passed);
    checked.progress = entry.clone();
    if let Err(e) = all.save() {
        eprintln!("tunlab: could not keep your progress: {e:#}");
    }
}

/// The lines `tunlab check NN` prints about the exercise.
pub fn report_text(lab: &Lab, attempt: &Path, checked: &Checked, hints: Option<&Hints>) -> String {
    let shown = attempt
        .strip_prefix(env::workspace_root())
        .unwrap_or(attempt)
        .display()
        .to_string();
    let mut out = format!("checking your exercise {shown}\n");
    if checked.passed {
        let _ = writeln!(out, "PASS exercise: all {} tests pass", checked.run.total());
        return out;
    }
    let _ = writeln!(out, "FAIL exercise: not solved yet");
    for line in explain_failure(&checked.run, 12).lines() {
        let _ = writeln!(out, "     {line}");
    }
    if let Some(hints) = hints {
        let _ = writeln!(out, "     {}", next_hint_line(lab, hints, &checked.progress));
    }
    out
}

// ---------------------------------------------------------------------
// Watching.

/// The file's modification time and length, or `None` while it is missing
/// (an editor that saves by writing a new file and renaming it over the
/// old one leaves a moment without one).
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// How often [`watch`] looks at the file.
pub const POLL: Duration = Duration::from_millis(250);

/// `tunlab watch NN`: checks `attempt` now and after every save, printing
/// a short status each time, until `stop` is set (by Ctrl-C).
pub fn watch(lab: &Lab, attempt: &Path, progress: &Path, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let hints = Hints::of(lab).ok();
    let shown = attempt
        .strip_prefix(env::workspace_root())
        .unwrap_or(attempt)
        .display()
        .to_string();
    println!(
        "watching {shown}: every save checks it again; Ctrl-C stops. Hints: `{}`.",
        command("hint", lab)
    );
    let started = Instant::now();
    let mut last: Option<(SystemTime, u64)> = None;
    let mut round = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let now = stamp(attempt);
        if now.is_none() || now == last {
            std::thread::sleep(POLL);
            continue;
        }
        // Let the editor finish writing: wait until the stamp holds still.
        std::thread::sleep(POLL);
        if stamp(attempt) != now {
            continue;
        }
        last = now;
        round += 1;
        let elapsed = started.elapsed().as_secs();
        let when = format!("[{round} at {}:{:02}]", elapsed / 60, elapsed % 60);
        let mut checked = match check(lab, attempt) {
            Ok(checked) => checked,
            Err(e) => {
                println!("{when} could not check: {e:#}");
                continue;
            }
        };
        // Ctrl-C during a check stops the compiler or the tests too: that
        // is no failed attempt.
        if stop.load(Ordering::SeqCst) {
            break;
        }
        record(lab, attempt, &mut checked, progress);
        println!("{}", watch_status(lab, &when, &checked, hints.as_ref()));
    }
    println!("stopped watching");
    Ok(())
}

/// The few lines `watch` prints after each check.
pub fn watch_status(lab: &Lab, when: &str, checked: &Checked, hints: Option<&Hints>) -> String {
    if checked.passed {
        return format!(
            "{when} PASS all {} tests. Next: `{}` runs the lab's own checks against your build.",
            checked.run.total(),
            command("check", lab)
        );
    }
    let mut out = String::new();
    if let Some((error, count)) = &checked.run.compile_error {
        let first = error.lines().next().unwrap_or_default();
        let at = error
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("--> "))
            .map(|at| format!(" at {at}"))
            .unwrap_or_default();
        let plural = if *count == 1 { "" } else { "s" };
        let _ = write!(
            out,
            "{when} FAIL does not compile ({count} error{plural}): {first}{at}"
        );
    } else if let Some(first) = checked.run.failed.first() {
        let message = first.message.lines().next().unwrap_or("(no message)");
        let _ = write!(
            out,
            "{when} FAIL {} of {} tests; {}: {message}",
            checked.run.failed.len(),
            checked.run.total(),
            first.short_name()
        );
    } else {
        let _ = write!(out, "{when} FAIL");
        if checked.run.timed_out {
            out.push_str(": the tests did not finish in time");
        }
    }
    if let Some(hints) = hints {
        let _ = write!(out, "\n    {}", next_hint_line(lab, hints, &checked.progress));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labs::LABS;

    const HINTS: &str = "# Lab 99 exercise: hints\n\nRead them in order.\n\n\
        1. **First.** Do this\n   and that.\n\n\
        2. **Code.**\n\n   ```rust,ignore\n   let x = 1;\n2. not a hint, inside code\n   ```\n\n\
        3. **Nearly the answer.** Here.\n";

    #[test]
    fn wrap_keeps_commands_whole() {
        let text = wrap("run `cargo run -p tunlab -- hint 03 --all` to see them again", 30);
        assert_eq!(
            text,
            "run\n`cargo run -p tunlab -- hint 03 --all`\nto see them again\n"
        );
    }

    #[test]
    fn hints_split_at_their_numbers() {
        let hints = Hints::parse(HINTS);
        assert_eq!(hints.len(), 3);
        assert_eq!(hints.hints[0].text, "**First.** Do this\nand that.");
        assert!(
            hints.hints[1]
                .text
                .contains("let x = 1;\n2. not a hint, inside code")
        );
        assert_eq!(hints.get(3).unwrap().text, "**Nearly the answer.** Here.");
        assert!(hints.get(0).is_none() && hints.get(4).is_none());
    }

    #[test]
    fn every_lab_has_numbered_hints() {
        for lab in LABS.iter().filter(|l| l.exercise.is_some()) {
            let hints = Hints::of(lab).unwrap();
            assert!(hints.len() >= 3, "lab {}: {} hints", lab.number, hints.len());
            let numbers: Vec<usize> = hints.hints.iter().map(|h| h.number).collect();
            assert_eq!(
                numbers,
                (1..=hints.len()).collect::<Vec<_>>(),
                "lab {}",
                lab.number
            );
        }
    }

    /// One hint at a time; the last only after two different failed
    /// attempts.
    #[test]
    fn hints_come_one_at_a_time_and_the_last_waits() {
        let lab = &LABS[0];
        let hints = Hints::parse(HINTS);
        let mut p = LabProgress::default();
        let text = hint_text(lab, &hints, &mut p, false);
        assert!(text.contains("hint 1 of 3") && text.contains("Do this"), "{text}");
        assert!(text.contains("shows hint 2 of 3"), "{text}");
        let text = hint_text(lab, &hints, &mut p, false);
        assert!(text.contains("hint 2 of 3"), "{text}");
        assert!(text.contains("opens after your second failed attempt"), "{text}");
        // Asking again shows nothing new, and not the last.
        let text = hint_text(lab, &hints, &mut p, false);
        assert!(!text.contains("Nearly the answer"), "{text}");
        assert_eq!(p.hints_seen, 2);

        // One failure, the same file checked again: still one.
        p.record(b"attempt one", false);
        p.record(b"attempt one", false);
        assert_eq!(p.failures, 1);
        assert!(!hint_text(lab, &hints, &mut p, true).contains("Nearly the answer"));
        // A second, different failed attempt opens it.
        p.record(b"attempt two", false);
        let text = hint_text(lab, &hints, &mut p, false);
        assert!(
            text.contains("hint 3 of 3 (the last)") && text.contains("Nearly the answer"),
            "{text}"
        );
        assert!(text.contains("That was the last hint"), "{text}");
    }

    #[test]
    fn all_shows_what_may_be_shown() {
        let lab = &LABS[0];
        let hints = Hints::parse(HINTS);
        let mut p = LabProgress::default();
        let text = hint_text(lab, &hints, &mut p, true);
        assert!(
            text.contains("hint 1 of 3") && text.contains("hint 2 of 3"),
            "{text}"
        );
        assert!(!text.contains("hint 3 of 3"), "{text}");
        assert_eq!(p.hints_seen, 2);
        p.passed = true;
        let text = hint_text(lab, &hints, &mut p, true);
        assert!(text.contains("hint 3 of 3"), "{text}");
    }

    #[test]
    fn progress_survives_a_round_trip_and_a_broken_file() {
        let dir = std::env::temp_dir().join(format!("tunlab-progress-{}", std::process::id()));
        let path = dir.join("progress.json");
        let mut progress = Progress::load(&path);
        assert_eq!(progress.lab("04"), LabProgress::default());
        progress.lab_mut("04").hints_seen = 2;
        progress.lab_mut("04").record(b"x", false);
        progress.save().unwrap();
        let again = Progress::load(&path);
        assert_eq!(again.lab("04").hints_seen, 2);
        assert_eq!(again.lab("04").failures, 1);
        assert_eq!(again.lab("04").last_failed, Some(fingerprint(b"x")));
        std::fs::write(&path, "{ not json").unwrap();
        assert_eq!(Progress::load(&path).lab("04"), LabProgress::default());
        std::fs::remove_dir_all(dir).unwrap();
    }

    const FAILED: &str = "\nrunning 3 tests\n\
        test tests::a_new_window_takes_anything ... ok\n\
        test tests::in_order ... FAILED\n\
        test tests::too_old ... FAILED\n\n\
        failures:\n\n\
        ---- tests::in_order stdout ----\n\n\
        thread 'tests::in_order' (1234) panicked at labs/04-crypto/exercise/tests.rs:61:9:\n\
        after marking 0..5, check(5) returned Duplicate, expected Fresh:\n\
        each counter of an in-order stream is new.\n\
        note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n\
        ---- tests::too_old stdout ----\n\n\
        thread 'tests::too_old' panicked at labs/04-crypto/exercise/replay.rs:98:9:\n\
        not yet implemented: record `counter` in the window\n\n\n\
        failures:\n    tests::in_order\n    tests::too_old\n\n\
        test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out\n";

    #[test]
    fn failures_are_read_from_libtest() {
        let run = TestRun::parse(FAILED);
        assert_eq!(run.passed, ["tests::a_new_window_takes_anything"]);
        assert_eq!(run.failed.len(), 2);
        let first = &run.failed[0];
        assert_eq!(first.name, "tests::in_order");
        assert_eq!(first.short_name(), "in_order");
        assert_eq!(
            first.location.as_deref(),
            Some("labs/04-crypto/exercise/tests.rs:61:9")
        );
        assert_eq!(
            first.message,
            "after marking 0..5, check(5) returned Duplicate, expected Fresh:\n\
             each counter of an in-order stream is new."
        );
        assert_eq!(
            run.failed[1].message,
            "not yet implemented: record `counter` in the window"
        );
        let text = explain_failure(&run, 12);
        assert!(
            text.starts_with("2 of 3 tests fail; the first, tests::in_order (at labs/04"),
            "{text}"
        );
        assert!(text.contains("also failing: too_old"), "{text}");
        assert!(!text.contains("RUST_BACKTRACE"), "{text}");
    }

    #[test]
    fn a_short_message_is_shown_before_pages_of_input() {
        let long = (0..40)
            .map(|i| format!("    {i},"))
            .collect::<Vec<_>>()
            .join("\n");
        let run = TestRun {
            failed: vec![
                Failure {
                    name: "prop".into(),
                    location: None,
                    message: format!("minimal failing input: bytes = [\n{long}\n]"),
                },
                Failure {
                    name: "peers::pings".into(),
                    location: None,
                    message: "no Pong".into(),
                },
            ],
            ..TestRun::default()
        };
        let text = explain_failure(&run, 12);
        assert!(
            text.starts_with("2 of 2 tests fail; among them peers::pings:\n  no Pong\n"),
            "{text}"
        );
        assert!(text.ends_with("also failing: prop\n"), "{text}");
    }

    #[test]
    fn a_compile_error_is_shown_first_and_short() {
        let output = "error[E0308]: mismatched types\n --> labs/01-ping-tun/exercise/checksum.rs:1:48\n  |\n\
                      1 | pub fn f() -> u16 { data.len() }\n  |                     ^^^^^^^^^^ expected `u16`\n\n\
                      error[E0425]: cannot find value `x`\n --> a.rs:2:1\n\n\
                      error: aborting due to 2 previous errors\n";
        let run = TestRun::parse(output);
        let (first, count) = run.compile_error.clone().unwrap();
        assert_eq!(count, 2);
        assert!(
            first.starts_with("error[E0308]: mismatched types\n --> labs/01"),
            "{first}"
        );
        assert!(!first.contains("E0425"), "{first}");
        assert!(explain_failure(&run, 12).starts_with("your file does not compile (2 errors)"));
    }
}
