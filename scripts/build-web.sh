#!/usr/bin/env bash
# Builds the browser SDK and the demo app, installing what it needs first (the wasm32 target,
# wasm-bindgen-cli at Cargo.lock's version, the npm packages):
#   zajel-wasm (release, wasm32) -> wasm-bindgen --target web -> bindings/js/pkg
#   @zajel/client (tsc)          -> bindings/js/dist
#   examples/web-chat (vite)     -> examples/web-chat/dist   (served by zajel-server --static-dir)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh

ensure_wasm_target
ensure_wasm_bindgen
ensure_node_modules

target_dir="${CARGO_TARGET_DIR:-target}"
echo "==> zajel-wasm (release, wasm32)"
cargo build -p zajel-wasm --release --target wasm32-unknown-unknown
echo "==> wasm-bindgen --target web -> bindings/js/pkg"
wasm-bindgen --target web --out-dir bindings/js/pkg \
  "$target_dir/wasm32-unknown-unknown/release/zajel_wasm.wasm"
echo "==> @zajel/client"
npm run --silent build -w @zajel/client
echo "==> examples/web-chat"
npm run --silent build -w example-web-chat
echo "built examples/web-chat/dist"
