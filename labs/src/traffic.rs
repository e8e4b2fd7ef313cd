//! Driving real traffic through a lab and reading what the tools say:
//! ping's summary, a listening port, a file sent with nc, iperf3, checksums
//! of files.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::netns::Host;

/// "3 packets transmitted, 3 received" from ping's summary.
pub fn ping_counts(stdout: &str) -> Option<(u32, u32)> {
    let line = stdout.lines().find(|l| l.contains("packets transmitted"))?;
    let mut numbers = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse().ok());
    Some((numbers.next()?, numbers.next()?))
}

/// Waits until something listens on TCP `port` in `host`.
pub fn wait_for_listener(host: &Host, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let ss = host.run("ss", ["-Htln", &format!("sport = :{port}")])?;
        if !ss.stdout.is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    bail!("nothing listens on port {port} in {}", host.name())
}

/// Waits until something listens on UDP `port` in `host`.
pub fn wait_for_udp_listener(host: &Host, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let ss = host.run("ss", ["-Huln", &format!("sport = :{port}")])?;
        if !ss.stdout.is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    bail!("nothing listens on UDP port {port} in {}", host.name())
}

/// Sends the file `data` from `sender` to `address` in `receiver` with nc
/// on TCP port 5001 (`nc -l -p 5001 > received` there, `nc -N address
/// 5001 < data` here; each gives up after `timeout` seconds). Returns
/// whether it arrived intact (sha256) and how long it took; removes the
/// received copy.
pub fn nc_transfer(
    sender: &Host,
    receiver: &Host,
    address: &str,
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
    wait_for_listener(receiver, 5001)?;
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
pub fn iperf3(server: &Host, client: &Host, address: &str) -> anyhow::Result<(bool, String)> {
    let mut iperf_server = server
        .command("iperf3")
        .args(["-s", "-1", "-B", address])
        .stdout(Stdio::null())
        .spawn()?;
    wait_for_listener(server, 5201)?;
    let family = if address.contains(':') { "-6" } else { "-4" };
    let iperf = client.run("iperf3", [family, "-c", address, "-t", "5", "-f", "m"])?;
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
    fn reads_ping_summary() {
        let out = "--- 10.0.0.2 ping statistics ---\n3 packets transmitted, 2 received, 33.3333% packet loss, time 402ms\n";
        assert_eq!(ping_counts(out), Some((3, 2)));
        assert_eq!(ping_counts("ping: connect: Network is unreachable"), None);
    }
}
