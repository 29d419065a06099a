#!/usr/bin/env python3
"""PyTorch eager CPU baseline on the tiny Qwen2.5-VL fixture (tiny-qwen2_5_vl/), 2 threads.

    python3 tests/golden/policy/bench_torch.py [--dir DIR] [--repeats 5]

(a) rollout: one left-padded batch of 24 prompts (16 text-only, 8 with one image), HF
    generate(do_sample=True, temperature=1.0, top_p=0.99, top_k off, min_new_tokens=64,
    max_new_tokens=64) -> generated tokens / s (24 * 64 / wall time), median of --repeats runs
    after one warm-up run.
(b) one training step: 48 right-padded rows of prompt + response (~100 tokens per row, 16 rows
    with an image), full forward (vision tower included) + token log-probs (float32 log_softmax
    over the vocabulary), loss = -(logp * adv * mask).sum() / mask.sum(), backward, AdamW step,
    zero_grad -> seconds / step, median of --repeats steps after one warm-up step.

Prints one JSON object.  float32, attn_implementation="eager", torch.set_num_threads(2).

On a GPU (scripts/gpu_check.sh): --device cuda --dtype bfloat16 --dir DIR runs the same workload
on another checkpoint directory holding this fixture's tokenizer and processor files (the
Qwen2.5-VL-3B-shaped one gpu_check.sh makes), timing with torch.cuda.synchronize(). bfloat16 is
mixed precision, as shareflow's `trainer.dtype=bf16`: f32 weights and f32 AdamW state, the
forward (and generate) under torch.autocast(bfloat16); the log-softmax in f32.
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import Qwen2_5_VLForConditionalGeneration  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # keep __pycache__ out of the fixture folder
from make_fixtures import IMAGES, load_image, load_processor, messages_for  # noqa: E402

THREADS = 2
QUESTIONS = [
    "How many red squares are in the image?",
    "What is 12 + 7?",
    "Solve 3x - 4 = 11. Please reason step by step.",
    "Count the circles in the picture. Answer with a number.",
    "Tom has 4 apples and buys 5 more. How many apples does he have now?",
    "Which option is correct? (A) 2 (B) 3 (C) 4 (D) 5",
]


def build_prompts(n, n_img):
    """n prompts; every (n // n_img)-th one carries one fixture image."""
    out = []
    step = n // n_img
    k = 0
    for i in range(n):
        q = QUESTIONS[i % len(QUESTIONS)]
        if i % step == step - 1 and k < n_img:
            out.append((q, [f"images/{IMAGES[k % len(IMAGES)][0]}"]))
            k += 1
        else:
            out.append((q, []))
    return out


def chat_texts(processor, prompts):
    return [processor.apply_chat_template(messages_for(q, ims), add_generation_prompt=True, tokenize=False)
            for q, ims in prompts]


def encode_batch(processor, prompts, padding_side):
    """One padded batch through the processor (what a rollout engine is fed)."""
    images = [load_image(p) for _, ims in prompts for p in ims]
    processor.tokenizer.padding_side = padding_side
    return processor(text=chat_texts(processor, prompts), images=images or None, return_tensors="pt", padding=True)


def encode_rows(processor, prompts):
    """Per row: (prompt ids with expanded image pads, pixel_values or None, image_grid_thw or None)."""
    rows = []
    for (q, ims), text in zip(prompts, chat_texts(processor, prompts)):
        e = processor(text=[text], images=[load_image(p) for p in ims] or None, return_tensors="pt")
        rows.append((e["input_ids"][0].tolist(), e.get("pixel_values"), e.get("image_grid_thw")))
    return rows


DEVICE = "cpu"
AUTOCAST = None  # torch.autocast dtype for the forward passes, or None


def autocast():
    if AUTOCAST is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=DEVICE.split(":")[0], dtype=AUTOCAST)


def sync():
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def bench_rollout(model, processor, repeats, batch=24, n_img=8, new_tokens=64):
    prompts = build_prompts(batch, n_img)
    enc = encode_batch(processor, prompts, "left").to(DEVICE)

    pad = processor.tokenizer.pad_token_id
    kw = dict(do_sample=True, temperature=1.0, top_p=0.99, top_k=0, min_new_tokens=new_tokens,
              max_new_tokens=new_tokens, pad_token_id=pad)
    times = []
    for r in range(repeats + 1):
        torch.manual_seed(1000 + r)
        t0 = time.perf_counter()
        with torch.no_grad(), autocast():
            out = model.generate(**enc, **kw)
        sync()
        dt = time.perf_counter() - t0
        assert out.shape[1] - enc["input_ids"].shape[1] == new_tokens
        if r > 0:  # first run is the warm-up
            times.append(dt)
    med = statistics.median(times)
    return {
        "batch": batch,
        "rows_with_image": n_img,
        "prompt_len_padded": int(enc["input_ids"].shape[1]),
        "new_tokens_per_row": new_tokens,
        "sampling": {"temperature": 1.0, "top_p": 0.99, "top_k": None, "min_new_tokens": new_tokens},
        "seconds": [round(t, 4) for t in times],
        "median_seconds": round(med, 4),
        "generated_tokens_per_s": round(batch * new_tokens / med, 1),
    }


def bench_train(model, processor, repeats, rows=48, n_img=16, target_len=100):
    prompts = build_prompts(rows, n_img)
    g = torch.Generator().manual_seed(7)
    vocab_regular = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")  # ids below are BPE tokens
    # response lengths chosen so that prompt + response is about target_len tokens
    rows_enc = encode_rows(processor, prompts)
    seqs = []
    for p_ids, _, _ in rows_enc:
        n = max(16, target_len - len(p_ids) + int(torch.randint(-4, 5, (1,), generator=g)))
        seqs.append((p_ids, torch.randint(0, vocab_regular, (n,), generator=g).tolist()))
    pvs = [pv for _, pv, _ in rows_enc if pv is not None]
    pixel_values = torch.cat(pvs) if pvs else None
    grid = torch.cat([gr for _, _, gr in rows_enc if gr is not None]) if pvs else None
    L = max(len(p) + len(r) for p, r in seqs)
    B = len(seqs)
    pad = processor.tokenizer.pad_token_id
    input_ids = torch.full((B, L), pad, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    resp_mask = torch.zeros((B, L - 1), dtype=torch.float32)  # over shifted targets
    for i, (p, r) in enumerate(seqs):
        n = len(p) + len(r)
        input_ids[i, :n] = torch.tensor(p + r)
        attn[i, :n] = 1
        resp_mask[i, len(p) - 1 : n - 1] = 1.0
    mm = torch.zeros_like(input_ids)
    mm[input_ids == model.config.image_token_id] = 1
    adv = torch.randn((B, 1), generator=g).expand(B, L - 1)
    input_ids, attn, resp_mask, mm, adv = (t.to(DEVICE) for t in (input_ids, attn, resp_mask, mm, adv))
    if pixel_values is not None:
        pixel_values, grid = pixel_values.to(DEVICE), grid.to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.999), weight_decay=1e-2)
    model.train()

    def step():
        with autocast():
            out = model(input_ids=input_ids, attention_mask=attn, pixel_values=pixel_values, image_grid_thw=grid,
                    mm_token_type_ids=mm, use_cache=False)
        logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        loss = -(logp * adv * resp_mask).sum() / resp_mask.sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    times = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        step()
        sync()
        dt = time.perf_counter() - t0
        if r > 0:
            times.append(dt)
    model.eval()
    med = statistics.median(times)
    lens = [len(p) + len(r) for p, r in seqs]
    return {
        "rows": B,
        "rows_with_image": sum(1 for _, ims in prompts if ims),
        "tokens_per_row_mean": round(sum(lens) / B, 1),
        "padded_len": L,
        "response_tokens": int(resp_mask.sum()),
        "loss": "-(logp*adv*mask).sum()/mask.sum(); AdamW lr 1e-6",
        "seconds": [round(t, 4) for t in times],
        "median_seconds_per_step": round(med, 4),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.path.join(HERE, "tiny-qwen2_5_vl"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=THREADS)
    args = ap.parse_args()
    global DEVICE, AUTOCAST
    DEVICE = args.device
    AUTOCAST = torch.bfloat16 if args.dtype == "bfloat16" else None
    torch.set_num_threads(args.threads)
    os.chdir(HERE)  # image paths are relative to this folder
    processor, how = load_processor(args.dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        args.dir, dtype=torch.float32, attn_implementation="eager"
    ).to(DEVICE).eval()
    res = {
        "what": f"PyTorch eager baseline on {DEVICE} in {args.dtype}, {os.path.basename(os.path.normpath(args.dir))}",
        "device": torch.cuda.get_device_name() if DEVICE.startswith("cuda") else "cpu",
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "processor": how.split(" (")[0],
        "rollout": bench_rollout(model, processor, repeats=args.repeats),
        "train_step": bench_train(model, processor, repeats=args.repeats),
    }
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
