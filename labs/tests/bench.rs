//! The benchmark's machinery, run short: one contestant (step 02), one
//! round, one second per iperf3 run. It checks that `tunlab bench` still
//! builds its topology, drives traffic and writes a well-formed table, JSON
//! and chart; the figures themselves are not judged (speed is measured by
//! the benchmark, never asserted by a test). Needs root; without it the
//! test says SKIPPED (and fails under CI). A second test runs one
//! contestant of step 08's ablation the same way.

use tunlab::bench::{self, NEEDS, Options};

#[test]
fn a_short_bench_run_writes_a_well_formed_table_json_and_chart() {
    if !tunlab::env::lab_test(
        "a_short_bench_run_writes_a_well_formed_table_json_and_chart",
        &NEEDS,
    ) {
        return;
    }
    let out = std::env::temp_dir().join(format!("tunlab-test-{}-bench", std::process::id()));
    let results = bench::run(&Options {
        out: out.clone(),
        rounds: 1,
        seconds: 1,
        udp_probes: 1,
        only: vec!["step02".into()],
        ablation: false,
    })
    .unwrap();

    // The terminal table: a heading line and one row of nine numbers.
    let table = results.terminal();
    println!("{table}");
    let heading = table
        .lines()
        .find(|l| l.starts_with("contestant"))
        .expect("a heading line");
    assert!(heading.contains("TCP 1 stream Gbit/s"), "{heading}");
    let row = table
        .lines()
        .find(|l| l.starts_with("step02"))
        .expect("a step02 row");
    let cells: Vec<&str> = row.split_whitespace().skip(1).collect();
    assert_eq!(cells.len(), 9, "{row}");
    for (cell, figure) in cells.iter().zip(bench::results::Figure::ALL) {
        // The UDP probe may find no rate under 1% loss in one try: "-".
        if *cell == "-" && figure == bench::results::Figure::Udp {
            continue;
        }
        let value: f64 = cell
            .parse()
            .unwrap_or_else(|_| panic!("{figure:?} is {cell:?}, not a number: {row}"));
        assert!(value > 0.0, "{figure:?} is {value}: {row}");
    }

    // The JSON: the machine, and step 02's one round of each figure.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    assert!(json["machine"]["cpus"].as_u64().is_some_and(|n| n >= 1));
    assert!(json["machine"]["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    let step02 = &json["contestants"][0];
    assert_eq!(step02["name"], "step02");
    let tcp = &step02["figures"]["tcp_1_stream_gbit_s"];
    assert_eq!(tcp["runs"].as_array().map(Vec::len), Some(1));
    assert!(tcp["median"].as_f64().is_some_and(|v| v > 0.0), "{tcp}");
    assert_eq!(step02["failures"], serde_json::json!([]));
    // How it was built: what two bench files must share to be compared.
    let build = &step02["build"];
    assert!(
        build["compiler"]
            .as_str()
            .is_some_and(|c| c.starts_with("rustc 1.")),
        "{build}"
    );
    assert!(
        build["target_cpu"].as_str().is_some_and(|c| !c.is_empty()),
        "{build}"
    );
    assert_eq!(build["profile"], json["machine"]["profile"], "{build}");

    // The markdown table: every line has as many cells as the heading.
    let markdown = std::fs::read_to_string(out.join("bench.md")).unwrap();
    let lines: Vec<&str> = markdown.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(lines.len(), 3, "heading, rule and one row:\n{markdown}");
    let columns = lines[0].matches('|').count();
    assert!(
        lines.iter().all(|l| l.matches('|').count() == columns),
        "{markdown}"
    );
    assert!(lines[2].starts_with("| step02 |"), "{markdown}");

    // The chart: an SVG with step 02's bar.
    let svg = std::fs::read_to_string(out.join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains(">step02</text>"), "{svg}");
    let _ = std::fs::remove_dir_all(&out);
}

/// The ablation's machinery, run short with one of its contestants: step
/// 08 is started and configured like the WireGuard peers, its counters are
/// read around the 1-stream TCP run, and the table is the ablation's, with
/// the two columns from the counters.
#[test]
fn a_short_ablation_run_reads_step08s_counters_into_its_table() {
    if !tunlab::env::lab_test(
        "a_short_ablation_run_reads_step08s_counters_into_its_table",
        &NEEDS,
    ) {
        return;
    }
    let out = std::env::temp_dir().join(format!("tunlab-test-{}-ablation", std::process::id()));
    let results = bench::run(&Options {
        out: out.clone(),
        rounds: 1,
        seconds: 1,
        udp_probes: 1,
        only: vec!["step08+mmsg".into()],
        ablation: true,
    })
    .unwrap();
    println!("{}", results.terminal());
    assert_eq!(results.table, bench::results::Figure::ABLATION.to_vec());

    // The JSON: the counters' figures, with plausible values. Without
    // the TUN offload every packet costs a read or a write on the TUN
    // device, so at least one system call per packet.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ablation.json")).unwrap()).unwrap();
    let row = &json["contestants"][0];
    assert_eq!(row["name"], "step08+mmsg", "{json:#}");
    assert_eq!(row["failures"], serde_json::json!([]), "{json:#}");
    let median = |key: &str| row["figures"][key]["median"].as_f64();
    let syscalls = median("syscalls_per_100_packets").unwrap_or_else(|| panic!("{json:#}"));
    assert!(
        syscalls >= 100.0,
        "{syscalls} system calls per 100 packets without the TUN offload"
    );
    let per_wakeup = median("packets_per_wakeup").unwrap_or_else(|| panic!("{json:#}"));
    assert!(per_wakeup >= 1.0, "{per_wakeup} packets per wake-up");
    assert!(median("tcp_1_stream_gbit_s").is_some_and(|v| v > 0.0), "{json:#}");

    // The markdown table: the ablation's columns, one row.
    let markdown = std::fs::read_to_string(out.join("ablation.md")).unwrap();
    let lines: Vec<&str> = markdown.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(lines.len(), 3, "heading, rule and one row:\n{markdown}");
    assert!(lines[0].contains("syscalls per 100 packets"), "{markdown}");
    assert!(lines[0].contains("packets per wake-up"), "{markdown}");
    assert!(lines[2].starts_with("| step08+mmsg |"), "{markdown}");
    assert!(out.join("ablation.svg").exists());
    let _ = std::fs::remove_dir_all(&out);
}
