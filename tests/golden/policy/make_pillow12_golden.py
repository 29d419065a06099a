#!/usr/bin/env python3
"""The resize cases of make_image_golden.py redone by Pillow 12 (which always runs the
horizontal pass first; Pillow 13 goes vertical first when the height shrinks much more than the
width). Run after make_image_golden.py, with a Python that has Pillow 12 and numpy:

    python3 -m venv /tmp/pil12 && /tmp/pil12/bin/pip install "pillow==12.3.0" numpy
    /tmp/pil12/bin/python tests/golden/policy/make_pillow12_golden.py

Writes resize/pillow12.json (per case: whether Pillow 12 gives the Pillow 13 output) and
resize/p12_*.png for the cases where it does not. Checked by operators/tests/processor_golden.rs
(`PassOrder::HorizontalFirst`).
"""

import json
import os

import numpy as np
import PIL
from PIL import Image

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resize")
FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

assert PIL.__version__.startswith("12."), PIL.__version__
with open(os.path.join(HERE, "index.json"), encoding="utf-8") as f:
    index = json.load(f)
cases = []
for c in index["resize"]:
    with Image.open(os.path.join(HERE, c["input"])) as src:
        out = src.convert("RGB").resize((c["width"], c["height"]), resample=FILTERS[c["filter"]])
    with Image.open(os.path.join(HERE, c["output"])) as p13:
        same = np.array_equal(np.asarray(out), np.asarray(p13.convert("RGB")))
    entry = {"output13": c["output"], "same": bool(same)}
    if not same:
        entry["output12"] = "p12_" + c["output"].removeprefix("out_")
        out.save(os.path.join(HERE, entry["output12"]), format="PNG", optimize=True)
    cases.append(entry)
with open(os.path.join(HERE, "pillow12.json"), "w", encoding="utf-8") as f:
    json.dump({"pillow": PIL.__version__, "resize": cases}, f, indent=1)
    f.write("\n")
print(f"{sum(not c['same'] for c in cases)} of {len(cases)} cases differ from Pillow 13")
