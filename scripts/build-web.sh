#!/usr/bin/env bash
# Builds the browser SDK and the demo app, installing what it needs first (the wasm32 target,
# wasm-bindgen-cli at Cargo.lock's version, the npm packages):
#   zajel-wasm (profile wasm-release: opt-level z, LTO, wasm32) -> wasm-bindgen --target web
#     (without the name section)                                  -> bindings/js/pkg
#   @zajel/client (tsc)          -> bindings/js/dist
#   examples/web-chat (vite)     -> examples/web-chat/dist   (served by zajel-server --static-dir)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh

ensure_wasm_target
ensure_wasm_bindgen
ensure_node_modules

target_dir="${CARGO_TARGET_DIR:-target}"
echo "==> zajel-wasm (profile wasm-release, wasm32)"
cargo build -p zajel-wasm --profile wasm-release --target wasm32-unknown-unknown
echo "==> wasm-bindgen --target web -> bindings/js/pkg"
# No name section (function names for stack traces): a third of the file. wasm-opt is not run:
# Debian's binaryen (108) rewrites the externref table of this wasm-bindgen and the module
# then fails at startup (docs/web.md, bundle size).
wasm-bindgen --target web --remove-name-section --remove-producers-section \
  --out-dir bindings/js/pkg "$target_dir/wasm32-unknown-unknown/wasm-release/zajel_wasm.wasm"
wasm=bindings/js/pkg/zajel_wasm_bg.wasm
echo "wasm: $(wc -c < "$wasm") bytes, $(gzip -9 < "$wasm" | wc -c) gzipped"
echo "==> @zajel/client"
npm run --silent build -w @zajel/client
echo "==> examples/web-chat"
npm run --silent build -w example-web-chat
echo "built examples/web-chat/dist"
