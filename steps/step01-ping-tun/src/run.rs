//! The I/O loop: read a packet from the TUN device, hand it to the
//! [`Responder`], write the reply back. Everything about packets is in the
//! core; this file only moves bytes, records them and logs.

use std::io;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::cidr::Ipv4Cidr;
use crate::host::{Shutdown, create_tun};
use crate::pcap::Recorder;
use crate::responder::{Counters, Outcome, Responder};
use crate::wire::Summary;

/// What `step01-ping-tun` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    pub tun: String,
    pub address: Ipv4Cidr,
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
    let mut recorder = match &config.pcap {
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

    let mut packet = vec![0u8; MAX_PACKET];
    let mut reply = vec![0u8; MAX_PACKET];
    loop {
        let len = match device.recv_intr(&mut packet, shutdown.event()) {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if shutdown.requested() {
                    break;
                }
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading from {}", config.tun)),
        };
        let packet = &packet[..len];
        if let Some(rec) = recorder.as_mut() {
            rec.record(now(), packet).context("writing the pcap file")?;
        }
        match responder.handle(packet, &mut reply) {
            Outcome::Reply(n) => {
                let reply = &reply[..n];
                log::debug!("in:  {}", Summary(packet));
                device
                    .send(reply)
                    .with_context(|| format!("writing to {}", config.tun))?;
                log::debug!("out: {}", Summary(reply));
                if let Some(rec) = recorder.as_mut() {
                    rec.record(now(), reply).context("writing the pcap file")?;
                }
            }
            Outcome::Drop(reason) => log::info!("drop ({reason}): {}", Summary(packet)),
        }
    }
    Ok(responder.counters().clone())
}
// ANCHOR_END: run
