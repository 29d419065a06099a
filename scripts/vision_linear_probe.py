#!/usr/bin/env python3
"""Is a cell's colour (or shape) linearly readable from a checkpoint's vision tokens? (RESULTS.md,
session 8.)

Usage:
    shareflow data shapes --out SRC --rows 4000 --val-rows 640
    python3 scripts/vision_linear_probe.py CHECKPOINT_DIR SRC/train-00000-of-00001.parquet \
        [colour|shape] [IMAGES=1500]

The checkpoint is loaded with Hugging Face transformers (`Qwen2_5_VLForConditionalGeneration`, its
own `Qwen2VLImageProcessor`), so this also checks that shareflow's checkpoints load there. Every
shapes image is a 3x3 grid of 28-px cells and the tiny policy has one merged vision token per
cell (row-major). Each token is labelled from the pixels of its cell: empty (at most 20 pixels of a
palette colour), else its colour (4 classes, the most pixels) or its shape (square, circle,
triangle by how much of its bounding box it fills). Digit images are skipped. A softmax regression is fitted on the first 70%
of the tokens (features standardised) and scored on the rest.

Prints the accuracy over all held-out tokens, over the non-empty ones (chance: 1/4 for colour,
1/3 for shape) and of empty-versus-not. Needs torch, transformers, pyarrow and Pillow.
"""

import io
import sys

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessor

# operators/src/task/mod.rs, Colour::rgb, in Colour::ALL order (labels 1-4).
PALETTE = [(220, 30, 30), (30, 160, 50), (30, 70, 220), (240, 200, 20)]
CELL, GRID = 28, 3


def cell_labels(image, mode):
    """One label per cell, row-major: 0 empty, else colour 1-4 or shape 1-3."""
    a = np.asarray(image).astype(int)
    labels = []
    for cy in range(GRID):
        for cx in range(GRID):
            cell = a[cy * CELL:(cy + 1) * CELL, cx * CELL:(cx + 1) * CELL]
            hits = [int((np.abs(cell - np.array(rgb)).sum(2) < 10).sum()) for rgb in PALETTE]
            if max(hits) <= 20:
                labels.append(0)
                continue
            if mode == "colour":
                labels.append(1 + int(np.argmax(hits)))
                continue
            ink = np.abs(cell - 255).sum(2) > 30
            ys, xs = np.nonzero(ink)
            fill = ink.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
            labels.append(1 if fill > 0.95 else 2 if fill > 0.65 else 3)
    return labels


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    checkpoint, parquet = sys.argv[1], sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "colour"
    if mode not in ("colour", "shape"):
        sys.exit(f"the label must be colour or shape, got {mode!r}")
    images = int(sys.argv[4]) if len(sys.argv) > 4 else 1500
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32)
    model.eval()
    processor = Qwen2VLImageProcessor.from_pretrained(checkpoint)
    features, labels = [], []
    for row in pq.read_table(parquet, columns=["images"]).to_pylist()[:images]:
        image = Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("RGB")
        cells = cell_labels(image, mode)
        if max(cells) == 0:
            continue
        inputs = processor(images=[image], return_tensors="pt")
        with torch.no_grad():
            out = model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
        tokens = out.pooler_output if hasattr(out, "pooler_output") else out
        if tokens.shape[0] != GRID * GRID:
            sys.exit(f"expected {GRID * GRID} vision tokens per image, got {tokens.shape[0]}")
        features.append(tokens.numpy())
        labels += cells
    x = torch.tensor(np.concatenate(features))
    y = torch.tensor(labels)
    cut = int(len(y) * 0.7)
    x = (x - x[:cut].mean(0)) / (x[:cut].std(0) + 1e-6)
    classes = int(y.max()) + 1
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(2000):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(x[:cut] @ w + b, y[:cut]).backward()
        opt.step()
    pred = (x[cut:] @ w + b).argmax(1)
    truth = y[cut:]
    full = truth > 0
    print(f"{checkpoint}: {mode}, {len(y)} tokens ({cut} fitted, {len(y) - cut} held out)")
    print(f"  all held-out tokens  {(pred == truth).float().mean().item():.3f}")
    print(f"  non-empty tokens     {(pred[full] == truth[full]).float().mean().item():.3f}")
    print(f"  empty vs not         {((pred > 0) == full).float().mean().item():.3f}")


if __name__ == "__main__":
    main()
