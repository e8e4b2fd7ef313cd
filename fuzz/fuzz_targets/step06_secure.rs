//! Step 06's record layer (the secure channel over TCP) in both roles,
//! with the keys of the connection recorded in lab 06 (`pcaps/step06/`):
//! the client is the recorded one (its test-only static key, the ephemeral
//! key from its key log, the recorded timestamp), so the server's recorded
//! byte stream opens in it; the server holds the test-only server key and
//! a fresh ephemeral key, so the recorded client's records can never open
//! in it. The seeds are the two recorded byte streams, cut as TCP cut them.
//!
//! Never a panic; the client opens nothing but the recorded frames, in
//! their order (a changed, dropped, repeated or reordered record never
//! opens); the server identifies no key but the listed one (after it
//! gives the initiation's ephemeral key, its caller opens the initiation
//! and answers it, as step 06's server does for a key it has not seen
//! replayed) and opens no record at all; a channel that failed stays
//! failed; buffered input stays within the limit.
//!
//! Records: op 0 pushes the body into the client, 1 into the server.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use step04_crypto::noise::{self, Identity};
use step04_crypto::wire::{INITIATION_LEN, InitiationPacket};
use step04_crypto::{PublicKey, StaticSecret};
use step06_localhost::secure::{Event, INPUT_LIMIT, SecureChannel, ServerKeys};
use tunlab_fuzz::{Records, key, keylog, tcp_streams};

const PORT: u16 = 7835;

struct Recorded {
    client_key: [u8; 32],
    server_key: [u8; 32],
    ephemeral: [u8; 32],
    timestamp: [u8; noise::TIMESTAMP_LEN],
    /// The client's first bytes: its initiation record.
    initiation: Vec<u8>,
    /// The frames the server sent, opened.
    frames: Vec<Vec<u8>>,
}

fn client(r: &Recorded) -> SecureChannel {
    let server = PublicKey::from(&StaticSecret::from(r.server_key));
    let mut init = Vec::new();
    let channel = SecureChannel::client(
        Arc::new(Identity::new(StaticSecret::from(r.client_key))),
        server,
        StaticSecret::from(r.ephemeral),
        r.timestamp,
        &mut init,
    )
    .expect("the recorded client starts");
    assert_eq!(
        init, r.initiation,
        "the replayed client's initiation is not the recorded one"
    );
    channel
}

fn server(r: &Recorded) -> SecureChannel {
    let keys = ServerKeys {
        identity: Identity::new(StaticSecret::from(r.server_key)),
        allowed: vec![PublicKey::from(&StaticSecret::from(r.client_key))],
    };
    SecureChannel::server(Arc::new(keys), StaticSecret::from([0x5e; 32]))
}

fn recorded() -> &'static Recorded {
    static RECORDED: OnceLock<Recorded> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let (up, down) = tcp_streams("step06/control.pcap", PORT);
        let initiation = up
            .get(..2 + INITIATION_LEN)
            .expect("an initiation record")
            .to_vec();
        let server_key = key("step06/test-only-server.key");
        let message = InitiationPacket::new_checked(&initiation[2..]).expect("an initiation");
        let incoming = noise::consume_initiation(&Identity::new(server_key.clone()), &message)
            .expect("the server key opens the recorded initiation");
        let mut r = Recorded {
            client_key: key("step06/test-only-client.key").to_bytes(),
            server_key: server_key.to_bytes(),
            ephemeral: keylog("step06/client.keylog")[0],
            timestamp: incoming.timestamp,
            initiation,
            frames: Vec::new(),
        };
        let mut c = client(&r);
        c.push(&down).expect("the recorded stream fits");
        let mut frames = Vec::new();
        loop {
            match c.poll() {
                Ok(Some(Event::Established { .. })) => {}
                Ok(Some(Event::Frame(f))) => frames.push(f.to_vec()),
                Ok(Some(Event::Initiation { .. })) => panic!("an initiation came to the client"),
                Ok(None) => break,
                Err(e) => panic!("the recorded stream does not open: {e}"),
            }
        }
        assert!(frames.len() >= 3, "the recording has {} frames", frames.len());
        r.frames = frames;
        r
    })
}

fuzz_target!(|data: &[u8]| {
    let r = recorded();
    let mut ends = [client(r), server(r)];
    let mut opened = [0usize; 2];
    let mut established = [false; 2];
    let mut failed = [None; 2];
    for (op, body) in Records(data) {
        let which = usize::from(op % 2);
        let end = &mut ends[which];
        let pushed = end.push(body);
        if let Some(e) = failed[which] {
            assert_eq!(pushed, Err(e), "a failed channel took more input");
            continue;
        }
        if let Err(e) = pushed {
            failed[which] = Some(e);
            continue;
        }
        let mut sent = Vec::new();
        for _ in 0..=INPUT_LIMIT {
            match end.poll() {
                Ok(None) => break,
                Ok(Some(Event::Established { .. })) => {
                    assert_eq!(which, 0, "the server took a response");
                    assert!(!established[which], "established twice");
                    established[which] = true;
                }
                Ok(Some(Event::Initiation { .. })) => {
                    assert_eq!(which, 1, "the client took an initiation");
                    assert!(!established[which], "an initiation after the handshake");
                    // The server's caller judges the key and the timestamp
                    // (step 06's policy); here every listed key is welcome.
                    let answered = end.identify().and_then(|(client, _)| {
                        assert_eq!(
                            client,
                            *PublicKey::from(&StaticSecret::from(r.client_key)).as_bytes(),
                            "identified a key that is not listed"
                        );
                        end.accept(&mut sent)
                    });
                    match answered {
                        Ok(_) => established[which] = true,
                        Err(e) => {
                            failed[which] = Some(e);
                            break;
                        }
                    }
                }
                Ok(Some(Event::Frame(frame))) => {
                    assert!(established[which], "a frame before the handshake");
                    assert_eq!(which, 0, "the server opened a record it has no key for");
                    let k = opened[which];
                    assert_eq!(
                        r.frames.get(k).map(Vec::as_slice),
                        Some(frame),
                        "frame {k} is not the recorded one"
                    );
                    opened[which] += 1;
                }
                Err(e) => {
                    failed[which] = Some(e);
                    assert_eq!(end.poll().map(|_| ()), Err(e), "a failed channel recovered");
                    break;
                }
            }
        }
        assert_eq!(
            end.is_established(),
            established[which] && failed[which].is_none()
        );
    }
});
