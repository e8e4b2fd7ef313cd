//! The book's code comes from the crates through mdBook's include
//! directives (`{{#include FILE:ANCHOR}}` and friends). mdBook does not fail
//! on a bad one: a missing file leaves the directive's text in the page, and
//! a mistyped anchor or a line range past the end of the file silently gives
//! an empty or short block. This test fails instead, with one message that
//! lists every problem:
//!
//! - every `include`, `rustdoc_include` and `playground` directive in
//!   `book/src/**/*.md` names a file that exists, relative to the directory
//!   of the chapter that holds it;
//! - `FILE:NAME` names an anchor the file has: a line with `ANCHOR: NAME`,
//!   then a line with `ANCHOR_END: NAME`, and at least one line between them;
//! - `FILE:N`, `FILE:N:`, `FILE:N:M` and `FILE::M` (1-based, inclusive)
//!   select at least one line and do not point past the end of the file;
//! - every chapter that `SUMMARY.md` lists exists.
//!
//! The parser follows mdBook 0.5's `links` preprocessor: the same directive
//! syntax, the same escape (`\{{#...}}`), the same anchor markers. Its own
//! tests, at the end, show that it finds the mistakes it is meant to find.

use std::io;
use std::path::{Path, PathBuf};

/// What part of a file a directive includes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selection {
    /// The whole file.
    Whole,
    /// The lines between `ANCHOR: name` and `ANCHOR_END: name`.
    Anchor(String),
    /// Lines `first..=last`, counted from 1; `last: None` runs to the end.
    Lines { first: usize, last: Option<usize> },
}

/// One `{{#kind target}}` directive in a chapter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Directive {
    /// The line of the chapter it starts on, counted from 1.
    line: usize,
    /// `include`, `rustdoc_include`, `playground`, `title`, or a mistake.
    kind: String,
    /// The file named, as written (empty for `title`).
    path: String,
    selection: Selection,
    /// The directive as written, for messages.
    text: String,
}

/// The directives mdBook would expand in `markdown`, in order.
///
/// mdBook matches `{{`, optional whitespace, `#`, a kind of ASCII letters,
/// digits and `_`, whitespace, then everything up to the first `}` (which
/// must start `}}`). A directive preceded by a backslash is escaped: mdBook
/// prints it without the backslash and expands nothing up to the last `}}`
/// on that line. Code blocks are no exception: mdBook expands directives
/// inside them too.
fn directives(markdown: &str) -> Vec<Directive> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = markdown[from..].find("{{") {
        let start = from + offset;
        if markdown[..start].ends_with('\\') && markdown[start..].starts_with("{{#") {
            let line_end = markdown[start..].find('\n').map_or(markdown.len(), |n| start + n);
            if let Some(close) = markdown[start..line_end].rfind("}}") {
                from = start + close + 2;
                continue;
            }
        }
        match directive_at(&markdown[start..]) {
            Some((kind, target, len)) => {
                let line = markdown[..start].matches('\n').count() + 1;
                let text = markdown[start..start + len].to_string();
                found.push(parse_target(line, kind, target, text));
                from = start + len;
            }
            None => from = start + 1,
        }
    }
    found
}

/// If `s` starts with a directive, its kind, its target (everything between
/// the whitespace after the kind and the closing `}}`) and its length.
fn directive_at(s: &str) -> Option<(&str, &str, usize)> {
    let rest = s.strip_prefix("{{")?;
    let rest = rest.trim_start().strip_prefix('#')?;
    let kind_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let (kind, rest) = rest.split_at(kind_len);
    if kind.is_empty() || !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let target_start = rest.len() - rest.trim_start().len();
    let close = rest.find('}')?;
    if close <= target_start || !rest[close..].starts_with("}}") {
        return None;
    }
    let target = &rest[target_start..close];
    let len = s.len() - rest.len() + close + 2;
    Some((kind, target, len))
}

/// Splits a target such as `../src/lib.rs:name` into its path and selection,
/// as mdBook does: the first whitespace-separated word is the file, and what
/// follows its first `:` is either a line range or an anchor name.
fn parse_target(line: usize, kind: &str, target: &str, text: String) -> Directive {
    let word = target.split_whitespace().next().unwrap_or("");
    let (path, selection) = match kind {
        "title" => (String::new(), Selection::Whole),
        "playground" | "playpen" => (word.to_string(), Selection::Whole),
        _ => match word.split_once(':') {
            None => (word.to_string(), Selection::Whole),
            Some((path, spec)) => (path.to_string(), parse_selection(spec)),
        },
    };
    Directive {
        line,
        kind: kind.to_string(),
        path,
        selection,
        text,
    }
}

/// mdBook's reading of what follows the file name: `N`, `N:`, `N:M`, `:M`,
/// `:` or an anchor name. A second part that is not a number means "to the
/// end".
fn parse_selection(spec: &str) -> Selection {
    let mut parts = spec.splitn(3, ':');
    let first = parts.next().unwrap_or("");
    let second = parts.next();
    let start = match first.parse::<usize>() {
        Ok(n) => Some(n.max(1)),
        Err(_) if first.is_empty() => None,
        Err(_) => return Selection::Anchor(first.to_string()),
    };
    let end = second.map(|s| s.parse::<usize>().ok());
    match (start, end) {
        (Some(n), None) => Selection::Lines {
            first: n,
            last: Some(n),
        },
        (Some(n), Some(m)) => Selection::Lines { first: n, last: m },
        (None, Some(Some(m))) => Selection::Lines {
            first: 1,
            last: Some(m),
        },
        (None, _) => Selection::Whole,
    }
}

/// The name after the first `marker` in `line` that is followed by one,
/// like mdBook's `ANCHOR:\s*([\w_-]+)`.
fn marker_name<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.match_indices(marker).find_map(|(at, _)| {
        let rest = line[at + marker.len()..].trim_start();
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(rest.len());
        (len > 0).then(|| &rest[..len])
    })
}

/// Why `selection` of `content` would not give what the directive means,
/// or `None` when it is fine.
fn check_selection(content: &str, selection: &Selection) -> Option<String> {
    let lines: Vec<&str> = content.lines().collect();
    match selection {
        Selection::Whole => None,
        Selection::Anchor(name) => {
            let is_start = |l: &str| marker_name(l, "ANCHOR:") == Some(name.as_str());
            let is_end = |l: &str| marker_name(l, "ANCHOR_END:") == Some(name.as_str());
            let Some(start) = lines.iter().position(|l| is_start(l)) else {
                return Some(format!("the file has no `ANCHOR: {name}`"));
            };
            let Some(len) = lines[start + 1..].iter().position(|l| is_end(l)) else {
                return Some(format!(
                    "the file has no `ANCHOR_END: {name}` after its `ANCHOR: {name}`"
                ));
            };
            // mdBook leaves out the lines of other anchors' markers.
            let body = lines[start + 1..start + 1 + len]
                .iter()
                .filter(|l| marker_name(l, "ANCHOR:").is_none() && marker_name(l, "ANCHOR_END:").is_none())
                .count();
            (body == 0).then(|| format!("the anchor `{name}` holds no lines"))
        }
        Selection::Lines { first, last } => {
            let count = lines.len();
            if *first > count {
                Some(format!("starts at line {first}, but the file has {count} lines"))
            } else if last.is_some_and(|m| m > count) {
                Some(format!(
                    "ends at line {}, but the file has {count} lines",
                    last.unwrap()
                ))
            } else if last.is_some_and(|m| m < *first) {
                Some(format!(
                    "selects no lines (line {first} to line {})",
                    last.unwrap()
                ))
            } else {
                None
            }
        }
    }
}

/// The problems with the directives of one chapter: `markdown` is the text
/// of the chapter `name`, `dir` its directory, and `read` reads a file.
fn check_chapter(
    name: &str,
    markdown: &str,
    dir: &Path,
    read: &dyn Fn(&Path) -> io::Result<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for d in directives(markdown) {
        let at = format!("{name}:{}: {}", d.line, d.text);
        match d.kind.as_str() {
            "title" => continue,
            "include" | "rustdoc_include" | "playground" | "playpen" => {}
            other => {
                problems.push(format!(
                    "{at}: `#{other}` is not an mdBook directive; mdBook would print it as text"
                ));
                continue;
            }
        }
        if d.path.is_empty() {
            problems.push(format!("{at}: names no file"));
            continue;
        }
        let file = dir.join(&d.path);
        match read(&file) {
            Err(e) => problems.push(format!("{at}: cannot read {}: {e}", file.display())),
            Ok(content) => {
                if let Some(why) = check_selection(&content, &d.selection) {
                    problems.push(format!("{at}: {why} ({})", file.display()));
                }
            }
        }
    }
    problems
}

/// The chapter files `SUMMARY.md` links to, in order (draft chapters, with
/// an empty link, are left out).
fn summary_chapters(summary: &str) -> Vec<&str> {
    let mut chapters = Vec::new();
    for line in summary.lines() {
        let mut rest = line;
        while let Some(open) = rest.find("](") {
            let after = &rest[open + 2..];
            let Some(close) = after.find(')') else {
                break;
            };
            let target = after[..close].trim();
            if !target.is_empty() && !target.contains("://") {
                chapters.push(target);
            }
            rest = &after[close + 1..];
        }
    }
    chapters
}

/// Every `.md` file under `dir`, sorted.
fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_book_include_resolves() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let src = root.join("book/src");
    let read = |p: &Path| std::fs::read_to_string(p);
    let mut problems = Vec::new();

    let summary_path = src.join("SUMMARY.md");
    let summary = std::fs::read_to_string(&summary_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", summary_path.display()));
    for chapter in summary_chapters(&summary) {
        if !src.join(chapter).is_file() {
            problems.push(format!(
                "SUMMARY.md lists {chapter}, which does not exist in {}",
                src.display()
            ));
        }
    }

    let chapters = markdown_files(&src);
    let mut includes = 0;
    for path in &chapters {
        let markdown = std::fs::read_to_string(path).unwrap();
        let name = path.strip_prefix(root).unwrap_or(path).display().to_string();
        includes += directives(&markdown).len();
        problems.extend(check_chapter(&name, &markdown, path.parent().unwrap(), &read));
    }

    assert!(
        problems.is_empty(),
        "{} problem(s) with the book's includes:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    assert!(
        chapters.len() >= 3 && includes > 0,
        "found only {} chapters and {includes} includes in {}",
        chapters.len(),
        src.display()
    );
}

/// The checker itself, on chapters and files held in memory.
mod checker {
    use super::*;

    const LIB_RS: &str = "\
use std::fmt;

// ANCHOR: greet
pub fn greet() -> &'static str {
    \"hello\"
}
// ANCHOR_END: greet

// ANCHOR: empty
// ANCHOR_END: empty
";

    /// Checks `chapter` as `book/src/chapter.md`, where the only file is
    /// `book/src/../lib.rs`, holding `LIB_RS`.
    fn check(chapter: &str) -> Vec<String> {
        let read = |p: &Path| {
            if p == Path::new("book/src/../lib.rs") {
                Ok(LIB_RS.to_string())
            } else {
                Err(io::Error::new(io::ErrorKind::NotFound, "no such file"))
            }
        };
        check_chapter("chapter.md", chapter, Path::new("book/src"), &read)
    }

    #[test]
    fn good_directives_pass() {
        let chapter = "# Title\n\n```rust\n{{#include ../lib.rs:greet}}\n```\n\
                       {{#include ../lib.rs}} {{#rustdoc_include ../lib.rs:3:7}}\n\
                       {{ #include ../lib.rs:1: }} {{#include ../lib.rs::10}} {{#title A title}}\n";
        assert_eq!(check(chapter), Vec::<String>::new());
        assert_eq!(directives(chapter).len(), 6);
    }

    #[test]
    fn missing_anchor_fails() {
        let problems = check("{{#include ../lib.rs:greeting}}");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("no `ANCHOR: greeting`"), "{problems:?}");
        assert!(problems[0].starts_with("chapter.md:1: {{#include ../lib.rs:greeting}}"));

        // A name that only starts like an existing anchor is another anchor.
        assert_eq!(check("{{#include ../lib.rs:gree}}").len(), 1);
        let problems = check("\n\n{{#include ../lib.rs:empty}}");
        assert!(problems[0].starts_with("chapter.md:3:"), "{problems:?}");
        assert!(problems[0].contains("holds no lines"), "{problems:?}");
    }

    #[test]
    fn missing_end_anchor_fails() {
        let read = |_: &Path| Ok("// ANCHOR: a\nfn a() {}\n".to_string());
        let problems = check_chapter("c.md", "{{#include f.rs:a}}", Path::new("."), &read);
        assert!(problems[0].contains("no `ANCHOR_END: a`"), "{problems:?}");
        // The end marker before the start marker does not close it.
        let read = |_: &Path| Ok("// ANCHOR_END: a\n// ANCHOR: a\nfn a() {}\n".to_string());
        let problems = check_chapter("c.md", "{{#include f.rs:a}}", Path::new("."), &read);
        assert!(problems[0].contains("no `ANCHOR_END: a`"), "{problems:?}");
    }

    #[test]
    fn missing_file_fails() {
        let problems = check("text\n{{#include ../../steps/nope/src/lib.rs:greet}}\nmore text");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("chapter.md:2:"), "{problems:?}");
        assert!(problems[0].contains("cannot read"), "{problems:?}");
        // Resolved against the chapter's directory, not the book's root.
        assert_eq!(check("{{#include lib.rs}}").len(), 1);
        assert_eq!(check("{{#playground ../missing.rs editable}}").len(), 1);
    }

    #[test]
    fn line_ranges_past_the_end_fail() {
        // LIB_RS has 10 lines.
        assert_eq!(check("{{#include ../lib.rs:10}}"), Vec::<String>::new());
        assert_eq!(check("{{#include ../lib.rs:10:}}"), Vec::<String>::new());
        assert!(check("{{#include ../lib.rs:11:}}")[0].contains("starts at line 11"));
        assert!(check("{{#include ../lib.rs:11}}")[0].contains("starts at line 11"));
        assert!(check("{{#include ../lib.rs:5:11}}")[0].contains("ends at line 11"));
        assert!(check("{{#include ../lib.rs::11}}")[0].contains("ends at line 11"));
        assert!(check("{{#include ../lib.rs:7:5}}")[0].contains("selects no lines"));
    }

    #[test]
    fn misspelt_and_escaped_directives() {
        let problems = check("{{#inlcude ../lib.rs:greet}}");
        assert!(problems[0].contains("not an mdBook directive"), "{problems:?}");
        // Escaped: mdBook prints it as text and does not read the file.
        assert_eq!(
            check("\\{{#include ../missing.rs}} and {{#include ../oops.rs}}"),
            Vec::<String>::new()
        );
        // Not directives at all.
        assert!(directives("{{#include}} {{#include }} {{ include x}} {{#include x} }").is_empty());
    }

    #[test]
    fn parses_like_mdbook() {
        let d = &directives("a\n{{#rustdoc_include ../x.rs:name extra}}")[0];
        assert_eq!(
            (d.line, d.kind.as_str(), d.path.as_str()),
            (2, "rustdoc_include", "../x.rs")
        );
        assert_eq!(d.selection, Selection::Anchor("name".into()));
        assert_eq!(parse_selection(""), Selection::Whole);
        assert_eq!(parse_selection(":"), Selection::Whole);
        assert_eq!(
            parse_selection("3"),
            Selection::Lines {
                first: 3,
                last: Some(3)
            }
        );
        assert_eq!(parse_selection("3:"), Selection::Lines { first: 3, last: None });
        assert_eq!(parse_selection("3:x"), Selection::Lines { first: 3, last: None });
        assert_eq!(
            parse_selection("3:9"),
            Selection::Lines {
                first: 3,
                last: Some(9)
            }
        );
        assert_eq!(
            parse_selection(":9"),
            Selection::Lines {
                first: 1,
                last: Some(9)
            }
        );
        assert_eq!(marker_name("// ANCHOR:   a-b_c rest", "ANCHOR:"), Some("a-b_c"));
        assert_eq!(marker_name("// ANCHOR_END: a", "ANCHOR:"), None);
    }

    #[test]
    fn summary_links() {
        let summary = "# Summary\n\n[Introduction](introduction.md)\n\n- [Step 01](step01.md)\n  \
                       - [Draft]()\n- [Site](https://example.org)\n---\n# Part\n- [A](a/b.md) [B](c.md)\n";
        assert_eq!(
            summary_chapters(summary),
            ["introduction.md", "step01.md", "a/b.md", "c.md"]
        );
    }
}
