//! Recording and reading captures of what crosses a TUN device.
//!
//! A TUN device carries bare IP packets, with no Ethernet header, so the
//! captures use LINKTYPE_RAW (101): each record is one IPv4 or IPv6 packet.
//! We always write little-endian headers with microsecond timestamps, so the
//! same packets at the same times give the same file, byte for byte.
//! Wireshark, tshark and tcpdump read these files directly.
//!
//! Reading takes pcapng too, the format Wireshark saves in by default.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

pub use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
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

/// Reads every record of a pcap or pcapng file of any link type, such as
/// the Ethernet frames tcpdump records on a veth interface, with the link
/// type. A pcapng file may describe several interfaces; they must all have
/// the same link type.
pub fn read_any(path: &Path) -> io::Result<(DataLink, Vec<Captured>)> {
    let mut file = BufReader::new(File::open(path)?);
    // A pcapng file starts with a Section Header Block, type 0x0a0d0d0a
    // (the same bytes in either byte order); a pcap file with its magic.
    if file.fill_buf()?.starts_with(&PCAPNG_MAGIC) {
        return read_pcapng(path, file);
    }
    let bad = |e: pcap_file::PcapError| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
    };
    let mut reader = PcapReader::new(file).map_err(bad)?;
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

/// The block type of a pcapng Section Header Block, which starts the file.
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

fn read_pcapng(path: &Path, file: BufReader<File>) -> io::Result<(DataLink, Vec<Captured>)> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()));
    let mut reader = PcapNgReader::new(file).map_err(|e| bad(e.to_string()))?;
    let mut link = None;
    let mut packets = Vec::new();
    while let Some(block) = reader.next_block() {
        let block = block.map_err(|e| bad(e.to_string()))?;
        let (data, interface, timestamp) = match block {
            Block::EnhancedPacket(p) => (p.data.into_owned(), Some(p.interface_id), Some(p.timestamp)),
            // No interface number: the first; no time.
            Block::SimplePacket(p) => (p.data.into_owned(), None, None),
            Block::Packet(p) => (
                p.data.into_owned(),
                Some(u32::from(p.interface_id)),
                Some(Duration::from_nanos(p.timestamp)),
            ),
            _ => continue,
        };
        let number = interface.unwrap_or(0);
        let idb = reader.interfaces().get(number as usize).ok_or_else(|| {
            bad(format!(
                "a packet of interface {number}, which no block describes"
            ))
        })?;
        match link {
            None => link = Some(idb.linktype),
            Some(l) if l == idb.linktype => {}
            Some(l) => {
                return Err(bad(format!(
                    "packets of two link types, {l:?} and {:?}: save one interface's packets",
                    idb.linktype
                )));
            }
        }
        let resolution = idb.options.iter().find_map(|o| match o {
            InterfaceDescriptionOption::IfTsResol(r) => Some(r.to_owned()),
            _ => None,
        });
        packets.push(Captured {
            timestamp: timestamp.map_or(Duration::ZERO, |t| since_epoch(t, resolution)),
            data,
        });
    }
    Ok((link.unwrap_or(DataLink::RAW), packets))
}

/// The time of a pcapng packet. pcap-file 2.0 gives the raw 64-bit count
/// as nanoseconds, but its unit is the interface's `if_tsresol` (pcapng,
/// RFC draft `draft-ietf-opsawg-pcapng` section 4.2): 10^-n seconds, or
/// 2^-n with the top bit set, and microseconds when the option is absent.
fn since_epoch(raw: Duration, resolution: Option<u8>) -> Duration {
    let units = raw.as_nanos();
    let resolution = resolution.unwrap_or(6);
    let exponent = u32::from(resolution & 0x7f);
    let nanos = if resolution & 0x80 != 0 {
        units
            .saturating_mul(1_000_000_000)
            .checked_shr(exponent)
            .unwrap_or(0)
    } else if exponent <= 9 {
        units.saturating_mul(10u128.pow(9 - exponent))
    } else {
        10u128.checked_pow(exponent - 9).map_or(0, |d| units / d)
    };
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
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

    /// A pcapng file as Wireshark writes one: a section, an interface of
    /// `link` (with an `if_tsresol` if given), and one enhanced packet
    /// block per packet, its time in the interface's units.
    fn pcapng(link: DataLink, resolution: Option<u8>, packets: &[(u64, &[u8])]) -> Vec<u8> {
        use pcap_file::pcapng::PcapNgWriter;
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
        use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
        let mut writer = PcapNgWriter::new(Vec::new()).unwrap();
        let idb = InterfaceDescriptionBlock {
            linktype: link,
            snaplen: 0,
            options: resolution
                .map(InterfaceDescriptionOption::IfTsResol)
                .into_iter()
                .collect(),
        };
        writer.write_pcapng_block(idb).unwrap();
        for (units, data) in packets {
            let epb = EnhancedPacketBlock {
                interface_id: 0,
                // pcap-file writes the count of this Duration's nanoseconds:
                // the raw count, whatever the unit.
                timestamp: Duration::from_nanos(*units),
                original_len: data.len() as u32,
                data: std::borrow::Cow::Borrowed(data),
                options: vec![],
            };
            writer.write_pcapng_block(epb).unwrap();
        }
        writer.into_inner()
    }

    #[test]
    fn reads_pcapng_in_the_interfaces_time_unit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read.pcapng");
        // No if_tsresol: microseconds.
        let bytes = pcapng(DataLink::RAW, None, &[(1_700_000_000_123_456, &[0x45, 1, 2])]);
        std::fs::write(&path, &bytes).unwrap();
        let (link, packets) = read_any(&path).unwrap();
        assert_eq!(link, DataLink::RAW);
        assert_eq!(
            packets,
            vec![Captured {
                timestamp: Duration::new(1_700_000_000, 123_456_000),
                data: vec![0x45, 1, 2]
            }]
        );
        // Nanoseconds (if_tsresol 9), Ethernet.
        let bytes = pcapng(
            DataLink::ETHERNET,
            Some(9),
            &[(1_700_000_000_123_456_789, &[0; 14])],
        );
        std::fs::write(&path, &bytes).unwrap();
        let (link, packets) = read_any(&path).unwrap();
        assert_eq!(link, DataLink::ETHERNET);
        assert_eq!(packets[0].timestamp, Duration::new(1_700_000_000, 123_456_789));
        assert!(read(&path).unwrap_err().to_string().contains("not bare IP"));
        // Cut anywhere: an error or fewer packets, never a panic.
        for cut in 0..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            if let Ok((_, packets)) = read_any(&path) {
                assert!(packets.is_empty(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn pcapng_time_units() {
        let raw = Duration::from_nanos(1_500);
        assert_eq!(since_epoch(raw, None), Duration::from_micros(1_500));
        assert_eq!(since_epoch(raw, Some(6)), Duration::from_micros(1_500));
        assert_eq!(since_epoch(raw, Some(9)), Duration::from_nanos(1_500));
        assert_eq!(since_epoch(raw, Some(3)), Duration::from_millis(1_500));
        assert_eq!(since_epoch(raw, Some(12)), Duration::from_nanos(1));
        // 2^-10 s units: 1500 / 1024 s.
        assert_eq!(
            since_epoch(raw, Some(0x80 | 10)),
            Duration::from_nanos(1_464_843_750)
        );
        // Absurd resolutions give an absurd time, not a panic.
        for r in [0, 0x7f, 0x80, 0xff] {
            since_epoch(Duration::from_nanos(u64::MAX), Some(r));
        }
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
