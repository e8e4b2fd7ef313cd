//! Step 02's tunnel on arbitrary datagrams, as a server and as a client:
//! never a panic; what it writes to the TUN device is exactly the message's
//! payload and a whole IP packet; a client takes nothing from a stranger.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use step02_plain_tunnel::tunnel::{Action, Role, Tunnel, ip_packet_len};

fuzz_target!(|data: &[u8]| {
    let server: SocketAddr = "192.0.2.1:51820".parse().unwrap();
    let stranger: SocketAddr = "198.51.100.9:4000".parse().unwrap();
    let now = Instant::now();
    let mut ends = [
        Tunnel::new(Role::Server, 1400, None),
        Tunnel::new(Role::Client { server }, 1400, Some(Duration::from_secs(10))),
    ];
    let mut out = [0u8; 2048];
    // The input is a series of datagrams: a byte of length (times 8), a
    // byte choosing the sender, then the datagram.
    let mut rest = data;
    let mut t = 0;
    while let [len, from, tail @ ..] = rest {
        let len = usize::from(*len) * 8;
        let (message, next) = tail.split_at(len.min(tail.len()));
        rest = next;
        t += 1;
        let from = if from % 2 == 0 { server } else { stranger };
        for (i, end) in ends.iter_mut().enumerate() {
            let client = i == 1;
            let result = end.decapsulate(from, message, now + Duration::from_millis(t), &mut out);
            if client && from != server {
                assert!(result.is_err(), "a client took a message from a stranger");
            }
            if let Ok(Action::WriteToTun(n)) = result {
                assert_eq!(&out[..n], &message[4..], "delivered bytes differ from the payload");
                assert_eq!(ip_packet_len(&out[..n]), Some(n), "delivered a partial IP packet");
            }
        }
    }
});
