#!/usr/bin/env bash
# Leukocyte isolation speed, leuko vs the OpenCV reference (isolate.py), in the
# same invocation: decode + isolate + crop per photo on ONE thread over all 366
# BCCD photos, median per photo, median of 3 repetitions. Prints both, their
# ratio (bar: leuko <= 0.5x the reference) and JPEG decoding alone.
#   bash bench/isolate_vs_opencv.sh [rounds=1]
# With rounds > 1 the two alternate (leuko, reference, leuko, ...) and the
# medians over rounds are compared, which evens out a busy machine.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1}
source bench/anchor_env.sh
anchor_setup cv
cargo build --release --quiet --example bench_isolate
ours=(); theirs=(); ours_dec=(); theirs_dec=()
for r in $(seq "$rounds"); do
  o=$(target/release/examples/bench_isolate --data "$BCCD_DIR" --repeats 3 --json)
  echo "leuko  round $r: $o"
  ours+=("$(echo "$o" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["ms_per_image_median"])')")
  ours_dec+=("$(echo "$o" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["decode_only_ms_median"])')")
  # isolate.py prints its summary as indented JSON (and also scores IoU).
  k=$(cd "$ANCHOR_DIR" && "$PY" isolate.py score)
  k=$(echo "$k" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({x: d[x] for x in ("ms_per_image_median", "ms_per_image_median_each_repeat", "decode_only_ms_median", "iou_mean")}))')
  echo "opencv round $r: $k"
  theirs+=("$(echo "$k" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["ms_per_image_median"])')")
  theirs_dec+=("$(echo "$k" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["decode_only_ms_median"])')")
done
"$PY" - "${ours[*]}" "${theirs[*]}" "${ours_dec[*]}" "${theirs_dec[*]}" <<'PY'
import statistics, sys
ours, theirs, ours_dec, theirs_dec = ([float(x) for x in a.split()] for a in sys.argv[1:5])
mo, mt = statistics.median(ours), statistics.median(theirs)
print("decode + isolate (leuko: with outlines) + crop, 1 thread, 366 photos, median ms/photo (median of 3 repetitions)")
print(f"  leuko  : {mo:6.3f} ms   (decode alone {statistics.median(ours_dec):.3f} ms)  {ours}")
print(f"  opencv : {mt:6.3f} ms   (decode alone {statistics.median(theirs_dec):.3f} ms)  {theirs}")
print(f"  ratio  : {mo / mt:.2f}x the reference's time (bar: <= 0.5x)")
PY
rm -rf "$ANCHOR_DIR"
