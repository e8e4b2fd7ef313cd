//! Every figure of the book, drawn again and compared with the file in
//! `book/src/figures/`: a figure whose source changed (a field table, a
//! capture, a lab's addresses, the drawing code) fails here until the file
//! is written again with
//!
//! ```text
//! UPDATE_FIGURES=1 cargo test -p tunlab-figures
//! ```
//!
//! and the new file is committed with the change. Every figure must also
//! lay out cleanly: no text overlapping other text, leaving the figure, or
//! overflowing its box.

use std::collections::BTreeSet;

use tunlab_figures::{FIGURES, figures_dir};

const UPDATE: &str = "UPDATE_FIGURES=1 cargo test -p tunlab-figures";

#[test]
fn committed_figures_are_what_the_sources_draw() {
    let update = std::env::var_os("UPDATE_FIGURES").is_some_and(|v| v != "0");
    let dir = figures_dir();
    let mut failures = Vec::new();
    for (name, draw) in FIGURES {
        let file = dir.join(format!("{name}.svg"));
        let figure = match draw() {
            Ok(figure) => figure,
            Err(e) => {
                failures.push(format!("{name}: cannot be drawn: {e:#}"));
                continue;
            }
        };
        for problem in &figure.problems {
            failures.push(format!("{name}: {problem}"));
        }
        let committed = std::fs::read_to_string(&file).ok();
        if committed.as_deref() == Some(figure.svg.as_str()) {
            continue;
        }
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&file, &figure.svg).unwrap();
            eprintln!("wrote book/src/figures/{name}.svg");
        } else if committed.is_none() {
            failures.push(format!("book/src/figures/{name}.svg is missing; run `{UPDATE}`"));
        } else {
            failures.push(format!(
                "book/src/figures/{name}.svg differs from what its sources draw now; \
                 run `{UPDATE}`, look at the figure, and commit it"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A figure file that no source draws would never be checked again.
#[test]
fn every_figure_file_has_a_source() {
    let known: BTreeSet<String> = FIGURES.iter().map(|(name, _)| format!("{name}.svg")).collect();
    let Ok(entries) = std::fs::read_dir(figures_dir()) else {
        return;
    };
    let strays: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".svg") && !known.contains(f))
        .collect();
    assert!(
        strays.is_empty(),
        "book/src/figures/ holds {} that no figure of tunlab-figures draws: add a source to \
         FIGURES in book/figures/src/lib.rs, or delete the file",
        strays.join(", ")
    );
}
