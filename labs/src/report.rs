//! The checks of a lab, printed as they happen: `PASS what` or `FAIL what`.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the lines for people go to stderr: with `--format json` or
/// `tap`, stdout is the graders' (see [`crate::grade`]).
static TO_STDERR: AtomicBool = AtomicBool::new(false);

/// Sends every report's lines to stderr (`true`) or stdout (the default).
pub fn lines_to_stderr(yes: bool) {
    TO_STDERR.store(yes, Ordering::SeqCst);
}

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", if self.passed { "PASS" } else { "FAIL" }, self.name)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Every check of one lab run, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
    quiet: bool,
    /// Every line a check or a note printed (or would have, when quiet),
    /// for the checker of the book's quoted output.
    lines: Mutex<Vec<String>>,
}

impl Report {
    /// A report that prints each check as it is made, unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        Self {
            checks: Vec::new(),
            quiet,
            lines: Mutex::new(Vec::new()),
        }
    }

    /// Records (and prints) a check.
    pub fn check(&mut self, name: impl Into<String>, passed: bool, detail: impl Into<String>) -> bool {
        let check = Check {
            name: name.into(),
            passed,
            detail: detail.into(),
        };
        self.print(check.to_string());
        self.checks.push(check);
        passed
    }

    /// Prints a line of explanation (indented, so checks stand out).
    pub fn note(&self, line: impl fmt::Display) {
        self.print(format!("     {line}"));
    }

    fn print(&self, line: String) {
        if !self.quiet {
            if TO_STDERR.load(Ordering::SeqCst) {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    /// The lines the checks and notes printed, in order.
    pub fn transcript(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The lines `tunlab run` prints after the checks: `all N checks
    /// passed`, or how many failed and which.
    pub fn summary(&self) -> Vec<String> {
        let failures = self.failures();
        if failures.is_empty() {
            vec![format!("all {} checks passed", self.checks.len())]
        } else {
            let mut lines = vec![format!(
                "{} of {} checks failed:",
                failures.len(),
                self.checks.len()
            )];
            lines.extend(failures.iter().map(|f| format!("  {f}")));
            lines
        }
    }

    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }

    /// For tests: panics listing every failed check, if any failed.
    pub fn assert_passed(&self, lab: &str) {
        let failures: Vec<String> = self.failures().iter().map(|c| c.to_string()).collect();
        assert!(
            failures.is_empty(),
            "{lab} checks failed:\n{}",
            failures.join("\n")
        );
        assert!(!self.checks.is_empty(), "{lab} made no checks");
    }

    /// Panics unless the check called `name` was made and passed.
    pub fn assert_check(&self, name: &str) {
        assert!(
            self.get(name).is_some_and(|c| c.passed),
            "missing or failed: {name}"
        );
    }

    /// The check called `name`, if it was made.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}
