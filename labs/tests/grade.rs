//! `--format json` and `--format tap` on a real lab run: the records a
//! grader's script reads must be exactly the checks the lab made, and the
//! summary and the exit status must agree with them. (Whether lab 01's
//! checks pass is `tests/lab01.rs`'s business.) The lab runs need root
//! (lab 01 runs for real); without it they say SKIPPED (and fail under
//! CI, where lab tests must run). Grading an exercise alone, as a teacher
//! does with collected files, needs no root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use serde_json::Value;
use tunlab::env::lab_test;
use tunlab::lab01::NEEDS;

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tunlab-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// One lab run at a time: two at once load a small machine enough to
/// make lab 01's captures miss a packet now and then.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `tunlab run 01 --format FORMAT --out DIR`, as this process (root).
fn run_01(format: &str, out: &Path) -> Output {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    Command::new(env!("CARGO_BIN_EXE_tunlab"))
        .args(["run", "01", "--format", format, "--out"])
        .arg(out)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running tunlab")
}

/// The PASS and FAIL lines a run printed for people (on stderr, with a
/// machine format), in order.
fn check_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("PASS ") || l.starts_with("FAIL "))
        .collect()
}

#[test]
fn json_records_are_the_checks_of_the_run() {
    if !lab_test("json_records_are_the_checks_of_the_run", &NEEDS) {
        return;
    }
    let out = out_dir("grade-json");
    let output = run_01("json", &out);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    // Every line of stdout is one JSON object: nothing else may get there.
    let records: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let (summary, checks) = records.split_last().expect("records");
    assert!(
        checks.iter().all(|r| r["type"] == "check" && r["lab"] == "01"),
        "{stdout}"
    );

    // The report, as the run printed it for people: one line per check,
    // `PASS name: detail`, in the same order as the records.
    let lines = check_lines(&stderr);
    assert_eq!(lines.len(), checks.len(), "stderr:\n{stderr}\nstdout:\n{stdout}");
    for (record, line) in checks.iter().zip(&lines) {
        let (name, detail) = (
            record["name"].as_str().unwrap(),
            record["detail"].as_str().unwrap(),
        );
        let status = match record["result"].as_str() {
            Some("pass") => "PASS",
            Some("fail") => "FAIL",
            other => panic!("result {other:?} in {record}"),
        };
        let mut expected = format!("{status} {name}");
        if !detail.is_empty() {
            expected.push_str(&format!(": {detail}"));
        }
        assert_eq!(&expected, line);
    }
    assert!(
        checks
            .iter()
            .any(|r| r["name"] == "tun0 is gone after the program exits"),
        "{stdout}"
    );

    // The summary counts the records, and the exit status follows it.
    let failed = checks.iter().filter(|r| r["result"] == "fail").count();
    let passed = checks.len() - failed;
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["total"].as_u64(), Some(checks.len() as u64));
    assert_eq!(summary["passed"].as_u64(), Some(passed as u64));
    assert_eq!(summary["failed"].as_u64(), Some(failed as u64));
    let (result, exit) = if failed == 0 { ("pass", 0) } else { ("fail", 1) };
    assert_eq!(summary["result"], result, "{stdout}");
    assert_eq!(summary["exit"], exit);
    assert_eq!(output.status.code(), Some(exit), "stderr:\n{stderr}");
    // The lines for people are all on stderr, as `run` prints them
    // without --format.
    assert!(
        stderr.contains("lab 01: a TUN device whose program answers ping"),
        "{stderr}"
    );
    let last = if failed == 0 {
        format!("all {} checks passed", checks.len())
    } else {
        format!("{failed} of {} checks failed:", checks.len())
    };
    assert!(stderr.contains(&last), "{stderr}");
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn tap_stream_is_version_14_with_a_plan() {
    if !lab_test("tap_stream_is_version_14_with_a_plan", &NEEDS) {
        return;
    }
    let out = out_dir("grade-tap");
    let output = run_01("tap", &out);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"TAP version 14"), "{stdout}");
    let points: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("ok ") || l.starts_with("not ok "))
        .collect();
    let people = check_lines(&stderr);
    assert_eq!(points.len(), people.len(), "{stdout}");
    for (i, (point, line)) in points.iter().zip(&people).enumerate() {
        let name = line[5..].split(": ").next().unwrap();
        let status = if line.starts_with("PASS") { "ok" } else { "not ok" };
        assert!(
            point.starts_with(&format!("{status} {} - ", i + 1)),
            "test point {}: {point}, for {line}",
            i + 1
        );
        assert!(point.contains(name), "{point} vs {line}");
    }
    let failed = points.iter().filter(|p| p.starts_with("not ok")).count();
    let exit = i32::from(failed > 0);
    assert_eq!(output.status.code(), Some(exit), "stderr:\n{stderr}");
    assert_eq!(
        lines.last(),
        Some(&format!("1..{}", points.len()).as_str()),
        "{stdout}"
    );
    // Everything else is a YAML block of a test point.
    for line in &lines[1..lines.len() - 1] {
        assert!(
            line.starts_with("ok ") || line.starts_with("not ok ") || line.starts_with("  "),
            "not TAP: {line}"
        );
    }
    std::fs::remove_dir_all(out).unwrap();
}

/// `tunlab check 01 --attempt FILE --exercise-only --format json`, with
/// its exit status: what a teacher's loop over collected files runs.
fn grade_attempt(attempt: &Path) -> (Vec<Value>, Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tunlab"))
        .args(["check", "01", "--exercise-only", "--format", "json", "--attempt"])
        .arg(attempt)
        .current_dir(tunlab::env::workspace_root())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running tunlab");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let records = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (records, output.status.code(), stdout)
}

/// The names of the tests in an exercise file (`fn NAME` after `#[test]`).
fn test_names(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut lines = source.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "#[test]"
            && let Some(next) = lines.next()
            && let Some(rest) = next.trim().strip_prefix("fn ")
        {
            names.push(format!("exercise: {}", rest.split('(').next().unwrap_or(rest)));
        }
    }
    names.sort();
    names
}

/// Grading an exercise needs no root: one record per test of the
/// exercise, pass for the reference solution and fail for the stub, and a
/// file that does not compile is one failed check with the compiler's
/// words. The summary and the exit status follow the records.
#[test]
fn exercise_only_grades_each_test_of_the_exercise() {
    let root = tunlab::env::workspace_root();
    let lab = root.join("labs/01-ping-tun");
    let tests = std::fs::read_to_string(lab.join("exercise/tests.rs")).unwrap();
    let expected = test_names(&tests);
    assert!(expected.len() >= 5, "{expected:?}");

    for (file, result, exit) in [
        ("solution/checksum.rs", "pass", 0),
        ("exercise/checksum.rs", "fail", 1),
    ] {
        let (records, code, stdout) = grade_attempt(&lab.join(file));
        let (summary, checks) = records.split_last().expect("records");
        let mut names: Vec<String> = checks
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        assert_eq!(names, expected, "{file}:\n{stdout}");
        assert!(
            checks
                .iter()
                .all(|r| r["type"] == "check" && r["result"] == result),
            "{file}:\n{stdout}"
        );
        assert_eq!(summary["type"], "summary");
        assert_eq!(summary["result"], result, "{file}:\n{stdout}");
        assert_eq!(summary["total"].as_u64(), Some(expected.len() as u64));
        assert_eq!(summary["exit"], exit);
        assert_eq!(code, Some(exit), "{file}:\n{stdout}");
    }

    let dir = out_dir("grade-broken");
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("checksum.rs");
    std::fs::write(
        &broken,
        "pub fn internet_checksum(data: &[u8]) -> u16 { data.len() }\n",
    )
    .unwrap();
    let (records, code, stdout) = grade_attempt(&broken);
    assert_eq!(records.len(), 2, "{stdout}");
    assert_eq!(records[0]["name"], "exercise: compiles");
    assert_eq!(records[0]["result"], "fail");
    assert!(
        records[0]["detail"]
            .as_str()
            .unwrap()
            .contains("mismatched types"),
        "{stdout}"
    );
    assert_eq!(records[1]["result"], "fail");
    assert_eq!(code, Some(1));
    std::fs::remove_dir_all(dir).unwrap();
}
