//! Step 08: the fast path. Step 07's WireGuard, the same protocol,
//! configuration and UAPI, with a new I/O shell that moves many packets
//! per system call and uses every core:
//!
//! - [`sys`]: `recvmmsg`/`sendmmsg` with the UDP GSO and GRO control
//!   messages (the step's only unsafe code).
//! - [`udp`]: the sockets (one per worker, `SO_REUSEPORT`), batched
//!   sends and receives, GSO and GRO with their fallbacks.
//! - [`tun`]: the TUN queues, with the virtio-net header: super-packets
//!   in, coalesced super-packets out ([`gro`]).
//! - [`plane`]: what a worker seals and opens with, without the device's
//!   lock, and the ledger it reports to the device with.
//! - [`worker`]: one thread per TUN queue.
//! - [`counters`]: system calls, wake-ups, offloads used.
//! - [`run`]: the shell: device, queues, sockets, workers, UAPI socket.

// The only exception is `sys`, which allows it for the system calls; every
// other module forbids it.
#![deny(unsafe_code)]

pub mod cli;
pub mod counters;
pub mod gro;
pub mod plane;
pub mod run;
pub mod sys;
pub mod tun;
pub mod udp;
pub mod worker;

/// Set in the environment of the background copy of the program.
pub use step07_wireguard::DAEMON_ENV;
