#!/usr/bin/env python3
"""Learning curve of leuko on a lab's own labelled photos (a labels CSV with file,class).

For k labelled photos per class (seeded draws, several repetitions), the other photos are the
test set, and three models are scored on it with `leuko evaluate --part all`:

  default   the embedded default model as it is
  scratch   `leuko train --data TRAIN.csv --config experiments/final.toml` (trained from scratch)
  finetune  `leuko train --data TRAIN.csv --init default` (the built-in fine-tuning recipe)

    python3 experiments/learning_curve.py LABELS.csv OUT_DIR [--k 2,5,10,20] [--reps 5]
        [--drop BASOPHIL] [--leuko target/release/leuko]

Writes OUT_DIR/results.csv (one row per k, repetition and model), OUT_DIR/learning-curve.md
(mean ± sd per k and model) and OUT_DIR/learning-curve.svg (accuracy against k). Standard
library only.
"""

import argparse
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import time


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return p.stdout


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "class"])
        for r in rows:
            w.writerow([r["file"], r["class"]])


def evaluate(leuko, model, data):
    cmd = [leuko, "evaluate", "--data", data, "--part", "all", "--format", "json"]
    if model:
        cmd += ["--model", model]
    m = json.loads(run(cmd))
    return m["accuracy"], m["kappa"], m["macro_f1"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("labels")
    ap.add_argument("out")
    ap.add_argument("--k", default="2,5,10,20")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--drop", default="BASOPHIL")
    ap.add_argument("--leuko", default="target/release/leuko")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    base = os.path.dirname(os.path.abspath(a.labels))
    rows = []
    with open(a.labels, newline="", encoding="utf-8-sig") as f:
        for r in csv.DictReader(f):
            if r["class"].upper() in a.drop.upper().split(","):
                continue
            path = r["file"] if os.path.isabs(r["file"]) else os.path.join(base, r["file"])
            rows.append({"file": path, "class": r["class"].upper()})
    by_class = {}
    for r in rows:
        by_class.setdefault(r["class"], []).append(r)
    ks = [int(k) for k in a.k.split(",")]
    results = []
    for k in ks:
        for rep in range(a.reps):
            rng = random.Random(f"{a.seed}-{k}-{rep}")
            train = []
            for c in sorted(by_class):
                train += rng.sample(by_class[c], min(k, len(by_class[c]) - 1))
            chosen = {r["file"] for r in train}
            test = [r for r in rows if r["file"] not in chosen]
            d = os.path.join(a.out, f"k{k}-rep{rep}")
            os.makedirs(d, exist_ok=True)
            train_csv, test_csv = os.path.join(d, "train.csv"), os.path.join(d, "test.csv")
            write_csv(train_csv, train)
            write_csv(test_csv, test)
            for name in ["default", "scratch", "finetune"]:
                t0 = time.time()
                model = None
                if name != "default":
                    run_dir = os.path.join(d, name)
                    cmd = [a.leuko, "train", "--data", train_csv, "--out", run_dir, "--quiet"]
                    cmd += ["--config", "experiments/final.toml"] if name == "scratch" else ["--init", "default"]
                    run(cmd)
                    model = os.path.join(run_dir, "model.leuko")
                acc, kappa, f1 = evaluate(a.leuko, model, test_csv)
                secs = time.time() - t0
                results.append(dict(k=k, rep=rep, model=name, train=len(train), test=len(test),
                                    accuracy=acc, kappa=kappa, macro_f1=f1, seconds=secs))
                print(f"k={k} rep={rep} {name}: accuracy {acc:.3f} kappa {kappa:.3f} "
                      f"macro F1 {f1:.3f} ({secs:.0f} s)", flush=True)
    with open(os.path.join(a.out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows(results)
    names = ["default", "scratch", "finetune"]

    def stat(k, name, key):
        v = [r[key] for r in results if r["k"] == k and r["model"] == name]
        return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)

    lines = ["| k per class | model | accuracy | kappa | macro F1 | seconds (train + evaluate) |",
             "|---|---|---|---|---|---|"]
    for k in ks:
        for name in names:
            cells = [f"{stat(k, name, key)[0]:.3f} ± {stat(k, name, key)[1]:.3f}"
                     for key in ["accuracy", "kappa", "macro_f1"]]
            lines.append(f"| {k} | {name} | " + " | ".join(cells) +
                         f" | {stat(k, name, 'seconds')[0]:.0f} |")
    with open(os.path.join(a.out, "learning-curve.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    # The accuracy plot as SVG (mean ± sd per k).
    w, h, m = 640, 400, 60
    colours = {"default": "#999999", "scratch": "#E69F00", "finetune": "#0072B2"}
    xs = {k: m + i * (w - 2 * m) / max(1, len(ks) - 1) for i, k in enumerate(ks)}
    y = lambda v: h - m - v * (h - 2 * m)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           'font-family="sans-serif" font-size="13">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="24" text-anchor="middle" font-size="16">'
           'Accuracy on the other photos against labelled photos per class</text>']
    for t in [0, 0.2, 0.4, 0.6, 0.8, 1.0]:
        svg.append(f'<line x1="{m}" x2="{w - m}" y1="{y(t)}" y2="{y(t)}" stroke="#ddd"/>')
        svg.append(f'<text x="{m - 8}" y="{y(t) + 4}" text-anchor="end">{t:.1f}</text>')
    for k in ks:
        svg.append(f'<text x="{xs[k]}" y="{h - m + 20}" text-anchor="middle">{k}</text>')
    svg.append(f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">'
               'labelled photos per class (k)</text>')
    for i, name in enumerate(names):
        pts = [(xs[k], y(stat(k, name, "accuracy")[0]), stat(k, name, "accuracy")[1]) for k in ks]
        svg.append('<polyline fill="none" stroke-width="2.5" stroke="{}" points="{}"/>'.format(
            colours[name], " ".join(f"{x},{yy}" for x, yy, _ in pts)))
        for x, yy, sd in pts:
            d = sd * (h - 2 * m)
            svg.append(f'<line x1="{x}" x2="{x}" y1="{yy - d}" y2="{yy + d}" '
                       f'stroke="{colours[name]}"/>')
            svg.append(f'<circle cx="{x}" cy="{yy}" r="4" fill="{colours[name]}"/>')
        svg.append(f'<rect x="{w - m - 150}" y="{m + 18 * i}" width="12" height="12" '
                   f'fill="{colours[name]}"/>')
        svg.append(f'<text x="{w - m - 132}" y="{m + 18 * i + 11}">{name}</text>')
    svg.append("</svg>")
    with open(os.path.join(a.out, "learning-curve.svg"), "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
