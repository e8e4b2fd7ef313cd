//! Step 01: a TUN device whose program answers ping.
//!
//! The kernel routes packets for the device's subnet into the TUN device;
//! this program reads them, answers ICMP echo requests with echo replies, and
//! drops (and counts) everything else.
//!
//! - [`checksum`]: the RFC 1071 Internet checksum.
//! - [`counts`]: counters by reason, shared by every step.
//! - [`cli`]: parsers for command-line values, shared by every step.
//! - [`wire`]: one-line, tcpdump-like summaries of packets.
//! - [`responder`]: the sans-IO core, request bytes in, reply bytes out.
//! - [`pcap`]: recording and reading LINKTYPE_RAW captures.
//! - [`ifname`]: interface names, checked before any command or script
//!   sees them.
//! - [`host`] and [`run`]: the TUN device, signals, and the I/O loop.
//! - [`logging`]: drop lines that a flood cannot multiply.

#![forbid(unsafe_code)]

pub mod checksum;
pub mod cli;
pub mod counts;
pub mod host;
pub mod ifname;
pub mod logging;
pub mod pcap;
pub mod responder;
pub mod run;
pub mod wire;

pub use ipnet::Ipv4Net;
pub use responder::{Counters, DropReason, Outcome, Responder};
pub use wire::Summary;
