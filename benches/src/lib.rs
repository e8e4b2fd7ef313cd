//! The micro-benchmarks of the steps, in one crate: each `stepNN_*.rs` in
//! this folder measures the functions a step runs once per packet
//! (checksums, encapsulation and decapsulation, the AEAD, the replay
//! window, NAT rewrites) with criterion. Run them with
//!
//! ```text
//! cargo bench -p tunlab-benches --features bench                          # all
//! cargo bench -p tunlab-benches --features bench --bench step04_data_path # one
//! ```
//!
//! They live here rather than in each step so that `cargo test` never
//! builds criterion: the feature that brings it in is off unless asked
//! for. This library is empty.

#![forbid(unsafe_code)]
