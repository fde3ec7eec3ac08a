#!/usr/bin/env python3
"""Refit experiment (docs/accuracy.md, "Refit on train + validation"): a split file whose training part
is a split's train + val, so that a network trains on 25% more photos for a fixed number of
epochs (experiments/final-refit.toml: no early stopping, patience > epochs).

`leuko train` needs a non-empty validation and test part and refuses overlapping parts, so
"val" holds the original test photos (only reported per epoch, never used to choose: the
result read is the last epoch's checkpoint, evaluated with the ORIGINAL split file) and
"test" holds one neutrophil moved out of training (the last one of the original val part).

usage: python3 experiments/refit_split.py SPLIT.json OUT.json
"""
import json
import sys


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    s = json.load(open(src))
    train = s["train"] + s["val"]
    last_neu = max(i for i, (_, label) in enumerate(train) if label == "NEUTROPHIL")
    out = {
        "seed": s.get("seed"),
        "classes": s["classes"],
        "train": train,
        "val": s["test"],
        "test": [train.pop(last_neu)],
    }
    with open(dst, "w") as f:
        json.dump(out, f, indent=1)
    print(f"{dst}: train {len(out['train'])}, val (= original test) {len(out['val'])}, test {out['test']}")


if __name__ == "__main__":
    main()
