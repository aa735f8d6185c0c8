//! Benchmarks of the Admin API; run with `cargo bench -p bench` (see `bench/README.md`).
