#!/usr/bin/env bash
# Context switches and CPU seconds of the server while 10,000 users connect and authenticate
# (docs/benchmarks.md, "Issue 13: connection setup (session 6)"). Callgrind counts user-space
# instructions only; a thread hand-off per store read shows up here instead.
#
#   benches/profile/connect_switches.sh [BIN] [STORE] [N]     # defaults: target/release/zajel-benches embedded 10000
#
# `serve --store STORE` runs in its own process; the load generator registers N accounts, then
# connects them (`load --idle N --server-pid PID`). A poller of `/metrics` snapshots the
# server's per-thread `ctxt_switches` and `utime + stime` when the `zajel_connections` gauge
# leaves 0 and when it reaches N, so registration (argon2) is left out. Prints the load
# generator's `idle` numbers and the window's switches and server CPU seconds.
# PERF=FILE also records the server over exactly that window (`perf record -e cpu-clock
# --call-graph dwarf`, for `perf report -i FILE`; "Issue 13: connection setup (session 9)").
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/zajel-benches}; STORE=${2:-embedded}; N=${3:-10000}
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d); mkfifo "$dir/in"
"$BIN" serve --store "$STORE" --listen "127.0.0.1:$PORT" < "$dir/in" > "$dir/log" 2>&1 &
server=$!
exec 3> "$dir/in"   # the server stops when this closes
for _ in $(seq 300); do grep -q "listening on" "$dir/log" && break; sleep 0.1; done
python3 - "$PORT" "$server" "$N" "${PERF:-}" > "$dir/window" <<'PY' &
import glob, signal, subprocess, sys, time, urllib.request
port, pid, n, perf_out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
perf = None
def connections():
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return next((float(l.split()[1]) for l in text.splitlines() if l.startswith("zajel_connections ")), 0)
def snapshot():
    switches = ticks = 0
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            switches += sum(int(l.split()[1]) for l in open(task + "/status") if "ctxt_switches" in l)
            stat = open(task + "/stat").read().rsplit(")", 1)[1].split()
            ticks += int(stat[11]) + int(stat[12])
        except OSError:
            pass
    return switches, ticks
start, prev = None, snapshot()
while True:
    c = connections()
    if start is None and c > 0:
        start = prev
        if perf_out:
            perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "4000",
                                     "--call-graph", "dwarf,16384", "-p", pid, "-o", perf_out],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if start is None:
        prev = snapshot()
    elif c >= n:
        end = snapshot()
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        print(f"switches {end[0] - start[0]} server_cpu_s {(end[1] - start[1]) / 100:.2f}")
        break
    time.sleep(0.01)
PY
poller=$!
"$BIN" load --url "http://127.0.0.1:$PORT" --server-pid "$server" --baseline none --pairs 1 \
    --rate 1 --duration 1 --warmup 0 --idle "$N" > "$dir/out"
wait "$poller"
python3 -c "
import json, sys
for line in open(sys.argv[1]):
    idle = json.loads(line).get('idle')
    if idle:
        print(sys.argv[2], 'connect_s', idle['connect_seconds'], 'cpu_s', idle.get('cpu_seconds'), open(sys.argv[3]).read().strip())
" "$dir/out" "$STORE" "$dir/window"
exec 3>&-
wait "$server"
rm -rf "$dir"
