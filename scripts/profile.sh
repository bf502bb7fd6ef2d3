#!/usr/bin/env bash
# Instruction-count profile of one server's per-message path (valgrind --tool=callgrind):
# the server runs alone under callgrind (`zajel-benches serve` = Zajel with the load
# generator's configuration, or `zajel-benches relay`), the load generator drives it from
# another process. Two runs that differ only in how many messages they send are subtracted, so
# startup, registration and connection setup cancel out and what is left is per message.
#
#   scripts/profile.sh embedded          # Zajel over redb
#   scripts/profile.sh redis             # Zajel over Redis (redis-server runs natively)
#   scripts/profile.sh relay-redb        # the bare relay, for comparison
#   MODE=connect scripts/profile.sh embedded   # per connection instead of per message
#   scripts/profile.sh frame-decode      # the client frame decoder alone, per `send` frame
#
# MODE=connect: both runs register CONNECT_LONG idle accounts and open CONNECT_SHORT or
# CONNECT_LONG authenticated idle connections (then a 1 s trickle of messages from one pair),
# and the server is stopped only once every connection has closed (its `/metrics` gauge), so
# the difference is the cost of one connection: upgrade, `auth`, registration in the hub and
# presence, `auth_ok`, and its close; registration over HTTP cancels out.
#
# Writes $DIR/<target>.{short,long}.callgrind and prints the per-message (per-connection,
# per-frame) table (benches/profile/callgrind_diff.py). Instruction counts do not depend on
# how busy the machine is, so this can run any time. Knobs: PAIRS, RATE (per user), SHORT,
# LONG (s), CONNECT_SHORT, CONNECT_LONG, FRAMES_SHORT, FRAMES_LONG, DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: [MODE=connect] scripts/profile.sh embedded|redis|memory|relay-redb|relay-redis|relay-memory|frame-decode}
PAIRS=${PAIRS:-20}; RATE=${RATE:-10}; SHORT=${SHORT:-4}; LONG=${LONG:-12}
CONNECT_SHORT=${CONNECT_SHORT:-200}; CONNECT_LONG=${CONNECT_LONG:-1000}
FRAMES_SHORT=${FRAMES_SHORT:-1000}; FRAMES_LONG=${FRAMES_LONG:-11000}
MODE=${MODE:-message}; DIR=${DIR:-target/profile}; PORT=${PORT:-18790}
mkdir -p "$DIR"
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
[[ -n "${BIN:-}" ]] || { cargo build --release -p zajel-benches >&2; BIN=target/release/zajel-benches; }

if [[ "$target" == frame-decode ]]; then
    for run in short long; do
        frames=$FRAMES_SHORT; [[ $run == long ]] && frames=$FRAMES_LONG
        valgrind --tool=callgrind --callgrind-out-file="$DIR/$target.$run.callgrind" \
            "$BIN" frame-decode --frames "$frames" > "$DIR/$target.$run.json" 2>/dev/null
    done
    exec python3 benches/profile/callgrind_diff.py \
        "$DIR/$target.short.callgrind" "$DIR/$target.short.json" \
        "$DIR/$target.long.callgrind" "$DIR/$target.long.json"
fi

case "$target" in
    relay-*) server=(relay --store "${target#relay-}") ;;
    *) server=(serve --store "$target") ;;
esac

# Open WebSocket connections of the server under test (0 when it has no /metrics: the relay).
open_connections() {
    curl -s "http://127.0.0.1:$PORT/metrics" 2>/dev/null \
        | awk '$1 == "zajel_connections" { print $2; found = 1 } END { if (!found) print 0 }'
}

profile_once() { # $1 = name, $2 = seconds of load
    local out="$DIR/$target.$1.callgrind" fifo="$DIR/stdin.$$" log="$DIR/$target.$1.server.log"
    rm -f "$fifo"; mkfifo "$fifo"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" "${server[@]}" \
        --listen "127.0.0.1:$PORT" < "$fifo" > "$log" 2>&1 &
    local vg=$!
    exec 3> "$fifo"   # the server stops when this closes
    for _ in $(seq 600); do grep -q "listening on" "$log" && break; sleep 0.2; done
    grep -q "listening on" "$log" || { echo "server did not start: $(cat "$log")" >&2; exit 1; }
    if [[ "$MODE" == connect ]]; then
        "$BIN" load --url "http://127.0.0.1:$PORT" --baseline none --pairs 1 --rate 1 \
            --warmup 0 --duration 1 --grace 30 --idle "$2" --idle-accounts "$CONNECT_LONG" \
            > "$DIR/$target.$1.json"
        # Closing connections is part of their cost: wait until the server has seen them all.
        for _ in $(seq 600); do [[ "$(open_connections)" == 0 ]] && break; sleep 0.5; done
    else
        "$BIN" load --url "http://127.0.0.1:$PORT" --baseline none --pairs "$PAIRS" --rate "$RATE" \
            --warmup 0 --duration "$2" --grace 30 > "$DIR/$target.$1.json"
    fi
    exec 3>&-
    wait "$vg"
    rm -f "$fifo"
    echo "$1: $(grep -o '"sent":[0-9]*' "$DIR/$target.$1.json"), $(grep -o '"lost":[0-9]*' "$DIR/$target.$1.json")" >&2
}

if [[ "$MODE" == connect ]]; then
    profile_once short "$CONNECT_SHORT"
    profile_once long "$CONNECT_LONG"
    export UNIT=connections
else
    profile_once short "$SHORT"
    profile_once long "$LONG"
fi
python3 benches/profile/callgrind_diff.py \
    "$DIR/$target.short.callgrind" "$DIR/$target.short.json" \
    "$DIR/$target.long.callgrind" "$DIR/$target.long.json"
