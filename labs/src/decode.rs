//! `tunlab decode`: the packets of pcap files, one tcpdump-like line each,
//! as the steps log them. TUN captures (LINKTYPE_RAW) are IP packets;
//! Ethernet captures are of the underlay, where the tunnel's UDP messages
//! are decoded too, by the step that made them.
//!
//! Which step? A datagram does not say (step 02's and step 04's messages
//! are told apart only by their first bytes, step 04's and WireGuard's
//! only by the lengths of their handshake messages), so each step with messages
//! of its own gives a decoder that claims the payloads it recognises
//! ([`step02_plain_tunnel::underlay::Decoder`]). `--step NN` picks one;
//! without it the decoders are tried in turn, the one with the narrower
//! claim first. Step 06's layer-4 control connection is TCP, which no UDP
//! decoder claims: its segments on the control port are shown with the
//! records they hold by step 06's own
//! [`step06_localhost::underlay::control_summary`].

use std::io::Write;
use std::path::Path;

use anyhow::bail;
use step01_ping_tun::Summary;
use step01_ping_tun::pcap::DataLink;
use step02_plain_tunnel::underlay::Decoder;

/// The underlay decoder of each step whose tunnel sends messages over UDP:
/// steps 03, 05 and 06 (layer 3) send those of the step they build on.
pub const DECODERS: [(&str, Decoder); 6] = [
    ("02", step02_plain_tunnel::underlay::DECODER),
    ("03", step02_plain_tunnel::underlay::DECODER),
    ("04", step04_crypto::underlay::DECODER),
    ("05", step04_crypto::underlay::DECODER),
    ("06", step06_localhost::underlay::DECODER),
    ("07", step07_wireguard::underlay::DECODER),
];

/// The decoders to try, in order: the step's own, or, for no step, step
/// 07's (which claims only payloads of exactly the shape and length of
/// WireGuard's messages), step 04's (which claims payloads shaped like its
/// messages, whatever their length) and then step 02's (which claims any
/// payload on the port).
pub fn decoders(step: Option<&str>) -> anyhow::Result<Vec<Decoder>> {
    let Some(step) = step else {
        return Ok(vec![
            step07_wireguard::underlay::SHAPED,
            step04_crypto::underlay::DECODER,
            step02_plain_tunnel::underlay::DECODER,
        ]);
    };
    let step = format!("{:0>2}", step.trim_start_matches("step"));
    match DECODERS.iter().find(|(s, _)| *s == step) {
        Some((_, decoder)) => Ok(vec![*decoder]),
        None => {
            let known: Vec<&str> = DECODERS.iter().map(|(s, _)| *s).collect();
            bail!(
                "step {step} sends no tunnel messages over UDP; --step takes one of {}",
                known.join(", ")
            )
        }
    }
}

/// One line for a packet of the underlay: the first decoder that claims
/// it, step 06's control connection, or the outer packet alone.
pub fn underlay_line(ip: &[u8], decoders: &[Decoder], port: u16) -> String {
    use step06_localhost::underlay::{CONTROL_PORT, control_summary};
    decoders
        .iter()
        .find_map(|d| d.summary(ip, port))
        .or_else(|| control_summary(ip, CONTROL_PORT))
        .unwrap_or_else(|| Summary(ip).to_string())
}

/// Writes the lines of `file` to `out`: a heading, then one line a packet
/// with its time since the first.
pub fn decode(file: &Path, decoders: &[Decoder], port: u16, out: &mut impl Write) -> anyhow::Result<()> {
    let (link, packets) = step01_ping_tun::pcap::read_any(file)?;
    writeln!(
        out,
        "{}: {} packets (time in seconds since the first)",
        file.display(),
        packets.len()
    )?;
    let start = packets.first().map(|p| p.timestamp).unwrap_or_default();
    for p in packets {
        let t = p.timestamp.saturating_sub(start);
        let line = match link {
            // Ethernet frames on a veth: the underlay.
            DataLink::ETHERNET => match step01_ping_tun::pcap::ip_in_ethernet(&p.data) {
                Some(ip) => underlay_line(ip, decoders, port),
                None => match p.data.get(12..14) {
                    Some([0x08, 0x06]) => format!("ARP, {} bytes", p.data.len()),
                    Some(&[a, b]) => format!("Ethernet type 0x{a:02x}{b:02x}, {} bytes", p.data.len()),
                    _ => format!("[runt Ethernet frame, {} bytes]", p.data.len()),
                },
            },
            _ => Summary(&p.data).to_string(),
        };
        writeln!(out, "{:>4}.{:06} {line}", t.as_secs(), t.subsec_micros())?;
    }
    Ok(())
}
