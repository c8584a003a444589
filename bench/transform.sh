#!/usr/bin/env bash
# What message_transform costs: messages per second and gateway CPU per message for JSON
# messages of 100 B and 4 KiB, through a route with three rules and through the same route
# without rules, in alternating rounds; the medians go to bench/results/transform.md.
#
# usage: bench/transform.sh      environment: ROUNDS (3), DURATION (8 s per run), WORKERS (1)
# Each run is loadgen --mode throughput --json, 10 connections x 4 in flight: the echo of a
# transformed message is checked by its leading stamp only (the rules changed the rest).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-8} WORKERS=${WORKERS:-1}
cargo build --release --bin kairos-gateway --example echo_backend --example loadgen >&2
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$dir"' EXIT
target/release/examples/echo_backend 0 > "$dir/echo.log" 2>&1 &
until ep=$(grep -oE '127\.0\.0\.1:[0-9]+' "$dir/echo.log" 2>/dev/null | head -1 | cut -d: -f2); [ -n "$ep" ]; do sleep 0.05; done
route() { # external_path, extra fields
  echo "{ \"protocol\": \"websocket\", \"backends\": [ { \"host\": \"ws://127.0.0.1\", \"port\": $ep } ],
    \"external_path\": \"$1\", \"internal_path\": \"/ws\", \"methods\": [\"GET\"] $2 }"
}
rules='"message_transform": { "client_to_backend": [
  { "set": "/from", "value": "alice" }, { "set": "/meta/conn", "from": "connection_id" },
  { "remove": "/internal" } ] }'
cat > "$dir/c.json" <<J
{ "version": 1, "server": { "host": "127.0.0.1", "port": 0, "workers": $WORKERS },
  "routers": [ $(route /plain ""), $(route /rules ", $rules") ] }
J
RUST_LOG=warn,kairos_gateway=info target/release/kairos-gateway --config "$dir/c.json" > "$dir/gw.log" 2>&1 &
gw=$!
until gp=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$dir/gw.log" | head -1 | sed 's/.*://'); [ -n "$gp" ]; do sleep 0.05; done
ticks() { awk '{ print $14 + $15 }' "/proc/$gw/stat"; }
hz=$(getconf CLK_TCK)
for r in $(seq "$ROUNDS"); do
  for size in 100 4096; do
    for path in /plain /rules; do
      t0=$(ticks)
      out=$(target/release/examples/loadgen --url "ws://127.0.0.1:$gp$path" --mode throughput \
        --json --connections 10 --inflight 4 --size "$size" --duration "$DURATION" 2> /dev/null)
      t1=$(ticks)
      echo "{\"round\": $r, \"size\": $size, \"path\": \"$path\", \"cpu_s\": $(awk "BEGIN { print ($t1 - $t0) / $hz }"), \"result\": $out}" >> "$dir/runs.jsonl"
      echo "round $r: $size B via $path done" >&2
    done
  done
done
python3 - "$dir/runs.jsonl" "$ROUNDS" "$DURATION" "$WORKERS" "$(git rev-parse --short HEAD)" > bench/results/transform.md <<'PY'
import json, statistics, sys, datetime
runs = [json.loads(l) for l in open(sys.argv[1])]
rounds, duration, workers, commit = sys.argv[2:6]
def med(size, path, f):
    return statistics.median(f(r) for r in runs if r["size"] == size and r["path"] == path)
rate = lambda r: r["result"]["msgs_per_sec"]
cpu = lambda r: r["cpu_s"] * 1e6 / r["result"]["msgs"]
errors = sum(r["result"]["errors"] for r in runs)
print("# What message_transform costs\n")
print(f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, commit {commit}, `bench/transform.sh`: "
      f"ROUNDS={rounds}, DURATION={duration}s, WORKERS={workers}; loadgen `--mode throughput --json "
      f"--connections 10 --inflight 4`. Medians. The route with rules has three on the client's "
      f"messages: `set /from` (a constant), `set /meta/conn` (`connection_id`) and `remove /internal`. "
      f"Errors in all runs: {errors}.\n")
print("| JSON message | route | msgs/s | gateway CPU µs/msg |")
print("|---|---|---:|---:|")
for size in (100, 4096):
    for path, name in (("/plain", "no rules"), ("/rules", "three rules")):
        print(f"| {size} B | {name} | {med(size, path, rate):,.0f} | {med(size, path, cpu):.2f} |")
for size in (100, 4096):
    extra = med(size, "/rules", cpu) - med(size, "/plain", cpu)
    print(f"\n{size} B: the rules cost {extra:.2f} µs of CPU per message "
          f"({med(size, '/rules', cpu) / med(size, '/plain', cpu):.2f}x the route without rules).", end="")
print()
PY
cat bench/results/transform.md
