//! Program output quoted in the book, checked against the real thing.
//!
//! A fenced block in `book/src/**/*.md` directly preceded by one of these
//! HTML comments (which mdBook does not show) holds program output:
//!
//! - `<!-- output: lab NN -->`: lines from `tunlab run NN`: its PASS and
//!   FAIL lines and notes, or the logs it saves in its output folder.
//!   [`check_lab`] checks them after a lab test's run, given the report and
//!   the folder.
//! - `<!-- output: cmd COMMAND -->`: the output (stdout and stderr) of
//!   COMMAND, run with `sh` from the workspace root, without root, with
//!   `TZ=UTC` and an empty `HOME` (no personal tool settings). `cargo run -q -p PACKAGE --` in COMMAND stands for the
//!   package's binary. The plain test `labs/tests/book_output.rs` runs them.
//!
//! The block's lines must appear in the output in the same order and next
//! to each other, except that a line holding only `…` stands for any number
//! of lines (none included), and `…` inside a line for any text: times,
//! pids, ports, counts that change from run to run. The block may start
//! and end anywhere in the output. Trailing whitespace is ignored; leading
//! whitespace is not.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::report::Report;

/// What a marked block quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Lines of `tunlab run NN` (the two digits).
    Lab(String),
    /// The output of a shell command.
    Cmd(String),
}

/// One marked block of the book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The chapter, relative to `book/src`.
    pub file: PathBuf,
    /// The line of the chapter the annotation is on, counted from 1.
    pub line: usize,
    pub source: Source,
    /// The lines between the fences.
    pub lines: Vec<String>,
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "book/src/{}:{}", self.file.display(), self.line)
    }
}

/// The marker of a skip, alone on a line or inside one.
pub const SKIP: &str = "…";

const OPEN: &str = "<!-- output:";
const CLOSE: &str = "-->";

/// The marked blocks of one chapter, in order, or a message for each
/// annotation that is malformed: an unknown kind, a lab that is not two
/// digits, an empty command, or no fenced block on the next line.
pub fn blocks_in(file: &Path, markdown: &str) -> Result<Vec<Block>, Vec<String>> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut blocks = Vec::new();
    let mut errors = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let Some(rest) = line.strip_prefix(OPEN) else {
            i += 1;
            continue;
        };
        let at = format!("book/src/{}:{}", file.display(), i + 1);
        let Some(spec) = rest.strip_suffix(CLOSE).map(str::trim) else {
            errors.push(format!(
                "{at}: the annotation must end on its own line with `-->`"
            ));
            i += 1;
            continue;
        };
        let source = if let Some(n) = spec.strip_prefix("lab ") {
            let n = n.trim();
            if n.len() == 2 && n.bytes().all(|b| b.is_ascii_digit()) {
                Some(Source::Lab(n.to_string()))
            } else {
                errors.push(format!("{at}: `lab {n}`: a lab is two digits, as in `lab 01`"));
                None
            }
        } else if let Some(command) = spec.strip_prefix("cmd ") {
            if command.trim().is_empty() {
                errors.push(format!("{at}: `cmd` needs a command"));
                None
            } else {
                Some(Source::Cmd(command.trim().to_string()))
            }
        } else {
            errors.push(format!(
                "{at}: `{spec}`: the kinds are `lab NN` and `cmd COMMAND`"
            ));
            None
        };
        let fence = lines.get(i + 1).map(|l| l.trim_start()).unwrap_or("");
        let ticks = fence.len() - fence.trim_start_matches('`').len();
        if ticks < 3 {
            errors.push(format!(
                "{at}: the annotation must be directly followed by a fenced block"
            ));
            i += 1;
            continue;
        }
        let closing = "`".repeat(ticks);
        let start = i + 2;
        let Some(end) = (start..lines.len()).find(|&j| lines[j].trim() == closing) else {
            errors.push(format!("{at}: the fenced block is never closed"));
            break;
        };
        if let Some(source) = source {
            blocks.push(Block {
                file: file.to_path_buf(),
                line: i + 1,
                source,
                lines: lines[start..end].iter().map(|l| l.to_string()).collect(),
            });
        }
        i = end + 1;
    }
    if errors.is_empty() {
        Ok(blocks)
    } else {
        Err(errors)
    }
}

/// Every marked block of the book under `src` (its `book/src`), chapter by
/// chapter in path order, or every malformed annotation.
pub fn book_blocks(src: &Path) -> anyhow::Result<Result<Vec<Block>, Vec<String>>> {
    let mut files = Vec::new();
    markdown_files(src, &mut files)?;
    files.sort();
    let mut blocks = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        let relative = path.strip_prefix(src).unwrap_or(&path);
        match blocks_in(relative, &text) {
            Ok(found) => blocks.extend(found),
            Err(found) => errors.extend(found),
        }
    }
    Ok(if errors.is_empty() {
        Ok(blocks)
    } else {
        Err(errors)
    })
}

fn markdown_files(dir: &Path, into: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            markdown_files(&path, into)?;
        } else if path.extension().is_some_and(|e| e == "md") {
            into.push(path);
        }
    }
    Ok(())
}

/// The book's sources in this workspace.
pub fn book_src() -> PathBuf {
    crate::env::workspace_root().join("book").join("src")
}

/// True when `line` of the output matches `pattern`, a line of a block.
pub fn line_matches(pattern: &str, line: &str) -> bool {
    let (pattern, line) = (pattern.trim_end(), line.trim_end());
    let mut parts = pattern.split(SKIP);
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Why a block does not match an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The line of the block (counted from 0) that could not be matched.
    pub block_line: usize,
    /// The pattern on it.
    pub expected: String,
    /// The output line found where it was expected, if the lines before it
    /// matched somewhere.
    pub found: Option<String>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {} of the block, {:?}, ",
            self.block_line + 1,
            self.expected
        )?;
        match &self.found {
            Some(found) => write!(f, "does not match the output line {found:?}"),
            None => write!(f, "is not in the output"),
        }
    }
}

/// Checks that `block` (the lines of a marked block) is in `output`, as
/// the module's documentation says.
pub fn find(block: &[String], output: &str) -> Result<(), Mismatch> {
    let output: Vec<&str> = output.lines().collect();
    // The runs of lines between skip lines, each with the index of its
    // first line in the block.
    let mut runs: Vec<(usize, &[String])> = Vec::new();
    let mut start = 0;
    for (i, line) in block.iter().enumerate() {
        if line.trim() == SKIP {
            if i > start {
                runs.push((start, &block[start..i]));
            }
            start = i + 1;
        }
    }
    if block.len() > start {
        runs.push((start, &block[start..]));
    }
    let mut from = 0;
    for (offset, run) in runs {
        let fits = |at: usize| {
            at + run.len() <= output.len() && run.iter().zip(&output[at..]).all(|(p, l)| line_matches(p, l))
        };
        match (from..output.len()).find(|&at| fits(at)) {
            Some(at) => from = at + run.len(),
            None => return Err(closest(offset, run, &output[from.min(output.len())..])),
        }
    }
    Ok(())
}

/// The mismatch to report for `run`: where the most of its lines match in
/// a row, the first line that does not.
fn closest(offset: usize, run: &[String], output: &[&str]) -> Mismatch {
    let matched_at = |at: usize| {
        run.iter()
            .zip(&output[at..])
            .take_while(|(p, l)| line_matches(p, l))
            .count()
    };
    let best = (0..output.len())
        .map(|at| (matched_at(at), at))
        .filter(|&(n, _)| n > 0)
        .max_by_key(|&(n, at)| (n, std::cmp::Reverse(at)));
    match best {
        Some((n, at)) if n < run.len() => Mismatch {
            block_line: offset + n,
            expected: run[n].clone(),
            found: output.get(at + n).map(|l| l.to_string()),
        },
        _ => Mismatch {
            block_line: offset,
            expected: run.first().cloned().unwrap_or_default(),
            found: None,
        },
    }
}

/// Checks every `lab NN` block of the book against one run of lab `lab`:
/// each must be in the report's transcript (as `tunlab run NN` prints it:
/// the lab's title first, and the lab's default output folder where the
/// run used `out`, and the summary line last) or in one of the text files
/// (`.log`, `.txt`, `.diff`) the lab saved in `out`. Returns one message per block
/// that is not, and per malformed annotation.
pub fn check_lab(lab: &str, report: &Report, out: &Path) -> Vec<String> {
    let blocks = match book_blocks(&book_src()) {
        Ok(Ok(blocks)) => blocks,
        Ok(Err(errors)) => return errors,
        Err(e) => return vec![format!("reading the book: {e:#}")],
    };
    // What `tunlab run NN` prints: the lab's title, then the report, with
    // the lab's default output folder where a test run used its own.
    let as_printed = |text: &str| -> String {
        match crate::labs::Lab::find(lab) {
            Some(l) => text.replace(&out.display().to_string(), &l.default_out().display().to_string()),
            None => text.to_string(),
        }
    };
    let title = crate::labs::Lab::find(lab)
        .map(|l| format!("lab {}: {}\n", l.number, l.title))
        .unwrap_or_default();
    let mut sources = vec![(
        "the lab's report".to_string(),
        title + &as_printed(&report.transcript().join("\n")) + "\n" + &report.summary().join("\n"),
    )];
    if let Ok(entries) = std::fs::read_dir(out) {
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "log" || e == "txt" || e == "diff")
            })
            .collect();
        files.sort();
        for file in files {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let name = file
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                sources.push((name, as_printed(&text)));
            }
        }
    }
    let mut failures = Vec::new();
    for block in blocks {
        if block.source != Source::Lab(lab.to_string()) {
            continue;
        }
        let mut first = None;
        let mut found = false;
        for (name, text) in &sources {
            match find(&block.lines, text) {
                Ok(()) => {
                    found = true;
                    break;
                }
                Err(m) => {
                    // Report against the source that got furthest.
                    if first.as_ref().is_none_or(|(_, f): &(String, Mismatch)| {
                        m.block_line > f.block_line || (m.block_line == f.block_line && f.found.is_none())
                    }) {
                        first = Some((name.clone(), m));
                    }
                }
            }
        }
        if !found {
            failures.push(match first {
                Some((name, mismatch)) => format!("{block} (lab {lab}): {mismatch} (closest: {name})"),
                None => format!("{block} (lab {lab}): nothing to compare with"),
            });
        }
    }
    failures
}

/// For lab tests: panics listing every `lab NN` block of the book that the
/// run did not produce.
pub fn assert_lab_blocks(lab: &str, report: &Report, out: &Path) {
    let failures = check_lab(lab, report, out);
    assert!(
        failures.is_empty(),
        "the book quotes lab {lab} output this run did not produce (fix the book or the lab):\n{}",
        failures.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn a_line_matches_with_skips_inside() {
        assert!(line_matches("PASS ping: 3 sent", "PASS ping: 3 sent  "));
        assert!(line_matches(
            "started … (pid …)",
            "started step01 --tun tun0 (pid 9028)"
        ));
        assert!(line_matches("…", "anything at all"));
        assert!(line_matches("a…", "a"));
        assert!(line_matches("…b", "ab"));
        assert!(!line_matches("PASS ping: 3 sent", "PASS ping: 2 sent"));
        assert!(!line_matches("PASS", "PASS ping"), "the whole line, not a prefix");
        assert!(!line_matches("ping", "     ping"), "leading whitespace counts");
        assert!(!line_matches("a…a", "a"), "the parts may not overlap");
        assert!(!line_matches("x…y…z", "x z y"));
    }

    const OUTPUT: &str = "\
lab header
PASS one
     note 1
     note 2
PASS two: 3 sent
PASS three
";

    #[test]
    fn blocks_match_in_order_and_next_to_each_other() {
        assert_eq!(find(&lines("PASS one\n     note 1"), OUTPUT), Ok(()));
        assert_eq!(find(&lines("PASS one\n…\nPASS three"), OUTPUT), Ok(()));
        assert_eq!(find(&lines("…\nPASS two: … sent\n…"), OUTPUT), Ok(()));
        assert_eq!(
            find(&lines("PASS one\n…\n     note 1"), OUTPUT),
            Ok(()),
            "a skip may skip nothing"
        );
        assert_eq!(find(&[], OUTPUT), Ok(()));
        // Left out a line without saying so:
        assert!(find(&lines("PASS one\nPASS two: 3 sent"), OUTPUT).is_err());
        // Out of order:
        assert!(find(&lines("PASS three\n…\nPASS one"), OUTPUT).is_err());
    }

    #[test]
    fn a_drifted_line_is_caught_and_named() {
        let drifted = lines("PASS one\n…\nPASS two: 4 sent\nPASS three");
        assert_eq!(
            find(&drifted, OUTPUT),
            Err(Mismatch {
                block_line: 2,
                expected: "PASS two: 4 sent".into(),
                found: None,
            })
        );
        let drifted = lines("PASS one\n     note 1\n     note 3");
        let m = find(&drifted, OUTPUT).unwrap_err();
        assert_eq!(m.block_line, 2);
        assert_eq!(m.found.as_deref(), Some("     note 2"));
        assert!(m.to_string().contains("line 3 of the block"), "{m}");
    }

    #[test]
    fn annotations_are_parsed_and_checked() {
        let md = "\
text
<!-- output: lab 01 -->
```text
PASS one
…
```

<!-- output: cmd tcpdump -n -r pcaps/step01/ping-s0.pcap -->
````text
a ```
````
";
        let blocks = blocks_in(Path::new("x.md"), md).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].source, Source::Lab("01".into()));
        assert_eq!(blocks[0].line, 2);
        assert_eq!(blocks[0].lines, lines("PASS one\n…"));
        assert_eq!(
            blocks[1].source,
            Source::Cmd("tcpdump -n -r pcaps/step01/ping-s0.pcap".into())
        );
        assert_eq!(blocks[1].lines, lines("a ```"));

        for bad in [
            "<!-- output: lab 1 -->\n```\nx\n```\n",
            "<!-- output: labs 01 -->\n```\nx\n```\n",
            "<!-- output: cmd  -->\n```\nx\n```\n",
            "<!-- output: lab 01 -->\n\n```\nx\n```\n",
            "<!-- output: lab 01 -->\n```\nx\n",
            "<!-- output: lab 01\n```\nx\n```\n",
        ] {
            assert!(blocks_in(Path::new("x.md"), bad).is_err(), "{bad}");
        }
    }
}
