//! Recording and reading captures of what crosses a TUN device.
//!
//! A TUN device carries bare IP packets, with no Ethernet header, so the
//! captures use LINKTYPE_RAW (101): each record is one IPv4 or IPv6 packet.
//! We always write little-endian headers with microsecond timestamps, so the
//! same packets at the same times give the same file, byte for byte.
//! Wireshark, tshark and tcpdump read these files directly.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;
use std::time::Duration;

pub use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::{Endianness, TsResolution};

/// The largest packet we record, whole: the largest IP datagram.
pub const SNAPLEN: u32 = 65535;

// ANCHOR: recorder
/// Appends every packet it is given to a pcap file. Each packet goes
/// straight to the file (no buffer in between), so the file is complete up
/// to the last packet even if the program is killed.
pub struct Recorder {
    writer: PcapWriter<File>,
}

impl Recorder {
    /// Creates (or truncates) `path` and writes the pcap file header.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = File::create(path)?;
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: SNAPLEN,
            datalink: DataLink::RAW,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::Little,
        };
        let writer = PcapWriter::with_header(file, header).map_err(io::Error::other)?;
        Ok(Self { writer })
    }

    /// Records one packet; `timestamp` is the time since the Unix epoch.
    pub fn record(&mut self, timestamp: Duration, packet: &[u8]) -> io::Result<()> {
        let len = u32::try_from(packet.len()).unwrap_or(u32::MAX);
        // Whole microseconds, so the file says exactly what we were given.
        let timestamp = Duration::from_micros(u64::try_from(timestamp.as_micros()).unwrap_or(u64::MAX));
        let captured = &packet[..packet.len().min(SNAPLEN as usize)];
        self.writer
            .write_packet(&PcapPacket::new(timestamp, len, captured))
            .map_err(io::Error::other)?;
        Ok(())
    }
}
// ANCHOR_END: recorder

/// One packet read back from a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Time since the Unix epoch.
    pub timestamp: Duration,
    pub data: Vec<u8>,
}

/// Reads every packet of a pcap file of bare IP packets (LINKTYPE_RAW, or
/// LINKTYPE_IPV4/IPV6). A file of any other link type, or one that is not a
/// pcap file at all, is an error; so is a file cut short in a record.
pub fn read(path: &Path) -> io::Result<Vec<Captured>> {
    let (link, packets) = read_any(path)?;
    match link {
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Ok(packets),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: link type {other:?} is not bare IP (LINKTYPE_RAW)",
                path.display()
            ),
        )),
    }
}

/// Reads every record of a pcap file of any link type, such as the Ethernet
/// frames tcpdump records on a veth interface, with the link type.
pub fn read_any(path: &Path) -> io::Result<(DataLink, Vec<Captured>)> {
    let file = File::open(path)?;
    let bad = |e: pcap_file::PcapError| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
    };
    let mut reader = PcapReader::new(BufReader::new(file)).map_err(bad)?;
    let link = reader.header().datalink;
    let mut packets = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.map_err(bad)?;
        packets.push(Captured {
            timestamp: packet.timestamp,
            data: packet.data.into_owned(),
        });
    }
    Ok((link, packets))
}

/// The IP packet inside an Ethernet frame (EtherType IPv4 or IPv6, no VLAN
/// tag), or `None`.
pub fn ip_in_ethernet(frame: &[u8]) -> Option<&[u8]> {
    let ether_type = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    matches!(ether_type, 0x0800 | 0x86dd).then(|| &frame[14..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file is exactly the 24-byte global header (magic a1b2c3d4 written
    /// little-endian, version 2.4, snaplen 65535, link type 101) followed by
    /// 16-byte record headers and the packets.
    #[test]
    fn writes_byte_stable_raw_pcap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stable.pcap");
        let mut rec = Recorder::create(&path).unwrap();
        rec.record(Duration::new(1_700_000_000, 123_456_789), &[0x45, 1, 2])
            .unwrap();
        drop(rec);
        let bytes = std::fs::read(&path).unwrap();
        #[rustfmt::skip]
        let expected = [
            0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0xff, 0xff, 0, 0, 101, 0, 0, 0,
            0x00, 0xf1, 0x53, 0x65, // 1_700_000_000 s
            0x40, 0xe2, 0x01, 0x00, // 123_456 µs
            3, 0, 0, 0, 3, 0, 0, 0, // captured and original length
            0x45, 1, 2,
        ];
        assert_eq!(bytes, expected);
        let back = read(&path).unwrap();
        assert_eq!(
            back,
            vec![Captured {
                timestamp: Duration::new(1_700_000_000, 123_456_000),
                data: vec![0x45, 1, 2]
            }]
        );
    }

    #[test]
    fn ip_inside_ethernet() {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00, 0x45, 1]);
        assert_eq!(ip_in_ethernet(&frame), Some(&[0x45, 1][..]));
        frame[12] = 0x86;
        frame[13] = 0xdd;
        assert_eq!(ip_in_ethernet(&frame), Some(&[0x45, 1][..]));
        frame[13] = 0x06; // ARP
        assert_eq!(ip_in_ethernet(&frame), None);
        assert_eq!(ip_in_ethernet(&frame[..13]), None);
    }

    #[test]
    fn broken_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.pcap");
        let mut rec = Recorder::create(&path).unwrap();
        rec.record(Duration::ZERO, &[0x45; 40]).unwrap();
        drop(rec);
        let whole = std::fs::read(&path).unwrap();
        for cut in 0..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            match read(&path) {
                Ok(packets) => assert!(packets.is_empty(), "cut at {cut}"),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::InvalidData, "cut at {cut}: {e}"),
            }
        }
        let mut ethernet = whole.clone();
        ethernet[20] = 1; // LINKTYPE_ETHERNET
        std::fs::write(&path, &ethernet).unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("not bare IP"));
    }
}
