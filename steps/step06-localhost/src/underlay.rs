//! Step 06's messages as they are seen on the underlay, for the capture
//! decoder (`tunlab decode`): see [`step02_plain_tunnel::underlay`].
//!
//! The two designs send different things:
//!
//! - layer 3 is step 05's VPN, so its datagrams are step 04's messages:
//!   [`DECODER`] is step 04's, under this step's name;
//! - layer 4 sends records over one TCP connection to the control port
//!   (2-byte length, then that many bytes; see [`crate::secure`]), which a
//!   UDP decoder cannot claim: [`control_summary`] shows the records a TCP
//!   segment to or from the control port holds, by their lengths. One
//!   segment alone does not say which record of the connection it carries,
//!   so an initiation and a sealed frame of the same length look alike:
//!   the line names the lengths of the handshake messages, no more.

use std::fmt;

use step01_ping_tun::Summary;
use step02_plain_tunnel::underlay::Decoder;
use step03_ipv6::transport::locate;
use step04_crypto::wire::{INITIATION_LEN, RESPONSE_LEN};

use crate::secure::{LENGTH_LEN, MAX_RECORD};

/// The control port of the examples, the labs and the shipped captures.
pub const CONTROL_PORT: u16 = 7835;

/// Step 06's decoder of layer 3's datagrams: step 04's messages.
pub const DECODER: Decoder = Decoder {
    step: "06",
    ..step04_crypto::underlay::DECODER
};

/// One tcpdump-like line for `ip_packet` when it is a TCP segment with
/// data to or from the control port `port`: the outer headers, a bar, and
/// the records that start in it. `None` for anything else (a segment
/// without data, another port), which the caller shows as it is.
pub fn control_summary(ip_packet: &[u8], port: u16) -> Option<String> {
    let located = locate(ip_packet).ok()?;
    if located.protocol.0 != 6 {
        return None;
    }
    let segment = ip_packet.get(located.transport(ip_packet).ok()?)?;
    let word = |at: usize| segment.get(at..at + 2).map(|w| u16::from_be_bytes([w[0], w[1]]));
    let (source, destination) = (word(0)?, word(2)?);
    if source != port && destination != port {
        return None;
    }
    let data_offset = usize::from(segment.get(12)? >> 4) * 4;
    let data = segment.get(data_offset..)?;
    if data.is_empty() {
        return None;
    }
    Some(format!("{} | {}", Summary(ip_packet), Records(data)))
}

/// The records in a segment's data, as one phrase.
struct Records<'a>(&'a [u8]);

impl fmt::Display for Records<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = self.0;
        let mut lengths = Vec::new();
        let mut at = 0;
        let mut next = None;
        while let Some(&[a, b]) = data.get(at..at + LENGTH_LEN) {
            let len = usize::from(u16::from_be_bytes([a, b]));
            if len > MAX_RECORD {
                // No record is that long: the segment goes on with a
                // record that started in an earlier one.
                return write!(f, "control: {} bytes, not at the start of a record", data.len());
            }
            if at + LENGTH_LEN + len > data.len() {
                next = Some(len);
                break;
            }
            lengths.push(len);
            at += LENGTH_LEN + len;
        }
        let name = |len: usize| match len {
            INITIATION_LEN => format!("{len} bytes (an initiation's length)"),
            RESPONSE_LEN => format!("{len} bytes (a response's length)"),
            _ => format!("{len} bytes"),
        };
        let names: Vec<String> = lengths.iter().map(|&len| name(len)).collect();
        let rest = data.len() - at;
        match (names.len(), next) {
            (0, Some(len)) => write!(f, "control: the first {rest} bytes of a record of {len} bytes"),
            (0, None) => write!(f, "control: {rest} bytes, part of a length"),
            (1, _) => write!(f, "control: a record of {}", names[0]),
            (_, _) => write!(f, "control: records of {}", names.join(", ")),
        }?;
        if !names.is_empty() && rest > 0 {
            write!(f, ", and {rest} bytes of the next")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 segment from the client (192.0.2.2:40000) to
    /// `dport` on the server, with `data`.
    fn segment(dport: u16, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv4([192, 0, 2, 2], [192, 0, 2, 1], 64)
            .tcp(40000, dport, 1, 64)
            .psh()
            .ack(1)
            .write(&mut out, data)
            .unwrap();
        out
    }

    fn record(len: usize) -> Vec<u8> {
        let mut r = (len as u16).to_be_bytes().to_vec();
        r.resize(LENGTH_LEN + len, 0xaa);
        r
    }

    fn shown(data: &[u8]) -> String {
        let line = control_summary(&segment(CONTROL_PORT, data), CONTROL_PORT).unwrap();
        line.split(" | ").nth(1).unwrap().to_string()
    }

    #[test]
    fn records_are_shown_by_their_lengths() {
        assert_eq!(
            shown(&record(INITIATION_LEN)),
            "control: a record of 132 bytes (an initiation's length)"
        );
        let mut two = record(31);
        two.extend(record(24));
        assert_eq!(shown(&two), "control: records of 31 bytes, 24 bytes");
        let mut cut = record(31);
        cut.extend(&record(100)[..10]);
        assert_eq!(
            shown(&cut),
            "control: a record of 31 bytes, and 10 bytes of the next"
        );
        assert_eq!(
            shown(&record(100)[..10]),
            "control: the first 10 bytes of a record of 100 bytes"
        );
        assert_eq!(
            shown(&[0xff, 0xff, 1, 2]),
            "control: 4 bytes, not at the start of a record"
        );
        assert_eq!(shown(&[0]), "control: 1 bytes, part of a length");
        let line = control_summary(&segment(CONTROL_PORT, &record(RESPONSE_LEN)), CONTROL_PORT).unwrap();
        assert!(
            line.starts_with("IP 192.0.2.2.40000 > 192.0.2.1.7835: "),
            "{line}"
        );
        assert!(
            line.ends_with("| control: a record of 76 bytes (a response's length)"),
            "{line}"
        );
    }

    #[test]
    fn other_ports_segments_without_data_and_non_tcp_are_not_claimed() {
        assert_eq!(control_summary(&segment(8080, &record(31)), CONTROL_PORT), None);
        assert_eq!(control_summary(&segment(CONTROL_PORT, &[]), CONTROL_PORT), None);
        let mut udp = Vec::new();
        etherparse::PacketBuilder::ipv4([192, 0, 2, 2], [192, 0, 2, 1], 64)
            .udp(40000, CONTROL_PORT)
            .write(&mut udp, &record(31))
            .unwrap();
        assert_eq!(control_summary(&udp, CONTROL_PORT), None);
        for junk in [&[][..], &[0x45], &[0x60, 0, 0]] {
            assert_eq!(control_summary(junk, CONTROL_PORT), None);
        }
    }

    #[test]
    fn layer_3_sends_step_04s_messages() {
        assert_eq!(DECODER.step, "06");
        let mut datagram = Vec::new();
        etherparse::PacketBuilder::ipv4([192, 0, 2, 2], [192, 0, 2, 1], 64)
            .udp(40000, 51820)
            .write(&mut datagram, &[4, 0, 0, 0, 1, 2, 3, 4])
            .unwrap();
        assert_eq!(
            DECODER.summary(&datagram, 51820),
            step04_crypto::underlay::DECODER.summary(&datagram, 51820)
        );
        assert!(DECODER.summary(&datagram, 51820).is_some());
    }
}
