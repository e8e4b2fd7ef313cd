//! Lab 01 end to end: the real step 01 binary in a lab host, the real
//! `ping`, captures on tun0. Needs root; without it each test says SKIPPED
//! (and fails under CI, where lab tests must run).

use std::path::PathBuf;
use std::process::Command;

use tunlab::doctor::{Kernel, Needs};
use tunlab::env::{lab_test, step_binary};
use tunlab::lab01::{self, NEEDS, SCENARIOS};
use tunlab::labs::Options;
use tunlab::netns::{self, Topology};

/// What the tests of lab hosts alone need: `ip` and namespaces.
const HOSTS_ONLY: Needs = Needs {
    tools: &["ip"],
    kernel: &[Kernel::Netns],
    binaries: &[],
};

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tunlab-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn lab01_pings_through_step01() {
    if !lab_test("lab01_pings_through_step01", &NEEDS) {
        return;
    }
    let out = out_dir("lab01");
    let report = lab01::run(&Options {
        out: out.clone(),
        fixtures: false,
        quiet: false,
    })
    .unwrap();
    report.assert_passed("lab 01");
    // The book quotes this run: every `<!-- output: lab 01 -->` block.
    tunlab::book_output::assert_lab_blocks("01", &report, &out);
    // What a student is told to look for, each checked:
    for scenario in SCENARIOS {
        let carried = if scenario.ours {
            format!("{}: tun0 carried 3 requests and 3 correct replies", scenario.name)
        } else {
            format!("{}: nothing crossed tun0 (the kernel answered)", scenario.name)
        };
        report.assert_check(&carried);
        assert!(out.join(format!("{}.pcap", scenario.name)).is_file());
    }
    report.assert_check("tun0 is gone after the program exits");
    let counters = report
        .get("the counters printed on exit count every reply")
        .unwrap();
    assert!(
        counters.detail.starts_with("tun0: replies 21,"),
        "{}",
        counters.detail
    );
    // The lab removed its host (other tests of this process use other names).
    let own = format!("{}{}-", netns::PREFIX, std::process::id());
    let left: Vec<String> = netns::lab_namespaces()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&own) && n.ends_with("-host"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    std::fs::remove_dir_all(out).unwrap();
}

/// Without CAP_NET_ADMIN, step 01 says in one line what to run instead, and
/// exits with 77, instead of dying with a raw EPERM.
#[test]
fn step01_without_cap_net_admin_says_what_to_run() {
    const SETPRIV: Needs = Needs {
        tools: &["setpriv"],
        ..NEEDS
    };
    if !lab_test("step01_without_cap_net_admin_says_what_to_run", &SETPRIV) {
        return;
    }
    let binary = step_binary("step01-ping-tun").unwrap();
    // As root, but with CAP_NET_ADMIN removed from the bounding set, so the
    // program starts without it.
    let out = Command::new("setpriv")
        .args(["--bounding-set=-net_admin", "--inh-caps=-net_admin"])
        .arg(&binary)
        .args(["--tun", "tlcap0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line, not: {stderr}");
    assert!(stderr.contains("needs CAP_NET_ADMIN"), "{stderr}");
    assert!(
        stderr.contains(&format!("sudo {} --tun tlcap0", binary.display())),
        "{stderr}"
    );
}

/// A run that crashed leaves namespaces whose pid is gone; the next run (or
/// `tunlab clean`) removes them, and never those of a run still going.
#[test]
fn leftovers_of_crashed_runs_are_removed() {
    if !lab_test("leftovers_of_crashed_runs_are_removed", &HOSTS_ONLY) {
        return;
    }
    // Above the kernel's largest pid (4194304), so surely not running.
    let crashed = format!("{}4194305-0-host", netns::PREFIX);
    netns::ip(["netns", "add", &crashed]).unwrap();
    let mut live = Topology::new().unwrap();
    let host = live.host("alive").unwrap();
    let removed = netns::remove_leftovers(false).unwrap();
    assert!(
        !netns::lab_namespaces().unwrap().contains(&crashed),
        "removed only {removed:?}"
    );
    assert!(
        netns::lab_namespaces()
            .unwrap()
            .contains(&host.netns().to_string()),
        "a live run's host was removed"
    );
    drop(live);
    assert!(
        !netns::lab_namespaces()
            .unwrap()
            .contains(&host.netns().to_string())
    );
}

/// A topology is removed even when the code using it panics.
#[test]
fn hosts_are_removed_when_a_lab_panics() {
    if !lab_test("hosts_are_removed_when_a_lab_panics", &HOSTS_ONLY) {
        return;
    }
    let name = std::thread::spawn(|| {
        let mut topology = Topology::new().unwrap();
        let host = topology.host("doomed").unwrap();
        let name = host.netns().to_string();
        assert!(netns::lab_namespaces().unwrap().contains(&name));
        std::panic::panic_any(name);
    })
    .join()
    .unwrap_err();
    let name = name.downcast::<String>().unwrap();
    assert!(
        !netns::lab_namespaces().unwrap().contains(&name),
        "{name} survived the panic"
    );
}

/// Ctrl-C (SIGINT) stops step 01 as cleanly as SIGTERM does in the lab:
/// exit status 0, the counters printed, the device gone.
#[test]
fn step01_stops_cleanly_on_ctrl_c() {
    if !lab_test("step01_stops_cleanly_on_ctrl_c", &NEEDS) {
        return;
    }
    let out = out_dir("ctrl-c");
    let mut report = tunlab::report::Report::new(true);
    let mut lab = lab01::up(&out, &mut report).unwrap();
    let status = lab
        .step
        .stop(
            nix::sys::signal::Signal::SIGINT,
            std::time::Duration::from_secs(5),
        )
        .unwrap();
    assert!(status.success(), "{status}");
    let log = lab.step.log_text();
    assert!(log.contains("got SIGINT, stopping"), "{log}");
    assert!(
        log.lines().any(|l| l.starts_with("tun0: replies 0, dropped ")),
        "{log}"
    );
    assert!(
        lab.host.ip(["link", "show", "dev", "tun0"]).is_err(),
        "tun0 is still there"
    );
    drop(lab);
    std::fs::remove_dir_all(out).unwrap();
}
