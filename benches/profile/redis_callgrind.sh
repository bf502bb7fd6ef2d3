#!/usr/bin/env bash
# Redis's own instructions per appended message, counted by running redis-server under
# valgrind --tool=callgrind (deterministic, so it can run on a busy machine):
# `zajel-benches store-append --backend redis` twice (SHORT and LONG messages), the difference
# divided by the difference in messages. BATCH messages per append call, CONCURRENCY callers
# (several callers with BATCH=1 is the server's shape: the store's coalescing merges them).
#
#   benches/profile/redis_callgrind.sh [BIN] [BATCH] [CONCURRENCY]
set -euo pipefail
BIN=${1:-target/release/zajel-benches}; BATCH=${2:-1}; CONC=${3:-50}
SHORT=${SHORT:-1000}; LONG=${LONG:-3000}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
# The harness SIGKILLs its redis-server; valgrind runs as the wrapper's child so it survives
# that, and is shut down cleanly below (callgrind writes its counts on exit).
cat > "$work/wrap.sh" <<WRAP
#!/usr/bin/env bash
echo "\$2" > "$work/port"
valgrind --tool=callgrind --callgrind-out-file="$work/cg.\$2" redis-server "\$@" </dev/null >/dev/null 2>&1 &
wait
WRAP
chmod +x "$work/wrap.sh"
count() { # $1 = messages -> redis-server instructions for the whole run
    REDIS_SERVER="$work/wrap.sh" "$BIN" store-append --backend redis --messages "$1" \
        --batch "$BATCH" --concurrency "$CONC" > "$work/out.json"
    local port; port=$(cat "$work/port")
    redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
    for _ in $(seq 200); do
        [[ -s "$work/cg.$port" ]] && ! pgrep -f "cg.$port" >/dev/null && break; sleep 0.2
    done
    awk '/^(summary|totals):/ { print $2; exit }' "$work/cg.$port"
}
a=$(count "$SHORT"); b=$(count "$LONG")
echo "redis-server instructions per message (batch $BATCH, $CONC callers): $(( (b - a) / (LONG - SHORT) ))"
