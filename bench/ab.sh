#!/usr/bin/env bash
# A/B of two gateway binaries on the same workloads, alternating: bench/ab.sh BEFORE AFTER
# [ROUNDS]. Each round runs, for each binary: 64 B and 16 KiB throughput (50 conns x 8 in
# flight, DURATION s) and connect + echo + close (16 loops). Prints one line per run: msg/s or
# cycles/s and the gateway's CPU per message or cycle (from /proc/PID/stat). Build the load
# generator and echo backend first: cargo build --release --example loadgen --example echo_backend
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=$1 AFTER=$2 ROUNDS=${3:-3} DURATION=${DURATION:-5}
LG=target/release/examples/loadgen
ECHO=target/release/examples/echo_backend
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
"$ECHO" 0 > "$dir/echo.log" 2>&1 &
until ep=$(grep -oE '127\.0\.0\.1:[0-9]+' "$dir/echo.log" | head -1 | cut -d: -f2); [ -n "$ep" ]; do sleep 0.05; done

one() { # one binary, one round
    local bin=$1 name=$2
    cat > "$dir/c.json" <<J
{ "server": {"host":"127.0.0.1","port":0,"workers":1}, "routers": [ { "protocol": "websocket",
  "backends": [ { "host": "ws://127.0.0.1", "port": $ep } ], "external_path": "/ws/chat",
  "internal_path": "/ws", "methods": ["GET"] } ] }
J
    RUST_LOG=warn,kairos_gateway=info,kairos_gateway::access=off "$bin" --config "$dir/c.json" > "$dir/gw.log" 2>&1 &
    local gw=$! gp=""
    until gp=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$dir/gw.log" | head -1 | sed 's/.*://'); [ -n "$gp" ]; do sleep 0.05; done
    cpu() { awk '{print $14+$15}' "/proc/$gw/stat"; }
    for args in "--mode throughput --connections 50 --inflight 8 --size 64" \
                "--mode throughput --connections 50 --inflight 8 --size 16384 --binary" \
                "--mode connect --parallel 16"; do
        local c0 c1 out
        c0=$(cpu)
        # shellcheck disable=SC2086
        out=$("$LG" --url "ws://127.0.0.1:$gp/ws/chat" $args --duration "$DURATION" 2>/dev/null | tail -1)
        c1=$(cpu)
        python3 - "$name" "$args" "$out" "$c0" "$c1" "$DURATION" <<'P'
import json, sys
name, args, out, c0, c1, dur = sys.argv[1:]
r = json.loads(out); ticks = int(c1) - int(c0)
if "--mode connect" in args:
    n = r["cycles"]; print(f"{name:7} connect: {r['connects_per_sec']:8.0f} cycles/s  {ticks/100/n*1e6:7.1f} us/cycle  errors {r['errors']}")
else:
    n = r["msgs_per_sec"] * float(dur)
    print(f"{name:7} {r['size']:>6} B: {r['msgs_per_sec']:8.0f} msg/s     {ticks/100/n*1e6:7.2f} us/msg    errors {r['errors']}")
P
    done
    kill "$gw"; wait "$gw" 2>/dev/null || true
}

for r in $(seq "$ROUNDS"); do
    echo "== round $r"
    one "$BEFORE" before
    one "$AFTER" after
done
