//! The results of a benchmark run and their four forms: a table for the
//! terminal, JSON for machines, and a markdown table and an SVG chart for
//! the book.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::builds::Build;

/// One figure measured for every contestant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    Tcp1,
    Tcp4,
    Udp,
    RttIdleMean,
    RttIdleP99,
    RttLoadMean,
    RttLoadP99,
    CpuPerGb,
    PeakRss,
    /// From step 08's counters: system calls per 100 packets (both ends).
    SyscallsPer100,
    /// From step 08's counters: packets moved per wake-up (both ends).
    PacketsPerWakeup,
}

impl Figure {
    /// The figures of the main table, in its order.
    pub const ALL: [Figure; 9] = [
        Figure::Tcp1,
        Figure::Tcp4,
        Figure::Udp,
        Figure::RttIdleMean,
        Figure::RttIdleP99,
        Figure::RttLoadMean,
        Figure::RttLoadP99,
        Figure::CpuPerGb,
        Figure::PeakRss,
    ];

    /// The figures of the ablation's table: the main ones a step's
    /// techniques change, and what step 08's counters say.
    pub const ABLATION: [Figure; 8] = [
        Figure::Tcp1,
        Figure::Tcp4,
        Figure::Udp,
        Figure::RttIdleMean,
        Figure::RttLoadMean,
        Figure::CpuPerGb,
        Figure::SyscallsPer100,
        Figure::PacketsPerWakeup,
    ];

    /// Every figure a round may measure.
    pub const EVERY: [Figure; 11] = [
        Figure::Tcp1,
        Figure::Tcp4,
        Figure::Udp,
        Figure::RttIdleMean,
        Figure::RttIdleP99,
        Figure::RttLoadMean,
        Figure::RttLoadP99,
        Figure::CpuPerGb,
        Figure::PeakRss,
        Figure::SyscallsPer100,
        Figure::PacketsPerWakeup,
    ];

    /// The key in the JSON output.
    pub fn key(self) -> &'static str {
        match self {
            Figure::Tcp1 => "tcp_1_stream_gbit_s",
            Figure::Tcp4 => "tcp_4_streams_gbit_s",
            Figure::Udp => "udp_under_1pc_loss_gbit_s",
            Figure::RttIdleMean => "rtt_idle_mean_ms",
            Figure::RttIdleP99 => "rtt_idle_p99_ms",
            Figure::RttLoadMean => "rtt_loaded_mean_ms",
            Figure::RttLoadP99 => "rtt_loaded_p99_ms",
            Figure::CpuPerGb => "cpu_s_per_gb",
            Figure::PeakRss => "peak_rss_mib",
            Figure::SyscallsPer100 => "syscalls_per_100_packets",
            Figure::PacketsPerWakeup => "packets_per_wakeup",
        }
    }

    /// The column heading of the tables.
    pub fn heading(self) -> &'static str {
        match self {
            Figure::Tcp1 => "TCP 1 stream Gbit/s",
            Figure::Tcp4 => "TCP 4 streams Gbit/s",
            Figure::Udp => "UDP <1% loss Gbit/s",
            Figure::RttIdleMean => "RTT idle ms",
            Figure::RttIdleP99 => "RTT idle p99",
            Figure::RttLoadMean => "RTT loaded ms",
            Figure::RttLoadP99 => "RTT loaded p99",
            Figure::CpuPerGb => "CPU s/GB",
            Figure::PeakRss => "peak RSS MiB",
            Figure::SyscallsPer100 => "syscalls per 100 packets",
            Figure::PacketsPerWakeup => "packets per wake-up",
        }
    }

    /// Digits after the point.
    fn precision(self) -> usize {
        match self {
            Figure::Tcp1 | Figure::Tcp4 | Figure::Udp => 2,
            Figure::RttIdleMean | Figure::RttIdleP99 | Figure::RttLoadMean | Figure::RttLoadP99 => 3,
            Figure::CpuPerGb => 2,
            Figure::PeakRss | Figure::SyscallsPer100 | Figure::PacketsPerWakeup => 1,
        }
    }
}

/// The values of one figure over the rounds, and their summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series(pub Vec<f64>);

impl Series {
    /// The median (the mean of the middle two for an even count).
    pub fn median(&self) -> Option<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(v[n / 2]),
            _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }

    pub fn min(&self) -> Option<f64> {
        self.0.iter().copied().min_by(f64::total_cmp)
    }

    pub fn max(&self) -> Option<f64> {
        self.0.iter().copied().max_by(f64::total_cmp)
    }
}

/// What became of one contestant.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Measured: one series per figure (empty where the figure does not
    /// apply, such as the CPU time of the bare veth, which has no tunnel
    /// process). `failures` lists rounds that failed, with why.
    Measured {
        series: Vec<(Figure, Series)>,
        failures: Vec<String>,
    },
    /// Not measured: not installed, with the command that installs it.
    Missing(String),
}

/// One row of the results.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub description: String,
    /// How its program was built.
    pub build: Build,
    pub outcome: Outcome,
}

impl Row {
    pub fn series(&self, figure: Figure) -> Option<&Series> {
        match &self.outcome {
            Outcome::Measured { series, .. } => series.iter().find(|(f, _)| *f == figure).map(|(_, s)| s),
            Outcome::Missing(_) => None,
        }
    }

    fn cell(&self, figure: Figure, with_range: bool) -> String {
        let Some(series) = self.series(figure) else {
            return "-".into();
        };
        let p = figure.precision();
        match (series.median(), series.min(), series.max()) {
            (Some(med), Some(lo), Some(hi)) if with_range && series.0.len() > 1 => {
                format!("{med:.p$} ({lo:.p$}–{hi:.p$})")
            }
            (Some(med), ..) => format!("{med:.p$}"),
            _ => "-".into(),
        }
    }
}

/// The machine the benchmark ran on.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    /// The cargo profile the step binaries were built with.
    pub profile: String,
    /// Versions of the tools and of the other implementations.
    pub versions: Vec<(String, String)>,
}

impl Machine {
    /// One line: `2 CPUs (AMD EPYC ...), Linux 6.1.0, release build`.
    pub fn line(&self) -> String {
        format!(
            "{} CPUs ({}), Linux {}, step binaries built with the {} profile",
            self.cpus, self.cpu_model, self.kernel, self.profile
        )
    }
}

/// How the benchmark measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub rounds: u32,
    pub seconds: u32,
    pub udp_probes: u32,
    pub udp_payload: u32,
}

/// Everything a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    /// When the run started, in UTC (`2026-11-23 18:00`).
    pub date: String,
    pub rows: Vec<Row>,
    /// The figures the tables show, in order: [`Figure::ALL`], or
    /// [`Figure::ABLATION`].
    pub table: Vec<Figure>,
}

impl Results {
    /// The table for the terminal: medians, then the notes.
    pub fn terminal(&self) -> String {
        let mut headings = vec!["contestant".to_string()];
        headings.extend(self.table.iter().map(|f| f.heading().to_string()));
        let mut lines = vec![headings];
        for row in &self.rows {
            let mut cells = vec![row.name.clone()];
            match &row.outcome {
                Outcome::Measured { .. } => cells.extend(self.table.iter().map(|&f| row.cell(f, false))),
                Outcome::Missing(why) => cells.push(format!("not measured: {why}")),
            }
            lines.push(cells);
        }
        let columns = self.table.len() + 1;
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                lines
                    .iter()
                    // A note spans the rest of its line: it sets no width.
                    .filter(|l| l.len() == columns)
                    .filter_map(|l| l.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let _ = writeln!(out, "{} — {}", self.date, self.machine.line());
        let _ = writeln!(
            out,
            "medians of {} round(s); {} s per iperf3 run; min and max in the JSON and markdown",
            self.settings.rounds, self.settings.seconds
        );
        for line in &lines {
            let cells: Vec<String> = line
                .iter()
                .enumerate()
                .map(|(c, s)| match c {
                    0 => format!("{s:<w$}", w = widths[0]),
                    _ if line.len() < columns => s.clone(),
                    _ => format!("{s:>w$}", w = widths[c]),
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        }
        out.push_str(&self.failures());
        out
    }

    fn failures(&self) -> String {
        let mut out = String::new();
        for row in &self.rows {
            if let Outcome::Measured { failures, .. } = &row.outcome {
                for failure in failures {
                    let _ = writeln!(out, "{}: {failure}", row.name);
                }
            }
        }
        out
    }

    /// The markdown table the book includes: median (min–max) per cell.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Measured {} on {}. Each cell is the median of {} round(s), with the lowest and highest in brackets; {} s per iperf3 run, UDP payloads of {} bytes.\n",
            self.date,
            self.machine.line(),
            self.settings.rounds,
            self.settings.seconds,
            self.settings.udp_payload,
        );
        let _ = write!(out, "| contestant |");
        for f in &self.table {
            let _ = write!(out, " {} |", f.heading());
        }
        let _ = write!(out, "\n|---|");
        for _ in &self.table {
            let _ = write!(out, "---:|");
        }
        out.push('\n');
        for row in &self.rows {
            let _ = write!(out, "| {} |", row.name);
            match &row.outcome {
                Outcome::Measured { .. } => {
                    for f in &self.table {
                        let _ = write!(out, " {} |", row.cell(*f, true));
                    }
                }
                Outcome::Missing(why) => {
                    let _ = write!(out, " not measured: {why} |");
                    for _ in 1..self.table.len() {
                        out.push_str(" |");
                    }
                }
            }
            out.push('\n');
        }
        let failures = self.failures();
        if !failures.is_empty() {
            let _ = write!(out, "\nRounds that failed:\n\n");
            for line in failures.lines() {
                let _ = writeln!(out, "- {line}");
            }
        }
        let _ = write!(out, "\nContestants:\n\n");
        for row in &self.rows {
            let _ = writeln!(out, "- **{}**: {}", row.name, row.description);
        }
        let _ = write!(out, "\nBuilds:\n\n");
        for row in &self.rows {
            let _ = writeln!(out, "- **{}**: {}", row.name, row.build.line());
        }
        let _ = write!(out, "\nVersions: ");
        let versions: Vec<String> = self
            .machine
            .versions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "{}.", versions.join(", "));
        out
    }

    /// Everything, every round's value included.
    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let build = &row.build;
                let mut value = json!({
                    "name": row.name,
                    "description": row.description,
                    "build": {
                        "version": build.version,
                        "compiler": build.compiler,
                        "target_cpu": build.target_cpu,
                        "profile": build.profile,
                    },
                });
                match &row.outcome {
                    Outcome::Missing(why) => value["missing"] = json!(why),
                    Outcome::Measured { failures, .. } => {
                        let mut figures = serde_json::Map::new();
                        for f in Figure::EVERY {
                            let Some(s) = row.series(f).filter(|s| !s.0.is_empty()) else {
                                continue;
                            };
                            figures.insert(
                                f.key().into(),
                                json!({"median": s.median(), "min": s.min(), "max": s.max(), "runs": s.0}),
                            );
                        }
                        value["figures"] = Value::Object(figures);
                        value["failures"] = json!(failures);
                    }
                }
                value
            })
            .collect();
        let versions: serde_json::Map<String, Value> = self
            .machine
            .versions
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({
            "date": self.date,
            "machine": {
                "cpus": self.machine.cpus,
                "cpu_model": self.machine.cpu_model,
                "kernel": self.machine.kernel,
                "profile": self.machine.profile,
                "versions": versions,
            },
            "settings": {
                "rounds": self.settings.rounds,
                "seconds_per_run": self.settings.seconds,
                "udp_probes": self.settings.udp_probes,
                "udp_payload_bytes": self.settings.udp_payload,
            },
            "contestants": rows,
        })
    }

    /// A horizontal bar chart of TCP throughput (1 and 4 streams): the
    /// median as a bar, min to max as a whisker. The axis ends a little
    /// beyond the fastest tunnel; a contestant beyond it (the bare veth)
    /// gets a broken bar with its value written on it.
    pub fn svg(&self) -> String {
        let figures = [(Figure::Tcp1, "#3b6ea5"), (Figure::Tcp4, "#e08a2c")];
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| {
                figures
                    .iter()
                    .any(|(f, _)| r.series(*f).and_then(Series::median).is_some())
            })
            .collect();
        let tunnel_max = rows
            .iter()
            .filter(|r| r.name != "veth")
            .flat_map(|r| {
                figures
                    .iter()
                    .filter_map(|(f, _)| r.series(*f).and_then(Series::max))
            })
            .fold(0.0_f64, f64::max);
        let axis_max = nice_ceiling(if tunnel_max > 0.0 { tunnel_max * 1.1 } else { 1.0 });
        let (left, top, width, bar, gap) = (130.0, 50.0, 560.0, 12.0, 10.0);
        let group = bar * figures.len() as f64 + gap;
        let height = top + group * rows.len() as f64 + 50.0;
        let x = |v: f64| left + width * (v / axis_max).min(1.0);
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" font-family="sans-serif" font-size="12">"#,
            w = left + width + 40.0
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{left}" y="18" font-size="14" font-weight="bold">TCP throughput through each tunnel, Gbit/s (median; whiskers: min–max)</text>"#
        );
        let _ = writeln!(
            svg,
            r#"<text x="{left}" y="36" fill="dimgray">{}</text>"#,
            escape(&self.machine.line())
        );
        // Grid and axis labels.
        let steps = 5;
        for i in 0..=steps {
            let v = axis_max * f64::from(i) / f64::from(steps);
            let gx = x(v);
            let bottom = height - 40.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{bottom}" stroke="gainsboro"/>"#
            );
            let _ = writeln!(
                svg,
                r#"<text x="{gx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                bottom + 15.0,
                trim_number(v)
            );
        }
        for (i, row) in rows.iter().enumerate() {
            let gy = top + group * i as f64;
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                left - 8.0,
                gy + bar + 4.0,
                escape(&row.name)
            );
            for (j, (figure, colour)) in figures.iter().enumerate() {
                let Some(series) = row.series(*figure) else {
                    continue;
                };
                let Some(median) = series.median() else { continue };
                let y = gy + bar * j as f64;
                let _ = writeln!(
                    svg,
                    r#"<rect x="{left}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{} {}: {median:.2} Gbit/s</title></rect>"#,
                    x(median) - left,
                    bar - 1.0,
                    escape(&row.name),
                    figure.heading()
                );
                if median > axis_max {
                    // Broken bar: two white slashes and the value.
                    let bx = left + width - 30.0;
                    let _ = writeln!(
                        svg,
                        r#"<path d="M{bx:.1} {:.1} l6 {:.1} M{:.1} {:.1} l6 {:.1}" stroke="white" stroke-width="3"/>"#,
                        y + bar,
                        -bar,
                        bx + 6.0,
                        y + bar,
                        -bar
                    );
                    let _ = writeln!(
                        svg,
                        r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="white" font-size="10">{median:.1}</text>"#,
                        bx - 4.0,
                        y + bar - 2.5
                    );
                } else if let (Some(lo), Some(hi)) = (series.min(), series.max()) {
                    let wy = y + (bar - 1.0) / 2.0;
                    let _ = writeln!(
                        svg,
                        r#"<line x1="{:.1}" y1="{wy:.1}" x2="{:.1}" y2="{wy:.1}" stroke="black"/>"#,
                        x(lo),
                        x(hi)
                    );
                }
            }
        }
        // Legend.
        let ly = height - 12.0;
        for (j, (figure, colour)) in figures.iter().enumerate() {
            let lx = left + 200.0 * j as f64;
            let _ = writeln!(
                svg,
                r#"<rect x="{lx}" y="{:.1}" width="12" height="10" fill="{colour}"/>"#,
                ly - 9.0
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{ly}">{}</text>"#,
                lx + 16.0,
                figure.heading()
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&n| n >= v)
        .unwrap_or(10.0 * magnitude)
}

/// `2`, `0.5`, `2.5`: a number without trailing zeros.
fn trim_number(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(Series(vec![3.0, 1.0, 2.0]).median(), Some(2.0));
        assert_eq!(Series(vec![4.0, 1.0, 2.0, 3.0]).median(), Some(2.5));
        assert_eq!(Series(vec![]).median(), None);
        assert_eq!(Series(vec![4.0, 1.0, 9.0]).min(), Some(1.0));
        assert_eq!(Series(vec![4.0, 1.0, 9.0]).max(), Some(9.0));
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(1.8), 2.0);
        assert_eq!(nice_ceiling(2.2), 2.5);
        assert_eq!(nice_ceiling(0.31), 0.5);
        assert_eq!(nice_ceiling(7.0), 10.0);
    }

    fn sample() -> Results {
        let measured = |tcp1: Vec<f64>| Outcome::Measured {
            series: vec![
                (Figure::Tcp1, Series(tcp1)),
                (Figure::Tcp4, Series(vec![2.0, 2.2, 2.1])),
                (Figure::CpuPerGb, Series(vec![])),
            ],
            failures: vec![],
        };
        Results {
            machine: Machine {
                cpus: 2,
                cpu_model: "Test CPU <x>".into(),
                kernel: "6.1.0".into(),
                profile: "release".into(),
                versions: vec![("iperf3".into(), "3.12".into())],
            },
            settings: Settings {
                rounds: 3,
                seconds: 4,
                udp_probes: 5,
                udp_payload: 1200,
            },
            date: "2026-11-23 18:00 UTC".into(),
            rows: vec![
                Row {
                    name: "veth".into(),
                    description: "the bare link".into(),
                    build: Build {
                        version: Some("Linux 6.1.0".into()),
                        ..Build::default()
                    },
                    outcome: measured(vec![19.0, 18.0, 20.0]),
                },
                Row {
                    name: "step02".into(),
                    description: "plaintext".into(),
                    build: Build {
                        version: Some("0.1.0".into()),
                        compiler: Some("rustc 1.95.0 (59807616e 2026-04-14)".into()),
                        target_cpu: Some("native (znver4)".into()),
                        profile: Some("release".into()),
                    },
                    outcome: measured(vec![1.7, 1.8, 1.9]),
                },
                Row {
                    name: "boringtun".into(),
                    description: "boringtun-cli".into(),
                    build: Build::default(),
                    outcome: Outcome::Missing("cargo install --locked boringtun-cli".into()),
                },
            ],
            table: Figure::ALL.to_vec(),
        }
    }

    #[test]
    fn the_tables_show_medians_ranges_and_what_was_not_measured() {
        let results = sample();
        let terminal = results.terminal();
        let step02 = terminal
            .lines()
            .find(|l| l.starts_with("step02"))
            .expect("a step02 line");
        assert!(step02.contains("1.80"), "{step02}");
        let boringtun = terminal
            .lines()
            .find(|l| l.starts_with("boringtun"))
            .expect("a boringtun line");
        assert!(
            boringtun.ends_with("  not measured: cargo install --locked boringtun-cli"),
            "{boringtun}"
        );
        let markdown = results.markdown();
        assert!(
            markdown.contains("| step02 | 1.80 (1.70–1.90) | 2.10 (2.00–2.20) |"),
            "{markdown}"
        );
        let header = markdown
            .lines()
            .find(|l| l.starts_with("| contestant"))
            .expect("header");
        let columns = header.matches('|').count();
        for line in markdown.lines().filter(|l| l.starts_with('|')) {
            assert_eq!(line.matches('|').count(), columns, "{line}");
        }
    }

    #[test]
    fn json_keeps_every_round() {
        let json = sample().json();
        let step02 = &json["contestants"][1];
        assert_eq!(
            step02["figures"]["tcp_1_stream_gbit_s"]["runs"],
            json!([1.7, 1.8, 1.9])
        );
        assert_eq!(step02["figures"]["tcp_1_stream_gbit_s"]["median"], json!(1.8));
        assert!(step02["figures"].get("cpu_s_per_gb").is_none());
        assert_eq!(
            json["contestants"][2]["missing"],
            json!("cargo install --locked boringtun-cli")
        );
        assert_eq!(json["machine"]["cpus"], json!(2));
        // Every contestant says how it was built; what is not known is null.
        assert_eq!(
            step02["build"],
            json!({
                "version": "0.1.0",
                "compiler": "rustc 1.95.0 (59807616e 2026-04-14)",
                "target_cpu": "native (znver4)",
                "profile": "release",
            })
        );
        assert_eq!(json["contestants"][0]["build"]["compiler"], Value::Null);
        let markdown = sample().markdown();
        assert!(
            markdown.contains(
                "- **step02**: version 0.1.0, built by rustc 1.95.0 (59807616e 2026-04-14), \
                 target CPU native (znver4), release profile\n"
            ),
            "{markdown}"
        );
        assert!(markdown.contains("- **boringtun**: not known\n"), "{markdown}");
    }

    #[test]
    fn the_chart_breaks_the_bar_beyond_the_axis_and_escapes_text() {
        let svg = sample().svg();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Test CPU &lt;x&gt;"));
        // The axis ends at 2.5 (the tunnels' max 2.2, plus 10%): veth's 19
        // Gbit/s is written on its broken bar.
        assert!(svg.contains(">2.5</text>"));
        assert!(svg.contains(">19.0</text>"));
    }
}
