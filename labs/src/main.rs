//! `tunlab`: the classroom entry point. Lists, runs, checks and opens the
//! labs, and cleans up after crashed runs.

#![forbid(unsafe_code)]

use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tunlab::labs::{LABS, Lab};
use tunlab::netns::Host;
use tunlab::report::Report;
use tunlab::{bench, env, exercise, fuzz, lab01, lab02, lab03, lab04, lab05, lab06, netns};

/// Run the tunlab classroom labs: each builds its own hosts from network
/// namespaces, runs the real step binaries in them, drives real traffic and
/// checks what you should see.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  cargo run -p tunlab -- list\n  sudo -E cargo run -p tunlab -- run 01\n  sudo -E cargo run -p tunlab -- check 01\n  sudo -E cargo run -p tunlab -- shell 01\n  cargo run -p tunlab -- decode pcaps/step01/ping-default.pcap\n  sudo -E cargo run -p tunlab -- clean\n  sudo -E cargo run --release -p tunlab -- bench"
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List the labs.
    List,
    /// Build a lab's hosts, run its step, drive traffic, check and explain
    /// what happens, save the captures, and remove everything (needs root).
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
    /// Check your work on a lab: your exercise, then (as root) the lab's
    /// checks against your build of the step.
    Check {
        lab: String,
        /// The file with your attempt [default: the lab's exercise stub].
        #[arg(long, value_name = "FILE")]
        attempt: Option<PathBuf>,
    },
    /// Build a lab's hosts, start its step, and open a shell inside a lab
    /// host; leaving the shell removes everything (needs root).
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
        #[arg(long, value_name = "PORT", default_value_t = step02_plain_tunnel::underlay::PORT)]
        port: u16,
    },
    /// Measure every tunnel step against the bare link and against
    /// wireguard-go and boringtun, on a topology of its own: iperf3 TCP and
    /// UDP, ping, CPU time and memory (needs root). Build with --release:
    /// sudo -E cargo run --release -p tunlab -- bench
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
        /// all]: veth, step02 ... step06, wireguard-go, boringtun,
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
    /// Remove lab hosts left behind by runs that crashed or were killed.
    Clean {
        /// Also remove the hosts of runs that are still going.
        #[arg(long)]
        all: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match dispatch(args.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("tunlab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn find(lab: &str) -> anyhow::Result<&'static Lab> {
    Lab::find(lab).with_context(|| format!("there is no lab {lab}; `tunlab list` shows the labs"))
}

/// Ok(false) when checks failed.
fn dispatch(command: Cmd) -> anyhow::Result<bool> {
    match command {
        Cmd::List => {
            for lab in LABS {
                println!(
                    "{}  {:<20} {}  (labs/{})",
                    lab.number, lab.package, lab.title, lab.folder
                );
            }
            Ok(true)
        }
        Cmd::Run { lab, out, fixtures } => {
            let lab = find(&lab)?;
            env::require_root()?;
            clean_up_on_signals(true)?;
            println!("lab {}: {}", lab.number, lab.title);
            let report = run_lab(lab, out, fixtures)?;
            Ok(summarize(&report))
        }
        Cmd::Check { lab, attempt } => {
            let lab = find(&lab)?;
            let mut ok = check_exercise(lab, attempt)?;
            match env::missing_privilege() {
                Some(why) => println!(
                    "the lab's own checks did not run: {why}; run: sudo -E cargo run -p tunlab -- check {}",
                    lab.number
                ),
                None => {
                    clean_up_on_signals(true)?;
                    println!("lab {}: {}", lab.number, lab.title);
                    ok &= summarize(&run_lab(lab, None, false)?);
                }
            }
            Ok(ok)
        }
        Cmd::Shell { lab } => {
            let lab = find(&lab)?;
            env::require_root()?;
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
                Ok(true)
            }
            other => other.map(|()| true),
        },
        Cmd::Bench {
            rounds,
            seconds,
            udp_probes,
            only,
            out,
            book,
        } => {
            env::require_root()?;
            clean_up_on_signals(true)?;
            let options = bench::Options {
                out: out.unwrap_or_else(bench::Options::default_out),
                rounds,
                seconds,
                udp_probes,
                only,
            };
            let results = bench::run(&options)?;
            println!("\n{}", results.terminal());
            println!("written: {}/bench.{{json,md,svg}}", options.out.display());
            if book {
                let dir = env::workspace_root().join("book").join("src").join("bench");
                std::fs::create_dir_all(&dir)?;
                bench::write(&dir, &results)?;
                println!("written: {}/bench.{{json,md,svg}}", dir.display());
            }
            Ok(true)
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
                return Ok(true);
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
            Ok(!crashed)
        }
        Cmd::Clean { all } => {
            env::require_root()?;
            env::require_tools(&["ip"])?;
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
            Ok(true)
        }
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

fn run_lab(lab: &Lab, out: Option<PathBuf>, fixtures: bool) -> anyhow::Result<Report> {
    match lab.number {
        "01" => lab01::run(&lab01::Options {
            out: out.unwrap_or_else(lab01::default_out),
            fixtures,
            quiet: false,
        }),
        "02" => lab02::run(&lab02::Options {
            out: out.unwrap_or_else(lab02::default_out),
            fixtures,
            quiet: false,
        }),
        "03" => lab03::run(&lab03::Options {
            out: out.unwrap_or_else(lab03::default_out),
            fixtures,
            quiet: false,
        }),
        "04" => lab04::run(&lab04::Options {
            out: out.unwrap_or_else(lab04::default_out),
            fixtures,
            quiet: false,
        }),
        "05" => lab05::run(&lab05::Options {
            out: out.unwrap_or_else(lab05::default_out),
            fixtures,
            quiet: false,
        }),
        "06" => lab06::run(&lab06::Options {
            out: out.unwrap_or_else(lab06::default_out),
            fixtures,
            quiet: false,
        }),
        other => bail!("lab {other} cannot run yet"),
    }
}

fn summarize(report: &Report) -> bool {
    let failures = report.failures();
    if failures.is_empty() {
        println!("all {} checks passed", report.checks.len());
        true
    } else {
        println!("{} of {} checks failed:", failures.len(), report.checks.len());
        for f in failures {
            println!("  {f}");
        }
        false
    }
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

fn shell(lab: &Lab) -> anyhow::Result<bool> {
    let mut report = Report::new(false);
    // Each lab's hosts stay up (and are removed) with `_up`.
    let (_up, host, hint): (Box<dyn std::any::Any>, Host, String) = match lab.number {
        "01" => {
            let up = lab01::up(&lab01::default_out(), &mut report)?;
            let host = up.host.clone();
            (
                Box::new(up),
                host,
                "ip addr; ip route; ping -c 3 10.0.0.2; tcpdump -n -i tun0".into(),
            )
        }
        "02" => {
            let up = lab02::up(&lab02::default_out(), &lab02::Setup::plain("udp"), &mut report)?;
            let host = up.client.clone();
            (
                Box::new(up),
                host,
                "ping -c 3 10.0.0.1; tcpdump -n -X -i veth0 udp port 51820".into(),
            )
        }
        "03" => {
            let up = lab03::up(&lab03::default_out(), false, &mut report)?;
            let host = up.client.clone();
            (
                Box::new(up),
                host,
                "ping -6 -c 3 fd00::1; ip -6 route; tcpdump -n -i tun0".into(),
            )
        }
        "04" => {
            let out = lab04::default_out();
            let keys = lab04::Keys::generate(&env::step_binary(lab04::PACKAGE)?, &out)?;
            let up = lab04::up(&out, &lab04::Setup::plain(&keys), &mut report)?;
            let host = up.client.clone();
            let hint = format!(
                "ping -c 3 10.0.0.1; tcpdump -n -X -i veth0 udp port 51820; \
                 kill -USR1 {} (the server's counters, in {})",
                up.server_step.pid().unwrap_or_default(),
                up.server_log.display()
            );
            (Box::new(up), host, hint)
        }
        "05" => {
            let out = lab05::default_out();
            let keys = lab05::Keys::generate(&env::step_binary(lab05::PACKAGE)?, &out)?;
            let up = lab05::up(&out, &lab05::Setup::plain(&keys), &mut report)?;
            let host = up.client1.clone();
            let hint = format!(
                "ip route; nft list ruleset; cat /etc/resolv.conf; curl http://198.51.100.2/; \
                 curl -o /dev/null http://198.51.100.2/bytes/10000000; getent ahosts www.example.test; \
                 kill -USR1 {} (the server's counters, in {}); ip netns exec {} sh (the server)",
                up.server_step.as_ref().and_then(|s| s.pid()).unwrap_or_default(),
                up.server_log.display(),
                up.server.netns()
            );
            (Box::new(up), host, hint)
        }
        other => bail!("lab {other} has no shell yet"),
    };
    let shell = std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into());
    println!(
        "{} runs in the lab; this shell is inside lab host `{}`. Try: {hint}",
        lab.package,
        host.name()
    );
    println!("Leave the shell (exit or Ctrl-D) to remove the lab.");
    let status = host
        .command(&shell)
        .env("PS1", format!("[lab {} {}] \\w# ", lab.number, host.name()))
        .stdin(std::process::Stdio::inherit())
        .status()
        .context("starting the shell")?;
    drop(_up);
    println!("lab removed");
    Ok(status.success())
}

/// On SIGTERM and SIGHUP (and SIGINT when `on_sigint`), delete this run's
/// lab hosts and exit: a signal's default action would skip every
/// destructor and leave the namespaces behind.
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
            std::process::exit(130);
        }
    });
    Ok(())
}
