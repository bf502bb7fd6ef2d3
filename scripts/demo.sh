#!/usr/bin/env bash
# Brings up the demo: the standalone zajel-server on the embedded store (data in ./zajel-data),
# listening on http://127.0.0.1:8080. Stop it with Ctrl-C (graceful shutdown).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh

args=(--listen "${ZAJEL_LISTEN:-127.0.0.1:8080}" --data-dir "${ZAJEL_DATA_DIR:-./zajel-data}")
if [ -d web/dist ]; then args+=(--static-dir web/dist); fi
exec cargo run --release -p zajel-server -- "${args[@]}"
