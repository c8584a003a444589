#!/usr/bin/env bash
# Part of bench/results/footprint.md: where the bytes of an idle connection go.
# hold.sh BIN N [workers]: fresh gateway; RSS after one echo, then after holding N idle conns (each echoed once)
set -u
BIN=$1; N=${2:-9900}; WK=${3:-}
ulimit -n 20000
EX=${EX:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/examples}
D=$(mktemp -d)
$EX/echo_backend 0 > $D/eb.log 2>&1 &
EB=$!
for i in $(seq 100); do grep -qo '127.0.0.1:[0-9]*' $D/eb.log && break; sleep 0.05; done
EPORT=$(grep -o '127.0.0.1:[0-9]*' $D/eb.log | head -1 | cut -d: -f2)
W=""; [ -n "$WK" ] && W=", \"workers\": $WK"
cat > $D/cfg.json <<J
{"version":1,"server":{"host":"127.0.0.1","port":0$W},"routers":[{"protocol":"websocket","external_path":"/ws/chat","internal_path":"/","methods":["GET"],"backends":[{"host":"ws://127.0.0.1","port":$EPORT,"weight":1}]}]}
J
RUST_LOG=warn,kairos_gateway=info $BIN --config $D/cfg.json > $D/gw.log 2>&1 &
GW=$!
for i in $(seq 100); do grep -q 'listening on' $D/gw.log && break; sleep 0.05; done
GPORT=$(grep -o 'listening on [^ ]*' $D/gw.log | grep -o '[0-9]*$' | head -1)
$EX/loadgen --url ws://127.0.0.1:$GPORT/ws/chat --mode connect --parallel 1 --duration 0.2 >/dev/null 2>&1
sleep 0.3
B=$(awk '/^VmRSS/{print $2}' /proc/$GW/status)
mkfifo $D/fifo
$EX/loadgen --url ws://127.0.0.1:$GPORT/ws/chat --mode hold --connections $N --hold 600 --batch 200 < $D/fifo > $D/lg.out 2> $D/lg.err &
LG=$!
exec 9> $D/fifo
for i in $(seq 600); do grep -q HELD $D/lg.out && break; sleep 0.1; done
sleep 1
A=$(awk '/^VmRSS/{print $2}' /proc/$GW/status)
H=$(grep -o 'HELD [0-9]*' $D/lg.out | cut -d' ' -f2)
echo "idle_rss_kib=$B held=$H rss_after_kib=$A bytes_per_conn=$(( (A-B)*1024/H ))"
exec 9>&-
wait $LG
kill $GW $EB; wait 2>/dev/null; rm -rf $D
