//! Lab 05 exercise: the routes of a full tunnel, and how to take them back.
//!
//! A full tunnel sends every packet of the client through the TUN device,
//! with one exception: the tunnel's own UDP datagrams to the server. They
//! must keep leaving the way they did before, by the interface (and the
//! gateway) the kernel used for the server until now. If they were routed
//! into the tunnel too, each datagram would be sealed and sent into the
//! tunnel again, for ever: nothing would ever reach the server.
//!
//! The client does not touch the default route. It adds two routes that
//! are each half of the address space (`/1`), so each is more specific
//! than the default (`/0`) and wins over it, for IPv4 and for IPv6:
//!
//! ```text
//! ip -4 route add SERVER/32 [via GATEWAY] dev DEV    the exception, first
//! ip -4 route add 0.0.0.0/1 dev TUN                  0.0.0.0 to 127.255.255.255
//! ip -4 route add 128.0.0.0/1 dev TUN                128.0.0.0 to 255.255.255.255
//! ip -6 route add ::/1 dev TUN                       :: to 7fff:ffff:...
//! ip -6 route add 8000::/1 dev TUN                   8000:: to ffff:ffff:...
//! ```
//!
//! (An IPv6 server gets `ip -6 route add SERVER/128 ...` instead of the
//! first line.) Each command says its family, `-4` or `-6`: `ip` would
//! guess it from the address, but with the family said, a wrong address
//! is an error instead of a guess.
//!
//! What is added must be taken back when the tunnel ends, in the reverse
//! order, also when only some of the commands ran: the program journals
//! each change as it makes it, and undoes the journal.
//!
//! Here you write both lists: the commands, and their undo.
//!
//! Check your attempt with `cargo run -p tunlab -- check 05` (or `watch
//! 05`, which checks again each time you save). Stuck? `cargo run -p
//! tunlab -- hint 05` shows the next hint.

use std::net::IpAddr;

/// How the kernel reached the server before the tunnel came up: what
/// `ip route get SERVER` said (`203.0.113.7 via 192.168.1.1 dev wlan0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The interface: `veth0`, `wlan0`, `eth0`.
    pub dev: String,
    /// The next hop, or `None` when the server is on that link itself.
    pub gateway: Option<IpAddr>,
}

/// One command, split into words: `["ip", "route", "add", "0.0.0.0/1",
/// "dev", "tun0"]`.
pub type Command = Vec<String>;

/// The commands that make a full tunnel through `tun`, in the order to run
/// them: first the route that keeps `server` where it was (`before`), then
/// the four `/1` routes, IPv4 first (see the table at the top of this
/// file). Each command has exactly the words of the table:
/// `ip -4|-6 route add PREFIX [via GATEWAY] dev DEV`, the family always
/// said: `-4` for an IPv4 prefix, `-6` for an IPv6 one.
pub fn full_tunnel(server: IpAddr, before: &Route, tun: &str) -> Vec<Command> {
    // TODO: build the five commands. Replace the two lines below.
    let _ = (server, before, tun);
    todo!("the commands of a full tunnel")
}

/// The commands that take back `done`, the commands that ran (all that
/// `full_tunnel` gave, or only the first few if one of them failed): the
/// last one first, each `add` turned into `del` with the same arguments.
pub fn undo(done: &[Command]) -> Vec<Command> {
    // TODO: reverse, and delete what was added. Replace the two lines below.
    let _ = done;
    todo!("the commands that undo `done`")
}
