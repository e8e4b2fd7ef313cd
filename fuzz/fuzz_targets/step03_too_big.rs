//! Step 03's "fragmentation needed" and "packet too big" on arbitrary
//! packets, tunnel MTUs and source addresses: never a panic; an error goes
//! only for a packet larger than the MTU (IPv4 only with DF set), back to
//! its sender, from our address, within 576 (IPv4) or 1280 (IPv6) bytes,
//! with valid checksums, the MTU (never below the family's minimum), and
//! the start of the offending packet quoted.
//!
//! Each record's body is the MTU (2 bytes), our address (16 bytes; IPv4
//! takes the first 4, the op's low bit picks the family), then the packet.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use step01_ping_tun::checksum::verify;
use step03_ipv6::checksum::verify_transport;
use step03_ipv6::pmtu::{IPV4_MIN_MTU, IPV6_MIN_MTU, TooBig, too_big};
use tunlab_fuzz::Records;

/// What the error must say of the packet it answers.
struct Request {
    source: IpAddr,
    dont_fragment: bool,
    /// The length its header gives.
    length: usize,
}

impl Request {
    /// From the packet's fixed header, which holds all the error speaks
    /// of. Not from etherparse's parse of the whole packet: step 03 walks
    /// past extension headers by their lengths as Linux does
    /// (`ipv6_skip_exthdr`) and takes what follows a later fragment's header
    /// for data, where etherparse refuses some packets (a hop-by-hop header
    /// that is not first, which RFC 8200 §4.1 wants first; an
    /// authentication header whose length field is 0; a later fragment's
    /// data that reads as an authentication header longer than the packet).
    /// A packet answered without a fixed header, or shorter than its header
    /// says, is a failure.
    fn of(packet: &[u8]) -> Self {
        let request = match packet.first().map(|b| b >> 4) {
            Some(4) => {
                let v4 = etherparse::Ipv4HeaderSlice::from_slice(packet)
                    .unwrap_or_else(|e| panic!("answered a packet without an IPv4 header: {e:?}"));
                Request {
                    source: IpAddr::V4(v4.source_addr()),
                    dont_fragment: v4.dont_fragment(),
                    length: usize::from(v4.total_len()),
                }
            }
            Some(6) => {
                let v6 = etherparse::Ipv6HeaderSlice::from_slice(packet)
                    .unwrap_or_else(|e| panic!("answered a packet without an IPv6 header: {e:?}"));
                Request {
                    source: IpAddr::V6(v6.source_addr()),
                    dont_fragment: false,
                    length: 40 + usize::from(v6.payload_length()),
                }
            }
            _ => panic!("answered a packet that is neither IPv4 nor IPv6"),
        };
        assert!(
            request.length <= packet.len(),
            "answered a {}-byte packet whose header says {}",
            packet.len(),
            request.length
        );
        request
    }
}

fuzz_target!(|data: &[u8]| {
    let mut out = [0u8; 2048];
    for (op, body) in Records(data) {
        let Some((mtu, rest)) = body.split_first_chunk::<2>() else {
            continue;
        };
        let Some((from, packet)) = rest.split_first_chunk::<16>() else {
            continue;
        };
        let mtu = u16::from_be_bytes(*mtu);
        let from = if op & 1 == 1 {
            IpAddr::V6(Ipv6Addr::from(*from))
        } else {
            IpAddr::V4(Ipv4Addr::new(from[0], from[1], from[2], from[3]))
        };
        match too_big(packet, mtu, from, &mut out) {
            TooBig::Drop(why) => assert!(!why.is_empty()),
            TooBig::Forward => {}
            TooBig::Reply(len) => {
                let reply = &out[..len];
                let ip = etherparse::IpSlice::from_slice(reply).expect("the error parses");
                let request = Request::of(packet);
                assert_eq!(ip.source_addr(), from);
                assert_eq!(ip.destination_addr(), request.source);
                assert_eq!(verify_transport(reply), Some(true), "the error's checksum");
                let payload = ip.payload().payload;
                let quote = &payload[8..];
                assert!(
                    packet.starts_with(quote),
                    "the quote is not the start of the packet"
                );
                let next_hop = match ip {
                    etherparse::IpSlice::Ipv4(v4) => {
                        assert!(len <= 576);
                        assert!(verify(v4.header().slice()), "the error's IPv4 header checksum");
                        assert!(request.dont_fragment, "an IPv4 error for a packet without DF");
                        assert_eq!(&payload[..2], [3, 4], "not fragmentation needed");
                        let next_hop = u16::from_be_bytes([payload[6], payload[7]]);
                        assert_eq!(next_hop, mtu.max(IPV4_MIN_MTU));
                        u32::from(next_hop)
                    }
                    etherparse::IpSlice::Ipv6(_) => {
                        assert!(len <= 1280);
                        assert_eq!(&payload[..2], [2, 0], "not packet too big");
                        let next_hop = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                        assert_eq!(next_hop, u32::from(mtu.max(IPV6_MIN_MTU)));
                        next_hop
                    }
                };
                let whole = request.length;
                assert!(
                    whole > next_hop as usize,
                    "an error for a {whole}-byte packet under MTU {next_hop}"
                );
            }
        }
    }
});
