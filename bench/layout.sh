#!/usr/bin/env bash
# Regenerates layout/hot-symbols.txt: the functions the release binary runs from start to idle
# (start, one connection with an echo, idle, SIGHUP reload, SIGTERM), which build.rs asks the
# linker to place first. The code a running gateway touches then sits in a few pages instead
# of being spread over most of the binary, which the kernel maps 64 KiB at a time: idle RSS
# (bench/results/footprint.md). Needs valgrind. bench/layout.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
# The same profile and features as the real build (symbol names carry a hash of them), with a
# linker map, and without the current ordering (so that nothing biases the list).
KAIROS_LAYOUT=off cargo rustc --release --bin kairos-gateway -- -C link-arg=-Wl,-Map="$dir/map.txt" -C link-arg=-Wl,--no-demangle >&2
cp target/release/kairos-gateway "$dir/gw"
cargo build --release --example echo_backend --example loadgen >&2
ECHO=target/release/examples/echo_backend LG=target/release/examples/loadgen
"$ECHO" 0 > "$dir/echo.log" 2>&1 &
until ep=$(grep -oE '127\.0\.0\.1:[0-9]+' "$dir/echo.log" 2>/dev/null | head -1 | cut -d: -f2); [ -n "$ep" ]; do sleep 0.05; done
cat > "$dir/c.json" <<J
{ "version": 1, "server": {"host":"127.0.0.1","port":0}, "routers": [ { "protocol": "websocket",
  "backends": [ { "host": "ws://127.0.0.1", "port": $ep } ], "external_path": "/ws/chat",
  "internal_path": "/ws", "methods": ["GET"] } ] }
J
RUST_LOG=warn,kairos_gateway=info valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
  "$dir/gw" --config "$dir/c.json" > "$dir/gw.log" 2>&1 &
gw=$!
until gp=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$dir/gw.log" | head -1 | sed 's/.*://'); [ -n "$gp" ]; do sleep 0.2; done
"$LG" --url "ws://127.0.0.1:$gp/ws/chat" --mode connect --parallel 2 --duration 2 > /dev/null
sleep 1
kill -HUP "$gw"; sleep 2
kill -TERM "$gw"; wait "$gw" || true
python3 - "$dir/map.txt" "$dir/cg.out" "$dir/gw" > layout/hot-symbols.txt <<'PY'
import re, sys
mapfile, cgfile, binary = sys.argv[1:4]
# Function start addresses from the linker map ("VMA LMA Size Align Out In Symbol"): each
# function is in a section of its own, named after it.
starts = {}
for line in open(mapfile):
    parts = line.split()
    if len(parts) != 5 or not re.fullmatch(r"[0-9a-f]+", parts[0]):
        continue
    # An input section of one function: `file:(.text.NAME)`.
    m = re.search(r":\(\.text\.(.+)\)$", parts[4])
    if m:
        starts.setdefault(int(parts[0], 16), m.group(1))
# The functions callgrind saw in the stripped binary are named by their runtime address;
# for a position-independent executable these are its own addresses (base 0) or, with some
# valgrind versions, offset by one fixed base: the one under which most names fall on a
# function's start.
seen = []
for m in re.finditer(r"^c?fn=\(\d+\) 0x([0-9a-f]+)$", open(cgfile).read(), re.M):
    a = int(m.group(1), 16)
    if a not in seen:
        seen.append(a)
candidates = {0, 0x108000}
base = max(candidates, key=lambda b: sum(1 for a in seen if a - b in starts))
names = [starts[a - base] for a in seen if a - base in starts]
for n in dict.fromkeys(names):
    print(n)
print(f"matched {len(names)} of {len(seen)} at base {base:#x}", file=sys.stderr)
PY
wc -l layout/hot-symbols.txt
