#!/usr/bin/env python3
"""Two stretches of BCCD (docs/accuracy.md, "Where the errors are"): compares the photos numbered
below CUT with the others on two things that do not depend on any label:

- the size of the annotated leukocyte (longer side of the VOC `WBC` box, photos with one box not
  touching the edge), also per class of `labels.csv` (single-label rows), next to the erythrocytes' (median side of the `RBC` boxes not touching the edge), so
  that a change of magnification would show as a change of both;
- the photo's fine detail: the ratio of mean absolute differences between horizontal neighbours
  1 pixel apart and 4 pixels apart in the green channel (higher: more of the photo's contrast at the
  finest scale, i.e. sharper or noisier). Read from the whole photos as `leuko isolate --margin 10
  --size 640` writes them (the photo itself, stretched vertically to 640x640; rows are sampled, so
  the vertical stretch does not enter).

usage: python3 experiments/photo_batches.py [--cut N] [--data DIR]
       (defaults: --cut 150, --data ../shared/data/bccd; leuko: $LEUKO_BIN or target/release/leuko)
"""
import csv
import glob
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zlib


def read_png(path):
    """8-bit RGB, non-interlaced PNG (what leuko writes) as rows of bytes."""
    data = open(path, "rb").read()
    i, idat, width, height = 8, b"", 0, 0
    while i < len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            if (depth, colour) != (8, 2):
                raise ValueError(f"{path}: not 8-bit RGB")
        elif kind == b"IDAT":
            idat += body
        i += 12 + length
    raw, stride, rows, prev, p = zlib.decompress(idat), width * 3, [], bytearray(width * 3), 0
    for _ in range(height):
        kind, line = raw[p], bytearray(raw[p + 1 : p + 1 + stride])
        p += 1 + stride
        for x in range(stride):
            a = line[x - 3] if x >= 3 else 0
            b, c = prev[x], (prev[x - 3] if x >= 3 else 0)
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                q = a + b - c
                pa, pb, pc = abs(q - a), abs(q - b), abs(q - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return width, rows


def fine_detail(path):
    width, rows = read_png(path)
    near = far = 0
    for row in rows[::4]:
        green = row[1::3]
        near += sum(abs(green[x + 1] - green[x]) for x in range(0, width - 4, 2))
        far += sum(abs(green[x + 4] - green[x]) for x in range(0, width - 4, 2))
    return near / far


def main() -> None:
    args, cut, data = sys.argv[1:], 150, "../shared/data/bccd"
    while args:
        if args[0] == "--cut" and len(args) > 1:
            cut, args = int(args[1]), args[2:]
        elif args[0] == "--data" and len(args) > 1:
            data, args = args[1], args[2:]
        else:
            sys.exit(__doc__)
    number = lambda path: int(re.findall(r"(\d+)", os.path.basename(path))[0])  # noqa: E731
    stretch = lambda n: "below" if n < cut else "from"  # noqa: E731
    labels = {}
    with open(os.path.join(data, "labels.csv"), newline="") as f:
        for row in list(csv.reader(f))[1:]:
            if len(row) >= 3 and row[1].strip().isdigit() and row[2] and "," not in row[2]:
                labels[int(row[1])] = row[2].strip().lower()
    wbc, rbc = {"below": [], "from": []}, {"below": [], "from": []}
    by_class = {}
    for path in glob.glob(os.path.join(data, "Annotations", "*.xml")):
        sides = {"WBC": [], "RBC": []}
        for obj in ET.parse(path).findall("object"):
            name, box = obj.find("name").text, obj.find("bndbox")
            x0, y0, x1, y1 = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            if name in sides and x0 > 2 and y0 > 2 and x1 < 638 and y1 < 478:
                sides[name].append(max(x1 - x0, y1 - y0))
        n = number(path)
        s = stretch(n)
        if len(sides["WBC"]) == 1:
            wbc[s].append(sides["WBC"][0])
            if n in labels:
                by_class.setdefault(labels[n], {"below": [], "from": []})[s].append(sides["WBC"][0])
        rbc[s] += sides["RBC"]
    photos = sorted(glob.glob(os.path.join(data, "JPEGImages", "*.jpg")))
    detail = {"below": [], "from": []}
    with tempfile.TemporaryDirectory() as out:
        leuko = os.environ.get("LEUKO_BIN", "target/release/leuko")
        cmd = [leuko, "isolate", "--out", out, "--margin", "10", "--size", "640", "--quiet"]
        subprocess.run(cmd + photos, check=True, capture_output=True)
        for path in glob.glob(os.path.join(out, "*_0.png")):
            detail[stretch(number(path))].append(fine_detail(path))
    print("medians, with the 10th and 90th percentile in brackets")
    print(f"{'':36}{'photos < ' + str(cut):>28}{'photos >= ' + str(cut):>28}")
    rows = [("leukocyte box side, px", wbc)]
    rows += [(f"  {name}", v) for name, v in sorted(by_class.items()) if min(map(len, v.values())) >= 2]
    rows += [("erythrocyte box side, px", rbc), ("fine detail, 1 px / 4 px", detail)]
    for what, values in rows:
        cells = []
        for s in ("below", "from"):
            deciles = statistics.quantiles(values[s], n=10)
            median = statistics.median(values[s])
            cells.append(f"{median:.3g} [{deciles[0]:.3g}, {deciles[-1]:.3g}] n={len(values[s])}")
        print(f"{what:36}{cells[0]:>28}{cells[1]:>28}")


if __name__ == "__main__":
    main()
