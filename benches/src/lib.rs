//! Zajel benchmarks as a library, so integration tests can run their core functions.
//!
//! * [`load`]: the end-to-end load generator (pairs of friends over real WebSockets).

pub mod load;
