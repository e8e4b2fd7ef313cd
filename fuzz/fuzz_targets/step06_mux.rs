//! Step 06's stream multiplexer, server side, facing a hostile client: the
//! fuzzer's records are frames from the peer and calls from the
//! application (open, write, read, close, reset, accept, send). Besides
//! never panicking, a model of each stream checks what the mux promises:
//!
//! - flow control: data beyond the credit the mux granted (the initial
//!   window and the Window frames it sent) resets the stream, and data
//!   within it never does; the mux never sends more than the peer granted;
//! - the bytes the application reads are exactly the Data the mux
//!   accepted, in order, and the bytes it sends are exactly what the
//!   application wrote, in order; nothing after a Close;
//! - memory: no stream buffers more than one window each way;
//! - every frame the mux sends parses.
#![no_main]

use std::collections::{BTreeMap, VecDeque};

use libfuzzer_sys::fuzz_target;
use step06_localhost::mux::{Config, INITIAL_WINDOW, Mux, Side, StreamError};
use step06_localhost::wire::{Proto, Repr};
use tunlab_fuzz::Records;

#[derive(Default)]
struct Model {
    /// Bytes the mux accepted from the peer and the application has not
    /// read yet.
    unread: VecDeque<u8>,
    /// Credit the mux granted the peer, and the data it accepted.
    granted: u64,
    received: u64,
    /// The peer's Close was accepted.
    peer_closed: bool,
    /// Bytes the application wrote that the mux has not sent yet.
    unsent: VecDeque<u8>,
    /// Credit the peer granted us, and what the mux sent.
    peer_granted: u64,
    sent: u64,
    /// The mux sent our Close, or a Reset.
    closed_sent: bool,
    reset_sent: bool,
    /// Ended by a reset (either side) or a broken rule: its buffers may
    /// vanish.
    gone: bool,
}

impl Model {
    fn new() -> Self {
        Self {
            granted: u64::from(INITIAL_WINDOW),
            peer_granted: u64::from(INITIAL_WINDOW),
            ..Self::default()
        }
    }
}

/// Every frame the mux wants to send, checked against the model.
fn drain(mux: &mut Mux, streams: &mut BTreeMap<u32, Model>) {
    let mut out = Vec::new();
    for _ in 0..256 {
        out.clear();
        if !mux.poll_transmit(&mut out) {
            return;
        }
        let repr =
            Repr::parse_bytes(&out).unwrap_or_else(|e| panic!("the mux sent a bad frame ({e}): {out:?}"));
        match repr {
            Repr::Open { stream, .. } => {
                assert!(stream % 2 == 0, "the server opened odd stream {stream}");
            }
            Repr::Data { stream, bytes } => {
                let m = streams.get_mut(&stream).expect("data on a stream never opened");
                assert!(
                    !m.closed_sent && !m.reset_sent,
                    "data on stream {stream} after its end"
                );
                m.sent += bytes.len() as u64;
                assert!(
                    m.sent <= m.peer_granted,
                    "stream {stream}: sent {} of {} granted",
                    m.sent,
                    m.peer_granted
                );
                if !m.gone {
                    let expected: Vec<u8> = m.unsent.drain(..bytes.len().min(m.unsent.len())).collect();
                    assert_eq!(
                        expected, bytes,
                        "stream {stream} sent other bytes than were written"
                    );
                }
            }
            Repr::Window { stream, credit } => {
                if let Some(m) = streams.get_mut(&stream) {
                    m.granted += u64::from(credit);
                    assert!(!m.peer_closed, "credit after the peer's Close");
                }
            }
            Repr::Close { stream } => {
                let m = streams.get_mut(&stream).expect("close of a stream never opened");
                assert!(m.gone || m.unsent.is_empty(), "Close before all data was sent");
                m.closed_sent = true;
            }
            Repr::Reset { stream } => {
                let m = streams.entry(stream).or_insert_with(Model::new);
                m.reset_sent = true;
                m.gone = true;
            }
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut mux = Mux::new(Side::Server, Config { max_streams: 8 });
    let mut streams: BTreeMap<u32, Model> = BTreeMap::new();
    let mut buf = vec![0u8; 256 * 300 + 1];
    let pick = |streams: &BTreeMap<u32, Model>, body: &[u8]| -> Option<u32> {
        let i = usize::from(*body.first()?);
        streams.keys().nth(i % streams.len().max(1)).copied()
    };
    for (op, body) in Records(data) {
        match op % 9 {
            // A frame from the peer.
            0 => {
                let Ok(repr) = Repr::parse_bytes(body) else {
                    continue;
                };
                let before = mux.counters;
                let result = mux.handle(&repr);
                let after = mux.counters;
                let refused = after.unknown_stream > before.unknown_stream
                    || after.stream_errors > before.stream_errors
                    || after.credit_violations > before.credit_violations
                    || after.refused_streams > before.refused_streams;
                match repr {
                    Repr::Open { stream, .. } if result.is_ok() && !refused => {
                        assert!(stream % 2 == 1, "accepted an Open of a server id");
                        assert!(
                            streams.insert(stream, Model::new()).is_none(),
                            "stream {stream} opened twice"
                        );
                    }
                    Repr::Data { stream, bytes } if result.is_ok() => {
                        if let Some(m) = streams.get_mut(&stream).filter(|m| !m.gone) {
                            let room = m.granted - m.received;
                            if after.credit_violations > before.credit_violations {
                                assert!(
                                    bytes.len() as u64 > room,
                                    "reset for {} bytes within credit {room}",
                                    bytes.len()
                                );
                                m.gone = true;
                            } else if after.stream_errors > before.stream_errors {
                                assert!(m.peer_closed, "data refused on an open stream");
                                m.gone = true;
                            } else if !refused {
                                assert!(
                                    bytes.len() as u64 <= room,
                                    "took {} bytes with credit {room}",
                                    bytes.len()
                                );
                                assert!(!m.peer_closed, "took data after the peer's Close");
                                m.received += bytes.len() as u64;
                                m.unread.extend(bytes);
                            }
                        }
                    }
                    Repr::Window { stream, credit } if result.is_ok() => {
                        if let Some(m) = streams.get_mut(&stream).filter(|m| !m.gone) {
                            if after.stream_errors > before.stream_errors {
                                m.gone = true;
                            } else if !refused {
                                m.peer_granted += u64::from(credit);
                            }
                        }
                    }
                    Repr::Close { stream } if result.is_ok() && !refused => {
                        if let Some(m) = streams.get_mut(&stream) {
                            m.peer_closed = true;
                        }
                    }
                    Repr::Reset { stream } if result.is_ok() && !refused => {
                        if let Some(m) = streams.get_mut(&stream) {
                            m.gone = true;
                        }
                    }
                    _ => {}
                }
                if result.is_err() {
                    // The connection ends; nothing more to check.
                    return;
                }
            }
            // The application opens a stream.
            1 => {
                let proto = if body.first().is_some_and(|b| b % 2 == 1) {
                    Proto::Udp
                } else {
                    Proto::Tcp
                };
                if let Ok(id) = mux.open(proto) {
                    assert!(id % 2 == 0);
                    assert!(
                        streams.insert(id, Model::new()).is_none(),
                        "stream {id} opened twice"
                    );
                }
            }
            // The application writes.
            2 => {
                let Some(id) = pick(&streams, body) else { continue };
                let bytes = &body[1..];
                let capacity = mux.send_capacity(id);
                if let Ok(n) = mux.write(id, bytes) {
                    let capacity = capacity.expect("a stream that takes data has a capacity");
                    assert!(n <= capacity, "wrote {n} bytes with capacity {capacity}");
                    if let Some(m) = streams.get_mut(&id) {
                        m.unsent.extend(&bytes[..n]);
                    }
                }
            }
            // The application reads.
            3 => {
                let Some(id) = pick(&streams, body) else { continue };
                let want = usize::from(body.get(1).copied().unwrap_or(0)) * 300 + 1;
                let result = mux.read(id, &mut buf[..want]);
                let m = streams.get_mut(&id).expect("picked from the model");
                match result {
                    Ok(0) => {
                        assert!(
                            m.unread.is_empty() && m.peer_closed,
                            "end of stream {id} too early"
                        );
                    }
                    Ok(n) => {
                        let expected: Vec<u8> = m.unread.drain(..n.min(m.unread.len())).collect();
                        assert_eq!(
                            expected,
                            &buf[..n],
                            "stream {id} read other bytes than were received"
                        );
                    }
                    Err(StreamError::WouldBlock) => {
                        assert!(m.unread.is_empty(), "stream {id} has data the mux does not give");
                    }
                    Err(StreamError::Reset | StreamError::Closed) => {
                        assert!(
                            m.gone || (m.unread.is_empty() && (m.peer_closed || m.closed_sent)),
                            "stream {id} vanished with {} bytes unread",
                            m.unread.len()
                        );
                        m.unread.clear();
                        m.gone = true;
                    }
                }
            }
            // The application closes, or resets.
            4 => {
                if let Some(id) = pick(&streams, body) {
                    mux.close(id);
                }
            }
            5 => {
                if let Some(id) = pick(&streams, body) {
                    mux.reset(id);
                    if let Some(m) = streams.get_mut(&id) {
                        m.gone = true;
                        m.unread.clear();
                        m.unsent.clear();
                    }
                }
            }
            6 => {
                while let Some((id, _)) = mux.accept() {
                    assert!(streams.contains_key(&id), "accepted stream {id} never opened");
                }
            }
            7 => {
                let _ = mux.send_control(&Repr::Ping {
                    opaque: body.len() as u64,
                });
            }
            _ => drain(&mut mux, &mut streams),
        }
        for (&id, _) in streams.iter() {
            if let Some((send, recv)) = mux.buffered(id) {
                assert!(
                    send <= INITIAL_WINDOW as usize && recv <= INITIAL_WINDOW as usize,
                    "stream {id} buffers {send} to send and {recv} received"
                );
            }
        }
    }
    drain(&mut mux, &mut streams);
});
