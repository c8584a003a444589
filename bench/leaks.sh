#!/usr/bin/env bash
# Leak check at full size: 10 000 connections (a fifth each ended by clean close, client drop,
# backend drop, handshake timeout and idle timeout) through an in-process gateway; passes when
# the open fds, connection tasks, registered sockets and armed timers are back to their start
# values. `cargo test` runs the same test with 2000.
#
# usage: bench/leaks.sh            N=10000
#        N=50000 bench/leaks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
start=$(date +%s)
KAIROS_LEAK_CONNECTIONS=${N:-10000} cargo test --release --test leaks -- --nocapture
echo "leaks.sh: ${N:-10000} connections, passed in $(($(date +%s) - start)) s (build included)"
