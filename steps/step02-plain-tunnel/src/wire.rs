//! The tunnel's message format.
//!
//! Every message, in a UDP datagram or in a TCP frame, starts with a 4-byte
//! header:
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
//! +---------------+---------------+-------------------------------+
//! |  version = 1  |     type      |         reserved = 0          |
//! +---------------+---------------+-------------------------------+
//! |  payload: for a Data message, one IP packet; otherwise empty  |
//! +---------------------------------------------------------------+
//! ```
//!
//! Types: 1 Data (an IP packet from a TUN device), 2 Ping (is anyone
//! there? also a keepalive), 3 Pong (the answer to a Ping). The 4-byte
//! header keeps the inner packet 4-byte aligned, as WireGuard's does. Step
//! 03 sends these same messages; step 04 replaces the format with its own
//! (a type byte, three reserved bytes, then indices, counters and a tag),
//! and a datagram does not say which of the two it is: a capture decoder
//! is told which step made it ([`crate::underlay`]).
//!
//! [`Message`] is a view over bytes in the manner of smoltcp: `new_checked`
//! validates untrusted input once, after which no accessor can panic.
//! [`Repr`] is the parsed, high-level form, with `parse`, `emit` and
//! `buffer_len`.

use std::fmt;

use step01_ping_tun::Summary;

/// The only version this step speaks.
pub const VERSION: u8 = 1;

/// Bytes in front of the payload.
pub const HEADER_LEN: usize = field::PAYLOAD;

mod field {
    pub const VERSION: usize = 0;
    pub const TYPE: usize = 1;
    pub const RESERVED: std::ops::Range<usize> = 2..4;
    pub const PAYLOAD: usize = 4;
}

/// The header's fields and their byte ranges, in order: the ranges the
/// accessors of [`Message`] read and write, as a table (the book's figures
/// are drawn from it). They cover `0..HEADER_LEN` without a gap; the
/// payload follows.
pub const FIELDS: &[(&str, std::ops::Range<usize>)] = &[
    ("version", field::VERSION..field::VERSION + 1),
    ("type", field::TYPE..field::TYPE + 1),
    ("reserved", field::RESERVED),
];

// ANCHOR: message_type
/// The kind of a message (the byte at offset 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Carries one IP packet.
    Data,
    /// Asks the peer for a Pong. The client sends it until the server
    /// answers, and then as a keepalive so NAT mappings stay open.
    Ping,
    /// The answer to a Ping.
    Pong,
}

impl MessageType {
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Data),
            2 => Some(Self::Ping),
            3 => Some(Self::Pong),
            _ => None,
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Self::Data => 1,
            Self::Ping => 2,
            Self::Pong => 3,
        }
    }
}
// ANCHOR_END: message_type

/// Why bytes are not a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the header.
    Truncated,
    /// A version other than [`VERSION`].
    BadVersion,
    /// A type byte we do not know.
    UnknownType,
    /// Reserved bytes that are not zero.
    BadReserved,
    /// A Ping or Pong with a payload, or a Data message without one.
    BadLength,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "shorter than the 4-byte header",
            Error::BadVersion => "unknown version",
            Error::UnknownType => "unknown message type",
            Error::BadReserved => "reserved bytes are not zero",
            Error::BadLength => "wrong length for its type",
        })
    }
}

impl std::error::Error for Error {}

// ANCHOR: message
/// A view of a tunnel message over any byte buffer.
#[derive(Debug, Clone)]
pub struct Message<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    /// Wraps `buffer` without checking it; the accessors may then panic on
    /// short input. Use [`Message::new_checked`] for anything received.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking everything the accessors rely on:
    /// length, version, type, reserved bytes, and payload length by type.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let message = Self::new_unchecked(buffer);
        message.check()?;
        Ok(message)
    }

    fn check(&self) -> Result<(), Error> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if data[field::VERSION] != VERSION {
            return Err(Error::BadVersion);
        }
        let kind = MessageType::from_u8(data[field::TYPE]).ok_or(Error::UnknownType)?;
        if data[field::RESERVED] != [0, 0] {
            return Err(Error::BadReserved);
        }
        let has_payload = data.len() > HEADER_LEN;
        match (kind, has_payload) {
            (MessageType::Data, true) | (MessageType::Ping | MessageType::Pong, false) => Ok(()),
            _ => Err(Error::BadLength),
        }
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// The message type. Only call on a checked message.
    pub fn message_type(&self) -> Option<MessageType> {
        MessageType::from_u8(self.buffer.as_ref()[field::TYPE])
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Message<T> {
    pub fn set_version(&mut self, version: u8) {
        self.buffer.as_mut()[field::VERSION] = version;
    }

    pub fn set_message_type(&mut self, kind: MessageType) {
        self.buffer.as_mut()[field::TYPE] = kind.to_u8();
    }

    pub fn clear_reserved(&mut self) {
        self.buffer.as_mut()[field::RESERVED].fill(0);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}
// ANCHOR_END: message

// ANCHOR: repr
/// A message, parsed. The Data variant borrows its packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr<'a> {
    Data(&'a [u8]),
    Ping,
    Pong,
}

impl<'a> Repr<'a> {
    /// Parses a message view (checking it again if it was not checked).
    pub fn parse(message: &Message<&'a [u8]>) -> Result<Self, Error> {
        message.check()?;
        let bytes: &'a [u8] = message.buffer;
        match MessageType::from_u8(bytes[field::TYPE]) {
            Some(MessageType::Data) => Ok(Repr::Data(&bytes[field::PAYLOAD..])),
            Some(MessageType::Ping) => Ok(Repr::Ping),
            Some(MessageType::Pong) => Ok(Repr::Pong),
            None => Err(Error::UnknownType),
        }
    }

    /// Parses received bytes: the usual entry point for a datagram.
    pub fn parse_bytes(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::parse(&Message::new_checked(bytes)?)
    }

    pub fn message_type(&self) -> MessageType {
        match self {
            Repr::Data(_) => MessageType::Data,
            Repr::Ping => MessageType::Ping,
            Repr::Pong => MessageType::Pong,
        }
    }

    /// The length of the emitted message.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + if let Repr::Data(p) = self { p.len() } else { 0 }
    }

    /// Writes the message into the start of `buffer`, which must hold at
    /// least [`Repr::buffer_len`] bytes; returns the length written, or
    /// `None` when the buffer is too small.
    pub fn emit(&self, buffer: &mut [u8]) -> Option<usize> {
        let len = self.buffer_len();
        let mut message = Message::new_unchecked(buffer.get_mut(..len)?);
        message.set_version(VERSION);
        message.set_message_type(self.message_type());
        message.clear_reserved();
        if let Repr::Data(packet) = self {
            message.payload_mut().copy_from_slice(packet);
        }
        Some(len)
    }
}
// ANCHOR_END: repr

impl fmt::Display for Repr<'_> {
    /// `tunnel data (84 bytes): IP 10.0.0.2 > 10.0.0.1: ICMP echo request, ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repr::Data(packet) => write!(f, "tunnel data ({} bytes): {}", packet.len(), Summary(packet)),
            Repr::Ping => f.write_str("tunnel ping"),
            Repr::Pong => f.write_str("tunnel pong"),
        }
    }
}

/// One line for any bytes received as a tunnel message, valid or not.
pub struct MessageSummary<'a>(pub &'a [u8]);

impl fmt::Display for MessageSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Repr::parse_bytes(self.0) {
            Ok(repr) => repr.fmt(f),
            Err(e) => write!(f, "[bad tunnel message, {} bytes: {e}]", self.0.len()),
        }
    }
}

// ANCHOR: underlay_summary
/// One line for a packet on the underlay: the outer IP and UDP headers, and
/// when the UDP port is the tunnel's, the message inside:
/// `IP 192.0.2.2.40000 > 192.0.2.1.51820: UDP, length 88 | tunnel data (84
/// bytes): IP 10.0.0.2 > 10.0.0.1: ICMP echo request, ...`. In plaintext,
/// everything after the bar is there for anyone on the path to read.
pub struct UnderlaySummary<'a> {
    pub packet: &'a [u8],
    pub port: u16,
}

impl fmt::Display for UnderlaySummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Summary(self.packet).fmt(f)?;
        if let Some((sport, dport, payload)) = udp_payload(self.packet)
            && (sport == self.port || dport == self.port)
        {
            write!(f, " | {}", MessageSummary(payload))?;
        }
        Ok(())
    }
}
// ANCHOR_END: underlay_summary

/// Source port, destination port and payload of a UDP datagram in an IPv4
/// or IPv6 packet.
pub fn udp_payload(packet: &[u8]) -> Option<(u16, u16, &[u8])> {
    let ip = etherparse::SlicedPacket::from_ip(packet).ok()?;
    match ip.transport? {
        etherparse::TransportSlice::Udp(udp) => {
            Some((udp.source_port(), udp.destination_port(), udp.payload()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static PING_BYTES: [u8; 4] = [0x01, 0x02, 0x00, 0x00];
    static DATA_BYTES: [u8; 7] = [0x01, 0x01, 0x00, 0x00, 0x45, 0xaa, 0xbb];

    #[test]
    fn test_parse() {
        assert_eq!(Repr::parse_bytes(&PING_BYTES), Ok(Repr::Ping));
        assert_eq!(Repr::parse_bytes(&[1, 3, 0, 0]), Ok(Repr::Pong));
        assert_eq!(
            Repr::parse_bytes(&DATA_BYTES),
            Ok(Repr::Data(&[0x45, 0xaa, 0xbb]))
        );
        let message = Message::new_checked(&DATA_BYTES[..]).unwrap();
        assert_eq!(message.version(), 1);
        assert_eq!(message.message_type(), Some(MessageType::Data));
        assert_eq!(Repr::parse(&message), Ok(Repr::Data(&[0x45, 0xaa, 0xbb])));
    }

    #[test]
    fn test_emit() {
        let mut buf = [0xffu8; 16];
        assert_eq!(Repr::Ping.emit(&mut buf), Some(4));
        assert_eq!(buf[..4], PING_BYTES);
        let data = Repr::Data(&[0x45, 0xaa, 0xbb]);
        assert_eq!(data.buffer_len(), 7);
        assert_eq!(data.emit(&mut buf), Some(7));
        assert_eq!(buf[..7], DATA_BYTES);
        assert_eq!(data.emit(&mut buf[..6]), None);
    }

    #[test]
    fn test_malformed() {
        assert_eq!(Repr::parse_bytes(&[]), Err(Error::Truncated));
        assert_eq!(Repr::parse_bytes(&[1, 2, 0]), Err(Error::Truncated));
        assert_eq!(Repr::parse_bytes(&[2, 2, 0, 0]), Err(Error::BadVersion));
        assert_eq!(Repr::parse_bytes(&[1, 9, 0, 0]), Err(Error::UnknownType));
        assert_eq!(Repr::parse_bytes(&[1, 0, 0, 0]), Err(Error::UnknownType));
        assert_eq!(Repr::parse_bytes(&[1, 2, 0, 1]), Err(Error::BadReserved));
        assert_eq!(Repr::parse_bytes(&[1, 2, 0, 0, 9]), Err(Error::BadLength));
        assert_eq!(Repr::parse_bytes(&[1, 1, 0, 0]), Err(Error::BadLength));
    }

    /// The field of [`FIELDS`] called `name`.
    fn field_range(name: &str) -> std::ops::Range<usize> {
        let found = FIELDS.iter().find(|(n, _)| *n == name);
        found
            .unwrap_or_else(|| panic!("no field {name:?} in FIELDS"))
            .1
            .clone()
    }

    #[test]
    fn the_field_table_is_what_the_accessors_use() {
        // The table tiles the header, in order, with no gap or overlap.
        let mut at = 0;
        for (name, range) in FIELDS {
            assert_eq!(
                range.start, at,
                "{name} does not start where the field before it ends"
            );
            assert!(range.end > range.start, "{name} is empty");
            at = range.end;
        }
        assert_eq!(at, HEADER_LEN);
        // Each accessor reads and writes the bytes its row names.
        let mut bytes: Vec<u8> = (0..8).map(|i| 0xa0 + i).collect();
        let message = Message::new_unchecked(&bytes[..]);
        assert_eq!(message.version(), bytes[field_range("version").start]);
        assert_eq!(message.payload(), &bytes[HEADER_LEN..]);
        let mut message = Message::new_unchecked(&mut bytes[..]);
        message.set_version(0x11);
        message.set_message_type(MessageType::Pong);
        message.clear_reserved();
        assert_eq!(bytes[field_range("version")], [0x11]);
        assert_eq!(bytes[field_range("type")], [MessageType::Pong.to_u8()]);
        assert_eq!(bytes[field_range("reserved")], [0, 0]);
        // Nothing else was touched.
        assert_eq!(bytes[HEADER_LEN..], [0xa4, 0xa5, 0xa6, 0xa7]);
    }

    #[test]
    fn display() {
        assert_eq!(MessageSummary(&PING_BYTES).to_string(), "tunnel ping");
        assert_eq!(
            MessageSummary(&[1, 9, 0, 0]).to_string(),
            "[bad tunnel message, 4 bytes: unknown message type]"
        );
        assert!(
            MessageSummary(&DATA_BYTES)
                .to_string()
                .starts_with("tunnel data (3 bytes): [bad IPv4 packet")
        );
    }
}
