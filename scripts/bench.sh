#!/usr/bin/env bash
# The end-to-end benchmarks of docs/benchmarks.md in one command: Zajel over each store and the
# bare relay baseline in the same invocation (find-max sweeps, fixed-rate runs, idle
# connections). Appends every JSON line to $OUT (emptied first) and redraws $CHART from it.
#
#   scripts/bench.sh                 # the full set (~10-15 minutes on the 2-core machine)
#   QUICK=1 scripts/bench.sh         # a few seconds per run, small numbers: checks the pipeline
#
# Knobs (environment): OUT, CHART, PAIRS (500 = the issue's 1,000 users), DURATION, WARMUP (s
# per run or find-max step), IDLE (idle connections for the memory/connect-time runs), BIG_IDLE
# (0 = skip the 100,000-connection run), BIN (a prebuilt zajel-benches).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-docs/benchmarks/results.jsonl}
CHART=${CHART:-docs/benchmarks/chart.svg}
if [[ -n "${QUICK:-}" ]]; then
    PAIRS=${PAIRS:-20}; DURATION=${DURATION:-1}; WARMUP=${WARMUP:-0.5}; IDLE=${IDLE:-200}
    BIG_IDLE=${BIG_IDLE:-0}; MAX_STEPS=${MAX_STEPS:-2}; START_RATE=${START_RATE:-5}
    FIXED_RATE=${FIXED_RATE:-5}
else
    PAIRS=${PAIRS:-500}; DURATION=${DURATION:-5}; WARMUP=${WARMUP:-2}; IDLE=${IDLE:-10000}
    BIG_IDLE=${BIG_IDLE:-100000}; MAX_STEPS=${MAX_STEPS:-14}; START_RATE=${START_RATE:-2}
    FIXED_RATE=${FIXED_RATE:-5}   # 5/s per user x 1,000 users = the issue's 5,000 msgs/s
fi

# Every WebSocket is a descriptor in the client and, in-process, another in the server.
want=$(( 4 * (2 * PAIRS + (BIG_IDLE > IDLE ? BIG_IDLE : IDLE)) + 1024 ))
if (( $(ulimit -Hn) < want )); then ulimit -Hn "$want" 2>/dev/null || true; fi
ulimit -n "$(ulimit -Hn)"
echo "open files: $(ulimit -n)" >&2

if [[ -z "${BIN:-}" ]]; then
    cargo build --release -p zajel-benches >&2
    BIN=target/release/zajel-benches
fi
mkdir -p "$(dirname "$OUT")" "$(dirname "$CHART")"
: > "$OUT"

run() {
    echo "+ zajel-benches $*  (load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    "$BIN" "$@" | tee -a "$OUT"
}
common=(--pairs "$PAIRS" --duration "$DURATION" --warmup "$WARMUP")
sweep=(--find-max --rate "$START_RATE" --max-steps "$MAX_STEPS")

# Max sustained rate (p99 <= 50 ms, nothing lost): Zajel, then its relay in the same run.
run load --spawn embedded "${common[@]}" "${sweep[@]}"      # baseline: relay-redb
run load --spawn redis    "${common[@]}" "${sweep[@]}"      # baseline: relay-redis
# Latency at the issue's fixed rate, with the baseline at the same rate.
run load --spawn embedded "${common[@]}" --rate "$FIXED_RATE"
run load --spawn redis    "${common[@]}" --rate "$FIXED_RATE"
# Idle authenticated connections: memory per connection and connect time (no baseline in the
# same process, so freed memory of one run cannot hide the next run's growth).
run load --spawn embedded    --pairs 10 --rate 1 --duration 1 --warmup 0 --idle "$IDLE" --baseline none
run load --spawn relay-redb  --pairs 10 --rate 1 --duration 1 --warmup 0 --idle "$IDLE"
if (( BIG_IDLE > 0 )); then
    run load --spawn memory --pairs 10 --rate 1 --duration 1 --warmup 0 --idle "$BIG_IDLE" \
        --baseline none --setup-concurrency 64
fi

"$BIN" chart --in "$OUT" --out "$CHART"
echo "lines: $OUT, chart: $CHART" >&2
