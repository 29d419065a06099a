#!/usr/bin/env python3
"""Golden data for the PPO objective of `shareflow_operators::policy::loss`.

Writes `loss_golden.json` next to this script: for a few random batches, the loss, the
reference's metrics and d loss / d log_probs (or d kl_loss / d logits for the `full` KL),
computed with torch in float32.

The formulas are re-expressed here (independently written, not copied) from EasyR1
(https://github.com/hiyouga/EasyR1, `verl/trainer/core_algos.py`, functions
`compute_policy_loss` with `loss_type="default"` and `loss_avg_mode="token"`, and
`compute_kl`; `verl/utils/torch_functional.py: masked_mean`; and
`verl/workers/actor/dp_actor.py: DataParallelPPOActor.update_policy`, which forms
`loss = pg_loss + kl_loss * kl_coef` with `kl_loss = masked_mean(compute_kl(...), mask)`).
The R1-ShareVL release (https://github.com/HJYao00/R1-ShareVL) ships an older copy of the same
functions; the only difference in the default path is that current EasyR1 clamps the log-ratio
to [-20, 20] before `exp` (and the `low_var_kl` log-ratio likewise); this script follows current
EasyR1, and the cases with |log-ratio| > 20 agree with the release in value anyway.

Run: python3 tests/golden/policy/make_loss_golden.py   (torch 2.x, CPU)
"""

import json
import math
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loss_golden.json")


def masked_mean(values, mask, eps=1e-8):
    return (values * mask).sum() / (mask.sum() + eps)


def policy_loss(log_probs, old_log_probs, advantages, mask, low, high, dual):
    """Clipped PPO surrogate with dual clip, token-level mean (EasyR1 default path)."""
    log_ratio = log_probs - old_log_probs
    ratio = torch.exp(torch.clamp(log_ratio, -20.0, 20.0))
    clipped = torch.exp(torch.clamp(log_ratio, math.log(1.0 - low), math.log(1.0 + high)))
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * clipped
    loss_dual = -advantages * dual
    upper = torch.max(loss_unclipped, loss_clipped)
    lower = torch.min(upper, loss_dual)
    per_token = torch.where(advantages < 0, lower, upper)
    metrics = {
        "pg_clipfrac_higher": masked_mean((loss_unclipped < loss_clipped).float(), mask).item(),
        "pg_clipfrac_lower": masked_mean(
            (upper > loss_dual).float() * (advantages < 0).float(), mask
        ).item(),
        "ppo_kl": masked_mean(-log_ratio.detach(), mask).item(),
        "entropy_loss": masked_mean(-log_probs.detach(), mask).item(),
    }
    return masked_mean(per_token, mask), metrics


def kl_term(log_probs, ref_log_probs, kind):
    """Per-token KL estimators of EasyR1 `compute_kl` (all but `full`)."""
    if kind == "kl":
        return log_probs - ref_log_probs
    if kind == "abs":
        return (log_probs - ref_log_probs).abs()
    if kind == "mse":
        return 0.5 * (log_probs - ref_log_probs).square()
    if kind == "low_var_kl":
        x = torch.clamp(ref_log_probs - log_probs, -20.0, 20.0)
        return torch.clamp(x.exp() - x - 1, min=-10.0, max=10.0)
    raise ValueError(kind)


def f32list(t):
    return t.detach().to(torch.float32).reshape(-1).tolist()


def make_case(name, gen, b, t, adv_per_token, log_ratio_scale, mask_kind, cfg, kl=None,
              extreme=False, ties=False):
    lp = -F.softplus(torch.randn(b, t, generator=gen)) - 0.05
    log_ratio = torch.randn(b, t, generator=gen) * log_ratio_scale
    if extreme:
        # a few log-ratios beyond the [-20, 20] stability clamp and around the clip bounds
        log_ratio[0, 0] = 25.0
        log_ratio[0, 1] = -25.0
        log_ratio[1, 0] = 1.5  # ratio 4.48 > dual clip 3 with a negative advantage
        log_ratio[1, 1] = -1.5
    old = lp - log_ratio
    if adv_per_token:
        adv = torch.randn(b, t, generator=gen) * 1.5
    else:
        adv = torch.randn(b, generator=gen) * 1.5
    if extreme:
        if adv_per_token:
            adv[0, 0] = 1.0
            adv[0, 1] = -1.0
            adv[1, 0] = -2.0
            adv[1, 1] = 2.0
        else:
            adv[1] = -abs(adv[1].item()) - 0.5
    if mask_kind == "ones":
        mask = torch.ones(b, t)
    elif mask_kind == "zeros":
        mask = torch.zeros(b, t)
    else:  # ragged: right padding per row, plus a hole
        lengths = torch.randint(1, t + 1, (b,), generator=gen)
        mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
        mask[0, :] = 1.0
        if b > 2 and t > 3:
            mask[2, 1] = 0.0
    ref = None
    if kl is not None:
        ref = lp + torch.randn(b, t, generator=gen) * 0.7
        if extreme:
            ref[0, 2] = lp[0, 2] + 22.0  # beyond the [-20, 20] clamp of low_var_kl
            ref[0, 3] = lp[0, 3] + 4.0  # low_var_kl above 10 -> clamped
            ref[1, 2] = lp[1, 2] - 30.0
        if ties:
            ref[0, 4] = lp[0, 4]  # exact tie: abs has gradient 0 there (torch sign(0) = 0)
            ref[1, 3] = lp[1, 3]

    lp_var = lp.clone().requires_grad_(True)
    adv_full = adv if adv_per_token else adv[:, None]
    pg, metrics = policy_loss(lp_var, old, adv_full, mask, cfg["clip_ratio_low"],
                              cfg["clip_ratio_high"], cfg["clip_ratio_dual"])
    loss = pg
    kl_loss = None
    if kl is not None:
        kl_loss_t = masked_mean(kl_term(lp_var, ref, kl["penalty"]), mask)
        loss = pg + kl_loss_t * kl["coef"]
        kl_loss = kl_loss_t.item()
    loss.backward()
    return {
        "name": name,
        "shape": [b, t],
        "config": dict(cfg, kl=kl),
        "log_probs": f32list(lp),
        "old_log_probs": f32list(old),
        "advantages": f32list(adv),
        "advantages_shape": list(adv.shape),
        "mask": f32list(mask),
        "ref_log_probs": None if ref is None else f32list(ref),
        "expected": {
            "loss": loss.item(),
            "pg_loss": pg.item(),
            "kl_loss": kl_loss,
            **metrics,
            "grad_log_probs": f32list(lp_var.grad),
        },
    }


def make_full_case(gen, b, t, v, coef):
    logits = torch.randn(b, t, v, generator=gen) * 2.0
    ref_logits = logits + torch.randn(b, t, v, generator=gen) * 0.8
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    x = logits.clone().requires_grad_(True)
    logp = torch.log_softmax(x, dim=-1)
    ref_logp = torch.log_softmax(ref_logits, dim=-1)
    # EasyR1 compute_kl(kind="full"): F.kl_div(ref, logp, log_target=True).sum(-1), given
    # full distributions
    kld = F.kl_div(ref_logp, logp, log_target=True, reduction="none").sum(-1)
    kl_loss = masked_mean(kld, mask)
    (kl_loss * coef).backward()
    return {
        "name": "full_kl",
        "shape": [b, t, v],
        "coef": coef,
        "logits": f32list(logits),
        "ref_logits": f32list(ref_logits),
        "mask": f32list(mask),
        "expected": {
            "kld": f32list(kld),
            "kl_loss": kl_loss.item(),
            "grad_logits": f32list(x.grad),
        },
    }


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(20250601)
    default = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.3, "clip_ratio_dual": 3.0}
    other = {"clip_ratio_low": 0.1, "clip_ratio_high": 0.25, "clip_ratio_dual": 2.0}
    cases = [
        make_case("seq_adv_small_ratios", gen, 4, 7, False, 0.15, "ragged", default),
        make_case("seq_adv_clipping", gen, 6, 9, False, 0.6, "ragged", default, extreme=True),
        make_case("token_adv_extreme", gen, 5, 8, True, 1.0, "ragged", default, extreme=True),
        make_case("other_clip_params", gen, 4, 10, True, 0.5, "ones", other, extreme=True),
        make_case("all_masked", gen, 2, 5, False, 0.5, "zeros", default),
    ]
    for kind, coef in [("kl", 0.1), ("abs", 0.05), ("mse", 0.2), ("low_var_kl", 0.04)]:
        cases.append(
            make_case(f"kl_{kind}", gen, 4, 8, False, 0.4, "ragged", default,
                      kl={"penalty": kind, "coef": coef}, extreme=True, ties=True)
        )
    golden = {
        "generator": "tests/golden/policy/make_loss_golden.py",
        "torch": torch.__version__,
        "cases": cases,
        "full_kl": make_full_case(gen, 3, 4, 11, 0.1),
    }
    with open(OUT, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} cases, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
