//! WireGuard's four message types, byte for byte (whitepaper section 5.4;
//! every integer little-endian, every message starting with a type byte
//! and three reserved zero bytes).
//!
//! ```text
//! initiation (148 bytes)        response (92 bytes)          cookie reply (64 bytes)     data (32 + 16n bytes)
//! 0   type = 1, reserved        0   type = 2, reserved       0   type = 3, reserved      0   type = 4, reserved
//! 4   sender index              4   sender index             4   receiver index          4   receiver index
//! 8   ephemeral (32)            8   receiver index           8   nonce (24)              8   counter (u64)
//! 40  static, sealed (48)       12  ephemeral (32)           32  cookie, sealed (32)     16  packet, sealed
//! 88  timestamp, sealed (28)    44  empty, sealed (16)                                       (padded to 16, + tag)
//! 116 mac1 (16)                 60  mac1 (16)
//! 132 mac2 (16)                 76  mac2 (16)
//! ```
//!
//! Step 04's messages were these without mac2 (and without the cookie
//! reply): the 16 bytes at the end of each handshake message are what
//! lets a responder under load ask for proof of the sender's address.
//!
//! Each view is smoltcp-style: `new_checked` checks the type, the length
//! and the reserved bytes once, after which no accessor can panic.

use std::fmt;
use std::ops::Range;

use step04_crypto::crypto::TAG_LEN;

// ANCHOR: types
/// The message types (whitepaper section 5.4.2 to 5.4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    Initiation = 1,
    Response = 2,
    CookieReply = 3,
    Data = 4,
}

impl MessageType {
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(MessageType::Initiation),
            2 => Some(MessageType::Response),
            3 => Some(MessageType::CookieReply),
            4 => Some(MessageType::Data),
            _ => None,
        }
    }

    /// The type of a message, from its first byte.
    pub fn of(message: &[u8]) -> Option<Self> {
        message.first().copied().and_then(Self::from_byte)
    }
}

pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
/// Bytes of the data header: type, reserved, receiver index, counter.
pub const DATA_HEADER_LEN: usize = 16;
/// Bytes a data message adds to its padded packet: header and tag. A
/// keepalive is a data message with nothing inside: exactly this long.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN;
/// Inner packets are padded with zeros to a multiple of this (section 5.4.6).
pub const PADDING: usize = 16;
/// Bytes of the cookie reply's nonce (XChaCha20-Poly1305's 192 bits).
pub const COOKIE_NONCE_LEN: usize = 24;
// ANCHOR_END: types

/// Why a message was refused before any cryptography.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than its type requires, or (for the fixed-size messages)
    /// not exactly its length.
    Truncated,
    /// A type we do not know.
    BadType,
    /// Reserved bytes that are not zero.
    BadReserved,
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

mod field {
    use std::ops::Range;
    pub const TYPE: usize = 0;
    pub const RESERVED: Range<usize> = 1..4;
    /// The sender index of handshake messages; the receiver index of the
    /// cookie reply and of data messages.
    pub const INDEX: Range<usize> = 4..8;

    pub const I_EPHEMERAL: Range<usize> = 8..40;
    pub const I_STATIC: Range<usize> = 40..88;
    pub const I_TIMESTAMP: Range<usize> = 88..116;
    // mac1 and mac2 end every handshake message: see `HandshakeMessage`.

    pub const R_RECEIVER: Range<usize> = 8..12;
    pub const R_EPHEMERAL: Range<usize> = 12..44;
    pub const R_EMPTY: Range<usize> = 44..60;

    pub const C_NONCE: Range<usize> = 8..32;
    pub const C_COOKIE: Range<usize> = 32..64;

    pub const D_COUNTER: Range<usize> = 8..16;
    pub const D_PAYLOAD: usize = 16;
}

fn check(bytes: &[u8], kind: MessageType, len_ok: bool) -> Result<(), Error> {
    match bytes.first() {
        None => return Err(Error::Truncated),
        Some(&t) if t != kind as u8 => return Err(Error::BadType),
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

fn u32_at(bytes: &[u8], range: Range<usize>) -> u32 {
    u32::from_le_bytes(array(bytes, range))
}

fn array<const N: usize>(bytes: &[u8], range: Range<usize>) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&bytes[range]);
    b
}

fn write_header(bytes: &mut [u8], kind: MessageType) {
    bytes[field::TYPE] = kind as u8;
    bytes[field::RESERVED].fill(0);
}

// ANCHOR: handshake_trait
/// What the two handshake messages share: a sender index, an ephemeral
/// key, and the two MACs at their end (section 5.4.4): mac1 over every
/// byte before it, mac2 over every byte before it (mac1 included).
pub trait HandshakeMessage {
    /// The whole message.
    fn bytes(&self) -> &[u8];
    fn sender(&self) -> u32 {
        u32_at(self.bytes(), field::INDEX)
    }
    /// Where mac1 starts; mac2 follows it, 16 bytes each, at the end.
    fn mac1_at(&self) -> usize {
        self.bytes().len() - 2 * TAG_LEN
    }
    fn mac1(&self) -> [u8; TAG_LEN] {
        let at = self.mac1_at();
        array(self.bytes(), at..at + TAG_LEN)
    }
    fn mac2(&self) -> [u8; TAG_LEN] {
        let at = self.mac1_at() + TAG_LEN;
        array(self.bytes(), at..at + TAG_LEN)
    }
    /// The bytes mac1 covers.
    fn mac1_covered(&self) -> &[u8] {
        &self.bytes()[..self.mac1_at()]
    }
    /// The bytes mac2 covers: mac1's and mac1 itself.
    fn mac2_covered(&self) -> &[u8] {
        &self.bytes()[..self.mac1_at() + TAG_LEN]
    }
}
// ANCHOR_END: handshake_trait

// ANCHOR: initiation
/// A view of a handshake initiation (section 5.4.2).
#[derive(Debug, Clone)]
pub struct Initiation<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Initiation<T> {
    /// Checks the type, the length (exactly 148) and the reserved bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        check(b, MessageType::Initiation, b.len() == INITIATION_LEN)?;
        Ok(Self { buffer })
    }
    pub fn ephemeral(&self) -> [u8; 32] {
        array(self.buffer.as_ref(), field::I_EPHEMERAL)
    }
    /// The initiator's static public key, sealed (32 + 16 bytes).
    pub fn sealed_static(&self) -> [u8; 48] {
        array(self.buffer.as_ref(), field::I_STATIC)
    }
    /// The initiator's TAI64N timestamp, sealed (12 + 16 bytes).
    pub fn sealed_timestamp(&self) -> [u8; 28] {
        array(self.buffer.as_ref(), field::I_TIMESTAMP)
    }
}

impl<T: AsRef<[u8]>> HandshakeMessage for Initiation<T> {
    fn bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..INITIATION_LEN]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Initiation<T> {
    /// A view over the first [`INITIATION_LEN`] bytes of `buffer` (or
    /// `None` when it is shorter), with the header written.
    pub fn new_emit(mut buffer: T) -> Option<Self> {
        write_header(
            buffer.as_mut().get_mut(..INITIATION_LEN)?,
            MessageType::Initiation,
        );
        Some(Self { buffer })
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[..INITIATION_LEN]
    }
    pub fn set_sender(&mut self, index: u32) {
        self.bytes_mut()[field::INDEX].copy_from_slice(&index.to_le_bytes());
    }
    pub fn set_ephemeral(&mut self, key: &[u8; 32]) {
        self.bytes_mut()[field::I_EPHEMERAL].copy_from_slice(key);
    }
    pub fn sealed_static_mut(&mut self) -> &mut [u8] {
        &mut self.bytes_mut()[field::I_STATIC]
    }
    pub fn sealed_timestamp_mut(&mut self) -> &mut [u8] {
        &mut self.bytes_mut()[field::I_TIMESTAMP]
    }
    /// The whole message, to fill in the MACs.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}
// ANCHOR_END: initiation

/// A view of a handshake response (section 5.4.3).
#[derive(Debug, Clone)]
pub struct Response<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Response<T> {
    /// Checks the type, the length (exactly 92) and the reserved bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        check(b, MessageType::Response, b.len() == RESPONSE_LEN)?;
        Ok(Self { buffer })
    }
    pub fn receiver(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::R_RECEIVER)
    }
    pub fn ephemeral(&self) -> [u8; 32] {
        array(self.buffer.as_ref(), field::R_EPHEMERAL)
    }
    /// The empty payload, sealed: only a tag.
    pub fn sealed_empty(&self) -> [u8; TAG_LEN] {
        array(self.buffer.as_ref(), field::R_EMPTY)
    }
}

impl<T: AsRef<[u8]>> HandshakeMessage for Response<T> {
    fn bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..RESPONSE_LEN]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Response<T> {
    pub fn new_emit(mut buffer: T) -> Option<Self> {
        write_header(buffer.as_mut().get_mut(..RESPONSE_LEN)?, MessageType::Response);
        Some(Self { buffer })
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[..RESPONSE_LEN]
    }
    pub fn set_sender(&mut self, index: u32) {
        self.bytes_mut()[field::INDEX].copy_from_slice(&index.to_le_bytes());
    }
    pub fn set_receiver(&mut self, index: u32) {
        self.bytes_mut()[field::R_RECEIVER].copy_from_slice(&index.to_le_bytes());
    }
    pub fn set_ephemeral(&mut self, key: &[u8; 32]) {
        self.bytes_mut()[field::R_EPHEMERAL].copy_from_slice(key);
    }
    pub fn set_sealed_empty(&mut self, tag: &[u8; TAG_LEN]) {
        self.bytes_mut()[field::R_EMPTY].copy_from_slice(tag);
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// Writes mac1 and mac2 at the end of a handshake message of `len` bytes
/// in `message`, computing each with `mac1` and `mac2` from the bytes it
/// covers. `mac2` returns `None` when there is no cookie: mac2 is then
/// zeros (section 5.4.4).
pub fn fill_macs(
    message: &mut [u8],
    mac1: impl FnOnce(&[u8]) -> [u8; TAG_LEN],
    mac2: impl FnOnce(&[u8]) -> Option<[u8; TAG_LEN]>,
) {
    let at = message.len() - 2 * TAG_LEN;
    let m1 = mac1(&message[..at]);
    message[at..at + TAG_LEN].copy_from_slice(&m1);
    let m2 = mac2(&message[..at + TAG_LEN]).unwrap_or([0; TAG_LEN]);
    message[at + TAG_LEN..].copy_from_slice(&m2);
}

// ANCHOR: cookie_reply
/// A view of a cookie reply (section 5.4.7): the cookie, sealed with
/// XChaCha20-Poly1305 under a random 24-byte nonce, so that only the
/// holder of the initiation's mac1 (its sender) can open it.
#[derive(Debug, Clone)]
pub struct CookieReply<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> CookieReply<T> {
    /// Checks the type, the length (exactly 64) and the reserved bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        check(b, MessageType::CookieReply, b.len() == COOKIE_REPLY_LEN)?;
        Ok(Self { buffer })
    }
    /// The sender index of the handshake message this answers.
    pub fn receiver(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::INDEX)
    }
    pub fn nonce(&self) -> [u8; COOKIE_NONCE_LEN] {
        array(self.buffer.as_ref(), field::C_NONCE)
    }
    /// The 16-byte cookie, sealed (16 + 16 bytes).
    pub fn sealed_cookie(&self) -> [u8; 32] {
        array(self.buffer.as_ref(), field::C_COOKIE)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> CookieReply<T> {
    pub fn new_emit(mut buffer: T) -> Option<Self> {
        write_header(
            buffer.as_mut().get_mut(..COOKIE_REPLY_LEN)?,
            MessageType::CookieReply,
        );
        Some(Self { buffer })
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[..COOKIE_REPLY_LEN]
    }
    pub fn set_receiver(&mut self, index: u32) {
        self.bytes_mut()[field::INDEX].copy_from_slice(&index.to_le_bytes());
    }
    pub fn set_nonce(&mut self, nonce: &[u8; COOKIE_NONCE_LEN]) {
        self.bytes_mut()[field::C_NONCE].copy_from_slice(nonce);
    }
    pub fn sealed_cookie_mut(&mut self) -> &mut [u8] {
        &mut self.bytes_mut()[field::C_COOKIE]
    }
}
// ANCHOR_END: cookie_reply

// ANCHOR: data
/// A view of a transport data message (section 5.4.6): a header in the
/// clear (and authenticated), then the sealed, padded packet.
#[derive(Debug, Clone)]
pub struct Data<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Data<T> {
    /// Checks the type, the reserved bytes, and that there is room for at
    /// least the header and the tag.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        check(b, MessageType::Data, b.len() >= DATA_OVERHEAD)?;
        Ok(Self { buffer })
    }
    pub fn receiver(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::INDEX)
    }
    pub fn counter(&self) -> u64 {
        u64::from_le_bytes(array(self.buffer.as_ref(), field::D_COUNTER))
    }
    /// Bytes of the sealed packet without its tag.
    pub fn payload_len(&self) -> usize {
        self.buffer.as_ref().len() - DATA_OVERHEAD
    }
    /// The sealed packet, without its tag.
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
    write_header(out, MessageType::Data);
    out[field::INDEX].copy_from_slice(&receiver.to_le_bytes());
    out[field::D_COUNTER].copy_from_slice(&counter.to_le_bytes());
}

/// The length of a packet of `len` bytes padded to a multiple of 16, but
/// never past `mtu` (section 5.4.6: the padding must not make a packet
/// the MTU allows too big for the underlay).
pub fn padded_len(len: usize, mtu: usize) -> usize {
    len.next_multiple_of(PADDING).min(mtu.max(len))
}
// ANCHOR_END: data

/// A message in one tcpdump-like line.
pub struct MessageSummary<'a>(pub &'a [u8]);

impl fmt::Display for MessageSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        let bad = |f: &mut fmt::Formatter<'_>, e: Error| write!(f, "malformed ({e}), {} bytes", b.len());
        let mac2 = |m: [u8; 16]| if m == [0; 16] { "" } else { ", mac2" };
        match MessageType::of(b) {
            Some(MessageType::Initiation) => match Initiation::new_checked(b) {
                Ok(p) => write!(
                    f,
                    "handshake initiation, sender {:#010x}{}",
                    p.sender(),
                    mac2(p.mac2())
                ),
                Err(e) => bad(f, e),
            },
            Some(MessageType::Response) => match Response::new_checked(b) {
                Ok(p) => write!(
                    f,
                    "handshake response, sender {:#010x}, receiver {:#010x}{}",
                    p.sender(),
                    p.receiver(),
                    mac2(p.mac2())
                ),
                Err(e) => bad(f, e),
            },
            Some(MessageType::CookieReply) => match CookieReply::new_checked(b) {
                Ok(p) => write!(f, "cookie reply, receiver {:#010x}", p.receiver()),
                Err(e) => bad(f, e),
            },
            Some(MessageType::Data) => match Data::new_checked(b) {
                Ok(p) if p.payload_len() == 0 => write!(
                    f,
                    "keepalive, receiver {:#010x}, counter {}",
                    p.receiver(),
                    p.counter()
                ),
                Ok(p) => write!(
                    f,
                    "data, receiver {:#010x}, counter {}, {} bytes sealed",
                    p.receiver(),
                    p.counter(),
                    p.payload_len()
                ),
                Err(e) => bad(f, e),
            },
            None => bad(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_the_whitepapers() {
        // Section 5.4.2: 1 + 3 + 4 + 32 + (32 + 16) + (12 + 16) + 16 + 16.
        assert_eq!(INITIATION_LEN, 4 + 4 + 32 + 48 + 28 + 16 + 16);
        // Section 5.4.3: 1 + 3 + 4 + 4 + 32 + (0 + 16) + 16 + 16.
        assert_eq!(RESPONSE_LEN, 4 + 4 + 4 + 32 + 16 + 16 + 16);
        // Section 5.4.7: 1 + 3 + 4 + 24 + (16 + 16).
        assert_eq!(COOKIE_REPLY_LEN, 4 + 4 + 24 + 32);
        assert_eq!(DATA_OVERHEAD, 32);
    }

    #[test]
    fn data_header_layout() {
        let mut m = [0u8; DATA_OVERHEAD + 16];
        let mut header = [0u8; DATA_HEADER_LEN];
        emit_data_header(&mut header, 0x0403_0201, 0x0102_0304_0506_0708);
        m[..DATA_HEADER_LEN].copy_from_slice(&header);
        assert_eq!(&m[..8], &[4, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(&m[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        let p = Data::new_checked(&m[..]).unwrap();
        assert_eq!(p.receiver(), 0x0403_0201);
        assert_eq!(p.counter(), 0x0102_0304_0506_0708);
        assert_eq!(p.payload_len(), 16);
        assert_eq!(
            MessageSummary(&m).to_string(),
            "data, receiver 0x04030201, counter 72623859790382856, 16 bytes sealed"
        );
        assert_eq!(
            MessageSummary(&m[..32]).to_string(),
            "keepalive, receiver 0x04030201, counter 72623859790382856"
        );
    }

    #[test]
    fn macs_cover_what_the_whitepaper_says() {
        let mut m = [0u8; INITIATION_LEN];
        let mut seen = (0, 0);
        fill_macs(
            &mut m,
            |covered| {
                seen.0 = covered.len();
                [1; 16]
            },
            |covered| {
                seen.1 = covered.len();
                assert_eq!(&covered[116..], &[1; 16], "mac2 covers mac1");
                None
            },
        );
        assert_eq!(seen, (116, 132));
        assert_eq!(&m[116..132], &[1; 16]);
        assert_eq!(&m[132..], &[0; 16], "no cookie: mac2 is zeros");
        m[0] = 1;
        let p = Initiation::new_checked(&m[..]).unwrap();
        assert_eq!(p.mac1(), [1; 16]);
        assert_eq!(p.mac1_covered().len(), 116);
        assert_eq!(p.mac2_covered().len(), 132);
        let mut r = [0u8; RESPONSE_LEN];
        r[0] = 2;
        let p = Response::new_checked(&r[..]).unwrap();
        assert_eq!((p.mac1_covered().len(), p.mac2_covered().len()), (60, 76));
    }

    #[test]
    fn padding_stops_at_the_mtu() {
        assert_eq!(padded_len(0, 1420), 0);
        assert_eq!(padded_len(1, 1420), 16);
        assert_eq!(padded_len(84, 1420), 96);
        assert_eq!(padded_len(1419, 1420), 1420);
        assert_eq!(padded_len(1420, 1420), 1420);
        // A packet the MTU would not allow is never cut.
        assert_eq!(padded_len(1500, 1420), 1500);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let mut m = [0u8; DATA_OVERHEAD];
        m[0] = 4;
        assert!(Data::new_checked(&m[..]).is_ok());
        assert_eq!(Data::new_checked(&m[..31]).unwrap_err(), Error::Truncated);
        m[3] = 1;
        assert_eq!(Data::new_checked(&m[..]).unwrap_err(), Error::BadReserved);
        let mut i = [0u8; INITIATION_LEN];
        i[0] = 1;
        assert!(Initiation::new_checked(&i[..]).is_ok());
        assert_eq!(Initiation::new_checked(&i[..147]).unwrap_err(), Error::Truncated);
        // Step 04's 132-byte initiation is not a WireGuard one.
        assert_eq!(Initiation::new_checked(&i[..132]).unwrap_err(), Error::Truncated);
        assert_eq!(Response::new_checked(&i[..92]).unwrap_err(), Error::BadType);
        let mut c = [0u8; COOKIE_REPLY_LEN];
        c[0] = 3;
        assert!(CookieReply::new_checked(&c[..]).is_ok());
        assert_eq!(CookieReply::new_checked(&c[..63]).unwrap_err(), Error::Truncated);
        assert_eq!(
            MessageSummary(&[9, 0]).to_string(),
            "malformed (bad-type), 2 bytes"
        );
        assert_eq!(MessageSummary(&[]).to_string(), "malformed (truncated), 0 bytes");
        assert!(Initiation::new_emit(&mut [0u8; 147][..]).is_none());
        assert!(Response::new_emit(&mut [0u8; 91][..]).is_none());
        assert!(CookieReply::new_emit(&mut [0u8; 63][..]).is_none());
    }
}
