//! The control protocol's frames: what the client and the server say to
//! each other inside the encrypted control connection.
//!
//! Every frame has the same 8-byte header, in network byte order (our
//! own protocol, so big-endian like most IETF formats; step 04's
//! little-endian is WireGuard's choice, not ours):
//!
//! ```text
//! 0  type (u8)       1  reserved, zero (u8)
//! 2  body length (u16)
//! 4  stream (u32): 0 on session frames, never 0 on stream frames
//! 8  body (length bytes, at most MAX_BODY)
//! ```
//!
//! | type | frame   | body                                   | who sends it          |
//! |------|---------|----------------------------------------|-----------------------|
//! | 1    | Hello   | version (u16)                          | client, first         |
//! | 2    | Expose  | port (u16, 0 = any), protocols (1-2 u8)| client                |
//! | 3    | Exposed | port (u16)                             | server                |
//! | 4    | Error   | code (u16), text (UTF-8, ≤ 256 bytes)  | either                |
//! | 5    | Ping    | opaque (u64)                           | either                |
//! | 6    | Pong    | the ping's opaque (u64)                | either                |
//! | 16   | Open    | (empty); 17 (u8) for a UDP flow        | the stream's opener   |
//! | 17   | Data    | 1 to MAX_DATA bytes                    | either                |
//! | 18   | Window  | credit (u32, > 0)                      | either                |
//! | 19   | Close   | (empty): no more data this way (FIN)   | either                |
//! | 20   | Reset   | (empty): the stream is gone both ways  | either                |
//!
//! Protocols are IANA's numbers (6 TCP, 17 UDP). Expose lists one or
//! both, in ascending order, so a TCP-only Expose is `port, 6`. An Open
//! with no body is a TCP visitor; one with body `17` is a UDP flow (one
//! visitor address), whose stream carries length-prefixed datagrams (see
//! [`crate::datagram`]).
//!
//! One frame travels in one sealed record (see [`crate::secure`]), and
//! the record has its own length, so the frame's length field is checked
//! against the record: they must agree exactly.

use std::fmt;

/// Bytes of the header.
pub const HEADER_LEN: usize = 8;
/// The most payload one Data frame carries. Small frames keep the streams
/// sharing the control connection interleaved finely: a 16 KiB frame
/// takes about 0.1 ms at 1 Gbit/s, which is the longest any stream waits
/// behind another's frame.
pub const MAX_DATA: usize = 16 * 1024;
/// The longest text of an Error frame.
pub const MAX_ERROR_TEXT: usize = 256;
/// The longest body of any frame.
pub const MAX_BODY: usize = MAX_DATA;
/// The longest frame.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_BODY;
/// The protocol version Hello carries.
pub const VERSION: u16 = 1;

mod field {
    use std::ops::Range;
    pub const TYPE: usize = 0;
    pub const RESERVED: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const STREAM: Range<usize> = 4..8;
    pub const BODY: usize = 8;
}

/// The frame types.
pub mod kind {
    pub const HELLO: u8 = 1;
    pub const EXPOSE: u8 = 2;
    pub const EXPOSED: u8 = 3;
    pub const ERROR: u8 = 4;
    pub const PING: u8 = 5;
    pub const PONG: u8 = 6;
    pub const OPEN: u8 = 16;
    pub const DATA: u8 = 17;
    pub const WINDOW: u8 = 18;
    pub const CLOSE: u8 = 19;
    pub const RESET: u8 = 20;
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the header, or than the header says.
    Truncated,
    /// Longer than the header says, or than [`MAX_FRAME`].
    TooLong,
    /// A type we do not know.
    BadType,
    /// The reserved byte is not zero.
    BadReserved,
    /// A body whose length its type does not allow.
    BadLength,
    /// Stream 0 on a stream frame, or another stream on a session frame.
    BadStream,
    /// A body its type does not allow: text that is not UTF-8, an unknown
    /// protocol, a zero credit.
    BadBody,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated",
            Error::TooLong => "too-long",
            Error::BadType => "bad-type",
            Error::BadReserved => "bad-reserved",
            Error::BadLength => "bad-length",
            Error::BadStream => "bad-stream",
            Error::BadBody => "bad-body",
        })
    }
}

impl std::error::Error for Error {}

/// Whether a frame of `kind` may carry a body of `len` bytes.
fn body_len_ok(kind: u8, len: usize) -> Result<bool, Error> {
    Ok(match kind {
        kind::HELLO | kind::EXPOSED => len == 2,
        kind::EXPOSE => len == 3 || len == 4,
        kind::ERROR => (2..=2 + MAX_ERROR_TEXT).contains(&len),
        kind::PING | kind::PONG => len == 8,
        kind::OPEN => len <= 1,
        kind::CLOSE | kind::RESET => len == 0,
        kind::DATA => (1..=MAX_DATA).contains(&len),
        kind::WINDOW => len == 4,
        _ => return Err(Error::BadType),
    })
}

/// Whether frames of `kind` belong to a stream.
pub fn is_stream_kind(kind: u8) -> bool {
    kind >= kind::OPEN
}

// ANCHOR: frame_view
/// A view of one frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Checks the header, that the length field matches the buffer
    /// exactly, and that the body's length suits the type. After this no
    /// accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b.len() > MAX_FRAME {
            return Err(Error::TooLong);
        }
        if b[field::RESERVED] != 0 {
            return Err(Error::BadReserved);
        }
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        match (HEADER_LEN + len).cmp(&b.len()) {
            std::cmp::Ordering::Greater => return Err(Error::Truncated),
            std::cmp::Ordering::Less => return Err(Error::TooLong),
            std::cmp::Ordering::Equal => {}
        }
        if !body_len_ok(b[field::TYPE], len)? {
            return Err(Error::BadLength);
        }
        Ok(Self { buffer })
    }

    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }
    pub fn body_len(&self) -> usize {
        let b = &self.buffer.as_ref()[field::LENGTH];
        usize::from(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn stream(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::STREAM];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[field::BODY..]
    }
    /// The first two bytes of the body as a u16: Hello's version,
    /// Expose's and Exposed's port, Error's code (0 for a shorter body).
    pub fn u16_field(&self) -> u16 {
        match self.body() {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => 0,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Writes the header into the first [`HEADER_LEN`] bytes.
    fn set_header(&mut self, kind: u8, body_len: u16, stream: u32) {
        let b = self.buffer.as_mut();
        b[field::TYPE] = kind;
        b[field::RESERVED] = 0;
        b[field::LENGTH].copy_from_slice(&body_len.to_be_bytes());
        b[field::STREAM].copy_from_slice(&stream.to_be_bytes());
    }
}
// ANCHOR_END: frame_view

/// A transport protocol carried through the tunnel (its numbers are
/// IANA's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

// ANCHOR: protos
/// The protocols an Expose asks for, on one port number: TCP, UDP or
/// both (bore carries only TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protos {
    pub tcp: bool,
    pub udp: bool,
}
// ANCHOR_END: protos

impl Protos {
    pub const TCP: Protos = Protos {
        tcp: true,
        udp: false,
    };
    pub const UDP: Protos = Protos {
        tcp: false,
        udp: true,
    };
    pub const BOTH: Protos = Protos { tcp: true, udp: true };

    /// Whether `proto` is one of them.
    pub fn contains(self, proto: Proto) -> bool {
        match proto {
            Proto::Tcp => self.tcp,
            Proto::Udp => self.udp,
        }
    }

    /// The IANA numbers, ascending.
    fn numbers(self) -> impl Iterator<Item = u8> {
        [(self.tcp, Proto::Tcp), (self.udp, Proto::Udp)]
            .into_iter()
            .filter_map(|(on, p)| on.then_some(p.number()))
    }

    fn count(self) -> usize {
        usize::from(self.tcp) + usize::from(self.udp)
    }

    /// Parses one or two known numbers in ascending order (so every set
    /// has exactly one encoding).
    fn from_numbers(numbers: &[u8]) -> Option<Self> {
        let protos: Vec<Proto> = numbers
            .iter()
            .map(|&n| Proto::from_number(n))
            .collect::<Option<_>>()?;
        if numbers.windows(2).any(|w| w[0] >= w[1]) {
            return None;
        }
        Some(Protos {
            tcp: protos.contains(&Proto::Tcp),
            udp: protos.contains(&Proto::Udp),
        })
    }
}

impl fmt::Display for Protos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.tcp, self.udp) {
            (true, true) => "tcp+udp",
            (true, false) => "tcp",
            (false, true) => "udp",
            (false, false) => "nothing",
        })
    }
}

/// The code of an Error frame. Codes we do not know still parse, so an
/// older end can show what a newer one says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The port is exposed by another client.
    PortInUse,
    /// The server does not give out this port (privileged, or not free).
    PortUnavailable,
    /// A protocol or version the other end does not speak.
    Unsupported,
    /// The other end broke the protocol; the connection closes.
    Protocol,
    Other(u16),
}

impl ErrorCode {
    pub fn number(self) -> u16 {
        match self {
            ErrorCode::PortInUse => 1,
            ErrorCode::PortUnavailable => 2,
            ErrorCode::Unsupported => 3,
            ErrorCode::Protocol => 4,
            ErrorCode::Other(n) => n,
        }
    }
    pub fn from_number(n: u16) -> Self {
        match n {
            1 => ErrorCode::PortInUse,
            2 => ErrorCode::PortUnavailable,
            3 => ErrorCode::Unsupported,
            4 => ErrorCode::Protocol,
            n => ErrorCode::Other(n),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::PortInUse => f.write_str("port-in-use"),
            ErrorCode::PortUnavailable => f.write_str("port-unavailable"),
            ErrorCode::Unsupported => f.write_str("unsupported"),
            ErrorCode::Protocol => f.write_str("protocol-error"),
            ErrorCode::Other(n) => write!(f, "code-{n}"),
        }
    }
}

// ANCHOR: repr
/// What a frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr<'a> {
    Hello { version: u16 },
    Expose { port: u16, protos: Protos },
    Exposed { port: u16 },
    Error { code: ErrorCode, text: &'a str },
    Ping { opaque: u64 },
    Pong { opaque: u64 },
    Open { stream: u32, proto: Proto },
    Data { stream: u32, bytes: &'a [u8] },
    Window { stream: u32, credit: u32 },
    Close { stream: u32 },
    Reset { stream: u32 },
}
// ANCHOR_END: repr

impl<'a> Frame<&'a [u8]> {
    /// The body, borrowed for as long as the bytes under the view.
    pub fn body_ref(&self) -> &'a [u8] {
        &self.buffer[field::BODY..]
    }
}

impl<'a> Repr<'a> {
    // ANCHOR: parse
    /// Parses a checked frame: the stream id must suit the type, text must
    /// be UTF-8, a protocol one we know, a credit more than zero.
    pub fn parse(frame: &Frame<&'a [u8]>) -> Result<Self, Error> {
        let kind = frame.kind();
        let stream = frame.stream();
        if is_stream_kind(kind) != (stream != 0) {
            return Err(Error::BadStream);
        }
        let body = frame.body_ref();
        let u64_body = || {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[..8]);
            u64::from_be_bytes(b)
        };
        Ok(match kind {
            kind::HELLO => Repr::Hello {
                version: frame.u16_field(),
            },
            kind::EXPOSE => Repr::Expose {
                port: frame.u16_field(),
                protos: Protos::from_numbers(&body[2..]).ok_or(Error::BadBody)?,
            },
            kind::EXPOSED => Repr::Exposed {
                port: frame.u16_field(),
            },
            kind::ERROR => Repr::Error {
                code: ErrorCode::from_number(frame.u16_field()),
                text: std::str::from_utf8(&body[2..]).map_err(|_| Error::BadBody)?,
            },
            kind::PING => Repr::Ping { opaque: u64_body() },
            kind::PONG => Repr::Pong { opaque: u64_body() },
            kind::OPEN => Repr::Open {
                stream,
                // TCP is the empty body, so UDP is the only number here.
                proto: match body {
                    [] => Proto::Tcp,
                    [17] => Proto::Udp,
                    _ => return Err(Error::BadBody),
                },
            },
            kind::DATA => Repr::Data { stream, bytes: body },
            kind::WINDOW => {
                let credit = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                if credit == 0 {
                    return Err(Error::BadBody);
                }
                Repr::Window { stream, credit }
            }
            kind::CLOSE => Repr::Close { stream },
            kind::RESET => Repr::Reset { stream },
            _ => return Err(Error::BadType),
        })
    }
    // ANCHOR_END: parse

    /// Checks and parses untrusted bytes in one go.
    pub fn parse_bytes(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::parse(&Frame::new_checked(bytes)?)
    }

    fn kind_and_stream(&self) -> (u8, u32) {
        match *self {
            Repr::Hello { .. } => (kind::HELLO, 0),
            Repr::Expose { .. } => (kind::EXPOSE, 0),
            Repr::Exposed { .. } => (kind::EXPOSED, 0),
            Repr::Error { .. } => (kind::ERROR, 0),
            Repr::Ping { .. } => (kind::PING, 0),
            Repr::Pong { .. } => (kind::PONG, 0),
            Repr::Open { stream, .. } => (kind::OPEN, stream),
            Repr::Data { stream, .. } => (kind::DATA, stream),
            Repr::Window { stream, .. } => (kind::WINDOW, stream),
            Repr::Close { stream } => (kind::CLOSE, stream),
            Repr::Reset { stream } => (kind::RESET, stream),
        }
    }

    /// Bytes of the body.
    fn body_len(&self) -> usize {
        match self {
            Repr::Hello { .. } | Repr::Exposed { .. } => 2,
            Repr::Expose { protos, .. } => 2 + protos.count(),
            Repr::Error { text, .. } => 2 + text.len(),
            Repr::Ping { .. } | Repr::Pong { .. } => 8,
            Repr::Open {
                proto: Proto::Tcp, ..
            } => 0,
            Repr::Open {
                proto: Proto::Udp, ..
            } => 1,
            Repr::Close { .. } | Repr::Reset { .. } => 0,
            Repr::Data { bytes, .. } => bytes.len(),
            Repr::Window { .. } => 4,
        }
    }

    /// Bytes of the whole frame.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// Whether this frame can be emitted: the limits a parser would check
    /// (a body length its type allows, the right kind of stream id, no
    /// zero credit). Errors longer than [`MAX_ERROR_TEXT`] are cut by
    /// [`Repr::error`], not here.
    pub fn check(&self) -> Result<(), Error> {
        let (kind, stream) = self.kind_and_stream();
        if is_stream_kind(kind) != (stream != 0) {
            return Err(Error::BadStream);
        }
        if !body_len_ok(kind, self.body_len())? {
            return Err(Error::BadLength);
        }
        if let Repr::Window { credit: 0, .. } = self {
            return Err(Error::BadBody);
        }
        Ok(())
    }

    /// An Error frame, its text cut (at a character boundary) to
    /// [`MAX_ERROR_TEXT`] bytes.
    pub fn error(code: ErrorCode, text: &'a str) -> Self {
        let mut end = text.len().min(MAX_ERROR_TEXT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Repr::Error {
            code,
            text: &text[..end],
        }
    }

    /// Appends the frame to `out`: the header, then the body, each
    /// copied once (no zero-filling first).
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.check()?;
        let (kind, stream) = self.kind_and_stream();
        let mut header = Frame {
            buffer: [0u8; HEADER_LEN],
        };
        // check() bounded the body to MAX_BODY, so it fits in a u16.
        header.set_header(kind, self.body_len() as u16, stream);
        out.reserve(self.buffer_len());
        out.extend_from_slice(&header.buffer);
        match *self {
            Repr::Hello { version: n } | Repr::Exposed { port: n } => out.extend_from_slice(&n.to_be_bytes()),
            Repr::Expose { port, protos } => {
                out.extend_from_slice(&port.to_be_bytes());
                out.extend(protos.numbers());
            }
            Repr::Error { code, text } => {
                out.extend_from_slice(&code.number().to_be_bytes());
                out.extend_from_slice(text.as_bytes());
            }
            Repr::Ping { opaque } | Repr::Pong { opaque } => out.extend_from_slice(&opaque.to_be_bytes()),
            Repr::Data { bytes, .. } => out.extend_from_slice(bytes),
            Repr::Window { credit, .. } => out.extend_from_slice(&credit.to_be_bytes()),
            Repr::Open {
                proto: Proto::Udp, ..
            } => out.push(Proto::Udp.number()),
            Repr::Open { .. } | Repr::Close { .. } | Repr::Reset { .. } => {}
        }
        Ok(())
    }
}

impl fmt::Display for Repr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repr::Hello { version } => write!(f, "hello v{version}"),
            Repr::Expose { port: 0, protos } => write!(f, "expose {protos} any port"),
            Repr::Expose { port, protos } => write!(f, "expose {protos} port {port}"),
            Repr::Exposed { port } => write!(f, "exposed port {port}"),
            Repr::Error { code, text } => write!(f, "error {code}: {}", text.escape_debug()),
            Repr::Ping { opaque } => write!(f, "ping {opaque:#x}"),
            Repr::Pong { opaque } => write!(f, "pong {opaque:#x}"),
            Repr::Open {
                stream,
                proto: Proto::Tcp,
            } => write!(f, "open #{stream}"),
            Repr::Open { stream, proto } => write!(f, "open #{stream} {proto}"),
            Repr::Data { stream, bytes } => write!(f, "data #{stream} {} bytes", bytes.len()),
            Repr::Window { stream, credit } => write!(f, "window #{stream} +{credit}"),
            Repr::Close { stream } => write!(f, "close #{stream}"),
            Repr::Reset { stream } => write!(f, "reset #{stream}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_kinds() -> Vec<Repr<'static>> {
        vec![
            Repr::Hello { version: VERSION },
            Repr::Expose {
                port: 8080,
                protos: Protos::TCP,
            },
            Repr::Expose {
                port: 0,
                protos: Protos::UDP,
            },
            Repr::Expose {
                port: 8000,
                protos: Protos::BOTH,
            },
            Repr::Exposed { port: 40000 },
            Repr::Error {
                code: ErrorCode::PortInUse,
                text: "port 8080 is in use",
            },
            Repr::Error {
                code: ErrorCode::Other(99),
                text: "",
            },
            Repr::Ping { opaque: 7 },
            Repr::Pong { opaque: u64::MAX },
            Repr::Open {
                stream: 2,
                proto: Proto::Tcp,
            },
            Repr::Open {
                stream: 4,
                proto: Proto::Udp,
            },
            Repr::Data {
                stream: 2,
                bytes: b"GET / HTTP/1.1\r\n",
            },
            Repr::Window {
                stream: 2,
                credit: 262_144,
            },
            Repr::Close { stream: 2 },
            Repr::Reset { stream: 3 },
        ]
    }

    #[test]
    fn test_emit() {
        let mut out = Vec::new();
        Repr::Window {
            stream: 0x0102_0304,
            credit: 0x0004_0000,
        }
        .emit(&mut out)
        .unwrap();
        assert_eq!(out, [18, 0, 0, 4, 1, 2, 3, 4, 0, 4, 0, 0]);
        out.clear();
        Repr::Expose {
            port: 8080,
            protos: Protos::TCP,
        }
        .emit(&mut out)
        .unwrap();
        assert_eq!(out, [2, 0, 0, 3, 0, 0, 0, 0, 0x1f, 0x90, 6]);
        out.clear();
        Repr::Expose {
            port: 8080,
            protos: Protos::BOTH,
        }
        .emit(&mut out)
        .unwrap();
        assert_eq!(out, [2, 0, 0, 4, 0, 0, 0, 0, 0x1f, 0x90, 6, 17]);
        out.clear();
        Repr::Open {
            stream: 2,
            proto: Proto::Udp,
        }
        .emit(&mut out)
        .unwrap();
        assert_eq!(out, [16, 0, 0, 1, 0, 0, 0, 2, 17]);
    }

    #[test]
    fn test_parse() {
        let bytes = [17, 0, 0, 3, 0, 0, 0, 9, b'a', b'b', b'c'];
        assert_eq!(
            Repr::parse_bytes(&bytes),
            Ok(Repr::Data {
                stream: 9,
                bytes: b"abc"
            })
        );
        let frame = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!((frame.kind(), frame.stream(), frame.body_len()), (17, 9, 3));
    }

    #[test]
    fn every_kind_round_trips_and_shows_one_line() {
        let mut lines = String::new();
        for repr in all_kinds() {
            let mut out = Vec::new();
            repr.emit(&mut out).unwrap();
            assert_eq!(out.len(), repr.buffer_len());
            assert_eq!(Repr::parse_bytes(&out), Ok(repr), "{repr}");
            let line = repr.to_string();
            assert!(!line.contains('\n'));
            lines.push_str(&line);
            lines.push('\n');
        }
        insta::with_settings!({snapshot_path => "../tests/snapshots", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!("frames", lines);
        });
    }

    #[test]
    fn test_negative() {
        let good = {
            let mut out = Vec::new();
            Repr::Window { stream: 5, credit: 1 }.emit(&mut out).unwrap();
            out
        };
        let with = |i: usize, v: u8| {
            let mut b = good.clone();
            b[i] = v;
            b
        };
        assert_eq!(Repr::parse_bytes(&good[..7]).err(), Some(Error::Truncated));
        assert_eq!(Repr::parse_bytes(&good[..11]).err(), Some(Error::Truncated));
        assert_eq!(
            Repr::parse_bytes(&[&good[..], &[0]].concat()).err(),
            Some(Error::TooLong)
        );
        assert_eq!(Repr::parse_bytes(&with(0, 99)).err(), Some(Error::BadType));
        assert_eq!(Repr::parse_bytes(&with(1, 1)).err(), Some(Error::BadReserved));
        // A window frame on stream 0, and one with zero credit.
        let mut b = good.clone();
        b[4..8].fill(0);
        assert_eq!(Repr::parse_bytes(&b).err(), Some(Error::BadStream));
        let mut b = good.clone();
        b[8..].fill(0);
        assert_eq!(Repr::parse_bytes(&b).err(), Some(Error::BadBody));
        // Open with a long body or one that is not UDP; Hello on a stream;
        // bad UTF-8; unknown protocols, out of order or repeated; none.
        assert_eq!(
            Repr::parse_bytes(&[16, 0, 0, 2, 0, 0, 0, 1, 17, 0]).err(),
            Some(Error::BadLength)
        );
        assert_eq!(
            Repr::parse_bytes(&[16, 0, 0, 1, 0, 0, 0, 1, 6]).err(),
            Some(Error::BadBody)
        );
        for protos in [[17, 6], [6, 6], [6, 1]] {
            let frame = [&[2, 0, 0, 4, 0, 0, 0, 0, 0, 80][..], &protos].concat();
            assert_eq!(
                Repr::parse_bytes(&frame).err(),
                Some(Error::BadBody),
                "{protos:?}"
            );
        }
        assert_eq!(
            Repr::parse_bytes(&[2, 0, 0, 2, 0, 0, 0, 0, 0, 80]).err(),
            Some(Error::BadLength)
        );
        assert_eq!(
            Repr::Expose {
                port: 80,
                protos: Protos {
                    tcp: false,
                    udp: false
                }
            }
            .emit(&mut Vec::new()),
            Err(Error::BadLength),
            "an Expose of no protocol has too short a body"
        );
        assert_eq!(
            Repr::parse_bytes(&[1, 0, 0, 2, 0, 0, 0, 1, 0, 1]).err(),
            Some(Error::BadStream)
        );
        assert_eq!(
            Repr::parse_bytes(&[4, 0, 0, 3, 0, 0, 0, 0, 0, 1, 0xff]).err(),
            Some(Error::BadBody)
        );
        assert_eq!(
            Repr::parse_bytes(&[2, 0, 0, 3, 0, 0, 0, 0, 0, 80, 1]).err(),
            Some(Error::BadBody)
        );
        // Empty data, and data over the limit.
        assert_eq!(
            Repr::parse_bytes(&[17, 0, 0, 0, 0, 0, 0, 1]).err(),
            Some(Error::BadLength)
        );
        let big = vec![0u8; MAX_DATA + 1];
        assert_eq!(
            Repr::Data {
                stream: 1,
                bytes: &big
            }
            .emit(&mut Vec::new()),
            Err(Error::BadLength)
        );
    }

    #[test]
    fn error_text_is_cut_at_a_character_boundary() {
        let long = "é".repeat(200); // 400 bytes
        let Repr::Error { text, .. } = Repr::error(ErrorCode::Protocol, &long) else {
            unreachable!()
        };
        assert_eq!(text.len(), MAX_ERROR_TEXT);
        let mut out = Vec::new();
        Repr::error(ErrorCode::Protocol, &long).emit(&mut out).unwrap();
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(repr) = Repr::parse_bytes(&bytes) {
                // Whatever parses emits back to the same bytes.
                let mut out = Vec::new();
                repr.emit(&mut out).unwrap();
                prop_assert_eq!(out, bytes);
            }
        }

        #[test]
        fn arbitrary_headers_with_bodies_never_panic(
            kind in 0u8..24,
            stream in prop_oneof![Just(0u32), any::<u32>()],
            body in proptest::collection::vec(any::<u8>(), 0..40),
            slack in -2i32..2,
        ) {
            let len = (body.len() as i32 + slack).max(0) as u16;
            let mut bytes = vec![kind, 0];
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&stream.to_be_bytes());
            bytes.extend_from_slice(&body);
            if let Ok(frame) = Frame::new_checked(&bytes[..]) {
                let _ = (frame.kind(), frame.stream(), frame.body(), frame.body_len());
                if let Ok(repr) = Repr::parse_bytes(&bytes) {
                    let _ = repr.to_string();
                    let mut out = Vec::new();
                    repr.emit(&mut out).unwrap();
                    prop_assert_eq!(out, bytes);
                }
            }
        }
    }
}
