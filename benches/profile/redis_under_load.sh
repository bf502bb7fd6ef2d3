#!/bin/bash
# Redis under load (issue 13, session 8): `serve` or `relay` over a redis-server of its own at
# RATE msgs/s per user (500 pairs), and over 4 s: CPU per stored message of the server, its
# redis-server and the load generator (/proc), syscalls (/proc/PID/io), Redis commands, bytes,
# reads and writes per message (INFO stats / commandstats deltas), EVALSHA calls.
#   benches/profile/redis_under_load.sh serve|relay RATE [TAG]
# PERF=redis|server records that process with perf (cpu-clock) into $OUT/perf-TAG-*.data;
# STRACE=1 runs strace -c on both. Run from the repository root after a release build.
B=${B:-$(pwd)/target/release/zajel-benches}
KIND=$1; RATE=$2; TAG=${3:-$1-$2}; PORT=$((20000 + RANDOM % 10000))
D=$(mktemp -d); cd $D
mkfifo stdin; $B $KIND --store redis --listen 127.0.0.1:$PORT < stdin > serve.log 2>&1 &
SP=$!
exec 3> stdin
for _ in $(seq 100); do grep -q "listening on" serve.log && break; sleep 0.1; done
RP=$(pgrep -P $SP redis-server)
RPORT=$(tr '\0' ' ' < /proc/$RP/cmdline | grep -o -- '--port [0-9]*' | awk '{print $2}')
[ -z "$RPORT" ] && RPORT=$(ss -ltnp 2>/dev/null | grep "pid=$RP," | head -1 | awk '{print $4}' | sed 's/.*://')
R="redis-cli -p $RPORT"
$B load --url http://127.0.0.1:$PORT --pairs 500 --rate $RATE --duration 8 --warmup 2 --baseline none > load.out 2> load.err &
LP=$!
sleep 5
if [ -n "$PERF" ]; then
  [ "$PERF" = redis ] && perf record -e cpu-clock -F 999 -g -o ${OUT:-/tmp}/perf-$TAG-redis.data -p $RP -- sleep 3 >/dev/null 2>&1 &
  [ "$PERF" = server ] && perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -o ${OUT:-/tmp}/perf-$TAG-server.data -p $SP -- sleep 3 >/dev/null 2>&1 &
fi
if [ -n "$STRACE" ]; then timeout 3 strace -c -f -p $RP -o ${OUT:-/tmp}/strace-$TAG-redis.txt & timeout 3 strace -c -f -p $SP -o ${OUT:-/tmp}/strace-$TAG-server.txt & fi
sleep 0.1
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
io() { awk '/syscr|syscw/{printf "%s ", $2}' /proc/$1/io; }
stats() { $R info stats | awk -F: '/total_commands_processed|total_net_input_bytes|total_net_output_bytes|total_reads_processed|total_writes_processed/{gsub("\r","");printf "%s ", $2}'; }
cs() { $R info commandstats | tr -d '\r' | grep -E 'evalsha|sismember|rpush|xadd|exec|multi' ; }
S1=$(cpu $SP); R1=$(cpu $RP); L1=$(cpu $LP); SI1=$(io $SP); RI1=$(io $RP); ST1=$(stats); cs > cs1.txt
sleep 4
S2=$(cpu $SP); R2=$(cpu $RP); L2=$(cpu $LP); SI2=$(io $SP); RI2=$(io $RP); ST2=$(stats); cs > cs2.txt
if [ $KIND = serve ]; then M=xadd; else M=rpush; fi
MSGS=$(python3 -c "
import re,sys
def c(f,n):
    m=re.search('cmdstat_'+n+':calls=([0-9]+)',open(f).read()); return int(m.group(1)) if m else 0
print(c('cs2.txt','$M')-c('cs1.txt','$M'), c('cs2.txt','evalsha')-c('cs1.txt','evalsha'))")
echo "stored in 4 s, EVALSHA: $MSGS (offered $((RATE*1000*4)))"; MSGS=${MSGS% *}
python3 - "$MSGS" "$S1" "$S2" "$R1" "$R2" "$L1" "$L2" "$SI1" "$SI2" "$RI1" "$RI2" "$ST1" "$ST2" <<PY
import sys
a=sys.argv[1:]; n=int(a[0])
s=(int(a[2])-int(a[1]))*10000/n; r=(int(a[4])-int(a[3]))*10000/n; l=(int(a[6])-int(a[5]))*10000/n
si=[int(y)-int(x) for x,y in zip(a[7].split(),a[8].split())]
ri=[int(y)-int(x) for x,y in zip(a[9].split(),a[10].split())]
st=[int(y)-int(x) for x,y in zip(a[11].split(),a[12].split())]
print(f"msgs~{n}: us/msg server {s:.1f} redis {r:.1f} loadgen {l:.1f} total(s+r) {s+r:.1f}")
print(f"server syscalls/msg read {si[0]/n:.2f} write {si[1]/n:.2f}; redis read {ri[0]/n:.2f} write {ri[1]/n:.2f}")
print(f"redis/msg: commands {st[0]/n:.2f} in-bytes {st[1]/n:.0f} out-bytes {st[2]/n:.0f} reads {st[3]/n:.2f} writes {st[4]/n:.2f}")
PY
paste cs1.txt cs2.txt
wait $LP
python3 -c "
import json
for l in open('load.out'):
    d=json.loads(l); s=d.get('steps') or [d]
    for x in s: print(x.get('offered_msgs_per_s'), x.get('throughput_msgs_per_s'), x.get('e2e_latency_ms'), 'lost', x.get('lost'))
"
tail -2 load.err
exec 3>&-; sleep 1; kill $SP 2>/dev/null; sleep 0.5; kill $RP 2>/dev/null; rm -rf $D
