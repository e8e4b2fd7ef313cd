//! Golden tests over the short session recorded in lab 02
//! (`pcaps/step02/`): the underlay capture on the server's veth, and what
//! each end's TUN device read and wrote (their `--pcap` recordings).
//!
//! Every tunnel datagram on the underlay is decapsulated by a fresh core of
//! the receiving end; each packet it gives for the TUN device must be, byte
//! for byte, the next matching packet in the receiving TUN's recording, and
//! each Data message must be exactly our encapsulation of a packet the
//! sending TUN's recording holds. Insta snapshots keep the decoded lines.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use step01_ping_tun::Summary;
use step01_ping_tun::pcap::{self, Captured, DataLink};
use step02_plain_tunnel::wire::{Repr, UnderlaySummary, udp_payload};
use step02_plain_tunnel::{Action, Role, Tunnel};

const PORT: u16 = 51820;
const MTU: usize = 1468;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../pcaps/step02")
        .join(name)
}

/// The IP packets of the underlay capture (Ethernet frames on a veth).
fn underlay() -> Vec<Vec<u8>> {
    let (link, frames) = pcap::read_any(&fixture("underlay.pcap")).unwrap();
    assert_eq!(link, DataLink::ETHERNET);
    frames
        .iter()
        .filter_map(|f| pcap::ip_in_ethernet(&f.data).map(<[u8]>::to_vec))
        .collect()
}

fn tun(name: &str) -> Vec<Captured> {
    pcap::read(&fixture(name)).unwrap()
}

fn addrs(packet: &[u8]) -> (IpAddr, IpAddr) {
    let ip = etherparse::IpSlice::from_slice(packet).unwrap();
    (ip.source_addr(), ip.destination_addr())
}

/// A cursor over one TUN recording: finds packets in order.
struct Recording {
    packets: Vec<Captured>,
    next: usize,
}

impl Recording {
    fn find(&mut self, packet: &[u8]) -> bool {
        match self.packets[self.next..].iter().position(|p| p.data == packet) {
            Some(i) => {
                self.next += i + 1;
                true
            }
            None => false,
        }
    }
}

#[test]
fn every_underlay_datagram_decapsulates_to_the_packet_the_other_tun_got() {
    let server_addr: SocketAddr = format!("192.0.2.1:{PORT}").parse().unwrap();
    let mut server = Tunnel::new(Role::Server, MTU, None);
    let mut client = Tunnel::new(Role::Client { server: server_addr }, MTU, None);
    let mut server_tun = Recording {
        packets: tun("server-tun.pcap"),
        next: 0,
    };
    let mut client_tun = Recording {
        packets: tun("client-tun.pcap"),
        next: 0,
    };
    let (mut to_server, mut to_client) = (0, 0);
    let mut pongs: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let mut answered_pings = 0;
    let mut out = vec![0u8; 65535];
    let mut wire = vec![0u8; 65535];
    for packet in underlay() {
        let Some((sport, dport, payload)) = udp_payload(&packet) else {
            continue;
        };
        let (src, dst) = addrs(&packet);
        let (from, receiver, receiving_tun, sending_tun) = if dport == PORT {
            (
                SocketAddr::new(src, sport),
                &mut server,
                &mut server_tun,
                &mut client_tun,
            )
        } else if sport == PORT {
            (
                SocketAddr::new(src, sport),
                &mut client,
                &mut client_tun,
                &mut server_tun,
            )
        } else {
            continue;
        };
        let line = UnderlaySummary {
            packet: &packet,
            port: PORT,
        }
        .to_string();
        match receiver.decapsulate(from, payload, Instant::now(), &mut out) {
            Ok(Action::WriteToTun(n)) => {
                assert!(receiving_tun.find(&out[..n]), "not on the receiving TUN: {line}");
                // The sender's TUN read this packet, and this is exactly
                // our encapsulation of it.
                assert!(sending_tun.find(&out[..n]), "not on the sending TUN: {line}");
                let len = Repr::Data(&out[..n]).emit(&mut wire).unwrap();
                assert_eq!(&wire[..len], payload, "{line}");
                if dst == IpAddr::from([192, 0, 2, 1]) {
                    to_server += 1;
                } else {
                    to_client += 1;
                }
            }
            Ok(Action::Reply(t)) => {
                // The answer to a Ping: the Pong recorded next on the wire.
                pongs.push((t.to, out[..t.len].to_vec()));
            }
            Ok(Action::Nothing) => {
                let Some(i) = pongs
                    .iter()
                    .position(|(to, pong)| to.ip() == dst && pong == payload)
                else {
                    panic!("a Pong no one asked for: {line}");
                };
                pongs.remove(i);
                answered_pings += 1;
            }
            Err(reason) => panic!("a recorded datagram was dropped ({reason}): {line}"),
        }
    }
    // Two pings each way: requests and replies, in both directions.
    assert!(
        to_server >= 4 && to_client >= 4,
        "{to_server} packets to the server, {to_client} to the client"
    );
    // The client's first Ping, answered by exactly the Pong our core makes.
    assert!(answered_pings >= 1, "no Ping was answered on the wire");
    assert!(
        pongs.is_empty(),
        "{} Pongs the server owed never crossed the wire",
        pongs.len()
    );
}

/// One snapshot per capture, named by the file as it always was (glob!
/// would add the file's name to it), so that a run reports every capture
/// whose decoded lines changed, not only the first.
fn snapshot(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.remove_snapshot_suffix();
    settings.remove_input_file();
    settings.bind(|| insta::assert_snapshot!(name, text));
}

/// Every capture of lab 02, decoded: the underlay with step 02's decoder,
/// the TUN devices' packets as they are.
#[test]
fn decoded_captures() {
    let mut files = 0;
    insta::glob!("../../../pcaps", "step02/*.pcap", |path| {
        files += 1;
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let (link, packets) = pcap::read_any(path).unwrap();
        let text: String = match link {
            // The IP packets of the Ethernet frames (ARP left out).
            DataLink::ETHERNET => packets
                .iter()
                .filter_map(|p| pcap::ip_in_ethernet(&p.data))
                .map(|ip| {
                    let line = step02_plain_tunnel::underlay::summary(ip, PORT);
                    format!("{}\n", line.unwrap_or_else(|| Summary(ip).to_string()))
                })
                .collect(),
            _ => packets
                .iter()
                .map(|p| format!("{}\n", Summary(&p.data)))
                .collect(),
        };
        snapshot(&name, &text);
    });
    assert_eq!(files, 3, "the underlay and both TUN devices");
}
