//! The planner: which changes make a full tunnel on a client, and
//! forwarding with NAT on a server. Pure functions of what the kernel said
//! (parsed from `ip -j` output) and of the options, so the tests check the
//! exact commands without privileges.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, bail};
use ipnet::IpNet;
use serde_json::Value;
use step01_ping_tun::ifname;

use crate::journal::{Action, Change};
use crate::system::{sysctl_key, sysctl_parts};

/// How the kernel reaches an address: `ip -j route get ADDR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTo {
    pub dev: String,
    /// The next hop, or none when the address is on the link.
    pub gateway: Option<IpAddr>,
}

// ANCHOR: parse_route_get
/// Reads the output of `ip -j route get ADDR`: a JSON list with one route,
/// whose fields are named (never read by position).
pub fn parse_route_get(json: &str) -> anyhow::Result<RouteTo> {
    let value: Value = serde_json::from_str(json).context("`ip -j route get` did not print JSON")?;
    let route = value
        .as_array()
        .and_then(|routes| routes.first())
        .context("`ip -j route get` found no route")?;
    let dev = route
        .get("dev")
        .and_then(Value::as_str)
        .context("the route has no device")?
        .to_string();
    let gateway = match route.get("gateway").and_then(Value::as_str) {
        Some(text) => Some(
            text.parse()
                .with_context(|| format!("gateway `{text}` is not an address"))?,
        ),
        None => None,
    };
    Ok(RouteTo { dev, gateway })
}
// ANCHOR_END: parse_route_get

fn cmd(parts: &[&str]) -> Action {
    Action::Command(parts.iter().map(|s| s.to_string()).collect())
}

/// A route added with `ip [-6] route add SPEC` and removed with `del`.
fn route(family: &str, spec: &[&str]) -> Change {
    let mut add = vec!["ip", family, "route", "add"];
    add.extend(spec);
    let mut del = vec!["ip", family, "route", "del"];
    del.extend(spec);
    Change {
        what: format!("route {}", spec.join(" ")),
        apply: cmd(&add),
        undo: cmd(&del),
    }
}

// ANCHOR: nft_table
/// An nftables table of our own, `table FAMILY NAME { BODY }`, made with
/// one `nft -f -` (atomically: all of it or none) and undone by deleting
/// it. Our rules live only in tables of our own, never in anyone else's.
pub fn nft_table(family: &str, name: &str, body: &str) -> Change {
    Change {
        what: format!("nft table {family} {name}"),
        apply: Action::Nft(format!("table {family} {name} {{\n{body}}}\n")),
        undo: cmd(&["nft", "delete", "table", family, name]),
    }
}
// ANCHOR_END: nft_table

/// What a client was asked for.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub tun: String,
    pub server: SocketAddr,
    /// How the kernel reached the server before we changed anything.
    pub route_to_server: RouteTo,
    /// The TUN device has an IPv6 address: tunnel IPv6, else block it.
    pub ipv6_inside: bool,
    pub dns: Option<IpAddr>,
    /// The resolver file and its content now, when `dns` is given.
    pub resolv_conf: Option<(PathBuf, String)>,
    pub kill_switch: bool,
}

// ANCHOR: client_plan
/// The changes for a full tunnel, in the order they are made:
///
/// 1. the kill switch, if asked, first: from then on nothing leaves
///    outside the tunnel, not even while the routes are being changed;
/// 2. a host route to the server through the interface and gateway the
///    kernel uses for it now, so the tunnel's own datagrams never enter
///    the tunnel;
/// 3. 0.0.0.0/1 and 128.0.0.0/1 through the TUN device: together all of
///    IPv4, and each more specific than any default route, which stays
///    untouched (and comes back into use when the device goes);
/// 4. the same for IPv6 with ::/1 and 8000::/1, or, without an IPv6
///    address inside the tunnel, blackhole routes: IPv6 is tunnelled or
///    dropped, never sent around the tunnel;
/// 5. the resolver, if asked.
pub fn client_plan(o: &ClientOptions) -> anyhow::Result<Vec<Change>> {
    ifname::check(&o.tun)?;
    ifname::check(&o.route_to_server.dev).context("the interface to the server")?;
    let mut changes = Vec::new();
    if o.kill_switch {
        changes.push(kill_switch(&o.tun, o.server));
    }
    let server = o.server.ip();
    let (family, host_len) = if server.is_ipv4() { ("-4", 32) } else { ("-6", 128) };
    let host = format!("{server}/{host_len}");
    let via = o.route_to_server.gateway.map(|g| g.to_string());
    let mut spec = vec![host.as_str()];
    if let Some(gw) = &via {
        spec.extend(["via", gw]);
    }
    spec.extend(["dev", &o.route_to_server.dev]);
    if o.route_to_server.dev == o.tun {
        bail!(
            "the server {server} is already routed through {}: start the client before anything else routes into it",
            o.tun
        );
    }
    changes.push(route(family, &spec));
    for half in ["0.0.0.0/1", "128.0.0.0/1"] {
        changes.push(route("-4", &[half, "dev", &o.tun]));
    }
    for half in ["::/1", "8000::/1"] {
        if o.ipv6_inside {
            changes.push(route("-6", &[half, "dev", &o.tun]));
        } else {
            changes.push(route("-6", &["blackhole", half]));
        }
    }
    if let Some(dns) = o.dns {
        let (path, old) = o.resolv_conf.clone().context("no resolver file to change")?;
        changes.push(Change {
            what: format!("resolver {dns} in {}", path.display()),
            apply: Action::WriteFile {
                path: path.clone(),
                content: resolver(dns, &old),
            },
            undo: Action::WriteFile { path, content: old },
        });
    }
    Ok(changes)
}
// ANCHOR_END: client_plan

/// A resolver file naming `dns`, keeping the old file's `search` and
/// `options` lines.
fn resolver(dns: IpAddr, old: &str) -> String {
    let kept: String = old
        .lines()
        .filter(|l| l.starts_with("search") || l.starts_with("options"))
        .map(|l| format!("{l}\n"))
        .collect();
    format!("# set by step05-full-tunnel while it runs\nnameserver {dns}\n{kept}")
}

/// The name of a client's kill-switch table.
pub fn kill_switch_table(tun: &str) -> String {
    format!("tunlab_step05_ks_{tun}")
}

// ANCHOR: kill_switch
/// An output chain that drops every packet leaving by any interface but
/// the tunnel and loopback, except:
///
/// - the tunnel's own datagrams to the server;
/// - what keeps the link itself working while the kill switch is on: a
///   DHCP client's messages to servers (UDP 68 to 67, RFC 2131 section
///   4.1) and a DHCPv6 client's (UDP 546 to 547, RFC 8415 section 7.2),
///   so a lease can be renewed; IPv6 router and neighbour solicitations
///   and neighbour advertisements (RFC 4861 section 4), which a host must
///   send with hop limit 255 and no router forwards, so they never leave
///   the link; and any ICMPv6 to link-local or link-scope multicast
///   addresses (MLD reports, RFC 3810).
///
/// The chain filters only what this host sends: router advertisements and
/// DHCP answers come in untouched. What it does not cover: a DHCP client's
/// messages sent through a packet socket (many send their broadcasts that
/// way) never pass nftables's IP hooks, so they leave whatever the rules
/// say, as ARP does; and a process with the privilege to bind ports 68 or
/// 546 could send its own data through the exceptions. It outlives the
/// program when the program is killed: then nothing leaks until `down`.
fn kill_switch(tun: &str, server: SocketAddr) -> Change {
    let family = if server.is_ipv4() { "ip" } else { "ip6" };
    let body = format!(
        "  chain output {{\n    type filter hook output priority filter; policy drop;\n    \
         oifname \"lo\" accept\n    oifname \"{tun}\" accept\n    \
         {family} daddr {} udp dport {} accept\n    \
         meta nfproto ipv4 udp sport 68 udp dport 67 accept\n    \
         meta nfproto ipv6 udp sport 546 udp dport 547 accept\n    \
         icmpv6 type {{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }} ip6 hoplimit 255 accept\n    \
         ip6 daddr {{ fe80::/10, ff02::/16 }} meta l4proto ipv6-icmp accept\n  }}\n",
        server.ip(),
        server.port()
    );
    nft_table("inet", &kill_switch_table(tun), &body)
}
// ANCHOR_END: kill_switch

/// The name of a server's NAT table.
pub fn nat_table(tun: &str) -> String {
    format!("tunlab_step05_{tun}")
}

/// The sysctls a server sets, and to what: forwarding on in both
/// families; and no ICMP redirects out of the TUN device, which the kernel
/// would otherwise send to a client whose packet for another client it
/// routes back into the device it came from (Linux sends them unless both
/// `all` and the device say no).
pub fn server_sysctls(tun: &str) -> Vec<(String, &'static str)> {
    vec![
        ("net.ipv4.ip_forward".into(), "1"),
        ("net.ipv6.conf.all.forwarding".into(), "1"),
        ("net.ipv4.conf.all.send_redirects".into(), "0"),
        (sysctl_key(&["net", "ipv4", "conf", tun, "send_redirects"]), "0"),
    ]
}

/// The forwarding switches of [`server_sysctls`], and their family.
const FORWARDING: [(&str, &str); 2] = [
    ("net.ipv4.ip_forward", "ipv4"),
    ("net.ipv6.conf.all.forwarding", "ipv6"),
];

// ANCHOR: side_effects
/// What writing a forwarding switch also rewrites, so that putting the
/// switch back does not put these back: every interface's forwarding
/// (`default` too) is set to the new value, and in IPv4
/// `net.ipv4.conf.all.accept_redirects` to its opposite (the kernel's
/// documentation, ip-sysctl.rst, says of `ip_forward` that a change
/// "resets all configuration parameters to their default state"; lab 05
/// compares every value before and after). `interfaces` are the names
/// under `net.ipv4.conf` (or `net.ipv6.conf`) now; the TUN device goes
/// with the program, and a name we could not write safely is left out.
pub fn forwarding_side_effects(switch: &str, interfaces: &[String], tun: &str) -> Vec<String> {
    let Some(&(_, family)) = FORWARDING.iter().find(|(k, _)| *k == switch) else {
        return Vec::new();
    };
    let mut keys: Vec<String> = interfaces
        .iter()
        .filter(|i| *i != "all" && *i != tun && ifname::check(i).is_ok())
        .map(|i| sysctl_key(&["net", family, "conf", i, "forwarding"]))
        .collect();
    if family == "ipv4" {
        keys.push("net.ipv4.conf.all.accept_redirects".into());
    }
    keys
}

/// The value `key`, one of [`forwarding_side_effects`], has once its
/// switch was put back to `old`.
fn after_undo(key: &str, old: &str) -> &'static str {
    let on = old.trim() != "0";
    match (key.ends_with("accept_redirects"), on) {
        (true, true) | (false, false) => "0",
        (true, false) | (false, true) => "1",
    }
}
// ANCHOR_END: side_effects

// ANCHOR: server_plan
/// The changes that make a server forward for its clients and masquerade
/// them: forwarding on (the old values come back at the end, with every
/// value that turning it on rewrote), and a NAT table of our own that
/// rewrites the source of packets from the tunnel's prefixes leaving by
/// any other interface to that interface's address. `current` is the
/// value now of each of [`server_sysctls`] and of their
/// [`forwarding_side_effects`].
pub fn server_plan(
    tun: &str,
    addresses: &[IpNet],
    current: &[(String, String)],
) -> anyhow::Result<Vec<Change>> {
    ifname::check(tun)?;
    let mut changes = Vec::new();
    let sysctl = |key: &str, value: &str| Action::Sysctl {
        key: key.to_string(),
        value: value.to_string(),
    };
    for (key, wanted) in server_sysctls(tun) {
        let Some((_, old)) = current.iter().find(|(k, _)| *k == key) else {
            continue;
        };
        if old == wanted {
            continue;
        }
        // Written down before the switch, so undone after it: each
        // value the switch rewrites, and the undo of the switch would
        // not restore, comes back as it was.
        let mut interfaces: Vec<String> = current
            .iter()
            .filter_map(|(k, _)| {
                let parts = sysctl_parts(k).ok()?;
                match parts.as_slice() {
                    ["net", _, "conf", i, "forwarding"] => Some(i.to_string()),
                    _ => None,
                }
            })
            .collect();
        interfaces.sort();
        interfaces.dedup();
        for side in forwarding_side_effects(&key, &interfaces, tun) {
            let Some((_, now)) = current.iter().find(|(k, _)| *k == side) else {
                continue;
            };
            if now != after_undo(&side, old) {
                changes.push(Change {
                    what: format!("sysctl {side}={now} (kept: forwarding rewrites it)"),
                    apply: sysctl(&side, now),
                    undo: sysctl(&side, now),
                });
            }
        }
        changes.push(Change {
            what: format!("sysctl {key}={wanted} (was {old})"),
            apply: sysctl(&key, wanted),
            undo: sysctl(&key, old),
        });
    }
    let mut rules = String::new();
    for a in addresses {
        let (family, network) = match a {
            IpNet::V4(c) => ("ip", c.trunc().to_string()),
            IpNet::V6(c) => ("ip6", c.trunc().to_string()),
        };
        rules.push_str(&format!(
            "    oifname != \"{tun}\" {family} saddr {network} masquerade\n"
        ));
    }
    // Into the tunnel from elsewhere, only replies, and connections a DNAT
    // rule sends in on purpose (step 06 publishes a client's port that
    // way; step 05 has none): the server masquerades its clients, it does
    // not expose them. Client to client (in and out of the TUN device) is
    // allowed. A drop in any base chain is final, so the exception must be
    // here, not in another table.
    let body = format!(
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{rules}  }}\n  \
         chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
         iifname != \"{tun}\" oifname \"{tun}\" ct state established,related accept\n    \
         iifname != \"{tun}\" oifname \"{tun}\" ct status dnat accept\n    \
         iifname != \"{tun}\" oifname \"{tun}\" drop\n  }}\n"
    );
    changes.push(nft_table("inet", &nat_table(tun), &body));
    Ok(changes)
}
// ANCHOR_END: server_plan

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(c: &Change) -> String {
        match &c.apply {
            Action::Command(a) => a.join(" "),
            other => other.to_string(),
        }
    }

    fn undo(c: &Change) -> String {
        match &c.undo {
            Action::Command(a) => a.join(" "),
            other => other.to_string(),
        }
    }

    #[test]
    fn reads_ip_route_get_by_field_name() {
        let via = r#"[{"dst":"198.51.100.7","gateway":"192.0.2.1","dev":"veth0","prefsrc":"192.0.2.2","flags":[],"uid":0,"cache":[]}]"#;
        assert_eq!(
            parse_route_get(via).unwrap(),
            RouteTo {
                dev: "veth0".into(),
                gateway: Some("192.0.2.1".parse().unwrap())
            }
        );
        let on_link =
            r#"[{"dst":"192.0.2.1","dev":"eth9","prefsrc":"192.0.2.2","flags":[],"uid":0,"cache":[]}]"#;
        assert_eq!(parse_route_get(on_link).unwrap().gateway, None);
        // Fields in another order, and more of them, change nothing.
        let v6 = r#"[{"dst":"2001:db8:100::2","from":"::","dev":"wlan0","gateway":"2001:db8:1::1","metric":1024,"flags":[],"pref":"medium"}]"#;
        assert_eq!(parse_route_get(v6).unwrap().dev, "wlan0");
        for bad in [
            "",
            "[]",
            "{}",
            r#"[{"gateway":"192.0.2.1"}]"#,
            r#"[{"dev":"x","gateway":"nope"}]"#,
        ] {
            assert!(parse_route_get(bad).is_err(), "{bad}");
        }
    }

    fn options() -> ClientOptions {
        ClientOptions {
            tun: "tun0".into(),
            server: "192.0.2.1:51820".parse().unwrap(),
            route_to_server: RouteTo {
                dev: "veth0".into(),
                gateway: None,
            },
            ipv6_inside: true,
            dns: None,
            resolv_conf: None,
            kill_switch: false,
        }
    }

    #[test]
    fn a_full_tunnel_over_an_on_link_server() {
        let plan = client_plan(&options()).unwrap();
        let applied: Vec<String> = plan.iter().map(argv).collect();
        assert_eq!(
            applied,
            [
                "ip -4 route add 192.0.2.1/32 dev veth0",
                "ip -4 route add 0.0.0.0/1 dev tun0",
                "ip -4 route add 128.0.0.0/1 dev tun0",
                "ip -6 route add ::/1 dev tun0",
                "ip -6 route add 8000::/1 dev tun0",
            ]
        );
        assert_eq!(undo(&plan[0]), "ip -4 route del 192.0.2.1/32 dev veth0");
    }

    #[test]
    fn a_server_behind_a_gateway_keeps_its_gateway() {
        let mut o = options();
        o.server = "203.0.113.9:51820".parse().unwrap();
        o.route_to_server = RouteTo {
            dev: "wlan0".into(),
            gateway: Some("192.168.1.1".parse().unwrap()),
        };
        let plan = client_plan(&o).unwrap();
        assert_eq!(
            argv(&plan[0]),
            "ip -4 route add 203.0.113.9/32 via 192.168.1.1 dev wlan0"
        );
    }

    #[test]
    fn an_ipv6_server_gets_a_128_host_route() {
        let mut o = options();
        o.server = "[2001:db8::1]:51820".parse().unwrap();
        o.route_to_server.gateway = Some("fe80::1".parse().unwrap());
        let plan = client_plan(&o).unwrap();
        assert_eq!(
            argv(&plan[0]),
            "ip -6 route add 2001:db8::1/128 via fe80::1 dev veth0"
        );
    }

    #[test]
    fn without_ipv6_inside_ipv6_is_blackholed_not_leaked() {
        let mut o = options();
        o.ipv6_inside = false;
        let plan = client_plan(&o).unwrap();
        let applied: Vec<String> = plan.iter().map(argv).collect();
        assert!(applied.contains(&"ip -6 route add blackhole ::/1".to_string()));
        assert!(applied.contains(&"ip -6 route add blackhole 8000::/1".to_string()));
        assert!(!applied.iter().any(|a| a.contains("-6 route add ::/1 dev")));
    }

    #[test]
    fn the_kill_switch_comes_first_and_the_resolver_undoes_to_what_was_there() {
        let mut o = options();
        o.dns = Some("198.51.100.53".parse().unwrap());
        o.resolv_conf = Some(("/etc/resolv.conf".into(), "nameserver 192.0.2.53\n".into()));
        o.kill_switch = true;
        let plan = client_plan(&o).unwrap();
        let dns = &plan[6];
        assert!(
            matches!(&dns.apply, Action::WriteFile { content, .. } if content.contains("nameserver 198.51.100.53"))
        );
        assert_eq!(
            dns.undo,
            Action::WriteFile {
                path: "/etc/resolv.conf".into(),
                content: "nameserver 192.0.2.53\n".into()
            }
        );
        let Action::Nft(script) = &plan[0].apply else {
            panic!()
        };
        assert!(script.starts_with("table inet tunlab_step05_ks_tun0 {"));
        assert!(script.contains("policy drop;"));
        assert!(script.contains("oifname \"tun0\" accept"));
        assert!(script.contains("ip daddr 192.0.2.1 udp dport 51820 accept"));
        assert_eq!(undo(&plan[0]), "nft delete table inet tunlab_step05_ks_tun0");
    }

    /// The kill switch's table, as `nft -f -` gets it.
    fn kill_switch_script(server: &str) -> String {
        let mut o = options();
        o.server = server.parse().unwrap();
        o.kill_switch = true;
        let plan = client_plan(&o).unwrap();
        let Action::Nft(script) = &plan[0].apply else {
            panic!("{:?}", plan[0])
        };
        script.clone()
    }

    #[test]
    fn the_kill_switch_lets_dhcp_and_neighbour_discovery_through() {
        let script = kill_switch_script("192.0.2.1:51820");
        assert_eq!(
            script,
            "table inet tunlab_step05_ks_tun0 {
  chain output {
    type filter hook output priority filter; policy drop;
    oifname \"lo\" accept
    oifname \"tun0\" accept
    ip daddr 192.0.2.1 udp dport 51820 accept
    meta nfproto ipv4 udp sport 68 udp dport 67 accept
    meta nfproto ipv6 udp sport 546 udp dport 547 accept
    icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept
    ip6 daddr { fe80::/10, ff02::/16 } meta l4proto ipv6-icmp accept
  }
}
"
        );
        assert!(
            kill_switch_script("[2001:db8::1]:51820")
                .contains("ip6 daddr 2001:db8::1 udp dport 51820 accept")
        );
        // When nft is at hand and we may ask the kernel, it accepts the
        // table as written (a check only: nothing is loaded).
        if step01_ping_tun::host::has_net_admin() {
            use crate::system::{Host, System};
            Host.run(
                &["nft".into(), "-c".into(), "-f".into(), "-".into()],
                Some(&script),
            )
            .unwrap();
        }
    }

    #[test]
    fn names_that_could_write_rules_of_their_own_are_refused() {
        let mut o = options();
        o.tun = "tun0\" accept".into();
        assert!(client_plan(&o).is_err());
        let mut o = options();
        o.route_to_server.dev = "eth0 x".into();
        assert!(client_plan(&o).is_err());
        assert!(server_plan("x}\ntable", &[], &[]).is_err());
    }

    #[test]
    fn a_server_already_reached_through_the_tunnel_is_refused() {
        let mut o = options();
        o.route_to_server.dev = "tun0".into();
        assert!(client_plan(&o).is_err());
    }

    #[test]
    fn a_server_turns_on_only_what_is_off_and_masquerades_its_prefixes() {
        let addresses: Vec<IpNet> = vec!["10.0.0.1/24".parse().unwrap(), "fd00::1/64".parse().unwrap()];
        let current = vec![
            ("net.ipv4.ip_forward".to_string(), "0".to_string()),
            ("net.ipv6.conf.all.forwarding".to_string(), "1".to_string()),
        ];
        let plan = server_plan("tun0", &addresses, &current).unwrap();
        assert_eq!(
            plan.len(),
            2,
            "only what is not as wanted: ip_forward, and the table"
        );
        assert_eq!(plan[0].what, "sysctl net.ipv4.ip_forward=1 (was 0)");
        assert_eq!(
            plan[0].undo,
            Action::Sysctl {
                key: "net.ipv4.ip_forward".into(),
                value: "0".into()
            }
        );
        let Action::Nft(script) = &plan[1].apply else {
            panic!()
        };
        assert!(
            script.contains("oifname != \"tun0\" ip saddr 10.0.0.0/24 masquerade"),
            "{script}"
        );
        assert!(
            script.contains("oifname != \"tun0\" ip6 saddr fd00::/64 masquerade"),
            "{script}"
        );
        assert!(
            script.contains("iifname != \"tun0\" oifname \"tun0\" drop"),
            "{script}"
        );
        assert_eq!(undo(&plan[1]), "nft delete table inet tunlab_step05_tun0");
    }

    fn values(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn turning_forwarding_on_keeps_what_it_rewrites_to_put_back_after() {
        let current = values(&[
            ("net.ipv4.conf.all.accept_redirects", "0"),
            ("net.ipv4.conf.default.forwarding", "0"),
            ("net.ipv4.conf.eth0.forwarding", "1"),
            ("net/ipv4/conf/eth0.100/forwarding", "1"),
            ("net.ipv4.conf.lo.forwarding", "0"),
            ("net.ipv4.conf.tun0.forwarding", "0"),
            ("net.ipv4.ip_forward", "0"),
            ("net.ipv6.conf.eth0.forwarding", "1"),
            ("net.ipv6.conf.all.forwarding", "0"),
        ]);
        let plan = server_plan("tun0", &[], &current).unwrap();
        let whats: Vec<&str> = plan.iter().map(|c| c.what.as_str()).collect();
        assert_eq!(
            whats,
            [
                "sysctl net.ipv4.conf.eth0.forwarding=1 (kept: forwarding rewrites it)",
                "sysctl net/ipv4/conf/eth0.100/forwarding=1 (kept: forwarding rewrites it)",
                "sysctl net.ipv4.conf.all.accept_redirects=0 (kept: forwarding rewrites it)",
                "sysctl net.ipv4.ip_forward=1 (was 0)",
                "sysctl net.ipv6.conf.eth0.forwarding=1 (kept: forwarding rewrites it)",
                "sysctl net.ipv6.conf.all.forwarding=1 (was 0)",
                "nft table inet tunlab_step05_tun0",
            ]
        );
        assert_eq!(
            plan[0].undo,
            Action::Sysctl {
                key: "net.ipv4.conf.eth0.forwarding".into(),
                value: "1".into()
            }
        );
        // Already on: nothing to turn on, nothing to keep.
        let on = values(&[
            ("net.ipv4.conf.eth0.forwarding", "0"),
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
        ]);
        assert_eq!(server_plan("tun0", &[], &on).unwrap().len(), 1);
    }

    #[test]
    fn the_resolver_keeps_search_and_options() {
        let old = "nameserver 192.0.2.53\nsearch lab.example\noptions edns0\n";
        assert_eq!(
            resolver("10.0.0.1".parse().unwrap(), old),
            "# set by step05-full-tunnel while it runs\nnameserver 10.0.0.1\nsearch lab.example\noptions edns0\n"
        );
    }

    #[test]
    fn a_server_stops_redirecting_clients_to_each_other() {
        let current: Vec<(String, String)> = server_sysctls("tun0")
            .into_iter()
            .map(|(k, _)| {
                let v = if k.contains("redirects") { "1" } else { "0" };
                (k, v.to_string())
            })
            .collect();
        let plan = server_plan("tun0", &[], &current).unwrap();
        let whats: Vec<&str> = plan.iter().map(|c| c.what.as_str()).collect();
        assert!(
            whats.contains(&"sysctl net.ipv4.conf.tun0.send_redirects=0 (was 1)"),
            "{whats:?}"
        );
        assert!(
            whats.contains(&"sysctl net.ipv4.conf.all.send_redirects=0 (was 1)"),
            "{whats:?}"
        );
    }
}
