//! The labs, in order. Each lab has a folder `labs/NN-name/` with its
//! README and, where it has one, a coding exercise.

use std::path::PathBuf;

use crate::env::workspace_root;

/// One lab.
#[derive(Debug, Clone, Copy)]
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
}

pub const LABS: &[Lab] = &[
    Lab {
        number: "01",
        folder: "01-ping-tun",
        title: "a TUN device whose program answers ping",
        package: "step01-ping-tun",
        exercise: Some("checksum.rs"),
    },
    Lab {
        number: "02",
        folder: "02-plain-tunnel",
        title: "a plaintext tunnel between two hosts, over UDP and over TCP",
        package: "step02-plain-tunnel",
        exercise: Some("frames.rs"),
    },
    Lab {
        number: "03",
        folder: "03-ipv6",
        title: "IPv6 inside and outside the tunnel, MSS clamping and path MTU",
        package: "step03-ipv6",
        exercise: None,
    },
    Lab {
        number: "04",
        folder: "04-crypto",
        title: "an encrypted, authenticated tunnel: handshake, keys, replay window, roaming",
        package: "step04-crypto",
        exercise: Some("replay.rs"),
    },
    Lab {
        number: "05",
        folder: "05-full-tunnel",
        title: "a full tunnel: every packet through it, NAT on the server, host state always put back",
        package: "step05-full-tunnel",
        exercise: Some("plan.rs"),
    },
    Lab {
        number: "06",
        folder: "06-localhost",
        title: "publish a service that listens only on the client's 127.0.0.1, at layer 4 and at layer 3",
        package: "step06-localhost",
        exercise: Some("credit.rs"),
    },
];

impl Lab {
    /// The lab numbered `n` (`1`, `01` and `01-ping-tun` all name lab 01).
    pub fn find(n: &str) -> Option<&'static Lab> {
        let number = n.split('-').next().unwrap_or(n);
        let number = format!("{:0>2}", number);
        LABS.iter().find(|l| l.number == number)
    }

    pub fn dir(&self) -> PathBuf {
        workspace_root().join("labs").join(self.folder)
    }
}

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
