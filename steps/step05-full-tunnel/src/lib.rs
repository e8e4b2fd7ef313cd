//! Step 05: full-tunnel routing and NAT. Every packet of a client goes
//! through the server, for many clients, and the host is left as it was
//! found.
//!
//! - [`plan`]: which routes, rules, nftables tables and sysctls make a
//!   full tunnel (client) and forwarding with NAT (server): pure functions.
//! - [`journal`]: each change written down with its undo before the next,
//!   undone in reverse on exit and after a crash.
//! - [`setup`]: a client's and a server's changes, applied through the
//!   journal; `down`.
//! - [`system`]: the host behind a trait (commands, sysctls, files).
//! - [`cli`]: the flags this step adds, for its binary and step 06's.
//! - [`nat`]: what the kernel's masquerade does to a packet, byte by byte.
//! - [`cli`]: the command line.

#![forbid(unsafe_code)]

pub mod cli;
pub mod journal;
pub mod nat;
pub mod plan;
pub mod setup;
pub mod system;
