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
# Run from the config's directory with a relative path, as users do (that resolves it).
(cd "$dir" && RUST_LOG=warn,kairos_gateway=info exec valgrind --tool=callgrind --dump-instr=yes \
  --compress-pos=no --compress-strings=no --callgrind-out-file=cg.out ./gw --config c.json \
  > gw.log 2>&1) &
gw=$!
until gp=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$dir/gw.log" | head -1 | sed 's/.*://'); [ -n "$gp" ]; do sleep 0.2; done
"$LG" --url "ws://127.0.0.1:$gp/ws/chat" --mode connect --parallel 2 --duration 2 > /dev/null
sleep 1
kill -HUP "$gw"; sleep 2
kill -TERM "$gw"; wait "$gw" || true
python3 - "$dir/map.txt" "$dir/cg.out" > layout/hot-symbols.txt <<'PY'
import bisect, re, sys
mapfile, cgfile = sys.argv[1:3]
# Functions from the linker map ("VMA LMA Size Align Out In Symbol"): each is in an input
# section of its own, `file:(.text.NAME)`, or `.text.unlikely.NAME` for a function LLVM
# judged cold (the ordering file wants NAME alone).
funcs = []
for line in open(mapfile):
    parts = line.split()
    if len(parts) != 5 or not re.fullmatch(r"[0-9a-f]+", parts[0]):
        continue
    m = re.search(r":\(\.text\.(?:unlikely\.|hot\.|startup\.|exit\.)?(.+)\)$", parts[4])
    if m:
        funcs.append((int(parts[0], 16), int(parts[2], 16), m.group(1)))
funcs.sort()
starts = [f[0] for f in funcs]
def owner(addr):
    i = bisect.bisect_right(starts, addr) - 1
    if i >= 0 and addr < funcs[i][0] + funcs[i][1]:
        return funcs[i][2]
    return None
# Every instruction callgrind saw run (--dump-instr, absolute positions), in the order the
# profile lists them. Counting instructions rather than the functions callgrind names also
# finds the functions only ever entered by a tail call (a jump). Addresses are the binary's
# own (a position-independent executable at base 0) or offset by one fixed base: the one
# under which most addresses fall inside a function.
addrs = [int(m.group(1), 16) for m in re.finditer(r"^0x([0-9a-f]+) ", open(cgfile).read(), re.M)]
base = max((0, 0x108000), key=lambda b: sum(1 for a in addrs[:5000] if owner(a - b)))
names = [n for n in (owner(a - base) for a in addrs) if n]
# Code a real CPU runs where valgrind's does not: valgrind has no SHA extensions, so it runs
# the software SHA-1 of the handshake's accept key where a real CPU runs this one.
names += [f[2] for f in funcs if "x86_sha" in f[2] and "sha1" in f[2]]
for n in dict.fromkeys(names):
    print(n)
print(f"{len(dict.fromkeys(names))} functions from {len(addrs)} instruction addresses at base {base:#x}", file=sys.stderr)
PY
wc -l layout/hot-symbols.txt
