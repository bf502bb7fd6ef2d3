#!/bin/bash
# usage: benches/profile/threads.sh STORE RATE
# Starts `zajel-benches serve --store STORE` in its own process, drives it with 1,000 users at
# RATE msgs/s each for 8 s, and prints over 4 s of it: the server's and the load generator's
# CPU, each server thread's user/sys CPU and context switches, the server's bytes written and
# write syscalls (/proc/PID/io) and its store commits per second (/metrics). PERF=1 also
# records `perf record -e cpu-clock --call-graph dwarf` of the server into $OUT.
# Environment reaches the server: e.g. ZAJEL_EMBEDDED_COMMIT_INTERVAL_US=0, TMPDIR=/dev/shm.
B=${B:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/zajel-benches}
STORE=$1; RATE=$2; PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
OUT=${OUT:-$PWD/perf-$STORE-$RATE.data}
cd $(mktemp -d)
mkfifo stdin.fifo; sleep 1000 > stdin.fifo & SL=$!
$B serve --store $STORE --listen 127.0.0.1:$PORT < stdin.fifo > serve.log 2>&1 &
SP=$!
sleep 2
snap() { for t in /proc/$SP/task/*; do echo "$(basename $t) $(tr ' ' _ < $t/comm) $(awk '{print $14, $15}' $t/stat) $(grep -E 'voluntary' $t/status | awk '{print $2}' | paste -sd' ')"; done 2>/dev/null; }
$B load --url http://127.0.0.1:$PORT --pairs 500 --rate $RATE --duration 8 --warmup 2 --baseline none > load.out 2> load.err &
LP=$!
sleep 6; [ -n "$PERF" ] && perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -o $OUT -p $SP -- sleep 3 >/dev/null 2>&1 & sleep 0.1
snap > a.txt; L1=$(awk '{print $14+$15}' /proc/$LP/stat); W1=$(awk '/^write_bytes/{print $2}' /proc/$SP/io); IO1=$(awk '{print $2}' /proc/$SP/io | paste -sd' '); C1=$(curl -s http://127.0.0.1:$PORT/metrics | awk '/^zajel_store_commits_total/{print $2}'); S1=$(cat /proc/$SP/stat | awk '{print $14+$15}')
sleep 4
snap > b.txt; L2=$(awk '{print $14+$15}' /proc/$LP/stat); W2=$(awk '/^write_bytes/{print $2}' /proc/$SP/io); IO2=$(awk '{print $2}' /proc/$SP/io | paste -sd' '); C2=$(curl -s http://127.0.0.1:$PORT/metrics | awk '/^zajel_store_commits_total/{print $2}'); S2=$(cat /proc/$SP/stat | awk '{print $14+$15}')
echo "loadgen $(( (L2-L1)/4 ))%  server total $(( (S2-S1)/4 ))%  write_bytes/s $(( (W2-W1)/4 ))"
echo "io(rchar wchar syscr syscw rb wb cwb) per s: $(python3 -c "a='$IO1'.split();b='$IO2'.split();print([ (int(y)-int(x))//4 for x,y in zip(a,b)])")  commits/s: $(python3 -c "print(((${C2:-0})-(${C1:-0}))/4)")"
join a.txt b.txt | awk '{u=$8-$3; s=$9-$4; vcs=$10-$5; ivcs=$11-$6; if(u+s>0) print $2, (u+s)/4 "% user", u/4, "sys", s/4, "vcsw/s", vcs/4, "ivcsw/s", ivcs/4}' | sort -k2 -n -r | head -12
wait $LP
python3 -c "
import json
for l in open('load.out'):
    d=json.loads(l); s=d.get('steps') or [d]
    for x in s: print(x.get('offered_msgs_per_s'), x.get('throughput_msgs_per_s'), x.get('e2e_latency_ms'))
"
tail -3 load.err
grep -i -E 'commit|stat' serve.log | tail -5
kill $SP $SL
