//! Zajel benchmarks as a library, so integration tests can run their core functions.
//!
//! * [`load`]: the end-to-end load generator (pairs of friends over real WebSockets).
//! * [`relay`]: the bare relay, the baseline Zajel is compared with in the same run.
//! * [`compare`]: one invocation = target + baseline, optionally a `--find-max` rate sweep.
//! * [`cpu`]: the server's CPU time per message, from `/proc` (with `load --url --server-pid`).
//! * [`chart`]: p50/p99 against offered rate, drawn as SVG from the JSON lines.
//! * [`frame_decode`]: the client frame decoder alone (for its instruction profile).
//! * [`others`]: Socket.IO and Django Channels doing the same workload (`load --spawn socketio|channels`).
//! * [`net`]: client sockets from several loopback source addresses (for `--idle 50000`).

pub mod chart;
pub mod compare;
pub mod cpu;
pub mod frame_decode;
pub mod load;
pub mod net;
pub mod others;
pub mod relay;
