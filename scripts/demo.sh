#!/usr/bin/env bash
# Brings up the demo: builds the React chat app (examples/web-chat, on the WebAssembly client;
# scripts/build-web.sh), then runs the standalone zajel-server on the embedded store (data in
# ./zajel-data) serving the app and the API on http://127.0.0.1:8080. Open it in two browsers
# (or a private window) to chat. Stop it with Ctrl-C (graceful shutdown).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh

bash scripts/build-web.sh

args=(--listen "${ZAJEL_LISTEN:-127.0.0.1:8080}" --data-dir "${ZAJEL_DATA_DIR:-./zajel-data}"
  --static-dir examples/web-chat/dist)
exec cargo run --release -p zajel-server -- "${args[@]}"
