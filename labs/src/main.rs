//! `tunlab`: the classroom entry point. Lists, runs, checks and opens the
//! labs, checks the machine, and cleans up after crashed runs.
//!
//! Run it as yourself: it builds what a lab needs as you, and asks sudo
//! for root only for the lab itself (see `tunlab::env`).

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tunlab::doctor::{self, Needs, State};
use tunlab::env::{self, CannotElevate, EXIT_UNPRIVILEGED};
use tunlab::labs::{LABS, Lab, Options};
use tunlab::report::Report;
use tunlab::topology::TUNNEL_PORT;
use tunlab::{bench, exercise, fuzz, netns};

/// Run the tunlab classroom labs: each builds its own hosts from network
/// namespaces, runs the real step binaries in them, drives real traffic and
/// checks what you should see.
///
/// Run it as yourself, not with sudo: it builds the steps as you, then asks
/// sudo for root (your password, on the terminal) for the lab part only.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  cargo run -p tunlab -- list\n  cargo run -p tunlab -- doctor\n  \
                  cargo run -p tunlab -- run 01\n  cargo run -p tunlab -- check 01\n  \
                  cargo run -p tunlab -- shell 01\n  cargo run -p tunlab -- decode pcaps/step01/ping-default.pcap\n  \
                  cargo run -p tunlab -- clean\n  cargo run --release -p tunlab -- bench\n\n\
                  Exit status: 0 when every check passed, 1 when a check failed (or something went wrong), \
                  2 on a usage error, 77 when the lab cannot run here (no way to root, or the machine lacks \
                  what it needs: see `tunlab doctor`)."
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List the labs.
    List,
    /// Check what the labs need from this machine (Linux, /dev/net/tun,
    /// namespaces, veth, nftables, each tool, root or sudo, leftovers of
    /// crashed runs, the bench's WireGuard peers): one line per item, with
    /// the command that fixes it. Exits 1 when a lab cannot run.
    Doctor {
        /// Only what this lab needs, e.g. 05 [default: every lab].
        lab: Option<String>,
    },
    /// Build a lab's hosts, run its step, drive traffic, check and explain
    /// what happens, save the captures, and remove everything (as root:
    /// tunlab asks sudo).
    Run {
        /// The lab's number, e.g. 01.
        lab: String,
        /// Where to save captures and logs [default: target/tunlab/labNN].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Also record the golden fixtures into pcaps/stepNN/ (then review
        /// the snapshot diffs).
        #[arg(long)]
        fixtures: bool,
    },
    /// Check your work on a lab: your exercise, then (as root: tunlab asks
    /// sudo) the lab's checks against your build of the step.
    Check {
        lab: String,
        /// The file with your attempt [default: the lab's exercise stub].
        #[arg(long, value_name = "FILE")]
        attempt: Option<PathBuf>,
    },
    /// Build a lab's hosts, start its step, and open a shell inside a lab
    /// host; leaving the shell removes everything (as root: tunlab asks
    /// sudo).
    Shell { lab: String },
    /// Print the packets of pcap files, one tcpdump-like line each, as the
    /// steps log them: TUN captures (LINKTYPE_RAW), and Ethernet captures of
    /// the underlay with the tunnel's messages decoded inside.
    Decode {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The step whose tunnel made the capture (02 to 06): its messages
        /// are decoded. Without it, step 04's format is tried, then step 02's.
        #[arg(long, value_name = "NN")]
        step: Option<String>,
        /// The tunnel's UDP port in the capture.
        #[arg(long, value_name = "PORT", default_value_t = TUNNEL_PORT)]
        port: u16,
    },
    /// Measure every tunnel step against the bare link and against
    /// wireguard-go and boringtun, on a topology of its own: iperf3 TCP and
    /// UDP, ping, CPU time and memory (as root: tunlab asks sudo). Build
    /// with --release: cargo run --release -p tunlab -- bench
    Bench {
        /// How many times each contestant is measured (interleaved).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 4)]
        seconds: u32,
        /// iperf3 runs spent finding the highest UDP rate with under 1%
        /// loss (0: no UDP figure).
        #[arg(long, default_value_t = 5)]
        udp_probes: u32,
        /// Measure only these, e.g. --only veth,step02,wireguard-go [default:
        /// all]: veth, step02 ... step08, wireguard-go, boringtun,
        /// boringtun-1t.
        #[arg(long, value_delimiter = ',', value_name = "NAMES")]
        only: Vec<String>,
        /// Where to write bench.json, bench.md, bench.svg and the logs
        /// [default: target/tunlab/bench].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Also copy bench.json, bench.md and bench.svg into the book
        /// (book/src/bench/), for the performance chapter.
        #[arg(long)]
        book: bool,
        /// Measure step 08's ablation instead: step 07, then step 08 with
        /// its techniques added one at a time (step08-bare, step08+mmsg,
        /// step08+offload, step08+gso, step08+gro, step08), into
        /// ablation.{json,md,svg} (with --book, for chapter 08).
        #[arg(long)]
        ablation: bool,
    },
    /// Run every fuzz target (fuzz/fuzz_targets/) for a while, each seeded
    /// with the shipped captures, and report executions, coverage and
    /// crashes. Needs cargo-fuzz (scripts/install-deps.sh --fuzz), not root.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only these targets, e.g. --target step01_responder [default: all].
        #[arg(long = "target", value_name = "NAME")]
        targets: Vec<String>,
        /// List the targets and what each feeds, and stop.
        #[arg(long)]
        list: bool,
    },
    /// Remove lab hosts left behind by runs that crashed or were killed
    /// (as root: tunlab asks sudo).
    Clean {
        /// Also remove the hosts of runs that are still going.
        #[arg(long)]
        all: bool,
    },
}

/// A mistake in how tunlab was called (exit status 2).
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn main() -> ExitCode {
    let args = Args::parse();
    let code = match dispatch(args.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tunlab: {e:#}");
            if e.downcast_ref::<CannotElevate>().is_some() {
                EXIT_UNPRIVILEGED
            } else if e.downcast_ref::<Usage>().is_some() {
                2
            } else {
                1
            }
        }
    };
    // What this process wrote as root for someone else becomes theirs.
    env::hand_back();
    ExitCode::from(code)
}

fn find(lab: &str) -> anyhow::Result<&'static Lab> {
    Lab::find(lab).ok_or_else(|| Usage(format!("there is no lab {lab}; `tunlab list` shows the labs")).into())
}

/// The arguments this program was given, to give them again to its copy
/// that runs as root.
fn own_args() -> Vec<OsString> {
    std::env::args_os().skip(1).collect()
}

/// Checks what `needs` asks of the machine; prints the lines that failed.
/// False when something is missing.
fn ready(what: &str, needs: &Needs) -> bool {
    let missing = doctor::preflight(needs);
    if missing.is_empty() {
        return true;
    }
    eprintln!("tunlab: {what} cannot run on this machine yet:");
    for line in missing {
        eprintln!("  {line}");
    }
    false
}

/// The exit status: 0, 1 (checks failed), 2, or 77.
fn dispatch(command: Cmd) -> anyhow::Result<u8> {
    match command {
        Cmd::List => {
            for lab in LABS {
                println!(
                    "{}  {:<20} {}  (labs/{})",
                    lab.number, lab.package, lab.title, lab.folder
                );
            }
            Ok(0)
        }
        Cmd::Doctor { lab } => doctor(lab.as_deref()),
        Cmd::Run { lab, out, fixtures } => {
            let lab = find(&lab)?;
            let what = format!("lab {}", lab.number);
            if !ready(&what, lab.needs) {
                return Ok(EXIT_UNPRIVILEGED);
            }
            if !env::is_root() {
                return env::run_as_root(&what, lab.needs, &own_args());
            }
            clean_up_on_signals(true)?;
            let out = out.unwrap_or_else(|| lab.default_out());
            env::make_dir(&out)?;
            println!("lab {}: {}", lab.number, lab.title);
            let report = (lab.run)(&Options {
                out,
                fixtures,
                quiet: false,
            })?;
            Ok(summarize(&report))
        }
        Cmd::Check { lab, attempt } => {
            let lab = find(&lab)?;
            // The copy that sudo runs does only the lab's part: the
            // exercise was checked before it, as the user.
            let exercise_ok = env::elevated() || check_exercise(lab, attempt)?;
            let failed = if exercise_ok { 0 } else { 1 };
            let what = format!("lab {}", lab.number);
            if !ready(&what, lab.needs) {
                println!("the lab's own checks did not run");
                return Ok(failed.max(EXIT_UNPRIVILEGED * exercise_ok as u8));
            }
            if !env::is_root() {
                return match env::run_as_root(&what, lab.needs, &own_args()) {
                    Ok(code) => Ok(if exercise_ok { code } else { failed }),
                    Err(e) if e.downcast_ref::<CannotElevate>().is_some() => {
                        println!("the lab's own checks did not run: {e}");
                        Ok(if exercise_ok { EXIT_UNPRIVILEGED } else { failed })
                    }
                    Err(e) => Err(e),
                };
            }
            clean_up_on_signals(true)?;
            let out = lab.default_out();
            env::make_dir(&out)?;
            println!("lab {}: {}", lab.number, lab.title);
            let report = (lab.run)(&Options {
                out,
                fixtures: false,
                quiet: false,
            })?;
            Ok(summarize(&report).max(failed))
        }
        Cmd::Shell { lab } => {
            let lab = find(&lab)?;
            let what = format!("the shell of lab {}", lab.number);
            if !ready(&what, lab.needs) {
                return Ok(EXIT_UNPRIVILEGED);
            }
            if !env::is_root() {
                return env::run_as_root(&what, lab.needs, &own_args());
            }
            // Ctrl-C in the shell is for the shell, not for us.
            clean_up_on_signals(false)?;
            shell(lab)
        }
        Cmd::Decode { files, step, port } => match decode(&files, step.as_deref(), port) {
            // `tunlab decode ... | head` closes the pipe early: not an error.
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == ErrorKind::BrokenPipe) =>
            {
                Ok(0)
            }
            other => other.map(|()| 0),
        },
        Cmd::Bench {
            rounds,
            seconds,
            udp_probes,
            only,
            out,
            book,
            ablation,
        } => {
            if !ready("tunlab bench", &bench::NEEDS) {
                return Ok(EXIT_UNPRIVILEGED);
            }
            if !env::is_root() {
                return env::run_as_root("tunlab bench", &bench::NEEDS, &own_args());
            }
            clean_up_on_signals(true)?;
            let options = bench::Options {
                out: out.unwrap_or_else(bench::Options::default_out),
                rounds,
                seconds,
                udp_probes,
                only,
                ablation,
            };
            env::make_dir(&options.out)?;
            let results = bench::run(&options)?;
            let stem = bench::file_stem(&options);
            println!("\n{}", results.terminal());
            println!("written: {}/{stem}.{{json,md,svg}}", options.out.display());
            if book {
                let dir = env::workspace_root().join("book").join("src").join("bench");
                env::make_dir(&dir)?;
                bench::write(&dir, stem, &results)?;
                println!("written: {}/{stem}.{{json,md,svg}}", dir.display());
            }
            Ok(0)
        }
        Cmd::Fuzz {
            seconds,
            targets,
            list,
        } => {
            if list {
                for t in fuzz::TARGETS {
                    println!("{:<28} {}", t.name, t.what);
                }
                return Ok(0);
            }
            let chosen: Vec<&fuzz::Target> = if targets.is_empty() {
                fuzz::TARGETS.iter().collect()
            } else {
                targets
                    .iter()
                    .map(|t| fuzz::find(t))
                    .collect::<anyhow::Result<_>>()?
            };
            println!(
                "building {} fuzz targets (AddressSanitizer, debug assertions)",
                chosen.len()
            );
            fuzz::build()?;
            let mut crashed = false;
            for (i, target) in chosen.iter().enumerate() {
                println!(
                    "[{}/{}] {} for {seconds} s: {}",
                    i + 1,
                    chosen.len(),
                    target.name,
                    target.what
                );
                let outcome = fuzz::run(target, seconds)?;
                println!("{outcome}");
                crashed |= outcome.crash.is_some();
            }
            println!("corpora and logs: {}", fuzz::work_dir().display());
            Ok(u8::from(crashed))
        }
        Cmd::Clean { all } => {
            const NEEDS: Needs = Needs {
                tools: &["ip"],
                kernel: &[],
                binaries: &[],
            };
            if !ready("tunlab clean", &NEEDS) {
                return Ok(EXIT_UNPRIVILEGED);
            }
            if !env::is_root() {
                return env::run_as_root("tunlab clean", &NEEDS, &own_args());
            }
            let removed = netns::remove_leftovers(all)?;
            if removed.is_empty() {
                println!("nothing to clean");
            }
            for ns in removed {
                if ns.starts_with('/') {
                    println!("removed {ns}");
                } else {
                    println!("removed network namespace {ns}");
                }
            }
            Ok(0)
        }
    }
}

/// `tunlab doctor [LAB]`: 1 when something a lab needs is missing.
fn doctor(lab: Option<&str>) -> anyhow::Result<u8> {
    let needs: Vec<Needs> = match lab {
        Some(lab) => vec![*find(lab)?.needs],
        None => LABS.iter().map(|l| *l.needs).chain([bench::NEEDS]).collect(),
    };
    let lines = doctor::report(&needs, lab.is_none());
    for line in &lines {
        println!("{line}");
    }
    let missing = lines.iter().filter(|l| l.state == State::Missing).count();
    let which = lab.map_or("every lab".to_string(), |n| format!("lab {n}"));
    if missing == 0 {
        println!("{which} can run here");
        Ok(0)
    } else {
        println!("{missing} missing: {which} cannot run here until the lines marked MISSING are fixed");
        Ok(1)
    }
}

/// Prints every packet of `files`, one line each.
fn decode(files: &[PathBuf], step: Option<&str>, port: u16) -> anyhow::Result<()> {
    let decoders = tunlab::decode::decoders(step)?;
    let mut out = std::io::stdout().lock();
    for file in files {
        tunlab::decode::decode(file, &decoders, port, &mut out)?;
    }
    Ok(())
}

/// Prints the failed checks; the exit status: 0 when all passed, else 1.
fn summarize(report: &Report) -> u8 {
    for line in report.summary() {
        println!("{line}");
    }
    u8::from(!report.failures().is_empty())
}

fn check_exercise(lab: &Lab, attempt: Option<PathBuf>) -> anyhow::Result<bool> {
    let Some(stub) = exercise::stub(lab) else {
        println!("lab {} has no exercise", lab.number);
        return Ok(true);
    };
    let attempt = attempt.unwrap_or(stub);
    println!("checking your exercise {}", attempt.display());
    let outcome = exercise::check(lab, &attempt)?;
    if outcome.passed {
        println!("PASS exercise: every test passes");
    } else {
        println!("{}", outcome.output.trim_end());
        println!("FAIL exercise: not solved yet");
        if let Some(hints) = exercise::hints(lab) {
            println!("\n{}", hints.trim_end());
        }
    }
    Ok(outcome.passed)
}

/// `tunlab shell NN`: the lab's hosts up, a shell in one of them; leaving
/// it removes everything.
fn shell(lab: &Lab) -> anyhow::Result<u8> {
    let mut report = Report::new(false);
    let out = lab.default_out();
    env::make_dir(&out)?;
    let up = (lab.shell)(&out, &mut report)?;
    let shell = std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into());
    let mut hint = lab.hint.to_string();
    for note in &up.notes {
        hint.push_str("; ");
        hint.push_str(note);
    }
    println!(
        "{} runs in the lab; this shell is inside lab host `{}`. Try: {hint}",
        lab.package,
        up.host.name()
    );
    println!("Leave the shell (exit or Ctrl-D) to remove the lab.");
    let status = up
        .host
        .command(&shell)
        .env("PS1", format!("[lab {} {}] \\w# ", lab.number, up.host.name()))
        .stdin(std::process::Stdio::inherit())
        .status()
        .context("starting the shell")?;
    drop(up);
    println!("lab removed");
    Ok(if status.success() { 0 } else { 1 })
}

/// On SIGTERM and SIGHUP (and SIGINT when `on_sigint`), delete this run's
/// lab hosts, hand its files back, and exit: a signal's default action
/// would skip every destructor and leave the namespaces behind.
fn clean_up_on_signals(on_sigint: bool) -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal == SIGINT && !on_sigint {
                continue;
            }
            eprintln!("tunlab: interrupted; removing the lab hosts");
            netns::remove_own();
            env::hand_back();
            std::process::exit(130);
        }
    });
    Ok(())
}
