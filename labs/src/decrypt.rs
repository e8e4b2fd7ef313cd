//! `tunlab decode --keylog`: the encrypted sessions of a capture read with
//! one end's key log, as Wireshark reads TLS with `SSLKEYLOGFILE`.
//!
//! A key log (`--keylog` of step 04's ends and of step 06's `expose`)
//! holds the ephemeral private key of every handshake its end made. With
//! that end's static private key, the session keys of each recorded
//! handshake can be worked out again, and every message of the session
//! opened in both directions:
//!
//! - step 04 (and step 05, and step 06's layer 3, which carry step 04's
//!   messages) over UDP: [`step04_crypto::decrypt`]; the inner IP packets
//!   can be written to a pcap file that tshark and Wireshark read;
//! - step 06's control connections over TCP:
//!   [`step06_localhost::recording`]; their frames are printed.
//!
//! Step 07 speaks WireGuard itself, whose sessions Wireshark's own
//! dissector decrypts from a key log (`wg.keylog_file`); its handshakes
//! are named as such, with the tshark command, and not read here.
//!
//! When the end that wrote the key log initiated (step 04's client, step
//! 06's `expose`), the other end's public key is needed as well.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use step01_ping_tun::Summary;
use step01_ping_tun::pcap::{self, DataLink, Recorder};
use step02_plain_tunnel::wire::udp_payload;
use step04_crypto::PublicKey;
use step04_crypto::decrypt::{Direction, Role, Session};
use step04_crypto::noise::Identity;
use step04_crypto::tunnel::inner_addresses;
use step04_crypto::wire::{DataPacket, InitiationPacket, ResponsePacket};
use step06_localhost::recording;
use step06_localhost::wire::Repr;
use zeroize::Zeroize;

/// The secrets of the end that wrote the key log, and its peer's public
/// key if given.
pub struct Keys {
    identity: Arc<Identity>,
    keylog: Keylog,
    keylog_path: std::path::PathBuf,
    peer: Option<PublicKey>,
}

impl Keys {
    /// Reads the key file (which must be readable by its owner only) and
    /// the key log.
    pub fn read(key: &Path, keylog: &Path, peer: Option<PublicKey>) -> anyhow::Result<Self> {
        let secret = step04_crypto::keyfile::read_key_file(key)?;
        let keylog_path = keylog.to_path_buf();
        let keylog = Keylog::read(keylog)?;
        Ok(Self {
            identity: Arc::new(Identity::new(secret)),
            keylog,
            keylog_path,
            peer,
        })
    }
}

/// The ephemeral private keys of a key log, wiped from memory when
/// dropped.
struct Keylog(Vec<[u8; 32]>);

impl Keylog {
    fn read(path: &Path) -> anyhow::Result<Self> {
        let mut bytes = std::fs::read(path).with_context(|| format!("reading key log {}", path.display()))?;
        let keys = std::str::from_utf8(&bytes)
            .map(step04_crypto::run::read_keylog)
            .unwrap_or_default();
        bytes.zeroize();
        if keys.is_empty() {
            bail!(
                "{} holds no `LOCAL_EPHEMERAL_PRIVATE_KEY = ...` line: not a key log (the steps write one with --keylog)",
                path.display()
            );
        }
        Ok(Self(keys))
    }
}

impl Drop for Keylog {
    fn drop(&mut self) {
        for key in &mut self.0 {
            key.zeroize();
        }
    }
}

/// What was decrypted in one capture.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Handshakes whose keys were worked out.
    pub sessions: usize,
    /// Data messages (or records) opened.
    pub opened: usize,
    /// Messages of a session whose handshake was not derived, or that did
    /// not open.
    pub unread: usize,
    /// Inner packets written to the `--write` file.
    pub written: usize,
}

/// One UDP datagram of the capture.
struct Datagram {
    time: Duration,
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
}

/// Decrypts what `keys` can read in `file`, writing one line per message
/// to `out` (times in seconds since the capture's first packet) and each
/// inner IP packet to `write`.
pub fn decrypt(
    file: &Path,
    keys: &Keys,
    mut write: Option<&mut Recorder>,
    out: &mut impl Write,
) -> anyhow::Result<Counts> {
    let (link, frames) = pcap::read_any(file)?;
    let start = frames.first().map(|f| f.timestamp).unwrap_or_default();
    let at = |t: Duration| {
        let t = t.saturating_sub(start);
        format!("{:>4}.{:06}", t.as_secs(), t.subsec_micros())
    };
    let mut counts = Counts::default();

    // Step 04's messages, in UDP datagrams.
    let datagrams: Vec<Datagram> = frames
        .iter()
        .filter_map(|f| {
            let ip = match link {
                DataLink::ETHERNET => pcap::ip_in_ethernet(&f.data)?,
                _ => &f.data[..],
            };
            let (sport, dport, payload) = udp_payload(ip)?;
            let (src, dst) = inner_addresses(ip)?;
            Some(Datagram {
                time: f.timestamp,
                from: SocketAddr::new(src, sport),
                to: SocketAddr::new(dst, dport),
                payload: payload.to_vec(),
            })
        })
        .collect();
    let mut sessions: Vec<Session> = Vec::new();
    for (i, d) in datagrams.iter().enumerate() {
        if step07_wireguard::wire::Initiation::new_checked(&d.payload[..]).is_ok() {
            // Step 07 speaks WireGuard itself, which Wireshark decrypts.
            writeln!(
                out,
                "{} {} > {}: handshake not read: a WireGuard initiation (step 07), whose \
                 session Wireshark's own WireGuard dissector reads: tshark -o \
                 wg.keylog_file:{} -r {} (step 07's chapter explains its key log)",
                at(d.time),
                d.from,
                d.to,
                keys.keylog_path.display(),
                file.display()
            )?;
            continue;
        }
        let Ok(initiation) = InitiationPacket::new_checked(&d.payload[..]) else {
            continue;
        };
        // Its response: the next one from where it went, naming it.
        let Some(response) = datagrams[i + 1..].iter().find(|r| {
            r.from == d.to
                && ResponsePacket::new_checked(&r.payload[..])
                    .is_ok_and(|p| p.receiver() == initiation.sender())
        }) else {
            writeln!(
                out,
                "{} {} > {}: an initiation with no response",
                at(d.time),
                d.from,
                d.to
            )?;
            continue;
        };
        match Session::derive(
            &keys.identity,
            &keys.keylog.0,
            keys.peer.as_ref(),
            &d.payload,
            &response.payload,
        ) {
            Ok(session) => {
                let role = match session.role {
                    Role::Initiator => "initiator",
                    Role::Responder => "responder",
                };
                writeln!(
                    out,
                    "{} {} > {}: handshake, keys derived from the {role}'s key log: \
                     initiator's index {:#010x}, responder's {:#010x}",
                    at(d.time),
                    d.from,
                    d.to,
                    session.index(Direction::ToInitiator),
                    session.index(Direction::ToResponder),
                )?;
                counts.sessions += 1;
                sessions.push(session);
            }
            Err(e) => writeln!(
                out,
                "{} {} > {}: handshake not read: {e}",
                at(d.time),
                d.from,
                d.to
            )?,
        }
    }
    let mut plain = vec![0u8; 65536];
    for d in &datagrams {
        if DataPacket::new_checked(&d.payload[..]).is_err() {
            continue;
        }
        let mut line = None;
        for session in &sessions {
            match session.open(&d.payload, &mut plain) {
                Ok(opened) => {
                    let packet = &plain[..opened.len];
                    let inner = if packet.is_empty() {
                        "keepalive".to_string()
                    } else {
                        if let Some(w) = write.as_deref_mut() {
                            w.record(d.time, packet)?;
                            counts.written += 1;
                        }
                        Summary(packet).to_string()
                    };
                    line = Some(format!("counter {} | {inner}", opened.counter));
                    counts.opened += 1;
                    break;
                }
                Err(step04_crypto::decrypt::Error::OtherSession) => continue,
                Err(e) => {
                    line = Some(format!("not opened: {e}"));
                    counts.unread += 1;
                    break;
                }
            }
        }
        let line = line.unwrap_or_else(|| {
            counts.unread += 1;
            "a session whose handshake is not in the capture (or not read)".into()
        });
        writeln!(out, "{} {} > {}: data, {line}", at(d.time), d.from, d.to)?;
    }

    // Step 06's control connections, over TCP.
    let connections = recording::connections(link, &frames).map_err(anyhow::Error::msg)?;
    for conn in &connections {
        writeln!(out, "control connection {} > {}:", conn.client, conn.server)?;
        let Some(server) = keys.peer.as_ref() else {
            writeln!(
                out,
                "  not read: the client's key log needs the server's public key (--peer-key)"
            )?;
            counts.unread += 1;
            continue;
        };
        match recording::decrypt(conn, &keys.identity, server, &keys.keylog.0) {
            Ok(records) => {
                counts.sessions += 1;
                for record in records {
                    let (from, to) = if record.from_client {
                        (conn.client, conn.server)
                    } else {
                        (conn.server, conn.client)
                    };
                    let what = match &record.frame {
                        None if record.from_client => "handshake initiation".to_string(),
                        None => "handshake response".to_string(),
                        Some(frame) => {
                            counts.opened += 1;
                            match Repr::parse_bytes(frame) {
                                Ok(repr) => repr.to_string(),
                                Err(e) => format!("[a bad frame: {e}]"),
                            }
                        }
                    };
                    writeln!(out, "{} {from} > {to}: {what}", at(record.time))?;
                }
            }
            Err(e) => {
                writeln!(out, "  not read: {e}")?;
                counts.unread += 1;
            }
        }
    }
    Ok(counts)
}
