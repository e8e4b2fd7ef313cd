//! The program output the book quotes is the output the programs give.
//!
//! Every `<!-- output: cmd COMMAND -->` block of `book/src` is checked here
//! by running COMMAND (see `tunlab::book_output` for the rules); every
//! annotation must be well formed. `<!-- output: lab NN -->` blocks are
//! checked by the lab tests, which need root. Needs no root: the commands
//! read the shipped captures and files. A command whose tool is missing is
//! SKIPPED, and under CI (`CI=true`) that is a failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tunlab::book_output::{Block, Source, book_blocks, book_src, find};
use tunlab::env::workspace_root;

/// The longest a command may run.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `COMMAND` with every `cargo run -q -p PACKAGE --` replaced by the path
/// of PACKAGE's binary (tunlab's is built with this test; a step's is
/// built on demand, like the labs do).
fn resolve(command: &str) -> Result<String, String> {
    const CARGO_RUN: &str = "cargo run -q -p ";
    let mut out = String::new();
    let mut rest = command;
    while let Some(at) = rest.find(CARGO_RUN) {
        out.push_str(&rest[..at]);
        let after = &rest[at + CARGO_RUN.len()..];
        let package = after.split_whitespace().next().unwrap_or("");
        let tail = after[package.len()..].trim_start();
        let Some(tail) = tail.strip_prefix("--") else {
            return Err(format!("`{CARGO_RUN}{package}` must be followed by `--`"));
        };
        let binary: PathBuf = if package == "tunlab" {
            PathBuf::from(env!("CARGO_BIN_EXE_tunlab"))
        } else {
            tunlab::env::step_binary(package).map_err(|e| format!("{e:#}"))?
        };
        out.push('\'');
        out.push_str(&binary.to_string_lossy().replace('\'', r"'\''"));
        out.push('\'');
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// The programs a command starts that must be installed (not the binaries
/// of this workspace): the first word of each part of a pipeline or list,
/// after any `NAME=value` settings. Quotes are respected.
fn tools(command: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quote = None;
    for c in command.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '|' | ';' | '&') => parts.push(String::new()),
            _ => {}
        }
        if let Some(part) = parts.last_mut() {
            part.push(c);
        }
    }
    parts
        .iter()
        .filter_map(|part| {
            part.trim_start_matches(['|', ';', '&'])
                .split_whitespace()
                .find(|w| !w.contains('='))
                .map(str::to_string)
        })
        .filter(|w| w != "cargo")
        .collect()
}

fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v '{tool}'")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `command` as the book says: with sh, from the workspace root,
/// TZ=UTC; stdout and stderr together, as a terminal shows them. HOME is
/// an empty folder, so that no one's personal settings (a Wireshark
/// profile, a plugin) change what a tool prints.
fn run(command: &str) -> Result<String, String> {
    let resolved = resolve(command)?;
    let home = std::env::temp_dir().join(format!("tunlab-book-output-{}", std::process::id()));
    std::fs::create_dir_all(&home).map_err(|e| format!("creating {}: {e}", home.display()))?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec 2>&1; {resolved}"))
        .current_dir(workspace_root())
        .env("TZ", "UTC")
        .env("HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting sh: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout));
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {} s", TIMEOUT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
    reader
        .join()
        .map_err(|_| "reading the output panicked".to_string())?
        .map_err(|e| e.to_string())
}

fn cmd_blocks() -> Vec<Block> {
    match book_blocks(&book_src()).expect("reading book/src") {
        Ok(blocks) => blocks
            .into_iter()
            .filter(|b| matches!(b.source, Source::Cmd(_)))
            .collect(),
        Err(errors) => panic!("malformed output annotations:\n{}", errors.join("\n")),
    }
}

#[test]
fn every_output_annotation_is_well_formed() {
    let blocks = book_blocks(&book_src()).expect("reading book/src");
    if let Err(errors) = blocks {
        panic!("malformed output annotations:\n{}", errors.join("\n"));
    }
    // Lab blocks name labs that exist.
    for block in blocks.unwrap() {
        if let Source::Lab(n) = &block.source {
            assert!(
                tunlab::labs::Lab::find(n).is_some(),
                "{block}: there is no lab {n}"
            );
        }
    }
}

#[test]
fn every_quoted_command_output_is_what_the_command_prints() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let mut outputs: HashMap<String, Result<String, String>> = HashMap::new();
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    let blocks = cmd_blocks();
    for block in &blocks {
        let Source::Cmd(command) = &block.source else {
            continue;
        };
        let missing: Vec<String> = tools(command).into_iter().filter(|t| !installed(t)).collect();
        if !missing.is_empty() {
            skipped.push(format!("{block}: {} not installed", missing.join(", ")));
            continue;
        }
        let output = outputs.entry(command.clone()).or_insert_with(|| run(command));
        match output {
            Err(e) => failures.push(format!("{block}: `{command}`: {e}")),
            Ok(text) => {
                if let Err(m) = find(&block.lines, text) {
                    failures.push(format!("{block}: `{command}`: {m}"));
                }
            }
        }
    }
    for s in &skipped {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED {s}");
    }
    assert!(
        !ci || skipped.is_empty(),
        "under CI every quoted command must run:\n{}",
        skipped.join("\n")
    );
    assert!(
        failures.is_empty(),
        "the book quotes output these commands do not give (fix the book, or the program):\n{}",
        failures.join("\n")
    );
}

/// The checker is not a rubber stamp: change one line of a block the book
/// really quotes, and the same comparison fails, naming that line.
#[test]
fn a_drifted_line_in_a_real_block_is_caught() {
    let blocks = cmd_blocks();
    let Some(block) = blocks.first() else {
        panic!("the book quotes no command output to test the checker with");
    };
    let Source::Cmd(command) = &block.source else {
        unreachable!()
    };
    let output = run(command).unwrap();
    find(&block.lines, &output).unwrap_or_else(|m| panic!("{block}: {m}"));
    // Drift one line that is not a skip: one digit more, or a word changed.
    let (i, line) = block
        .lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.trim() != tunlab::book_output::SKIP && !l.trim().is_empty())
        .unwrap();
    let mut drifted = block.lines.clone();
    drifted[i] = format!("{line} and more");
    let mismatch = find(&drifted, &output).unwrap_err();
    assert_eq!(mismatch.block_line, i, "{mismatch}");
    // A line left out without a skip is caught too (when there is more than
    // one line to leave out).
    if block.lines.len() > 2 && !block.lines.iter().any(|l| l.trim() == tunlab::book_output::SKIP) {
        let mut shorter = block.lines.clone();
        shorter.remove(1);
        assert!(find(&shorter, &output).is_err());
    }
}

#[test]
fn commands_name_their_tools_and_binaries() {
    assert_eq!(tools("TZ=UTC tcpdump -n -r x | head -3"), ["tcpdump", "head"]);
    assert_eq!(tools("cargo run -q -p tunlab -- decode x"), Vec::<String>::new());
    assert_eq!(tools("tshark -r x -Y 'a || b' | wc -l"), ["tshark", "wc"]);
    let resolved = resolve("cargo run -q -p tunlab -- decode a.pcap | head").unwrap();
    assert!(resolved.ends_with(" decode a.pcap | head"), "{resolved}");
    assert!(
        Path::new(resolved.split('\'').nth(1).unwrap()).is_file(),
        "{resolved}"
    );
    assert!(resolve("cargo run -q -p tunlab decode a.pcap").is_err());
}
