//! The labs, in order: the table `tunlab` works from. Each entry carries
//! what it takes to run its lab, open a shell in it and keep its files;
//! each lab has a folder `labs/NN-name/` with its README and, where it has
//! one, a coding exercise.

use std::any::Any;
use std::path::{Path, PathBuf};

use crate::doctor::Needs;
use crate::env::{self, workspace_root};
use crate::netns::Host;
use crate::report::Report;
use crate::{lab01, lab02, lab03, lab04, lab05, lab06, lab07, lab08};

/// What `tunlab run NN` was asked to do, for any lab.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the lab writes its captures, logs and reports.
    pub out: PathBuf,
    /// Also record the lab's golden fixtures into `pcaps/stepNN/` (each
    /// lab's module says what it records).
    pub fixtures: bool,
    /// Print nothing; only return the report.
    pub quiet: bool,
}

/// A lab whose hosts are up for `tunlab shell`, and the host the shell
/// opens in. Dropping it stops what runs and removes the hosts.
pub struct Shell {
    pub host: Host,
    /// What to try there besides the lab's hint (a pid, a log, another
    /// host), each a short phrase.
    pub notes: Vec<String>,
    _lab: Box<dyn Any>,
}

impl Shell {
    /// `lab` is whatever keeps the hosts up (the lab's `Up`).
    pub fn new(lab: impl Any, host: Host) -> Self {
        Self {
            host,
            notes: Vec::new(),
            _lab: Box::new(lab),
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

/// One lab.
#[derive(Clone, Copy)]
pub struct Lab {
    /// Two digits, the number of the step it belongs to.
    pub number: &'static str,
    /// The folder under `labs/`.
    pub folder: &'static str,
    pub title: &'static str,
    /// The step crate whose binary the lab runs.
    pub package: &'static str,
    /// The file of the coding exercise, in `exercise/` (the stub) and
    /// `solution/`.
    pub exercise: Option<&'static str>,
    /// What it needs from the machine.
    pub needs: &'static Needs,
    /// Runs it and returns its checks.
    pub run: fn(&Options) -> anyhow::Result<Report>,
    /// Brings its hosts up for `tunlab shell`, files in the given folder.
    pub shell: fn(&Path, &mut Report) -> anyhow::Result<Shell>,
    /// What to try in the shell.
    pub hint: &'static str,
    /// Its folder under `target/tunlab/`.
    pub out: &'static str,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("number", &self.number)
            .field("folder", &self.folder)
            .finish_non_exhaustive()
    }
}

pub const LABS: &[Lab] = &[
    Lab {
        number: "01",
        folder: "01-ping-tun",
        title: "a TUN device whose program answers ping",
        package: lab01::PACKAGE,
        exercise: Some("checksum.rs"),
        needs: &lab01::NEEDS,
        run: lab01::run,
        shell: lab01::shell,
        hint: "ip addr; ip route; ping -c 3 10.0.0.2; tcpdump -n -i tun0",
        out: "lab01",
    },
    Lab {
        number: "02",
        folder: "02-plain-tunnel",
        title: "a plaintext tunnel between two hosts, over UDP and over TCP",
        package: lab02::PACKAGE,
        exercise: Some("frames.rs"),
        needs: &lab02::NEEDS,
        run: lab02::run,
        shell: lab02::shell,
        hint: "ping -c 3 10.0.0.1; tcpdump -n -X -i veth0 udp port 51820",
        out: "lab02",
    },
    Lab {
        number: "03",
        folder: "03-ipv6",
        title: "IPv6 inside and outside the tunnel, MSS clamping and path MTU",
        package: lab03::PACKAGE,
        exercise: Some("clamp.rs"),
        needs: &lab03::NEEDS,
        run: lab03::run,
        shell: lab03::shell,
        hint: "ping -6 -c 3 fd00::1; ip -6 route; tcpdump -n -i tun0",
        out: "lab03",
    },
    Lab {
        number: "04",
        folder: "04-crypto",
        title: "an encrypted, authenticated tunnel: handshake, keys, replay window, roaming",
        package: lab04::PACKAGE,
        exercise: Some("replay.rs"),
        needs: &lab04::NEEDS,
        run: lab04::run,
        shell: lab04::shell,
        hint: "ping -c 3 10.0.0.1; tcpdump -n -X -i veth0 udp port 51820",
        out: "lab04",
    },
    Lab {
        number: "05",
        folder: "05-full-tunnel",
        title: "a full tunnel: every packet through it, NAT on the server, host state always put back",
        package: lab05::PACKAGE,
        exercise: Some("plan.rs"),
        needs: &lab05::NEEDS,
        run: lab05::run,
        shell: lab05::shell,
        hint: "ip route; nft list ruleset; cat /etc/resolv.conf; curl http://198.51.100.2/; \
               curl -o /dev/null http://198.51.100.2/bytes/10000000; getent ahosts www.example.test",
        out: "lab05",
    },
    Lab {
        number: "06",
        folder: "06-localhost",
        title: "publish a service that listens only on the client's 127.0.0.1, at layer 4 and at layer 3",
        package: lab06::PACKAGE,
        exercise: Some("credit.rs"),
        needs: &lab06::NEEDS,
        run: lab06::run,
        shell: lab06::shell,
        hint: "curl http://198.51.100.1:8080/ (layer 4); curl http://198.51.100.1:18080/ (layer 3); \
               ping -c 1 198.51.100.1; ip route",
        out: "lab06",
    },
    Lab {
        number: "07",
        folder: "07-wireguard",
        title: "WireGuard itself: step 07 against wireguard-go and boringtun, configured by wg",
        package: lab07::PACKAGE,
        exercise: Some("timestamp.rs"),
        needs: &lab07::NEEDS,
        run: lab07::run,
        shell: lab07::shell,
        hint: "wg show; ping -c 3 10.0.0.2; tcpdump -n -i veth0 udp; wg showconf IFNAME",
        out: "lab07",
    },
    Lab {
        number: "08",
        folder: "08-fast-path",
        title: "the fast path: step 07 with batched system calls, offloads and a worker per CPU",
        package: lab08::PACKAGE,
        exercise: None,
        needs: &lab08::NEEDS,
        run: lab08::run,
        shell: lab08::shell,
        hint: "wg show; iperf3 -s & ; tcpdump -n -i IFNAME greater 1500; kill -USR1 PID (the counters)",
        out: "lab08",
    },
];

impl Lab {
    /// The lab numbered `n` (`1`, `01` and `01-ping-tun` all name lab 01).
    pub fn find(n: &str) -> Option<&'static Lab> {
        let number = n.split('-').next().unwrap_or(n);
        let number = format!("{:0>2}", number);
        LABS.iter().find(|l| l.number == number)
    }

    /// Its folder in the checkout, `labs/NN-name/`.
    pub fn dir(&self) -> PathBuf {
        workspace_root().join("labs").join(self.folder)
    }

    /// Where it keeps its files unless told otherwise:
    /// `target/tunlab/labNN`.
    pub fn default_out(&self) -> PathBuf {
        env::out_dir(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lab_is_found_by_its_number_and_folder() {
        for lab in LABS {
            assert_eq!(Lab::find(lab.number).map(|l| l.number), Some(lab.number));
            assert_eq!(Lab::find(lab.folder).map(|l| l.number), Some(lab.number));
            assert!(lab.dir().join("README.md").is_file(), "{}", lab.folder);
            assert!(lab.default_out().ends_with(lab.out));
        }
        assert_eq!(Lab::find("1").map(|l| l.number), Some("01"));
        assert!(Lab::find("99").is_none());
    }

    /// The hints are text for the student, but their addresses are the
    /// topology's: they must not drift from it.
    #[test]
    fn the_hints_name_only_the_labs_addresses() {
        use crate::topology::{internet, tunnel, underlay};
        use std::net::IpAddr;
        let known: Vec<IpAddr> = vec![
            tunnel::SERVER.into(),
            tunnel::CLIENT.into(),
            tunnel::SERVER6.into(),
            underlay::SERVER.into(),
            internet::SERVER.into(),
            internet::HOST.into(),
        ];
        for lab in LABS {
            let words = lab
                .hint
                .split(|c: char| c.is_whitespace() || c == ';' || c == '/');
            for word in words {
                let word = word.trim_start_matches("http:").trim_matches(':');
                let address = word
                    .split_once(':')
                    .filter(|_| word.contains('.'))
                    .map_or(word, |(a, _)| a);
                if let Ok(ip) = address.parse::<IpAddr>() {
                    assert!(known.contains(&ip), "lab {}: {ip} in its hint", lab.number);
                }
            }
        }
    }
}
