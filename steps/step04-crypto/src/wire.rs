//! The message format: three message types in WireGuard's shape (type
//! byte, three reserved zero bytes, 32-bit indices, 64-bit counters,
//! all little-endian).
//!
//! ```text
//! initiation (132 bytes)          response (76 bytes)          data (32 + n bytes)
//! 0   type = 1, reserved          0   type = 2, reserved       0   type = 4, reserved
//! 4   sender index                4   sender index             4   receiver index
//! 8   ephemeral public key (32)   8   receiver index           8   counter (u64)
//! 40  static key, sealed (48)     12  ephemeral public (32)    16  inner packet, sealed
//! 88  timestamp, sealed (28)      44  empty, sealed (16)           (n + 16 bytes)
//! 116 mac1 (16)                   60  mac1 (16)
//! ```
//!
//! Each view is smoltcp-style: [`InitiationPacket::new_checked`] (and its
//! siblings) check the length and the header once, after which no
//! accessor can panic.

use std::fmt;

use crate::crypto::TAG_LEN;

/// The message types (WireGuard's numbers; 3, its cookie reply, is not
/// used here).
pub const INITIATION: u8 = 1;
pub const RESPONSE: u8 = 2;
pub const DATA: u8 = 4;

pub const INITIATION_LEN: usize = 132;
pub const RESPONSE_LEN: usize = 76;
/// Bytes of the data header: type, reserved, receiver index, counter.
pub const DATA_HEADER_LEN: usize = 16;
/// Bytes a data message adds to its inner packet (before padding).
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN;

/// Why a message was refused before any cryptography.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than its type requires, or (for the handshake) not exactly
    /// its length.
    Truncated,
    /// A type we do not know.
    BadType,
    /// Reserved bytes that are not zero.
    BadReserved,
}

mod field {
    use std::ops::Range;
    pub const TYPE: usize = 0;
    pub const RESERVED: Range<usize> = 1..4;
    pub const SENDER: Range<usize> = 4..8;

    pub const I_EPHEMERAL: Range<usize> = 8..40;
    pub const I_STATIC: Range<usize> = 40..88;
    pub const I_TIMESTAMP: Range<usize> = 88..116;
    pub const I_MAC1: Range<usize> = 116..132;

    pub const R_RECEIVER: Range<usize> = 8..12;
    pub const R_EPHEMERAL: Range<usize> = 12..44;
    pub const R_EMPTY: Range<usize> = 44..60;
    pub const R_MAC1: Range<usize> = 60..76;

    pub const D_RECEIVER: Range<usize> = 4..8;
    pub const D_COUNTER: Range<usize> = 8..16;
    pub const D_PAYLOAD: usize = 16;
}

/// A message's fields and their byte ranges, in order.
pub type FieldTable = &'static [(&'static str, std::ops::Range<usize>)];

/// The fields of a handshake initiation: the ranges its view's accessors
/// read and write, as a table (the book's figures are drawn from it). They
/// cover `0..INITIATION_LEN` without a gap.
pub const INITIATION_FIELDS: FieldTable = &[
    ("type", field::TYPE..field::TYPE + 1),
    ("reserved", field::RESERVED),
    ("sender index", field::SENDER),
    ("ephemeral public key", field::I_EPHEMERAL),
    ("static public key, sealed", field::I_STATIC),
    ("timestamp, sealed", field::I_TIMESTAMP),
    ("mac1", field::I_MAC1),
];

/// The fields of a handshake response; they cover `0..RESPONSE_LEN`.
pub const RESPONSE_FIELDS: FieldTable = &[
    ("type", field::TYPE..field::TYPE + 1),
    ("reserved", field::RESERVED),
    ("sender index", field::SENDER),
    ("receiver index", field::R_RECEIVER),
    ("ephemeral public key", field::R_EPHEMERAL),
    ("empty, sealed", field::R_EMPTY),
    ("mac1", field::R_MAC1),
];

/// The header of a data message; it covers `0..DATA_HEADER_LEN`. The
/// sealed inner packet follows, padded to a multiple of 16 bytes, then
/// its [`TAG_LEN`]-byte tag.
pub const DATA_FIELDS: FieldTable = &[
    ("type", field::TYPE..field::TYPE + 1),
    ("reserved", field::RESERVED),
    ("receiver index", field::D_RECEIVER),
    ("counter", field::D_COUNTER),
];

fn check_header(bytes: &[u8], kind: u8, len_ok: bool) -> Result<(), Error> {
    match bytes.first() {
        None => return Err(Error::Truncated),
        Some(&t) if t != kind => return Err(Error::BadType),
        Some(_) => {}
    }
    if !len_ok {
        return Err(Error::Truncated);
    }
    if bytes[field::RESERVED] != [0, 0, 0] {
        return Err(Error::BadReserved);
    }
    Ok(())
}

fn u32_at(bytes: &[u8], range: std::ops::Range<usize>) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[range]);
    u32::from_le_bytes(b)
}

fn array<const N: usize>(bytes: &[u8], range: std::ops::Range<usize>) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&bytes[range]);
    b
}

/// The type byte of a message, if it has one.
pub fn message_type(bytes: &[u8]) -> Option<u8> {
    bytes.first().copied()
}

// ANCHOR: initiation
/// A view of a handshake initiation.
#[derive(Debug, Clone)]
pub struct InitiationPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> InitiationPacket<T> {
    /// Checks the type, length and reserved bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        check_header(b, INITIATION, b.len() == INITIATION_LEN)?;
        Ok(Self { buffer })
    }

    pub fn sender(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::SENDER)
    }
    pub fn ephemeral(&self) -> [u8; 32] {
        array(self.buffer.as_ref(), field::I_EPHEMERAL)
    }
    /// The initiator's static public key, sealed (32 + 16 bytes).
    pub fn sealed_static(&self) -> [u8; 48] {
        array(self.buffer.as_ref(), field::I_STATIC)
    }
    /// The initiator's timestamp, sealed (12 + 16 bytes).
    pub fn sealed_timestamp(&self) -> [u8; 28] {
        array(self.buffer.as_ref(), field::I_TIMESTAMP)
    }
    pub fn mac1(&self) -> [u8; 16] {
        array(self.buffer.as_ref(), field::I_MAC1)
    }
    /// The bytes mac1 covers: everything before it.
    pub fn mac1_covered(&self) -> &[u8] {
        &self.buffer.as_ref()[..field::I_MAC1.start]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> InitiationPacket<T> {
    /// A view over `buffer` (at least [`INITIATION_LEN`] bytes, or `None`)
    /// with its header written.
    pub fn new_emit(mut buffer: T) -> Option<Self> {
        let b = buffer.as_mut().get_mut(..INITIATION_LEN)?;
        b[field::TYPE] = INITIATION;
        b[field::RESERVED].fill(0);
        Some(Self { buffer })
    }
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[..INITIATION_LEN]
    }
    pub fn set_sender(&mut self, index: u32) {
        self.bytes()[field::SENDER].copy_from_slice(&index.to_le_bytes());
    }
    pub fn set_ephemeral(&mut self, key: &[u8; 32]) {
        self.bytes()[field::I_EPHEMERAL].copy_from_slice(key);
    }
    pub fn sealed_static_mut(&mut self) -> &mut [u8] {
        &mut self.bytes()[field::I_STATIC]
    }
    pub fn sealed_timestamp_mut(&mut self) -> &mut [u8] {
        &mut self.bytes()[field::I_TIMESTAMP]
    }
    /// Writes mac1 over the bytes before it, with `compute`.
    pub fn fill_mac1(&mut self, compute: impl FnOnce(&[u8]) -> [u8; 16]) {
        let b = self.bytes();
        let mac = compute(&b[..field::I_MAC1.start]);
        b[field::I_MAC1].copy_from_slice(&mac);
    }
}
// ANCHOR_END: initiation

/// A view of a handshake response.
#[derive(Debug, Clone)]
pub struct ResponsePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ResponsePacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        check_header(b, RESPONSE, b.len() == RESPONSE_LEN)?;
        Ok(Self { buffer })
    }
    pub fn sender(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::SENDER)
    }
    pub fn receiver(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::R_RECEIVER)
    }
    pub fn ephemeral(&self) -> [u8; 32] {
        array(self.buffer.as_ref(), field::R_EPHEMERAL)
    }
    /// The empty payload, sealed: only a tag.
    pub fn sealed_empty(&self) -> [u8; 16] {
        array(self.buffer.as_ref(), field::R_EMPTY)
    }
    pub fn mac1(&self) -> [u8; 16] {
        array(self.buffer.as_ref(), field::R_MAC1)
    }
    pub fn mac1_covered(&self) -> &[u8] {
        &self.buffer.as_ref()[..field::R_MAC1.start]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ResponsePacket<T> {
    pub fn new_emit(mut buffer: T) -> Option<Self> {
        let b = buffer.as_mut().get_mut(..RESPONSE_LEN)?;
        b[field::TYPE] = RESPONSE;
        b[field::RESERVED].fill(0);
        Some(Self { buffer })
    }
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[..RESPONSE_LEN]
    }
    pub fn set_sender(&mut self, index: u32) {
        self.bytes()[field::SENDER].copy_from_slice(&index.to_le_bytes());
    }
    pub fn set_receiver(&mut self, index: u32) {
        self.bytes()[field::R_RECEIVER].copy_from_slice(&index.to_le_bytes());
    }
    pub fn set_ephemeral(&mut self, key: &[u8; 32]) {
        self.bytes()[field::R_EPHEMERAL].copy_from_slice(key);
    }
    pub fn set_sealed_empty(&mut self, tag: &[u8; 16]) {
        self.bytes()[field::R_EMPTY].copy_from_slice(tag);
    }
    pub fn fill_mac1(&mut self, compute: impl FnOnce(&[u8]) -> [u8; 16]) {
        let b = self.bytes();
        let mac = compute(&b[..field::R_MAC1.start]);
        b[field::R_MAC1].copy_from_slice(&mac);
    }
}

// ANCHOR: data
/// A view of a data message: a header in the clear (and authenticated),
/// then the sealed inner packet.
#[derive(Debug, Clone)]
pub struct DataPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DataPacket<T> {
    /// Checks the type, the reserved bytes, and that there is room for at
    /// least the tag.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        check_header(b, DATA, b.len() >= DATA_OVERHEAD)?;
        Ok(Self { buffer })
    }
    pub fn receiver(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::D_RECEIVER)
    }
    pub fn counter(&self) -> u64 {
        u64::from_le_bytes(array(self.buffer.as_ref(), field::D_COUNTER))
    }
    /// The 16 header bytes, which the AEAD authenticates as associated data.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..field::D_PAYLOAD]
    }
    /// The sealed inner packet, without its tag.
    pub fn ciphertext(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[field::D_PAYLOAD..b.len() - TAG_LEN]
    }
    pub fn tag(&self) -> [u8; TAG_LEN] {
        let b = self.buffer.as_ref();
        array(b, b.len() - TAG_LEN..b.len())
    }
}

/// Writes a data header for `receiver` and `counter` into `out`.
pub fn emit_data_header(out: &mut [u8; DATA_HEADER_LEN], receiver: u32, counter: u64) {
    out[field::TYPE] = DATA;
    out[field::RESERVED].fill(0);
    out[field::D_RECEIVER].copy_from_slice(&receiver.to_le_bytes());
    out[field::D_COUNTER].copy_from_slice(&counter.to_le_bytes());
}
// ANCHOR_END: data

/// A message in one tcpdump-like line.
pub struct MessageSummary<'a>(pub &'a [u8]);

impl fmt::Display for MessageSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        let bad = |f: &mut fmt::Formatter<'_>, e: Error| write!(f, "malformed ({e}), {} bytes", b.len());
        match message_type(b) {
            Some(INITIATION) => match InitiationPacket::new_checked(b) {
                Ok(p) => write!(f, "handshake initiation, sender {:#010x}", p.sender()),
                Err(e) => bad(f, e),
            },
            Some(RESPONSE) => match ResponsePacket::new_checked(b) {
                Ok(p) => write!(
                    f,
                    "handshake response, sender {:#010x}, receiver {:#010x}",
                    p.sender(),
                    p.receiver()
                ),
                Err(e) => bad(f, e),
            },
            Some(DATA) => match DataPacket::new_checked(b) {
                Ok(p) if p.ciphertext().is_empty() => {
                    write!(
                        f,
                        "keepalive, receiver {:#010x}, counter {}",
                        p.receiver(),
                        p.counter()
                    )
                }
                Ok(p) => write!(
                    f,
                    "data, receiver {:#010x}, counter {}, {} bytes sealed",
                    p.receiver(),
                    p.counter(),
                    p.ciphertext().len()
                ),
                Err(e) => bad(f, e),
            },
            _ => bad(
                f,
                if b.is_empty() {
                    Error::Truncated
                } else {
                    Error::BadType
                },
            ),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated",
            Error::BadType => "bad-type",
            Error::BadReserved => "bad-reserved",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_view_reads_what_was_written() {
        let mut m = [0u8; DATA_OVERHEAD + 3];
        let mut header = [0u8; DATA_HEADER_LEN];
        emit_data_header(&mut header, 0x0403_0201, 0x0102_0304_0506_0708);
        m[..DATA_HEADER_LEN].copy_from_slice(&header);
        assert_eq!(&m[..8], &[4, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(&m[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        let p = DataPacket::new_checked(&m[..]).unwrap();
        assert_eq!(p.receiver(), 0x0403_0201);
        assert_eq!(p.counter(), 0x0102_0304_0506_0708);
        assert_eq!(p.ciphertext().len(), 3);
        assert_eq!(
            MessageSummary(&m).to_string(),
            "data, receiver 0x04030201, counter 72623859790382856, 3 bytes sealed"
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        let mut m = [0u8; DATA_OVERHEAD];
        m[0] = DATA;
        assert!(DataPacket::new_checked(&m[..]).is_ok());
        assert_eq!(DataPacket::new_checked(&m[..31]).unwrap_err(), Error::Truncated);
        m[2] = 1;
        assert_eq!(DataPacket::new_checked(&m[..]).unwrap_err(), Error::BadReserved);
        assert_eq!(DataPacket::new_checked(&[][..]).unwrap_err(), Error::Truncated);
        let mut i = [0u8; INITIATION_LEN];
        i[0] = INITIATION;
        assert!(InitiationPacket::new_checked(&i[..]).is_ok());
        assert_eq!(
            InitiationPacket::new_checked(&i[..131]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            InitiationPacket::new_checked(&[1u8; 132][..]).unwrap_err(),
            Error::BadReserved
        );
        assert_eq!(
            ResponsePacket::new_checked(&i[..RESPONSE_LEN]).unwrap_err(),
            Error::BadType
        );
        assert_eq!(
            MessageSummary(&[9, 0]).to_string(),
            "malformed (bad-type), 2 bytes"
        );
        assert_eq!(MessageSummary(&[]).to_string(), "malformed (truncated), 0 bytes");
    }

    /// The row of `table` called `name`.
    fn field_range(table: FieldTable, name: &str) -> std::ops::Range<usize> {
        let found = table.iter().find(|(n, _)| *n == name);
        found.unwrap_or_else(|| panic!("no field {name:?}")).1.clone()
    }

    /// Bytes 0, 1, 2, ... with the header of `kind`, so every field reads
    /// something different.
    fn numbered(len: usize, kind: u8) -> Vec<u8> {
        let mut b: Vec<u8> = (0..len).map(|i| i as u8).collect();
        b[0] = kind;
        b[1..4].fill(0);
        b
    }

    #[test]
    fn the_field_tables_tile_their_messages() {
        for (table, len) in [
            (INITIATION_FIELDS, INITIATION_LEN),
            (RESPONSE_FIELDS, RESPONSE_LEN),
            (DATA_FIELDS, DATA_HEADER_LEN),
        ] {
            let mut at = 0;
            for (name, range) in table {
                assert_eq!(
                    range.start, at,
                    "{name} does not start where the field before it ends"
                );
                assert!(range.end > range.start, "{name} is empty");
                at = range.end;
            }
            assert_eq!(at, len);
        }
    }

    #[test]
    fn the_field_tables_are_what_the_accessors_read() {
        let t = INITIATION_FIELDS;
        let b = numbered(INITIATION_LEN, INITIATION);
        let p = InitiationPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.sender().to_le_bytes(), b[field_range(t, "sender index")]);
        assert_eq!(p.ephemeral(), b[field_range(t, "ephemeral public key")]);
        assert_eq!(p.sealed_static(), b[field_range(t, "static public key, sealed")]);
        assert_eq!(p.sealed_timestamp(), b[field_range(t, "timestamp, sealed")]);
        assert_eq!(p.mac1(), b[field_range(t, "mac1")]);
        assert_eq!(p.mac1_covered().len(), field_range(t, "mac1").start);

        let t = RESPONSE_FIELDS;
        let b = numbered(RESPONSE_LEN, RESPONSE);
        let p = ResponsePacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.sender().to_le_bytes(), b[field_range(t, "sender index")]);
        assert_eq!(p.receiver().to_le_bytes(), b[field_range(t, "receiver index")]);
        assert_eq!(p.ephemeral(), b[field_range(t, "ephemeral public key")]);
        assert_eq!(p.sealed_empty(), b[field_range(t, "empty, sealed")]);
        assert_eq!(p.mac1(), b[field_range(t, "mac1")]);

        let t = DATA_FIELDS;
        let b = numbered(DATA_OVERHEAD + 5, DATA);
        let p = DataPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.receiver().to_le_bytes(), b[field_range(t, "receiver index")]);
        assert_eq!(p.counter().to_le_bytes(), b[field_range(t, "counter")]);
        assert_eq!(p.header(), &b[..DATA_HEADER_LEN]);
        assert_eq!(p.ciphertext(), &b[DATA_HEADER_LEN..b.len() - TAG_LEN]);
        let mut header = [0u8; DATA_HEADER_LEN];
        emit_data_header(&mut header, p.receiver(), p.counter());
        assert_eq!(header, b[..DATA_HEADER_LEN]);
        assert_eq!(header[field_range(t, "type")], [DATA]);
        assert_eq!(header[field_range(t, "reserved")], [0, 0, 0]);
    }

    #[test]
    fn emitting_into_a_short_buffer_is_refused() {
        assert!(InitiationPacket::new_emit(&mut [0u8; 131][..]).is_none());
        assert!(ResponsePacket::new_emit(&mut [0u8; 75][..]).is_none());
    }
}
