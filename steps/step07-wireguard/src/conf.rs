//! wg-quick's configuration file: an INI file with one `[Interface]`
//! section and a `[Peer]` section per peer (the format of wg-quick(8),
//! whose `[Peer]` keys and `PrivateKey`, `ListenPort` and `FwMark` are
//! wg(8)'s own).
//!
//! ```ini
//! [Interface]
//! PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
//! Address = 10.0.0.2/24, fd00::2/64
//! ListenPort = 51820
//! DNS = 10.0.0.1, lab.example
//! MTU = 1420
//!
//! [Peer]
//! PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
//! PresharedKey = ...
//! Endpoint = 192.0.2.1:51820
//! AllowedIPs = 0.0.0.0/0, ::/0
//! PersistentKeepalive = 25
//! ```
//!
//! As wg does: keys are case-insensitive, a `#` starts a comment, spaces
//! do not matter, lists are comma-separated and a list key may repeat.
//! Every error names its line.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use step04_crypto::keys;
use zeroize::Zeroizing;

/// A configuration error, with the line (from 1) it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for ConfError {}

/// `[Interface]`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Interface {
    pub private_key: Option<Zeroizing<[u8; 32]>>,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub addresses: Vec<IpNet>,
    /// `DNS`'s name servers, in order.
    pub dns: Vec<IpAddr>,
    /// `DNS`'s other entries: search domains, in order.
    pub dns_search: Vec<String>,
    pub mtu: Option<u16>,
}

/// A `[Peer]`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Peer {
    pub public_key: [u8; 32],
    pub preshared_key: Option<Zeroizing<[u8; 32]>>,
    pub allowed_ips: Vec<IpNet>,
    /// `HOST:PORT` as written: resolved when the interface comes up.
    pub endpoint: Option<String>,
    pub persistent_keepalive: Option<u16>,
    /// Where its section starts, for later errors.
    pub line: usize,
}

/// A whole file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Config {
    pub interface: Interface,
    pub peers: Vec<Peer>,
}

impl Config {
    /// True when a peer takes all of IPv4 or all of IPv6: a full tunnel.
    pub fn full_tunnel(&self) -> bool {
        self.peers
            .iter()
            .flat_map(|p| &p.allowed_ips)
            .any(|net| net.prefix_len() == 0)
    }
}

enum Section {
    None,
    Interface,
    Peer,
}

fn err(line: usize, message: impl Into<String>) -> ConfError {
    ConfError {
        line,
        message: message.into(),
    }
}

fn key_value(line: usize, key: &str, value: &str) -> Result<Zeroizing<[u8; 32]>, ConfError> {
    keys::decode(value).ok().map(Zeroizing::new).ok_or_else(|| {
        err(
            line,
            format!("{key} is not a key (44 characters of base64, as `wg genkey` prints)"),
        )
    })
}

fn list<T: std::str::FromStr>(line: usize, key: &str, value: &str) -> Result<Vec<T>, ConfError> {
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.parse()
                .map_err(|_| err(line, format!("`{item}` in {key} is not valid")))
        })
        .collect()
}

/// One entry of `DNS`.
enum Dns {
    Server(IpAddr),
    Search(String),
}

// ANCHOR: dns_entry
/// Sorts an entry of `DNS` as wg-quick does (wireguard-tools,
/// src/wg-quick/linux.bash, `parse_options`): one made only of digits and
/// dots, or with a colon in it, is a name server (here it must then be an
/// IP address); anything else is a search domain (here it must then be a
/// domain name, since it is written into the resolver file).
fn dns_entry(line: usize, item: &str) -> Result<Dns, ConfError> {
    if item.chars().all(|c| c.is_ascii_digit() || c == '.') || item.contains(':') {
        return item
            .parse()
            .map(Dns::Server)
            .map_err(|_| err(line, format!("`{item}` in DNS is not an IP address")));
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let name = item.strip_suffix('.').unwrap_or(item);
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(err(
            line,
            format!("`{item}` in DNS is neither an IP address nor a domain name"),
        ));
    }
    Ok(Dns::Search(item.to_string()))
}
// ANCHOR_END: dns_entry

fn number<T: std::str::FromStr>(line: usize, key: &str, value: &str) -> Result<T, ConfError> {
    value
        .parse()
        .map_err(|_| err(line, format!("{key} = `{value}` is not a valid number")))
}

// ANCHOR: parse
/// Parses the text of a configuration file.
pub fn parse(text: &str) -> Result<Config, ConfError> {
    let mut config = Config::default();
    let mut section = Section::None;
    let mut seen_interface = false;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        // A comment runs to the end of the line; spaces never matter.
        let content = raw.split('#').next().unwrap_or("");
        let line: String = content.chars().filter(|c| !c.is_whitespace()).collect();
        let line = Zeroizing::new(line);
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = match line.to_ascii_lowercase().as_str() {
                "[interface]" if seen_interface => return Err(err(n, "a second [Interface] section")),
                "[interface]" => {
                    seen_interface = true;
                    Section::Interface
                }
                "[peer]" => {
                    config.peers.push(Peer {
                        line: n,
                        ..Peer::default()
                    });
                    Section::Peer
                }
                _ => {
                    return Err(err(
                        n,
                        format!("`{}` is not [Interface] or [Peer]", line.as_str()),
                    ));
                }
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(n, "expected `Key = Value`"));
        };
        let lower = key.to_ascii_lowercase();
        match section {
            Section::None => return Err(err(n, format!("`{key}` before any [Interface] or [Peer]"))),
            Section::Interface => {
                let iface = &mut config.interface;
                match lower.as_str() {
                    "privatekey" => iface.private_key = Some(key_value(n, key, value)?),
                    "listenport" => iface.listen_port = Some(number(n, key, value)?),
                    "fwmark" if value == "off" => iface.fwmark = None,
                    "fwmark" => {
                        iface.fwmark = Some(match value.strip_prefix("0x") {
                            Some(hex) => u32::from_str_radix(hex, 16)
                                .map_err(|_| err(n, format!("FwMark = `{value}` is not a number")))?,
                            None => number(n, key, value)?,
                        })
                    }
                    "address" => iface.addresses.extend(list::<IpNet>(n, key, value)?),
                    "dns" => {
                        for item in value.split(',').filter(|s| !s.is_empty()) {
                            match dns_entry(n, item)? {
                                Dns::Server(ip) => iface.dns.push(ip),
                                Dns::Search(domain) => iface.dns_search.push(domain),
                            }
                        }
                    }
                    "mtu" => {
                        let mtu: u16 = number(n, key, value)?;
                        if mtu < 576 {
                            return Err(err(n, format!("MTU = {mtu} is below 576")));
                        }
                        iface.mtu = Some(mtu);
                    }
                    "table" | "preup" | "postup" | "predown" | "postdown" | "saveconfig" => {
                        return Err(err(
                            n,
                            format!("{key} is a wg-quick key this step does not support"),
                        ));
                    }
                    _ => return Err(err(n, format!("`{key}` is not a key of [Interface]"))),
                }
            }
            Section::Peer => {
                let Some(peer) = config.peers.last_mut() else {
                    return Err(err(n, "a key outside a [Peer] section"));
                };
                match lower.as_str() {
                    "publickey" => peer.public_key = *key_value(n, key, value)?,
                    "presharedkey" => peer.preshared_key = Some(key_value(n, key, value)?),
                    "allowedips" => peer.allowed_ips.extend(list::<IpNet>(n, key, value)?),
                    "endpoint" => {
                        if !value.contains(':') || value.ends_with(':') {
                            return Err(err(n, format!("Endpoint = `{value}` is not HOST:PORT")));
                        }
                        peer.endpoint = Some(value.to_string());
                    }
                    "persistentkeepalive" => {
                        peer.persistent_keepalive = match value {
                            "off" => None,
                            v => Some(number(n, key, v)?),
                        }
                    }
                    _ => return Err(err(n, format!("`{key}` is not a key of [Peer]"))),
                }
            }
        }
    }
    if !seen_interface {
        return Err(err(0, "no [Interface] section"));
    }
    for peer in &config.peers {
        if peer.public_key == [0; 32] {
            return Err(err(peer.line, "this [Peer] has no PublicKey"));
        }
    }
    Ok(config)
}
// ANCHOR_END: parse

/// Hex, as the UAPI wants keys.
fn hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

// ANCHOR: to_uapi
/// The `set=1` request that gives a device this configuration (what `wg
/// setconf` sends), with endpoints already resolved by `resolve`. It holds
/// the private key: the caller wipes it.
pub fn to_uapi(
    config: &Config,
    resolve: impl Fn(&str) -> Result<std::net::SocketAddr, String>,
) -> Result<Zeroizing<String>, ConfError> {
    let mut out = Zeroizing::new(String::from("set=1\n"));
    let i = &config.interface;
    if let Some(k) = &i.private_key {
        out.push_str(&format!("private_key={}\n", hex(k)));
    }
    if let Some(p) = i.listen_port {
        out.push_str(&format!("listen_port={p}\n"));
    }
    if let Some(m) = i.fwmark {
        out.push_str(&format!("fwmark={m}\n"));
    }
    out.push_str("replace_peers=true\n");
    for p in &config.peers {
        out.push_str(&format!("public_key={}\n", hex(&p.public_key)));
        if let Some(k) = &p.preshared_key {
            out.push_str(&format!("preshared_key={}\n", hex(k)));
        }
        if let Some(e) = &p.endpoint {
            let addr = resolve(e).map_err(|why| err(p.line, format!("Endpoint {e}: {why}")))?;
            out.push_str(&format!("endpoint={addr}\n"));
        }
        if let Some(k) = p.persistent_keepalive {
            out.push_str(&format!("persistent_keepalive_interval={k}\n"));
        }
        out.push_str("replace_allowed_ips=true\n");
        for net in &p.allowed_ips {
            out.push_str(&format!("allowed_ip={net}\n"));
        }
    }
    out.push('\n');
    Ok(out)
}
// ANCHOR_END: to_uapi

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const PEER: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    #[test]
    fn a_wg_quick_file_parses() {
        let text = format!(
            "# client\n[Interface]\nPrivateKey = {KEY}\nAddress = 10.0.0.2/24, fd00::2/64\nlistenport=51820\nDNS = 10.0.0.1\nMTU = 1380\n\n[Peer]  # the server\nPublicKey = {PEER}\nEndpoint = 192.0.2.1:51820\nAllowedIPs = 0.0.0.0/0\nAllowedIPs = ::/0\nPersistentKeepalive = 25\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.interface.listen_port, Some(51820));
        assert_eq!(c.interface.addresses.len(), 2);
        assert_eq!(c.interface.dns, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(c.interface.dns_search.is_empty());
        assert_eq!(c.interface.mtu, Some(1380));
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.peers[0].allowed_ips.len(), 2);
        assert_eq!(c.peers[0].persistent_keepalive, Some(25));
        assert!(c.full_tunnel());
        let uapi = to_uapi(&c, |e| e.parse().map_err(|_| "no".to_string())).unwrap();
        assert!(uapi.starts_with("set=1\nprivate_key=c809f3e5"));
        assert!(uapi.contains("\nendpoint=192.0.2.1:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=0.0.0.0/0\nallowed_ip=::/0\n\n"));
    }

    #[test]
    fn dns_takes_every_server_and_search_domains_as_wg_quick_does() {
        let text = "[Interface]\nDNS = 10.0.0.1, fd00::1, lab.example\nDNS = 192.0.2.53,corp.example.\n";
        let c = parse(text).unwrap();
        let servers: Vec<IpAddr> = ["10.0.0.1", "fd00::1", "192.0.2.53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(c.interface.dns, servers);
        assert_eq!(c.interface.dns_search, ["lab.example", "corp.example."]);
    }

    #[test]
    fn every_error_names_its_line() {
        let cases = [
            ("[Interface]\nPrivateKey = nope\n", 2, "PrivateKey is not a key"),
            (
                "[Interface]\nAdress = 10.0.0.1/24\n",
                2,
                "`Adress` is not a key of [Interface]",
            ),
            (
                "[Interface]\n\n[Peer]\nPublicKey = x\n",
                4,
                "PublicKey is not a key",
            ),
            (
                "[Interface]\n[Peer]\nAllowedIPs = 10.0.0.0/33\n",
                3,
                "`10.0.0.0/33` in AllowedIPs",
            ),
            ("[Interface]\nListenPort = 70000\n", 2, "not a valid number"),
            ("[Interface]\nPostUp = iptables -A\n", 2, "does not support"),
            ("[Interface]\n[Peer]\nEndpoint = 192.0.2.1\n", 3, "not HOST:PORT"),
            ("PrivateKey = x\n", 1, "before any [Interface]"),
            ("[Interface]\n[Peer]\n", 2, "has no PublicKey"),
            ("[Interface]\nMTU = 100\n", 2, "below 576"),
            ("[Interface]\njunk\n", 2, "Key = Value"),
            ("[Interfaces]\n", 1, "not [Interface] or [Peer]"),
            (
                "[Interface]\nDNS = 10.0.0.1, 10.0.0\n",
                2,
                "`10.0.0` in DNS is not an IP address",
            ),
            (
                "[Interface]\nDNS = fd00::zz\n",
                2,
                "`fd00::zz` in DNS is not an IP address",
            ),
            (
                "[Interface]\nDNS = lab..example\n",
                2,
                "`lab..example` in DNS is neither an IP address nor a domain name",
            ),
            (
                "[Interface]\nDNS = -lab.example\n",
                2,
                "neither an IP address nor a domain name",
            ),
        ];
        for (text, line, words) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(words), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("line {line}: ")));
        }
        assert_eq!(parse("").unwrap_err().to_string(), "no [Interface] section");
    }
}
