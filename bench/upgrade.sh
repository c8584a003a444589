#!/usr/bin/env bash
# Binary upgrade under load: LIVE clients stay connected (loadgen --mode fleet: each comes back
# with jittered backoff when closed) and a loop of new connections runs (loadgen --mode connect:
# connect, handshake, one echo, close) while the gateway gets SIGUSR2. The new process takes the
# listening sockets; the old one stops accepting and closes its connections with 1001, spread
# over SPREAD ms, then exits. Passes only when:
#   - the connect loop made at least 200 connections a second and none failed (nothing refused,
#     no failed handshake, no missing echo);
#   - the fleet saw no failed handshake, and every client was closed exactly once, with 1001,
#     within [hand-over, hand-over + SPREAD + 1 s] (a reconnect that landed on the old process
#     would be closed a second time);
#   - the old process exited 0, and afterwards the new one holds every fleet client
#     (kairos_connections_active on the admin listener, which the new process took too).
#
# usage: bench/upgrade.sh                                      1 000 clients, SPREAD=10000
#        LIVE=300 SPREAD=2000 RESULT=- bash bench/upgrade.sh    (what .ci/run runs)
#
# environment: LIVE [1000], SPREAD ms [10000] (server.close_spread_ms), PARALLEL connect loops
#              [2], KEEP_RUNDIR [0], RESULT file [bench/results/upgrade.md; "-": none]
set -euo pipefail
cd "$(dirname "$0")/.."
LIVE=${LIVE:-1000}
SPREAD=${SPREAD:-10000}
PARALLEL=${PARALLEL:-2}
RESULT=${RESULT:-bench/results/upgrade.md}
log() { echo "[upgrade $(date +%H:%M:%S)] $*" >&2; }
now_ms() { date +%s%3N; }

ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
nofile=$(ulimit -n)
need=$((2 * LIVE + 256))
if [ "$nofile" != unlimited ] && [ "$need" -gt "$nofile" ]; then
  echo "upgrade.sh: $LIVE clients need ulimit -n >= $need; the hard limit here is $nofile." >&2
  exit 2
fi

log "building (release)"
cargo build --release --quiet --bin kairos-gateway --example echo_backend --example loadgen
bin=target/release
run=$(mktemp -d "${TMPDIR:-/tmp}/kairos-upgrade.XXXXXX")
pids=()
new_pid=""
cleanup() {
  local status=$?
  for p in "${pids[@]}" $new_pid; do kill "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
  if [ "$status" = 0 ] && [ "${KEEP_RUNDIR:-0}" = 0 ]; then
    rm -rf "$run"
  else
    echo "upgrade.sh: run directory kept: $run" >&2
  fi
}
trap cleanup EXIT

wait_until() { # SECONDS WHAT COMMAND...: polls COMMAND every 50 ms until it succeeds
  local deadline=$(($(date +%s) + $1)) what=$2
  shift 2
  until "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "upgrade.sh: timed out waiting until $what" >&2
      tail -20 "$run/gateway.log" >&2
      return 1
    fi
    sleep 0.05
  done
}
first() { grep -m1 -oE "$2" "$1" 2> /dev/null; }
connected() { grep CONNECTED "$run/fleet.out" 2> /dev/null | tail -1 | cut -d' ' -f2; }
all_connected() { [ "$(connected)" = "$LIVE" ]; }
metric_sum() { # NAME: the sum of the series NAME on the admin listener
  python3 - "$admin_port" "$1" << 'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
text = b"".join(iter(lambda: s.recv(65536), b"")).decode()
print(int(sum(float(l.split()[-1]) for l in text.splitlines()
              if l.startswith(sys.argv[2] + "{") or l.startswith(sys.argv[2] + " "))))
PY
}

# The fleet's backend greets each client with its name; the connect loop's only echoes.
"$bin/examples/echo_backend" 0 --name b1 > "$run/named.log" 2>&1 &
pids+=($!)
"$bin/examples/echo_backend" 0 > "$run/echo.log" 2>&1 &
pids+=($!)
wait_until 20 "the echo backends listen" first "$run/named.log" 'listening on'
wait_until 20 "the echo backends listen" first "$run/echo.log" 'listening on'
named_port=$(first "$run/named.log" '127\.0\.0\.1:[0-9]+' | cut -d: -f2)
echo_port=$(first "$run/echo.log" '127\.0\.0\.1:[0-9]+' | cut -d: -f2)
cat > "$run/gateway.json" << JSON
{ "version": 1,
  "server": { "host": "127.0.0.1", "port": 0, "workers": 1, "close_spread_ms": $SPREAD,
              "shutdown_timeout_ms": $((SPREAD + 10000)) },
  "admin": { "host": "127.0.0.1", "port": 0 },
  "routers": [
    { "protocol": "websocket", "external_path": "/ws/chat", "internal_path": "/ws",
      "methods": ["GET"], "backends": [ { "host": "ws://127.0.0.1", "port": $named_port } ] },
    { "protocol": "websocket", "external_path": "/ws/echo", "internal_path": "/ws",
      "methods": ["GET"], "backends": [ { "host": "ws://127.0.0.1", "port": $echo_port } ] } ] }
JSON
# The new process writes to the same log (it inherits the old one's stderr).
RUST_LOG=info "$bin/kairos-gateway" --config "$run/gateway.json" > "$run/gateway.log" 2>&1 &
old_pid=$!
pids+=("$old_pid")
wait_until 20 "the gateway listens" first "$run/gateway.log" 'admin listening on'
port=$(first "$run/gateway.log" 'listening on 127\.0\.0\.1:[0-9]+' | sed 's/.*://')
admin_port=$(first "$run/gateway.log" 'admin listening on 127\.0\.0\.1:[0-9]+' | sed 's/.*://')
url="ws://127.0.0.1:$port/ws/chat"
echo_url="ws://127.0.0.1:$port/ws/echo"

# The fleet runs until after the old process is gone; the connect loop covers the upgrade.
fleet_secs=$((SPREAD / 1000 + 16))
"$bin/examples/loadgen" --url "$url" --mode fleet --connections "$LIVE" --keys 100 \
  --duration "$fleet_secs" --events "$run/events" < /dev/null > "$run/fleet.out" 2> "$run/fleet.log" &
fleet=$!
pids+=("$fleet")
wait_until 30 "$LIVE clients are connected" all_connected
log "$LIVE clients connected to the old process ($old_pid); starting $PARALLEL connect loops"
loop_secs=$((SPREAD / 1000 + 6))
"$bin/examples/loadgen" --url "$echo_url" --mode connect --parallel "$PARALLEL" --duration "$loop_secs" \
  > "$run/connect.out" 2> "$run/connect.log" &
loop=$!
pids+=("$loop")
sleep 2 # the loop runs before the signal, as during a real deploy
t_signal=$(now_ms)
log "SIGUSR2 to $old_pid"
kill -USR2 "$old_pid"
wait_until 20 "the new process accepts" first "$run/gateway.log" 'upgrade: new process [0-9]+'
t_handover=$(now_ms)
new_pid=$(first "$run/gateway.log" 'upgrade: new process [0-9]+' | awk '{print $NF}')
log "new process $new_pid accepts ($((t_handover - t_signal)) ms after the signal); the old one drains"
set +e
wait "$old_pid"
old_status=$?
set -e
t_old_exit=$(now_ms)
log "the old process exited with status $old_status, $((t_old_exit - t_handover)) ms after the hand-over"
wait_until 30 "every client is back" all_connected
active=$(metric_sum kairos_connections_active)
log "the new process holds $active connections"
wait "$loop"
wait "$fleet"
kill -0 "$new_pid" 2> /dev/null || { echo "upgrade.sh: the new process died" >&2; exit 1; }

summary=$(python3 - "$run" "$LIVE" "$SPREAD" "$t_signal" "$t_handover" "$t_old_exit" \
  "$old_status" "$active" << 'PY'
import json, sys
run, live, spread = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t_sig, t_hand, t_exit, status, active = map(int, sys.argv[4:9])
fleet = json.loads(open(f"{run}/fleet.out").read().splitlines()[-1])
loop = json.loads(open(f"{run}/connect.out").read().splitlines()[-1])
closes = [l.split() for l in open(f"{run}/events") if l.split()[2] == "close"]
codes = {}
for c in closes:
    codes[c[3]] = codes.get(c[3], 0) + 1
clients = {c[1] for c in closes}
at = sorted(int(c[0]) - t_hand for c in closes)
inside = sum(1 for t in at if -100 <= t <= spread + 1000)
checks = {
    "connect loop: at least 200 connections/s": loop["connects_per_sec"] >= 200,
    "connect loop: no error": loop["errors"] == 0,
    "fleet: no failed handshake": fleet["failed_handshakes"] == 0,
    "fleet: every client closed once, with 1001": codes == {"1001": live} and len(clients) == live,
    "fleet: every close inside the window": inside == live,
    "fleet: every client back": fleet["not_back"] == 0,
    "old process: exit status 0": status == 0,
    "new process: holds every client": active >= live,
}
rows = [
    ("live clients", f"{live:,}"),
    ("close_spread_ms", f"{spread:,}"),
    ("SIGUSR2 to hand-over (new process accepts)", f"{t_hand - t_sig:,} ms"),
    ("hand-over to the old process's exit", f"{t_exit - t_hand:,} ms"),
    ("connect loop", f"{loop['cycles']:,} cycles, {loop['connects_per_sec']:,.0f}/s, "
                     f"{loop['errors']} errors ({loop['first_error'] or '-'})"),
    ("connect cycle p50 / p99 / max", " / ".join(f"{loop[k] or 0:,.0f}" for k in
                                                 ("p50_us", "p99_us", "max_us")) + " µs"),
    ("fleet failed handshakes", f"{fleet['failed_handshakes']} ({fleet['first_error'] or '-'})"),
    ("fleet closes by code", ", ".join(f"{k}: {v:,}" for k, v in sorted(codes.items()))),
    ("first / last close after the hand-over", f"{at[0]:,} / {at[-1]:,} ms" if at else "-"),
    ("closes inside [0, spread + 1 s]", f"{inside:,} of {len(at):,}"),
    ("time back after a close: p99 / max", f"{fleet['p99_back_ms'] or 0:,} / {fleet['max_back_ms'] or 0:,} ms"),
    ("new process's open connections after the old one exited", f"{active:,}"),
    ("old process exit status", f"{status}"),
]
for k, v in rows:
    print(f"| {k} | {v} |")
for k, ok in checks.items():
    print(f"| check: {k} | {'pass' if ok else 'FAIL'} |")
PY
)
echo "$summary"
if [ "$RESULT" != - ]; then
  {
    echo "# Binary upgrade under load (SIGUSR2)"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2> /dev/null || echo ?)," \
      "\`LIVE=$LIVE SPREAD=$SPREAD PARALLEL=$PARALLEL bench/upgrade.sh\`, $(nproc) CPUs," \
      "release build, one gateway worker, the example echo backend."
    echo
    echo "| | |"
    echo "|---|---|"
    echo "$summary"
  } > "$RESULT"
fi
if grep -q FAIL <<< "$summary"; then
  echo "upgrade.sh: failed" >&2
  exit 1
fi
log "passed"
