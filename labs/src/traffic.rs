//! Driving real traffic through a lab and reading what the tools say:
//! ping and its summary, curl, a listening port, a file sent with nc,
//! iperf3, checksums of files.

use std::fmt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::netns::Host;
use crate::report::Report;

/// The bytes of "tunlab", which the labs' pings carry as their payload
/// pattern (`ping -p`): readable on a plaintext underlay, and nowhere on an
/// encrypted one.
pub const PATTERN: &str = "74756e6c6162";

/// "3 packets transmitted, 3 received" from ping's summary.
pub fn ping_counts(stdout: &str) -> Option<(u32, u32)> {
    let line = stdout.lines().find(|l| l.contains("packets transmitted"))?;
    let mut numbers = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse().ok());
    Some((numbers.next()?, numbers.next()?))
}

/// The average and the largest round trip, in ms, from ping's summary
/// ("rtt min/avg/max/mdev = 0.041/0.058/0.102/0.012 ms").
pub fn ping_rtt(stdout: &str) -> Option<(f64, f64)> {
    let line = stdout.lines().find(|l| l.starts_with("rtt "))?;
    let values = line.split('=').nth(1)?.split_whitespace().next()?;
    let mut v = values.split('/').map(|x| x.parse::<f64>().ok());
    let (_, avg, max) = (v.next()??, v.next()??, v.next()??);
    Some((avg, max))
}

/// What one run of ping did.
#[derive(Debug, Clone)]
pub struct Pinged {
    /// Its arguments, as run.
    pub args: Vec<String>,
    /// (sent, received), from its summary.
    pub counts: Option<(u32, u32)>,
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
}

impl Pinged {
    /// Every one of `count` requests was answered.
    pub fn all_answered(&self, count: u32) -> bool {
        self.counts == Some((count, count))
    }

    /// Some were sent, none was answered.
    pub fn none_answered(&self) -> bool {
        matches!(self.counts, Some((sent, 0)) if sent > 0)
    }
}

impl fmt::Display for Pinged {
    /// `3 sent, 3 received`, or that ping printed no summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.counts {
            Some((sent, got)) => write!(f, "{sent} sent, {got} received"),
            None => f.write_str("no summary from ping"),
        }
    }
}

/// `http://ADDRESS/PATH`, with an IPv6 address in brackets.
pub fn url(address: impl fmt::Display, path: &str) -> String {
    let address = address.to_string();
    if address.contains(':') {
        format!("http://[{address}]{path}")
    } else {
        format!("http://{address}{path}")
    }
}

/// Traffic from a lab host.
impl Host {
    /// `ping -n -c COUNT -i 0.2 -W 2 EXTRA... [-6] TO`: `count` requests
    /// 0.2 s apart, each given 2 s for its reply (`-6` when `to` is an
    /// IPv6 address).
    pub fn ping(&self, to: impl fmt::Display, count: u32, extra: &[&str]) -> anyhow::Result<Pinged> {
        let to = to.to_string();
        let mut args: Vec<String> = ["-n", "-c", &count.to_string(), "-i", "0.2", "-W", "2"]
            .map(String::from)
            .into();
        args.extend(extra.iter().map(|a| a.to_string()));
        if to.contains(':') && !extra.contains(&"-6") {
            args.push("-6".into());
        }
        args.push(to);
        self.ping_with(args)
    }

    /// `ping ARGS...`, as given.
    pub fn ping_with(&self, args: Vec<String>) -> anyhow::Result<Pinged> {
        let out = self.run("ping", &args)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(Pinged {
            counts: ping_counts(&stdout),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            success: out.status.success(),
            args,
        })
    }

    /// [`Host::ping`], recorded as the check `name`: it passes when every
    /// request is answered.
    pub fn ping_check(
        &self,
        report: &mut Report,
        name: impl Into<String>,
        to: impl fmt::Display,
        count: u32,
        extra: &[&str],
    ) -> anyhow::Result<Pinged> {
        let pinged = self.ping(to, count, extra)?;
        report.check(name, pinged.all_answered(count), pinged.to_string());
        Ok(pinged)
    }

    /// `curl -sS -g --max-time SECS URL`: the body, trimmed, or curl's
    /// error and exit status.
    pub fn curl(&self, url: &str, max_time: f64) -> anyhow::Result<Result<String, String>> {
        let out = self.run("curl", ["-sS", "-g", "--max-time", &format!("{max_time}"), url])?;
        Ok(if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Err(format!("{said} ({})", out.status))
        })
    }

    /// `curl -sS -g --max-time SECS -o FILE URL`: downloads into `file`.
    pub fn download(&self, url: &str, file: &Path, max_time: u32) -> anyhow::Result<Output> {
        self.run(
            "curl",
            [
                "-sS",
                "-g",
                "--max-time",
                &max_time.to_string(),
                "-o",
                file.to_str().context("path is not UTF-8")?,
                url,
            ],
        )
    }

    /// Whether something listens on `port` now (`tcp` or `udp`).
    pub fn listens(&self, protocol: &str, port: u16) -> bool {
        let flags = if protocol == "udp" { "-Huln" } else { "-Htln" };
        self.run("ss", [flags, &format!("sport = :{port}")])
            .is_ok_and(|o| !o.stdout.is_empty())
    }

    /// Waits up to 5 s until something listens on `port` (`tcp` or `udp`).
    pub fn wait_for_socket(&self, protocol: &str, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.listens(protocol, port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        let what = if protocol == "udp" { "UDP port" } else { "port" };
        bail!("nothing listens on {what} {port} in {}", self.name())
    }

    /// Waits until something listens on TCP `port`.
    pub fn wait_for_listener(&self, port: u16) -> anyhow::Result<()> {
        self.wait_for_socket("tcp", port)
    }

    /// Waits until something listens on UDP `port`.
    pub fn wait_for_udp_listener(&self, port: u16) -> anyhow::Result<()> {
        self.wait_for_socket("udp", port)
    }
}

/// Sends the file `data` from `sender` to `address` in `receiver` with nc
/// on TCP port 5001 (`nc -l -p 5001 > received` there, `nc -N address
/// 5001 < data` here; each gives up after `timeout` seconds). Returns
/// whether it arrived intact (sha256) and how long it took; removes the
/// received copy.
pub fn nc_transfer(
    sender: &Host,
    receiver: &Host,
    address: impl fmt::Display,
    data: &Path,
    received: &Path,
    timeout: u32,
) -> anyhow::Result<(bool, f64)> {
    let mut listener = receiver
        .command("sh")
        .args([
            "-c",
            &format!("exec timeout {timeout} nc -l -p 5001 > '{}'", received.display()),
        ])
        .stdout(Stdio::null())
        .spawn()?;
    receiver.wait_for_listener(5001)?;
    let started = Instant::now();
    let send = sender
        .command("sh")
        .args([
            "-c",
            &format!(
                "exec timeout {timeout} nc -N {address} 5001 < '{}'",
                data.display()
            ),
        ])
        .status()?;
    let done = listener.wait()?;
    let seconds = started.elapsed().as_secs_f64();
    let intact = send.success() && done.success() && sha256(data)? == sha256(received)?;
    let _ = std::fs::remove_file(received);
    Ok((intact, seconds))
}

/// Runs iperf3 for 5 s from `client` to a one-shot server on `server`
/// bound to `address`; returns whether it succeeded and iperf3's receiver
/// line (the throughput).
pub fn iperf3(server: &Host, client: &Host, address: impl fmt::Display) -> anyhow::Result<(bool, String)> {
    let address = address.to_string();
    let mut iperf_server = server
        .command("iperf3")
        .args(["-s", "-1", "-B", &address])
        .stdout(Stdio::null())
        .spawn()?;
    server.wait_for_listener(5201)?;
    let family = if address.contains(':') { "-6" } else { "-4" };
    let iperf = client.run("iperf3", [family, "-c", &address, "-t", "5", "-f", "m"])?;
    let _ = iperf_server.wait();
    let text = String::from_utf8_lossy(&iperf.stdout);
    let receiver = text
        .lines()
        .find(|l| l.contains("receiver"))
        .unwrap_or("")
        .trim()
        .to_string();
    Ok((iperf.status.success(), receiver))
}

/// The sha256 of a file, from `sha256sum`.
pub fn sha256(path: &Path) -> anyhow::Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("running sha256sum")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .map(str::to_string)
        .context("no output from sha256sum")
}

/// Writes `len` bytes from /dev/urandom to `path`.
pub fn write_random(path: &Path, len: usize) -> anyhow::Result<()> {
    use std::io::Read;
    let mut bytes = vec![0u8; len];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_round_trip() {
        let out = "3 packets transmitted, 3 received, 0% packet loss, time 402ms\nrtt min/avg/max/mdev = 0.041/0.058/0.102/0.012 ms\n";
        assert_eq!(ping_rtt(out), Some((0.058, 0.102)));
        assert_eq!(ping_rtt("no summary"), None);
    }

    #[test]
    fn reads_ping_summary() {
        let out = "--- 10.0.0.2 ping statistics ---\n3 packets transmitted, 2 received, 33.3333% packet loss, time 402ms\n";
        assert_eq!(ping_counts(out), Some((3, 2)));
        assert_eq!(ping_counts("ping: connect: Network is unreachable"), None);
    }

    #[test]
    fn urls_put_ipv6_addresses_in_brackets() {
        assert_eq!(url("198.51.100.2", "/"), "http://198.51.100.2/");
        assert_eq!(url("2001:db8:100::2", "/file"), "http://[2001:db8:100::2]/file");
    }
}
