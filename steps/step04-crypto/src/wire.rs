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
//! Each message has a view in the manner of smoltcp ([`InitiationPacket`],
//! [`ResponsePacket`], [`DataPacket`]): `new_checked` checks the type, the
//! reserved bytes and the length once, after which no accessor can panic.
//! Each has a `Repr` too ([`InitiationRepr`], [`ResponseRepr`],
//! [`DataRepr`], and [`Repr`] for any of them), the parsed form, with
//! `parse`, `emit` and `buffer_len`. A data message's `Repr` is its header
//! and the length of what is sealed: the sealing itself is the core's
//! business, not the wire format's.

use std::fmt;

use crate::crypto::TAG_LEN;

/// Bytes of a handshake initiation.
pub const INITIATION_LEN: usize = field::I_MAC1.end;
/// Bytes of a handshake response.
pub const RESPONSE_LEN: usize = field::R_MAC1.end;
/// Bytes of the data header: type, reserved, receiver index, counter.
pub const DATA_HEADER_LEN: usize = field::D_PAYLOAD;
/// Bytes a data message adds to its inner packet (before padding).
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN;

// ANCHOR: message_type
/// The kind of a message (its first byte). The numbers are WireGuard's; 3,
/// its cookie reply, is not used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// The first handshake message: initiator to responder.
    Initiation,
    /// The second: responder to initiator.
    Response,
    /// A sealed inner packet, or (with nothing sealed) a keepalive.
    Data,
}

impl MessageType {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Initiation),
            2 => Some(Self::Response),
            4 => Some(Self::Data),
            _ => None,
        }
    }

    pub const fn to_u8(self) -> u8 {
        match self {
            Self::Initiation => 1,
            Self::Response => 2,
            Self::Data => 4,
        }
    }

    /// The type of received bytes, from their first byte alone.
    pub fn of(bytes: &[u8]) -> Result<Self, Error> {
        let &first = bytes.first().ok_or(Error::Truncated)?;
        Self::from_u8(first).ok_or(Error::BadType)
    }
}
// ANCHOR_END: message_type

/// Why bytes are not a message, found before any cryptography.
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "wrong length for its type",
            Error::BadType => "unknown message type",
            Error::BadReserved => "reserved bytes are not zero",
        })
    }
}

impl std::error::Error for Error {}

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

/// Checks the type byte, then the length, then the reserved bytes.
fn check_header(bytes: &[u8], kind: MessageType, len_ok: bool) -> Result<(), Error> {
    if MessageType::of(bytes)? != kind {
        return Err(Error::BadType);
    }
    if !len_ok {
        return Err(Error::Truncated);
    }
    if bytes[field::RESERVED] != [0, 0, 0] {
        return Err(Error::BadReserved);
    }
    Ok(())
}

/// Writes the type and clears the reserved bytes.
fn set_header(bytes: &mut [u8], kind: MessageType) {
    bytes[field::TYPE] = kind.to_u8();
    bytes[field::RESERVED].fill(0);
}

fn u32_at(bytes: &[u8], range: std::ops::Range<usize>) -> u32 {
    u32::from_le_bytes(array(bytes, range))
}

fn array<const N: usize>(bytes: &[u8], range: std::ops::Range<usize>) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&bytes[range]);
    b
}

// ANCHOR: initiation
/// A view of a handshake initiation.
#[derive(Debug, Clone)]
pub struct InitiationPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> InitiationPacket<T> {
    /// Wraps `buffer` unchecked: the accessors panic unless it holds
    /// exactly [`INITIATION_LEN`] bytes. For emitting into a buffer of
    /// the right length; use [`new_checked`](Self::new_checked) on
    /// anything received.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Checks the type, the length and the reserved bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    pub fn check(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        check_header(b, MessageType::Initiation, b.len() == INITIATION_LEN)
    }

    pub fn into_inner(self) -> T {
        self.buffer
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
    pub fn set_sender(&mut self, index: u32) {
        self.buffer.as_mut()[field::SENDER].copy_from_slice(&index.to_le_bytes());
    }
    pub fn set_ephemeral(&mut self, key: &[u8; 32]) {
        self.buffer.as_mut()[field::I_EPHEMERAL].copy_from_slice(key);
    }
    pub fn set_sealed_static(&mut self, sealed: &[u8; 48]) {
        self.buffer.as_mut()[field::I_STATIC].copy_from_slice(sealed);
    }
    pub fn set_sealed_timestamp(&mut self, sealed: &[u8; 28]) {
        self.buffer.as_mut()[field::I_TIMESTAMP].copy_from_slice(sealed);
    }
    /// Writes mac1 over the bytes before it, with `compute`.
    pub fn fill_mac1(&mut self, compute: impl FnOnce(&[u8]) -> [u8; 16]) {
        let b = self.buffer.as_mut();
        let mac = compute(&b[..field::I_MAC1.start]);
        b[field::I_MAC1].copy_from_slice(&mac);
    }
}

/// A handshake initiation, parsed: what is sealed stays sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitiationRepr {
    pub sender: u32,
    pub ephemeral: [u8; 32],
    pub sealed_static: [u8; 48],
    pub sealed_timestamp: [u8; 28],
    pub mac1: [u8; 16],
}

impl InitiationRepr {
    pub fn parse<T: AsRef<[u8]>>(packet: &InitiationPacket<T>) -> Result<Self, Error> {
        packet.check()?;
        Ok(Self {
            sender: packet.sender(),
            ephemeral: packet.ephemeral(),
            sealed_static: packet.sealed_static(),
            sealed_timestamp: packet.sealed_timestamp(),
            mac1: packet.mac1(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        INITIATION_LEN
    }

    /// Writes every field, mac1 as it is here (see
    /// [`InitiationPacket::fill_mac1`] to compute it instead).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut InitiationPacket<T>) {
        set_header(packet.buffer.as_mut(), MessageType::Initiation);
        packet.set_sender(self.sender);
        packet.set_ephemeral(&self.ephemeral);
        packet.set_sealed_static(&self.sealed_static);
        packet.set_sealed_timestamp(&self.sealed_timestamp);
        packet.buffer.as_mut()[field::I_MAC1].copy_from_slice(&self.mac1);
    }
}
// ANCHOR_END: initiation

/// A view of a handshake response.
#[derive(Debug, Clone)]
pub struct ResponsePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ResponsePacket<T> {
    /// Wraps `buffer` unchecked: the accessors panic unless it holds
    /// exactly [`RESPONSE_LEN`] bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Checks the type, the length and the reserved bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    pub fn check(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        check_header(b, MessageType::Response, b.len() == RESPONSE_LEN)
    }

    pub fn into_inner(self) -> T {
        self.buffer
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
    pub fn set_sender(&mut self, index: u32) {
        self.buffer.as_mut()[field::SENDER].copy_from_slice(&index.to_le_bytes());
    }
    pub fn set_receiver(&mut self, index: u32) {
        self.buffer.as_mut()[field::R_RECEIVER].copy_from_slice(&index.to_le_bytes());
    }
    pub fn set_ephemeral(&mut self, key: &[u8; 32]) {
        self.buffer.as_mut()[field::R_EPHEMERAL].copy_from_slice(key);
    }
    pub fn set_sealed_empty(&mut self, tag: &[u8; 16]) {
        self.buffer.as_mut()[field::R_EMPTY].copy_from_slice(tag);
    }
    pub fn fill_mac1(&mut self, compute: impl FnOnce(&[u8]) -> [u8; 16]) {
        let b = self.buffer.as_mut();
        let mac = compute(&b[..field::R_MAC1.start]);
        b[field::R_MAC1].copy_from_slice(&mac);
    }
}

/// A handshake response, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseRepr {
    pub sender: u32,
    pub receiver: u32,
    pub ephemeral: [u8; 32],
    pub sealed_empty: [u8; 16],
    pub mac1: [u8; 16],
}

impl ResponseRepr {
    pub fn parse<T: AsRef<[u8]>>(packet: &ResponsePacket<T>) -> Result<Self, Error> {
        packet.check()?;
        Ok(Self {
            sender: packet.sender(),
            receiver: packet.receiver(),
            ephemeral: packet.ephemeral(),
            sealed_empty: packet.sealed_empty(),
            mac1: packet.mac1(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        RESPONSE_LEN
    }

    /// Writes every field, mac1 as it is here.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ResponsePacket<T>) {
        set_header(packet.buffer.as_mut(), MessageType::Response);
        packet.set_sender(self.sender);
        packet.set_receiver(self.receiver);
        packet.set_ephemeral(&self.ephemeral);
        packet.set_sealed_empty(&self.sealed_empty);
        packet.buffer.as_mut()[field::R_MAC1].copy_from_slice(&self.mac1);
    }
}

// ANCHOR: data
/// A view of a data message: a header in the clear (and authenticated),
/// then the sealed inner packet and its tag.
#[derive(Debug, Clone)]
pub struct DataPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DataPacket<T> {
    /// Wraps `buffer` unchecked: the accessors panic unless it holds at
    /// least [`DATA_OVERHEAD`] bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Checks the type, the reserved bytes, and that there is room for at
    /// least the tag.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    pub fn check(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        check_header(b, MessageType::Data, b.len() >= DATA_OVERHEAD)
    }

    pub fn into_inner(self) -> T {
        self.buffer
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

impl<T: AsRef<[u8]> + AsMut<[u8]>> DataPacket<T> {
    pub fn set_receiver(&mut self, index: u32) {
        self.buffer.as_mut()[field::D_RECEIVER].copy_from_slice(&index.to_le_bytes());
    }
    pub fn set_counter(&mut self, counter: u64) {
        self.buffer.as_mut()[field::D_COUNTER].copy_from_slice(&counter.to_le_bytes());
    }
    /// The three parts sealing needs at once: the header (to
    /// authenticate), the payload (to encrypt in place) and the tag (to
    /// fill in).
    pub fn parts_mut(&mut self) -> (&[u8], &mut [u8], &mut [u8]) {
        let b = self.buffer.as_mut();
        let (header, rest) = b.split_at_mut(field::D_PAYLOAD);
        let (payload, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        (header, payload, tag)
    }
}

/// A data message's header, and how many bytes are sealed after it (the
/// inner packet and its padding, without the tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRepr {
    pub receiver: u32,
    pub counter: u64,
    pub sealed_len: usize,
}

impl DataRepr {
    pub fn parse<T: AsRef<[u8]>>(packet: &DataPacket<T>) -> Result<Self, Error> {
        packet.check()?;
        Ok(Self {
            receiver: packet.receiver(),
            counter: packet.counter(),
            sealed_len: packet.ciphertext().len(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        DATA_OVERHEAD + self.sealed_len
    }

    /// Writes the header; the payload and the tag are the sealer's.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut DataPacket<T>) {
        set_header(packet.buffer.as_mut(), MessageType::Data);
        packet.set_receiver(self.receiver);
        packet.set_counter(self.counter);
    }
}
// ANCHOR_END: data

/// Any message, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    Initiation(InitiationRepr),
    Response(ResponseRepr),
    Data(DataRepr),
}

impl Repr {
    /// Parses received bytes of any type.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        Ok(match MessageType::of(bytes)? {
            MessageType::Initiation => {
                Repr::Initiation(InitiationRepr::parse(&InitiationPacket::new_checked(bytes)?)?)
            }
            MessageType::Response => {
                Repr::Response(ResponseRepr::parse(&ResponsePacket::new_checked(bytes)?)?)
            }
            MessageType::Data => Repr::Data(DataRepr::parse(&DataPacket::new_checked(bytes)?)?),
        })
    }

    pub fn message_type(&self) -> MessageType {
        match self {
            Repr::Initiation(_) => MessageType::Initiation,
            Repr::Response(_) => MessageType::Response,
            Repr::Data(_) => MessageType::Data,
        }
    }

    pub fn buffer_len(&self) -> usize {
        match self {
            Repr::Initiation(r) => r.buffer_len(),
            Repr::Response(r) => r.buffer_len(),
            Repr::Data(r) => r.buffer_len(),
        }
    }

    /// Writes the message into the start of `buffer`; returns its length,
    /// or `None` when `buffer` is too short. A data message gets only its
    /// header.
    pub fn emit(&self, buffer: &mut [u8]) -> Option<usize> {
        let len = self.buffer_len();
        let bytes = buffer.get_mut(..len)?;
        match self {
            Repr::Initiation(r) => r.emit(&mut InitiationPacket::new_unchecked(bytes)),
            Repr::Response(r) => r.emit(&mut ResponsePacket::new_unchecked(bytes)),
            Repr::Data(r) => r.emit(&mut DataPacket::new_unchecked(bytes)),
        }
        Some(len)
    }
}

impl fmt::Display for Repr {
    /// `handshake initiation, sender 0x63d66d05`, `data, receiver
    /// 0x499a9393, counter 1, 96 bytes sealed`, `keepalive, receiver ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repr::Initiation(r) => write!(f, "handshake initiation, sender {:#010x}", r.sender),
            Repr::Response(r) => write!(
                f,
                "handshake response, sender {:#010x}, receiver {:#010x}",
                r.sender, r.receiver
            ),
            Repr::Data(r) if r.sealed_len == 0 => {
                write!(
                    f,
                    "keepalive, receiver {:#010x}, counter {}",
                    r.receiver, r.counter
                )
            }
            Repr::Data(r) => write!(
                f,
                "data, receiver {:#010x}, counter {}, {} bytes sealed",
                r.receiver, r.counter, r.sealed_len
            ),
        }
    }
}

/// One tcpdump-like line for any bytes received as a message, valid or
/// not: the underlay decoder of this step.
pub struct MessageSummary<'a>(pub &'a [u8]);

impl fmt::Display for MessageSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Repr::parse(self.0) {
            Ok(repr) => repr.fmt(f),
            Err(e) => write!(f, "[bad message, {} bytes: {e}]", self.0.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data message: receiver 0x04030201, counter 0x0102030405060708,
    /// three sealed bytes, and a tag.
    static DATA_BYTES: [u8; 35] = [
        4, 0, 0, 0, 1, 2, 3, 4, 8, 7, 6, 5, 4, 3, 2, 1, 0xaa, 0xbb, 0xcc, 0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5,
        0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff,
    ];

    fn data_repr() -> DataRepr {
        DataRepr {
            receiver: 0x0403_0201,
            counter: 0x0102_0304_0506_0708,
            sealed_len: 3,
        }
    }

    /// An initiation whose every field is a different byte value.
    fn initiation_repr() -> InitiationRepr {
        InitiationRepr {
            sender: 0x1122_3344,
            ephemeral: [0xe0; 32],
            sealed_static: [0x5a; 48],
            sealed_timestamp: [0x7a; 28],
            mac1: [0x3c; 16],
        }
    }

    fn response_repr() -> ResponseRepr {
        ResponseRepr {
            sender: 0x5566_7788,
            receiver: 0x1122_3344,
            ephemeral: [0xe1; 32],
            sealed_empty: [0x0e; 16],
            mac1: [0x3d; 16],
        }
    }

    #[test]
    fn test_parse() {
        let packet = DataPacket::new_checked(&DATA_BYTES[..]).unwrap();
        assert_eq!(packet.receiver(), 0x0403_0201);
        assert_eq!(packet.counter(), 0x0102_0304_0506_0708);
        assert_eq!(packet.header(), &DATA_BYTES[..16]);
        assert_eq!(packet.ciphertext(), &[0xaa, 0xbb, 0xcc]);
        assert_eq!(packet.tag(), core::array::from_fn(|i| 0xf0 + i as u8));
        assert_eq!(DataRepr::parse(&packet), Ok(data_repr()));
        assert_eq!(Repr::parse(&DATA_BYTES), Ok(Repr::Data(data_repr())));
    }

    #[test]
    fn test_emit() {
        let mut buf = [0xffu8; 35];
        let len = Repr::Data(data_repr()).emit(&mut buf).unwrap();
        assert_eq!(len, 35);
        // The header is the repr's; the payload and tag are left alone.
        assert_eq!(buf[..16], DATA_BYTES[..16]);
        assert_eq!(buf[16..], [0xff; 19]);
        assert_eq!(Repr::Data(data_repr()).emit(&mut buf[..34]), None);

        let mut packet = DataPacket::new_unchecked(&mut buf[..]);
        let (header, payload, tag) = packet.parts_mut();
        assert_eq!((header.len(), payload.len(), tag.len()), (16, 3, 16));
    }

    #[test]
    fn handshake_reprs_round_trip_through_their_bytes() {
        for repr in [
            Repr::Initiation(initiation_repr()),
            Repr::Response(response_repr()),
        ] {
            let mut buf = vec![0xffu8; repr.buffer_len() + 5];
            let len = repr.emit(&mut buf).unwrap();
            assert_eq!(len, repr.buffer_len());
            assert_eq!(buf[1..4], [0, 0, 0], "reserved");
            assert_eq!(Repr::parse(&buf[..len]), Ok(repr));
            assert_eq!(repr.emit(&mut buf[..len - 1]), None);
        }
        let mut buf = [0u8; INITIATION_LEN];
        Repr::Initiation(initiation_repr()).emit(&mut buf).unwrap();
        assert_eq!(buf[..8], [1, 0, 0, 0, 0x44, 0x33, 0x22, 0x11]);
        assert_eq!(buf[8..40], [0xe0; 32]);
        assert_eq!(buf[40..88], [0x5a; 48]);
        assert_eq!(buf[88..116], [0x7a; 28]);
        assert_eq!(buf[116..], [0x3c; 16]);
        let mut buf = [0u8; RESPONSE_LEN];
        Repr::Response(response_repr()).emit(&mut buf).unwrap();
        assert_eq!(
            buf[..12],
            [2, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
        );
        assert_eq!(buf[12..44], [0xe1; 32]);
        assert_eq!(buf[44..60], [0x0e; 16]);
        assert_eq!(buf[60..], [0x3d; 16]);
    }

    #[test]
    fn fill_mac1_covers_exactly_the_bytes_before_it() {
        let mut buf = [0u8; INITIATION_LEN];
        let mut packet = InitiationPacket::new_unchecked(&mut buf[..]);
        initiation_repr().emit(&mut packet);
        packet.fill_mac1(|covered| {
            assert_eq!(covered.len(), 116);
            [covered.len() as u8; 16]
        });
        assert_eq!(buf[116..], [116; 16]);
    }

    #[test]
    fn test_malformed() {
        assert_eq!(Repr::parse(&[]), Err(Error::Truncated));
        assert_eq!(Repr::parse(&[3, 0, 0, 0]), Err(Error::BadType));
        assert_eq!(Repr::parse(&DATA_BYTES[..31]), Err(Error::Truncated));
        assert!(Repr::parse(&DATA_BYTES[..32]).is_ok());
        let mut bad = DATA_BYTES;
        bad[2] = 1;
        assert_eq!(Repr::parse(&bad), Err(Error::BadReserved));
        let mut i = [0u8; INITIATION_LEN + 1];
        i[0] = 1;
        assert!(InitiationPacket::new_checked(&i[..INITIATION_LEN]).is_ok());
        assert_eq!(
            InitiationPacket::new_checked(&i[..131]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            InitiationPacket::new_checked(&i[..]).unwrap_err(),
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
    }

    #[test]
    fn summaries() {
        assert_eq!(
            MessageSummary(&DATA_BYTES).to_string(),
            "data, receiver 0x04030201, counter 72623859790382856, 3 bytes sealed"
        );
        assert_eq!(
            MessageSummary(&DATA_BYTES[..32]).to_string(),
            "keepalive, receiver 0x04030201, counter 72623859790382856"
        );
        assert_eq!(
            MessageSummary(&[9, 0]).to_string(),
            "[bad message, 2 bytes: unknown message type]"
        );
        assert_eq!(
            MessageSummary(&[]).to_string(),
            "[bad message, 0 bytes: wrong length for its type]"
        );
    }

    /// The row of `table` called `name`.
    fn field_range(table: FieldTable, name: &str) -> std::ops::Range<usize> {
        let found = table.iter().find(|(n, _)| *n == name);
        found.unwrap_or_else(|| panic!("no field {name:?}")).1.clone()
    }

    /// Bytes 0, 1, 2, ... with the header of `kind`, so every field reads
    /// something different.
    fn numbered(len: usize, kind: MessageType) -> Vec<u8> {
        let mut b: Vec<u8> = (0..len).map(|i| i as u8).collect();
        b[0] = kind.to_u8();
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
        let b = numbered(INITIATION_LEN, MessageType::Initiation);
        let p = InitiationPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.sender().to_le_bytes(), b[field_range(t, "sender index")]);
        assert_eq!(p.ephemeral(), b[field_range(t, "ephemeral public key")]);
        assert_eq!(p.sealed_static(), b[field_range(t, "static public key, sealed")]);
        assert_eq!(p.sealed_timestamp(), b[field_range(t, "timestamp, sealed")]);
        assert_eq!(p.mac1(), b[field_range(t, "mac1")]);
        assert_eq!(p.mac1_covered().len(), field_range(t, "mac1").start);

        let t = RESPONSE_FIELDS;
        let b = numbered(RESPONSE_LEN, MessageType::Response);
        let p = ResponsePacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.sender().to_le_bytes(), b[field_range(t, "sender index")]);
        assert_eq!(p.receiver().to_le_bytes(), b[field_range(t, "receiver index")]);
        assert_eq!(p.ephemeral(), b[field_range(t, "ephemeral public key")]);
        assert_eq!(p.sealed_empty(), b[field_range(t, "empty, sealed")]);
        assert_eq!(p.mac1(), b[field_range(t, "mac1")]);

        let t = DATA_FIELDS;
        let b = numbered(DATA_OVERHEAD + 5, MessageType::Data);
        let p = DataPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.receiver().to_le_bytes(), b[field_range(t, "receiver index")]);
        assert_eq!(p.counter().to_le_bytes(), b[field_range(t, "counter")]);
        assert_eq!(p.header(), &b[..DATA_HEADER_LEN]);
        assert_eq!(p.ciphertext(), &b[DATA_HEADER_LEN..b.len() - TAG_LEN]);
        let mut header = [0u8; DATA_OVERHEAD];
        DataRepr::parse(&p)
            .unwrap()
            .emit(&mut DataPacket::new_unchecked(&mut header[..]));
        assert_eq!(header[..DATA_HEADER_LEN], b[..DATA_HEADER_LEN]);
        assert_eq!(header[field_range(t, "type")], [MessageType::Data.to_u8()]);
        assert_eq!(header[field_range(t, "reserved")], [0, 0, 0]);
    }

    #[test]
    fn message_types_round_trip() {
        for t in [MessageType::Initiation, MessageType::Response, MessageType::Data] {
            assert_eq!(MessageType::from_u8(t.to_u8()), Some(t));
        }
        assert_eq!(MessageType::from_u8(3), None, "WireGuard's cookie reply");
    }
}
