#!/usr/bin/env bash
# Validates deploy/kubernetes/ offline: every manifest against the Kubernetes schemas
# (kubernetes-validate from PyPI, in a venv of its own, --strict: an unknown field is an
# error), and the ConfigMap's config.json with the gateway's own --check.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${KAIROS_KV_VENV:-target/kv-venv}
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 has venv in a package of its own.
    rm -rf "$venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq python3-venv > /dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate
fi
"$venv/bin/kubernetes-validate" --strict deploy/kubernetes/*.yaml
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 - deploy/kubernetes/configmap.yaml "$dir/config.json" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
# The literal block under `config.json: |`, dedented.
block = text.split("config.json: |\n", 1)[1]
lines = [l for l in block.splitlines() if l.strip()]
indent = min(len(l) - len(l.lstrip()) for l in lines)
open(sys.argv[2], "w").write("\n".join(l[indent:] for l in block.splitlines()) + "\n")
PY
cargo build --release --bin kairos-gateway
./target/release/kairos-gateway --check --config "$dir/config.json"
