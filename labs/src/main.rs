//! `tunlab`: the classroom entry point. Lists, runs, checks and opens the
//! labs, checks the machine, and cleans up after crashed runs.
//!
//! Run it as yourself: it builds what a lab needs as you, and asks sudo
//! for root only for the lab itself (see `tunlab::env`).

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::{ErrorKind, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tunlab::coach::{self, Hints, Progress};
use tunlab::doctor::{self, Needs, State};
use tunlab::env::{self, CannotElevate, EXIT_UNPRIVILEGED};
use tunlab::grade::{End, Format, Grader, Prior};
use tunlab::labs::{LABS, Lab, Options};
use tunlab::report::{self, Report};
use tunlab::topology::TUNNEL_PORT;
use tunlab::{bench, completions, exercise, fuzz, netns, soak, track};

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
                  cargo run -p tunlab -- hint 01\n  cargo run -p tunlab -- watch 01\n  \
                  cargo run -p tunlab -- run 01 --format json\n  cargo run -p tunlab -- track 02\n  \
                  cargo run -p tunlab -- shell 01\n  cargo run -p tunlab -- decode pcaps/step01/ping-default.pcap\n  \
                  cargo run -p tunlab -- clean\n  cargo run --release -p tunlab -- bench\n  \
                  cargo run -p tunlab -- fuzz --seconds 60\n  cargo run -p tunlab -- soak --minutes 30\n  \
                  cargo run -p tunlab -- completions --out target/shell\n\n\
                  Exit status: 0 when every check passed, 1 when a check failed (or something went wrong), \
                  2 on a usage error, 77 when the lab cannot run here (no way to root, or the machine lacks \
                  what it needs: see `tunlab doctor`). `run` and `check` with --format json print one JSON \
                  object per check and a summary, one per line, on stdout (with --format tap, TAP version \
                  14), and the lines for people on stderr."
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
        /// How to print the checks: human, json (one object per check and
        /// a summary, one per line) or tap (TAP version 14). json and tap
        /// go to stdout, the lines for people to stderr.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Check your work on a lab: your exercise, then (as root: tunlab asks
    /// sudo) the lab's checks against your build of the step.
    Check {
        /// The lab's number, e.g. 01.
        lab: String,
        /// The file with your attempt [default: the lab's exercise stub].
        #[arg(long, value_name = "FILE")]
        attempt: Option<PathBuf>,
        /// Check the exercise only, not the lab's own checks: no root, no
        /// network, and your hint progress is left as it is; the exit
        /// status is the exercise's (for grading collected files).
        #[arg(long)]
        exercise_only: bool,
        /// How to print the checks: human, json or tap (as for `run`); the
        /// exercise's tests are checks too, one record each.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// What the first process of this command printed (its copy that
        /// sudo runs goes on from there).
        #[arg(long, hide = true, value_name = "PASSED/FAILED")]
        prior: Option<Prior>,
    },
    /// Show the next hint for a lab's exercise (they are in
    /// labs/NN-*/exercise/HINTS.md, from a nudge to nearly the answer). The
    /// last one opens after your second failed attempt.
    Hint {
        lab: String,
        /// Show every hint you may see now, not only the next.
        #[arg(long)]
        all: bool,
    },
    /// Check a lab's exercise now and again every time you save it, with a
    /// short status each time. Ctrl-C stops.
    Watch {
        lab: String,
        /// The file with your attempt [default: the lab's exercise stub].
        #[arg(long, value_name = "FILE")]
        attempt: Option<PathBuf>,
    },
    /// The build track: write a step's core yourself (labs/NN-*/track/),
    /// then check it in a copy of the step crate (target/track/) against
    /// the step's own tests and golden captures, and against the speed of
    /// the reference with the step's micro-benchmark. No root needed.
    Track {
        /// The step, e.g. 02 [without it: list the checkpoints].
        lab: Option<String>,
        /// Your version of the module [default: labs/NN-*/track/MODULE.rs].
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Only the tests, not the speed.
        #[arg(long)]
        no_bench: bool,
        /// Check the reference module itself (what a passing attempt
        /// looks like; and how fast the reference is here).
        #[arg(long, conflicts_with = "file")]
        reference: bool,
    },
    /// Build a lab's hosts, start its step, and open a shell inside a lab
    /// host; leaving the shell removes everything (as root: tunlab asks
    /// sudo).
    Shell { lab: String },
    /// Print the packets of pcap (or pcapng) files, one tcpdump-like line
    /// each, as the steps log them: TUN captures (LINKTYPE_RAW), and
    /// Ethernet captures of the underlay with the tunnel's messages decoded
    /// inside. With --keylog and --key, decrypt the recorded sessions
    /// instead: step 04's data messages (steps 05 and 06's layer 3 too) and
    /// step 06's control connections, both ways.
    #[command(after_help = "Examples:\n  \
        cargo run -p tunlab -- decode pcaps/step04/underlay.pcap\n  \
        install -m 600 pcaps/step04/test-only-server.key /tmp/server.key\n  \
        cargo run -p tunlab -- decode pcaps/step04/underlay.pcap --keylog pcaps/step04/server.keylog \\\n      \
        --key /tmp/server.key --write /tmp/inner.pcap\n  \
        tshark -r /tmp/inner.pcap\n\n\
        The key log must be the one written by the end whose key --key gives; when that end \
        initiated (step 04's client, step 06's expose), --peer-key gives the other end's public key.")]
    Decode {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The step whose tunnel made the capture (02 to 07): its messages
        /// are decoded. Without it, WireGuard's format (step 07) is tried,
        /// then step 04's, then step 02's.
        #[arg(long, value_name = "NN")]
        step: Option<String>,
        /// The tunnel's UDP port in the capture.
        #[arg(long, value_name = "PORT", default_value_t = TUNNEL_PORT)]
        port: u16,
        /// Decrypt with this key log: the ephemeral private keys one end
        /// wrote with its --keylog.
        #[arg(long, value_name = "FILE", requires = "key")]
        keylog: Option<PathBuf>,
        /// The private key file (mode 600) of the end that wrote the key
        /// log.
        #[arg(long, value_name = "FILE", requires = "keylog")]
        key: Option<PathBuf>,
        /// The other end's public key: needed when the end that wrote the
        /// key log initiated the handshake.
        #[arg(long, value_name = "PUBKEY", requires = "keylog", value_parser = public_key)]
        peer_key: Option<step04_crypto::PublicKey>,
        /// Write the decrypted inner IP packets to FILE (pcap,
        /// LINKTYPE_RAW, with their capture times), for tshark or
        /// Wireshark.
        #[arg(long, value_name = "FILE", requires = "keylog")]
        write: Option<PathBuf>,
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
        /// Also write the report (fuzz.json, fuzz.md) into the book
        /// (book/src/hardening/), for the hardening chapter.
        #[arg(long)]
        book: bool,
    },
    /// Run step 05's VPN (lab 05's hosts: two clients, a NAT server, the
    /// internet host) for a long time through an impairment relay that
    /// loses, duplicates, reorders and corrupts half of the time, with
    /// iperf3 both ways, pings, rekeys every 10 s, roaming and client
    /// restarts; sample memory and ping gaps, and fail on a panic, a stall
    /// after the impairment stops, or memory that grows (as root: tunlab
    /// asks sudo). Writes soak.json and soak.md to target/tunlab/soak/.
    Soak {
        /// How long, in minutes.
        #[arg(long, default_value_t = 30, conflicts_with = "seconds")]
        minutes: u64,
        /// How long, in seconds (for a short smoke run), instead.
        #[arg(long)]
        seconds: Option<u64>,
        /// Where to write soak.json, soak.md and the logs [default:
        /// target/tunlab/soak].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Also copy soak.json and soak.md into the book
        /// (book/src/hardening/), for the hardening chapter.
        #[arg(long)]
        book: bool,
    },
    /// Write shell completions (bash, zsh, fish) and man pages for tunlab
    /// and every step binary, generated from their command lines, into
    /// DIR/completions/SHELL/ and DIR/man/man1/.
    #[command(after_help = "Example:\n  \
        cargo run -p tunlab -- completions --out target/shell\n  \
        source target/shell/completions/bash/tunlab.bash   # bash, this shell only\n  \
        MANPATH=target/shell/man man step04-crypto-server")]
    Completions {
        /// Where to write them.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
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
        Cmd::Run {
            lab,
            out,
            fixtures,
            format,
        } => {
            let lab = find(&lab)?;
            report::lines_to_stderr(format.machine());
            let what = format!("lab {}", lab.number);
            if !ready(&what, lab.needs) {
                return Ok(skipped(
                    format,
                    lab,
                    None,
                    "the machine lacks what the lab needs (see above)",
                ));
            }
            if !env::is_root() {
                return match env::run_as_root(&what, lab.needs, &own_args()) {
                    Err(e) if format.machine() && e.downcast_ref::<CannotElevate>().is_some() => {
                        eprintln!("tunlab: {e:#}");
                        Ok(skipped(format, lab, None, &e.to_string()))
                    }
                    other => other,
                };
            }
            clean_up_on_signals(true)?;
            let out = out.unwrap_or_else(|| lab.default_out());
            env::make_dir(&out)?;
            run_lab(lab, format, None, out, fixtures)
        }
        Cmd::Check {
            lab,
            attempt,
            exercise_only,
            format,
            prior,
        } => {
            let lab = find(&lab)?;
            if let Some(attempt) = attempt.as_ref().filter(|a| !a.is_file()) {
                return Err(Usage(format!("{} is not a file", attempt.display())).into());
            }
            report::lines_to_stderr(format.machine());
            if exercise_only {
                if exercise::stub(lab).is_none() {
                    return Err(Usage(format!("lab {} has no exercise", lab.number)).into());
                }
                let (passed, prior) = check_exercise(lab, attempt, format, false)?;
                return Ok(match prior.filter(|_| format.machine()) {
                    Some(prior) => Grader::stdout(format, lab.number, Some(prior)).finish(End::Ran),
                    None => u8::from(!passed),
                });
            }
            // The copy that sudo runs does only the lab's part: the
            // exercise was checked before it, as the user, and `prior`
            // says how that went.
            let (exercise_ok, prior) = if env::elevated() {
                (prior.is_none_or(|p| p.failed == 0), prior)
            } else {
                check_exercise(lab, attempt, format, true)?
            };
            let failed = if exercise_ok { 0 } else { 1 };
            let what = format!("lab {}", lab.number);
            let not_run = "the lab's own checks did not run";
            if !ready(&what, lab.needs) {
                if format.machine() {
                    let why = format!("{not_run}: the machine lacks what the lab needs (see above)");
                    return Ok(skipped(format, lab, prior, &why));
                }
                println!("{not_run}");
                return Ok(failed.max(EXIT_UNPRIVILEGED * exercise_ok as u8));
            }
            if !env::is_root() {
                let mut args = own_args();
                if let Some(prior) = prior.filter(|_| format.machine()) {
                    args.extend(["--prior".into(), prior.to_string().into()]);
                }
                return match env::run_as_root(&what, lab.needs, &args) {
                    Ok(code) => {
                        exercise_reminder(exercise_ok, format);
                        Ok(if exercise_ok { code } else { failed })
                    }
                    Err(e) if e.downcast_ref::<CannotElevate>().is_some() => {
                        if format.machine() {
                            eprintln!("{not_run}: {e}");
                            return Ok(skipped(format, lab, prior, &format!("{not_run}: {e}")));
                        }
                        println!("{not_run}: {e}");
                        Ok(if exercise_ok { EXIT_UNPRIVILEGED } else { failed })
                    }
                    Err(e) => Err(e),
                };
            }
            clean_up_on_signals(true)?;
            let out = lab.default_out();
            env::make_dir(&out)?;
            let code = run_lab(lab, format, prior, out, false)?.max(failed);
            // The elevated copy's first process says it, after the lab.
            if !env::elevated() {
                exercise_reminder(exercise_ok, format);
            }
            Ok(code)
        }
        Cmd::Hint { lab, all } => {
            let lab = find(&lab)?;
            if lab.exercise.is_none() {
                return Err(Usage(format!("lab {} has no exercise", lab.number)).into());
            }
            let hints = Hints::of(lab)?;
            let path = Progress::default_path();
            let mut progress = Progress::load(&path);
            print!(
                "{}",
                coach::hint_text(lab, &hints, progress.lab_mut(lab.number), all)
            );
            if let Err(e) = progress.save() {
                eprintln!("tunlab: could not keep your progress: {e:#}");
            }
            Ok(0)
        }
        Cmd::Watch { lab, attempt } => {
            let lab = find(&lab)?;
            let Some(stub) = exercise::stub(lab) else {
                return Err(Usage(format!("lab {} has no exercise", lab.number)).into());
            };
            let attempt = attempt.unwrap_or(stub);
            if !attempt.is_file() {
                return Err(Usage(format!("{} is not a file", attempt.display())).into());
            }
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            for signal in [SIGINT, SIGTERM, SIGHUP] {
                signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
            }
            coach::watch(lab, &attempt, &Progress::default_path(), &stop)?;
            Ok(0)
        }
        Cmd::Track {
            lab,
            file,
            no_bench,
            reference,
        } => {
            let Some(lab) = lab else {
                print!("{}", track::list());
                return Ok(0);
            };
            let checkpoint = track::find(&lab).ok_or_else(|| {
                Usage(format!(
                    "step {lab} has no build-track checkpoint; `tunlab track` lists them"
                ))
            })?;
            let options = track::Options {
                file,
                reference,
                bench: !no_bench,
            };
            track::run(checkpoint, &options)
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
        Cmd::Decode {
            files,
            keylog: Some(keylog),
            key: Some(key),
            peer_key,
            write,
            ..
        } => decrypt(&files, &keylog, &key, peer_key, write.as_deref()),
        Cmd::Decode {
            files, step, port, ..
        } => match decode(&files, step.as_deref(), port) {
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
            // Only what this run measures, built first and visibly: a
            // release build of the steps takes minutes.
            let from: &[bench::Contestant] = if ablation {
                &bench::ABLATION
            } else {
                &bench::Contestant::ALL
            };
            let contestants = bench::select(&only, from).map_err(|e| Usage(format!("{e:#}")))?;
            env::build_visibly(&bench::binaries(&contestants))?;
            if !env::is_root() {
                let built = Needs {
                    binaries: &[],
                    ..bench::NEEDS
                };
                return env::run_as_root("tunlab bench", &built, &own_args());
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
            book,
        } => {
            if list {
                // `tunlab fuzz --list | head` closes the pipe early: not an error.
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                for t in fuzz::TARGETS {
                    if let Err(e) = writeln!(out, "{:<28} {}", t.name, t.what) {
                        return if e.kind() == ErrorKind::BrokenPipe {
                            Ok(0)
                        } else {
                            Err(e.into())
                        };
                    }
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
            let mut outcomes = Vec::new();
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
                outcomes.push(outcome);
            }
            let crashed = outcomes.iter().any(|o| o.crash.is_some());
            fuzz::write_report(&fuzz::work_dir(), &outcomes)?;
            println!(
                "corpora, logs and fuzz.{{json,md}}: {}",
                fuzz::work_dir().display()
            );
            if book {
                let dir = env::workspace_root().join("book").join("src").join("hardening");
                fuzz::write_report(&dir, &outcomes)?;
                println!("written: {}/fuzz.{{json,md}}", dir.display());
            }
            Ok(u8::from(crashed))
        }
        Cmd::Soak {
            minutes,
            seconds,
            out,
            book,
        } => {
            if !ready("tunlab soak", &soak::NEEDS) {
                return Ok(EXIT_UNPRIVILEGED);
            }
            if !env::is_root() {
                return env::run_as_root("tunlab soak", &soak::NEEDS, &own_args());
            }
            clean_up_on_signals(true)?;
            let duration = std::time::Duration::from_secs(seconds.unwrap_or(minutes * 60));
            if duration < std::time::Duration::from_secs(30) {
                return Err(Usage("a soak needs at least 30 seconds (--seconds 30)".into()).into());
            }
            let options = soak::Options {
                duration,
                out: out.unwrap_or_else(soak::Options::default_out),
                quiet: false,
            };
            let result = soak::run(&options)?;
            println!("\n{}", soak::summary(&result));
            println!("written: {}/soak.{{json,md}}", options.out.display());
            if book {
                let dir = env::workspace_root().join("book").join("src").join("hardening");
                soak::write(&dir, &result)?;
                println!("written: {}/soak.{{json,md}}", dir.display());
            }
            Ok(if result.passed() { 0 } else { 1 })
        }
        Cmd::Completions { out } => {
            let mut commands = completions::step_commands();
            commands.push(<Args as clap::CommandFactory>::command());
            let names: Vec<String> = commands.iter().map(|c| c.get_name().to_string()).collect();
            let written = completions::write(&out, commands)?;
            println!(
                "{} files for {}: completions in {}, man pages in {}",
                written.len(),
                names.join(", "),
                out.join("completions").display(),
                out.join("man").join("man1").display()
            );
            Ok(0)
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

/// Parses a public key for clap (base64, as `genkey | pubkey` prints it).
fn public_key(text: &str) -> Result<step04_crypto::PublicKey, String> {
    step04_crypto::keys::parse_public(text).map_err(|e| format!("{e:#}"))
}

/// `tunlab decode --keylog`: 0 when every encrypted message was read.
fn decrypt(
    files: &[PathBuf],
    keylog: &std::path::Path,
    key: &std::path::Path,
    peer: Option<step04_crypto::PublicKey>,
    write: Option<&std::path::Path>,
) -> anyhow::Result<u8> {
    let keys = tunlab::decrypt::Keys::read(key, keylog, peer)?;
    let mut recorder = write
        .map(|path| {
            step01_ping_tun::pcap::Recorder::create(path)
                .with_context(|| format!("creating {}", path.display()))
        })
        .transpose()?;
    let mut out = std::io::stdout().lock();
    let mut unread = 0;
    for file in files {
        writeln!(out, "{}: decrypted with {}", file.display(), keylog.display())?;
        let counts = tunlab::decrypt::decrypt(file, &keys, recorder.as_mut(), &mut out)?;
        if counts.sessions == 0 && counts.unread == 0 {
            bail!(
                "{}: no handshake of step 04 or step 06 in it: the keys come from the handshake, \
                 so the capture must start before the tunnel does",
                file.display()
            );
        }
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        writeln!(
            out,
            "{} read, {} opened, {} not read",
            plural(counts.sessions, "session", "sessions"),
            plural(counts.opened, "message", "messages"),
            counts.unread
        )?;
        unread += counts.unread;
        if let Some(path) = write {
            writeln!(
                out,
                "{} inner packets written to {}",
                counts.written,
                path.display()
            )?;
        }
    }
    Ok(u8::from(unread > 0))
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
    summarize_to(report, &mut std::io::stdout())
}

fn summarize_to(report: &Report, out: &mut impl Write) -> u8 {
    for line in report.summary() {
        let _ = writeln!(out, "{line}");
    }
    u8::from(!report.failures().is_empty())
}

/// Runs `lab` (as root) and prints its checks in `format`; the exit
/// status. `prior` is what an earlier process of the same command printed.
fn run_lab(
    lab: &Lab,
    format: Format,
    prior: Option<Prior>,
    out: PathBuf,
    fixtures: bool,
) -> anyhow::Result<u8> {
    let title = format!("lab {}: {}", lab.number, lab.title);
    if !format.machine() {
        println!("{title}");
        let report = (lab.run)(&Options {
            out,
            fixtures,
            quiet: false,
        })?;
        return Ok(summarize(&report));
    }
    eprintln!("{title}");
    let mut grader = Grader::stdout(format, lab.number, prior);
    match (lab.run)(&Options {
        out,
        fixtures,
        quiet: false,
    }) {
        Ok(report) => {
            grader.report(&report);
            summarize_to(&report, &mut std::io::stderr());
            Ok(grader.finish(End::Ran))
        }
        Err(e) => {
            eprintln!("tunlab: {e:#}");
            Ok(grader.finish(End::Error(format!("{e:#}"))))
        }
    }
}

/// The summary of a lab that could not run here (`--format json|tap`),
/// or the plain exit status for people: 77, or 1 when `prior` holds a
/// failure.
fn skipped(format: Format, lab: &Lab, prior: Option<Prior>, why: &str) -> u8 {
    if !format.machine() {
        return if prior.is_some_and(|p| p.failed > 0) {
            1
        } else {
            EXIT_UNPRIVILEGED
        };
    }
    Grader::stdout(format, lab.number, prior).finish(End::Skipped(why.to_string()))
}

/// After the lab's checks, whose last line may say that all passed: the
/// exercise's failure, reported before them, is why `check` failed.
fn exercise_reminder(exercise_ok: bool, format: Format) {
    if !exercise_ok && !format.machine() {
        println!("the exercise is not solved yet (see its FAIL line above), so check fails");
    }
}

/// Checks the learner's exercise: prints what failed and which hint to
/// read (or, with `--format json|tap`, one record per test on stdout and
/// the same text on stderr); with `keep_progress`, counts the attempt
/// for the hints. Whether it passed, and the records printed.
fn check_exercise(
    lab: &Lab,
    attempt: Option<PathBuf>,
    format: Format,
    keep_progress: bool,
) -> anyhow::Result<(bool, Option<Prior>)> {
    let mut grader = format.machine().then(|| Grader::stdout(format, lab.number, None));
    let Some(stub) = exercise::stub(lab) else {
        if format.machine() {
            eprintln!("lab {} has no exercise", lab.number);
        } else {
            println!("lab {} has no exercise", lab.number);
        }
        return Ok((true, grader.map(|g| g.tally())));
    };
    let attempt = attempt.unwrap_or(stub);
    let mut checked = coach::check(lab, &attempt)?;
    if keep_progress {
        coach::record(lab, &attempt, &mut checked, &Progress::default_path());
    }
    let hints = Hints::of(lab).ok();
    let text = coach::report_text(lab, &attempt, &checked, hints.as_ref());
    if let Some(grader) = &mut grader {
        eprint!("{text}");
        exercise_records(grader, &checked);
    } else {
        print!("{text}");
    }
    Ok((checked.passed, grader.map(|g| g.tally())))
}

/// One record per test of the exercise, or one for a compile error.
fn exercise_records<W: Write>(grader: &mut Grader<W>, checked: &coach::Checked) {
    let run = &checked.run;
    if let Some((error, _)) = &run.compile_error {
        grader.check("exercise: compiles", false, error);
        return;
    }
    for name in &run.passed {
        let short = name.rsplit("::").next().unwrap_or(name);
        grader.check(&format!("exercise: {short}"), true, "");
    }
    for failure in &run.failed {
        grader.check(
            &format!("exercise: {}", failure.short_name()),
            false,
            &failure.message,
        );
    }
    if run.total() == 0 || run.timed_out || (!checked.passed && run.failed.is_empty()) {
        let why = if run.timed_out {
            "the tests did not finish in time"
        } else {
            "the tests did not run"
        };
        grader.check(
            "exercise: tests finish",
            checked.passed,
            if checked.passed { "" } else { why },
        );
    }
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
