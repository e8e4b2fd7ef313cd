//! Step 02's messages as they are seen on the underlay, for the capture
//! decoder (`tunlab decode`).
//!
//! A capture of the underlay holds UDP datagrams, and nothing in a
//! datagram says which step's tunnel sent it: step 02's messages start
//! with a version byte, step 04's (which replaces this format) with a
//! type byte. So each step that has messages of its own on the underlay
//! gives a [`Decoder`]: which payloads it claims, and how to show one. The
//! decoder is told which step made the capture (`tunlab decode --step
//! 04`), or tries each step's decoder in turn on the tunnel's port.

use step01_ping_tun::Summary;

use crate::wire::{MessageSummary, udp_payload};

/// The UDP port of the tunnel in the examples, the labs and the shipped
/// captures: WireGuard's, 51820.
pub const PORT: u16 = 51820;

/// How to recognise and show one step's messages on the underlay.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    /// The step whose format this is, as `tunlab decode --step` names it.
    pub step: &'static str,
    /// Whether a UDP payload on the tunnel's port is one of this step's
    /// messages (a message it would refuse may still be its own, and is
    /// shown with what is wrong with it).
    pub claims: fn(payload: &[u8]) -> bool,
    /// One line for a message: `tunnel data (84 bytes): IP 10.0.0.2 > ...`.
    pub message: fn(payload: &[u8]) -> String,
}

impl Decoder {
    /// One tcpdump-like line for `ip_packet`, a packet seen on the
    /// underlay: the outer headers, a bar, and the message, when the packet
    /// is UDP to or from `port` and its payload is this step's.
    pub fn summary(&self, ip_packet: &[u8], port: u16) -> Option<String> {
        let (sport, dport, payload) = udp_payload(ip_packet)?;
        if (sport != port && dport != port) || !(self.claims)(payload) {
            return None;
        }
        Some(format!("{} | {}", Summary(ip_packet), (self.message)(payload)))
    }
}

/// Step 02's decoder. Every payload on the tunnel's port is taken for one
/// of its messages: one that does not parse is shown as a bad message.
/// Step 03 sends the same messages.
pub const DECODER: Decoder = Decoder {
    step: "02",
    claims: claims_any,
    message: message_line,
};

fn claims_any(_: &[u8]) -> bool {
    true
}

fn message_line(payload: &[u8]) -> String {
    MessageSummary(payload).to_string()
}

/// [`DECODER`]'s line for `ip_packet`, on the tunnel's port `port`.
pub fn summary(ip_packet: &[u8], port: u16) -> Option<String> {
    DECODER.summary(ip_packet, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP/IPv4 datagram from 192.0.2.2:40000 to 192.0.2.1:`dport`.
    fn datagram(dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv4([192, 0, 2, 2], [192, 0, 2, 1], 64)
            .udp(40000, dport)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    #[test]
    fn messages_on_the_port_are_shown() {
        let ping = datagram(PORT, &[1, 2, 0, 0]);
        assert_eq!(
            summary(&ping, PORT).unwrap(),
            "IP 192.0.2.2.40000 > 192.0.2.1.51820: UDP, length 4 | tunnel ping"
        );
        assert_eq!(summary(&ping, 7000), None, "another port");
        let bad = datagram(PORT, &[9, 9]);
        assert!(
            summary(&bad, PORT)
                .unwrap()
                .contains("[bad tunnel message, 2 bytes")
        );
    }
}
