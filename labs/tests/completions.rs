//! `tunlab completions --out DIR` writes, for tunlab and every step
//! binary, a man page that names each subcommand and each flag the program
//! accepts, one page per subcommand with that subcommand's flags, and
//! bash, zsh and fish completions that offer them. What the programs
//! accept is read as a user reads it: from each real binary's `--help`.

use std::path::{Path, PathBuf};
use std::process::Command;

use tunlab::env::workspace_root;

/// The binaries, as (name, path): tunlab, and each step's, built as the
/// labs build them.
fn binaries() -> Vec<(String, PathBuf)> {
    let mut out = vec![("tunlab".to_string(), PathBuf::from(env!("CARGO_BIN_EXE_tunlab")))];
    for command in tunlab::completions::step_commands() {
        let name = command.get_name().to_string();
        let path = tunlab::env::step_binary(&name).unwrap_or_else(|e| panic!("{e:#}"));
        out.push((name, path));
    }
    out
}

/// What `--help` lists under `heading:` (`Commands`, `Options`): the
/// first word of each entry.
fn entries(help: &str, heading: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != format!("{heading}:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // An entry starts two spaces in; its wrapped lines are further in.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

/// The long flags (`--listen`) of `--help`'s options, and the short ones
/// (`-v`).
fn flags(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Options:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // An option starts two spaces in (`  -v, --verbose`), or six when
        // it has no short form (`      --listen`); its description lines
        // are further in.
        .filter(|l| {
            let indent = l.len() - l.trim_start().len();
            l.trim_start().starts_with('-') && (indent == 2 || indent == 6)
        })
        .flat_map(|l| {
            l.split([' ', ',', '='])
                .take_while(|w| w.is_empty() || w.starts_with('-'))
                .filter(|w| w.starts_with('-'))
                // `-v, --verbose...`: a flag that may be repeated.
                .map(|w| w.trim_end_matches("...").to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What bash offers when the user presses Tab after `words` (the last one
/// the word being completed), with `script` sourced as the user would.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    // What bash does on Tab: the words typed so far in COMP_WORDS, then
    // the function `complete -p` names, called with the program, the
    // current word and the one before it.
    let driver = r#"source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
spec=$(complete -p "$1") || exit 3
function=${spec#*-F }; function=${function%% *}
"$function" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}""#;
    let out = Command::new("bash")
        .args(["-c", driver, "bash"])
        .arg(script)
        .args(words)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: no completion for {words:?}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn help(binary: &Path, args: &[&str]) -> String {
    let out = Command::new(binary).args(args).arg("--help").output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} --help failed",
        binary.display()
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A man page as plain text: the roff font changes and escaped hyphens
/// undone. Only the section `heading` (`OPTIONS`, `SUBCOMMANDS`).
fn section(page: &Path, heading: &str) -> String {
    let roff = std::fs::read_to_string(page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
    let text = roff
        .replace("\\fB", "")
        .replace("\\fR", "")
        .replace("\\fI", "")
        .replace("\\-", "-");
    text.split("\n.SH ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn every_binary_gets_man_pages_and_completions_naming_its_subcommands_and_flags() {
    let out = std::env::temp_dir().join(format!("tunlab-{}-completions", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_tunlab"))
        .current_dir(workspace_root())
        .args(["completions", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let man = out.join("man").join("man1");
    let binaries = binaries();
    // Every step of the workspace, so a new step cannot be left out.
    let steps = std::fs::read_dir(workspace_root().join("steps")).unwrap().count();
    assert_eq!(binaries.len(), 1 + steps, "tunlab and every step");
    let mut checked = 0;
    for (name, binary) in &binaries {
        let top = help(binary, &[]);
        let page = man.join(format!("{name}.1"));
        let options = section(&page, "OPTIONS");
        let bash_script = out.join("completions/bash").join(format!("{name}.bash"));
        let offered = bash_completes(&bash_script, &[name.as_str(), "--"]);
        for flag in flags(&top) {
            assert!(
                options.contains(&flag),
                "{name}.1 does not name {flag}:\n{options}"
            );
            assert!(
                !flag.starts_with("--") || offered.contains(&flag),
                "{name} --<Tab> offers {offered:?}, not {flag}"
            );
            checked += 1;
        }
        let bash = std::fs::read_to_string(&bash_script).unwrap();
        let zsh = std::fs::read_to_string(out.join("completions/zsh").join(format!("_{name}"))).unwrap();
        let fish =
            std::fs::read_to_string(out.join("completions/fish").join(format!("{name}.fish"))).unwrap();
        let subcommands: Vec<String> = entries(&top, "Commands")
            .into_iter()
            .filter(|c| c != "help")
            .collect();
        // Tab after the program's name offers its subcommands.
        let offered = bash_completes(&bash_script, &[name.as_str(), ""]);
        for sub in &subcommands {
            assert!(
                offered.contains(sub),
                "{name} <Tab> offers {offered:?}, not {sub}"
            );
        }
        let listed = section(&page, "SUBCOMMANDS");
        for sub in &subcommands {
            assert!(
                listed.contains(&format!("{name}-{sub}(1)")),
                "{name}.1 does not list {sub}:\n{listed}"
            );
            let sub_options = section(&man.join(format!("{name}-{sub}.1")), "OPTIONS");
            let sub_help = help(binary, &[sub]);
            let sub_flags = flags(&sub_help);
            assert!(
                !sub_flags.is_empty(),
                "{name} {sub} --help lists no flag:\n{sub_help}"
            );
            // Tab after `--` offers every long flag of the subcommand.
            let offered = bash_completes(&bash_script, &[name.as_str(), sub.as_str(), "--"]);
            for flag in sub_flags {
                assert!(
                    sub_options.contains(&flag),
                    "{name}-{sub}.1 does not name {flag}:\n{sub_options}"
                );
                assert!(bash.contains(&flag), "{name}.bash does not offer {flag}");
                assert!(
                    !flag.starts_with("--") || offered.contains(&flag),
                    "{name} {sub} --<Tab> offers {offered:?}, not {flag}"
                );
                // zsh and fish spell long flags as --flag and -l flag.
                let long = flag.trim_start_matches('-');
                assert!(zsh.contains(&flag), "_{name} does not offer {flag}");
                assert!(fish.contains(long), "{name}.fish does not offer {flag}");
                checked += 1;
            }
            assert!(bash.contains(sub.as_str()) && zsh.contains(sub.as_str()) && fish.contains(sub.as_str()));
        }
        // The bash completions are a script bash accepts.
        let syntax = Command::new("bash")
            .arg("-n")
            .arg(out.join("completions/bash").join(format!("{name}.bash")))
            .status()
            .unwrap();
        assert!(syntax.success(), "{name}.bash is not valid bash");
    }
    // Enough to mean something: the flags of 8 programs and their
    // subcommands.
    assert!(checked > 100, "only {checked} flags checked");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn the_help_parsers_read_clap_output() {
    let help = "Usage: x <COMMAND>\n\nCommands:\n  genkey  Print a key\n          more words\n  help    Print this\n\nOptions:\n  -v, --verbose...  Log more\n      --listen <ADDR:PORT>\n          Where\n  -h, --help  Print help\n";
    assert_eq!(entries(help, "Commands"), ["genkey", "help"]);
    assert_eq!(flags(help), ["-v", "--verbose", "--listen", "-h", "--help"]);
}
