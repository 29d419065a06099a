#!/usr/bin/env python3
"""A Qwen2.5-VL-3B-shaped checkpoint with random weights that both benches can feed.

    python3 scripts/gpu_shaped_checkpoint.py --out DIR [--device cuda] [--set KEY=VALUE ...]

The config is tests/golden/policy/real_size/qwen2_5_vl_3b.json (the Hub config of
Qwen/Qwen2.5-VL-3B-Instruct), with its special-token ids replaced by those of the tiny fixture
tests/golden/policy/tiny-qwen2_5_vl, whose tokenizer, chat template and processor files are copied
beside the weights: the benches (benches/policy.rs and tests/golden/policy/bench_torch.py) build
their prompts with that tokenizer, so every id they feed is valid and the image placeholders are
the model's. Weights: transformers' own random init (seeded), saved by save_pretrained in
bfloat16 (about 7.5 GB). `--set num_hidden_layers=1 --set vision_config.depth=1` shrinks it for a
dry run on a CPU. Used by scripts/gpu_check.sh; nothing it writes is committed.
"""

import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "policy")
TINY = os.path.join(GOLDEN, "tiny-qwen2_5_vl")
TOKEN_KEYS = ["bos_token_id", "eos_token_id", "pad_token_id", "vision_start_token_id",
              "vision_end_token_id", "vision_token_id", "image_token_id", "video_token_id"]
PROCESSOR_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.json",
                   "chat_template.jinja", "preprocessor_config.json", "special_tokens_map.json",
                   "processor_config.json", "generation_config.json"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default=os.path.join(GOLDEN, "real_size", "qwen2_5_vl_3b.json"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (dotted for nested, e.g. vision_config.depth=1)")
    args = ap.parse_args()
    t0 = time.time()
    cfg = json.load(open(args.config))
    tiny = json.load(open(os.path.join(TINY, "config.json")))
    for k in TOKEN_KEYS:
        if k in tiny:
            cfg[k] = tiny[k]
    for kv in args.set:
        key, _, raw = kv.partition("=")
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = json.loads(raw)
    os.makedirs(args.out, exist_ok=True)
    config = transformers.AutoConfig.for_model(**cfg) if "model_type" in cfg else None
    if config is None:
        sys.exit(f"{args.config}: no model_type")
    torch.manual_seed(args.seed)
    with torch.device(args.device):
        model = transformers.Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(args.out, safe_serialization=True)
    for f in PROCESSOR_FILES:
        src = os.path.join(TINY, f)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(args.out, f))
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({
        "dir": args.out,
        "parameters": n,
        "num_hidden_layers": cfg["num_hidden_layers"],
        "vision_depth": cfg["vision_config"]["depth"],
        "seconds": round(time.time() - t0, 1),
    }))


if __name__ == "__main__":
    main()
