#!/usr/bin/env bash
# Load test of `leuko serve` on loopback: starts the release server on a free
# port, runs the load_serve client (16 clients x 30 s posting one BCCD photo,
# each client waiting for its answer), then reports the server's memory
# (VmRSS idle, VmHWM = peak RSS) and stops it. With bad_clients > 0, that many
# of the clients post bad uploads instead (text named .jpg, a cut-short JPEG,
# random bytes, a body over the size limit); any 5xx answer counts as an error.
#   bash bench/serve_load.sh [clients=16] [seconds=30] [bad_clients=0] [photo=BloodImage_00000.jpg]
# Builds with `cargo build --release`; set LEUKO_BIN_DIR to use binaries
# already built elsewhere (e.g. target/debug).
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-16}
seconds=${2:-30}
bad=${3:-0}
photo=../shared/data/bccd/JPEGImages/${4:-BloodImage_00000.jpg}
bin=${LEUKO_BIN_DIR:-target/release}
if [ -z "${LEUKO_BIN_DIR:-}" ]; then
  cargo build --release --quiet --bin leuko --example load_serve
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
"$bin/leuko" serve --addr "127.0.0.1:$port" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  grep -q "http://" "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
echo "server: $(head -1 "$log") (pid $pid, $(nproc) cores)"
echo "server idle: $(grep VmRSS /proc/$pid/status | tr -s ' \t' ' ')"
"$bin/examples/load_serve" --addr "127.0.0.1:$port" --file "$photo" --clients "$clients" --seconds "$seconds" --bad-clients "$bad"
echo "server peak: $(grep VmHWM /proc/$pid/status | tr -s ' \t' ' ')"
