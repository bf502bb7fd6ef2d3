//! The connection task's size, pinned.
//!
//! tokio allocates a task's future once, at spawn, at its largest size, and an open connection
//! holds it for its whole life: every byte here is ~10 MB of RSS at 10,000 idle connections
//! (issue 13's target is 8 KiB per idle connection, all state included). What made it grow
//! before: a future held across the live loop (it stays beside every other await point's
//! state instead of sharing space with it) and rare paths awaited inline (their state widens
//! the task even though they run once). Both are checked here: raise a bound only knowingly,
//! with the RSS measurement of `docs/benchmarks.md` ("Issue 13: idle memory per connection").
//!
//! Sizes are of debug builds (what tests build); release builds are a little smaller.

use super::socket::{Conn, run};
use std::future::Future;

fn future_size3<A, B, C, F: Future>(_: impl FnOnce(A, B, C) -> F) -> usize {
    size_of::<F>()
}

fn future_size2<A, B, F: Future>(_: impl FnOnce(A, B) -> F) -> usize {
    size_of::<F>()
}

/// Measured when the bounds were set (debug, rustc 1.95): 2,048 B, of which the live loop
/// 1,168 B; before session 6's changes 3,896 B and 2,840 B. The margin is for compiler
/// versions, not for new state.
const CONNECTION_FUTURE_MAX: usize = 2_200;
const LIVE_LOOP_MAX: usize = 1_300;

#[test]
fn connection_task_future_stays_small() {
    let whole = future_size3(run);
    let live = future_size2(Conn::live);
    eprintln!("connection future {whole} B, of which the live loop {live} B");
    assert!(
        whole <= CONNECTION_FUTURE_MAX,
        "the connection's future is {whole} B (at most {CONNECTION_FUTURE_MAX}): see this module's doc"
    );
    assert!(
        live <= LIVE_LOOP_MAX,
        "the live loop's future is {live} B (at most {LIVE_LOOP_MAX}): see this module's doc"
    );
}
