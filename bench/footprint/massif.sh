#!/usr/bin/env bash
# Part of bench/results/footprint.md: where the bytes of an idle connection go.
# massif.sh BIN N : heap profile of a fresh gateway holding N idle connections (each echoed once)
set -u
BIN=$1; N=${2:-9900}
ulimit -n 20000
EX=${EX:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/examples}
D=${OUT:-$(mktemp -d)}; mkdir -p $D
$EX/echo_backend 0 > $D/eb.log 2>&1 &
EB=$!
for i in $(seq 100); do grep -qo '127.0.0.1:[0-9]*' $D/eb.log && break; sleep 0.05; done
EPORT=$(grep -o '127.0.0.1:[0-9]*' $D/eb.log | head -1 | cut -d: -f2)
cat > $D/cfg.json <<J
{"version":1,"server":{"host":"127.0.0.1","port":0},"routers":[{"protocol":"websocket","external_path":"/ws/chat","internal_path":"/","methods":["GET"],"backends":[{"host":"ws://127.0.0.1","port":$EPORT,"weight":1}]}]}
J
RUST_LOG=warn,kairos_gateway=info valgrind --tool=massif --depth=40 --threshold=0.2 --massif-out-file=$D/massif.out $BIN --config $D/cfg.json > $D/gw.log 2>&1 &
GW=$!
for i in $(seq 400); do grep -q 'listening on' $D/gw.log && break; sleep 0.05; done
GPORT=$(grep -o 'listening on [^ ]*' $D/gw.log | grep -o '[0-9]*$' | head -1)
mkfifo $D/fifo
$EX/loadgen --url ws://127.0.0.1:$GPORT/ws/chat --mode hold --connections $N --hold 600 --batch 200 < $D/fifo > $D/lg.out 2> $D/lg.err &
LG=$!
exec 9> $D/fifo
for i in $(seq 1200); do grep -q HELD $D/lg.out && break; sleep 0.1; done
cat $D/lg.out
sleep 2
# valgrind: ask for a detailed snapshot now
vgdb --pid=$(pgrep -f "massif-out-file=$D/massif.out" | head -1) detailed_snapshot $D/snap.txt > /dev/null 2>&1 || echo "vgdb failed"
exec 9>&-
wait $LG
kill -TERM $GW; wait $GW 2>/dev/null; kill $EB; wait 2>/dev/null
echo "detailed snapshot: $D/snap.txt (massif.out beside it)"
