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
#
# Writes $DIR/<target>.{short,long}.callgrind and prints the per-message table
# (benches/profile/callgrind_diff.py). Instruction counts do not depend on how busy the
# machine is, so this can run any time. Knobs: PAIRS, RATE (per user), SHORT, LONG (s), DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/profile.sh embedded|redis|memory|relay-redb|relay-redis|relay-memory}
PAIRS=${PAIRS:-20}; RATE=${RATE:-10}; SHORT=${SHORT:-4}; LONG=${LONG:-12}
DIR=${DIR:-target/profile}; PORT=${PORT:-18790}
mkdir -p "$DIR"
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
[[ -n "${BIN:-}" ]] || { cargo build --release -p zajel-benches >&2; BIN=target/release/zajel-benches; }

case "$target" in
    relay-*) server=(relay --store "${target#relay-}") ;;
    *) server=(serve --store "$target") ;;
esac

profile_once() { # $1 = name, $2 = seconds of load
    local out="$DIR/$target.$1.callgrind" fifo="$DIR/stdin.$$" log="$DIR/$target.$1.server.log"
    rm -f "$fifo"; mkfifo "$fifo"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" "${server[@]}" \
        --listen "127.0.0.1:$PORT" < "$fifo" > "$log" 2>&1 &
    local vg=$!
    exec 3> "$fifo"   # the server stops when this closes
    for _ in $(seq 600); do grep -q "listening on" "$log" && break; sleep 0.2; done
    grep -q "listening on" "$log" || { echo "server did not start: $(cat "$log")" >&2; exit 1; }
    "$BIN" load --url "http://127.0.0.1:$PORT" --baseline none --pairs "$PAIRS" --rate "$RATE" \
        --warmup 0 --duration "$2" --grace 30 > "$DIR/$target.$1.json"
    exec 3>&-
    wait "$vg"
    rm -f "$fifo"
    echo "$1: $(grep -o '"sent":[0-9]*' "$DIR/$target.$1.json"), $(grep -o '"lost":[0-9]*' "$DIR/$target.$1.json")" >&2
}

profile_once short "$SHORT"
profile_once long "$LONG"
python3 benches/profile/callgrind_diff.py \
    "$DIR/$target.short.callgrind" "$DIR/$target.short.json" \
    "$DIR/$target.long.callgrind" "$DIR/$target.long.json"
