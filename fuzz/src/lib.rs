//! What the fuzz targets share: the fuzzer's bytes read as a series of
//! records, and the sessions recorded in `pcaps/`, which several targets
//! replay before they let the fuzzer in.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use step01_ping_tun::pcap::{self, DataLink};
use step04_crypto::StaticSecret;
use step04_crypto::keys;

/// The fuzzer's input read as records: one byte that says what to do with
/// the record (its op), a 2-byte big-endian length, and that many bytes
/// (fewer if the input ends first). Every input is a valid series, so no
/// execution is wasted on a framing error; `tunlab fuzz` writes the seeds
/// of the targets that use records in the same shape.
#[derive(Debug, Clone)]
pub struct Records<'a>(pub &'a [u8]);

impl<'a> Iterator for Records<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&op, rest) = self.0.split_first()?;
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
            _ => (0, &[][..]),
        };
        let (body, rest) = rest.split_at(len.min(rest.len()));
        self.0 = rest;
        Some((op, body))
    }
}

/// Appends one record to `out`, as [`Records`] reads it back.
pub fn record(out: &mut Vec<u8>, op: u8, body: &[u8]) {
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    out.push(op);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body[..usize::from(len)]);
}

/// A file of `pcaps/`, e.g. `step04/underlay.pcap`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../pcaps")
        .join(name)
}

/// A test-only key stored beside a capture (read as text: git does not
/// keep the file's mode, so the key-file checks would rightly refuse it).
pub fn key(name: &str) -> StaticSecret {
    let text = std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    keys::parse_secret(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The ephemeral private keys of a key log, in order.
pub fn keylog(name: &str) -> Vec<[u8; 32]> {
    let text = std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    step04_crypto::run::read_keylog(&text)
}

/// The IP packets of a capture, in order (out of their Ethernet frames
/// for an underlay capture).
pub fn packets(name: &str) -> Vec<Vec<u8>> {
    let (link, captured) = pcap::read_any(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    captured
        .into_iter()
        .filter_map(|c| match link {
            DataLink::ETHERNET => pcap::ip_in_ethernet(&c.data).map(<[u8]>::to_vec),
            _ => Some(c.data),
        })
        .collect()
}

/// The source and destination addresses of an IP packet.
fn addresses(ip: &[u8]) -> Option<(IpAddr, IpAddr)> {
    step04_crypto::tunnel::inner_addresses(ip)
}

/// The UDP datagrams of an underlay capture, in order: (from, to,
/// payload).
pub fn datagrams(name: &str) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    packets(name)
        .iter()
        .filter_map(|ip| {
            let (sport, dport, payload) = step02_plain_tunnel::wire::udp_payload(ip)?;
            let (src, dst) = addresses(ip)?;
            Some((
                SocketAddr::new(src, sport),
                SocketAddr::new(dst, dport),
                payload.to_vec(),
            ))
        })
        .collect()
}

/// The two byte streams of the TCP connection to `port` in a capture:
/// (client to server, server to client), each the payloads of its
/// segments in capture order. The recordings this reads have neither loss
/// nor retransmission (a segment seen twice is kept once, by sequence
/// number).
pub fn tcp_streams(name: &str, port: u16) -> (Vec<u8>, Vec<u8>) {
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let (mut up_seen, mut down_seen) = (Vec::new(), Vec::new());
    for ip in packets(name) {
        let Ok(sliced) = etherparse::SlicedPacket::from_ip(&ip) else {
            continue;
        };
        let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else {
            continue;
        };
        if tcp.payload().is_empty() {
            continue;
        }
        let (stream, seen) = if tcp.destination_port() == port {
            (&mut up, &mut up_seen)
        } else if tcp.source_port() == port {
            (&mut down, &mut down_seen)
        } else {
            continue;
        };
        if !seen.contains(&tcp.sequence_number()) {
            seen.push(tcp.sequence_number());
            stream.extend_from_slice(tcp.payload());
        }
    }
    (up, down)
}

/// A tiny deterministic generator (xorshift64*), for targets that derive
/// many choices from one seed byte. Not for anything secret.
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_what_record_wrote() {
        let mut bytes = Vec::new();
        record(&mut bytes, 1, b"abc");
        record(&mut bytes, 2, b"");
        record(&mut bytes, 3, &[9; 300]);
        let got: Vec<(u8, Vec<u8>)> = Records(&bytes).map(|(op, b)| (op, b.to_vec())).collect();
        assert_eq!(got, vec![(1, b"abc".to_vec()), (2, vec![]), (3, vec![9; 300])]);
        // Cut anywhere, still a series.
        assert_eq!(Records(&bytes[..5]).count(), 1);
        assert_eq!(Records(&[7]).collect::<Vec<_>>(), vec![(7, &[][..])]);
    }
}
