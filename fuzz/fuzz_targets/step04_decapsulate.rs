//! Step 04's decapsulation on an established session, with the keys of the
//! session recorded in lab 04: the server core is rebuilt from
//! `pcaps/step04/` (its test-only static key, the ephemeral key from its
//! key log, the index its response carried), takes the recorded initiation,
//! and then the fuzzer's datagrams. The seeds are the client's recorded
//! datagrams, so the fuzzer starts from messages that open.
//!
//! Never a panic; nothing reaches the TUN device but a recorded message,
//! byte for byte, and each at most once (no forgery, no replay); no
//! handshake is answered (the fuzzer cannot make an initiation); the
//! client's endpoint moves only on a message that opened; and after any
//! junk every recorded message not yet taken still gives exactly what it
//! gives on a fresh core.
//!
//! Each record is one datagram: the op's low bit picks the sender (the
//! recorded client or a stranger), the rest how many milliseconds pass.
#![no_main]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use step02_plain_tunnel::Action;
use step04_crypto::entropy::Scripted;
use step04_crypto::wire::{DataPacket, MessageType, ResponsePacket};
use step04_crypto::{DropReason, PeerConfig, PublicKey, StaticSecret, Tunnel};
use tunlab_fuzz::{Records, datagrams, key, keylog};

const MTU: usize = 1440;
const SERVER: &str = "192.0.2.1:51820";

/// What a data message gives a fresh core: the packet, nothing (a
/// keepalive), or a drop after it opened.
type Outcome = Result<Option<Vec<u8>>, DropReason>;

struct Recorded {
    server_key: [u8; 32],
    client: PublicKey,
    ephemerals: Vec<[u8; 32]>,
    index: u32,
    client_addr: SocketAddr,
    initiation: Vec<u8>,
    /// The client's data messages by counter, and what each gives.
    data: Vec<(u64, Vec<u8>, Outcome)>,
}

fn server(r: &Recorded, t0: Instant) -> Tunnel {
    let mut server = Tunnel::new(
        StaticSecret::from(r.server_key),
        MTU,
        Box::new(Scripted::new(&r.ephemerals, &[r.index])),
        t0,
        Duration::from_secs(1_700_000_000),
    );
    server.add_peer(PeerConfig {
        public: r.client,
        allowed: vec!["10.0.0.2/32".parse().unwrap(), "fd00::2/128".parse().unwrap()],
        endpoint: None,
        keepalive: None,
    });
    let mut out = [0u8; 256];
    let answered = server.decapsulate(r.client_addr, &r.initiation, t0, &mut out);
    assert!(
        matches!(answered, Ok(Action::Reply(_))),
        "the recorded initiation: {answered:?}"
    );
    server
}

fn outcome(result: Result<Action, DropReason>, out: &[u8]) -> Outcome {
    match result {
        Ok(Action::WriteToTun(n)) => Ok(Some(out[..n].to_vec())),
        Ok(Action::Nothing) => Ok(None),
        Ok(Action::Reply(_)) => panic!("a data message answered"),
        Err(e) => Err(e),
    }
}

/// Drops that happen only after a message opened (its counter is then
/// taken).
fn opened(result: &Outcome) -> bool {
    matches!(
        result,
        Ok(_) | Err(DropReason::NotIp | DropReason::SourceNotAllowed)
    )
}

fn recorded() -> &'static Recorded {
    static RECORDED: OnceLock<Recorded> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let server_addr: SocketAddr = SERVER.parse().unwrap();
        let wire = datagrams("step04/underlay.pcap");
        let (client_addr, initiation) = wire
            .iter()
            .find(|(_, to, m)| *to == server_addr && MessageType::of(m) == Ok(MessageType::Initiation))
            .map(|(from, _, m)| (*from, m.clone()))
            .expect("a recorded initiation");
        let response = wire
            .iter()
            .find(|(from, _, m)| *from == server_addr && MessageType::of(m) == Ok(MessageType::Response))
            .map(|(_, _, m)| m.clone())
            .expect("a recorded response");
        let mut r = Recorded {
            server_key: key("step04/test-only-server.key").to_bytes(),
            client: PublicKey::from(&key("step04/test-only-client.key")),
            ephemerals: keylog("step04/server.keylog"),
            index: ResponsePacket::new_checked(&response[..]).unwrap().sender(),
            client_addr,
            initiation,
            data: Vec::new(),
        };
        let t0 = Instant::now();
        let mut fresh = server(&r, t0);
        let mut out = vec![0u8; 2048];
        for (_, to, m) in &wire {
            if *to == server_addr && MessageType::of(m) == Ok(MessageType::Data) {
                let counter = DataPacket::new_checked(&m[..]).unwrap().counter();
                let result = fresh.decapsulate(client_addr, m, t0, &mut out);
                let result = outcome(result, &out);
                assert!(opened(&result), "recorded message {counter}: {result:?}");
                r.data.push((counter, m.clone(), result));
            }
        }
        assert!(
            r.data.len() >= 8,
            "the recording has {} data messages",
            r.data.len()
        );
        r
    })
}

fuzz_target!(|data: &[u8]| {
    let r = recorded();
    let t0 = Instant::now();
    let mut server = server(r, t0);
    let stranger: SocketAddr = "198.51.100.9:4000".parse().unwrap();
    let mut out = vec![0u8; 2048];
    let mut taken = BTreeSet::new();
    let mut elapsed = Duration::ZERO;
    for (op, message) in Records(data) {
        // Less than a minute in all: the session's lifetime is 3.
        elapsed = (elapsed + Duration::from_millis(u64::from(op >> 1))).min(Duration::from_secs(60));
        let from = if op & 1 == 0 { r.client_addr } else { stranger };
        let endpoint = server.peer_endpoint(0);
        let result = server.decapsulate(from, message, t0 + elapsed, &mut out);
        if let Ok(Action::Reply(_)) = result {
            panic!("answered a handshake the fuzzer made");
        }
        let result = outcome(result, &out);
        if opened(&result) {
            let recorded = r.data.iter().find(|(_, m, _)| m == message);
            let (counter, _, expected) =
                recorded.unwrap_or_else(|| panic!("opened a message never sent: {result:?}"));
            assert!(taken.insert(*counter), "message {counter} taken twice");
            assert_eq!(
                &result, expected,
                "message {counter} gives other bytes than on a fresh core"
            );
            assert_eq!(
                server.peer_endpoint(0),
                Some(from),
                "an authenticated message did not move the endpoint"
            );
        } else {
            assert_eq!(
                server.peer_endpoint(0),
                endpoint,
                "a message that did not open ({result:?}) moved the endpoint"
            );
        }
    }
    // Every recorded message still works, unless it was taken.
    for (counter, message, expected) in &r.data {
        let result = server.decapsulate(r.client_addr, message, t0 + elapsed, &mut out);
        let result = outcome(result, &out);
        if taken.contains(counter) {
            assert_eq!(result, Err(DropReason::Replay), "message {counter} replayed");
        } else {
            assert_eq!(
                &result, expected,
                "after the junk, message {counter} no longer gives what it did"
            );
        }
    }
});
