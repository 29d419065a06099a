#!/usr/bin/env python3
"""Real-size checkpoints without downloads: random weights under the exact Hub configs.

    python3 scripts/real_size_check.py --out /tmp/shareflow-real [--models qwen3_vl_2b,...]
    SHAREFLOW_REAL_SIZE_DIR=/tmp/shareflow-real \
        cargo test --release -p shareflow-operators --test real_size -- --ignored --nocapture

For each model, the config in tests/golden/policy/real_size/<model>.json (the Hub config.json of
Qwen/Qwen2.5-VL-3B-Instruct, Qwen/Qwen3-VL-2B-Instruct and Qwen/Qwen3-VL-4B-Instruct, as
published) is instantiated by transformers from the config alone (no weights are downloaded), given
seeded random weights scaled so that log-probs spread over a few nats, and saved by
`save_pretrained` in bfloat16 to OUT/<model>/ (about 4.3 / 4.3 / 8.9 GB; nothing is committed).
Beside it, golden.json holds one short multimodal sequence (text, one 112x84 image, a response):
its ids, pixel values (as transformers' image processor makes them) and the response log-probs
from transformers 5.23 in bfloat16 and in float32 (the float32 run loads the saved bf16
weights, so it sees exactly the weights shareflow loads; it is left out for the 4B model by
default, which would need about 27 GB for both copies; peak 20.8 GB for the 3B). Eager
attention, CPU.

The Rust test (operators/tests/real_size.rs, #[ignore]d: it needs these multi-GB files and about
16 GiB of memory for the 4B model) loads each checkpoint, scores the sequence, compares with both
goldens, saves the checkpoint back and compares tensor names, shapes and dtypes, and measures the
peak memory of one training micro-batch where it fits in memory.
"""

import argparse
import json
import math
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "tests", "golden", "policy", "real_size")
MODELS = {
    "qwen2_5_vl_3b": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, 14, "clip"),
    "qwen3_vl_2b": (Qwen3VLConfig, Qwen3VLForConditionalGeneration, 16, "half"),
    "qwen3_vl_4b": (Qwen3VLConfig, Qwen3VLForConditionalGeneration, 16, "half"),
}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)


def loud_init(model, seed):
    """Seeded weights: matrices N(0, 1.2 / sqrt(fan_in)), embeddings N(0, 0.05), norms 1, biases
    N(0, 0.02), so that the log-probs of a random sequence spread over a few nats."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.ndim == 1 and name.endswith(".bias"):
                p.copy_((torch.randn(p.shape, generator=g) * 0.02).to(p.dtype))
            elif p.ndim == 1:
                p.fill_(1.0)
            elif "embed_tokens" in name or name == "lm_head.weight" or "pos_embed" in name:
                p.copy_((torch.randn(p.shape, generator=g) * 0.05).to(p.dtype))
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_((torch.randn(p.shape, generator=g) * (1.2 / math.sqrt(fan_in))).to(p.dtype))


def test_image():
    im = Image.new("RGB", (112, 84), (240, 235, 220))
    d = ImageDraw.Draw(im)
    d.ellipse([10, 10, 50, 50], fill=(200, 30, 30))
    d.rectangle([60, 30, 100, 70], fill=(30, 60, 200))
    return im


def image_processor(patch, norm):
    mean, std = (CLIP_MEAN, CLIP_STD) if norm == "clip" else ([0.5] * 3, [0.5] * 3)
    return Qwen2VLImageProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, image_mean=mean,
                                 image_std=std, size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280})


def response_logprobs(model, ids, prompt_len, pv, grid, cfg):
    mm = torch.zeros_like(ids, dtype=torch.int32)
    mm[ids == cfg.image_token_id] = 1
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm,
                    pixel_values=pv.to(model.dtype), image_grid_thw=grid, use_cache=False)
    lp = torch.log_softmax(out.logits[0, prompt_len - 1 : -1].float(), -1)
    return lp.gather(-1, ids[0, prompt_len:].unsqueeze(-1)).squeeze(-1)


def make(name, out_dir, f32_reference):
    cfg_cls, model_cls, patch, norm = MODELS[name]
    with open(os.path.join(CONFIGS, f"{name}.json")) as f:
        raw = json.load(f)
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    t0 = time.time()
    cfg = cfg_cls(**{k: v for k, v in raw.items() if k not in ("architectures", "transformers_version")})
    cfg.architectures = raw["architectures"]
    torch.manual_seed(0)
    model = model_cls._from_config(cfg, dtype=torch.bfloat16, attn_implementation="eager")
    loud_init(model, seed=1)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(d)
    made_s = time.time() - t0

    ip = image_processor(patch, norm)
    enc = ip(images=[test_image()], return_tensors="pt")
    pv, grid = enc["pixel_values"].to(torch.float32), enc["image_grid_thw"]
    ip.save_pretrained(d)
    n_img = int(grid.prod()) // 4
    vs, ve, img = raw["vision_start_token_id"], raw["vision_end_token_id"], raw["image_token_id"]
    prompt = [151644, 872, 198, vs] + [img] * n_img + [ve, 4340, 1657, 20816, 525, 1052, 30, 151645, 198, 151644, 77091, 198]
    response = [13708, 766, 29, 1378, 20816, 690, 26865, 29, 1124, 79075, 90, 17, 92, 151645]
    ids = torch.tensor([prompt + response])
    lp_bf16 = response_logprobs(model, ids, len(prompt), pv, grid, cfg)
    del model
    t1 = time.time()
    if f32_reference:
        model = model_cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        lp_f32 = response_logprobs(model, ids, len(prompt), pv, grid, cfg)
        del model
    else:
        lp_f32 = None
    save_file({"image.png": pv.contiguous(), "image.png.image_grid_thw": grid[0].to(torch.int64).contiguous()},
              os.path.join(d, "pixel_values.safetensors"), metadata={"format": "pt"})
    golden = {
        "generated_by": "scripts/real_size_check.py",
        "model": name,
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "parameters": n_params,
        "prompt_ids": prompt,
        "response_ids": response,
        "image_grid_thw": grid[0].tolist(),
        "logprobs_bf16": [float(x) for x in lp_bf16],
        "logprobs_f32": None if lp_f32 is None else [float(x) for x in lp_f32],
        "bf16_vs_f32_max_abs": None if lp_f32 is None else float((lp_bf16 - lp_f32).abs().max()),
        "seconds_make_and_save": round(made_s, 1),
        "seconds_f32_reference": round(time.time() - t1, 1),
        "python_peak_rss_gib": round(peak_rss_gib(), 2),
    }
    with open(os.path.join(d, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
    print(json.dumps({k: v for k, v in golden.items() if not isinstance(v, list)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--no-f32", default="qwen3_vl_4b",
                    help="models without the float32 reference (it needs f32 + bf16 copies in memory: "
                         "about 27 GB for the 4B model); default: qwen3_vl_4b")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    for name in args.models.split(","):
        if name not in MODELS:
            sys.exit(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
        make(name, args.out, name not in args.no_f32.split(","))


if __name__ == "__main__":
    main()
