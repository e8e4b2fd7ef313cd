//! Reading what a lab captured: the IP packets of a capture (on a TUN
//! device or a veth), and whether their checksums verify, by our own code
//! or by tshark.

use std::path::Path;

use anyhow::{Context, bail};
use etherparse::IpSlice;
use step01_ping_tun::pcap::DataLink;

/// What a capture held besides IP packets.
#[derive(Debug, Default)]
pub struct Others {
    /// ARP frames: the link's own.
    pub arp: usize,
    /// A line for every other frame that carries no IP packet, or a broken
    /// one.
    pub odd: Vec<String>,
}

/// Calls `packet(n, bytes, ip)` for each IP packet of a capture, `n`
/// counting frames from 1: the frames of an Ethernet capture (a veth's),
/// or the packets of a TUN capture (LINKTYPE_RAW). Returns the frames that
/// hold none.
pub fn each_ip_packet(
    pcap: &Path,
    mut packet: impl FnMut(usize, &[u8], &IpSlice<'_>),
) -> anyhow::Result<Others> {
    let (link, frames) = step01_ping_tun::pcap::read_any(pcap)?;
    let mut others = Others::default();
    for (n, frame) in frames.iter().enumerate() {
        let n = n + 1;
        let ip = if link == DataLink::ETHERNET {
            step01_ping_tun::pcap::ip_in_ethernet(&frame.data)
        } else {
            Some(&frame.data[..])
        };
        let Some(ip) = ip else {
            if frame.data.get(12..14) == Some(&[0x08, 0x06]) {
                others.arp += 1;
            } else {
                others.odd.push(format!("frame {n}: not IP"));
            }
            continue;
        };
        match IpSlice::from_slice(ip) {
            Ok(slice) => packet(n, ip, &slice),
            Err(_) => others.odd.push(format!("frame {n}: a broken IP packet")),
        }
    }
    Ok(others)
}

/// Whether the transport checksum (TCP, UDP, ICMP, ICMPv6) of an IP
/// packet verifies, by step 03's code.
pub fn checksum_ok(ip: &[u8]) -> bool {
    step03_ipv6::checksum::verify_transport(ip).unwrap_or(false)
}

/// The IP packets of a capture and a line for each whose checksum does not
/// verify ([`checksum_ok`]).
pub fn verify_checksums(pcap: &Path) -> anyhow::Result<(usize, Vec<String>)> {
    let mut total = 0;
    let mut bad = Vec::new();
    each_ip_packet(pcap, |_, ip, _| {
        total += 1;
        if !checksum_ok(ip) {
            bad.push(step01_ping_tun::Summary(ip).to_string());
        }
    })?;
    Ok((total, bad))
}

/// Checks (as `name`) that `pcap` holds IP packets and that the checksum
/// of every one verifies ([`verify_checksums`]): a golden capture recorded
/// with transmit checksum offload on fails.
pub fn checksums_verify(name: &str, pcap: &Path, report: &mut crate::report::Report) -> anyhow::Result<()> {
    let (total, bad) = verify_checksums(pcap)?;
    let detail = if bad.is_empty() {
        format!("{total} packets")
    } else {
        format!("{} of {total} do not, such as: {}", bad.len(), first_few(&bad))
    };
    report.check(name, total > 0 && bad.is_empty(), detail);
    Ok(())
}

/// Lines of tshark's verdict on every checksum it can check in `pcap`: the
/// packets whose checksum is bad. Empty when all are good.
///
/// A checksum is a property of one packet, so TCP's sequence analysis and
/// stream reassembly are turned off: on a capture of 100 MB of iperf3 with
/// retransmissions they can cost tshark minutes. It gets two minutes at
/// most all the same.
pub fn tshark_bad_checksums(pcap: &Path) -> anyhow::Result<Vec<String>> {
    let out = std::process::Command::new("timeout")
        .args(["120", "tshark", "-n", "-r"])
        .arg(pcap)
        .args([
            "-o",
            "tcp.analyze_sequence_numbers:FALSE",
            "-o",
            "tcp.desegment_tcp_streams:FALSE",
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-Y",
            // Linux writes 0xffff where a TCP checksum folds to 0 (the two
            // are the same number in one's complement, and both verify:
            // RFC 1624 §3); Wireshark marks exactly that case with
            // `tcp.checksum.ffff`, "0xffff instead of 0x0000", and calls
            // it bad. It is not, so only that case is let through.
            "ip.checksum.status == \"Bad\" || (tcp.checksum.status == \"Bad\" && !tcp.checksum.ffff) \
             || udp.checksum.status == \"Bad\" || icmp.checksum.status == \"Bad\" \
             || icmpv6.checksum.status == \"Bad\"",
        ])
        .output()
        .context("running tshark")?;
    if out.status.code() == Some(124) {
        bail!("tshark took more than 120 s on {}", pcap.display());
    }
    if !out.status.success() {
        bail!(
            "tshark failed on {}: {}",
            pcap.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// The first few lines of a list, for a check's detail: `a; b; c; and 4
/// more`.
pub fn first_few(lines: &[String]) -> String {
    let mut s = lines.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
    if lines.len() > 3 {
        s.push_str(&format!("; and {} more", lines.len() - 3));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_step05_captures_verify() {
        let pcaps = crate::env::workspace_root().join("pcaps").join("step05");
        for name in ["server-tun.pcap", "internet.pcap"] {
            let (total, bad) = verify_checksums(&pcaps.join(name)).unwrap();
            assert!(total > 0, "{name}");
            assert!(bad.is_empty(), "{name}: {bad:?}");
        }
    }
}
