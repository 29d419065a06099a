#!/usr/bin/env python3
"""Golden data for `shareflow_operators::policy::Optimizer`.

Writes `optim_golden.json` next to this script: `torch.optim.AdamW` plus
`torch.nn.utils.clip_grad_norm_` run for a few steps on small random float32 parameters with
fixed gradient sequences, driven the way EasyR1 drives them
(https://github.com/hiyouga/EasyR1, `verl/workers/actor/dp_actor.py:
DataParallelPPOActor._optimizer_step`, same in the R1-ShareVL release): clip the global grad
norm, skip `optimizer.step()` when the returned norm is not finite, then `zero_grad()`.

The sequences include a step where clipping is active and one where it is not, a parameter
without a gradient in one step (torch then leaves it alone: no decay, no moment update, its
step count does not advance), a step whose gradient holds a NaN (skipped), and a learning-rate
change between steps (`param_groups[0]["lr"] = ...`, what `set_lr` does). After every step the
parameters, the reported grad norm and the AdamW state (per-parameter step, exp_avg,
exp_avg_sq) are recorded.

Run: python3 tests/golden/policy/make_optim_golden.py   (torch 2.x, CPU)
"""

import json
import os

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim_golden.json")

SHAPES = {"a": [4, 3], "b": [5], "c": [2, 2, 2]}


def flat(t):
    return t.detach().to(torch.float32).reshape(-1).tolist()


def grads_with_norm(gen, names, norm):
    """Random gradients for `names` whose global L2 norm is `norm` (up to float32 rounding)."""
    gs = {n: torch.randn(SHAPES[n], generator=gen) for n in names}
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in gs.values())).item()
    return {n: (g * (norm / total)).float() for n, g in gs.items()}


def run(name, gen, cfg, plan):
    params = {n: torch.randn(s, generator=gen).requires_grad_(True) for n, s in SHAPES.items()}
    init = {n: flat(p) for n, p in params.items()}
    opt = torch.optim.AdamW(
        list(params.values()),
        lr=cfg["lr"],
        betas=tuple(cfg["betas"]),
        eps=cfg["eps"],
        weight_decay=cfg["weight_decay"],
        foreach=False,
    )
    max_norm = cfg["max_grad_norm"]
    steps = []
    for item in plan:
        if "lr" in item:
            for group in opt.param_groups:
                group["lr"] = item["lr"]
        grads = grads_with_norm(gen, item["params"], item["norm"])
        record = {
            "lr": opt.param_groups[0]["lr"],
            "grads": {n: flat(g) for n, g in grads.items()},
            "poison": item.get("poison"),
        }
        for n, p in params.items():
            p.grad = grads[n].clone() if n in grads else None
        if item.get("poison"):
            pn, idx = item["poison"]
            params[pn].grad.view(-1)[idx] = float("nan")
        # EasyR1 _optimizer_step; max_grad_norm None -> report the norm, never clip
        norm = torch.nn.utils.clip_grad_norm_(
            list(params.values()), max_norm=float("inf") if max_norm is None else max_norm
        )
        finite = bool(torch.isfinite(norm))
        if finite:
            opt.step()
        opt.zero_grad()
        record["grad_norm"] = norm.item() if finite else None
        record["skipped"] = not finite
        record["clipped"] = finite and max_norm is not None and norm.item() + 1e-6 > max_norm
        record["params"] = {n: flat(p) for n, p in params.items()}
        state = {}
        for n, p in params.items():
            st = opt.state.get(p)
            if st:
                state[n] = {
                    "step": int(st["step"].item()),
                    "exp_avg": flat(st["exp_avg"]),
                    "exp_avg_sq": flat(st["exp_avg_sq"]),
                }
        record["state"] = state
        steps.append(record)
    clipped = [s["clipped"] for s in steps if not s["skipped"]]
    assert any(clipped) or max_norm is None, name
    assert not all(clipped), name
    return {"name": name, "config": cfg, "shapes": SHAPES, "init": init, "steps": steps}


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(7)
    all_params = ["a", "b", "c"]
    scenario_default = run(
        "easyr1_defaults_larger_lr",
        gen,
        {"lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 1e-2,
         "max_grad_norm": 1.0},
        [
            {"params": all_params, "norm": 0.4},  # not clipped
            {"params": all_params, "norm": 5.0},  # clipped
            {"params": ["a", "b"], "norm": 0.7},  # c has no gradient
            {"params": all_params, "norm": 0.5, "poison": ["b", 2]},  # NaN: skipped
            {"params": all_params, "norm": 0.9, "lr": 5e-3},  # lr change, not clipped
            {"params": all_params, "norm": 3.0},  # clipped
        ],
    )
    scenario_other = run(
        "other_hyperparameters_no_clip",
        gen,
        {"lr": 5e-2, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.1,
         "max_grad_norm": None},
        [
            {"params": all_params, "norm": 2.0},
            {"params": ["b", "c"], "norm": 0.05},
            {"params": all_params, "norm": 10.0},
            {"params": all_params, "norm": 1e-4},
        ],
    )
    golden = {
        "generator": "tests/golden/policy/make_optim_golden.py",
        "torch": torch.__version__,
        "scenarios": [scenario_default, scenario_other],
    }
    with open(OUT, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}: {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
