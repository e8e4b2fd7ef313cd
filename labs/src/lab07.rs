//! Lab 07: WireGuard itself, against wireguard-go and boringtun.
//!
//! Step 07 under every check of [`crate::wgpeers`]: both implementations
//! in both roles, a wrong pre-shared key, `up` and `down`, the flood of
//! initiations, and the capture decrypted with a key log.

use std::path::Path;

use crate::doctor::{Kernel, Needs};
use crate::env;
use crate::labs::{Options, Shell};
use crate::report::Report;
use crate::traffic::write_random;
use crate::wgpeers::{self, Peer, TRANSFER_BYTES, Tunnel};

pub const PACKAGE: &str = "step07-wireguard";
pub const NEEDS: Needs = Needs {
    tools: &[
        "ip",
        "ss",
        "ping",
        "tcpdump",
        "nc",
        "iperf3",
        "python3",
        "sha256sum",
        "wg",
        "wireguard-go",
        "boringtun-cli",
    ],
    kernel: &[Kernel::Tun, Kernel::Netns, Kernel::Veth],
    binaries: &[(PACKAGE, PACKAGE)],
};

/// Step 07, as the checks name it and start it.
fn tunnel() -> anyhow::Result<Tunnel> {
    Ok(Tunnel {
        name: "step 07",
        tag: "step07",
        binary: env::step_binary(PACKAGE)?,
        args: Vec::new(),
        prefix: "s7",
    })
}

pub fn shell(out: &Path, report: &mut Report) -> anyhow::Result<Shell> {
    wgpeers::shell(out, report, tunnel()?)
}

/// Runs lab 07.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new(options.quiet);
    let lab = wgpeers::up(&options.out, &mut report, tunnel()?)?;
    let data = options.out.join("random-20MB.bin");
    write_random(&data, TRANSFER_BYTES)?;
    wgpeers::interop_all(&lab, &data, &mut report)?;
    wgpeers::wrong_psk(&lab, &mut report)?;
    wgpeers::up_and_down(&lab, &mut report)?;
    for peer in Peer::ALL {
        wgpeers::flood(&lab, peer, &mut report)?;
    }
    report.note(format!(
        "captures, key logs and logs are in {}",
        options.out.display()
    ));
    Ok(report)
}
