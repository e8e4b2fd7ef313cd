//! Step 02: a plaintext tunnel between two hosts, over UDP or over TCP.
//!
//! Each host has a TUN device; what the kernel routes into one comes out of
//! the other, carried in messages over an ordinary socket between the hosts
//! (the underlay).
//!
//! - [`wire`]: the message format (4-byte header, then an IP packet).
//! - [`tunnel`]: the sans-IO core, `encapsulate` and `decapsulate`.
//! - [`framing`]: length-prefixed frames for the TCP transport.
//! - [`mtu`]: how large an inner packet may be.
//! - [`run`]: the I/O loops over the TUN device and the socket.
//! - [`udp`]: the underlay's UDP socket, answering from the address written to.
//! - [`underlay`]: recognising its messages in a capture of the underlay.
//! - [`cli`]: the command line.

#![forbid(unsafe_code)]

pub mod cli;
pub mod framing;
pub mod mtu;
pub mod run;
pub mod tunnel;
pub mod udp;
pub mod underlay;
pub mod wire;

pub use tunnel::{Action, Counters, DropReason, Role, Transmit, Tunnel};
