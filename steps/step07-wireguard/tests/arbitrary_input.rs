//! Hostile bytes: whatever arrives from the network or the TUN device, the
//! core never panics, answers nothing it should not, and counts a drop.

mod common;

use common::*;
use proptest::prelude::*;
use step02_plain_tunnel::Action;
use step07_wireguard::device::Opened;

/// A pair with a session, and the messages of its handshake and a few
/// data messages, to mutate.
fn recorded() -> (Pair, Vec<Vec<u8>>) {
    let mut p = Pair::new();
    p.a_sends(&a_to_b(1));
    p.settle();
    p.b_sends(&b_to_a(1));
    p.settle();
    let msgs = p.log.iter().map(|s| s.bytes.clone()).collect();
    (p, msgs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (mut p, _) = recorded();
        let mut out = vec![0u8; 2048];
        let before = p.b.drops().total() + p.b.peer_stats(0).unwrap().drops.total();
        match p.b.decapsulate(addr(A), &bytes, p.now, &mut out) {
            Ok(Action::WriteToTun(_)) => prop_assert!(false, "random bytes decrypted"),
            Ok(_) => {}
            Err(_) => {
                let after = p.b.drops().total() + p.b.peer_stats(0).unwrap().drops.total();
                prop_assert_eq!(after, before + 1);
            }
        }
        let mut buf = bytes.clone();
        prop_assert!(!matches!(
            p.b.decapsulate_in_place(addr(A), &mut buf, p.now, &mut out),
            Ok(Opened::Packet(_))
        ));
    }

    #[test]
    fn mutated_messages_never_panic_or_decrypt(which in 0usize..16, at in any::<usize>(), xor in 1u8.., cut in any::<bool>()) {
        let (mut p, msgs) = recorded();
        let mut m = msgs[which % msgs.len()].clone();
        let i = at % m.len();
        if cut { m.truncate(i) } else { m[i] ^= xor }
        let mut out = vec![0u8; 2048];
        for from in [addr(A), addr("203.0.113.9:1")] {
            if let Ok(Action::WriteToTun(_)) = p.b.decapsulate(from, &m, p.now, &mut out) {
                prop_assert!(false, "a changed message was accepted");
            }
            if let Ok(Action::WriteToTun(_)) = p.a.decapsulate(from, &m, p.now, &mut out) {
                prop_assert!(false, "a changed message was accepted");
            }
        }
    }

    #[test]
    fn random_packets_from_the_tun_device_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let (mut p, _) = recorded();
        let mut out = vec![0u8; 4096];
        let _ = p.a.encapsulate(&bytes, p.now, &mut out);
        let mut buf = vec![0u8; 4096];
        buf[16..16 + bytes.len()].copy_from_slice(&bytes);
        let _ = p.a.encapsulate_in_place(&mut buf, bytes.len(), p.now);
        let _ = p.a.encapsulate_in_place(&mut buf[..40], bytes.len(), p.now);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever a client writes to the UAPI socket, the parser answers
    /// (with a request or an errno) and applying what it accepted never
    /// panics.
    #[test]
    fn hostile_uapi_requests_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400), set in any::<bool>()) {
        use step07_wireguard::uapi::{self, Request, Sockets};
        struct NoSockets;
        impl Sockets for NoSockets {
            fn bind(&mut self, port: u16) -> std::io::Result<u16> { Ok(port) }
            fn set_fwmark(&mut self, _: u32) -> std::io::Result<()> { Ok(()) }
        }
        let mut text = if set { b"set=1\n".to_vec() } else { Vec::new() };
        text.extend(&body);
        let mut reader = &text[..];
        let (mut p, _) = recorded();
        for _ in 0..4 {
            match uapi::read_request(&mut reader) {
                Ok(Some(Request::Set(ops))) => { let _ = uapi::apply(&mut p.a, ops, &mut NoSockets, p.now); }
                Ok(Some(Request::Get)) => { let _ = uapi::get(&p.a); }
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// Lines made of wg-quick's keys and random values: parsed or refused
    /// with a line number, never a panic.
    #[test]
    fn hostile_config_files_never_panic(lines in proptest::collection::vec(
        (prop::sample::select(vec!["[Interface]", "[Peer]", "PrivateKey", "Address", "DNS", "MTU", "ListenPort",
            "PublicKey", "AllowedIPs", "Endpoint", "PersistentKeepalive", "PresharedKey", "FwMark", "#", "="]),
         "[ -~]{0,60}"), 0..20)) {
        let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        if let Err(e) = step07_wireguard::conf::parse(&text) {
            prop_assert!(e.line <= lines.len());
        }
    }
}
