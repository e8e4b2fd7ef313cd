//! WireGuard's cross-platform userspace API: the `get=1` / `set=1`
//! protocol that `wg` speaks over `/var/run/wireguard/IFNAME.sock` to
//! wireguard-go and boringtun (wireguard.com/xplatform, "Configuration
//! Protocol"), so the unmodified `wg` tool configures this device too.
//!
//! ```text
//! wg -> device          device -> wg
//! get=1                 private_key=<64 hex>    (each line key=value)
//! (blank line)          listen_port=51820
//!                       public_key=<64 hex>     (starts a peer)
//!                       endpoint=192.0.2.1:51820
//!                       allowed_ip=10.0.0.2/32
//!                       ...
//!                       errno=0
//!                       (blank line)
//!
//! set=1                 errno=0                 (or errno=-22: EINVAL...)
//! private_key=...       (blank line)
//! public_key=...
//! allowed_ip=...
//! (blank line)
//! ```
//!
//! This module is sans-IO: [`read_request`] turns the text of one request
//! into [`Request`] (checking every line before anything changes),
//! [`apply`] applies a set to a [`Device`], and [`get`] writes the
//! device's state. Errors are answered as wireguard-go answers them: the
//! negative errno.

use std::fmt::Write as _;
use std::io::{self, BufRead, Read};
use std::net::SocketAddr;
use std::time::Instant;

use ipnet::IpNet;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::device::Device;

// ANCHOR: errno
/// The errors of the protocol, as negative errno values (wireguard-go's
/// ipc package).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    /// A line that is not `key=value`, or a request that is not `get=1`
    /// or `set=1`.
    Protocol,
    /// A key or value that is not valid.
    Invalid,
    /// The listen port is taken.
    AddrInUse,
    /// Reading or writing the socket failed.
    Io,
}

impl Errno {
    pub fn code(self) -> i32 {
        match self {
            Errno::Protocol => -71,  // EPROTO
            Errno::Invalid => -22,   // EINVAL
            Errno::AddrInUse => -98, // EADDRINUSE
            Errno::Io => -5,         // EIO
        }
    }
}
// ANCHOR_END: errno

/// One change to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerOp {
    Remove,
    UpdateOnly,
    PresharedKey(Zeroizing<[u8; 32]>),
    Endpoint(SocketAddr),
    PersistentKeepalive(u16),
    ReplaceAllowedIps,
    AllowedIp { add: bool, net: IpNet },
    ProtocolVersion,
}

/// One change to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `None`: remove the key (all zeros).
    PrivateKey(Option<Zeroizing<[u8; 32]>>),
    ListenPort(u16),
    Fwmark(u32),
    ReplacePeers,
    Peer {
        public: [u8; 32],
        ops: Vec<PeerOp>,
    },
}

/// A request on the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Get,
    Set(Vec<Op>),
}

/// The longest line we read: a key line is 76 bytes, an endpoint or
/// allowed IP under 70.
pub const MAX_LINE: usize = 256;
/// The most lines in one set: room for thousands of peers, bounded so a
/// request cannot take unbounded memory.
pub const MAX_LINES: usize = 1 << 20;

/// Parses 64 hex digits.
fn hex_key(value: &str) -> Result<Zeroizing<[u8; 32]>, Errno> {
    let b = value.as_bytes();
    if b.len() != 64 {
        return Err(Errno::Invalid);
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(Errno::Invalid),
    };
    let mut key = Zeroizing::new([0u8; 32]);
    for (i, pair) in b.chunks(2).enumerate() {
        key[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(key)
}

fn write_hex(out: &mut String, key: &[u8; 32]) {
    for b in key {
        let _ = write!(out, "{b:02x}");
    }
}

fn parse_true(value: &str) -> Result<(), Errno> {
    if value == "true" {
        Ok(())
    } else {
        Err(Errno::Invalid)
    }
}

/// Reads one line (without its `\n`) of at most [`MAX_LINE`] bytes into
/// `line`; false at the end of the stream.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> Result<bool, Errno> {
    line.clear();
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', line)
        .map_err(|_| Errno::Io)?;
    if n == 0 {
        return Ok(false);
    }
    if line.last() != Some(&b'\n') {
        // Longer than any valid line, or the stream ended inside one.
        return Err(Errno::Protocol);
    }
    line.pop();
    Ok(true)
}

// ANCHOR: read_request
/// Reads the next request from the socket: `Ok(None)` when the client
/// closed it. A set is read whole and checked line by line before any of
/// it is applied, so a bad line changes nothing. After an error the
/// stream is out of step: answer the errno and close the connection.
pub fn read_request(reader: &mut impl BufRead) -> Result<Option<Request>, Errno> {
    let mut line = Vec::with_capacity(MAX_LINE + 1);
    if !read_line(reader, &mut line)? {
        return Ok(None);
    }
    match &line[..] {
        b"get=1" => {
            // The request ends with an empty line.
            if !read_line(reader, &mut line)? || !line.is_empty() {
                return Err(Errno::Invalid);
            }
            Ok(Some(Request::Get))
        }
        b"set=1" => {
            let mut ops = Vec::new();
            for _ in 0..MAX_LINES {
                let more = read_line(reader, &mut line);
                let more = match more {
                    Ok(m) => m,
                    Err(e) => {
                        line.zeroize();
                        return Err(e);
                    }
                };
                if !more || line.is_empty() {
                    line.zeroize();
                    return Ok(Some(Request::Set(ops)));
                }
                let parsed = parse_set_line(&line, &mut ops);
                // The line may have held a private key.
                line.zeroize();
                parsed?;
            }
            Err(Errno::Protocol)
        }
        _ => Err(Errno::Protocol),
    }
}
// ANCHOR_END: read_request

/// Adds the operation of one `key=value` line of a set to `ops`.
fn parse_set_line(line: &[u8], ops: &mut Vec<Op>) -> Result<(), Errno> {
    let text = std::str::from_utf8(line).map_err(|_| Errno::Protocol)?;
    let (key, value) = text.split_once('=').ok_or(Errno::Protocol)?;
    if key == "public_key" {
        let public = *hex_key(value)?;
        ops.push(Op::Peer {
            public,
            ops: Vec::new(),
        });
        return Ok(());
    }
    // Lines after the first public_key belong to the peer it named.
    if let Some(Op::Peer { ops: peer_ops, .. }) = ops.last_mut() {
        let op = match key {
            "remove" => parse_true(value).map(|_| PeerOp::Remove)?,
            "update_only" => parse_true(value).map(|_| PeerOp::UpdateOnly)?,
            "preshared_key" => PeerOp::PresharedKey(hex_key(value)?),
            "endpoint" => PeerOp::Endpoint(value.parse().map_err(|_| Errno::Invalid)?),
            "persistent_keepalive_interval" => {
                PeerOp::PersistentKeepalive(value.parse().map_err(|_| Errno::Invalid)?)
            }
            "replace_allowed_ips" => parse_true(value).map(|_| PeerOp::ReplaceAllowedIps)?,
            "allowed_ip" => {
                let (add, net) = match value.strip_prefix('-') {
                    Some(rest) => (false, rest),
                    None => (true, value),
                };
                PeerOp::AllowedIp {
                    add,
                    net: net.parse().map_err(|_| Errno::Invalid)?,
                }
            }
            "protocol_version" if value == "1" => PeerOp::ProtocolVersion,
            _ => return Err(Errno::Invalid),
        };
        peer_ops.push(op);
        return Ok(());
    }
    let op = match key {
        "private_key" => {
            let k = hex_key(value)?;
            Op::PrivateKey((*k != [0; 32]).then_some(k))
        }
        "listen_port" => Op::ListenPort(value.parse().map_err(|_| Errno::Invalid)?),
        "fwmark" => Op::Fwmark(value.parse().map_err(|_| Errno::Invalid)?),
        "replace_peers" => parse_true(value).map(|_| Op::ReplacePeers)?,
        _ => return Err(Errno::Invalid),
    };
    ops.push(op);
    Ok(())
}

/// What a set may ask of the I/O shell: the socket's port and mark.
pub trait Sockets {
    /// Binds the UDP sockets to `port` (0: any free port); returns the
    /// port bound.
    fn bind(&mut self, port: u16) -> io::Result<u16>;
    /// Sets the firewall mark of the sockets (0: none).
    fn set_fwmark(&mut self, mark: u32) -> io::Result<()>;
}

// ANCHOR: apply
/// Applies a set to `device`, in order, as wireguard-go does: a peer line
/// block creates the peer unless `update_only` says not to; `remove`
/// removes it; a peer with our own public key is ignored.
pub fn apply(
    device: &mut Device,
    ops: Vec<Op>,
    sockets: &mut dyn Sockets,
    now: Instant,
) -> Result<(), Errno> {
    for op in ops {
        match op {
            Op::PrivateKey(key) => {
                device.set_private_key(key.map(|k| StaticSecret::from(*k)));
            }
            Op::ListenPort(port) => {
                let bound = sockets.bind(port).map_err(|e| {
                    log::warn!("binding UDP port {port} failed: {e}");
                    Errno::AddrInUse
                })?;
                device.listen_port = bound;
            }
            Op::Fwmark(mark) => {
                sockets.set_fwmark(mark).map_err(|e| {
                    log::warn!("setting fwmark {mark} failed: {e}");
                    Errno::AddrInUse
                })?;
                device.fwmark = mark;
            }
            Op::ReplacePeers => device.remove_all_peers(),
            Op::Peer { public, ops } => apply_peer(device, PublicKey::from(public), ops, now),
        }
    }
    Ok(())
}

fn apply_peer(device: &mut Device, public: PublicKey, ops: Vec<PeerOp>, now: Instant) {
    let existed = device.peer_id(&public).is_some();
    let update_only = ops.contains(&PeerOp::UpdateOnly);
    if ops.contains(&PeerOp::Remove) {
        if let Some(id) = device.peer_id(&public) {
            device.remove_peer(id);
        }
        return;
    }
    if update_only && !existed {
        return;
    }
    // `None`: our own key, which cannot be a peer (its lines are ignored).
    let Some(id) = device.add_peer(public) else { return };
    for op in ops {
        match op {
            PeerOp::PresharedKey(k) => device.set_preshared_key(id, *k),
            PeerOp::Endpoint(e) => device.set_endpoint(id, e),
            PeerOp::PersistentKeepalive(s) => device.set_persistent_keepalive(id, s, now),
            PeerOp::ReplaceAllowedIps => device.clear_allowed_ips(id),
            PeerOp::AllowedIp { add: true, net } => device.add_allowed_ip(id, net),
            PeerOp::AllowedIp { add: false, net } => device.remove_allowed_ip(id, net),
            PeerOp::Remove | PeerOp::UpdateOnly | PeerOp::ProtocolVersion => {}
        }
    }
}
// ANCHOR_END: apply

// ANCHOR: get
/// The answer to `get=1`, `errno=0` and the blank line included. It holds
/// the private and pre-shared keys (as wireguard-go's does: `wg showconf`
/// prints them), so the caller wipes it once written.
pub fn get(device: &Device) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(512));
    if let Some(key) = device.private_bytes() {
        let mut key = Zeroizing::new(key);
        out.push_str("private_key=");
        write_hex(&mut out, &key);
        out.push('\n');
        key.zeroize();
    }
    if device.listen_port != 0 {
        let _ = writeln!(out, "listen_port={}", device.listen_port);
    }
    if device.fwmark != 0 {
        let _ = writeln!(out, "fwmark={}", device.fwmark);
    }
    for id in device.peer_ids() {
        let Some(p) = device.peer_info(id) else { continue };
        out.push_str("public_key=");
        write_hex(&mut out, p.public.as_bytes());
        out.push_str("\npreshared_key=");
        write_hex(&mut out, &p.psk);
        out.push_str("\nprotocol_version=1\n");
        if let Some(e) = p.endpoint {
            let _ = writeln!(out, "endpoint={e}");
        }
        let t = p.last_handshake.unwrap_or_default();
        let _ = writeln!(out, "last_handshake_time_sec={}", t.as_secs());
        let _ = writeln!(out, "last_handshake_time_nsec={}", t.subsec_nanos());
        let _ = writeln!(out, "tx_bytes={}", p.stats.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", p.stats.rx_bytes);
        let _ = writeln!(out, "persistent_keepalive_interval={}", p.keepalive);
        for net in p.allowed {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
    out.push_str("errno=0\n\n");
    out
}
// ANCHOR_END: get

/// The answer to a set, or to a request that failed.
pub fn status(result: Result<(), Errno>) -> String {
    match result {
        Ok(()) => "errno=0\n\n".to_string(),
        Err(e) => format!("errno={}\n\n", e.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use step04_crypto::entropy::Scripted;

    struct FakeSockets {
        taken: u16,
    }

    impl Sockets for FakeSockets {
        fn bind(&mut self, port: u16) -> io::Result<u16> {
            if port == self.taken {
                Err(io::Error::from(io::ErrorKind::AddrInUse))
            } else if port == 0 {
                Ok(40000)
            } else {
                Ok(port)
            }
        }
        fn set_fwmark(&mut self, _: u32) -> io::Result<()> {
            Ok(())
        }
    }

    fn device() -> Device {
        Device::new(
            1420,
            Box::new(Scripted::default()),
            Instant::now(),
            Duration::from_secs(1_800_000_000),
        )
    }

    fn run(d: &mut Device, text: &str) -> Result<(), Errno> {
        let mut r = text.as_bytes();
        match read_request(&mut r)? {
            Some(Request::Set(ops)) => apply(d, ops, &mut FakeSockets { taken: 1 }, Instant::now()),
            other => panic!("{other:?}"),
        }
    }

    fn hex(byte: u8) -> String {
        format!("{byte:02x}").repeat(32)
    }

    fn public_hex(byte: u8) -> String {
        let p = PublicKey::from(&StaticSecret::from([byte; 32]));
        p.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_set_then_a_get() {
        let mut d = device();
        let text = format!(
            "set=1\nprivate_key={}\nlisten_port=51820\npublic_key={}\npreshared_key={}\nendpoint=[2001:db8::1]:51820\npersistent_keepalive_interval=25\nallowed_ip=10.0.0.2/32\nallowed_ip=fd00::2/128\n\n",
            hex(1),
            public_hex(2),
            hex(3)
        );
        run(&mut d, &text).unwrap();
        let out = get(&d);
        let expected = format!(
            "private_key={}\nlisten_port=51820\npublic_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=[2001:db8::1]:51820\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=25\nallowed_ip=10.0.0.2/32\nallowed_ip=fd00::2/128\nerrno=0\n\n",
            hex(1),
            public_hex(2),
            hex(3)
        );
        assert_eq!(*out, expected);
    }

    #[test]
    fn peers_are_updated_replaced_and_removed() {
        let mut d = device();
        run(&mut d, &format!("set=1\nprivate_key={}\npublic_key={}\nallowed_ip=10.0.0.2/32\npublic_key={}\nallowed_ip=10.0.0.3/32\n\n", hex(1), public_hex(2), public_hex(3))).unwrap();
        assert_eq!(d.peer_ids().len(), 2);
        // replace_allowed_ips, and removing one allowed IP.
        run(&mut d, &format!("set=1\npublic_key={}\nreplace_allowed_ips=true\nallowed_ip=10.0.0.9/32\nallowed_ip=10.0.0.8/32\nallowed_ip=-10.0.0.8/32\n\n", public_hex(2))).unwrap();
        let id = d.peer_id(&PublicKey::from(&StaticSecret::from([2; 32]))).unwrap();
        assert_eq!(
            d.peer_info(id).unwrap().allowed,
            vec!["10.0.0.9/32".parse::<IpNet>().unwrap()]
        );
        // update_only does not create.
        run(
            &mut d,
            &format!(
                "set=1\npublic_key={}\nupdate_only=true\nallowed_ip=10.0.0.4/32\n\n",
                public_hex(4)
            ),
        )
        .unwrap();
        assert_eq!(d.peer_ids().len(), 2);
        run(
            &mut d,
            &format!("set=1\npublic_key={}\nremove=true\n\n", public_hex(3)),
        )
        .unwrap();
        assert_eq!(d.peer_ids().len(), 1);
        // Our own key as a peer is ignored.
        run(
            &mut d,
            &format!("set=1\npublic_key={}\nallowed_ip=10.0.0.1/32\n\n", public_hex(1)),
        )
        .unwrap();
        assert_eq!(d.peer_ids().len(), 1);
        run(&mut d, "set=1\nreplace_peers=true\n\n").unwrap();
        assert!(d.peer_ids().is_empty());
        // A zero private key removes ours.
        run(&mut d, &format!("set=1\nprivate_key={}\n\n", "0".repeat(64))).unwrap();
        assert!(d.public().is_none());
    }

    #[test]
    fn malformed_requests_get_the_errno_wireguard_go_answers_and_change_nothing() {
        let mut d = device();
        let cases: Vec<(String, Errno)> = vec![
            ("set=1\nprivate_key=zz\n\n".into(), Errno::Invalid),
            ("set=1\nlisten_port=65536\n\n".into(), Errno::Invalid),
            ("set=1\nno equals sign\n\n".into(), Errno::Protocol),
            ("set=1\nbogus=1\n\n".into(), Errno::Invalid),
            (
                format!("set=1\npublic_key={}\nendpoint=nowhere\n\n", public_hex(2)),
                Errno::Invalid,
            ),
            (
                format!("set=1\npublic_key={}\nallowed_ip=10.0.0.0/33\n\n", public_hex(2)),
                Errno::Invalid,
            ),
            (
                format!("set=1\npublic_key={}\nprotocol_version=2\n\n", public_hex(2)),
                Errno::Invalid,
            ),
            (
                format!("set=1\npublic_key={}\nremove=yes\n\n", public_hex(2)),
                Errno::Invalid,
            ),
            (format!("set=1\n{}\n\n", "x".repeat(1000)), Errno::Protocol),
            ("set=1\nlisten_port=1\n\n".into(), Errno::AddrInUse),
            ("hello=1\n\n".into(), Errno::Protocol),
            ("get=1\nextra\n".into(), Errno::Invalid),
            ("set=1\nprivate_key=\u{ff}\n\n".into(), Errno::Invalid),
        ];
        for (text, errno) in cases {
            // A good line first: a bad one later must stop it too.
            let text = text.replacen("set=1\n", "set=1\nfwmark=7\n", 1);
            assert_eq!(run_or_err(&mut d, &text), Err(errno), "{text:?}");
            // Checked before anything changed; only the port's failure
            // comes while applying, after the lines before it.
            assert_eq!(d.fwmark, if errno == Errno::AddrInUse { 7 } else { 0 });
            d.fwmark = 0;
        }
        assert!(d.peer_ids().is_empty());
        assert_eq!(status(Err(Errno::Invalid)), "errno=-22\n\n");
    }

    fn run_or_err(d: &mut Device, text: &str) -> Result<(), Errno> {
        let mut r = text.as_bytes();
        match read_request(&mut r)? {
            Some(Request::Set(ops)) => apply(d, ops, &mut FakeSockets { taken: 1 }, Instant::now()),
            Some(Request::Get) => Ok(()),
            None => Ok(()),
        }
    }

    #[test]
    fn a_get_request_and_an_end_of_stream() {
        let mut r = &b"get=1\n\nget=1\n\n"[..];
        assert_eq!(read_request(&mut r), Ok(Some(Request::Get)));
        assert_eq!(read_request(&mut r), Ok(Some(Request::Get)));
        assert_eq!(read_request(&mut r), Ok(None));
        // The key hex may be upper case; the answer is lower case.
        assert!(hex_key(&"AB".repeat(32)).is_ok());
    }
}
