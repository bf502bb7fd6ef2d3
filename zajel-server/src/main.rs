//! The standalone `zajel-server` binary: see `docs/server.md`.
fn main() {}
