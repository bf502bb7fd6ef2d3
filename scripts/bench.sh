#!/usr/bin/env bash
# The end-to-end benchmarks of docs/benchmarks.md in one command: Zajel over each store and the
# bare relay baseline in the same invocation (find-max sweeps, fixed-rate runs, idle
# connections). Appends every JSON line to $OUT (emptied first) and redraws $CHART from it.
#
#   scripts/bench.sh                 # the full set (~10-15 minutes on the 2-core machine)
#   QUICK=1 scripts/bench.sh         # a few seconds per run, small numbers: checks the pipeline
#   PARTS=compare scripts/bench.sh   # Socket.IO and Django Channels on the same workload (~8 min;
#                                    # installs their npm/pip packages first, once)
#
# Knobs (environment): OUT, CHART, PAIRS (500 = the issue's 1,000 users), DURATION, WARMUP (s
# per run or find-max step), IDLE (idle connections for the memory/connect-time runs), BIG_IDLE
# (0 = skip the 100,000-connection run), BIN (a prebuilt zajel-benches), PARTS (a subset of
# "sweep fixed cross cpu idle big compare"), APPEND=1 (add to $OUT instead of starting it
# afresh), COMPARE_START_RATE (per-user rate the comparison servers' find-max starts at).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-docs/benchmarks/results.jsonl}
CHART=${CHART:-docs/benchmarks/chart.svg}
if [[ -n "${QUICK:-}" ]]; then
    PAIRS=${PAIRS:-20}; DURATION=${DURATION:-1}; WARMUP=${WARMUP:-0.5}; IDLE=${IDLE:-200}
    BIG_IDLE=${BIG_IDLE:-0}; MAX_STEPS=${MAX_STEPS:-2}; START_RATE=${START_RATE:-5}
    FIXED_RATE=${FIXED_RATE:-5}; COMPARE_START_RATE=${COMPARE_START_RATE:-2}
else
    PAIRS=${PAIRS:-500}; DURATION=${DURATION:-5}; WARMUP=${WARMUP:-2}; IDLE=${IDLE:-10000}
    BIG_IDLE=${BIG_IDLE:-100000}; MAX_STEPS=${MAX_STEPS:-14}; START_RATE=${START_RATE:-2}
    FIXED_RATE=${FIXED_RATE:-5}   # 5/s per user x 1,000 users = the issue's 5,000 msgs/s
    COMPARE_START_RATE=${COMPARE_START_RATE:-1}   # Channels may not hold 2,000 msgs/s
fi

# Every WebSocket is a descriptor in the client and another in the server. The idle runs serve
# from a process of their own, so each process holds one side. Raising the hard limit needs
# CAP_SYS_RESOURCE; where it is missing (a container), the big run is capped to what fits.
want=$(( 2 * PAIRS + (BIG_IDLE > IDLE ? BIG_IDLE : IDLE) + 2048 ))
if (( $(ulimit -Hn) < want )); then ulimit -Hn "$want" 2>/dev/null || true; fi
ulimit -n "$(ulimit -Hn)"
if (( BIG_IDLE > $(ulimit -n) - 2048 )); then
    echo "open-file hard limit $(ulimit -Hn) cannot be raised here: --idle $BIG_IDLE capped" >&2
    BIG_IDLE=$(( $(ulimit -n) - 2048 ))
fi
echo "open files: $(ulimit -n)" >&2

if [[ -z "${BIN:-}" ]]; then
    cargo build --release -p zajel-benches >&2
    BIN=target/release/zajel-benches
fi
mkdir -p "$(dirname "$OUT")" "$(dirname "$CHART")"
[[ -n "${APPEND:-}" ]] || : > "$OUT"
# The quick form leaves out the cross-node runs (~10 s; benches/tests/load_smoke.rs checks
# that mode in ~3 s).
if [[ -n "${QUICK:-}" ]]; then PARTS=${PARTS:-sweep fixed cpu idle big}; fi
PARTS=${PARTS:-sweep fixed cross cpu idle big compare}
part() { [[ " $PARTS " == *" $1 "* ]]; }

run() {
    echo "+ zajel-benches $*  (load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    "$BIN" "$@" | tee -a "$OUT"
}
# Serves Zajel (`serve`) or the relay (`relay`) over STORE in a process of its own, runs
# `load --url` against it (server RSS from /proc/PID: nothing of the client is counted), stops it.
external() { # KIND STORE LOAD-ARGS...
    local kind=$1 store=$2; shift 2
    local dir port pid
    dir=$(mktemp -d); port=$(( 20000 + RANDOM % 20000 ))
    mkfifo "$dir/stdin"
    "$BIN" "$kind" --store "$store" --listen "127.0.0.1:$port" < "$dir/stdin" > "$dir/log" 2>&1 &
    pid=$!
    exec 3> "$dir/stdin"   # the server stops when this closes
    for _ in $(seq 300); do grep -q "listening on" "$dir/log" && break; sleep 0.1; done
    run load --url "http://127.0.0.1:$port" --server-pid "$pid" --baseline none \
        --label "$kind:$store" "$@"
    exec 3>&-
    wait "$pid"
    rm -rf "$dir"
}
common=(--pairs "$PAIRS" --duration "$DURATION" --warmup "$WARMUP")
sweep=(--find-max --rate "$START_RATE" --max-steps "$MAX_STEPS")

# Max sustained rate (p99 <= 50 ms, nothing lost): Zajel, then its relay in the same run.
if part sweep; then
    run load --spawn embedded "${common[@]}" "${sweep[@]}"      # baseline: relay-redb
    run load --spawn redis    "${common[@]}" "${sweep[@]}"      # baseline: relay-redis
fi
# Latency at the issue's fixed rate, with the baseline at the same rate.
if part fixed; then
    run load --spawn embedded "${common[@]}" --rate "$FIXED_RATE"
    run load --spawn redis    "${common[@]}" --rate "$FIXED_RATE"
fi
# Cross-node cost: every pair split over two nodes on one Redis, against the same on one node
# (the line's baseline; ratio_to_baseline = cross-node max / local max).
if part cross; then
    run load --spawn redis-cross-node "${common[@]}" "${sweep[@]}"
    run load --spawn redis-cross-node "${common[@]}" --rate "$FIXED_RATE"
fi
# CPU per message at the fixed rate: each server in a process of its own, its CPU time (and its
# redis-server's) over the measured window from /proc, divided by the messages (the `cpu`
# object of the line). Barely sensitive to what else runs, unlike the latencies above.
if part cpu; then
    # The quick form checks the pipeline with one Zajel and one relay run.
    if [[ -n "${QUICK:-}" ]]; then serves=(redis) relays=(memory)
    else serves=(embedded redis memory) relays=(redb redis memory); fi
    for s in "${serves[@]}"; do external serve "$s" "${common[@]}" --rate "$FIXED_RATE"; done
    for s in "${relays[@]}"; do external relay "$s" "${common[@]}" --rate "$FIXED_RATE"; done
fi
# Idle authenticated connections: server RSS per connection and connect time, each server in
# a fresh process of its own.
idle_args=(--pairs 10 --rate 1 --duration 1 --warmup 0)
if part idle; then
    external serve embedded "${idle_args[@]}" --idle "$IDLE"
    external serve redis    "${idle_args[@]}" --idle "$IDLE"
    external relay redb     "${idle_args[@]}" --idle "$IDLE"
fi
if part big && (( BIG_IDLE > 0 )); then
    external serve memory "${idle_args[@]}" --idle "$BIG_IDLE" --setup-concurrency 64
fi

# The same workload on Socket.IO (2 node cluster workers, Redis adapter) and Django Channels
# (uvicorn, 2 workers, channels_redis), each in processes of their own with their own
# redis-server (benches/compare/): max sustained rate, latency at the fixed rate, and memory
# per idle connection (the sum over the server's processes) with the connect time.
if part compare; then
    benches/compare/install.sh
    for s in socketio channels; do
        run load --spawn "$s" "${common[@]}" --find-max --rate "$COMPARE_START_RATE" \
            --max-steps "$MAX_STEPS"
        run load --spawn "$s" "${common[@]}" --rate "$FIXED_RATE"
        run load --spawn "$s" "${idle_args[@]}" --idle "$IDLE"
    done
fi

if part sweep || part compare || [[ -n "${APPEND:-}" ]]; then
    "$BIN" chart --in "$OUT" --out "$CHART"
fi
echo "lines: $OUT, chart: $CHART" >&2
