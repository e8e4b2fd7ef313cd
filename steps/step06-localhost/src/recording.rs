//! Reading a recorded control connection: the TCP segments of a capture
//! put back together into each connection's two byte streams, the streams
//! cut into records, and the records opened with the client's key log
//! (`expose --keylog`), as Wireshark reads TLS with a key log file. The
//! golden test and `tunlab decode --keylog` both read captures this way.
//!
//! Decrypting takes the client's static key, the ephemeral key it logged
//! for the connection, and the server's public key: the initiation is
//! made again from them (its timestamp, the only part the client chose,
//! is opened first: [`noise::reinitiate`]) and must equal the recorded one
//! byte for byte; the replayed client then reads the server's response
//! and its records, and its [`mirror`](SecureChannel::mirror) opens the
//! client's own.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use step01_ping_tun::pcap::{self, Captured, DataLink};
use step04_crypto::noise::{self, Identity};
use step04_crypto::wire::{INITIATION_LEN, InitiationPacket, RESPONSE_LEN, ResponsePacket};
use step04_crypto::{PublicKey, StaticSecret};

use crate::secure::{Event, SecureChannel};

/// Why a recorded connection could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The capture lacks bytes of a stream: tcpdump dropped a segment, or
    /// the capture started after the connection.
    Hole { at: usize, resumes: usize },
    /// A record runs past the end of the capture.
    CutShort,
    /// The connection does not open with an initiation and a response.
    NoHandshake,
    /// No key of the key log made this connection's initiation.
    NotLogged,
    /// The key log is the server's: this reads the client's.
    ServersKeyLog,
    /// The logged key made this initiation, but with another static key or
    /// for another server key.
    WrongKey,
    /// A record did not open (or opened to no frame): record `index` of
    /// the client's stream, or of the server's.
    BadRecord { from_client: bool, index: usize },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Hole { at, resumes } => write!(
                f,
                "the capture lacks bytes {at}..{resumes} of a stream (tcpdump dropped a segment?)"
            ),
            Error::CutShort => f.write_str("a record is cut short at the end of the capture"),
            Error::NoHandshake => f.write_str("the connection does not open with an initiation and a response"),
            Error::NotLogged => f.write_str("no key in the key log made this connection's initiation"),
            Error::ServersKeyLog => f.write_str(
                "the key log is the server's; decrypting reads the client's (expose --keylog) with the client's key",
            ),
            Error::WrongKey => f.write_str(
                "the key log matches, but the client's key or the server's public key is not the one used",
            ),
            Error::BadRecord { from_client, index } => write!(
                f,
                "record {index} from the {} did not open",
                if *from_client { "client" } else { "server" }
            ),
        }
    }
}

impl std::error::Error for Error {}

/// One TCP segment.
struct Segment {
    time: Duration,
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    syn: bool,
    ack: bool,
    payload: Vec<u8>,
}

/// The TCP segment in an IP packet (IPv4 without fragments, or IPv6 with
/// TCP as the first next header), by hand: RFC 791, RFC 8200, RFC 9293
/// section 3.1.
fn tcp_segment(time: Duration, ip: &[u8]) -> Option<Segment> {
    let (src, dst, tcp): (IpAddr, IpAddr, &[u8]) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            if *ip.get(9)? != 6 || ihl < 20 || total < ihl {
                return None;
            }
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (src.into(), dst.into(), ip.get(ihl..total)?)
        }
        6 => {
            let len = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            if *ip.get(6)? != 6 {
                return None;
            }
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (src.into(), dst.into(), ip.get(40..40 + len)?)
        }
        _ => return None,
    };
    let port = |at: usize| Some(u16::from_be_bytes([*tcp.get(at)?, *tcp.get(at + 1)?]));
    let offset = usize::from(tcp.get(12)? >> 4) * 4;
    let flags = *tcp.get(13)?;
    Some(Segment {
        time,
        src: SocketAddr::new(src, port(0)?),
        dst: SocketAddr::new(dst, port(2)?),
        seq: u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?),
        syn: flags & 0x02 != 0,
        ack: flags & 0x10 != 0,
        payload: tcp.get(offset..)?.to_vec(),
    })
}

/// One direction of a connection: its bytes in order, and when each
/// segment's last byte was captured.
#[derive(Debug, Default, Clone)]
pub struct Stream {
    pub bytes: Vec<u8>,
    /// (offset just past a segment's bytes, its time), by offset.
    arrivals: Vec<(usize, Duration)>,
}

impl Stream {
    /// When the byte just before `end` was captured.
    pub fn time_of(&self, end: usize) -> Duration {
        self.arrivals
            .iter()
            .find(|(e, _)| *e >= end)
            .map_or(Duration::MAX, |(_, t)| *t)
    }
}

/// Puts one direction back together from its segments: `isn` is the
/// sequence number of its SYN, whose successor numbers the first byte.
/// Retransmitted bytes land on themselves; a hole is a lost capture.
fn reassemble<'a>(isn: u32, segments: impl Iterator<Item = &'a Segment>) -> Result<Stream, Error> {
    let mut pieces: BTreeMap<usize, (&[u8], Duration)> = BTreeMap::new();
    for s in segments.filter(|s| !s.payload.is_empty()) {
        let at = s.seq.wrapping_sub(isn.wrapping_add(1)) as usize;
        pieces.entry(at).or_insert((&s.payload, s.time));
    }
    let mut stream = Stream::default();
    for (at, (bytes, time)) in pieces {
        if at > stream.bytes.len() {
            return Err(Error::Hole {
                at: stream.bytes.len(),
                resumes: at,
            });
        }
        let end = at + bytes.len();
        if end > stream.bytes.len() {
            stream.bytes.extend_from_slice(&bytes[stream.bytes.len() - at..]);
            stream.arrivals.push((end, time));
        }
    }
    Ok(stream)
}

/// A recorded control connection: the client's bytes and the server's.
#[derive(Debug, Clone)]
pub struct Connection {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub up: Stream,
    pub down: Stream,
}

/// The control connections of a capture (Ethernet frames, or bare IP
/// packets), in the order they were opened: the TCP connections whose
/// client's first bytes are an initiation record. A connection refused,
/// or captured from its middle, is left out.
pub fn connections(link: DataLink, frames: &[Captured]) -> Result<Vec<Connection>, Error> {
    let segments: Vec<Segment> = frames
        .iter()
        .filter_map(|f| {
            let ip = match link {
                DataLink::ETHERNET => pcap::ip_in_ethernet(&f.data)?,
                _ => &f.data,
            };
            tcp_segment(f.timestamp, ip)
        })
        .collect();
    let mut out: Vec<Connection> = Vec::new();
    for syn in segments.iter().filter(|s| s.syn && !s.ack) {
        let (client, server) = (syn.src, syn.dst);
        // A retransmitted SYN opens the same connection.
        if out.iter().any(|c| c.client == client && c.server == server) {
            continue;
        }
        let Some(syn_ack) = segments
            .iter()
            .find(|s| s.syn && s.ack && s.src == server && s.dst == client)
        else {
            continue; // refused: the server was not up yet
        };
        let up = reassemble(
            syn.seq,
            segments.iter().filter(|s| s.src == client && s.dst == server),
        )?;
        let down = reassemble(
            syn_ack.seq,
            segments.iter().filter(|s| s.src == server && s.dst == client),
        )?;
        // Only our control connections: they open with an initiation.
        if up.bytes.starts_with(&(INITIATION_LEN as u16).to_be_bytes()) {
            out.push(Connection {
                client,
                server,
                up,
                down,
            });
        }
    }
    Ok(out)
}

/// Cuts a stream into its records (each a 2-byte length and that many
/// bytes): (offset just past the record, the record with its length).
pub fn records(stream: &[u8]) -> Result<Vec<(usize, &[u8])>, Error> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let Some(&[a, b]) = stream.get(at..at + 2) else {
            return Err(Error::CutShort);
        };
        let end = at + 2 + usize::from(u16::from_be_bytes([a, b]));
        let record = stream.get(at..end).ok_or(Error::CutShort)?;
        out.push((end, record));
        at = end;
    }
    Ok(out)
}

/// One record of a connection, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// When its last byte was captured.
    pub time: Duration,
    pub from_client: bool,
    /// What the record held: `None` for the two handshake messages, the
    /// frame's bytes for the others (parse them with
    /// [`Repr::parse_bytes`](crate::wire::Repr::parse_bytes)).
    pub frame: Option<Vec<u8>>,
}

/// Opens every record of `conn` in both directions with the client's
/// static key, the ephemeral keys it logged (the one this connection used
/// is found by its public key) and the server's public key; the records in
/// time order (each direction's in its own order).
pub fn decrypt(
    conn: &Connection,
    client: &Arc<Identity>,
    server: &PublicKey,
    keylog: &[[u8; 32]],
) -> Result<Vec<Opened>, Error> {
    let up = records(&conn.up.bytes)?;
    let down = records(&conn.down.bytes)?;
    let (Some(&(init_end, initiation)), Some(&(resp_end, response))) = (up.first(), down.first()) else {
        return Err(Error::NoHandshake);
    };
    let init = initiation
        .get(2..)
        .and_then(|m| InitiationPacket::new_checked(m).ok())
        .ok_or(Error::NoHandshake)?;
    let resp = response
        .get(2..)
        .and_then(|m| ResponsePacket::new_checked(m).ok())
        .filter(|_| response.len() == 2 + RESPONSE_LEN)
        .ok_or(Error::NoHandshake)?;
    let logged = |public: [u8; 32]| {
        keylog
            .iter()
            .map(|k| StaticSecret::from(*k))
            .find(|k| PublicKey::from(k).to_bytes() == public)
    };
    let Some(ephemeral) = logged(init.ephemeral()) else {
        return Err(if logged(resp.ephemeral()).is_some() {
            Error::ServersKeyLog
        } else {
            Error::NotLogged
        });
    };
    let (_, timestamp) = noise::reinitiate(client, server, ephemeral.clone(), &initiation[2..])
        .map_err(|_| Error::WrongKey)?;
    // The client again: it writes the same initiation, reads the
    // response, and holds the keys of both directions.
    let mut replayed = Vec::new();
    let mut channel = SecureChannel::client(client.clone(), *server, ephemeral, timestamp, &mut replayed)
        .map_err(|_| Error::WrongKey)?;
    if replayed != initiation {
        return Err(Error::WrongKey);
    }
    channel.push(response).map_err(|_| Error::WrongKey)?;
    if !matches!(channel.poll(), Ok(Some(Event::Established { .. }))) {
        return Err(Error::WrongKey);
    }
    let mut mirror = channel.mirror().ok_or(Error::WrongKey)?;
    let mut opened = vec![
        Opened {
            time: conn.up.time_of(init_end),
            from_client: true,
            frame: None,
        },
        Opened {
            time: conn.down.time_of(resp_end),
            from_client: false,
            frame: None,
        },
    ];
    // The client's records open with the mirror (an opener that cannot
    // seal), the server's with the client's own channel.
    for (index, &(end, record)) in up.iter().enumerate().skip(1) {
        let bad = Error::BadRecord {
            from_client: true,
            index,
        };
        mirror.push(record).map_err(|_| bad.clone())?;
        let frame = match mirror.poll() {
            Ok(Some(frame)) => frame.to_vec(),
            _ => return Err(bad),
        };
        opened.push(Opened {
            time: conn.up.time_of(end),
            from_client: true,
            frame: Some(frame),
        });
    }
    for (index, &(end, record)) in down.iter().enumerate().skip(1) {
        let bad = Error::BadRecord {
            from_client: false,
            index,
        };
        channel.push(record).map_err(|_| bad.clone())?;
        let frame = match channel.poll() {
            Ok(Some(Event::Frame(frame))) => frame.to_vec(),
            _ => return Err(bad),
        };
        opened.push(Opened {
            time: conn.down.time_of(end),
            from_client: false,
            frame: Some(frame),
        });
    }
    // Time order; records of one direction keep theirs.
    opened.sort_by_key(|o| o.time);
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_cut_by_their_lengths() {
        let stream = [0, 2, 0xaa, 0xbb, 0, 0, 0, 1, 0xcc];
        let cut = records(&stream).unwrap();
        assert_eq!(
            cut,
            vec![(4, &stream[..4]), (6, &stream[4..6]), (9, &stream[6..9])]
        );
        assert_eq!(records(&stream[..8]), Err(Error::CutShort));
        assert_eq!(records(&stream[..5]), Err(Error::CutShort));
        assert_eq!(records(&[]), Ok(vec![]));
    }

    fn segment(seq: u32, payload: &[u8], time: u64) -> Segment {
        Segment {
            time: Duration::from_millis(time),
            src: "192.0.2.2:1".parse().unwrap(),
            dst: "192.0.2.1:2".parse().unwrap(),
            seq,
            syn: false,
            ack: true,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn streams_are_put_back_in_order_and_holes_found() {
        // ISN 100: the first byte is number 101.
        let segments = [
            segment(104, b"def", 3),
            segment(101, b"abc", 1),
            segment(101, b"abc", 2), // retransmitted
        ];
        let stream = reassemble(100, segments.iter()).unwrap();
        assert_eq!(stream.bytes, b"abcdef");
        assert_eq!(stream.time_of(3), Duration::from_millis(1));
        assert_eq!(stream.time_of(6), Duration::from_millis(3));
        let holed = [segment(101, b"abc", 1), segment(110, b"x", 2)];
        assert_eq!(
            reassemble(100, holed.iter()).err(),
            Some(Error::Hole { at: 3, resumes: 9 })
        );
    }
}
