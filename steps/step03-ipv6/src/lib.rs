//! Step 03: IPv6 inside and outside the tunnel, and checksum recomputation.
//!
//! - [`cli`]: parsing addresses of either family.
//! - [`device`]: a dual-stack TUN device.
//! - [`respond`]: step 01's ping responder for both families (ICMPv6 echo).
//! - [`transport`]: where the transport header of a packet is.
//! - [`checksum`]: pseudo-headers and the RFC 1624 incremental update.
//! - [`clamp`]: TCP MSS clamping.
//! - [`pmtu`]: "fragmentation needed" and "packet too big" errors.
//! - [`hook`]: clamping and path MTU errors, applied by the step 02 tunnel.
//! - [`rate`]: a token bucket, to limit how often something happens.

#![forbid(unsafe_code)]

pub mod checksum;
pub mod clamp;
pub mod cli;
pub mod device;
pub mod hook;
pub mod pmtu;
pub mod rate;
pub mod respond;
pub mod transport;
