#!/usr/bin/env python3
"""Golden parameter gradients of the policy, from Hugging Face transformers + torch (float32, CPU).

Writes `grad_golden.safetensors` next to this script: the gradient of every parameter of
`tiny-qwen2_5_vl/` for the surrogate loss of `operators/tests/policy_grad.rs`:

    loss = -(1.0 * sum(logp(response of A)) - 0.5 * sum(logp(response of B))) / (tokens of A + B)

A = [10, 5, 6, <vision_start>, <image> x n, <vision_end>, 7, 8 | 20, 21, 22, 23, 24] with the
image `sq56.png` (pixel values from `pixel_values.safetensors`), B = [10, 11, 12, 13 | 30, 31, 32]
text only; `|` marks the end of the prompt. Parameter names follow the checkpoint's.

Run: python3 tests/golden/policy/make_grad_golden.py [MODEL_DIR PIXEL_KEY OUT]
     (torch 2.x and transformers >= 4.50; tested with torch 2.15, transformers 5.23)
"""

import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "tiny-qwen2_5_vl")
    key = sys.argv[2] if len(sys.argv) > 2 else "sq56.png"
    out = sys.argv[3] if len(sys.argv) > 3 else os.path.join(HERE, "grad_golden.safetensors")
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    model.train()  # no dropout in this architecture; train() only enables autograd bookkeeping
    cfg = model.config
    px = load_file(os.path.join(HERE, "pixel_values.safetensors"))
    pixel_values = px[key]
    grid = px[key + ".image_grid_thw"].to(torch.long).reshape(1, 3)
    merge = cfg.vision_config.spatial_merge_size
    n = int(grid.prod().item()) // (merge * merge)

    a = [10, 5, 6, cfg.vision_start_token_id] + [cfg.image_token_id] * n
    a += [cfg.vision_end_token_id, 7, 8]
    pa = len(a)
    a += [20, 21, 22, 23, 24]
    b = [10, 11, 12, 13, 30, 31, 32]
    pb = 4

    def response_logp_sum(ids, prompt_len, **extra):
        x = torch.tensor([ids])
        # transformers 5 builds the 3-D M-RoPE positions only when mm_token_type_ids is given
        # (its processor returns it); without it image tokens would get 1-D positions.
        types = (x == cfg.image_token_id).to(torch.int32)
        logits = model(
            input_ids=x, attention_mask=torch.ones_like(x), mm_token_type_ids=types, **extra
        ).logits[0]
        lp = torch.log_softmax(logits.float(), dim=-1)
        targets = x[0, prompt_len:]
        return lp[prompt_len - 1 : len(ids) - 1].gather(1, targets[:, None]).sum()

    tokens = (len(a) - pa) + (len(b) - pb)
    lpa = response_logp_sum(a, pa, pixel_values=pixel_values, image_grid_thw=grid)
    lpb = response_logp_sum(b, pb)
    loss = -(1.0 * lpa - 0.5 * lpb) / tokens
    loss.backward()

    grads = {"loss": loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        # transformers 5 nests the checkpoint's names: model.language_model.* -> model.*,
        # model.visual.* -> visual.*; lm_head.* stays.
        ck = name.replace("model.language_model.", "model.").replace("model.visual.", "visual.")
        if p.grad is None:
            raise SystemExit(f"{name}: no gradient in torch")
        grads[ck] = p.grad.detach().contiguous()
    save_file(grads, out)
    print(f"wrote {out}: loss {loss.item():.6f}, {len(grads) - 1} gradients")


if __name__ == "__main__":
    main()
