#!/bin/bash
# The Lua floor (issue 13, session 8): redis-server CPU per call for plain commands, a trivial
# EVALSHA, and a script doing the relay's two commands (redis-benchmark, C clients, N calls,
# 500 keys); then the append's HMGET (5 fields) and HSET (3) on a meta hash of F fields as a
# listpack (Redis's default up to 128 fields) and as a hashtable. CPU from /proc: on a shared
# machine an indication, compare within one run.
#   benches/profile/redis_floor.sh          (N=200000 C=50 F=100)
# Redis CPU per operation: plain commands vs the same commands inside a script vs a trivial script.
N=${N:-200000}; C=${C:-50}; F=${F:-100}
PORT=$((30000 + RANDOM % 10000))
D=$(mktemp -d)
redis-server --port $PORT --save '' --appendonly no --dir $D > $D/log 2>&1 &
RP=$!; sleep 0.5
R="redis-cli -p $PORT"
P=$(head -c 300 /dev/zero | tr '\0' x)
T=$($R script load "return 1")
S=$($R script load "local m = redis.call('SISMEMBER', KEYS[1], ARGV[1]); return redis.call('RPUSH', KEYS[2], ARGV[2])")
cpu() { awk '{print $14+$15}' /proc/$RP/stat; }
run() { local name=$1; shift; local a=$(cpu); redis-benchmark -p $PORT -c $C -n $N -r 500 "$@" >/dev/null 2>&1; local b=$(cpu); echo "$name: $(( (b-a)*10000000/N )) ns of redis CPU per call"; }
run "SISMEMBER" SISMEMBER relay:friends:__rand_int__ x
run "RPUSH 300B" RPUSH relay:msgs:__rand_int__ $P
run "EVALSHA return 1" EVALSHA $T 0
run "EVALSHA SISMEMBER+RPUSH" EVALSHA $S 2 relay:friends:__rand_int__ relay:msgs:__rand_int__ x $P
kill $RP; rm -rf $D; wait $RP 2>/dev/null
for enc in listpack hashtable; do
PORT=$((30000 + RANDOM % 10000)); D=$(mktemp -d)
extra=""; [ $enc = hashtable ] && extra="--hash-max-listpack-entries 0"
redis-server --port $PORT --save '' --appendonly no --dir $D $extra > $D/log 2>&1 &
RP=$!; sleep 0.5; R="redis-cli -p $PORT"
for k in $(seq 0 499); do
  key=$(printf "zajel:{c:dm.%012d}:meta" $k)
  args="seq 5 f 1 ib 20000"
  for i in $(seq 1 $F); do args="$args 20000:5f0e4c1a-1111-2222-3333-44445555$(printf %04d $i):key$i $i"; done
  echo "HSET $key $args"
done | $R > /dev/null
echo "$enc: $($R object encoding "zajel:{c:dm.000000000001}:meta") fields $($R hlen "zajel:{c:dm.000000000001}:meta")"
cpu() { awk '{print $14+$15}' /proc/$RP/stat; }
run() { local name=$1; shift; local a=$(cpu); redis-benchmark -p $PORT -c $C -n $N -r 500 "$@" >/dev/null 2>&1; local b=$(cpu); echo "  $name: $(( (b-a)*10000000/N )) ns of redis CPU per call"; }
run "HMGET 5" HMGET "zajel:{c:dm.__rand_int__}:meta" seq f ib 20000:5f0e4c1a-1111-2222-3333-444455559999:keyX 19999:5f0e4c1a-1111-2222-3333-444455559999:keyX
run "HSET 3" HSET "zajel:{c:dm.__rand_int__}:meta" seq 7 20000:5f0e4c1a-1111-2222-3333-44445555$(printf %04d $((F/2))):key$((F/2)) 7 r:5f0e4c1a-1111-2222-3333-444455559999 7
run "SISMEMBER (reference)" SISMEMBER s x
kill $RP; rm -rf $D
done
