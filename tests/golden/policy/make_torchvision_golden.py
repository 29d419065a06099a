#!/usr/bin/env python3
"""Golden data for the torchvision image path (resample.rs `resize_rgb_torchvision`, image.rs
`ImageBackend::Torchvision`): what transformers 5's default image processor computes.

transformers 5.x `AutoProcessor.from_pretrained(dir)` / `AutoImageProcessor.from_pretrained(dir)`
pick the torchvision backend (`Qwen2VLImageProcessor`, a `TorchvisionBackend`) whenever
torchvision is installed; the PIL one (`Qwen2VLImageProcessorPil`) only with `backend="pil"` or
the deprecated `use_fast=False`. The two differ in the resize (torchvision's `uint8` resize,
i.e. ATen `_upsample_bicubic2d_aa`, rounds differently from Pillow's) and in the normalisation
(fused: `(x - mean / rescale_factor) / (std / rescale_factor)` in float32).

Run from the repository root (torch 2.15, torchvision 0.29, transformers 5.23, Pillow 13):

    python3 tests/golden/policy/make_torchvision_golden.py

Every resize is computed in subprocesses with `ATEN_CPU_CAPABILITY=avx2` and `avx512` (ATen's
AVX2 kernel and the AVX512 build of its generic kernel, what x86 machines of the last ten years
run); the script stops if they disagree, so one golden holds for both. The scalar build
(`ATEN_CPU_CAPABILITY=default`, CPUs without AVX2) is run too and its differences are counted
in torchvision.json, not matched: there torchvision resizes bilinear through float32, and
ATen's scalar bicubic kernel rounds differently for an output width of one pixel.

Writes (deterministic; running it again rewrites identical files):
  resize/torchvision.json          cases: input PNG (from make_image_golden.py), size, filter,
                                   output PNG; plus a sweep of random sizes stored as FNV-1a
                                   64-bit hashes of the output bytes
  resize/tv_*.png                  torchvision outputs of the listed cases
  processor/image_processor_torchvision.safetensors
                                   pixel_values / image_grid_thw of the default
                                   `AutoImageProcessor` (torchvision backend) for the same
                                   images and max_pixels as expected.json's image_processor cases
Checked by operators/tests/processor_golden.rs.
"""

import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESIZE_DIR = os.path.join(HERE, "resize")
PROC_DIR = os.path.join(HERE, "processor")
CAPABILITIES = ["avx2", "avx512"]
UNMATCHED = "default"

INPUTS = ["a61x47", "b9x13", "c80x60", "d128x16", "e3x200"]

# (input, (width, height), filter): the shapes of make_image_golden.py's cases and
# Qwen2-VL's typical smart_resize targets
CASES = [
    ("a61x47", (28, 56), "bicubic"),
    ("a61x47", (90, 70), "bicubic"),
    ("a61x47", (30, 20), "bicubic"),
    ("a61x47", (61, 20), "bicubic"),
    ("a61x47", (20, 47), "bicubic"),
    ("a61x47", (56, 56), "bicubic"),
    ("b9x13", (56, 84), "bicubic"),
    ("b9x13", (5, 7), "bicubic"),
    ("c80x60", (56, 28), "bicubic"),
    ("c80x60", (79, 61), "bicubic"),
    ("c80x60", (33, 17), "bicubic"),
    ("c80x60", (84, 56), "bicubic"),
    ("d128x16", (40, 16), "bicubic"),
    ("d128x16", (112, 28), "bicubic"),
    ("e3x200", (28, 196), "bicubic"),
    ("e3x200", (2, 50), "bicubic"),
    ("a61x47", (28, 56), "bilinear"),
    ("c80x60", (33, 17), "bilinear"),
    ("b9x13", (56, 84), "bilinear"),
]

SWEEP = 400  # random (input, size) pairs per filter


def load(name):
    return np.asarray(Image.open(os.path.join(RESIZE_DIR, f"in_{name}.png")).convert("RGB"))


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def sweep_sizes():
    rng = np.random.RandomState(20)
    out = []
    for filt in ["bicubic", "bilinear"]:
        for _ in range(SWEEP):
            name = INPUTS[rng.randint(len(INPUTS))]
            w, h = rng.randint(1, 300), rng.randint(1, 300)
            out.append((name, (int(w), int(h)), filt))
    return out


def child():
    """Resizes every case with this process's ATen CPU kernel; prints raw bytes as hex JSON."""
    import torch
    from torchvision.transforms.v2 import functional as tvF

    torch.set_num_threads(1)
    modes = {"bicubic": tvF.InterpolationMode.BICUBIC, "bilinear": tvF.InterpolationMode.BILINEAR}
    res = {"capability": torch.backends.cpu.get_cpu_capability(), "out": []}
    for name, (w, h), filt in CASES + sweep_sizes():
        x = torch.from_numpy(load(name).copy()).permute(2, 0, 1).contiguous()
        y = tvF.resize(x, [h, w], interpolation=modes[filt], antialias=True)
        assert y.dtype == torch.uint8
        res["out"].append(y.permute(1, 2, 0).contiguous().numpy().tobytes().hex())
    json.dump(res, sys.stdout)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def main():
    import torch
    import torchvision
    import transformers
    import PIL

    results = {}
    for cap in CAPABILITIES + [UNMATCHED]:
        env = dict(os.environ, ATEN_CPU_CAPABILITY=cap)
        out = subprocess.run([sys.executable, __file__, "--child"], env=env, check=True, capture_output=True)
        r = json.loads(out.stdout)
        print(f"ATEN_CPU_CAPABILITY={cap}: kernel {r['capability']}")
        results[cap] = r["out"]
    base = results[CAPABILITIES[0]]
    for cap in CAPABILITIES[1:]:
        bad = [i for i, (a, b) in enumerate(zip(base, results[cap])) if a != b]
        if bad:
            sys.exit(f"kernels disagree: {CAPABILITIES[0]} vs {cap} on cases {bad[:10]}")
    scalar = [
        {"case": i, "size": [w, h], "filter": filt}
        for i, ((_, (w, h), filt), a, b) in enumerate(zip(CASES + sweep_sizes(), base, results[UNMATCHED]))
        if a != b
    ]
    print(f"ATEN_CPU_CAPABILITY={UNMATCHED} differs on {len(scalar)} resizes (not matched)")
    cases = []
    for (name, (w, h), filt), hexed in zip(CASES, base):
        arr = np.frombuffer(bytes.fromhex(hexed), np.uint8).reshape(h, w, 3)
        out = f"tv_{name}_{w}x{h}_{filt}.png"
        Image.fromarray(arr, "RGB").save(os.path.join(RESIZE_DIR, out), format="PNG", optimize=True)
        cases.append({"input": f"in_{name}.png", "width": w, "height": h, "filter": filt, "output": out})
    sweep = [
        {"input": f"in_{name}.png", "width": w, "height": h, "filter": filt, "fnv1a64": fnv1a64(bytes.fromhex(hx))}
        for (name, (w, h), filt), hx in zip(sweep_sizes(), base[len(CASES) :])
    ]
    write_json(
        os.path.join(RESIZE_DIR, "torchvision.json"),
        {
            "generated_by": "tests/golden/policy/make_torchvision_golden.py",
            "versions": {
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "transformers": transformers.__version__,
                "pillow": PIL.__version__,
            },
            "kernels_checked": CAPABILITIES,
            "scalar_kernel_differs": scalar,
            "resize": cases,
            "sweep": sweep,
        },
    )
    print(f"{len(cases)} cases, {len(sweep)} sweep sizes: identical on {CAPABILITIES}")

    # the default image processor on the processor fixture's images
    from safetensors.torch import save_file
    from transformers import AutoImageProcessor

    expected = json.load(open(os.path.join(PROC_DIR, "expected.json")))
    tensors = {}
    for c in expected["image_processor"]:
        ip = AutoImageProcessor.from_pretrained(PROC_DIR, max_pixels=c["max_pixels"])
        assert type(ip).__name__ == "Qwen2VLImageProcessor", type(ip)
        assert "Torchvision" in type(ip).__mro__[1].__name__, type(ip).__mro__
        img = Image.open(os.path.join(PROC_DIR, c["image"]))
        enc = ip(images=[img], return_tensors="pt")
        assert enc["image_grid_thw"][0].tolist() == c["image_grid_thw"], c
        name = os.path.splitext(os.path.basename(c["image"]))[0]
        tensors[name] = enc["pixel_values"].contiguous()
        tensors[f"{name}.image_grid_thw"] = enc["image_grid_thw"][0].contiguous()
    save_file(tensors, os.path.join(PROC_DIR, "image_processor_torchvision.safetensors"))
    print(f"processor: {len(expected['image_processor'])} images")


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child()
    else:
        main()
