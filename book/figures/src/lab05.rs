//! Lab 05: its network, and one ping's round trip through the tunnel and
//! the server's NAT, from the recorded captures.

use std::net::Ipv4Addr;

use anyhow::{Context, bail};
use etherparse::{Icmpv4Type, SlicedPacket, TransportSlice};
use tunlab::lab05::{self, Client};

use crate::ladder::{Ladder, Lane, Msg, Row};
use crate::svg::{Canvas, MARGIN, Paint, TOP, WIDTH, color};
use crate::topology::{self, Host, Iface, Link};
use crate::{Figure, capture};

/// Lab 05's hosts, interfaces, addresses and links.
///
/// The addresses and the MTU are the lab's own constants and `Client`'s
/// methods. The interface names, the prefix lengths, the server's own
/// tunnel addresses and its IPv6 addresses on the clients' links are
/// written out where the lab builds its topology (`lab05::up`), so they
/// are repeated here, and `the_written_out_parts_are_lab05s` checks them
/// against the lab's source. When the lab harness describes topologies as
/// data, this function reads that data instead, and nothing else changes.
pub fn network() -> (Vec<Host>, Vec<Link>) {
    let (c1, c2) = (Client::One, Client::Two);
    let client = |c: Client, y: f64, tun_first: bool| {
        let (v4, v6) = c.underlay();
        let (in4, in6) = c.inner();
        let veth = Iface::new("veth0", &[&format!("{v4}/25"), &format!("{v6}/64")]);
        let tun = Iface::new(lab05::TUN, &[&format!("{in4}/24"), &format!("{in6}/64")]);
        let ifaces = if tun_first {
            vec![tun, veth]
        } else {
            vec![veth, tun]
        };
        let role = match c {
            Client::One => "client --full-tunnel --dns --kill-switch",
            Client::Two => "client --full-tunnel",
        };
        Host {
            name: c.name().into(),
            role: role.into(),
            ifaces,
            notes: vec![format!(
                "default route via {}; the full tunnel sends all but the server's address into tun0",
                c.server()
            )],
            x: MARGIN,
            y,
            w: 200.0,
        }
    };
    let server = Host {
        name: "server".into(),
        role: "server --nat".into(),
        ifaces: vec![
            Iface::new("veth-c1", &[&format!("{}/25", c1.server()), "2001:db8:1::1/64"]),
            Iface::new(lab05::TUN, &["10.0.0.1/24", "fd00::1/64"]),
            Iface::new("veth-c2", &[&format!("{}/25", c2.server()), "2001:db8:2::1/64"]),
            Iface::new(
                "veth-inet",
                &[
                    &format!("{}/24", lab05::SERVER_OUT_V4),
                    &format!("{}/64", lab05::SERVER_OUT_V6),
                ],
            ),
        ],
        notes: vec![format!(
            "forwards, and masquerades the tunnel's addresses as its own; UDP port {}",
            lab05::PORT
        )],
        x: 290.0,
        y: TOP + 40.0,
        w: 190.0,
    };
    let internet = Host {
        name: "internet".into(),
        role: "web and name server".into(),
        ifaces: vec![Iface::new(
            "veth0",
            &[
                &format!("{}/24", lab05::INTERNET_V4),
                &format!("{}/24", lab05::DNS_SERVER),
                &format!("{}/64", lab05::INTERNET_V6),
            ],
        )],
        notes: vec!["knows the way back to 192.0.2.0/24, and nothing of the tunnel's addresses".into()],
        x: WIDTH - MARGIN - 170.0,
        y: TOP + 100.0,
        w: 170.0,
    };
    let hosts = vec![
        client(c1, TOP, false),
        server,
        internet,
        client(c2, TOP + 190.0, true),
    ];
    let link = |a: usize, ai: &str, b: usize, bi: &str, label: Option<String>, tunnel: bool| Link {
        a: (a, ai.into()),
        b: (b, bi.into()),
        label,
        color: if tunnel { color::OUTER } else { color::INK },
        dashed: tunnel,
    };
    let links = vec![
        link(
            0,
            "veth0",
            1,
            "veth-c1",
            Some(format!("MTU {}", lab05::SMALL_MTU)),
            false,
        ),
        link(3, "veth0", 1, "veth-c2", None, false),
        link(1, "veth-inet", 2, "veth0", None, false),
        link(0, lab05::TUN, 1, lab05::TUN, Some("tunnel".into()), true),
        link(3, lab05::TUN, 1, lab05::TUN, Some("tunnel".into()), true),
    ];
    (hosts, links)
}

pub fn topology() -> anyhow::Result<Figure> {
    let (hosts, links) = network();
    let mut c = Canvas::new("Lab 05: two clients, a server with NAT, and the internet");
    topology::draw(&mut c, &hosts, &links);
    Ok(Figure::from_canvas(
        c,
        "Each host is a network namespace; solid lines are veth pairs, dashed lines the tunnel, \
         which runs inside UDP over the veths. Client1's link has the smaller MTU. The internet \
         host only ever sees the server's address.",
    ))
}

/// An ICMP echo in an IPv4 packet: source, destination, identifier, and
/// whether it is the request.
fn echo(ip: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u16, bool)> {
    let p = SlicedPacket::from_ip(ip).ok()?;
    let Some(etherparse::NetSlice::Ipv4(v4)) = p.net else {
        return None;
    };
    let (src, dst) = (v4.header().source_addr(), v4.header().destination_addr());
    match p.transport? {
        TransportSlice::Icmpv4(icmp) => match icmp.icmp_type() {
            Icmpv4Type::EchoRequest(e) => Some((src, dst, e.id, true)),
            Icmpv4Type::EchoReply(e) => Some((src, dst, e.id, false)),
            _ => None,
        },
        _ => None,
    }
}

/// The echo request and reply of `path`.
type Echo = (Ipv4Addr, Ipv4Addr, u16);
fn echo_pair(path: &str) -> anyhow::Result<(Echo, Echo)> {
    let echoes: Vec<_> = capture(path)?.iter().filter_map(|p| echo(&p.ip)).collect();
    let request = echoes.iter().find(|e| e.3).context("no echo request")?;
    let reply = echoes
        .iter()
        .find(|e| !e.3 && e.2 == request.2)
        .context("no echo reply")?;
    Ok(((request.0, request.1, request.2), (reply.0, reply.1, reply.2)))
}

/// One ping from client1 to the internet host and back: the addresses at
/// each hop.
pub fn round_trip() -> anyhow::Result<Figure> {
    let (inside, outside) = ("step05/server-tun.pcap", "step05/internet.pcap");
    let (in_req, in_rep) = echo_pair(inside).with_context(|| format!("pcaps/{inside}"))?;
    let (out_req, out_rep) = echo_pair(outside).with_context(|| format!("pcaps/{outside}"))?;
    let c1 = Client::One;
    let (client_in, client_out, server_link) = (c1.inner().0, c1.underlay().0, c1.server());
    if in_req.0.to_string() != client_in || in_req.1 != out_req.1 || in_rep.0 != out_rep.0 {
        bail!("the captures do not hold one ping from client1 to the internet host and its reply");
    }
    let id = in_req.2;
    let (client, server, internet) = (0, 1, 2);
    let mut l = Ladder::new(vec![
        Lane::new("client1", &format!("{client_out}, tun0 {client_in}")),
        Lane::new("server", &format!("{server_link}, {}", out_req.0)),
        Lane::new("internet", &out_req.1.to_string()),
    ]);
    l.note_width = 230.0;
    let arrow = " → ";
    l.push(Row::note(
        client,
        format!("ping's request enters tun0\n{}{arrow}{}", in_req.0, in_req.1),
        Paint::INNER,
    ));
    l.msg(
        Msg::new(
            client,
            server,
            format!("UDP {client_out}{arrow}{server_link}:{}", lab05::PORT),
        )
        .detail(format!("sealed inside: {}{arrow}{}", in_req.0, in_req.1))
        .color(color::OUTER),
    );
    l.push(Row::note(
        server,
        format!(
            "decrypted and written to tun0 ({inside})\n{}{arrow}{}",
            in_req.0, in_req.1
        ),
        Paint::INNER,
    ));
    l.push(Row::note(
        server,
        format!(
            "masquerade, remembered by conntrack\nsource {}{arrow}{}",
            in_req.0, out_req.0
        ),
        Paint::MARK,
    ));
    l.msg(
        Msg::new(server, internet, format!("{}{arrow}{}", out_req.0, out_req.1))
            .detail(format!("echo request, id {id} ({outside})"))
            .color(color::INNER),
    );
    l.msg(
        Msg::new(internet, server, format!("{}{arrow}{}", out_rep.0, out_rep.1))
            .detail(format!("echo reply, id {} ({outside})", out_rep.2))
            .color(color::INNER),
    );
    l.push(Row::note(
        server,
        format!(
            "conntrack undoes the masquerade\ndestination {}{arrow}{}",
            out_rep.1, in_rep.1
        ),
        Paint::MARK,
    ));
    l.push(Row::note(
        server,
        format!(
            "routed into tun0, read and sealed ({inside})\n{}{arrow}{}",
            in_rep.0, in_rep.1
        ),
        Paint::INNER,
    ));
    l.msg(
        Msg::new(
            server,
            client,
            format!("UDP {server_link}:{}{arrow}{client_out}", lab05::PORT),
        )
        .detail(format!("sealed inside: {}{arrow}{}", in_rep.0, in_rep.1))
        .color(color::OUTER),
    );
    l.push(Row::note(
        client,
        format!(
            "opened, written to tun0, ping prints it\n{}{arrow}{}",
            in_rep.0, in_rep.1
        ),
        Paint::INNER,
    ));
    let mut c = Canvas::new("Lab 05: one ping's round trip, address by address");
    l.draw(&mut c, TOP);
    Ok(Figure::from_canvas(
        c,
        &format!(
            "The inner addresses on the server and outside it are those of pcaps/{inside} and \
             pcaps/{outside} (the ping of lab 05's recording); client1's side and the underlay are \
             the lab's addresses. Inside the tunnel the packet keeps client1's tunnel address; only \
             the server's NAT, on the way out, puts its own address in, and conntrack takes it out \
             of the reply."
        ),
    ))
}

#[cfg(test)]
mod tests {
    /// The parts of lab 05's network that `network` cannot read from the
    /// lab's constants are what the lab builds.
    #[test]
    fn the_written_out_parts_are_lab05s() {
        let source = include_str!("../../../labs/src/lab05.rs");
        for literal in [
            "(&server, \"veth-c1\", [\"192.0.2.1/25\", \"2001:db8:1::1/64\"])",
            "(&server, \"veth-c2\", [\"192.0.2.129/25\", \"2001:db8:2::1/64\"])",
            "(&server, \"veth-inet\", [\"198.51.100.1/24\", \"2001:db8:100::1/64\"])",
            "(&client1, \"veth0\", [\"192.0.2.2/25\", \"2001:db8:1::2/64\"])",
            "(&client2, \"veth0\", [\"192.0.2.130/25\", \"2001:db8:2::2/64\"])",
            "(&internet, \"veth0\", [\"198.51.100.2/24\", \"2001:db8:100::2/64\"])",
            "internet.add_address(\"veth0\", &format!(\"{DNS_SERVER}/24\"))",
            "\"10.0.0.1/24\",\n        \"--address\",\n        \"fd00::1/64\",",
            "topology.link(&server, \"veth-c1\", &client1, \"veth0\")",
            "topology.link(&server, \"veth-c2\", &client2, \"veth0\")",
            "topology.link(&server, \"veth-inet\", &internet, \"veth0\")",
        ] {
            assert!(
                source.contains(literal),
                "labs/src/lab05.rs no longer builds its network with {literal}: make \
                 book/figures/src/lab05.rs's network() read the lab's topology again"
            );
        }
    }
}
