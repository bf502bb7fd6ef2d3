#!/usr/bin/env bash
# Runs every check and test of the repository. Installs what is missing first (redis-server,
# the wasm32 target, rustfmt/clippy, cargo-nextest). Tests start their own redis-server on free
# loopback ports; nothing needs to be running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh

ensure_rust_components
ensure_redis
ensure_wasm_target
ensure_nextest

step() { echo; echo "==> $*"; }
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step "rustfmt"
cargo fmt --all --check

step "clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "wasm32 builds (zajel-core without default features, zajel-client)"
cargo build -p zajel-core --no-default-features --target wasm32-unknown-unknown
cargo build -p zajel-client --target wasm32-unknown-unknown

step "tests (nextest: unit, conformance against memory/embedded/Redis, integration)"
cargo nextest run --workspace --no-fail-fast

step "doc tests"
cargo test --workspace --doc

echo
echo "All checks passed."
