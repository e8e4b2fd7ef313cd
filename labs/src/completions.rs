//! `tunlab completions --out DIR`: shell completions (bash, zsh, fish) and
//! man pages for every binary of the workspace, generated from their clap
//! commands (clap_complete, clap_mangen), so they always say what the
//! programs accept.
//!
//! ```text
//! DIR/completions/bash/NAME.bash   source it, or copy it to ~/.local/share/bash-completion/completions/NAME
//! DIR/completions/zsh/_NAME        a folder on $fpath
//! DIR/completions/fish/NAME.fish   ~/.config/fish/completions/
//! DIR/man/man1/NAME.1              MANPATH=DIR/man man NAME (and NAME-SUBCOMMAND.1 for each subcommand)
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Command;
use clap_complete::Shell;

/// The step binaries' commands, from their libraries.
pub fn step_commands() -> Vec<Command> {
    vec![
        step01_ping_tun::cli::command(),
        step02_plain_tunnel::cli::command(),
        step03_ipv6::cli::command(),
        step04_crypto::cli::command(),
        step05_full_tunnel::cli::command(),
        step06_localhost::cli::command(),
        step07_wireguard::cli::command(),
        step08_fast_path::cli::command(),
    ]
}

/// The shells completions are written for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes the completions and man pages of `commands` (each named as its
/// binary) under `dir`, and returns the files written.
pub fn write(dir: &Path, commands: Vec<Command>) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man = dir.join("man").join("man1");
    crate::env::make_dir(&man)?;
    for shell in SHELLS {
        crate::env::make_dir(&dir.join("completions").join(shell.to_string()))?;
    }
    for mut command in commands {
        let name = command.get_name().to_string();
        // One page for the program, and one for each subcommand
        // (NAME-SUBCOMMAND.1), as git's are. First, from the command as
        // it was given: generating completions builds it, which adds a
        // `help` subcommand that would get pages of its own.
        let mut built = command.clone().disable_help_subcommand(true);
        built.build();
        page_names(&built, &mut |page| written.push(man.join(format!("{page}.1"))));
        clap_mangen::generate_to(command.clone(), &man)
            .with_context(|| format!("writing the man pages of {name} into {}", man.display()))?;
        for shell in SHELLS {
            let folder = dir.join("completions").join(shell.to_string());
            let path = if shell == Shell::Bash {
                let path = folder.join(format!("{name}.bash"));
                // A copy: generating sets the names of the subcommands.
                std::fs::write(&path, bash(&mut command.clone(), &name))
                    .with_context(|| format!("writing {}", path.display()))?;
                path
            } else {
                clap_complete::generate_to(shell, &mut command, &name, &folder).with_context(|| {
                    format!("writing {shell} completions of {name} into {}", folder.display())
                })?
            };
            written.push(path);
        }
    }
    Ok(written)
}

/// The bash completions of `command`, for the program `name`.
///
/// clap_complete (4.6) spells a subcommand's state two ways when the
/// program's name has a hyphen (`step04__crypto__subcmd__server` where it
/// is reached, `step04__subcmd__crypto__subcmd__server` where it is
/// handled; clap issue #6421), so bash completes the subcommands of
/// `step04-crypto` and none of their flags. So the script is made for the
/// name with its hyphens as underscores, which is spelled one way, and
/// registered for the real name: the script finds its states from the
/// words typed after the program, never from the program's name.
fn bash(command: &mut Command, name: &str) -> Vec<u8> {
    let plain = name.replace('-', "_");
    let mut script = Vec::new();
    clap_complete::generate(Shell::Bash, command, &plain, &mut script);
    let text = String::from_utf8_lossy(&script);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        // `    complete -F _step04_crypto -o ... step04_crypto`
        match line.trim_end().strip_suffix(&format!(" {plain}")) {
            Some(start) if line.trim_start().starts_with("complete ") => {
                out.push_str(start);
                out.push(' ');
                out.push_str(name);
                out.push('\n');
            }
            _ => out.push_str(line),
        }
    }
    out.into_bytes()
}

/// The name of each man page clap_mangen writes for a built command: its
/// own and its visible subcommands', recursively.
fn page_names(command: &Command, found: &mut impl FnMut(&str)) {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        page_names(sub, found);
    }
    found(command.get_display_name().unwrap_or_else(|| command.get_name()));
}
