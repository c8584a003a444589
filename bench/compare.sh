#!/usr/bin/env bash
# Benchmarks kairos-gateway against the echo backend alone ("direct") and against nginx (one
# worker), with examples/loadgen.rs, and prints one table of medians (also written to
# bench/results/latest.md). See bench/README.md for what each row means.
#
# usage: bench/compare.sh [--quick]
#
# environment (defaults in brackets; --quick changes the ones marked *):
#   ROUNDS           rounds of every workload against every target, at least 2 [2; *1]
#   DURATION         seconds per load run [10; *2]
#   GATEWAY_WORKERS  the gateway's "workers" [1]
#   NGINX_WORKERS    nginx's worker_processes (CPU and RSS are summed over them) [1]
#   LOADGEN_THREADS  the load generator's executor threads [1]
#   HOLD_SIZES       idle connection counts for the hold runs ["2000 10000"; *"500 2000"]
#   KEEP_RUNDIR      1: keep the run directory (logs, raw results) even on success [0]
#
# Needs: the Rust toolchain, Python 3, and nginx (installed with apt-get when missing; root).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

quick=0
for arg in "$@"; do
  case $arg in
    --quick) quick=1 ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done
if [ $quick = 1 ]; then
  ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-2}; HOLD_SIZES=${HOLD_SIZES:-"500 2000"}
else
  ROUNDS=${ROUNDS:-2}; DURATION=${DURATION:-10}; HOLD_SIZES=${HOLD_SIZES:-"2000 10000"}
  if [ "$ROUNDS" -lt 2 ]; then
    echo "compare.sh: ROUNDS=$ROUNDS raised to 2 (medians need two rounds; --quick runs one)" >&2
    ROUNDS=2
  fi
fi
GATEWAY_WORKERS=${GATEWAY_WORKERS:-1}
NGINX_WORKERS=${NGINX_WORKERS:-1}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
KEEP_RUNDIR=${KEEP_RUNDIR:-0}

log() { echo "[compare $(date +%H:%M:%S)] $*" >&2; }

# --- nginx ------------------------------------------------------------------------------------
find_nginx() {
  command -v nginx 2>/dev/null && return 0
  [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx && return 0
  return 1
}
if ! NGINX=$(find_nginx); then
  log "nginx is missing: installing it with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # RUNLEVEL=1: the package's init script must not start a system nginx on port 80.
  RUNLEVEL=1 apt-get install -y -qq nginx-light > /dev/null ||
    RUNLEVEL=1 apt-get install -y -qq nginx > /dev/null
  NGINX=$(find_nginx) || { echo "compare.sh: nginx still not found after apt-get" >&2; exit 1; }
fi
nginx_version=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')

# --- build ------------------------------------------------------------------------------------
log "building (release)"
cargo build --release --bin kairos-gateway --example echo_backend --example loadgen
target_dir=$(cargo metadata --format-version 1 --no-deps 2> /dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' ||
  echo "$repo/target")
# What was built (the tree may change while the benchmark runs).
commit=$(git rev-parse --short HEAD 2> /dev/null || echo unknown)
if [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2> /dev/null)" ]; then
  commit="$commit (+ uncommitted changes)"
fi
gateway_bin=$target_dir/release/kairos-gateway
echo_bin=$target_dir/release/examples/echo_backend
loadgen_bin=$target_dir/release/examples/loadgen

# --- limits and the run directory ---------------------------------------------------------------
want_nofile=200000
ulimit -n $want_nofile 2> /dev/null || ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
nofile=$(ulimit -n)
if [ "$nofile" != "$want_nofile" ]; then
  log "ulimit -n is $nofile (wanted $want_nofile; the hard limit is $(ulimit -Hn))"
fi
for c in $HOLD_SIZES; do
  if [ "$nofile" != unlimited ] && [ $((2 * c + 100)) -gt "$nofile" ]; then
    log "warning: holding $c connections through a proxy needs about $((2 * c + 100)) open" \
      "files in the proxy process; the limit is $nofile, so expect failures near the end"
  fi
done
clk_tck=$(getconf CLK_TCK 2> /dev/null || echo 100)

rundir=$(mktemp -d "${TMPDIR:-/tmp}/kairos-bench.XXXXXX")
results=$rundir/results.jsonl
: > "$results"
notes=$rundir/notes.txt
: > "$notes"

# Every process this script starts is in this list (nginx: the master; it takes its worker down).
pids=()
cleanup() {
  local rc=$?
  set +e
  exec 9>&-
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2> /dev/null; done
  # nginx's worker goes with its master; in case the master was gone first:
  [ -n "${nginx_worker:-}" ] && kill $nginx_worker 2> /dev/null
  if [ $rc -eq 0 ] && [ "$KEEP_RUNDIR" != 1 ]; then
    rm -rf "$rundir"
  else
    echo "run directory kept: $rundir" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

stop_pid() {
  kill "$1" 2> /dev/null || true
  wait "$1" 2> /dev/null || true
  forget_pid "$1"
}

# Wait (with a deadline) until FILE has a line matching PATTERN; print the first match.
wait_for_line() {
  local file=$1 pattern=$2 secs=${3:-30} pid=${4:-}
  local deadline=$((SECONDS + secs))
  while [ $SECONDS -lt $deadline ]; do
    if grep -qE "$pattern" "$file" 2> /dev/null; then
      grep -oE "$pattern" "$file" | head -n1
      return 0
    fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2> /dev/null; then break; fi
    sleep 0.05
  done
  echo "timed out waiting for '$pattern' in $file:" >&2
  tail -n 20 "$file" >&2 || true
  return 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {
  local port=$1 deadline=$((SECONDS + 30))
  while [ $SECONDS -lt $deadline ]; do
    if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

# utime + stime of the given processes, in clock ticks (/proc/PID/stat fields 14 and 15).
cpu_ticks() {
  local total=0 p line f
  for p in "$@"; do
    line=$(cat "/proc/$p/stat" 2> /dev/null) || continue
    # Fields after "(comm)" start with field 3 (state): utime is f[11], stime f[12].
    read -ra f <<< "${line##*) }"
    total=$((total + f[11] + f[12]))
  done
  echo $total
}

# CPU ticks the whole machine spent on processes: /proc/stat user + nice + system + irq +
# softirq. (With tick-based accounting, a tick that lands in the loopback network's softirq
# counts as softirq here and as system time of the process it interrupted; steal is neither.)
machine_busy_ticks() {
  local f
  read -ra f < /proc/stat
  echo $((f[1] + f[2] + f[3] + f[6] + f[7]))
}

# VmRSS of the given processes, summed, in KiB.
rss_kb() {
  local p sum=0 kb
  for p in "$@"; do
    kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2> /dev/null) || kb=0
    sum=$((sum + ${kb:-0}))
  done
  echo "$sum"
}

children_of() { # PID: its child processes
  local s line f
  for s in /proc/[0-9]*/stat; do
    line=$(cat "$s" 2> /dev/null) || continue
    read -ra f <<< "${line##*) }"
    if [ "${f[1]}" = "$1" ]; then
      s=${s#/proc/}
      echo "${s%/stat}"
    fi
  done
}

# --- the three servers -------------------------------------------------------------------------
echo_port=$(free_port)
nginx_port=$(free_port)
starts=0

start_echo() {
  starts=$((starts + 1))
  echo_log=$rundir/echo.$starts.log
  RUST_LOG=warn "$echo_bin" "$echo_port" > "$echo_log" 2>&1 &
  echo_pid=$!
  pids+=("$echo_pid")
  wait_for_line "$echo_log" 'listening on ws://127\.0\.0\.1:[0-9]+' 30 "$echo_pid" > /dev/null
}

cat > "$rundir/gateway.json" << JSON
{
  "version": 1,
  "server": { "host": "127.0.0.1", "port": 0, "workers": $GATEWAY_WORKERS },
  "routers": [
    { "protocol": "websocket",
      "backends": [ { "host": "ws://127.0.0.1", "port": $echo_port, "weight": 1 } ],
      "external_path": "/ws/chat", "internal_path": "/ws", "methods": ["GET"] }
  ]
}
JSON

start_gateway() {
  starts=$((starts + 1))
  gateway_log=$rundir/gateway.$starts.log
  env -u KAIROS_HOST -u KAIROS_PORT -u KAIROS_CONFIG_PATH RUST_LOG=warn,kairos_gateway=info,kairos_gateway::access=off \
    "$gateway_bin" --config "$rundir/gateway.json" > "$gateway_log" 2>&1 &
  gateway_pid=$!
  pids+=("$gateway_pid")
  gateway_port=$(wait_for_line "$gateway_log" 'listening on 127\.0\.0\.1:[0-9]+' 30 "$gateway_pid" |
    sed 's/.*://')
}

mkdir -p "$rundir/nginx"
for d in client_body proxy fastcgi uwsgi scgi; do mkdir -p "$rundir/nginx/$d"; done
sed -e "s|@RUNDIR@|$rundir/nginx|g" -e "s|@PORT@|$nginx_port|g" \
  -e "s|@BACKEND_PORT@|$echo_port|g" -e "s|@NOFILE@|$nofile|g" \
  -e "s|@WORKERS@|$NGINX_WORKERS|g" \
  bench/nginx.conf > "$rundir/nginx/nginx.conf"
nginx_args=(-p "$rundir/nginx/" -c "$rundir/nginx/nginx.conf" -e "$rundir/nginx/error.log")
"$NGINX" -t -q "${nginx_args[@]}" || { echo "compare.sh: nginx rejects its config" >&2; exit 1; }

start_nginx() {
  "$NGINX" "${nginx_args[@]}" &
  nginx_pid=$!
  pids+=("$nginx_pid")
  wait_for_port "$nginx_port" || { echo "nginx did not start:" >&2; cat "$rundir/nginx/error.log" >&2; exit 1; }
  # nginx_worker: its worker processes, space-separated.
  nginx_worker=
  local deadline=$((SECONDS + 10))
  while [ "$(echo $nginx_worker | wc -w)" -lt "$NGINX_WORKERS" ] && [ $SECONDS -lt $deadline ]; do
    nginx_worker=$(children_of "$nginx_pid" | tr '\n' ' ')
    [ "$(echo $nginx_worker | wc -w)" -ge "$NGINX_WORKERS" ] || sleep 0.05
  done
  [ -n "$nginx_worker" ] || { echo "compare.sh: no nginx worker process" >&2; exit 1; }
}

stop_nginx() {
  stop_pid "$nginx_pid"
  # The worker exits with its master; make sure before the port is reused.
  while kill -0 $nginx_worker 2> /dev/null; do sleep 0.05; done
}

log "starting the echo backend, the gateway ($GATEWAY_WORKERS worker(s)) and nginx ($NGINX_WORKERS worker(s))"
start_echo
start_gateway
start_nginx
sleep 0.5
gateway_idle_rss=$(rss_kb "$gateway_pid")
nginx_idle_rss=$(rss_kb $nginx_worker)
echo_idle_rss=$(rss_kb "$echo_pid")
binary_size=$(stat -c %s "$gateway_bin")
if command -v strip > /dev/null; then
  strip -o "$rundir/kairos-gateway.stripped" "$gateway_bin"
  stripped_size=$(stat -c %s "$rundir/kairos-gateway.stripped")
else
  stripped_size=$binary_size
fi
log "echo backend :$echo_port, gateway :$gateway_port, nginx :$nginx_port (workers $nginx_worker)"

url_of() {
  case $1 in
    direct) echo "ws://127.0.0.1:$echo_port/ws" ;;
    gateway) echo "ws://127.0.0.1:$gateway_port/ws/chat" ;;
    nginx) echo "ws://127.0.0.1:$nginx_port/ws/chat" ;;
  esac
}
# The processes whose CPU is counted (nginx: master + worker) and the one whose memory is.
cpu_pids_of() {
  case $1 in
    direct) echo "$echo_pid" ;;
    gateway) echo "$gateway_pid" ;;
    nginx) echo "$nginx_pid $nginx_worker" ;;
  esac
}
rss_pid_of() {
  case $1 in
    direct) echo "$echo_pid" ;;
    gateway) echo "$gateway_pid" ;;
    nginx) echo "$nginx_worker" ;;
  esac
}
restart() {
  case $1 in
    direct) stop_pid "$echo_pid"; start_echo ;;
    gateway) stop_pid "$gateway_pid"; start_gateway ;;
    nginx) stop_nginx; start_nginx ;;
  esac
}

# After each run: are the process under test and the echo backend still alive? If not, say so
# (with the end of its log) and start it again.
check_alive() {
  local target=$1 what=$2 t p
  for t in "$target" direct; do
    for p in $(cpu_pids_of "$t"); do
      if ! kill -0 "$p" 2> /dev/null; then
        echo "$t died during $what via $target (pid $p); restarted" | tee -a "$notes" >&2
        case $t in
          gateway) tail -n 20 "$gateway_log" >&2 ;;
          nginx) tail -n 20 "$rundir/nginx/error.log" >&2 ;;
          direct) tail -n 20 "$echo_log" >&2 ;;
        esac
        restart "$t"
        break
      fi
    done
  done
}

record() { # workload target round cpu_s rss_before rss_after json [others_cpu_s]
  local json=${7:-}
  [ -n "$json" ] || json=null
  printf '{"workload":"%s","target":"%s","round":%s,"cpu_s":%s,"rss_before_kb":%s,"rss_after_kb":%s,"others_cpu_s":%s,"result":%s}\n' \
    "$1" "$2" "$3" "$4" "$5" "$6" "${8:-null}" "$json" >> "$results"
}

# The CPU of every server process this script runs (to tell other processes' CPU apart).
all_server_pids() { echo "$echo_pid $gateway_pid $nginx_pid $nginx_worker"; }

# --- the workloads ------------------------------------------------------------------------------
workloads=(tp64 tp16k rate connect)
for c in $HOLD_SIZES; do workloads+=("hold$c"); done

loadgen_args() {
  case $1 in
    tp64) echo "--mode throughput --connections 50 --inflight 8 --size 64 --duration $DURATION" ;;
    tp16k) echo "--mode throughput --connections 50 --inflight 8 --size 16384 --binary --duration $DURATION" ;;
    rate) echo "--mode rate --connections 50 --rate 5000 --size 128 --duration $DURATION" ;;
    connect) echo "--mode connect --parallel 16 --duration $DURATION" ;;
  esac
}

run_load() { # workload target round
  local w=$1 t=$2 r=$3 out=$rundir/$1.$2.$3 c0 c1 json m0 m1 s0 s1 others
  # shellcheck disable=SC2046
  s0=$(cpu_ticks $(all_server_pids))
  m0=$(machine_busy_ticks)
  # shellcheck disable=SC2046
  c0=$(cpu_ticks $(cpu_pids_of "$t"))
  # shellcheck disable=SC2046
  "$loadgen_bin" --url "$(url_of "$t")" --threads "$LOADGEN_THREADS" $(loadgen_args "$w") \
    > "$out.out" 2> "$out.err" < /dev/null || echo "loadgen exited with $? ($w, $t)" >> "$notes"
  # shellcheck disable=SC2046
  c1=$(cpu_ticks $(cpu_pids_of "$t"))
  m1=$(machine_busy_ticks)
  # shellcheck disable=SC2046
  s1=$(cpu_ticks $(all_server_pids))
  json=$(grep '^{' "$out.out" | tail -n1 || true)
  # Machine CPU minus the servers' minus the load generator's: whatever else was running.
  others=$(printf '%s' "$json" | python3 -c 'import json, sys
try:
    lg = json.load(sys.stdin)["loadgen_cpu_s"]
except Exception:
    lg = 0
print(round(max(0.0, int(sys.argv[1]) / int(sys.argv[2]) - lg), 2))' $((m1 - m0 - (s1 - s0))) "$clk_tck")
  record "$w" "$t" "$r" "$(awk -v d=$((c1 - c0)) -v hz="$clk_tck" 'BEGIN { print d / hz }')" 0 0 "$json" "$others"
  check_alive "$t" "$w"
}

run_hold() { # workload target round
  local w=$1 t=$2 r=$3 out=$rundir/$1.$2.$3 n=${1#hold} before after lg json
  # A fresh process, so that "before" is its idle size and the growth is all this run's.
  restart "$t"
  sleep 0.5
  before=$(rss_kb $(rss_pid_of "$t"))
  rm -f "$rundir/hold.fifo"
  mkfifo "$rundir/hold.fifo"
  # The load generator holds until its stdin (this fifo) closes, i.e. until RSS is read.
  "$loadgen_bin" --url "$(url_of "$t")" --threads "$LOADGEN_THREADS" --mode hold \
    --connections "$n" --hold 600 --batch 200 < "$rundir/hold.fifo" > "$out.out" 2> "$out.err" &
  lg=$!
  pids+=("$lg")
  exec 9> "$rundir/hold.fifo"
  if wait_for_line "$out.out" '^HELD [0-9]+' $((60 + n / 50)) "$lg" > /dev/null; then
    sleep 0.5
    after=$(rss_kb $(rss_pid_of "$t"))
  else
    after=0
    echo "hold $n via $t: no HELD line" >> "$notes"
  fi
  exec 9>&-
  wait "$lg" || echo "loadgen exited with $? ($w, $t)" >> "$notes"
  forget_pid "$lg"
  json=$(grep '^{' "$out.out" | tail -n1 || true)
  record "$w" "$t" "$r" 0 "$before" "$after" "$json"
  check_alive "$t" "$w"
}

targets=(direct gateway nginx)
for ((round = 1; round <= ROUNDS; round++)); do
  for w in "${workloads[@]}"; do
    for t in "${targets[@]}"; do
      log "round $round/$ROUNDS: $w via $t"
      case $w in
        hold*) run_hold "$w" "$t" "$round" ;;
        *) run_load "$w" "$t" "$round" ;;
      esac
    done
  done
done

# --- the table ----------------------------------------------------------------------------------
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mkdir -p bench/results
export B_DATE B_COMMIT B_CMD B_SETTINGS B_MACHINE B_NGINX B_NGINX_WORKERS B_IDLE B_BINARY
B_DATE=$(date -u +"%Y-%m-%d %H:%M UTC")
B_COMMIT=$commit
B_CMD=bench/compare.sh
if [ $quick = 1 ]; then B_CMD="$B_CMD --quick"; fi
B_SETTINGS="ROUNDS=$ROUNDS, DURATION=${DURATION}s, GATEWAY_WORKERS=$GATEWAY_WORKERS, NGINX_WORKERS=$NGINX_WORKERS, LOADGEN_THREADS=$LOADGEN_THREADS, ulimit -n $nofile"
B_MACHINE="$(nproc) CPUs ($cpu_model), $(awk '/^MemTotal/ { printf "%.0f GiB", $2/1048576 }' /proc/meminfo), Linux $(uname -r)"
B_NGINX=$nginx_version
B_NGINX_WORKERS=$NGINX_WORKERS
B_IDLE="gateway idle RSS at start: $gateway_idle_rss KiB (nginx worker: $nginx_idle_rss KiB, echo backend: $echo_idle_rss KiB)"
B_BINARY="gateway release binary: $binary_size bytes; stripped: $stripped_size bytes"
python3 - "$results" "$notes" bench/results/latest.md << 'PY'
import json, os, statistics, sys

results_file, notes_file, out_file = sys.argv[1:4]
rows = [json.loads(l) for l in open(results_file) if l.strip()]
notes = [l.rstrip() for l in open(notes_file) if l.strip()]
targets = ["direct", "gateway", "nginx"]

def runs(w, t):
    return [r for r in rows if r["workload"] == w and r["target"] == t]

def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

def metric(w, t, f, agg=None):
    out = []
    for r in runs(w, t):
        try:
            out.append(f(r))
        except (TypeError, KeyError, ZeroDivisionError):
            out.append(None)
    if agg is not None:
        vals = [v for v in out if v is not None]
        return agg(vals) if vals else None
    return med(out)

def res(key):
    return lambda r: r["result"][key]

def cpu_per(key):
    return lambda r: r["cpu_s"] * 1e6 / r["result"][key]

def loadgen_cpu(r):
    return r["result"]["loadgen_cpu_s"] * 100 / r["result"]["duration_s"]

def others_cpu(r):
    return r["others_cpu_s"] * 100 / r["result"]["duration_s"]

def errors(w, t):
    rs = runs(w, t)
    if any(r["result"] is None for r in rs):
        return "no result"
    return sum(r["result"].get("errors", 0) for r in rs)

def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return f"{v:,}"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"

def ratio(a, b):
    if a is None or b is None or isinstance(a, str) or isinstance(b, str) or b == 0:
        return "-"
    return f"{a / b:.2f}"

workloads = [
    ("tp64", "64 B text, 50 conns x 8 in flight", [
        ("msgs/s", res("msgs_per_sec")),
        ("RTT p50 µs", res("p50_us")),
        ("RTT p99 µs", res("p99_us")),
        ("RTT p99.9 µs", res("p999_us")),
        ("CPU µs/msg", cpu_per("msgs")),
        ("loadgen CPU %", loadgen_cpu),
        ("other processes CPU % (max)", others_cpu),
    ]),
    ("tp16k", "16 KiB binary, 50 conns x 8 in flight", [
        ("msgs/s", res("msgs_per_sec")),
        ("MB/s", res("mb_per_sec")),
        ("RTT p50 µs", res("p50_us")),
        ("RTT p99 µs", res("p99_us")),
        ("RTT p99.9 µs", res("p999_us")),
        ("CPU µs/msg", cpu_per("msgs")),
        ("loadgen CPU %", loadgen_cpu),
        ("other processes CPU % (max)", others_cpu),
    ]),
    ("rate", "128 B at 5000 msg/s, 50 conns", [
        ("achieved msgs/s", res("achieved_rate")),
        ("latency p50 µs", res("p50_us")),
        ("latency p99 µs", res("p99_us")),
        ("latency p99.9 µs", res("p999_us")),
        ("latency max µs", res("max_us")),
        ("loadgen send lag p99 µs", res("send_lag_p99_us")),
        ("CPU µs/msg", cpu_per("received")),
        ("loadgen CPU %", loadgen_cpu),
        ("other processes CPU % (max)", others_cpu),
    ]),
    ("connect", "connect + echo + close, 16 loops", [
        ("cycles/s", res("connects_per_sec")),
        ("cycle p50 µs", res("p50_us")),
        ("cycle p99 µs", res("p99_us")),
        ("CPU µs/cycle", cpu_per("cycles")),
        ("loadgen CPU %", loadgen_cpu),
        ("other processes CPU % (max)", others_cpu),
    ]),
]
for w in sorted({r["workload"] for r in rows if r["workload"].startswith("hold")},
                key=lambda w: int(w[4:])):
    n = int(w[4:])
    workloads.append((w, f"hold {n:,} idle conns", [
        ("held", res("held")),
        ("open time s", res("open_secs")),
        ("RSS before KiB", lambda r: r["rss_before_kb"]),
        ("RSS after KiB", lambda r: r["rss_after_kb"] or None),
        ("bytes/conn", lambda r: (r["rss_after_kb"] - r["rss_before_kb"]) * 1024 / r["result"]["held"]
            if r["rss_after_kb"] else None),
    ]))

# Rows that describe the conditions of the runs rather than the proxies: no ratios.
CONTEXT = {"loadgen CPU %", "other processes CPU % (max)", "loadgen send lag p99 µs"}

lines = []
lines.append("| workload | metric | direct | gateway | nginx | gateway/nginx | gateway/direct | nginx/direct |")
lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
for w, title, metrics in workloads:
    if not any(runs(w, t) for t in targets):
        continue
    first = True
    for name, f in metrics + [("errors (all rounds)", None)]:
        if f is None:
            vals = {t: errors(w, t) for t in targets}
        else:
            agg = max if name.endswith("(max)") else None
            vals = {t: metric(w, t, f, agg) for t in targets}
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
            title if first else "", name,
            fmt(vals["direct"]), fmt(vals["gateway"]), fmt(vals["nginx"]),
            ratio(vals["gateway"], vals["nginx"]) if f and name not in CONTEXT else "",
            ratio(vals["gateway"], vals["direct"]) if f and name not in CONTEXT else "",
            ratio(vals["nginx"], vals["direct"]) if f and name not in CONTEXT else ""))
        first = False

first_errors = []
for r in rows:
    e = (r["result"] or {}).get("first_error")
    if e:
        first_errors.append(f'{r["workload"]} via {r["target"]} (round {r["round"]}): {e}')

E = os.environ
header = f"""# kairos-gateway benchmark

{E["B_DATE"]}, commit {E["B_COMMIT"]}, `{E["B_CMD"]}`: {E["B_SETTINGS"]}.
Machine: {E["B_MACHINE"]}. nginx {E["B_NGINX"]} ({E["B_NGINX_WORKERS"]} worker(s)).

Medians across rounds (other processes CPU: the highest round). CPU and RSS are the proxy's
(nginx: CPU of master + worker, RSS of the worker); in the direct column they are the echo
backend's own. How to read it: bench/README.md.
"""
footer = ["", "- " + E["B_IDLE"], "- " + E["B_BINARY"],
          "- The hold rows run after the other workloads in the same processes: memory those "
          "freed is reused, so bytes/conn here is lower than in a fresh process (see "
          "bench/results/footprint.md)."]
for n in notes:
    footer.append(f"- note: {n}")
for e in first_errors:
    footer.append(f"- first error, {e}")
text = header + "\n" + "\n".join(lines) + "\n" + "\n".join(footer) + "\n"
open(out_file, "w").write(text)
print(text)
PY
log "table written to bench/results/latest.md"
