#!/usr/bin/env python3
"""Where the errors are (docs/accuracy.md, "Where the errors are"): scores trained runs on their
own test photos with `leuko predict` (the largest leukocyte of each photo, as `leuko evaluate`) and
breaks the result down by BCCD photo number (BloodImage_n): accuracy and Cohen's kappa on the photos
numbered below CUT and from CUT on, per run; then, over all runs given, how many test photos in each stretch of
STEP numbers every run got wrong, and those photos.

Each RUN_DIR is a `leuko train --out` folder (split.json, model.leuko), or a model file NAME.leuko
with its split beside it as NAME.split.json (e.g. models/default.leuko). A photo is counted once per
run whose test part holds it, so give runs whose test parts cover the photos equally (e.g. the
five folds of one or more configs).

usage: python3 experiments/errors_by_photo.py [--cut N] [--step N] [--data DIR] RUN_DIR...
       (defaults: --cut 150, --step 25, --data ../shared/data/bccd; leuko: $LEUKO_BIN or
       target/release/leuko)
"""
import collections
import csv
import io
import json
import os
import subprocess
import sys


def kappa(pairs):
    """Cohen's kappa of (truth, prediction) pairs."""
    n = len(pairs)
    observed = sum(t == p for t, p in pairs) / n
    truths, preds = collections.Counter(t for t, _ in pairs), collections.Counter(p for _, p in pairs)
    chance = sum(truths[c] * preds[c] for c in truths) / (n * n)
    return (observed - chance) / (1 - chance) if chance < 1 else 1.0


def summary(name, pairs):
    right = sum(t == q for t, q in pairs)
    return f"{name} {right}/{len(pairs)} = {right / len(pairs):.3f} (kappa {kappa(pairs):.3f})"


def main() -> None:
    args = sys.argv[1:]
    opts = {"--cut": "150", "--step": "25", "--data": "../shared/data/bccd"}
    while args and args[0] in opts:
        if len(args) < 2:
            sys.exit(__doc__)
        opts[args[0]] = args[1]
        args = args[2:]
    if not args or any(a.startswith("--") for a in args):
        sys.exit(__doc__)
    cut, step = int(opts["--cut"]), int(opts["--step"])
    photo = os.path.join(opts["--data"], "JPEGImages", "BloodImage_%05d.jpg")
    leuko = os.environ.get("LEUKO_BIN", "target/release/leuko")

    label = {}
    runs_of = collections.Counter()
    wrong_in = collections.Counter()
    per_stretch = {"below": [], "from": [], "all": []}
    for run in args:
        if run.endswith(".leuko"):
            model, split_file = run, run[: -len(".leuko")] + ".split.json"
        else:
            model, split_file = os.path.join(run, "model.leuko"), os.path.join(run, "split.json")
        split = json.load(open(split_file))
        files = [photo % n for n, _ in split["test"]]
        cmd = [leuko, "predict", "--model", model, "--format", "csv", "--quiet"]
        out = subprocess.run(cmd + files, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{run}: leuko predict failed: {out.stderr.strip()}")
        predicted = {}
        for row in csv.DictReader(io.StringIO(out.stdout)):
            n = int(os.path.basename(row["file"]).split("_")[-1].split(".")[0])
            predicted.setdefault(n, row["class"])  # rows come largest cell first
        pairs = {"below": [], "from": []}
        for n, lab in split["test"]:
            pairs["below" if n < cut else "from"].append((lab, predicted.get(n)))
            label[n] = lab
            runs_of[n] += 1
            wrong_in[n] += predicted.get(n) != lab
        pairs["all"] = pairs["below"] + pairs["from"]
        cells = []
        for p, name in (("below", f"photos < {cut}"), ("from", f">= {cut}"), ("all", "all")):
            if pairs[p]:
                cells.append(summary(name, pairs[p]))
            per_stretch[p] += pairs[p]
        print(f"{run}: {'  '.join(cells)}")

    if len(args) > 1:
        pooled = []
        for p, name in (("below", f"photos < {cut}"), ("from", f">= {cut}"), ("all", "all")):
            if per_stretch[p]:
                pooled.append(summary(name, per_stretch[p]))
        print("pooled over the runs: " + "  ".join(pooled))
        print(f"\nover {len(args)} runs: test photos each run that held them got wrong")
        print("photos     test photos  wrong in every run  wrong in some run")
        top = max(label) + 1
        for lo in range(0, top, step):
            ids = [n for n in label if lo <= n < lo + step]
            if ids:
                every = sum(1 for n in ids if wrong_in[n] == runs_of[n])
                some = sum(1 for n in ids if wrong_in[n] > 0)
                print(f"{lo:3d}-{lo + step - 1:3d}  {len(ids):11d}  {every:18d}  {some:17d}")
        every = sorted(n for n in label if wrong_in[n] == runs_of[n])
        print(f"wrong in every run ({len(every)}): " + ", ".join(f"#{n} {label[n].lower()}" for n in every))


if __name__ == "__main__":
    main()
