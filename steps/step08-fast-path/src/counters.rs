//! What each worker counts: system calls, wake-ups, packets, and how
//! often each offload was used. The workers add to their own counters
//! (atomics, so `SIGUSR1` can read them from another thread without a
//! lock); [`Totals`] sums them for the status line that the lab and the
//! benchmark read.

#![forbid(unsafe_code)]

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// One counter, written by one worker.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// One worker's counters.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[doc = $doc])* pub $name: Counter,)*
        }

        /// The sum of every worker's counters at one moment.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Totals {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl Totals {
            pub fn add(&mut self, c: &Counters) {
                $(self.$name += c.$name.get();)*
            }
        }
    };
}

counters! {
    /// Returns from `poll(2)` with something to read.
    wakeups,
    /// `poll(2)` calls.
    polls,
    /// Read calls on the TUN device (those that found nothing included).
    tun_reads,
    /// Packets read from the TUN device (a super-packet counts as its
    /// segments).
    tun_packets_in,
    /// Reads that returned a super-packet (more than one segment).
    tun_super_in,
    /// Packets from the TUN device that could not be split.
    tun_bad_in,
    /// Write calls on the TUN device (with offloads, one per super-packet).
    tun_writes,
    /// Packets written to the TUN device (before coalescing).
    tun_packets_out,
    tun_write_errors,
    /// `recvmmsg(2)` or `recvmsg(2)` calls (those that found nothing
    /// included).
    udp_recv_calls,
    /// Datagrams received (a GRO message counts as its segments).
    udp_datagrams_in,
    /// Messages received that held more than one datagram (UDP GRO).
    udp_gro_in,
    /// `sendmmsg(2)` or `sendmsg(2)` calls.
    udp_send_calls,
    /// Datagrams sent (a GSO message counts as its segments).
    udp_datagrams_out,
    /// Messages sent with `UDP_SEGMENT`: one buffer, several datagrams.
    udp_gso_out,
    /// Sends that failed (the datagrams are lost).
    udp_send_errors,
    /// Times the kernel refused GSO and the worker went on without it.
    gso_fallbacks,
    /// Visits to the device (its lock): handshakes, timers, the ledger.
    device_visits,
    /// Drops counted by the workers (also in the device's drop counts).
    drops,
}

impl Totals {
    /// System calls made for packets: waits, reads, writes, receives and
    /// sends.
    pub fn syscalls(&self) -> u64 {
        self.polls + self.tun_reads + self.tun_writes + self.udp_recv_calls + self.udp_send_calls
    }

    /// Packets moved through the TUN device, both ways.
    pub fn packets(&self) -> u64 {
        self.tun_packets_in + self.tun_packets_out
    }
}

/// The status line of the counters: `name=value` pairs, which the lab
/// and the benchmark read by name ([`field`]): keep the names.
pub struct Line<'a>(pub &'a Totals);

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        let per_wakeup = if t.wakeups == 0 {
            0.0
        } else {
            t.packets() as f64 / t.wakeups as f64
        };
        write!(
            f,
            "fast path: wakeups={} syscalls={} polls={} tun-reads={} tun-writes={} udp-recvs={} udp-sends={} \
             tun-in={} super-in={} tun-out={} udp-in={} gro-in={} udp-out={} gso-out={} \
             gso-fallbacks={} send-errors={} device-visits={} packets-per-wakeup={:.1}",
            t.wakeups,
            t.syscalls(),
            t.polls,
            t.tun_reads,
            t.tun_writes,
            t.udp_recv_calls,
            t.udp_send_calls,
            t.tun_packets_in,
            t.tun_super_in,
            t.tun_packets_out,
            t.udp_datagrams_in,
            t.udp_gro_in,
            t.udp_datagrams_out,
            t.udp_gso_out,
            t.gso_fallbacks,
            t.udp_send_errors,
            t.device_visits,
            per_wakeup,
        )
    }
}

/// The value of `name=` in a status line, for the lab and the benchmark,
/// which read the step's log.
pub fn field(line: &str, name: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_reads_back_field_by_field() {
        let c = Counters::default();
        c.wakeups.add(10);
        c.polls.add(11);
        c.tun_reads.add(12);
        c.tun_packets_in.add(450);
        c.tun_super_in.add(10);
        c.tun_packets_out.add(50);
        c.udp_recv_calls.add(13);
        c.udp_send_calls.add(14);
        c.udp_gso_out.add(9);
        c.tun_writes.add(15);
        let mut t = Totals::default();
        t.add(&c);
        let line = Line(&t).to_string();
        assert_eq!(field(&line, "wakeups"), Some(10.0));
        assert_eq!(field(&line, "syscalls"), Some(65.0), "{line}");
        assert_eq!(field(&line, "tun-writes"), Some(15.0));
        assert_eq!(field(&line, "super-in"), Some(10.0));
        assert_eq!(field(&line, "gso-out"), Some(9.0));
        assert_eq!(field(&line, "gso"), None);
        assert_eq!(field(&line, "packets-per-wakeup"), Some(50.0), "{line}");
        assert_eq!(field(&line, "nothing"), None);
    }
}
