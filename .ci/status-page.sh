#!/usr/bin/env bash
# The admin status page (GET / on the admin listener: src/admin/status.html) in a real headless
# browser (Debian's chromium): a debug gateway with admin.token in front of the example echo
# backend; the page must be small and self-contained, load with the token from the URL fragment
# and show 0 open connections and no error; after 3 WebSocket connections are opened (and held)
# through the gateway, it must show 3 in total and on the route, and the backend `up`; without the
# token (and with a wrong one) it must show the 401 error and the token form. The page with the 3
# connections is kept as bench/results/status-page.png. Ports are all picked by the kernel.
#
# usage: .ci/status-page.sh          (installs chromium with apt when it is not on PATH)
#
# How the browser is driven: `chromium --headless --dump-dom --virtual-time-budget=MS`. The
# virtual clock stops while a fetch is pending, so the dump comes after the page's fetches have
# answered (even slow ones) and after MS of the page's timers (3000: two refreshes), in about a
# second of real time.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
N=3
SHOT=bench/results/status-page.png
t_built=$(date +%s)
log() { echo "[status-page $(date +%H:%M:%S)] $*" >&2; }

if ! command -v chromium > /dev/null; then
  log "installing chromium (Debian package)"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium > /dev/null
fi
command -v python3 > /dev/null || { echo "status-page.sh: needs python3" >&2; exit 2; }

log "building (debug)"
cargo build --quiet --bin kairos-gateway --example echo_backend
bin=target/debug
t_built=$(date +%s)

run=$(mktemp -d "${TMPDIR:-/tmp}/kairos-status-page.XXXXXX")
pids=()
verdict=""
cleanup() {
  local rc=$?
  # The clients first, so that the gateway has no connection left to drain.
  local p alive
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2> /dev/null || true; done
  for _ in $(seq 50); do # 5 s for them to end (the gateway's drain takes at most 1 s), then KILL
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2> /dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf "$run"
  if [ "$rc" = 0 ]; then
    echo "status-page: PASS ($verdict; $(($(date +%s) - t_built)) s after the build)"
  else
    echo "status-page: FAIL (exit $rc${verdict:+; $verdict}; see above)"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() {
  verdict="$*"
  echo "status-page.sh: $*" >&2
  exit 1
}

wait_line() { # FILE PATTERN PID: the first match within 20 s, while PID lives
  for _ in $(seq 200); do
    grep -m1 -oE "$2" "$1" 2> /dev/null && return 0
    kill -0 "$3" 2> /dev/null || break
    sleep 0.1
  done
  echo "status-page.sh: no '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}

"$bin/examples/echo_backend" 0 > "$run/echo.log" 2>&1 &
pids+=($!)
echo_addr=$(wait_line "$run/echo.log" '127\.0\.0\.1:[0-9]+' "$!") || fail "the echo backend did not start"

token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))') # 24 characters
cat > "$run/gateway.json" << JSON
{ "version": 1,
  "server": { "host": "127.0.0.1", "port": 0, "shutdown_timeout_ms": 1000 },
  "admin": { "host": "127.0.0.1", "port": 0, "token": "$token" },
  "routers": [ { "protocol": "websocket", "external_path": "/ws/chat", "internal_path": "/ws",
    "methods": ["GET"], "backends": [ { "host": "ws://127.0.0.1", "port": ${echo_addr#*:} } ] } ] }
JSON
RUST_LOG=info "$bin/kairos-gateway" --config "$run/gateway.json" > "$run/gateway.log" 2>&1 &
gw=$!
pids+=("$gw")
gw_addr=$(wait_line "$run/gateway.log" 'kairos-gateway [^ ]+ listening on 127\.0\.0\.1:[0-9]+' "$gw" |
  grep -oE '[0-9.]+:[0-9]+$') || fail "the gateway did not start"
admin=$(wait_line "$run/gateway.log" 'admin listening on 127\.0\.0\.1:[0-9]+' "$gw" |
  grep -oE '[0-9.]+:[0-9]+$') || fail "no admin listener"
log "gateway on $gw_addr, admin on $admin, echo backend on $echo_addr"

# The page as served: open (no token), HTML, gzip-compressed, under 30 KB, nothing fetched from
# elsewhere.
cat > "$run/page.py" << 'PY'
import gzip, http.client, re, sys
host, port = sys.argv[1].rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port), timeout=10)
c.request("GET", "/", headers={"Accept-Encoding": "gzip"})
r = c.getresponse()
body = r.read()
kind = r.getheader("Content-Type", "")
problems = []
# Sent gzip-compressed (as browsers accept it): under 30 KB as sent and as HTML.
if r.getheader("Content-Encoding", "") != "gzip":
    problems.append("GET / with Accept-Encoding: gzip: not gzip-compressed")
elif len(body) >= 30 * 1024:
    problems.append(f"GET /: {len(body)} bytes compressed, over 30 KB")
else:
    body = gzip.decompress(body)
if r.status != 200:
    problems.append(f"GET / without a token: HTTP {r.status} {body[:200]!r} (the page must be open)")
if not kind.startswith("text/html"):
    problems.append(f"GET /: Content-Type {kind!r}, not text/html")
if len(body) >= 30 * 1024:
    problems.append(f"GET /: {len(body)} bytes, over 30 KB")
text = body.decode("utf-8", "replace")
external = re.findall(
    r"""(?:\b(?:src|href|action|poster|srcset)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//"""
    r"""|url\(\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//|@import|https?://)[^"'\s)]*""", text, re.I)
if external:
    problems.append(f"GET /: external references {external[:5]}")
for p in problems:
    print("status-page.sh:", p, file=sys.stderr)
print(f"GET /: {r.status} {kind}, {len(body)} bytes", file=sys.stderr)
print(len(body))
sys.exit(1 if problems else 0)
PY
page_bytes=$(python3 "$run/page.py" "$admin") || fail "GET / is not the self-contained status page"

# One headless load of the page: extra flags, then the URL; the DOM after the page's fetches and
# MS=3000 of its timers (two refreshes) on stdout. A fresh profile each time (no sessionStorage).
browse() {
  local profile
  profile=$(mktemp -d "$run/chrome.XXXXXX")
  timeout -k 5 60 chromium --headless --no-sandbox --disable-gpu --no-first-run \
    --no-default-browser-check --disable-extensions --disable-background-networking \
    --disable-component-update --disable-sync --disable-dev-shm-usage --hide-scrollbars \
    --user-data-dir="$profile" \
    --virtual-time-budget=3000 "$@" 2>> "$run/chromium.log" || {
    echo "status-page.sh: chromium failed (exit $?):" >&2
    grep -v -e dbus -e 'unexpected operator' "$run/chromium.log" | tail -20 >&2
    return 1
  }
}

# What the tests read from a dumped DOM, as JSON: the ids, route rows, backend rows, the form.
cat > "$run/hooks.py" << 'PY'
import html.parser, json, sys
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
class Hooks(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.out = [], {"ids": {}, "routes": {}, "backends": {}, "auth_shown": False}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if a.get("id") == "auth":
            self.out["auth_shown"] = "show" in cls
        if tag in VOID:
            return
        sinks = []
        if a.get("id"):
            self.out["ids"][a["id"]] = ""
            sinks.append(("ids", a["id"]))
        for t, at, _ in reversed(self.stack):
            if t == "tr":
                if tag == "td" and "open" in cls and at.get("data-route") is not None:
                    self.out["routes"][at["data-route"]] = ""
                    sinks.append(("routes", at["data-route"]))
                if "state" in cls and at.get("data-backend") is not None:
                    self.out["backends"][at["data-backend"]] = ""
                    sinks.append(("backends", at["data-backend"]))
                break
        self.stack.append((tag, a, sinks))
    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break
    def handle_data(self, data):
        for _, _, sinks in self.stack:
            for kind, key in sinks:
                self.out[kind][key] += data
h = Hooks()
h.feed(sys.stdin.read())
h.out = {k: ({i: t.strip() for i, t in v.items()} if isinstance(v, dict) else v) for k, v in h.out.items()}
print(json.dumps(h.out))
PY
hooks() { python3 "$run/hooks.py"; }
summary() { # JSON: the figures the tests read, on one line
  python3 -c 'import json, sys
h = json.loads(sys.argv[1])
print("open-connections=%r updated=%r error=%r routes=%s backends=%s form=%s" % (h["ids"].get("open-connections"),
      h["ids"].get("updated"), h["ids"].get("error"), h["routes"], h["backends"], "shown" if h["auth_shown"] else "hidden"))' "$1"
}
field() { # JSON PATH...: one value of the hooks' JSON ("" when absent)
  python3 -c 'import json, sys
v = json.loads(sys.argv[1])
for k in sys.argv[2:]:
    v = v.get(k, "") if isinstance(v, dict) else ""
print(v)' "$@"
}

# 1. With the token in the fragment, nothing open yet.
browse --dump-dom "http://$admin/#token=$token" > "$run/dom0.html" || fail "chromium failed"
h0=$(hooks < "$run/dom0.html")
log "page, no connection: $(summary "$h0")"
[ "$(field "$h0" ids open-connections)" = 0 ] ||
  fail "#open-connections is '$(field "$h0" ids open-connections)' with no connection open (0 expected); #error: $(field "$h0" ids error)"
[ -z "$(field "$h0" ids error)" ] || fail "#error: $(field "$h0" ids error)"
[ "$(field "$h0" routes /ws/chat)" = 0 ] || fail "the /ws/chat row shows '$(field "$h0" routes /ws/chat)' open, not 0"
[ -n "$(field "$h0" backends "$echo_addr")" ] || fail "no backend $echo_addr on the page"
updated0=$(field "$h0" ids updated)
case $updated0 in [0-9][0-9]:[0-9][0-9]:[0-9][0-9]) ;; *) fail "#updated is '$updated0', not a time" ;; esac

# 2. N WebSocket connections through the gateway, each with one echoed message, held open.
cat > "$run/clients.py" << 'PY'
import base64, hashlib, os, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
n = int(sys.argv[2])
def recv_exact(s, k):
    b = b""
    while len(b) < k:
        c = s.recv(k - len(b))
        if not c:
            raise SystemExit("clients.py: the gateway closed the connection")
        b += c
    return b
held = []
for i in range(n):
    s = socket.create_connection((host, int(port)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws/chat HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += recv_exact(s, 1)
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 101"):
        raise SystemExit(f"clients.py: connection {i}: {lines[0]}")
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    if not any(l.lower() == "sec-websocket-accept: " + accept.lower() for l in lines):
        raise SystemExit(f"clients.py: connection {i}: no valid Sec-WebSocket-Accept")
    payload = f"hello from client {i}".encode()
    mask = os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[j % 4] for j, b in enumerate(payload)))
    b0, b1 = recv_exact(s, 2)
    echo = recv_exact(s, b1 & 0x7F)
    if b0 != 0x81 or b1 & 0x80 or echo != payload:
        raise SystemExit(f"clients.py: connection {i}: echo {hex(b0)} {echo!r}, not {payload!r}")
    held.append(s)
print(f"open {n}", flush=True)
while True:
    time.sleep(3600)
PY
python3 "$run/clients.py" "$gw_addr" "$N" > "$run/clients.log" 2>&1 &
pids+=($!)
wait_line "$run/clients.log" "open $N" "$!" > /dev/null || fail "$N WebSocket clients could not connect and echo"

# 3. /status (with the token) counts them and their messages: a deadline, not a sleep.
python3 - "$admin" "$token" "$N" << 'PY' || fail "/status never counted $N open connections and $N messages"
import http.client, json, sys, time
host, port = sys.argv[1].rsplit(":", 1)
token, n = sys.argv[2], int(sys.argv[3])
deadline, last = time.monotonic() + 20, None
while time.monotonic() < deadline:
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=5)
        c.request("GET", "/status", headers={"Authorization": "Bearer " + token})
        r = c.getresponse()
        body = r.read()
        last = f"HTTP {r.status}: {body[:300]!r}"
        if r.status == 200:
            s = json.loads(body)
            chat = [x for x in s.get("routes", []) if x.get("route") == "/ws/chat"]
            # Counters of open connections are published every 5 s: wait for the N echoed
            # messages too (the screenshot then shows them).
            if (s.get("open_connections") == n and chat and chat[0].get("open_connections") == n
                    and chat[0].get("messages", {}).get("client_to_backend", 0) >= n):
                sys.exit(0)
    except (OSError, ValueError) as e:
        last = repr(e)
    time.sleep(0.2)
print(f"status-page.sh: /status last said {last}", file=sys.stderr)
sys.exit(1)
PY

# 4. The page again: the figures have moved; and the screenshot.
browse --dump-dom "http://$admin/#token=$token" > "$run/dom1.html" || fail "chromium failed"
h1=$(hooks < "$run/dom1.html")
log "page, $N connections: $(summary "$h1")"
[ -z "$(field "$h1" ids error)" ] || fail "#error: $(field "$h1" ids error)"
[ "$(field "$h1" ids open-connections)" = "$N" ] ||
  fail "#open-connections is '$(field "$h1" ids open-connections)' with $N connections open"
[ "$(field "$h1" routes /ws/chat)" = "$N" ] || fail "the /ws/chat row shows '$(field "$h1" routes /ws/chat)' open, not $N"
[ "$(field "$h1" backends "$echo_addr")" = up ] ||
  fail "backend $echo_addr shows state '$(field "$h1" backends "$echo_addr")', not up"
mkdir -p "$(dirname "$SHOT")"
browse --window-size=1100,700 --screenshot="$run/shot.png" "http://$admin/#token=$token" > /dev/null ||
  fail "chromium failed to take the screenshot"
[ -s "$run/shot.png" ] || fail "no screenshot written"
cp "$run/shot.png" "$SHOT"

# 5. Without the token, and with a wrong one: the 401 error and the token form, no figures.
for given in none wrong; do
  url="http://$admin/"
  [ "$given" = none ] || url="http://$admin/#token=wrong-$token"
  browse --dump-dom "$url" > "$run/dom-$given.html" || fail "chromium failed"
  h=$(hooks < "$run/dom-$given.html")
  log "page, token $given: $(summary "$h")"
  err=$(field "$h" ids error)
  case $err in *401*) ;; *) fail "token $given: #error is '$err', not a 401 message" ;; esac
  [ "$(field "$h" auth_shown)" = True ] || fail "token $given: the token form is not shown"
  [ "$(field "$h" ids open-connections)" = - ] ||
    fail "token $given: #open-connections shows '$(field "$h" ids open-connections)'"
done

verdict="page $page_bytes bytes; 0 then $N open connections shown, backend up, 401 form; screenshot $SHOT"
