//! Lab topologies as data, and the one function that builds them.
//!
//! A [`Spec`] lists a lab's hosts, the veth links between them (each end's
//! interface and addresses, the link's MTU), the routes and the sysctls the
//! hosts start with. [`Spec::build`] turns it into network namespaces; the
//! lab's own file then only starts programs and checks what they do. The
//! specs of every lab are here, next to the addresses they use, so that each
//! address is written once and a figure can be drawn from the same data a
//! lab runs (walk [`Spec::links`]: each [`Link`] has both [`End`]s).
//!
//! The underlay uses the documentation prefixes of RFC 5737 (192.0.2.0/24
//! on the clients' side of the server, 198.51.100.0/24 on the internet
//! side, 203.0.113.0/24 for "anywhere else") and 2001:db8::/32 of RFC 3849;
//! the tunnel uses 10.0.0.0/24 (RFC 1918) and fd00::/64 (a unique local
//! prefix, RFC 4193). They exist only inside the lab's own namespaces.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Context;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::hoststate::{FORWARDING, ROUTE_LOCALNET};
use crate::netns::{Host, Topology};

/// The TUN device every step creates.
pub const TUN: &str = "tun0";
/// The tunnel's UDP port (WireGuard's).
pub const TUNNEL_PORT: u16 = 51820;
/// Where the impairment relay (`tunlab-relay`) listens, in front of the
/// server.
pub const RELAY_PORT: u16 = 7000;

/// `address/prefix`, as a constant.
const fn v4(address: Ipv4Addr, prefix: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(address, prefix))
}

const fn v6(address: Ipv6Addr, prefix: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(address, prefix))
}

/// Inside the tunnel: 10.0.0.0/24 and fd00::/64. The server is `.1`, the
/// clients count up from `.2`.
pub mod tunnel {
    use super::*;

    pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    /// A second client (lab 05's client2; lab 04's intruder claims it).
    pub const CLIENT2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    /// A client the server does not list.
    pub const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
    /// An address of the subnet that no device has (lab 01: step 01
    /// answers for every address of its subnet).
    pub const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
    pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    pub const CLIENT2_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);

    /// The two prefixes: what a server with `--nat` masquerades.
    pub const NET: IpNet = v4(Ipv4Addr::new(10, 0, 0, 0), 24);
    pub const NET6: IpNet = v6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), 64);

    /// An address of the tunnel with its prefix, as `--address` takes it:
    /// `10.0.0.1/24`, `fd00::1/64`.
    pub fn cidr(address: impl Into<IpAddr>) -> IpNet {
        match address.into() {
            IpAddr::V4(a) => v4(a, NET.prefix_len()),
            IpAddr::V6(a) => v6(a, NET6.prefix_len()),
        }
    }

    /// An address alone, as the server's `--peer` lists it: `10.0.0.2/32`.
    pub fn host(address: impl Into<IpAddr>) -> IpNet {
        IpNet::from(address.into())
    }
}

/// The underlay between the clients and the server: 192.0.2.0/24 and
/// 2001:db8::/32.
pub mod underlay {
    use super::*;

    /// The server's address on the (first) client link, and the client's.
    pub const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    /// A second address the client moves to (lab 04's roaming).
    pub const ROAMED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
    /// Lab 05 splits the /24 in two links: 192.0.2.0/25 to client1,
    /// 192.0.2.128/25 to client2.
    pub const SERVER_LINK2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 129);
    pub const CLIENT2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 130);
    /// A harmless resolver the clients start with (nobody answers there).
    pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
    pub const NET: IpNet = v4(Ipv4Addr::new(192, 0, 2, 0), 24);

    /// One IPv6 link (lab 03): the server and the client.
    pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    /// Two IPv6 links, 2001:db8:1::/64 and 2001:db8:2::/64, each between a
    /// gateway (`::1`: lab 05's server, lab 03's router) and a host (`::2`:
    /// lab 05's clients, lab 03's client and server).
    pub const LINK1_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
    pub const LINK1_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
    pub const LINK2_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
    pub const LINK2_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
    pub const NET6: IpNet = v6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32);
}

/// Beyond the server: 198.51.100.0/24 and 2001:db8:100::/64.
pub mod internet {
    use super::*;

    /// The server's address on this side: what NAT turns the clients'
    /// tunnel addresses into, and where a visitor reaches it.
    pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    /// The internet host (lab 05's web server, lab 06's visitor).
    pub const HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    /// Lab 04's intruder.
    pub const INTRUDER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
    /// The internet host's name server (a second address of its own).
    pub const DNS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
    pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
    pub const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);
    /// Addresses of nobody in particular (RFC 5737's third prefix, and a
    /// corner of 2001:db8::/32), which a full tunnel must route into the
    /// TUN device too.
    pub const ANYWHERE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
    pub const ANYWHERE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 9);
}

/// A lab topology: hosts, links, routes, sysctls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The hosts, in the order they are created.
    pub hosts: Vec<&'static str>,
    pub links: Vec<Link>,
    pub routes: Vec<Route>,
    /// Sysctls set in a host before anything runs there.
    pub sysctls: Vec<Sysctl>,
}

/// A veth pair between two hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub a: End,
    pub b: End,
    /// Set on both ends; the kernel's default (1500) when `None`.
    pub mtu: Option<u16>,
}

/// One end of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub host: &'static str,
    pub interface: &'static str,
    /// Added in this order (the first IPv4 address is the primary one).
    pub addresses: Vec<IpNet>,
}

/// `ip route add TO via VIA` in `host` (`default` when `to` is /0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: &'static str,
    pub to: IpNet,
    pub via: IpAddr,
}

/// A sysctl of a host's own namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub host: &'static str,
    pub key: &'static str,
    pub value: &'static str,
}

/// An end: `host`'s `interface` with `addresses`.
pub fn end(host: &'static str, interface: &'static str, addresses: &[IpNet]) -> End {
    End {
        host,
        interface,
        addresses: addresses.to_vec(),
    }
}

impl Spec {
    /// Hosts with only `lo`.
    pub fn new(hosts: &[&'static str]) -> Self {
        Self {
            hosts: hosts.to_vec(),
            links: Vec::new(),
            routes: Vec::new(),
            sysctls: Vec::new(),
        }
    }

    /// Adds a host.
    pub fn host(mut self, name: &'static str) -> Self {
        self.hosts.push(name);
        self
    }

    /// Joins two ends with a veth pair of the default MTU.
    pub fn link(mut self, a: End, b: End) -> Self {
        self.links.push(Link { a, b, mtu: None });
        self
    }

    /// Joins two ends with a veth pair of MTU `mtu`.
    pub fn link_mtu(mut self, a: End, b: End, mtu: u16) -> Self {
        self.links.push(Link { a, b, mtu: Some(mtu) });
        self
    }

    /// A route in `host`.
    pub fn route(mut self, host: &'static str, to: IpNet, via: impl Into<IpAddr>) -> Self {
        self.routes.push(Route {
            host,
            to,
            via: via.into(),
        });
        self
    }

    /// `host`'s default route of `via`'s family.
    pub fn default_route(self, host: &'static str, via: impl Into<IpAddr>) -> Self {
        let via = via.into();
        let any = match via {
            IpAddr::V4(_) => v4(Ipv4Addr::UNSPECIFIED, 0),
            IpAddr::V6(_) => v6(Ipv6Addr::UNSPECIFIED, 0),
        };
        self.route(host, any, via)
    }

    /// A sysctl in `host`.
    pub fn sysctl(mut self, host: &'static str, key: &'static str, value: &'static str) -> Self {
        self.sysctls.push(Sysctl { host, key, value });
        self
    }

    /// Every end in `host`, with the end it is linked to.
    pub fn ends_of<'a>(&'a self, host: &'a str) -> impl Iterator<Item = (&'a End, &'a End)> + 'a {
        self.links.iter().filter_map(move |l| {
            if l.a.host == host {
                Some((&l.a, &l.b))
            } else if l.b.host == host {
                Some((&l.b, &l.a))
            } else {
                None
            }
        })
    }

    /// The first address of `host`'s `interface`.
    pub fn address(&self, host: &str, interface: &str) -> Option<IpNet> {
        self.ends_of(host)
            .find(|(end, _)| end.interface == interface)
            .and_then(|(end, _)| end.addresses.first().copied())
    }

    /// Turns off transmit checksum offload (`ethtool -K DEV tx off`) on
    /// both ends of every link of `net`, built from this spec. With it on,
    /// a veth hands a UDP or TCP packet on before its checksum is filled
    /// in, and tcpdump records a partial checksum that tshark reports as
    /// bad; with it off, a capture shows the checksums the packets really
    /// carry. For recording golden captures (needs `ethtool`).
    pub fn tx_offload_off(&self, net: &Net) -> anyhow::Result<()> {
        for link in &self.links {
            for end in [&link.a, &link.b] {
                net.host(end.host)?.tx_offload_off(end.interface)?;
            }
        }
        Ok(())
    }

    /// Builds it: creates the hosts (namespaces with `lo` up), the links
    /// (up, with their MTU and addresses), the routes and the sysctls.
    /// Dropping the [`Net`] deletes everything.
    pub fn build(&self) -> anyhow::Result<Net> {
        let mut namespaces = Topology::new()?;
        let mut hosts = Vec::new();
        for name in &self.hosts {
            hosts.push(namespaces.host(name)?);
        }
        let net = Net {
            hosts,
            _namespaces: namespaces,
        };
        for link in &self.links {
            let (a, b) = (net.host(link.a.host)?, net.host(link.b.host)?);
            net._namespaces.link(&a, link.a.interface, &b, link.b.interface)?;
            for (end, host) in [(&link.a, &a), (&link.b, &b)] {
                if let Some(mtu) = link.mtu {
                    host.set_mtu(end.interface, mtu)?;
                }
                for address in &end.addresses {
                    host.add_address(end.interface, &address.to_string())?;
                }
            }
        }
        for route in &self.routes {
            let family = if route.via.is_ipv4() { "-4" } else { "-6" };
            let to = if route.to.prefix_len() == 0 {
                "default".to_string()
            } else {
                route.to.to_string()
            };
            net.host(route.host)?
                .ip([family, "route", "add", &to, "via", &route.via.to_string()])?;
        }
        for sysctl in &self.sysctls {
            net.host(sysctl.host)?.set_sysctl(sysctl.key, sysctl.value)?;
        }
        Ok(net)
    }
}

/// The hosts of a built [`Spec`]. Dropping it kills what still runs in
/// them and deletes them.
pub struct Net {
    hosts: Vec<Host>,
    _namespaces: Topology,
}

impl Net {
    /// The host called `name`.
    pub fn host(&self, name: &str) -> anyhow::Result<Host> {
        self.hosts
            .iter()
            .find(|h| h.name() == name)
            .cloned()
            .with_context(|| format!("the topology has no host {name}"))
    }
}

// ---------------------------------------------------------------------
// The labs' topologies.

/// One host, `host`, with only `lo` (lab 01).
pub fn one_host() -> Spec {
    Spec::new(&["host"])
}

/// `server` and `client` on one link, the underlay: `veth0` 192.0.2.1/24
/// and `veth0` 192.0.2.2/24 (labs 02 and 04, the bench).
pub fn two_hosts() -> Spec {
    Spec::new(&["server", "client"]).link(
        end("server", "veth0", &[v4(underlay::SERVER, 24)]),
        end("client", "veth0", &[v4(underlay::CLIENT, 24)]),
    )
}

/// Lab 07: step 07's host and the hosts of the other implementations, as
/// text (they go to `wg`, `ip` and `ping` as arguments). The underlay
/// addresses are those of [`underlay`] and [`internet`].
pub mod wireguard {
    /// `tunlab` — `wggo`: 192.0.2.0/24, step 07 moving from .1 to .3.
    pub const TUNLAB_TO_WGGO: &str = "192.0.2.1";
    pub const TUNLAB_TO_WGGO_ROAMED: &str = "192.0.2.3";
    pub const WGGO: &str = "192.0.2.2";
    /// `tunlab` — `boringtun`: 198.51.100.0/24, step 07 moving from .1 to
    /// .3.
    pub const TUNLAB_TO_BORINGTUN: &str = "198.51.100.1";
    pub const TUNLAB_TO_BORINGTUN_ROAMED: &str = "198.51.100.3";
    pub const BORINGTUN: &str = "198.51.100.2";
    /// `tunlab` — `attacker`: 203.0.113.0/24.
    pub const TUNLAB_TO_ATTACKER: &str = "203.0.113.1";
    pub const ATTACKER: &str = "203.0.113.2";
    /// Inside the tunnel: step 07 is `.1`, the peer `.2`.
    pub const TUNLAB_INNER: &str = "10.0.0.1";
    pub const PEER_INNER: &str = "10.0.0.2";
    pub const TUNLAB_INNER6: &str = "fd00::1";
    pub const PEER_INNER6: &str = "fd00::2";
}

/// Lab 07: `tunlab` with a link to each of `wggo` (veth0), `boringtun`
/// (veth1) and `attacker` (veth2); see [`wireguard`].
pub fn wireguard_peers() -> Spec {
    let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED) };
    Spec::new(&["tunlab", "wggo", "boringtun", "attacker"])
        .link(
            end("tunlab", "veth0", &[v4(ip(wireguard::TUNLAB_TO_WGGO), 24)]),
            end("wggo", "veth0", &[v4(ip(wireguard::WGGO), 24)]),
        )
        .link(
            end("tunlab", "veth1", &[v4(ip(wireguard::TUNLAB_TO_BORINGTUN), 24)]),
            end("boringtun", "veth0", &[v4(ip(wireguard::BORINGTUN), 24)]),
        )
        .link(
            end("tunlab", "veth2", &[v4(ip(wireguard::TUNLAB_TO_ATTACKER), 24)]),
            end("attacker", "veth0", &[v4(ip(wireguard::ATTACKER), 24)]),
        )
}

/// Lab 04: [`two_hosts`], and `intruder` on a link of its own to the
/// server (server `veth1` 198.51.100.1/24, intruder `veth0`
/// 198.51.100.3/24).
pub fn two_hosts_and_intruder() -> Spec {
    two_hosts().host("intruder").link(
        end("server", "veth1", &[v4(internet::SERVER, 24)]),
        end("intruder", "veth0", &[v4(internet::INTRUDER, 24)]),
    )
}

/// Lab 06: `client` — `server` — `internet`. The client's link (server
/// `veth-c` 192.0.2.1/24, client `veth0` 192.0.2.2/24, default route via
/// the server) and the internet side (server `veth-inet` 198.51.100.1/24,
/// internet `veth0` 198.51.100.2/24, no route to the client's link at all).
/// Neither the server nor the client forwards or accepts 127.0.0.0/8 from
/// outside: what a program turns on there, it must turn off.
pub fn three_hosts() -> Spec {
    let mut spec = Spec::new(&["server", "client", "internet"])
        .link(
            end("server", "veth-c", &[v4(underlay::SERVER, 24)]),
            end("client", "veth0", &[v4(underlay::CLIENT, 24)]),
        )
        .link(
            end("server", "veth-inet", &[v4(internet::SERVER, 24)]),
            end("internet", "veth0", &[v4(internet::HOST, 24)]),
        )
        .default_route("client", underlay::SERVER);
    for host in ["server", "client"] {
        for key in FORWARDING.into_iter().chain([ROUTE_LOCALNET]) {
            spec = spec.sysctl(host, key, "0");
        }
    }
    spec
}

/// Lab 05: `client1` and `client2`, each on a link of its own to `server`,
/// and `internet` behind the server.
///
/// - client1 `veth0` 192.0.2.2/25, 2001:db8:1::2/64 — server `veth-c1`
///   192.0.2.1/25, 2001:db8:1::1/64, MTU 1400 ([`FULL_TUNNEL_MTU`]);
/// - client2 `veth0` 192.0.2.130/25, 2001:db8:2::2/64 — server `veth-c2`
///   192.0.2.129/25, 2001:db8:2::1/64;
/// - internet `veth0` 198.51.100.2/24 (and the name server's
///   198.51.100.53/24), 2001:db8:100::2/64 — server `veth-inet`
///   198.51.100.1/24, 2001:db8:100::1/64.
///
/// The clients' default routes point at the server; the internet host
/// knows the way back to the underlay (192.0.2.0/24, 2001:db8::/32) and
/// nothing of the tunnel's. The server does not forward yet.
pub fn full_tunnel() -> Spec {
    let mut spec = Spec::new(&["server", "client1", "client2", "internet"])
        .link_mtu(
            end(
                "server",
                "veth-c1",
                &[v4(underlay::SERVER, 25), v6(underlay::LINK1_GATEWAY6, 64)],
            ),
            end(
                "client1",
                "veth0",
                &[v4(underlay::CLIENT, 25), v6(underlay::LINK1_HOST6, 64)],
            ),
            FULL_TUNNEL_MTU,
        )
        .link(
            end(
                "server",
                "veth-c2",
                &[v4(underlay::SERVER_LINK2, 25), v6(underlay::LINK2_GATEWAY6, 64)],
            ),
            end(
                "client2",
                "veth0",
                &[v4(underlay::CLIENT2, 25), v6(underlay::LINK2_HOST6, 64)],
            ),
        )
        .link(
            end(
                "server",
                "veth-inet",
                &[v4(internet::SERVER, 24), v6(internet::SERVER6, 64)],
            ),
            end(
                "internet",
                "veth0",
                &[
                    v4(internet::HOST, 24),
                    v6(internet::HOST6, 64),
                    v4(internet::DNS, 24),
                ],
            ),
        )
        .default_route("client1", underlay::SERVER)
        .default_route("client1", underlay::LINK1_GATEWAY6)
        .default_route("client2", underlay::SERVER_LINK2)
        .default_route("client2", underlay::LINK2_GATEWAY6)
        .route("internet", underlay::NET, internet::SERVER)
        .route("internet", underlay::NET6, internet::SERVER6);
    for key in FORWARDING {
        spec = spec.sysctl("server", key, "0");
    }
    spec
}

/// The MTU of client1's link to the server in lab 05.
pub const FULL_TUNNEL_MTU: u16 = 1400;

/// Lab 03, part one: `server` (`veth0` 2001:db8::1/64) and `client`
/// (`veth0` 2001:db8::2/64) on one IPv6 link.
pub fn ipv6_link() -> Spec {
    Spec::new(&["server", "client"]).link(
        end("server", "veth0", &[v6(underlay::SERVER6, 64)]),
        end("client", "veth0", &[v6(underlay::CLIENT6, 64)]),
    )
}

/// Lab 03, part two: `client` — `router` — `server` over IPv6, the
/// router's link to the server of MTU 1400 ([`ROUTED_MTU`]). Client
/// `veth0` 2001:db8:1::2/64 — router `veth-c` 2001:db8:1::1/64; router
/// `veth-s` 2001:db8:2::1/64 — server `veth0` 2001:db8:2::2/64; both ends
/// route by the router, which forwards.
pub fn ipv6_routed() -> Spec {
    Spec::new(&["server", "client", "router"])
        .link(
            end("client", "veth0", &[v6(underlay::LINK1_HOST6, 64)]),
            end("router", "veth-c", &[v6(underlay::LINK1_GATEWAY6, 64)]),
        )
        .link_mtu(
            end("router", "veth-s", &[v6(underlay::LINK2_GATEWAY6, 64)]),
            end("server", "veth0", &[v6(underlay::LINK2_HOST6, 64)]),
            ROUTED_MTU,
        )
        .default_route("client", underlay::LINK1_GATEWAY6)
        .default_route("server", underlay::LINK2_GATEWAY6)
        .sysctl("router", FORWARDING[1], "1")
}

/// The MTU of the router's link to the server in lab 03, part two.
pub const ROUTED_MTU: u16 = 1400;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_link_and_route_names_hosts_of_its_spec() {
        for spec in [
            one_host(),
            two_hosts(),
            two_hosts_and_intruder(),
            three_hosts(),
            full_tunnel(),
            ipv6_link(),
            ipv6_routed(),
        ] {
            for link in &spec.links {
                for end in [&link.a, &link.b] {
                    assert!(spec.hosts.contains(&end.host), "{end:?}");
                }
            }
            for route in &spec.routes {
                assert!(spec.hosts.contains(&route.host), "{route:?}");
            }
            for sysctl in &spec.sysctls {
                assert!(spec.hosts.contains(&sysctl.host), "{sysctl:?}");
            }
        }
    }

    #[test]
    fn lab05_can_be_walked_from_the_data() {
        let spec = full_tunnel();
        let server: Vec<(&str, String, &str)> = spec
            .ends_of("server")
            .map(|(own, other)| (own.interface, own.addresses[0].to_string(), other.host))
            .collect();
        assert_eq!(
            server,
            [
                ("veth-c1", "192.0.2.1/25".to_string(), "client1"),
                ("veth-c2", "192.0.2.129/25".to_string(), "client2"),
                ("veth-inet", "198.51.100.1/24".to_string(), "internet"),
            ]
        );
        assert_eq!(
            spec.address("internet", "veth0").map(|a| a.to_string()),
            Some("198.51.100.2/24".into())
        );
        assert_eq!(spec.links[0].mtu, Some(1400));
    }

    #[test]
    fn tunnel_addresses_carry_their_prefix() {
        assert_eq!(tunnel::cidr(tunnel::SERVER).to_string(), "10.0.0.1/24");
        assert_eq!(tunnel::cidr(tunnel::CLIENT6).to_string(), "fd00::2/64");
        assert_eq!(tunnel::host(tunnel::CLIENT).to_string(), "10.0.0.2/32");
        assert_eq!(tunnel::host(tunnel::CLIENT6).to_string(), "fd00::2/128");
        assert_eq!(tunnel::NET.to_string(), "10.0.0.0/24");
        assert_eq!(underlay::NET6.to_string(), "2001:db8::/32");
    }
}
