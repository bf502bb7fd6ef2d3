#!/usr/bin/env bash
# Runs every check and test of the repository. Installs what is missing first (redis-server,
# the wasm32 target, rustfmt/clippy, cargo-nextest, chromium, wasm-bindgen-cli, the npm
# packages, kotlinc from npm, JNA/coroutines jars, a Python venv with pytest). Tests start
# their own redis-server and zajel-server on free loopback ports;
# nothing needs to be running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh

ensure_rust_components
ensure_redis
ensure_wasm_target
ensure_nextest
ensure_chromium
ensure_oidc_provider
ensure_cargo_hack
ensure_cargo_deny

# Every step line carries the seconds since the start, so a slow CI run shows where the time went.
step() { echo; echo "==> [${SECONDS} s] $*"; }
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A from-scratch build gains nothing from incremental state: it only costs time and ~2 GB of disk.
if [[ "${CI:-}" == "true" ]]; then export CARGO_INCREMENTAL=0; fi

step "rustfmt"
cargo fmt --all --check

step "clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "feature combinations: zajel-core, zajel-server, zajel-client: each feature alone and none (cargo hack)"
# Each feature alone and --no-default-features catch a cfg that only compiles next to another
# feature; the defaults and the union are what clippy above just checked (excluded here).
hack_log="$(mktemp)"
cargo hack check -p zajel-core -p zajel-server -p zajel-client --each-feature --exclude-all-features \
    --exclude-features default 2>&1 | tee "$hack_log"
if grep -q '^warning' "$hack_log"; then echo "feature combinations: warnings above"; exit 1; fi
rm -f "$hack_log"

step "embedder tree: zajel-server with default-features = false, features = [\"embedded\", \"memory\"]"
embed_tree="$(cargo tree -p example-embed-axum -e normal --prefix none)"
# rcgen and proptest: test-only crates (a certificate maker, a test-case generator) must stay
# dev-dependencies; one shipped in [dependencies] once (rcgen, session 8).
if grep -E '^(redis|clap|toml|tracing-subscriber|rcgen|proptest) v' <<<"$embed_tree"; then
  echo "examples/embed-axum (an embedder's features) pulls the crates above"; exit 1
fi
echo "$(sort -u <<<"$embed_tree" | wc -l) crates, none of redis, clap, toml, tracing-subscriber, rcgen, proptest"
# A client without the `tls` feature (plain http/ws only) has no TLS stack.
if cargo tree -p zajel-client --no-default-features -e normal --prefix none | grep -E '^(rustls|tokio-rustls|webpki-roots|ring) v'; then
  echo "zajel-client without default features pulls the TLS crates above"; exit 1
fi

step "cargo doc (workspace, no deps, warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace

step "cargo deny: licenses, bans, sources, RustSec advisories (vendored snapshot when offline)"
bash scripts/deny.sh

step "wasm32: zajel-core without default features; clippy on zajel-wasm (and zajel-client under it)"
cargo build -p zajel-core --no-default-features --target wasm32-unknown-unknown
cargo clippy -p zajel-wasm --target wasm32-unknown-unknown -- -D warnings

step "tests (nextest: unit, conformance against memory/embedded/Redis, integration)"
cargo nextest run --workspace --no-fail-fast

step "fuzz: cargo-fuzz (libFuzzer) on the frame decoder and the HTTP bodies, 15 s each"
fuzz_start=$SECONDS
ZAJEL_FUZZ_SECONDS=15 bash scripts/fuzz.sh
echo "fuzz step: $((SECONDS - fuzz_start)) s"

step "benchmark pipeline smoke (seconds, not a measurement): Zajel + relay baseline, --find-max, --idle, chart"
bench_start=$SECONDS
# nextest built target/debug/zajel-benches for the benches' integration tests: reuse it.
[[ -x target/debug/zajel-benches ]] || cargo build -p zajel-benches
QUICK=1 BIN=target/debug/zajel-benches OUT=target/bench-smoke/results.jsonl \
    CHART=target/bench-smoke/chart.svg bash scripts/bench.sh > /dev/null
echo "bench smoke: $((SECONDS - bench_start)) s"

step "doc tests"
cargo test --workspace --doc

step "zajel-wasm in headless Chromium (wasm-bindgen-test): IndexedDB storage, outbox across a restart"
wasm_test_start=$SECONDS
ensure_wasm_bindgen
ensure_chromedriver
CHROMEDRIVER=/usr/bin/chromedriver CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    cargo test -p zajel-wasm --lib --target wasm32-unknown-unknown
echo "wasm browser tests: $((SECONDS - wasm_test_start)) s"

step "web: zajel-wasm -> @zajel/client -> examples/web-chat (type-checked), then the web tests"
web_start=$SECONDS
bash scripts/build-web.sh
# The server binary the web tests start: nextest's build above made it from this checkout
# (`cargo build -p zajel-server` would resolve another feature set and recompile ~25 crates).
[[ -x target/debug/zajel-server ]] || cargo build -p zajel-server
npm test --silent -w @zajel/client              # hook unit tests (Vitest, happy-dom)
npm run --silent test:node -w @zajel/client     # the package under Node 20, real server
(cd examples/web-chat && npx playwright test)   # browser tests: the demo at two sizes, the packed
                                                # tarball in a fresh Vite app through CORS
echo "web step: $((SECONDS - web_start)) s"

step "uniffi: Kotlin/Swift/Python bindings generated; the Python (pytest) and Kotlin tests against the real server"
uniffi_start=$SECONDS
ZAJEL_REUSE_TEST_BUILD=1 bash scripts/test-uniffi.sh
echo "uniffi step: $((SECONDS - uniffi_start)) s"

step "publish dry-run: zajel-core, zajel-server, zajel-client packaged, then each checked from its .crate alone"
# scripts/publish-dry-run.sh says why it packages with --no-verify and checks instead (docs/ci.md).
package_start=$SECONDS
bash scripts/publish-dry-run.sh
echo "publish dry-run: $((SECONDS - package_start)) s"

echo
echo "All checks passed in ${SECONDS} s."
