#!/usr/bin/env python3
"""Learning-curve experiment (docs/accuracy.md, "Where the errors are"):
a split file whose training part keeps only a share of a split's training photos, the same share
of every class (at least one photo each), drawn with a fixed seed; validation and test parts are
kept as they are, so every point of the curve is scored on the same photos.

The draw is nested: for one seed, the photos kept at a smaller share are a subset of those kept
at a larger one (each class is shuffled once and a prefix taken), so the curve shows what more
photos add, not which photos were drawn.

With `--photos LO:HI`, every part (training, validation and test) first keeps only the photos
numbered LO <= n < HI (BloodImage_n), e.g. to train and test on one stretch of BCCD's photos
(docs/accuracy.md, "Where the errors are").

usage: python3 experiments/subset_split.py SPLIT.json SHARE SEED OUT.json [--photos LO:HI]   (0 < SHARE <= 1)
"""
import json
import random
import sys


def main() -> None:
    args = sys.argv[1:]
    lo, hi = 0, float("inf")
    if len(args) == 6 and args[4] == "--photos":
        lo, hi = (int(x) for x in args[5].split(":"))
        args = args[:4]
    if len(args) != 4:
        sys.exit(__doc__)
    src, share, seed, dst = args[0], float(args[1]), int(args[2]), args[3]
    if not 0 < share <= 1:
        sys.exit(f"SHARE must be in (0, 1], got {share}")
    s = json.load(open(src))
    for part in ("train", "val", "test"):
        s[part] = [e for e in s[part] if lo <= e[0] < hi]
    by_class: dict[str, list] = {}
    for entry in s["train"]:
        by_class.setdefault(entry[1], []).append(entry)
    kept = []
    for label in sorted(by_class):
        photos = sorted(by_class[label])
        random.Random(f"{seed}-{label}").shuffle(photos)
        kept += photos[: max(1, round(share * len(photos)))]
    out = dict(s, train=sorted(kept))
    with open(dst, "w") as f:
        json.dump(out, f, indent=1)
    counts = {label: sum(1 for e in kept if e[1] == label) for label in sorted(by_class)}
    print(f"{dst}: train {len(kept)} of {len(s['train'])} {counts}, val {len(s['val'])}, test {len(s['test'])}")


if __name__ == "__main__":
    main()
