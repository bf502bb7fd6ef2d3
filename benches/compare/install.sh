#!/usr/bin/env bash
# Installs what the comparison servers need, idempotently (benches/README.md, "Comparing with
# Socket.IO and Django Channels"): `npm ci` in socketio/ when node_modules is missing or older
# than package-lock.json; a venv in channels/.venv with `pip install -r requirements.txt` when
# it is missing or requirements.txt changed since. Skipped when up to date (~0.1 s); from
# scratch ~10 s (npm) + 25-50 s (pip) on the 2-core machine.
set -euo pipefail
cd "$(dirname "$0")"

if [[ ! -f socketio/node_modules/.package-lock.json \
      || socketio/package-lock.json -nt socketio/node_modules/.package-lock.json ]]; then
    echo "compare: npm ci in benches/compare/socketio" >&2
    (cd socketio && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

stamp=channels/.venv/installed-requirements.txt
if [[ ! -x channels/.venv/bin/uvicorn ]] || ! cmp -s channels/requirements.txt "$stamp"; then
    echo "compare: venv + pip install in benches/compare/channels/.venv" >&2
    python3 -m venv channels/.venv
    channels/.venv/bin/pip install --quiet --disable-pip-version-check -r channels/requirements.txt >&2
    cp channels/requirements.txt "$stamp"
fi
