//! The tunlab lab runner: builds lab hosts from network namespaces, runs the
//! real step binaries inside them, drives real traffic and checks what a
//! student should see.
//!
//! - [`netns`]: lab hosts (namespaces), cleanup on drop and of crashed runs.
//! - [`process`]: programs and tcpdump captures running in lab hosts.
//! - [`bench`]: `tunlab bench`, every tunnel measured against the bare
//!   link and the userspace WireGuard implementations.
//! - [`env`]: what a lab needs from the machine (root, tools, binaries).
//! - [`report`]: the PASS/FAIL lines of a lab.
//! - [`traffic`]: driving ping, nc, curl and iperf3 and reading what they say.
//! - [`exercise`]: the checker of the coding exercises.
//! - [`fuzz`]: `tunlab fuzz`, the coverage-guided fuzz targets run for a time.
//! - [`labs`]: the list of labs; [`lab01`], [`lab02`], [`lab03`], [`lab04`],
//!   [`lab05`], [`lab06`]: the labs.
//! - [`relay`]: a userspace bad link (loss, delay, reordering) for UDP and TCP.

#![forbid(unsafe_code)]

pub mod bench;
pub mod decode;
pub mod env;
pub mod exercise;
pub mod fuzz;
pub mod lab01;
pub mod lab02;
pub mod lab03;
pub mod lab04;
pub mod lab05;
pub mod lab06;
pub mod labs;
pub mod netns;
pub mod process;
pub mod relay;
pub mod report;
pub mod traffic;
