//! Benchmarks of the Admin API; run with `cargo bench -p bench` (see `bench/README.md`).
//!
//! What several benchmarks share: running a program bounded in time, and `wrk` with a
//! script that counts answers by status and reports latency percentiles.

pub mod wrk;
