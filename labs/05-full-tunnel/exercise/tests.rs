//! Tests for the lab 05 exercise. `tunlab check 05` compiles them together
//! with your `plan.rs`; every test must pass.
//!
//! Besides comparing your commands with the expected ones word for word,
//! the tests run them on a small model of the kernel's routing table
//! (longest prefix wins, as in the kernel) and look up where packets go.

use std::net::IpAddr;

use crate::exercise::{Command, Route, full_tunnel, undo};

/// One route of the model: a prefix, and where it sends packets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    prefix: IpAddr,
    len: u8,
    via: Option<IpAddr>,
    dev: String,
}

impl Entry {
    fn contains(&self, address: IpAddr) -> bool {
        match (self.prefix, address) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.len)).unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.prefix, self.len)?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        write!(f, " dev {}", self.dev)
    }
}

/// The routing table of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Table(Vec<Entry>);

impl Table {
    /// A laptop on Wi-Fi: its LAN, and default routes for both families.
    fn laptop() -> Self {
        let mut table = Table(Vec::new());
        for command in [
            "ip -4 route add 0.0.0.0/0 via 192.168.1.1 dev wlan0",
            "ip -4 route add 192.168.1.0/24 dev wlan0",
            "ip -6 route add ::/0 via fe80::1 dev wlan0",
        ] {
            table.run(&words(command));
        }
        table
    }

    /// Runs `ip -4|-6 route add|del PREFIX [via GATEWAY] dev DEV`; panics,
    /// saying why, at anything else or where `ip` would fail.
    fn run(&mut self, command: &[String]) {
        let shown = command.join(" ");
        let mut words = command.iter().map(String::as_str);
        assert_eq!(
            words.next(),
            Some("ip"),
            "`{shown}`: every command is an `ip` command"
        );
        let family = words.next().unwrap_or("");
        assert!(
            family == "-4" || family == "-6",
            "`{shown}`: say the family after `ip`: `ip -4 route` or `ip -6 route`"
        );
        let v6 = family == "-6";
        assert_eq!(
            words.next(),
            Some("route"),
            "`{shown}`: expected `ip {family} route`"
        );
        let verb = words.next().unwrap_or("");
        assert!(
            verb == "add" || verb == "del",
            "`{shown}`: expected `add` or `del` after `route`, found `{verb}`"
        );
        let prefix = words.next().unwrap_or("");
        let (address, len) = prefix
            .split_once('/')
            .unwrap_or_else(|| panic!("`{shown}`: `{prefix}` is not ADDRESS/LENGTH"));
        let address: IpAddr = address
            .parse()
            .unwrap_or_else(|_| panic!("`{shown}`: `{address}` is not an IP address"));
        let len: u8 = len
            .parse()
            .unwrap_or_else(|_| panic!("`{shown}`: `{len}` is not a prefix length"));
        assert!(
            len <= if address.is_ipv6() { 128 } else { 32 },
            "`{shown}`: a prefix length of {len} is too long"
        );
        assert_eq!(
            v6,
            address.is_ipv6(),
            "`{shown}`: write `ip -6 route` for an IPv6 prefix and `ip -4 route` for an IPv4 one"
        );
        let mut via = None;
        let mut dev = None;
        while let Some(key) = words.next() {
            let value = words
                .next()
                .unwrap_or_else(|| panic!("`{shown}`: `{key}` needs a value"));
            match key {
                "via" if dev.is_none() => {
                    let gateway: IpAddr = value
                        .parse()
                        .unwrap_or_else(|_| panic!("`{shown}`: `{value}` is not an address"));
                    via = Some(gateway);
                }
                "via" => panic!("`{shown}`: write `via GATEWAY` before `dev DEV`"),
                "dev" => dev = Some(value.to_string()),
                other => panic!("`{shown}`: unexpected `{other}`"),
            }
        }
        let entry = Entry {
            prefix: address,
            len,
            via,
            dev: dev.unwrap_or_else(|| panic!("`{shown}`: every route here names its `dev`")),
        };
        let same = |e: &Entry| e.prefix == entry.prefix && e.len == entry.len;
        if verb == "add" {
            assert!(
                !self.0.iter().any(same),
                "`{shown}`: RTNETLINK answers: File exists (that prefix already has a route)"
            );
            self.0.push(entry);
        } else {
            let at = self.0.iter().position(|e| *e == entry).unwrap_or_else(|| {
                panic!("`{shown}`: RTNETLINK answers: No such process (no such route to delete)")
            });
            self.0.remove(at);
        }
    }

    /// The route a packet to `address` takes: the longest prefix that
    /// contains it.
    fn lookup(&self, address: IpAddr) -> Option<&Entry> {
        self.0
            .iter()
            .filter(|e| e.contains(address))
            .max_by_key(|e| e.len)
    }

    /// The interface a packet to `address` leaves by.
    fn dev(&self, address: IpAddr) -> String {
        self.lookup(address)
            .map_or("(no route: Network is unreachable)".to_string(), |e| {
                e.dev.clone()
            })
    }
}

fn words(command: &str) -> Command {
    command.split_whitespace().map(str::to_string).collect()
}

fn show(commands: &[Command]) -> String {
    commands
        .iter()
        .map(|c| format!("    {}", c.join(" ")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ip(address: &str) -> IpAddr {
    address.parse().unwrap()
}

fn wifi() -> Route {
    Route {
        dev: "wlan0".to_string(),
        gateway: Some(ip("192.168.1.1")),
    }
}

#[track_caller]
fn expect_commands(got: &[Command], want: &[&str], why: &str) {
    let want: Vec<Command> = want.iter().map(|c| words(c)).collect();
    assert!(
        got == want.as_slice(),
        "got:\n{}\nexpected:\n{}\n{why}",
        show(got),
        show(&want)
    );
}

/// The lab's own client: the server is on the client's link, no gateway.
#[test]
fn a_server_on_the_link() {
    let route = Route {
        dev: "veth0".to_string(),
        gateway: None,
    };
    expect_commands(
        &full_tunnel(ip("192.0.2.1"), &route, "tun0"),
        &[
            "ip -4 route add 192.0.2.1/32 dev veth0",
            "ip -4 route add 0.0.0.0/1 dev tun0",
            "ip -4 route add 128.0.0.0/1 dev tun0",
            "ip -6 route add ::/1 dev tun0",
            "ip -6 route add 8000::/1 dev tun0",
        ],
        "The server's own route comes first and keeps it where the kernel reached it before: \
         on veth0, with no gateway (`gateway: None`, so no `via`). A server address is one \
         host: /32 for IPv4. Then the two IPv4 halves, then the two IPv6 halves.",
    );
}

#[test]
fn a_server_behind_a_gateway() {
    expect_commands(
        &full_tunnel(ip("203.0.113.7"), &wifi(), "wg0"),
        &[
            "ip -4 route add 203.0.113.7/32 via 192.168.1.1 dev wlan0",
            "ip -4 route add 0.0.0.0/1 dev wg0",
            "ip -4 route add 128.0.0.0/1 dev wg0",
            "ip -6 route add ::/1 dev wg0",
            "ip -6 route add 8000::/1 dev wg0",
        ],
        "Before the tunnel, the kernel sent the server's packets to the gateway 192.168.1.1 on \
         wlan0: the server's route must say both, `via 192.168.1.1 dev wlan0`, or the kernel \
         would look for 203.0.113.7 on the Wi-Fi link itself, where it is not. The /1 routes \
         use the TUN device's name, whatever it is.",
    );
}

#[test]
fn an_ipv6_server() {
    let route = Route {
        dev: "eth0".to_string(),
        gateway: Some(ip("fe80::1")),
    };
    expect_commands(
        &full_tunnel(ip("2001:db8:5::1"), &route, "tun0"),
        &[
            "ip -6 route add 2001:db8:5::1/128 via fe80::1 dev eth0",
            "ip -4 route add 0.0.0.0/1 dev tun0",
            "ip -4 route add 128.0.0.0/1 dev tun0",
            "ip -6 route add ::/1 dev tun0",
            "ip -6 route add 8000::/1 dev tun0",
        ],
        "An IPv6 server gets an IPv6 host route: /128, with `ip -6`. (IPv6 gateways are often \
         link-local addresses, fe80::...) The /1 routes are the same for either server.",
    );
}

/// What a full tunnel is for: nothing leaves outside it but the tunnel.
#[test]
fn everything_but_the_server_goes_into_the_tunnel() {
    let server = ip("203.0.113.7");
    let mut table = Table::laptop();
    for command in full_tunnel(server, &wifi(), "tun0") {
        table.run(&command);
    }
    for address in [
        "198.51.100.2",
        "8.8.8.8",
        "1.1.1.1",
        "0.0.0.1",
        "127.255.255.254",
        "128.0.0.1",
        "203.0.113.8",
        "255.255.255.254",
    ] {
        assert_eq!(
            table.dev(ip(address)),
            "tun0",
            "{address} must go into the tunnel: with the commands run, the table is\n{}",
            table.0.iter().map(|e| format!("    {e}\n")).collect::<String>()
        );
    }
    for address in [
        "2001:db8:100::2",
        "2606:4700:4700::1111",
        "::1:2",
        "8000::1",
        "fd00::53",
    ] {
        assert_eq!(
            table.dev(ip(address)),
            "tun0",
            "{address} must go into the tunnel too. A full tunnel that covers only IPv4 leaks \
             every IPv6 packet: the laptop's default route ::/0 via wlan0 would carry it, in \
             the clear, past the tunnel.",
        );
    }
    let to_server = table.lookup(server).cloned();
    assert_eq!(
        to_server.as_ref().map(|e| (e.dev.as_str(), e.via)),
        Some(("wlan0", Some(ip("192.168.1.1")))),
        "the tunnel's own datagrams to the server {server} must leave as before, by wlan0 via \
         192.168.1.1; they would take {to_server:?}",
    );
    assert_eq!(
        table.dev(ip("192.168.1.20")),
        "wlan0",
        "the LAN's own route (192.168.1.0/24, a /24) is more specific than the /1 routes, so \
         the printer down the hall stays reachable: the commands must not touch it",
    );
}

/// At no moment, not even between two commands, may the server be routed
/// into the tunnel.
#[test]
fn the_server_never_routes_into_the_tunnel() {
    let server = ip("203.0.113.7");
    let mut table = Table::laptop();
    let commands = full_tunnel(server, &wifi(), "tun0");
    for (n, command) in commands.iter().enumerate() {
        table.run(command);
        assert_eq!(
            table.dev(server),
            "wlan0",
            "after command {} (`{}`), a datagram to the server {server} would go into tun0: \
             the program would seal it and hand it to itself again, a loop, and every packet \
             sent in that moment is lost. Add the server's route before the /1 routes.",
            n + 1,
            command.join(" ")
        );
    }
}

/// The default routes are left alone: they are what the laptop goes back
/// to when the tunnel ends, or when the program dies without cleaning up.
#[test]
fn the_default_routes_stay() {
    let mut table = Table::laptop();
    let before = table.clone();
    for command in full_tunnel(ip("203.0.113.7"), &wifi(), "tun0") {
        table.run(&command);
    }
    for entry in &before.0 {
        assert!(
            table.0.contains(entry),
            "the route `{entry}` is gone. Do not replace or delete the default routes: the two \
             /1 routes are more specific than a /0, so they win without it, and the default \
             route is still there, unchanged, when the tunnel's routes go away."
        );
    }
}

#[test]
fn undo_takes_back_everything_in_reverse() {
    let done = full_tunnel(ip("203.0.113.7"), &wifi(), "tun0");
    expect_commands(
        &undo(&done),
        &[
            "ip -6 route del 8000::/1 dev tun0",
            "ip -6 route del ::/1 dev tun0",
            "ip -4 route del 128.0.0.0/1 dev tun0",
            "ip -4 route del 0.0.0.0/1 dev tun0",
            "ip -4 route del 203.0.113.7/32 via 192.168.1.1 dev wlan0",
        ],
        "Undo is the journal read backwards, each `add` turned into `del` with the same \
         arguments. The server's route goes last: while any /1 route is still there, the \
         server needs it (the same reason it came first).",
    );
}

/// The program may fail halfway (the third command fails, say): then only
/// what was done is undone.
#[test]
fn undo_of_a_partial_run() {
    let done = full_tunnel(ip("192.0.2.1"), &wifi(), "tun0");
    expect_commands(
        &undo(&done[..2]),
        &[
            "ip -4 route del 0.0.0.0/1 dev tun0",
            "ip -4 route del 192.0.2.1/32 via 192.168.1.1 dev wlan0",
        ],
        "Only the first two commands ran: undo those two, newest first, and nothing else (a \
         `del` of a route that was never added fails).",
    );
    assert!(
        undo(&[]).is_empty(),
        "nothing was done, so there is nothing to undo"
    );
}

/// Running the commands and then their undo leaves the table exactly as
/// it was.
#[test]
fn undo_restores_the_table() {
    let mut table = Table::laptop();
    let before = table.clone();
    let done = full_tunnel(ip("203.0.113.7"), &wifi(), "tun0");
    for command in &done {
        table.run(command);
    }
    for command in undo(&done) {
        table.run(&command);
    }
    let mut after = table.0.clone();
    let mut want = before.0.clone();
    let key = |e: &Entry| e.to_string();
    after.sort_by_key(key);
    want.sort_by_key(key);
    assert!(
        after == want,
        "after the commands and their undo the table should be as before:\n{}\nbut it is:\n{}",
        want.iter().map(|e| format!("    {e}\n")).collect::<String>(),
        after.iter().map(|e| format!("    {e}\n")).collect::<String>()
    );
}
