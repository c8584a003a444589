#!/usr/bin/env bash
# Instructions the gateway spends per message and per connection, under callgrind: a count that
# does not depend on the machine's load. bench/callgrind.sh GATEWAY_BIN [LABEL]
# Runs the example echo backend and GATEWAY_BIN (one worker) under valgrind --tool=callgrind,
# zeroes the counters, runs one load generator workload, dumps, and divides the gateway's
# instructions by the messages echoed (or cycles completed); then the next workload:
#   64       64 B text, 10 connections x 4 in flight
#   1x1      64 B text, 1 connection x 1 in flight (every message wakes the gateway)
#   connect  connect + 32 B echo + close, 4 loops
# WORK="64 1x1 connect" picks the workloads, DURATION (10) the seconds of each. Batching varies
# with timing (the 64 B figure moves by about 2% between runs): compare medians of a few runs,
# alternating the binaries. Build first:
#   cargo build --release --bin kairos-gateway --example loadgen --example echo_backend
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1 LABEL=${2:-$(basename "$1")} DURATION=${DURATION:-10} WORK=${WORK:-"64 1x1 connect"}
LG=target/release/examples/loadgen
ECHO=target/release/examples/echo_backend
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$dir"' EXIT
"$ECHO" 0 > "$dir/echo.log" 2>&1 &
until ep=$(grep -oE '127\.0\.0\.1:[0-9]+' "$dir/echo.log" 2>/dev/null | head -1 | cut -d: -f2); [ -n "$ep" ]; do sleep 0.05; done
cat > "$dir/c.json" <<J
{ "server": {"host":"127.0.0.1","port":0,"workers":1}, "routers": [ { "protocol": "websocket",
  "backends": [ { "host": "ws://127.0.0.1", "port": $ep } ], "external_path": "/ws/chat",
  "internal_path": "/ws", "methods": ["GET"] } ] }
J
RUST_LOG=warn,kairos_gateway=info,kairos_gateway::access=off valgrind --tool=callgrind --callgrind-out-file="$dir/cg.%p" \
  "$BIN" --config "$dir/c.json" > "$dir/gw.log" 2>&1 &
gw=$!
until gp=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$dir/gw.log" | head -1 | sed 's/.*://'); [ -n "$gp" ]; do sleep 0.2; done
dumped() { # the instructions counted since the last zero
  local before; before=$(ls "$dir"/cg.*.* 2>/dev/null | wc -l)
  callgrind_control -d "$gw" > /dev/null
  until [ "$(ls "$dir"/cg.*.* 2>/dev/null | wc -l)" -gt "$before" ]; do sleep 0.1; done
  sleep 0.5 # the file is complete
  grep -E '^summary:' "$(ls -t "$dir"/cg.*.* | head -1)" | awk '{print $2}'
}
for w in $WORK; do
  case $w in
    64) args="--mode throughput --connections 10 --inflight 4 --size 64"; unit=msgs;;
    1x1) args="--mode throughput --connections 1 --inflight 1 --size 64"; unit=msgs;;
    connect) args="--mode connect --parallel 4"; unit=cycles;;
    *) echo "unknown workload $w" >&2; exit 2;;
  esac
  callgrind_control -z "$gw" > /dev/null
  # shellcheck disable=SC2086
  out=$("$LG" --url "ws://127.0.0.1:$gp/ws/chat" $args --duration "$DURATION" 2>/dev/null | tail -1)
  python3 - "$LABEL" "$w" "$unit" "$out" "$(dumped)" <<'P'
import json, sys
label, work, unit, out, ir = sys.argv[1:]
r = json.loads(out); n = r[unit]; ir = int(ir)
print(f"{label:10} {work:8} {n:8} {unit:6} {ir:>14,} Ir  {ir / n:>9,.0f} per {unit[:-1]}  errors {r['errors']}")
P
done
