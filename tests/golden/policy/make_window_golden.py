#!/usr/bin/env python3
"""Golden log-probs of Qwen2.5-VL's windowed vision attention on images whose merged grid does
not divide into whole windows, from transformers 5.23 (issue: windowed checkpoints disagreed).

Run from the repository root, after make_fixtures.py (it reuses tiny-qwen2_5_vl's tokenizer,
chat template and text config):

    python3 tests/golden/policy/make_window_golden.py

Writes tests/golden/policy/windows/:
  ckpt/            one tiny random Qwen2_5_VLForConditionalGeneration (vision depth 3, hidden
                   48, 3 heads, patch 14, merge 2; text model as tiny-qwen2_5_vl), Hub tensor
                   names, processor files; max_pixels 40000 so that the large image is scaled
                   down
  images/*.png     test images; every one needs a resize (down, up, or to a multiple of 28)
  golden.json      per variant (vision_config overrides: window_size, fullatt_block_indexes;
                   the weights do not depend on them), per case: prompt ids, response ids,
                   image_grid_thw, and the response tokens' log-probs with the default
                   `AutoProcessor.from_pretrained(dir)` (torchvision image backend) and with
                   `backend="pil"`

The model runs in float32 with eager attention on CPU; log-probs are computed on the single
unpadded sequence prompt + response, as make_fixtures.py does. Checked by
operators/tests/vision_windows.rs at 1e-4 absolute per token. Deterministic.
"""

import copy
import json
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_fixtures as mf  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration  # noqa: E402

SRC = os.path.join(HERE, "tiny-qwen2_5_vl")
OUT = os.path.join(HERE, "windows")
CKPT = os.path.join(OUT, "ckpt")
IMG = os.path.join(OUT, "images")
SEED = 23
MAX_PIXELS = 40000

VISION = {
    "depth": 3,
    "hidden_size": 48,
    "intermediate_size": 64,
    "num_heads": 3,
    "window_size": 56,
    "fullatt_block_indexes": [2],
}

# name -> vision_config overrides. window_size / (patch_size * merge) = merged units per window side
VARIANTS = {
    "w56_full2": {"window_size": 56, "fullatt_block_indexes": [2]},  # the checkpoint
    "w56_full0": {"window_size": 56, "fullatt_block_indexes": [0]},
    "w56_none": {"window_size": 56, "fullatt_block_indexes": []},
    "w84_full1": {"window_size": 84, "fullatt_block_indexes": [1]},
    "w112_full02": {"window_size": 112, "fullatt_block_indexes": [0, 2]},
}

# name -> (width, height, seed); the resized size and merged grid (rows x cols) in comments
IMAGES = {
    "i120x90.png": (120, 90, 1),  # -> 112x84: merged 3x4 (rows padded for 2x2 windows)
    "i150x95.png": (150, 95, 2),  # -> 140x84: merged 3x5 (padded in both directions)
    "i61x170.png": (61, 170, 3),  # -> 56x168: merged 6x2 (tall; 4x4 windows padded both ways)
    "i400x300.png": (400, 300, 4),  # downscaled to 224x168: merged 6x8 (3x3 windows: padded)
    "i30x20.png": (30, 20, 5),  # upscaled to 84x56: merged 2x3
}

QUESTION = "How many shapes are there?"
CASES = [
    ("one_wide", ["i120x90.png"], "<think> two shapes </think> \\boxed{2}"),
    ("one_both", ["i150x95.png"], "<think> three </think> \\boxed{3}"),
    ("one_tall", ["i61x170.png"], "<think> one </think> \\boxed{1}"),
    ("one_down", ["i400x300.png"], "<think> four shapes </think> \\boxed{4}"),
    ("two_up", ["i30x20.png", "i150x95.png"], "<think> five </think> \\boxed{5}"),
]


def make_image(path, w, h, seed):
    """Shapes on a gradient with a noisy band: natural-ish edges plus pixel-level detail."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([xx * 200 / max(w - 1, 1), yy * 200 / max(h - 1, 1), (xx + yy) % 97 * 2], -1)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(5):
        x0, y0 = int(rng.randint(0, w)), int(rng.randint(0, h))
        x1 = min(w - 1, x0 + int(rng.randint(3, max(4, w // 2))))
        y1 = min(h - 1, y0 + int(rng.randint(3, max(4, h // 2))))
        col = tuple(int(v) for v in rng.randint(0, 256, 3))
        (d.rectangle if rng.rand() < 0.5 else d.ellipse)([x0, y0, x1, y1], fill=col)
    arr = np.asarray(img).astype(np.int16)
    bh = max(1, h // 6)
    y = int(rng.randint(0, h - bh + 1))
    arr[y : y + bh] += rng.randint(-30, 31, size=(bh, w, 3)).astype(np.int16)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB").save(path, format="PNG")


def config_with(base, overrides):
    cfg = copy.deepcopy(base)
    cfg["vision_config"].update(overrides)
    return cfg


def main():
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(CKPT)
    os.makedirs(IMG)

    base = json.load(open(os.path.join(SRC, "config.json")))
    base["vision_config"].update(VISION)
    base["transformers_version"] = transformers.__version__
    for f in ["chat_template.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(SRC, f), CKPT)
    prep = json.load(open(os.path.join(SRC, "preprocessor_config.json")))
    prep.update(max_pixels=MAX_PIXELS, size={"longest_edge": MAX_PIXELS, "shortest_edge": prep["min_pixels"]})
    mf.write_json(os.path.join(CKPT, "preprocessor_config.json"), prep)
    mf.write_json(os.path.join(CKPT, "config.json"), base)

    model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**base))
    mf.init_weights(model, SEED)
    state = {mf.hub_name(k): v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(CKPT, "model.safetensors"), metadata={"format": "pt"})
    del model

    for name, (w, h, seed) in IMAGES.items():
        make_image(os.path.join(IMG, name), w, h, seed)

    procs = {
        "torchvision": AutoProcessor.from_pretrained(CKPT),
        "pil": AutoProcessor.from_pretrained(CKPT, use_fast=False),  # backend="pil" also hits the video processor
    }
    assert type(procs["torchvision"].image_processor).__name__ == "Qwen2VLImageProcessor"
    assert type(procs["pil"].image_processor).__name__ == "Qwen2VLImageProcessorPil"

    out = {
        "generated_by": "tests/golden/policy/make_window_golden.py",
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "torchvision": __import__("torchvision").__version__,
            "pillow": Image.__version__,
        },
        "question": QUESTION,
        "variants": {},
    }
    for vname, over in VARIANTS.items():
        cfg = Qwen2_5_VLConfig(**config_with(base, over))
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            CKPT, config=cfg, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        assert model.config.vision_config.window_size == over["window_size"]
        cases = []
        for cname, images, response in CASES:
            msgs = mf.messages_for(QUESTION, images)
            pil_images = [Image.open(os.path.join(IMG, i)).convert("RGB") for i in images]
            case = {"name": cname, "images": [f"images/{i}" for i in images], "response": response}
            for backend, proc in procs.items():
                prompt = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
                enc = proc(text=[prompt], images=pil_images, return_tensors="pt")
                rid = proc.tokenizer(response, add_special_tokens=False)["input_ids"]
                full = torch.cat([enc["input_ids"], torch.tensor([rid])], 1)
                logits = mf.forward_logits(
                    model, True, full, torch.ones_like(full), enc["pixel_values"], enc["image_grid_thw"]
                )
                lp = mf.gather_logprobs(logits[0], full[0], enc["input_ids"].shape[1], len(rid))
                grids = enc["image_grid_thw"].tolist()
                if "prompt_ids" in case:
                    assert case["prompt_ids"] == enc["input_ids"][0].tolist()
                    assert case["image_grid_thw"] == grids
                case.update(prompt_ids=enc["input_ids"][0].tolist(), response_ids=rid, image_grid_thw=grids)
                case[f"logprobs_{backend}"] = mf.f32_list(lp)
            diff = max(abs(a - b) for a, b in zip(case["logprobs_torchvision"], case["logprobs_pil"]))
            print(f"{vname} {cname}: grids {case['image_grid_thw']}, |torchvision - pil| max {diff:.2e}")
            cases.append(case)
        out["variants"][vname] = {"vision_config": over, "cases": cases}
        del model
    mf.write_json(os.path.join(OUT, "golden.json"), out, indent=1)
    print("sizes:", {f: os.path.getsize(os.path.join(CKPT, f)) for f in sorted(os.listdir(CKPT))})


if __name__ == "__main__":
    main()
