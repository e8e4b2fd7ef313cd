//! Long-running programs inside lab hosts: the step binaries and tcpdump,
//! and waiting for what they do.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::Host;
use crate::report::Report;
use crate::topology::RELAY_PORT;

/// How long a step may take to do what a lab waits for (bring its TUN
/// device up, set up its routes).
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a lab waits for a handshake or a first answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// A path as a program argument.
pub fn path_arg(path: &Path) -> anyhow::Result<String> {
    Ok(path.to_str().context("path is not UTF-8")?.to_string())
}

/// A program running in a lab host, its stdout and stderr going to a log
/// file. Dropping it stops it.
pub struct Running {
    what: String,
    child: Option<Child>,
    host: Host,
    log: PathBuf,
}

impl Running {
    /// Starts `program args...` in `host`, its stdout and stderr going to
    /// `log`.
    pub fn start<S: AsRef<OsStr>>(
        host: &Host,
        program: &Path,
        args: &[S],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = host
            .command(program)
            .args(args)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("starting {} in {}", program.display(), host.name()))?;
        let what = program
            .file_name()
            .unwrap_or(program.as_os_str())
            .to_string_lossy()
            .into_owned();
        Ok(Self {
            what,
            child: Some(child),
            host: host.clone(),
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The file its stdout and stderr go to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// What it has written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first line of its log that contains `needle`, without the log's
    /// prefix (up to `] `).
    pub fn log_line(&self, needle: &str) -> Option<String> {
        self.log_text().lines().find(|l| l.contains(needle)).map(|l| {
            let l = l.trim();
            l.find("] ").map_or(l, |at| &l[at + 2..]).to_string()
        })
    }

    /// Polls `ready` until it holds, for up to `timeout`; fails at once,
    /// with the program's log, if the program exits first.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return Ok(());
            }
            if let Err(e) = self.check_alive() {
                bail!("{e:#}; its log {}:\n{}", self.log.display(), self.log_text());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{what} did not happen within {} s; the log {}:\n{}",
                    timeout.as_secs(),
                    self.log.display(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until a line of its log satisfies `line`.
    pub fn wait_for_log(
        &mut self,
        what: &str,
        timeout: Duration,
        line: impl Fn(&str) -> bool,
    ) -> anyhow::Result<()> {
        let log = self.log.clone();
        self.wait_until(what, timeout, || {
            std::fs::read_to_string(&log).is_ok_and(|text| text.lines().any(&line))
        })
    }

    /// Waits until it has brought `tun` up with `address` (`10.0.0.1/24`)
    /// in its host.
    pub fn wait_for_tun(&mut self, tun: &str, address: impl std::fmt::Display) -> anyhow::Result<()> {
        let host = self.host.clone();
        let inet = format!("inet {address}");
        self.wait_until(
            &format!("{tun} in {} up with {address}", host.name()),
            READY_TIMEOUT,
            || {
                let addr = host
                    .ip(["-o", "-4", "addr", "show", "dev", tun])
                    .unwrap_or_default();
                let link = host.ip(["-o", "link", "show", "dev", tun]).unwrap_or_default();
                addr.contains(&inet) && link.contains(",UP")
            },
        )
    }

    /// Waits up to `timeout` for it to exit by itself: its status, or
    /// `None` if it still runs (it is then stopped with SIGTERM).
    pub fn exits_within(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.check_alive().is_err() {
                return Ok(Some(self.stop(Signal::SIGKILL, Duration::from_secs(1))?));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.stop(Signal::SIGTERM, Duration::from_secs(5));
        Ok(None)
    }

    /// Stops it with SIGTERM and records the check `NAME` (such as
    /// `client exits cleanly on SIGTERM`): it passes on exit status 0.
    pub fn stop_checked(
        &mut self,
        report: &mut Report,
        name: impl Into<String>,
    ) -> anyhow::Result<ExitStatus> {
        let status = self.stop(Signal::SIGTERM, Duration::from_secs(5))?;
        report.check(name, status.success(), status.to_string());
        Ok(status)
    }

    /// Fails when the program has already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("{} exited early ({status})", self.what);
        }
        Ok(())
    }

    /// Sends `signal` and waits up to `timeout` for the program to exit; kills
    /// it if it does not.
    pub fn stop(&mut self, signal: Signal, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("{} was already stopped", self.what);
        };
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not exit within {timeout:?} of {signal}; killed it",
                    self.what
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    /// Asks the program to stop with SIGTERM, so it can clean up and print
    /// its counters; kills it if it has not exited within two seconds.
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop(Signal::SIGTERM, Duration::from_secs(2));
        }
    }
}

/// How to run a [`Capture`]: tcpdump's defaults unless set.
#[derive(Debug, Clone, Default)]
pub struct CaptureOptions {
    /// tcpdump's kernel buffer in KiB (`-B`). The default, 2 MiB, holds
    /// about 1400 full-size frames, 0.2 s of a bulk transfer through a lab
    /// tunnel, and a busy machine can keep tcpdump off the CPU longer than
    /// that (it then drops frames, and says so when it stops).
    pub buffer_kib: Option<u32>,
    /// A capture filter in pcap-filter syntax (`tcp port 80 or icmp`).
    pub filter: Option<String>,
    /// Bytes kept of each packet (`-s`): the headers are enough to see
    /// how long each packet was, in its IP length field.
    pub snaplen: Option<u32>,
    /// Save what tcpdump says on stderr next to the capture, in
    /// `FILE.log` (`underlay.pcap.log`).
    pub log: bool,
}

impl CaptureOptions {
    /// For a capture that must keep up with a bulk transfer: a 32 MB
    /// buffer, and tcpdump's words (with its drop count) kept in a log.
    pub fn bulk() -> Self {
        Self {
            buffer_kib: Some(32768),
            filter: None,
            snaplen: None,
            log: true,
        }
    }
}

/// What a finished [`Capture`] left.
#[derive(Debug, Clone)]
pub struct Captured {
    pub path: PathBuf,
    /// How many frames tcpdump says the kernel dropped because its buffer
    /// was full (`N packets dropped by kernel`): they are not in the file.
    pub dropped: u64,
}

/// `tcpdump -U -w FILE` on one interface of a lab host.
pub struct Capture {
    running: Running,
    path: PathBuf,
    log: Option<PathBuf>,
    stderr: mpsc::Receiver<String>,
}

impl Capture {
    /// Starts tcpdump with its defaults and waits until it is really
    /// listening.
    pub fn start(host: &Host, interface: &str, path: &Path) -> anyhow::Result<Self> {
        Self::start_with(host, interface, path, &CaptureOptions::default())
    }

    /// Starts tcpdump as `options` say and waits until it is really
    /// listening.
    pub fn start_with(
        host: &Host,
        interface: &str,
        path: &Path,
        options: &CaptureOptions,
    ) -> anyhow::Result<Self> {
        let path_str = path.to_str().context("capture path is not UTF-8")?;
        // --immediate-mode: hand each packet to tcpdump as it arrives (by
        // default the kernel batches them, and a batch still pending at
        // SIGINT is lost); -U: write each packet to the file at once;
        // -n: no name lookups. Whole packets are the default.
        let mut args: Vec<String> = ["--immediate-mode", "-U", "-n"].map(String::from).into();
        if let Some(kib) = options.buffer_kib {
            args.extend(["-B".to_string(), kib.to_string()]);
        }
        if let Some(bytes) = options.snaplen {
            args.extend(["-s".to_string(), bytes.to_string()]);
        }
        args.extend(["-i", interface, "-w", path_str].map(String::from));
        if let Some(filter) = &options.filter {
            args.push(filter.clone());
        }
        let mut child = host
            .command("tcpdump")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump")?;
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let running = Running {
            what: "tcpdump".into(),
            child: Some(child),
            host: host.clone(),
            log: PathBuf::new(),
        };
        let mut said = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("listening on") => {
                    said.push(line);
                    break;
                }
                Ok(line) => said.push(line),
                Err(_) => bail!(
                    "tcpdump on {interface} in {} did not start listening: {}",
                    host.name(),
                    said.join("; ")
                ),
            }
        }
        let log = options.log.then(|| {
            let mut name = path.as_os_str().to_owned();
            name.push(".log");
            PathBuf::from(name)
        });
        if let Some(log) = &log {
            std::fs::write(log, said.join("\n") + "\n")
                .with_context(|| format!("writing {}", log.display()))?;
        }
        Ok(Self {
            running,
            path: path.to_path_buf(),
            log,
            stderr: rx,
        })
    }

    /// Stops tcpdump with SIGINT, so the file is complete; returns its path
    /// and how many frames the kernel dropped.
    pub fn finish(mut self) -> anyhow::Result<Captured> {
        let status = self.running.stop(Signal::SIGINT, Duration::from_secs(5))?;
        // The rest of what it said: the reader thread ends at tcpdump's
        // end of stderr, which closes the channel.
        let mut said = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(2)) {
            said.push(line);
        }
        if let Some(log) = &self.log {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(log)
                .with_context(|| format!("opening {}", log.display()))?;
            std::io::Write::write_all(&mut file, (said.join("\n") + "\n").as_bytes())?;
        }
        if !status.success() {
            bail!("tcpdump failed ({status}): {}", said.join("; "));
        }
        // "0 packets dropped by kernel"
        let dropped = said
            .iter()
            .find(|l| l.contains("dropped by kernel"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Ok(Captured {
            path: self.path,
            dropped,
        })
    }
}

/// How the two ends of a tunnel between a `server` and a `client` host are
/// run (labs 02 and 04): what their files are called, what is recorded,
/// and whether a bad link stands between them.
#[derive(Debug, Clone, Copy)]
pub struct Session<'a> {
    /// Names this run's files: `server-<tag>.log`, `client-<tag>-tun.pcap`.
    pub tag: &'a str,
    /// Record what each TUN device carries (`--pcap`), and, where the step
    /// has them, its session keys (`--keylog`).
    pub record: bool,
    /// Capture the server's side of the underlay into this file, from
    /// before either end starts (so a handshake is in it).
    pub underlay: Option<&'a Path>,
    /// Put the impairment relay, with this spec (see
    /// [`crate::relay::Impairments`]), in front of the server: the client
    /// talks to it on port 7000.
    pub relay: Option<&'a str>,
    /// Turn off transmit checksum offload on every veth of the topology,
    /// so that a capture of the underlay shows the checksums its packets
    /// really carry (with it on, tshark reports them as bad): for the golden
    /// fixtures. Needs `ethtool`.
    pub offload_off: bool,
}

impl<'a> Session<'a> {
    /// Both ends recording their TUN devices; no capture, no relay.
    pub fn new(tag: &'a str) -> Self {
        Self {
            tag,
            record: true,
            underlay: None,
            relay: None,
            offload_off: false,
        }
    }

    /// Starts the capture of the underlay it asks for, on `dev` of `host`.
    pub fn capture(
        &self,
        host: &Host,
        dev: &str,
        options: &CaptureOptions,
    ) -> anyhow::Result<Option<Capture>> {
        self.underlay
            .map(|path| Capture::start_with(host, dev, path, options))
            .transpose()
    }

    /// Starts the relay it asks for (`tunlab-relay TRANSPORT`, logging to
    /// `relay-<tag>.log` in `out`) in `host`, on port 7000 of `server`'s
    /// address, relaying to `server`. Returns it, and where the client
    /// sends: the relay, or the server itself.
    pub fn start_relay(
        &self,
        host: &Host,
        transport: &str,
        server: SocketAddr,
        out: &Path,
    ) -> anyhow::Result<(Option<Running>, SocketAddr)> {
        let Some(impair) = self.relay else {
            return Ok((None, server));
        };
        let front = SocketAddr::new(server.ip(), RELAY_PORT);
        let relay = crate::env::binary("tunlab", "tunlab-relay")?;
        let args = [
            transport.to_string(),
            "--listen".into(),
            front.to_string(),
            "--upstream".into(),
            server.to_string(),
            "--impair".into(),
            impair.to_string(),
        ];
        let log = out.join(format!("relay-{}.log", self.tag));
        Ok((Some(Running::start(host, &relay, &args, &log)?), front))
    }
}
