#!/usr/bin/env bash
# Paired comparison of training-step speed between leuko binaries, for changes smaller than this
# machine's run-to-run drift: the binaries run alternately in separate processes, N rounds, and
# each prints its median ms per step (`leuko bench train`), then per binary the median over rounds
# and every round's figure (compare pairs, round by round).
#   bash bench/ab_train.sh ROUNDS BINARY_A BINARY_B [BINARY_C ...]
# e.g. save a build as /tmp/leuko-before, change the code, rebuild, then
#   bash bench/ab_train.sh 6 /tmp/leuko-before target/release/leuko
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,8p' "$0" >&2
  exit 2
fi
rounds=$1
shift
for b in "$@"; do
  [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 2; }
done
for _ in $(seq "$rounds"); do
  for b in "$@"; do
    ms=$("$b" bench train --threads 2 --steps 20 --warmup 3 --format json |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["ms_per_step_median"])')
    echo "$b $ms"
  done
done | python3 -c '
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in sys.stdin:
    name, ms = line.rsplit(None, 1)
    runs[name].append(float(ms))
for name, v in runs.items():
    print(f"{name}: median {statistics.median(v):.1f} ms/step, rounds {[round(x, 1) for x in v]}")
'
