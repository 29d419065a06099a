#!/usr/bin/env python3
"""Keep only some question kinds of an exported shapes dataset (RESULTS.md, session 7).

Usage:
    shareflow data shapes --out SRC --rows 4000 --val-rows 640
    python3 scripts/shapes_kinds.py SRC DST count_all [count_shape ...]
    shareflow train --set data.train_files=DST@train --set data.val_files=DST@test ...

Kinds: count_all, count_colour, count_shape, digit_sum, most_frequent_colour. A row's kind is
read from its original question (the `problem` column), whose wording is fixed per kind
(`operators/src/task/shapes.rs`, `texts`). Needs pyarrow (`pip install pyarrow`).
"""

import os
import re
import sys

import pyarrow.parquet as pq

# The embedded questions end in `<image>`; older exports started with it.
_IMG = r"^(?:<image>)?"
KINDS = {
    "count_all": re.compile(_IMG + r"How many shapes are in the image\?"),
    "count_colour": re.compile(_IMG + r"How many (red|green|blue|yellow) shapes are in the image\?"),
    "count_shape": re.compile(_IMG + r"How many (squares|circles|triangles) are in the image\?"),
    "digit_sum": re.compile(_IMG + r"What is the sum of the two digits in the image\?"),
    "most_frequent_colour": re.compile(_IMG + r"Which colour appears most often"),
}


def kind_of(problem):
    found = [k for k, pattern in KINDS.items() if pattern.search(problem)]
    if len(found) != 1:
        raise SystemExit(f"cannot tell the kind of question {problem!r} (matches: {found})")
    return found[0]


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    src, dst, keep = sys.argv[1], sys.argv[2], sys.argv[3:]
    unknown = [k for k in keep if k not in KINDS]
    if unknown:
        raise SystemExit(f"unknown kind(s) {unknown}; choose from {sorted(KINDS)}")
    os.makedirs(dst, exist_ok=True)
    for split in ("train", "test"):
        name = f"{split}-00000-of-00001.parquet"
        table = pq.read_table(os.path.join(src, name))
        mask = [kind_of(p) in keep for p in table.column("problem").to_pylist()]
        kept = table.filter(mask)
        pq.write_table(kept, os.path.join(dst, name))
        print(f"{split}: kept {kept.num_rows} of {table.num_rows} rows")


if __name__ == "__main__":
    main()
