#!/usr/bin/env bash
# Soak: C concurrent proxied connections, each echoing one message a second, for D seconds,
# through a release gateway to the example echo backend. Passes only with zero errors (no failed
# connection, no wrong/late/missing echo, no unexpected close).
#
# usage: bench/soak.sh            10 000 connections for 60 s (needs ulimit -n > 20 064)
#        CONNECTIONS=500 DURATION=10 bench/soak.sh     (what .ci/run runs)
#
# environment: CONNECTIONS [10000], DURATION seconds [60], WORKERS (gateway) [available CPUs],
#              RESULT file to write the summary to [bench/results/soak.md; "-" for none]
set -euo pipefail
cd "$(dirname "$0")/.."
C=${CONNECTIONS:-10000}
D=${DURATION:-60}
RESULT=${RESULT:-bench/results/soak.md}
log() { echo "[soak $(date +%H:%M:%S)] $*" >&2; }

# Each proxied connection holds two sockets in the gateway; the load generator and the backend
# hold one each. Ask for the hard limit; refuse to run a count the limit cannot hold.
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
nofile=$(ulimit -n)
need=$((2 * C + 64))
if [ "$nofile" != unlimited ] && [ "$need" -gt "$nofile" ]; then
  echo "soak.sh: $C connections need ulimit -n >= $need in the gateway; the hard limit here is" \
    "$nofile. Raise it (e.g. as root: ulimit -Hn $need) or run CONNECTIONS=$(((nofile - 64) / 2))." >&2
  exit 2
fi

log "building (release)"
cargo build --release --quiet --bin kairos-gateway --example echo_backend --example loadgen
bin=target/release
run=$(mktemp -d "${TMPDIR:-/tmp}/kairos-soak.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT

wait_line() { # FILE PATTERN: first match within 20 s
  for _ in $(seq 200); do
    grep -m1 -oE "$2" "$1" 2> /dev/null && return 0
    sleep 0.1
  done
  echo "soak.sh: no '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}

"$bin/examples/echo_backend" 0 > "$run/echo.log" 2>&1 &
pids+=($!)
echo_port=$(wait_line "$run/echo.log" '127\.0\.0\.1:[0-9]+' | cut -d: -f2)
workers=${WORKERS:+, \"workers\": $WORKERS}
cat > "$run/gateway.json" << JSON
{ "version": 1, "server": { "host": "127.0.0.1", "port": 0 $workers },
  "routers": [ { "protocol": "websocket", "external_path": "/ws/chat", "internal_path": "/ws",
    "methods": ["GET"], "backends": [ { "host": "ws://127.0.0.1", "port": $echo_port } ] } ] }
JSON
RUST_LOG=warn,kairos_gateway=info "$bin/kairos-gateway" --config "$run/gateway.json" \
  > "$run/gateway.log" 2>&1 &
gw=$!
pids+=("$gw")
gw_port=$(wait_line "$run/gateway.log" 'listening on 127\.0\.0\.1:[0-9]+' | sed 's/.*://')

log "$C connections, one echo a second each, for $D s (gateway pid $gw, port $gw_port)"
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$gw/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
rss0=$(rss_kib)
cpu0=$(cpu_ticks)
out=$("$bin/examples/loadgen" --url "ws://127.0.0.1:$gw_port/ws/chat" --mode rate \
  --connections "$C" --rate "$C" --size 64 --duration "$D" 2> "$run/loadgen.log" | tail -1)
cpu1=$(cpu_ticks)
rss1=$(rss_kib)
kill -0 "$gw" 2> /dev/null || { echo "soak.sh: the gateway died" >&2; cat "$run/gateway.log" >&2; exit 1; }

summary=$(python3 - "$out" "$C" "$D" "$rss0" "$rss1" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" << 'PY'
import json, sys
r = json.loads(sys.argv[1]); c, d = int(sys.argv[2]), int(sys.argv[3])
rss0, rss1, ticks, hz = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
print(f"| connections | {c:,} |\n| duration | {d} s |\n| echoes/s achieved | {r['achieved_rate']:,.0f} |")
print(f"| errors | {r['errors']} |\n| first error | {r['first_error'] or '-'} |")
print(f"| latency p50 / p99 / max | {r['p50_us']:,.0f} / {r['p99_us']:,.0f} / {r['max_us']:,.0f} µs |")
print(f"| gateway RSS before / during | {rss0:,} / {rss1:,} KiB |")
print(f"| gateway CPU | {ticks / hz / d * 100:.1f} % of one core |")
PY
)
errors=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["errors"])' "$out")
echo "$summary"
if [ "$RESULT" != - ]; then
  {
    echo "# Soak: $C connections x 1 echo/s for $D s"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2> /dev/null || echo ?)," \
      "\`CONNECTIONS=$C DURATION=$D bench/soak.sh\`, $(nproc) CPUs, ulimit -n $nofile."
    echo
    echo "| | |"
    echo "|---|---|"
    echo "$summary"
  } > "$RESULT"
fi
[ "$errors" = 0 ] || { echo "soak.sh: $errors errors" >&2; exit 1; }
log "passed: zero errors"
