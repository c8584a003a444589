#!/usr/bin/env bash
# Runs Autobahn's fuzzing client against the release gateway in front of an echo backend and
# against that echo backend directly, then compares the verdicts case by case.
# usage: .ci/autobahn.sh [--quick|--full] [deflate] [policy]
#   default: the 301 cases without compression, behind the example echo backend (Rust)
#   deflate: behind a permessage-deflate echo backend (Node.js ws, .ci/deflate-echo), so that
#            the compression cases (--quick or --full) test the gateway's pass-through
#   policy:  the route has message and byte rates (too high to bite), a message filter and
#            message_transform rules on both directions, so that every frame goes through the
#            policy code of the relay (Autobahn's text messages are not JSON objects: they must
#            pass unchanged)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=
backend=echo
route_extra=
for a in "$@"; do
  case "$a" in
    --quick|--full) mode=$a;;
    deflate) backend=deflate;;
    policy) route_extra='"rate_limit": { "messages_per_second": 1000000, "bytes_per_second": 1000000000 },
  "message_filter": { "allow_types": ["text", "binary"], "max_message_bytes": { "client_to_backend": 16777216 } },
  "message_transform": { "client_to_backend": [ { "set": "/from", "from": "client_address" } ],
    "backend_to_client": [ { "remove": "/internal" } ] },';;
    *) echo "unknown argument $a" >&2; exit 2;;
  esac
done
shared=${KAIROS_SHARED:-../shared}
cargo build --release --bin kairos-gateway --example echo_backend
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Wait (with a deadline) until FILE has a line matching PATTERN; print the match.
wait_for_line() {
  local file=$1 pattern=$2 deadline=$((SECONDS + 30))
  while [ $SECONDS -lt $deadline ]; do
    if grep -qE "$pattern" "$file" 2>/dev/null; then grep -oE "$pattern" "$file" | head -n1; return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for '$pattern' in $file:" >&2; cat "$file" >&2; return 1
}

if [ "$backend" = deflate ]; then
  (cd .ci/deflate-echo && npm ci --no-audit --no-fund --silent)
  node .ci/deflate-echo/server.js 0 > "$work/echo.log" 2>&1 &
else
  ./target/release/examples/echo_backend 0 > "$work/echo.log" 2>&1 &
fi
pids+=($!)
echo_port=$(wait_for_line "$work/echo.log" '127\.0\.0\.1:[0-9]+' | cut -d: -f2)
cat > "$work/config.json" <<JSON
{ "version": 1, "routers": [ { "protocol": "websocket",
  "backends": [ { "host": "ws://127.0.0.1", "port": $echo_port, "weight": 1 } ],
  $route_extra
  "external_path": "/ws/chat", "internal_path": "/ws", "methods": ["GET"] } ] }
JSON
KAIROS_HOST=127.0.0.1 KAIROS_PORT=0 RUST_LOG=warn,kairos_gateway=info \
  ./target/release/kairos-gateway --config "$work/config.json" > "$work/gateway.log" 2>&1 &
pids+=($!)
gw_port=$(wait_for_line "$work/gateway.log" 'listening on 127\.0\.0\.1:[0-9]+' | sed 's/.*://')
echo "echo backend on $echo_port, gateway on $gw_port"

rc=0
AUTOBAHN_OUT="$work/autobahn" bash "$shared/conformance/autobahn/run.sh" $mode \
  gateway="ws://127.0.0.1:$gw_port/ws/chat" direct="ws://127.0.0.1:$echo_port/ws" || rc=$?
python3 .ci/autobahn_compare.py "$work/autobahn/reports/index.json" gateway direct || rc=1
if [ $rc -ne 0 ]; then echo "gateway log tail:"; tail -n 20 "$work/gateway.log"; fi
exit $rc
