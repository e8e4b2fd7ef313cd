//! Tests for the lab 06 exercise. `tunlab check 06` compiles them together
//! with your `credit.rs`; every test must pass.
//!
//! Besides the boundary cases, the last test runs a sender and a receiver
//! back to back over a slow application and checks the promise of the
//! window: the receiver never buffers more than one window, and every
//! byte arrives.

use crate::exercise::{CreditError, INITIAL_WINDOW, Receiver, Sender, THRESHOLD};

#[test]
fn a_sender_starts_with_one_window_and_sends_no_more() {
    let mut s = Sender::new();
    assert_eq!(s.credit, INITIAL_WINDOW);
    assert_eq!(s.send(10), 10, "10 bytes fit a window of 16");
    assert_eq!(s.credit, 6, "what was sent is taken from the credit");
    assert_eq!(s.send(100), 6, "only the credit left may go");
    assert_eq!(s.credit, 0);
    assert_eq!(s.send(1), 0, "no credit, nothing goes");
    assert_eq!(s.send(0), 0);
}

#[test]
fn a_window_frame_adds_credit() {
    let mut s = Sender::new();
    s.send(16);
    assert_eq!(s.on_window(4), Ok(()));
    assert_eq!(s.credit, 4);
    assert_eq!(s.send(5), 4);
}

#[test]
fn credit_past_u32_max_is_an_error_and_changes_nothing() {
    let mut s = Sender { credit: u32::MAX - 1 };
    assert_eq!(s.on_window(1), Ok(()));
    assert_eq!(s.credit, u32::MAX, "exactly u32::MAX is allowed");
    assert_eq!(
        s.on_window(1),
        Err(CreditError::Overflow),
        "a peer could wrap the credit around to a small number: use checked_add"
    );
    assert_eq!(s.credit, u32::MAX, "a refused Window frame changes nothing");
}

#[test]
fn a_receiver_takes_exactly_one_window() {
    let mut r = Receiver::new();
    assert_eq!(r.on_data(10), Ok(()));
    assert_eq!(r.on_data(6), Ok(()), "a frame that exactly fills the window fits");
    assert_eq!((r.window, r.buffered), (0, 16));
    assert_eq!(r.on_data(0), Ok(()), "an empty frame always fits");
}

#[test]
fn data_beyond_the_window_is_an_overrun_and_changes_nothing() {
    let mut r = Receiver::new();
    r.on_data(10).unwrap();
    let before = r.clone();
    assert_eq!(
        r.on_data(7),
        Err(CreditError::Overrun),
        "7 bytes do not fit the 6 left: the peer ignored our credit"
    );
    assert_eq!(r, before, "a refused frame is not buffered and takes no window");
}

#[test]
fn consuming_less_than_the_threshold_grants_nothing_yet() {
    let mut r = Receiver::new();
    r.on_data(16).unwrap();
    assert_eq!(r.consume(THRESHOLD - 1), (THRESHOLD - 1, None));
    assert_eq!(r.unreported, THRESHOLD - 1);
    assert_eq!(r.window, 0, "nothing granted back, the window stays shut");
    assert_eq!(r.consume(1), (1, Some(THRESHOLD)), "at the threshold, all of it is granted");
    assert_eq!(r.unreported, 0);
    assert_eq!(r.window, THRESHOLD, "what is granted back reopens the window");
    assert_eq!(r.buffered, 16 - THRESHOLD);
}

#[test]
fn consuming_more_than_is_buffered_gets_what_is_there() {
    let mut r = Receiver::new();
    r.on_data(3).unwrap();
    assert_eq!(r.consume(100), (3, None), "3 bytes are all there is; 3 < THRESHOLD");
    assert_eq!(r.buffered, 0);
    assert_eq!(r.consume(100), (0, None), "nothing buffered, nothing read, nothing granted");
    r.on_data(1).unwrap();
    assert_eq!(
        r.consume(1),
        (1, Some(4)),
        "the 3 consumed earlier count too: 3 + 1 reaches the threshold"
    );
}

#[test]
fn a_big_read_grants_everything_it_consumed() {
    let mut r = Receiver::new();
    r.on_data(16).unwrap();
    assert_eq!(r.consume(16), (16, Some(16)));
    assert_eq!((r.window, r.buffered, r.unreported), (INITIAL_WINDOW, 0, 0));
}

/// A sender with 1000 bytes to send, a receiver whose application reads
/// at most 3 bytes per round, and Window frames that take one round to
/// arrive. Every byte arrives, in order, and the receiver never holds
/// more than one window.
#[test]
fn back_to_back_over_a_slow_reader_nothing_is_lost_and_the_buffer_stays_bounded() {
    let mut s = Sender::new();
    let mut r = Receiver::new();
    let mut left = 1000usize;
    let mut delivered = 0u32;
    let mut in_flight: Option<u32> = None;
    for round in 0..10_000 {
        if let Some(credit) = in_flight.take() {
            s.on_window(credit).unwrap();
        }
        let n = s.send(left.min(7));
        left -= n;
        r.on_data(n as u32)
            .unwrap_or_else(|e| panic!("round {round}: the sender sent {n} bytes beyond its credit: {e:?}"));
        assert!(r.buffered <= INITIAL_WINDOW, "round {round}: {} bytes buffered", r.buffered);
        let (got, grant) = r.consume(3);
        delivered += got;
        in_flight = grant;
        if left == 0 && r.buffered == 0 {
            break;
        }
    }
    assert_eq!(delivered, 1000, "every byte arrives: no deadlock, no loss");
    // Nothing is made up or lost: the receiver's window is the sender's
    // credit plus the grant on its way, and window, buffer and unreported
    // bytes add up to one window.
    assert_eq!(r.window, s.credit + in_flight.unwrap_or(0));
    assert_eq!(r.window + r.buffered + r.unreported, INITIAL_WINDOW);
}
