//! Step 01's responder on arbitrary packets from the TUN device: never a
//! panic; a reply only to a valid echo request, and then a valid reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use step01_ping_tun::responder::{Outcome, Responder};

fuzz_target!(|packet: &[u8]| {
    let mut responder = Responder::new("10.0.0.1/24".parse().unwrap());
    let mut out = [0u8; 65536];
    if let Outcome::Reply(n) = responder.handle(packet, &mut out) {
        assert!(n <= packet.len(), "a reply is never longer than its request");
        assert!(step01_ping_tun::checksum::verify(&out[..20]), "reply's IPv4 header checksum");
    }
});
