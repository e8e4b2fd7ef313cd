//! Lab 06 exercise: the credit window of one stream.
//!
//! In the layer-4 design every visitor is a stream inside the one control
//! connection. If the receiver simply stopped reading the connection
//! whenever one visitor's socket was full, every other visitor would stall
//! behind it. So each stream has a *credit window*, as in HTTP/2 (RFC 9113
//! section 5.2) and yamux: a sender may have at most `INITIAL_WINDOW`
//! bytes in flight on a stream beyond what the receiver has granted back,
//! and the receiver grants bytes back (a Window frame with a credit) only
//! as its application consumes them. The receiver then never buffers more
//! than one window per stream, and never has to stop reading the
//! connection.
//!
//! To send fewer, larger Window frames, the receiver does not grant each
//! byte back at once: it adds up what the application consumed and grants
//! it back in one frame once the sum reaches `THRESHOLD`.
//!
//! ```text
//! sender                                    receiver
//! credit 16                                 window 16, unreported 0
//!   send(10)  -> credit 6    --- Data 10 -->  on_data(10): window 6, buffered 10
//!   send(6)   -> credit 0    --- Data 6  -->  on_data(6):  window 0, buffered 16
//!   send(1)   -> nothing, credit 0            consume(4):  buffered 12, unreported 4 -> grant 4
//!             credit 4      <-- Window 4 ---                window 4
//! ```
//!
//! Here you write both halves: the sender's credit and the receiver's
//! window.
//!
//! Check your attempt with `cargo run -p tunlab -- check 06` (or `watch
//! 06`, which checks again each time you save). Stuck? `cargo run -p
//! tunlab -- hint 06` shows the next hint.

/// The credit each side starts with on a stream.
pub const INITIAL_WINDOW: u32 = 16;
/// The receiver grants credit back once this much was consumed.
pub const THRESHOLD: u32 = INITIAL_WINDOW / 4;

/// What went wrong; each ends the stream (a reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditError {
    /// The peer sent more than the credit we granted.
    Overrun,
    /// A Window frame would take the credit past `u32::MAX`.
    Overflow,
}

/// The sending half: how much this side may still send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub credit: u32,
}

impl Sender {
    pub fn new() -> Self {
        Self {
            credit: INITIAL_WINDOW,
        }
    }

    /// The application wants to send `wanted` bytes: how many may go now
    /// (at most the credit), taken from the credit.
    pub fn send(&mut self, wanted: usize) -> usize {
        // TODO: at most the credit; take it from the credit.
        let _ = wanted;
        todo!()
    }

    /// A Window frame granted `credit` more bytes.
    pub fn on_window(&mut self, credit: u32) -> Result<(), CreditError> {
        // TODO: add the credit, or Err(CreditError::Overflow) past u32::MAX.
        let _ = credit;
        todo!()
    }
}

/// The receiving half: how much the peer may still send, how much is
/// buffered for the application, and how much it consumed that was not
/// granted back yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    pub window: u32,
    pub buffered: u32,
    pub unreported: u32,
}

impl Receiver {
    pub fn new() -> Self {
        Self {
            window: INITIAL_WINDOW,
            buffered: 0,
            unreported: 0,
        }
    }

    /// A Data frame of `len` bytes arrived: it must fit the window, which
    /// shrinks by `len`; the bytes wait in the buffer. A frame too big
    /// changes nothing and is an `Overrun`.
    pub fn on_data(&mut self, len: u32) -> Result<(), CreditError> {
        // TODO: check the window, shrink it, buffer the bytes.
        let _ = len;
        todo!()
    }

    /// The application reads up to `max` bytes: returns how many it got
    /// (at most what is buffered) and, once the consumed bytes not yet
    /// granted back reach `THRESHOLD`, the credit to grant back in a
    /// Window frame: all of them, which reopen the window.
    pub fn consume(&mut self, max: u32) -> (u32, Option<u32>) {
        // TODO: take from the buffer, count it as unreported, grant it
        // back (and reopen the window) once it reaches THRESHOLD.
        let _ = max;
        todo!()
    }
}

impl Default for Sender {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new()
    }
}
