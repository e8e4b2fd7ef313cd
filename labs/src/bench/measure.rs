//! The measurements of one contestant: iperf3 (TCP and UDP), ping, and the
//! tunnel processes' CPU time and peak memory from `/proc`.
//!
//! Every figure comes from a tool no one here wrote (iperf3, ping) or from
//! the kernel's own accounting, read the same way for every contestant.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::netns::Host;

/// The UDP payload iperf3 sends: small enough for every tunnel's MTU (the
/// smallest, WireGuard's 1420, carries 1392 bytes of UDP payload), so no
/// contestant fragments.
pub const UDP_PAYLOAD: u32 = 1200;

/// The highest rate the UDP search starts at, in bits per second. iperf3
/// sends one datagram per system call, so its UDP tops out far below TCP,
/// whose sender hands the kernel 64 KB at a time: starting from the bare
/// veth's TCP figure would spend every probe on rates iperf3 cannot send.
pub const UDP_FIRST_RATE: f64 = 1e9;

/// The socket buffer iperf3 asks for in UDP runs (`-w`), at both ends. With
/// the default (208 KiB) the receiving iperf3 lost datagrams whenever the
/// scheduler kept it off the CPU for a moment, even on the bare veth and
/// at a third of its rate (28% lost at 300 Mbit/s, 0% with 4 MiB): the loss
/// measured was iperf3's, not the link's.
pub const UDP_SOCKET_BUFFER: &str = "4M";

/// Where and how iperf3 reaches the server end.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: String,
    pub port: u16,
}

/// What one iperf3 run reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Iperf {
    /// Bits per second that arrived at the receiver.
    pub received_bps: f64,
    /// Bytes that arrived at the receiver.
    pub received_bytes: f64,
    /// UDP only: the percentage of datagrams lost.
    pub lost_percent: f64,
}

/// `iperf3 -c` from `client` for `seconds`: TCP with `streams` parallel
/// streams, or UDP at `udp_rate` bits per second. The run is bounded by
/// `timeout` as well as iperf3's own `-t`.
pub fn iperf3(
    client: &Host,
    target: &Target,
    seconds: u32,
    streams: u32,
    udp_rate: Option<f64>,
) -> anyhow::Result<Iperf> {
    let mut args = vec![
        format!("{}", seconds + 15),
        "iperf3".into(),
        "-c".into(),
        target.address.clone(),
        "-p".into(),
        target.port.to_string(),
        "-t".into(),
        seconds.to_string(),
        "-P".into(),
        streams.to_string(),
        "-J".into(),
    ];
    if let Some(rate) = udp_rate {
        args.extend([
            "-u".into(),
            "-b".into(),
            format!("{}", rate.round() as u64),
            "-l".into(),
            UDP_PAYLOAD.to_string(),
            "-w".into(),
            UDP_SOCKET_BUFFER.into(),
        ]);
    }
    let out = client.run("timeout", &args)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "iperf3 printed no JSON ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    if let Some(error) = json.get("error").and_then(Value::as_str) {
        bail!("iperf3: {error}");
    }
    parse_iperf3(&json, udp_rate.is_some())
}

/// Reads the receiver's figures from iperf3's `-J` output.
pub fn parse_iperf3(json: &Value, udp: bool) -> anyhow::Result<Iperf> {
    let end = json.get("end").context("iperf3's JSON has no `end`")?;
    let number = |section: &Value, field: &str| section.get(field).and_then(Value::as_f64);
    if udp {
        // iperf3 3.12's `sum` for UDP holds the sender's rate and the
        // receiver's loss count; the bytes that arrived are what was sent
        // less what was lost.
        let sum = end.get("sum").context("iperf3's UDP JSON has no `end.sum`")?;
        let sent_bps = number(sum, "bits_per_second").context("no bits_per_second")?;
        let sent_bytes = number(sum, "bytes").context("no bytes")?;
        let lost = number(sum, "lost_percent").context("no lost_percent")?;
        let kept = (1.0 - lost / 100.0).clamp(0.0, 1.0);
        Ok(Iperf {
            received_bps: sent_bps * kept,
            received_bytes: sent_bytes * kept,
            lost_percent: lost,
        })
    } else {
        let sum = end
            .get("sum_received")
            .context("iperf3's TCP JSON has no `end.sum_received`")?;
        Ok(Iperf {
            received_bps: number(sum, "bits_per_second").context("no bits_per_second")?,
            received_bytes: number(sum, "bytes").context("no bytes")?,
            lost_percent: 0.0,
        })
    }
}

/// The highest UDP rate with under 1% loss, found with `probes` iperf3 runs
/// of `seconds` each: start at half of `guess` (the TCP figure) but at
/// most [`UDP_FIRST_RATE`], double while the loss stays under 1%, then halve the interval
/// between the best rate that passed and the lowest that failed. Returns
/// the passing run with the most received throughput, or `None` when no
/// rate passed.
pub fn udp_max_rate(
    client: &Host,
    target: &Target,
    seconds: u32,
    probes: u32,
    guess: f64,
) -> anyhow::Result<Option<Iperf>> {
    let mut best: Option<Iperf> = None;
    let (mut passed, mut failed): (f64, Option<f64>) = (0.0, None);
    let mut rate = (guess / 2.0).clamp(10e6, UDP_FIRST_RATE);
    for _ in 0..probes {
        let run = iperf3(client, target, seconds, 1, Some(rate))?;
        if run.lost_percent < 1.0 {
            passed = rate;
            if best.is_none_or(|b| run.received_bps > b.received_bps) {
                best = Some(run);
            }
        } else {
            failed = Some(rate);
        }
        rate = next_udp_rate(passed, failed);
    }
    Ok(best)
}

/// The next rate to try, given the highest that passed (0 when none has)
/// and the lowest that failed, if any.
pub fn next_udp_rate(passed: f64, failed: Option<f64>) -> f64 {
    match failed {
        None => passed * 2.0,
        Some(failed) => (passed + failed) / 2.0,
    }
}

/// Round-trip times in milliseconds, one per reply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rtts(pub Vec<f64>);

impl Rtts {
    pub fn mean(&self) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.iter().sum::<f64>() / self.0.len() as f64)
    }

    /// The 99th percentile (nearest rank).
    pub fn p99(&self) -> Option<f64> {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = (sorted.len() as f64 * 0.99).ceil() as usize;
        sorted.get(rank.saturating_sub(1)).copied()
    }
}

/// `ping -c count -i interval` from `from` to `to`; the time of each reply.
pub fn ping(from: &Host, to: &str, count: u32, interval: Duration) -> anyhow::Result<Rtts> {
    let out = ping_command(from, to, count, interval)
        .output()
        .context("running ping")?;
    Ok(parse_ping(&String::from_utf8_lossy(&out.stdout)))
}

/// The ping command [`ping`] runs, to be started in the background while a
/// load runs.
pub fn ping_command(from: &Host, to: &str, count: u32, interval: Duration) -> Command {
    let mut cmd = from.command("ping");
    cmd.args([
        "-n",
        "-c",
        &count.to_string(),
        "-i",
        &format!("{:.3}", interval.as_secs_f64()),
        "-W",
        "1",
        to,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    cmd
}

/// The `time=0.123 ms` of each reply line in ping's output.
pub fn parse_ping(stdout: &str) -> Rtts {
    Rtts(
        stdout
            .lines()
            .filter_map(|line| {
                line.split_once("time=")?
                    .1
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect(),
    )
}

/// CPU time (user and system, all threads) of a process so far, in
/// seconds, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32, ticks_per_second: f64) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / ticks_per_second)
        .with_context(|| format!("{path} has no utime and stime"))
}

/// utime + stime from the text of `/proc/PID/stat`. The program's name
/// (field 2) is in parentheses and may contain spaces, so the fields are
/// counted from the last `)`: utime and stime are fields 14 and 15.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The peak resident memory of a process, in bytes (`VmHWM` of
/// `/proc/PID/status`).
pub fn peak_rss(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_hwm(&status).with_context(|| format!("{path} has no VmHWM"))
}

/// `VmHWM:    1234 kB` in bytes.
pub fn parse_vm_hwm(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_program_name() {
        // A name with a space and a parenthesis, as a program may choose.
        let stat = "4242 (tun (x) y) S 1 4242 4242 0 -1 4194560 300 0 0 0 \
                    150 75 0 0 20 0 3 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(225));
        assert_eq!(parse_cpu_ticks("4242 (cut short) S 1"), None);
    }

    #[test]
    fn peak_rss_is_read_in_bytes() {
        let status = "Name:\tstep04-crypto\nVmPeak:\t  10000 kB\nVmHWM:\t    3072 kB\nVmRSS:\t 2048 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(3072.0 * 1024.0));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    }

    #[test]
    fn ping_times_are_read_from_reply_lines_only() {
        let out = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\
                   64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.081 ms\n\
                   64 bytes from 10.0.0.2: icmp_seq=2 ttl=64 time=1.50 ms\n\
                   \n--- 10.0.0.2 ping statistics ---\n\
                   3 packets transmitted, 2 received, 33.3333% packet loss, time 2003ms\n\
                   rtt min/avg/max/mdev = 0.081/0.790/1.500/0.709 ms\n";
        let rtts = parse_ping(out);
        assert_eq!(rtts.0, vec![0.081, 1.5]);
        assert_eq!(rtts.mean(), Some(0.7905));
        assert_eq!(rtts.p99(), Some(1.5));
        assert_eq!(Rtts::default().p99(), None);
    }

    #[test]
    fn the_udp_search_doubles_until_a_loss_then_bisects() {
        assert_eq!(next_udp_rate(100.0, None), 200.0);
        assert_eq!(next_udp_rate(100.0, Some(200.0)), 150.0);
        // Nothing has passed yet: halve.
        assert_eq!(next_udp_rate(0.0, Some(80.0)), 40.0);
    }

    #[test]
    fn p99_is_the_nearest_rank() {
        let rtts = Rtts((1..=200).map(f64::from).collect());
        assert_eq!(rtts.p99(), Some(198.0));
    }

    #[test]
    fn iperf3_tcp_figures_are_the_receivers() {
        let json: Value = serde_json::from_str(
            r#"{"end": {"sum_sent": {"bytes": 2000, "bits_per_second": 16000},
                        "sum_received": {"bytes": 1500, "bits_per_second": 12000}}}"#,
        )
        .expect("test JSON");
        let run = parse_iperf3(&json, false).expect("figures");
        assert_eq!(run.received_bps, 12000.0);
        assert_eq!(run.received_bytes, 1500.0);
    }

    #[test]
    fn iperf3_udp_figures_subtract_the_loss() {
        let json: Value = serde_json::from_str(
            r#"{"end": {"sum": {"bytes": 1000, "bits_per_second": 8000, "lost_percent": 25}}}"#,
        )
        .expect("test JSON");
        let run = parse_iperf3(&json, true).expect("figures");
        assert_eq!(run.received_bps, 6000.0);
        assert_eq!(run.received_bytes, 750.0);
        assert_eq!(run.lost_percent, 25.0);
        assert!(parse_iperf3(&serde_json::json!({"start": {}}), true).is_err());
    }
}
