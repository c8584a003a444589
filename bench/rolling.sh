#!/usr/bin/env bash
# Rolling restart behind a real balancer: HAProxy (TCP mode, bench/haproxy.cfg) in front of three
# gateways with one config (a route to three named echo backends, sticky on `query:key`), and a
# fleet of clients (loadgen --mode fleet) that stay connected and come back with jittered
# backoff when closed. The gateways are restarted one at a time: SIGTERM (1001 to every client,
# spread over SPREAD ms), wait for the exit, start it again on the same ports, wait until HAProxy
# has it back and every client is connected again, then the next. All along, LOOPS loops make
# new connections through HAProxy (loadgen --mode connect, on a second route), so that connects
# reach each gateway as it gets its SIGTERM. Passes only when the clients and the loops
# saw no failed handshake, every close was a 1001, every client was back within SPREAD + 5 s of
# its gateway's SIGTERM (and within 5 s of its own close), no key was served by two backends,
# and every gateway exited with status 0.
#
# usage: bench/rolling.sh                                       1 500 clients, SPREAD=10000
#        CLIENTS=300 SPREAD=2000 RESULT=- bash bench/rolling.sh  (what .ci/run runs)
#
# environment: CLIENTS [1500], KEYS [100], SPREAD ms [10000] (server.close_spread_ms),
#              OPEN_RATE first connects a second [500], LOOPS connect loops [1], KEEP_RUNDIR [0],
#              RESULT file to write the summary to [bench/results/rolling-restart.md; "-": none]
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-1500}
KEYS=${KEYS:-100}
SPREAD=${SPREAD:-10000}
OPEN_RATE=${OPEN_RATE:-500}
LOOPS=${LOOPS:-1}
RESULT=${RESULT:-bench/results/rolling-restart.md}
BACK_SLACK=5000 # ms: "the spread plus a few seconds"
log() { echo "[rolling $(date +%H:%M:%S)] $*" >&2; }
now_ms() { date +%s%3N; }

# A gateway (and HAProxy) holds two sockets per client, all of them in the worst case.
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
nofile=$(ulimit -n)
need=$((2 * CLIENTS + 64))
if [ "$nofile" != unlimited ] && [ "$need" -gt "$nofile" ]; then
  echo "rolling.sh: $CLIENTS clients need ulimit -n >= $need; the hard limit here is $nofile." \
    "Raise it or run CLIENTS=$(((nofile - 64) / 2))." >&2
  exit 2
fi

if ! command -v haproxy > /dev/null; then
  log "installing haproxy (apt-get)"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends haproxy > /dev/null
fi
log "building (release)"
cargo build --release --quiet --bin kairos-gateway --example echo_backend --example loadgen
bin=target/release

run=$(mktemp -d "${TMPDIR:-/tmp}/kairos-rolling.XXXXXX")
pids=()
declare -A gw_pid=()
fleet_pid=""
cleanup() {
  local status=$?
  exec 3>&- 2> /dev/null || true
  for p in "${pids[@]}" "${gw_pid[@]}" $fleet_pid; do kill "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
  if [ "$status" = 0 ] && [ "${KEEP_RUNDIR:-0}" = 0 ]; then
    rm -rf "$run"
  else
    echo "rolling.sh: run directory kept: $run" >&2
  fi
}
trap cleanup EXIT

wait_until() { # SECONDS WHAT COMMAND...: polls COMMAND every 0.1 s until it succeeds
  local deadline=$(($(date +%s) + $1)) what=$2
  shift 2
  until "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "rolling.sh: timed out waiting until $what" >&2
      return 1
    fi
    sleep 0.1
  done
}
http_status() { # PORT PATH: the status of GET PATH on 127.0.0.1:PORT, 000 when nobody answers
  (exec 5<> "/dev/tcp/127.0.0.1/$1" &&
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&5 &&
    read -r -t 2 _ code _ <&5 && echo "$code") 2> /dev/null || echo 000
}
haproxy_stat() { # FIELD...: per row of the backend `gateways` (g1, g2, g3, BACKEND), its name
  # and these fields of HAProxy's `show stat`
  python3 - "$run/haproxy.sock" "$@" << 'PY'
import csv, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
data = b"".join(iter(lambda: s.recv(65536), b"")).decode()
for row in csv.DictReader(data.lstrip("# ").splitlines()):
    if row["pxname"] == "gateways":
        print(row["svname"], *(row[f] for f in sys.argv[2:]))
PY
}
haproxy_servers() { # one line per gateway: NAME STATUS CONNECTIONS
  haproxy_stat status scur | grep '^g'
}
haproxy_has() { # NAME STATUS
  haproxy_servers | grep -q "^$1 $2 "
}
connected() { grep CONNECTED "$run/fleet.out" 2> /dev/null | tail -1 | cut -d' ' -f2; }
all_connected() { [ "$(connected)" = "$CLIENTS" ]; }
ready() { [ "$(http_status "$1" /readyz)" = 200 ]; }

# Ports: the gateways restart on theirs, so they are chosen here (free now, all different).
read -r hp_port g1 g2 g3 a1 a2 a3 <<< "$(python3 -c '
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')"
gw_port=([1]=$g1 [2]=$g2 [3]=$g3)
admin_port=([1]=$a1 [2]=$a2 [3]=$a3)

backends=""
for b in 1 2 3; do
  "$bin/examples/echo_backend" 0 --name "b$b" > "$run/b$b.log" 2>&1 &
  pids+=($!)
  wait_until 20 "backend b$b listens" grep -q 'listening on' "$run/b$b.log"
  port=$(grep -m1 -oE '127\.0\.0\.1:[0-9]+' "$run/b$b.log" | cut -d: -f2)
  backends+="${backends:+, }{ \"host\": \"ws://127.0.0.1\", \"port\": $port }"
done
# The connect loops' backend: a plain echo (no greeting), behind route /ws/echo.
"$bin/examples/echo_backend" 0 > "$run/plain.log" 2>&1 &
pids+=($!)
wait_until 20 "the plain echo backend listens" grep -q 'listening on' "$run/plain.log"
plain_port=$(grep -m1 -oE '127\.0\.0\.1:[0-9]+' "$run/plain.log" | cut -d: -f2)
start_gateway() { # N: gateway N on its ports, logging to gN.<start>.log
  local n=$1
  cat > "$run/g$n.json" << JSON
{ "version": 1,
  "server": { "host": "127.0.0.1", "port": ${gw_port[$n]}, "close_spread_ms": $SPREAD,
              "shutdown_timeout_ms": $((SPREAD + 10000)) },
  "admin": { "host": "127.0.0.1", "port": ${admin_port[$n]} },
  "routers": [ { "protocol": "websocket", "external_path": "/ws/chat", "internal_path": "/ws",
    "methods": ["GET"], "sticky": { "key": "query:key" }, "backends": [ $backends ] },
    { "protocol": "websocket", "external_path": "/ws/echo", "internal_path": "/ws",
      "methods": ["GET"], "backends": [ { "host": "ws://127.0.0.1", "port": $plain_port } ] } ] }
JSON
  RUST_LOG=warn,kairos_gateway=info "$bin/kairos-gateway" --config "$run/g$n.json" \
    > "$run/g$n.$(now_ms).log" 2>&1 3>&- &
  gw_pid[$n]=$! # (3>&-: a restarted gateway must not hold the fleet's FIFO open)
}
for n in 1 2 3; do start_gateway $n; done
for n in 1 2 3; do wait_until 20 "gateway g$n is ready" ready "${admin_port[$n]}"; done

sed -e "s|@RUNDIR@|$run|g" -e "s|@PORT@|$hp_port|g" -e "s|@MAXCONN@|$((CLIENTS + 1000))|g" \
  -e "s|@G1@|$g1|; s|@G2@|$g2|; s|@G3@|$g3|; s|@A1@|$a1|; s|@A2@|$a2|; s|@A3@|$a3|" \
  bench/haproxy.cfg > "$run/haproxy.cfg"
haproxy -db -f "$run/haproxy.cfg" > "$run/haproxy.log" 2>&1 &
pids+=($!)
for n in 1 2 3; do wait_until 20 "HAProxy has g$n up" haproxy_has "g$n" UP; done

# The fleet runs until its stdin (a FIFO held open on fd 3) ends; --duration is a safety bound.
mkfifo "$run/fleet.stop"
"$bin/examples/loadgen" --url "ws://127.0.0.1:$hp_port/ws/chat" --mode fleet \
  --connections "$CLIENTS" --keys "$KEYS" --open-rate "$OPEN_RATE" --duration 3600 \
  --events "$run/events.txt" < "$run/fleet.stop" > "$run/fleet.out" 2> "$run/fleet.log" &
fleet_pid=$!
exec 3> "$run/fleet.stop"
log "$CLIENTS clients ($KEYS keys, $OPEN_RATE/s) through HAProxy :$hp_port to gateways :$g1 :$g2 :$g3"
wait_until $((CLIENTS / OPEN_RATE + 30)) "all $CLIENTS clients are connected" all_connected
log "all connected: $(haproxy_servers | awk '{printf "%s %s  ", $1, $3}')"

# New connections all along: LOOPS loops of connect + handshake + one echo + close through
# HAProxy, so that connects reach each gateway at the moment of its SIGTERM.
loop_secs=$((3 * (SPREAD / 1000 + 3) + 2))
"$bin/examples/loadgen" --url "ws://127.0.0.1:$hp_port/ws/echo" --mode connect \
  --parallel "$LOOPS" --duration "$loop_secs" > "$run/connect.out" 2> "$run/connect.log" &
loop_pid=$!
pids+=("$loop_pid")
t_loop_end=$(($(now_ms) + loop_secs * 1000))

# restarts.tsv: gateway, SIGTERM, exit, ready, HAProxy up, all connected (unix ms), exit status,
# clients per gateway after it.
for n in 1 2 3; do
  pid=${gw_pid[$n]}
  t_term=$(now_ms)
  kill -TERM "$pid"
  log "g$n: SIGTERM (pid $pid); waiting for its exit"
  status=0
  wait "$pid" || status=$?
  t_exit=$(now_ms)
  start_gateway "$n"
  wait_until 20 "g$n is ready again" ready "${admin_port[$n]}"
  t_ready=$(now_ms)
  wait_until 20 "HAProxy has g$n up again" haproxy_has "g$n" UP
  t_up=$(now_ms)
  wait_until $((BACK_SLACK / 1000 + 5)) "all $CLIENTS clients are back" all_connected
  t_back=$(now_ms)
  spread=$(haproxy_servers | awk '{printf "%s%s %s", sep, $1, $3; sep=", "}')
  printf 'g%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$t_term" "$t_exit" "$t_ready" "$t_up" \
    "$t_back" "$status" "$spread" >> "$run/restarts.tsv"
  log "g$n: exit status $status after $((t_exit - t_term)) ms; up in HAProxy $((t_up - t_exit)) ms" \
    "later; all clients connected; now $spread"
done

# HAProxy's connects to a gateway that failed for good (econ), were retried on the same one
# (wretr) or redispatched to another (wredis, a connect refused by a draining gateway).
haproxy_stat econ wretr wredis | grep '^BACKEND' > "$run/haproxy.counters"
[ "$(now_ms)" -le "$t_loop_end" ] || log "warning: the restarts outlasted the connect loops"
wait "$loop_pid" || { echo "rolling.sh: the connect loops failed" >&2; cat "$run/connect.log" >&2; exit 1; }
grep '^{' "$run/connect.out" | tail -1 > "$run/connect.json"
exec 3>&- # the fleet's end of file: it closes every connection and reports
wait "$fleet_pid" || { echo "rolling.sh: the load generator failed" >&2; cat "$run/fleet.log" >&2; exit 1; }
fleet_pid=""
grep '^{' "$run/fleet.out" | tail -1 > "$run/fleet.json"

summary=$(python3 - "$run" "$CLIENTS" "$KEYS" "$SPREAD" "$BACK_SLACK" << 'PY'
import collections, json, sys
run, clients, keys, spread, slack = sys.argv[1], *map(int, sys.argv[2:])
r = json.load(open(f"{run}/fleet.json"))
loop = json.load(open(f"{run}/connect.json"))
restarts = [line.rstrip("\n").split("\t") for line in open(f"{run}/restarts.tsv")]
econ, wretr, wredis = open(f"{run}/haproxy.counters").read().split()[1:]
# Per client: its events in order, to find when each client closed in a restart came back.
events = collections.defaultdict(list)
for line in open(f"{run}/events.txt"):
    ms, client, kind, value = line.split()
    events[int(client)].append((int(ms), kind, value))
rows, failures = [], []
for name, term, exit_, ready, up, back, status, conns in restarts:
    term, exit_, ready, up = int(term), int(exit_), int(ready), int(up)
    closed = last_back = 0
    for evs in events.values():
        for i, (ms, kind, _) in enumerate(evs):
            if kind == "close" and term <= ms <= exit_:
                closed += 1
                nxt = next((m for m, k, _ in evs[i + 1:] if k == "open"), None)
                last_back = max(last_back, (nxt or 10**15) - term)
    rows.append(f"| {name} | {status} | {closed:,} | {exit_ - term:,} | {up - exit_:,} | "
                f"{last_back:,} | {conns} |")
    if status != "0":
        failures.append(f"{name} exited with status {status}")
    if last_back > spread + slack:
        failures.append(f"{name}: the last client was back {last_back} ms after the SIGTERM")
codes = r["closes_by_code"]
checks = [
    (r["failed_handshakes"] == 0, f"{r['failed_handshakes']} failed handshakes ({r['first_error']})"),
    ((r["max_back_ms"] or 0) <= slack, f"a client took {r['max_back_ms']} ms to come back"),
    (r["sticky_violations"] == 0, f"{r['sticky_violations']} keys served by two backends"),
    (r["not_back"] == 0, f"{r['not_back']} clients not connected at the end"),
    (set(codes) == {"1001"}, f"closes by code: {codes}"),
    (r["errors"] == 0, f"{r['errors']} other errors ({r['first_error']})"),
    (loop["errors"] == 0, f"connect loops: {loop['errors']} errors ({loop['first_error']})"),
]
failures += [msg for ok, msg in checks if not ok]
print(f"| clients / keys | {clients:,} / {keys} |")
print(f"| close spread | {spread:,} ms |")
print(f"| handshakes (101) / failed | {r['connects']:,} / {r['failed_handshakes']} |")
print(f"| closes by code | {', '.join(f'{c}: {n:,}' for c, n in codes.items()) or '-'} |")
print(f"| time back after a close: p99 / max | {r['p99_back_ms']} / {r['max_back_ms']} ms |")
print(f"| clients not back at the end | {r['not_back']} |")
print(f"| keys served by two backends | {r['sticky_violations']} |")
print(f"| connections per backend | {', '.join(f'{b}: {n:,}' for b, n in r['backends_seen'].items())} |")
print(f"| other errors | {r['errors']} (greeting missing: {r['no_greeting']}) |")
print(f"| HAProxy connects: failed / retried on the same gateway / redispatched to another | {econ} / {wretr} / {wredis} |")
print(f"| first error | {r['first_error'] or '-'} |")
print(f"| connect loops through the restarts (connect, handshake, echo, close) | "
      f"{loop['cycles']:,} cycles, {loop['connects_per_sec']:,.0f}/s, {loop['errors']} errors "
      f"({loop['first_error'] or '-'}) |")
print()
print("| restart | exit status | clients closed (1001) | SIGTERM to exit, ms | exit to HAProxy up, ms "
      "| SIGTERM to last client back, ms | clients per gateway after |")
print("|---|---|---|---|---|---|---|")
print("\n".join(rows))
open(f"{run}/failures", "w").write("\n".join(failures))
PY
)
echo "$summary"
if [ "$RESULT" != - ]; then
  {
    echo "# Rolling restart: $CLIENTS clients, three gateways behind HAProxy"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2> /dev/null || echo ?)," \
      "\`CLIENTS=$CLIENTS KEYS=$KEYS SPREAD=$SPREAD bench/rolling.sh\`, $(haproxy -v | head -1 | cut -d' ' -f1-3)," \
      "$(nproc) CPUs, ulimit -n $nofile. What it does: [bench/README.md](../README.md#rolling-restart-behind-haproxy)."
    echo
    echo "| | |"
    echo "|---|---|"
    echo "$summary"
  } > "$RESULT"
fi
if [ -s "$run/failures" ]; then
  echo "rolling.sh: FAILED:" >&2
  sed 's/^/  /' "$run/failures" >&2
  exit 1
fi
log "passed: no failed handshake, every client back, every key on one backend, every exit 0"
