#!/usr/bin/env bash
# Training throughput of the final network [16,32,48,64] (batch 32, 128x128, Adam),
# leuko vs the Keras reference (bench_train.py), same 2 threads, same invocation.
# Prints both, their ratio, and leuko's GFLOP/s against the machine's fp32 peak.
#   bash bench/train_vs_keras.sh [repetitions=3]
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
source bench/anchor_env.sh
anchor_setup tf
cargo build --release --quiet
leuko=target/release/leuko

ours=(); direct=(); theirs=()
for r in $(seq "$reps"); do
  d=$($leuko bench train --net final --threads 2 --warmup 3 --steps 15 --conv direct --format json)
  echo "leuko direct 3x3 rep $r: $d"
  direct+=("$(echo "$d" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])')")
  o=$($leuko bench train --net final --threads 2 --warmup 3 --steps 15 --format json)
  echo "leuko  rep $r: $o"
  ours+=("$(echo "$o" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])')")
  k=$(cd "$ANCHOR_DIR" && "$PY" bench_train.py --net final --threads 2 --warmup 5 --steps 20 2>/dev/null | tail -1)
  echo "keras  rep $r: $k"
  theirs+=("$(echo "$k" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])')")
done
last=$o
"$PY" - "$last" "${ours[*]}" "${theirs[*]}" "${direct[*]}" <<'PY'
import json, statistics, sys
last = json.loads(sys.argv[1])
ours = [float(x) for x in sys.argv[2].split()]
theirs = [float(x) for x in sys.argv[3].split()]
direct = [float(x) for x in sys.argv[4].split()]
mo, mt, md = statistics.median(ours), statistics.median(theirs), statistics.median(direct)
flops_per_img = last["gflops"] / last["images_per_s"]
print(f"final net, batch 32, 128x128, 2 threads, median of {len(ours)} repetitions")
print(f"  leuko : {mo:7.1f} images/s  ({ours})")
print(f"  keras : {mt:7.1f} images/s  ({theirs})")
print(f"  ratio : {mo / mt:5.2f}x  (bar: >= 2x)")
print(f"  leuko with the direct 3x3 kernels (--conv direct): {md:.1f} images/s = {md / mt:.2f}x keras; Winograd gains {mo / md:.2f}x")
print("  (GFLOP/s below count a direct convolution's FLOPs, the issue's formula; Winograd does fewer, so they are effective figures)")
print(f"  leuko : {mo * flops_per_img:6.1f} GFLOP/s = {100 * mo * flops_per_img / last['peak_gflops']:.0f}% of {last['peak_gflops']:.0f} GFLOP/s fp32 peak ({last['threads']} cores x 32 FLOP/cycle x {last['clock_ghz']:.2f} GHz, clock from {last['clock_source']})")
if last.get("measured_peak_gflops"):
    m = last["measured_peak_gflops"]
    print(f"          = {100 * mo * flops_per_img / m:.0f}% of {m:.0f} GFLOP/s measured by an FMA loop on the same threads (the clock the cores really run at)")
PY
rm -rf "$ANCHOR_DIR"
