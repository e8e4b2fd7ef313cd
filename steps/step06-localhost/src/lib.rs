//! Step 06: expose a local service through the server, the way bore and
//! ngrok do it (layer 4): a client behind NAT keeps one control
//! connection to the server, the server listens on a public port for it,
//! and every visitor of that port becomes a stream carried over the
//! control connection to the client, which connects it to the local
//! service.
//!
//! - [`wire`]: the control protocol's frames.
//! - [`secure`]: step 04's handshake and AEAD over a TCP byte stream.
//! - [`mux`]: many visitor streams over one connection, each with its own
//!   flow control.
//! - [`datagram`]: UDP datagrams over a stream, each with its length.
//! - [`flows`]: the server's UDP flows, one per visitor address, with an
//!   idle timeout.
//! - [`keepalive`]: pings on a quiet control connection, and the end of a
//!   silent one.
//! - [`policy`]: the server's rules (handshake slots and replays, the
//!   order of a session, which ports a key may claim, what visitors may
//!   cost), sans-IO.
//! - [`conn`]: the I/O shell of one control connection: threads and
//!   blocking sockets, no async runtime.
//! - [`server`] and [`client`]: the two ends.
//! - [`cli`]: the command line.
//! - [`recording`]: a recorded control connection read back, and
//!   decrypted with the client's key log.
//! - [`underlay`]: what both designs send, for the capture decoder.
//! - [`l3`]: the layer-3 way: step 05's VPN with a public port forwarded
//!   to a client (nftables DNAT) and delivered to its loopback.

#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod conn;
pub mod datagram;
pub mod flows;
pub mod keepalive;
pub mod l3;
pub mod mux;
pub mod policy;
pub mod recording;
pub mod secure;
pub mod server;
pub mod underlay;
pub mod wire;
