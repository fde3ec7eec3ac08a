#!/usr/bin/env bash
# End-to-end prediction latency per photo (read + decode + isolate + crop + network),
# leuko vs the Keras reference (bench_infer.py, tf.function path), in the same
# invocation, on ONE thread, over the same photos: the 87 test photos of the
# reference's split.json, 3 passes after 5 warm-up photos, median per photo.
# Prints both medians, their ratio (bar: leuko <= 0.6x the reference's time) and
# leuko's throughput on those photos as a folder with 2 threads.
#   bash bench/predict_vs_keras.sh [rounds=1]
# With rounds > 1 the two alternate (leuko, reference, leuko, ...) and the
# medians over rounds are compared, which evens out a busy machine.
# Note: leuko classifies every leukocyte it finds in a photo (one batch); the
# reference classifies the one box its isolation returns.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1}
source bench/anchor_env.sh
anchor_setup tf
cargo build --release --quiet
ours=(); theirs=(); folder=(); ours_parts=(); theirs_parts=()
get() { "$PY" -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
for r in $(seq "$rounds"); do
  o=$("${CARGO_TARGET_DIR:-target}"/release/leuko bench predict --data "$BCCD_DIR" --split "$ANCHOR_DIR/split.json" \
      --warmup 5 --repeats 3 --folder-threads 2 --format json)
  echo "leuko  round $r: $o"
  ours+=("$(echo "$o" | get 'd["total_ms_median"]')")
  folder+=("$(echo "$o" | get 'd["folder_photos_per_s"]')")
  ours_parts+=("$(echo "$o" | get '"%.2f/%.2f/%.2f" % (d["decode_ms_median"], d["isolate_ms_median"], d["network_ms_median"])')")
  k=$(cd "$ANCHOR_DIR" && "$PY" bench_infer.py --threads 1 --repeats 3 2>/dev/null | grep '^{' | tail -1)
  k=$(echo "$k" | get 'json.dumps({"n_test_images": d["n_test_images"], "tf_function": d["tf_function"], "loadavg_after": d["loadavg_after"]})')
  echo "keras  round $r: $k"
  theirs+=("$(echo "$k" | get 'd["tf_function"]["median_ms"]')")
  theirs_parts+=("$(echo "$k" | get '"%.2f/%.2f/%.2f" % (d["tf_function"]["decode_median_ms"], d["tf_function"]["isolate_crop_median_ms"], d["tf_function"]["net_median_ms"])')")
done
"$PY" - "${ours[*]}" "${theirs[*]}" "${folder[*]}" "${ours_parts[*]}" "${theirs_parts[*]}" <<'PY'
import statistics, sys
ours, theirs, folder = ([float(x) for x in a.split()] for a in sys.argv[1:4])
ours_parts, theirs_parts = sys.argv[4].split(), sys.argv[5].split()
mo, mt = statistics.median(ours), statistics.median(theirs)
print("read + decode + isolate + crop + network, 1 thread, the reference's 87 test photos x 3 passes, median ms/photo")
print(f"  leuko : {mo:7.2f} ms  (decode/isolate/network medians per round: {ours_parts})  {ours}")
print(f"  keras : {mt:7.2f} ms  (decode/isolate/network medians per round: {theirs_parts})  {theirs}")
print(f"  ratio : {mo / mt:.2f}x the reference's time (bar: <= 0.6x)")
print(f"  leuko, same photos as a folder, 2 threads: {statistics.median(folder):.1f} photos/s  {folder}")
PY
rm -rf "$ANCHOR_DIR"
