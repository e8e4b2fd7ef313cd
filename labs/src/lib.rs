//! The tunlab lab runner: builds lab hosts from network namespaces, runs the
//! real step binaries inside them, drives real traffic and checks what a
//! student should see.
//!
//! One harness, shared by every lab:
//!
//! - [`topology`]: the labs' topologies as data (hosts, links, addresses,
//!   routes) and the one function that builds them; every address a lab
//!   uses is named there.
//! - [`netns`]: lab hosts (namespaces), cleanup on drop and of crashed runs.
//! - [`process`]: programs and tcpdump captures running in lab hosts, and
//!   waiting for what they do.
//! - [`traffic`]: driving ping, nc, curl and iperf3 and reading what they say.
//! - [`captures`]: the IP packets of a capture and their checksums.
//! - [`completions`]: `tunlab completions`, shell completions and man
//!   pages for every binary.
//! - [`decrypt`]: `tunlab decode --keylog`, recorded sessions decrypted
//!   with one end's key log.
//! - [`keys`]: key pairs for the encrypted steps.
//! - [`steplog`]: what the steps log (answers, handshakes, status reports).
//! - [`hoststate`]: a host's routes, rules, nftables and sysctls, read
//!   before and after, and compared.
//! - [`report`]: the PASS/FAIL lines of a lab.
//! - [`labs`]: the table of labs: each one's run, shell and output folder;
//!   [`lab01`] ... [`lab06`]: the labs themselves, their checks and
//!   explanations.
//! - [`env`]: the checkout, building the steps as the user, getting root
//!   through sudo, handing files back; [`doctor`]: what the labs need from
//!   the machine.
//! - [`exercise`]: the checker of the coding exercises; [`coach`]: the
//!   loop around it (`tunlab hint`, `check`, `watch`); [`track`]: the
//!   build track (`tunlab track`), a step's core written by the learner
//!   and checked in a copy of the step crate.
//! - [`grade`]: `--format json|tap`, the checks for graders' scripts.
//! - [`book_output`]: the book's quoted program output, checked against
//!   the real thing.
//! - [`bench`]: `tunlab bench`, every tunnel measured against the bare
//!   link and the userspace WireGuard implementations.
//! - [`fuzz`]: `tunlab fuzz`, the coverage-guided fuzz targets run for a time.
//! - [`relay`]: a userspace bad link (loss, delay, reordering, corruption)
//!   for UDP and TCP.
//! - [`soak`]: `tunlab soak`, step 05's VPN run for a long time through a
//!   bad link, with restarts, roaming and rekeys, watched for leaks and
//!   stalls.
//! - [`flood`]: a handshake flood from forged addresses (lab 04).

#![forbid(unsafe_code)]

pub mod bench;
pub mod book_output;
pub mod captures;
pub mod coach;
pub mod completions;
pub mod decode;
pub mod decrypt;
pub mod doctor;
pub mod env;
pub mod exercise;
pub mod flood;
pub mod fuzz;
pub mod grade;
pub mod hoststate;
pub mod keys;
pub mod lab01;
pub mod lab02;
pub mod lab03;
pub mod lab04;
pub mod lab05;
pub mod lab06;
pub mod lab07;
pub mod lab08;
pub mod labs;
pub mod netns;
pub mod process;
pub mod relay;
pub mod report;
pub mod soak;
pub mod steplog;
pub mod topology;
pub mod track;
pub mod traffic;
pub mod wgpeers;
