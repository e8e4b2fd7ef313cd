//! The I/O loop: read a packet from the TUN device, hand it to the
//! [`Responder`], write the reply back. Everything about packets is in the
//! core; this file only moves bytes, records them and logs.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tun_rs::SyncDevice;

use crate::host::{Shutdown, create_tun};
use crate::logging::DropLog;
use crate::pcap::Recorder;
use crate::responder::{Counters, DropReason, Outcome, Responder};
use crate::wire::Summary;
use ipnet::Ipv4Net;

/// What `step01-ping-tun` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    pub tun: String,
    pub address: Ipv4Net,
    pub mtu: u16,
    pub pcap: Option<PathBuf>,
}

/// The largest packet a TUN device hands us: the largest IP datagram.
const MAX_PACKET: usize = 65535;

fn now() -> std::time::Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

// ANCHOR: run
/// Runs until SIGINT or SIGTERM and returns the counters.
pub fn run(config: &Config, shutdown: &Shutdown) -> anyhow::Result<Counters> {
    let device = create_tun(&config.tun, config.address, config.mtu)?;
    let recorder = match &config.pcap {
        Some(path) => Some(Recorder::create(path).with_context(|| format!("creating {}", path.display()))?),
        None => None,
    };
    let mut responder = Responder::new(config.address);
    log::info!(
        "{} is up with {} (MTU {}); answering pings to the rest of {}/{}",
        config.tun,
        config.address,
        config.mtu,
        config.address.network(),
        config.address.prefix_len()
    );
    serve(&device, &config.tun, recorder, shutdown, &mut responder)?;
    Ok(responder.counters().clone())
}

/// Something that answers packets read from a TUN device: the step 01
/// [`Responder`], or a later step's.
pub trait Handler {
    /// Why a packet got no answer.
    type Drop: fmt::Display;
    /// Answers `packet` with a reply of `Ok(len)` bytes in `out`, or says why
    /// not.
    fn handle(&mut self, packet: &[u8], out: &mut [u8]) -> Result<usize, Self::Drop>;
}

impl Handler for Responder {
    type Drop = DropReason;

    fn handle(&mut self, packet: &[u8], out: &mut [u8]) -> Result<usize, DropReason> {
        match Responder::handle(self, packet, out) {
            Outcome::Reply(n) => Ok(n),
            Outcome::Drop(reason) => Err(reason),
        }
    }
}

/// The I/O loop: reads packets from `device` until SIGINT or SIGTERM, hands
/// each to `handler`, writes the replies back, records both, logs drops
/// (the first few of each second; see [`DropLog`]).
pub fn serve<H: Handler>(
    device: &SyncDevice,
    tun: &str,
    mut recorder: Option<Recorder>,
    shutdown: &Shutdown,
    handler: &mut H,
) -> anyhow::Result<()> {
    let mut packet = vec![0u8; MAX_PACKET];
    let mut reply = vec![0u8; MAX_PACKET];
    let drops = DropLog::new();
    loop {
        let len = match device.recv_intr(&mut packet, shutdown.event()) {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if shutdown.requested() {
                    drops.flush(Instant::now() + std::time::Duration::from_secs(1));
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading from {tun}")),
        };
        let packet = &packet[..len];
        if let Some(rec) = recorder.as_mut() {
            rec.record(now(), packet).context("writing the pcap file")?;
        }
        match handler.handle(packet, &mut reply) {
            Ok(n) => {
                let reply = &reply[..n];
                log::debug!("in:  {}", Summary(packet));
                device.send(reply).with_context(|| format!("writing to {tun}"))?;
                log::debug!("out: {}", Summary(reply));
                if let Some(rec) = recorder.as_mut() {
                    rec.record(now(), reply).context("writing the pcap file")?;
                }
            }
            Err(reason) => drops.drop(
                Instant::now(),
                format_args!("drop ({reason}): {}", Summary(packet)),
            ),
        }
    }
}
// ANCHOR_END: run
