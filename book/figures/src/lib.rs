//! The book's figures, drawn as SVG from what the rest of the workspace
//! tests: the steps' field tables, the recorded captures in `pcaps/`, and
//! the labs' data. Nothing here is drawn by hand, so a figure changes when
//! what it shows changes, and `cargo test` says so.
//!
//! Three kinds of drawing, one module each, on shared helpers ([`svg`]):
//!
//! - [`layout`]: header layouts in 32-bit rows, from tables of bit ranges;
//! - [`ladder`]: sequence diagrams, from captures or from a story;
//! - [`topology`]: hosts, their interfaces and addresses, and links.
//!
//! The figures themselves, by subject: [`headers`] (IPv4, ICMP, IPv6, the
//! TCP pseudo-header), [`tunnel`] (step 02's encapsulation, step 04's
//! messages and handshake), [`stories`] (TCP over TCP, the path MTU black
//! hole), [`lab05`], [`step06`], [`step07`] and [`step08`].
//!
//! The test `tests/figures.rs` draws every figure in [`FIGURES`] and
//! compares it with `book/src/figures/NAME.svg`;
//! `UPDATE_FIGURES=1 cargo test -p tunlab-figures` writes them.

#![forbid(unsafe_code)]

pub mod headers;
pub mod lab05;
pub mod ladder;
pub mod layout;
pub mod step06;
pub mod step07;
pub mod step08;
pub mod stories;
pub mod svg;
pub mod topology;
pub mod tunnel;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use step01_ping_tun::pcap::{self, DataLink};

/// A drawn figure: its SVG text and anything that did not fit.
#[derive(Debug, Clone)]
pub struct Figure {
    pub svg: String,
    /// Text that overlaps other text, leaves the figure or overflows its
    /// box; the tests fail on any.
    pub problems: Vec<String>,
}

impl Figure {
    /// Finishes a canvas with its caption.
    pub fn from_canvas(canvas: svg::Canvas, caption: &str) -> Self {
        let (svg, problems) = canvas.finish(caption);
        Self { svg, problems }
    }
}

/// Draws one figure.
pub type Draw = fn() -> anyhow::Result<Figure>;

/// Every figure, by the name of its file in `book/src/figures/`.
pub const FIGURES: &[(&str, Draw)] = &[
    ("ipv4-icmp-header", headers::ipv4_icmp_header),
    ("ipv6-header", headers::ipv6_header),
    ("tcp-pseudo-header", headers::tcp_pseudo_header),
    ("encapsulation", tunnel::encapsulation),
    ("data-message", tunnel::data_message),
    ("handshake-ladder", tunnel::handshake_ladder),
    ("tcp-over-tcp", stories::tcp_over_tcp),
    ("pmtu-black-hole", stories::pmtu_black_hole),
    ("lab05-topology", lab05::topology),
    ("lab05-round-trip", lab05::round_trip),
    ("step06-layer4", step06::layer4),
    ("step06-layer3", step06::layer3),
    ("wireguard-handshake", step07::wireguard_handshake),
    ("cookie-reply", step07::cookie_reply),
    ("fast-path-batching", step08::fast_path_batching),
    ("fast-path-offload", step08::fast_path_offload),
    ("fast-path-workers", step08::fast_path_workers),
];

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the figures go.
pub fn figures_dir() -> PathBuf {
    workspace_root().join("book/src/figures")
}

/// One IP packet of a capture.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Time since the capture's first record.
    pub time: Duration,
    pub ip: Vec<u8>,
}

/// The IP packets of `pcaps/PATH`, read with step 01's reader: bare IP
/// (a TUN recording) or Ethernet (a veth recording; frames that are not
/// IP, such as ARP, are left out).
pub fn capture(path: &str) -> anyhow::Result<Vec<Packet>> {
    let file = workspace_root().join("pcaps").join(path);
    let (link, records) = pcap::read_any(&file).with_context(|| format!("reading pcaps/{path}"))?;
    let start = records.first().map_or(Duration::ZERO, |r| r.timestamp);
    let ip = |data: &[u8]| -> Option<Vec<u8>> {
        match link {
            DataLink::ETHERNET => pcap::ip_in_ethernet(data).map(<[u8]>::to_vec),
            _ => Some(data.to_vec()),
        }
    };
    Ok(records
        .iter()
        .filter_map(|r| {
            Some(Packet {
                time: r.timestamp.saturating_sub(start),
                ip: ip(&r.data)?,
            })
        })
        .collect())
}
