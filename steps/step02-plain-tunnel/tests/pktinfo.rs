//! A server listening on a wildcard address answers from the address its
//! client sent to, on loopback (127.0.0.0/8 is all ours, so a client can
//! write to 127.0.0.2 while the kernel would answer from 127.0.0.1). No
//! privileges needed.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use step02_plain_tunnel::udp::UdpUnderlay;

/// `client` sends to `to`; the server answers the datagram, and then
/// sends again on its own (as encapsulated data goes): both answers must
/// come from `to`.
fn answers_from(server: &UdpUnderlay, client: &UdpSocket, to: SocketAddr) {
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    client.send_to(b"ping", to).unwrap();
    let mut buf = [0u8; 64];
    let received = server.recv(&mut buf).unwrap();
    assert_eq!(&buf[..received.len], b"ping");
    assert_eq!(
        received.local.map(|ip| ip.to_canonical()),
        Some(to.ip()),
        "the kernel says where the datagram went"
    );
    server.send_from(b"pong", received.from, received.local).unwrap();
    let (n, source) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"pong");
    assert_eq!(source, to, "the answer comes from where the client wrote to");
    server.remember(&received);
    server.send(b"data", received.from).unwrap();
    let (n, source) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"data");
    assert_eq!(source, to, "later messages too");
}

#[test]
fn ipv4_wildcard_answers_from_the_address_written_to() {
    let server = UdpUnderlay::listen("0.0.0.0:0".parse().unwrap()).unwrap();
    let port = server.socket().local_addr().unwrap().port();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    answers_from(&server, &client, SocketAddr::from(([127, 0, 0, 2], port)));
    answers_from(&server, &client, SocketAddr::from(([127, 0, 0, 3], port)));
}

/// `[::]` takes IPv4 too (as IPv4-mapped addresses), and answers an IPv4
/// client from the IPv4 address it wrote to; and IPv6 on ::1.
#[test]
fn dual_stack_wildcard_answers_from_the_address_written_to() {
    let server = UdpUnderlay::listen("[::]:0".parse().unwrap()).unwrap();
    let port = server.socket().local_addr().unwrap().port();
    let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
    answers_from(&server, &v4, SocketAddr::from(([127, 0, 0, 2], port)));
    let v6 = UdpSocket::bind("[::1]:0").unwrap();
    answers_from(&server, &v6, SocketAddr::new("::1".parse().unwrap(), port));
}

/// A socket bound to one address needs none of this: it answers from
/// that address anyway.
#[test]
fn a_bound_address_answers_from_itself() {
    let server = UdpUnderlay::listen("127.0.0.2:0".parse().unwrap()).unwrap();
    let to = server.socket().local_addr().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"ping", to).unwrap();
    let mut buf = [0u8; 64];
    let received = server.recv(&mut buf).unwrap();
    assert_eq!(received.local, None);
    server.send(b"pong", received.from).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(client.recv_from(&mut buf).unwrap().1, to);
}

/// A client's socket answers from where the kernel routes: when its host's
/// address changes, its messages come from the new one, so its server can
/// follow it (roaming).
#[test]
fn a_client_socket_leaves_the_source_to_the_kernel() {
    let client = UdpUnderlay::bind("0.0.0.0:0".parse().unwrap()).unwrap();
    let port = client.socket().local_addr().unwrap().port();
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .send_to(b"pong", SocketAddr::from(([127, 0, 0, 2], port)))
        .unwrap();
    let mut buf = [0u8; 64];
    let received = client.recv(&mut buf).unwrap();
    assert_eq!(received.local, None);
    client.remember(&received);
    client.send(b"data", received.from).unwrap();
    server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (_, source) = server.recv_from(&mut buf).unwrap();
    assert_eq!(source, SocketAddr::from(([127, 0, 0, 1], port)));
}
