//! Long-running programs inside lab hosts: the step binaries and tcpdump.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::Host;

/// A program running in a lab host. Dropping it kills it.
pub struct Running {
    what: String,
    child: Option<Child>,
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
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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

/// `tcpdump -U -w FILE` on one interface of a lab host.
pub struct Capture {
    running: Running,
    path: PathBuf,
    stderr: mpsc::Receiver<String>,
}

impl Capture {
    /// Starts tcpdump and waits until it is really listening.
    pub fn start(host: &Host, interface: &str, path: &Path) -> anyhow::Result<Self> {
        let path_str = path.to_str().context("capture path is not UTF-8")?;
        // --immediate-mode: hand each packet to tcpdump as it arrives (by
        // default the kernel batches them, and a batch still pending at
        // SIGINT is lost); -U: write each packet to the file at once;
        // -n: no name lookups. Whole packets are the default.
        let mut child = host
            .command("tcpdump")
            .args(["--immediate-mode", "-U", "-n", "-i", interface, "-w", path_str])
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
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("listening on") => break,
                Ok(_) => continue,
                Err(_) => bail!(
                    "tcpdump on {interface} in {} did not start listening",
                    host.name()
                ),
            }
        }
        Ok(Self {
            running,
            path: path.to_path_buf(),
            stderr: rx,
        })
    }

    /// Stops tcpdump with SIGINT, so the file is complete, and returns its
    /// path.
    pub fn finish(mut self) -> anyhow::Result<PathBuf> {
        let status = self.running.stop(Signal::SIGINT, Duration::from_secs(5))?;
        if !status.success() {
            let said: Vec<String> = self.stderr.try_iter().collect();
            bail!("tcpdump failed ({status}): {}", said.join("; "));
        }
        Ok(self.path)
    }
}
