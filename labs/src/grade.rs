//! Output for graders: `tunlab run NN --format json|tap` and `tunlab check
//! NN --format json|tap` print one record per check on stdout, for a
//! teacher's script to read, while the lines for people (the PASS/FAIL
//! lines, the notes) go to stderr. The default, `--format human`, prints
//! as before.
//!
//! JSON: one object per line (JSON Lines). Each check is
//!
//! ```json
//! {"type":"check","lab":"01","name":"tun0 is up with 10.0.0.1/24","result":"pass","detail":""}
//! ```
//!
//! and the last line is the summary:
//!
//! ```json
//! {"type":"summary","lab":"01","result":"pass","passed":21,"failed":0,"total":21,"exit":0,"detail":""}
//! ```
//!
//! where `result` is `pass`, `fail`, `skipped` (the lab could not run
//! here: no root, or a missing tool; exit status 77) or `error` (the lab
//! could not finish: exit status 1; `detail` says why), and `exit` is the
//! exit status tunlab ends with.
//!
//! TAP: the Test Anything Protocol, version 14 (<https://testanything.org/tap-version-14-specification.html>):
//! `TAP version 14`, then `ok N - name` or `not ok N - name` per check
//! with the detail in a YAML block, then the plan `1..N`. A lab that cannot
//! run is a skipped test point; one that cannot finish is `Bail out!`.
//!
//! `tunlab check` runs in two processes when it asks sudo for root: the
//! exercise's records come from the user's, the lab's from root's. The
//! user's passes on what it printed (`--prior PASSED/FAILED`, a hidden
//! option) so that the numbering and the summary cover both.

use std::io::Write;

use serde_json::json;

/// How `run` and `check` print their checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// PASS/FAIL lines and notes, for people (the default).
    #[default]
    Human,
    /// One JSON object per check and a summary, one per line, on stdout.
    Json,
    /// TAP version 14 on stdout.
    Tap,
}

impl Format {
    /// Whether records go to stdout and the lines for people to stderr.
    pub fn machine(self) -> bool {
        self != Format::Human
    }
}

/// Checks already printed by an earlier process of the same command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prior {
    pub passed: usize,
    pub failed: usize,
}

impl std::str::FromStr for Prior {
    type Err = String;

    /// `PASSED/FAILED`, e.g. `12/0`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (p, f) = s.split_once('/').ok_or("expected PASSED/FAILED")?;
        let n = |x: &str| x.parse::<usize>().map_err(|e| format!("{x:?}: {e}"));
        Ok(Self {
            passed: n(p)?,
            failed: n(f)?,
        })
    }
}

impl std::fmt::Display for Prior {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.passed, self.failed)
    }
}

/// How a run ended, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every check ran; the result is pass or fail by the counts.
    Ran,
    /// The lab could not run here (exit status 77), and why.
    Skipped(String),
    /// The lab stopped before its end (exit status 1), and why.
    Error(String),
}

/// Prints the records of one command.
pub struct Grader<W: Write> {
    format: Format,
    lab: String,
    out: W,
    passed: usize,
    failed: usize,
}

impl Grader<std::io::Stdout> {
    /// Records to stdout.
    pub fn stdout(format: Format, lab: &str, prior: Option<Prior>) -> Self {
        Self::new(format, lab, prior, std::io::stdout())
    }
}

impl<W: Write> Grader<W> {
    /// A grader that writes to `out`. Without `prior` this is the first
    /// process of the command, which opens the TAP stream.
    pub fn new(format: Format, lab: &str, prior: Option<Prior>, out: W) -> Self {
        let mut grader = Self {
            format,
            lab: lab.to_string(),
            out,
            passed: prior.map_or(0, |p| p.passed),
            failed: prior.map_or(0, |p| p.failed),
        };
        if format == Format::Tap && prior.is_none() {
            grader.line("TAP version 14".to_string());
        }
        grader
    }

    /// What this grader and the processes before it printed.
    pub fn tally(&self) -> Prior {
        Prior {
            passed: self.passed,
            failed: self.failed,
        }
    }

    fn line(&mut self, line: String) {
        // A closed pipe (a grader that stopped reading) must not end the
        // lab halfway, with its hosts still up.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    /// One check.
    pub fn check(&mut self, name: &str, passed: bool, detail: &str) {
        if passed {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        let number = self.passed + self.failed;
        match self.format {
            Format::Human => {}
            Format::Json => {
                let result = if passed { "pass" } else { "fail" };
                let record = format!(
                    "{{\"type\":\"check\",\"lab\":{},\"name\":{},\"result\":\"{result}\",\"detail\":{}}}",
                    json!(self.lab),
                    json!(name),
                    json!(detail)
                );
                self.line(record);
            }
            Format::Tap => {
                let status = if passed { "ok" } else { "not ok" };
                self.line(format!("{status} {number} - {}", tap_escape(name)));
                if !detail.is_empty() {
                    self.line("  ---".into());
                    // A JSON string is a YAML double-quoted scalar.
                    self.line(format!("  detail: {}", json!(detail)));
                    self.line("  ...".into());
                }
            }
        }
    }

    /// Every check of a lab's report.
    pub fn report(&mut self, report: &crate::report::Report) {
        for check in &report.checks {
            self.check(&check.name, check.passed, &check.detail);
        }
    }

    /// The summary record (JSON), or the plan (TAP), and the exit status
    /// that goes with them: 0 when every check passed, 1 when one failed
    /// (or none ran) or the lab stopped, 77 when it could not run.
    pub fn finish(mut self, end: End) -> u8 {
        let total = self.passed + self.failed;
        let (result, exit, detail) = match &end {
            End::Ran if self.failed == 0 && total > 0 => ("pass", 0, String::new()),
            End::Ran if total == 0 => ("fail", 1, "no check ran".to_string()),
            End::Ran => ("fail", 1, String::new()),
            // A failed exercise before a lab that could not run is a fail.
            End::Skipped(why) if self.failed > 0 => ("fail", 1, why.clone()),
            End::Skipped(why) => ("skipped", crate::env::EXIT_UNPRIVILEGED, why.clone()),
            End::Error(why) => ("error", 1, why.clone()),
        };
        match self.format {
            Format::Human => {}
            Format::Json => {
                // The fields in the order a reader expects them (a
                // serde_json map would sort them).
                let record = format!(
                    "{{\"type\":\"summary\",\"lab\":{},\"result\":\"{result}\",\"passed\":{},\"failed\":{},\
                     \"total\":{total},\"exit\":{exit},\"detail\":{}}}",
                    json!(self.lab),
                    self.passed,
                    self.failed,
                    json!(detail)
                );
                self.line(record);
            }
            Format::Tap => match &end {
                End::Error(why) => {
                    self.line(format!("Bail out! {}", one_line(why)));
                }
                End::Skipped(why) if total == 0 => {
                    self.line(format!("1..0 # SKIP {}", one_line(why)));
                }
                End::Skipped(why) => {
                    let number = total + 1;
                    self.line(format!(
                        "ok {number} - lab {} checks # SKIP {}",
                        self.lab,
                        one_line(why)
                    ));
                    self.line(format!("1..{number}"));
                }
                End::Ran => {
                    self.line(format!("1..{total}"));
                }
            },
        }
        exit
    }
}

/// A TAP description must not hold `#` (it starts a directive) unescaped,
/// nor a line break.
fn tap_escape(name: &str) -> String {
    one_line(&name.replace('\\', "\\\\").replace('#', "\\#"))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(format: Format, prior: Option<Prior>, end: End, checks: &[(&str, bool, &str)]) -> (String, u8) {
        let mut out = Vec::new();
        let mut grader = Grader::new(format, "03", prior, &mut out);
        for (name, passed, detail) in checks {
            grader.check(name, *passed, detail);
        }
        let exit = grader.finish(end);
        (String::from_utf8(out).unwrap(), exit)
    }

    const CHECKS: &[(&str, bool, &str)] = &[
        ("ping -6 fd00::1", true, "3 sent, 3 received"),
        (
            "tshark finds no bad checksum",
            false,
            "1 bad: \"tcp\" #5\nsecond line",
        ),
    ];

    #[test]
    fn json_lines_one_per_check_then_a_summary() {
        let (text, exit) = render(Format::Json, None, End::Ran, CHECKS);
        assert_eq!(exit, 1);
        let records: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(records.len(), 3);
        assert!(
            text.starts_with("{\"type\":\"check\",\"lab\":\"03\",\"name\":"),
            "{text}"
        );
        assert_eq!(records[0]["type"], "check");
        assert_eq!(records[0]["lab"], "03");
        assert_eq!(records[0]["name"], "ping -6 fd00::1");
        assert_eq!(records[0]["result"], "pass");
        assert_eq!(records[0]["detail"], "3 sent, 3 received");
        assert_eq!(records[1]["result"], "fail");
        assert_eq!(records[1]["detail"], "1 bad: \"tcp\" #5\nsecond line");
        assert_eq!(records[2]["type"], "summary");
        assert_eq!(records[2]["result"], "fail");
        assert_eq!(
            (records[2]["passed"].as_u64(), records[2]["failed"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(records[2]["total"], 2);
        assert_eq!(records[2]["exit"], 1);
    }

    #[test]
    fn tap_version_14() {
        let (text, exit) = render(Format::Tap, None, End::Ran, CHECKS);
        assert_eq!(exit, 1);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "TAP version 14");
        assert_eq!(lines[1], "ok 1 - ping -6 fd00::1");
        assert_eq!(lines[2], "  ---");
        assert_eq!(lines[3], "  detail: \"3 sent, 3 received\"");
        assert_eq!(lines[4], "  ...");
        assert_eq!(lines[5], "not ok 2 - tshark finds no bad checksum");
        assert_eq!(lines[7], "  detail: \"1 bad: \\\"tcp\\\" #5\\nsecond line\"");
        assert_eq!(lines.last(), Some(&"1..2"));
        assert!(tap_escape("a # b\nc").eq("a \\# b c"));
    }

    /// The second process of `check` goes on numbering where the first
    /// stopped, and its summary counts both.
    #[test]
    fn a_second_process_continues_the_count() {
        let prior = Some("12/1".parse().unwrap());
        let (text, _) = render(Format::Tap, prior, End::Ran, CHECKS);
        assert!(!text.contains("TAP version"), "{text}");
        assert!(
            text.contains("ok 14 - ping -6") && text.contains("not ok 15 - tshark"),
            "{text}"
        );
        assert!(text.ends_with("1..15\n"), "{text}");
        let (text, exit) = render(Format::Json, prior, End::Ran, &CHECKS[..1]);
        assert_eq!(exit, 1, "one exercise test failed before");
        let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(
            (summary["passed"].as_u64(), summary["total"].as_u64()),
            (Some(13), Some(14))
        );
        assert!("12".parse::<Prior>().is_err() && "a/1".parse::<Prior>().is_err());
    }

    #[test]
    fn skipped_and_stopped_runs() {
        let (text, exit) = render(Format::Json, None, End::Skipped("needs root".into()), &[]);
        assert_eq!(exit, 77);
        let summary: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(summary["result"], "skipped");
        assert_eq!(summary["detail"], "needs root");
        let (text, exit) = render(Format::Tap, None, End::Skipped("needs\nroot".into()), &[]);
        assert_eq!(
            (text.as_str(), exit),
            ("TAP version 14\n1..0 # SKIP needs root\n", 77)
        );
        let (text, _) = render(Format::Tap, None, End::Skipped("no root".into()), &CHECKS[..1]);
        assert!(
            text.ends_with("ok 2 - lab 03 checks # SKIP no root\n1..2\n"),
            "{text}"
        );
        let (text, exit) = render(
            Format::Tap,
            None,
            End::Error("tun0 never came up".into()),
            &CHECKS[..1],
        );
        assert_eq!(exit, 1);
        assert!(text.ends_with("Bail out! tun0 never came up\n"), "{text}");
        let (text, exit) = render(Format::Json, None, End::Skipped("no root".into()), &CHECKS[1..]);
        assert_eq!(exit, 1, "a failed exercise, then no lab: a fail");
        assert!(text.contains("\"result\":\"fail\""), "{text}");
        let (text, exit) = render(Format::Json, None, End::Ran, &[]);
        assert_eq!(exit, 1, "no check is no pass");
        assert!(text.contains("\"result\":\"fail\""), "{text}");
        let (_, exit) = render(Format::Json, None, End::Ran, &CHECKS[..1]);
        assert_eq!(exit, 0);
    }
}
