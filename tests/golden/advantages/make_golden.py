#!/usr/bin/env python3
"""Generate golden Share-GRPO advantage data from the released reference code.

The reference implementation (HJYao00/R1-ShareVL, EasyR1/verl based) is NOT
copied here: this script loads `verl/trainer/core_algos.py` from a local
checkout given with `--reference-repo` and calls its
`compute_grpo_outcome_advantage` exactly as `verl/trainer/ray_trainer.py`
(`compute_advantage`, called from `RayPPOTrainer.fit`) does.

What is re-expressed here (independently written, not pasted) is only the
*data layout* that the trainer and the vLLM rollout build around that call:

* rollout (`vllm_rollout_spmd.py: vLLMRollout.generate_sequences`): for each
  prompt b the m question variants are generated in order j, n samples each;
  the response block of the m*n responses of prompt b is then repeated m
  times ("group_and_repeat" with group_size = m*n), while the prompt ids are
  repeated n times per variant and then the n-group is repeated m times.
  => within a prompt, training row p = (k*m + j)*n + i holds response i of
     variant j placed under variant k's prompt.
* trainer (`ray_trainer.py: RayPPOTrainer.fit`): `uid` = one id per prompt,
  repeated m*m*n times (DataProto.repeat interleave=True); `inter_uid` = one
  id per (prompt, k) repeated n*m times; `inter_bool` = [k == j] for the m*m
  (k, j) pairs, tiled per prompt, repeated n times.
* reward (`verl/workers/reward/function.py: FunctionRewardManager.__call__`):
  float32 token-level tensor with the score at index valid_response_length-1,
  zeros elsewhere; response_mask = 1 on the valid tokens.  With the shipped
  config (disable_kl: true) token_level_rewards = token_level_scores.

`expected_paper.jsonl` is NOT produced by the reference code: it is computed
here in float64 numpy under the paper's "unique responses" convention.
"""

import argparse
import importlib.util
import json
import math
import os
import sys
import types
import warnings

import numpy as np
import torch

EPS = 1e-6  # default `eps` of compute_grpo_outcome_advantage (trainer does not override it)
RESP_LEN = 8  # response_length of the synthetic token-level tensors


# --------------------------------------------------------------------------
# loading the reference module
# --------------------------------------------------------------------------
def load_core_algos(repo):
    """Load <repo>/verl/trainer/core_algos.py as module `verl.trainer.core_algos`.

    Only light parent packages are registered (no verl/__init__ side effects);
    their __path__ points into the checkout so that the relative import
    `from ..utils import torch_functional` loads the real file (it needs only torch).
    """
    verl_dir = os.path.join(repo, "verl")
    path = os.path.join(verl_dir, "trainer", "core_algos.py")
    if not os.path.isfile(path):
        sys.exit(f"not found: {path}")
    for name, sub in (("verl", ""), ("verl.trainer", "trainer"), ("verl.utils", "utils")):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [os.path.join(verl_dir, sub) if sub else verl_dir]
            pkg.__package__ = name
            sys.modules[name] = pkg
    spec = importlib.util.spec_from_file_location("verl.trainer.core_algos", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["verl.trainer.core_algos"] = mod
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------
# layout (mirrors the reference's data movement, see module docstring)
# --------------------------------------------------------------------------
def group_repeat(x, group_size, times):
    """Split rows into consecutive groups of `group_size` and repeat each group `times` times."""
    out = []
    for g in range(len(x) // group_size):
        blk = x[g * group_size:(g + 1) * group_size]
        out.extend([blk] * times)
    return torch.cat(out, dim=0) if isinstance(x, torch.Tensor) else np.concatenate(out, axis=0)


def build_batch(rewards, valid_lens, m, n):
    """rewards, valid_lens: arrays of shape (B, m, n) (prompt b, variant j, sample i)."""
    B = rewards.shape[0]
    # ---- rollout: completions come out in (b, j, i) order
    resp_reward = torch.tensor(rewards.reshape(-1), dtype=torch.float32)
    resp_vlen = torch.tensor(valid_lens.reshape(-1), dtype=torch.long)
    resp_label = torch.tensor([[b, j, i] for b in range(B) for j in range(m) for i in range(n)])
    # prompt ids: one row per (b, variant), repeat_interleave n, then groups of n repeated m times
    prompt_label = torch.tensor([[b, j] for b in range(B) for j in range(m)])
    prompt_label = prompt_label.repeat_interleave(n, dim=0) if n > 1 else prompt_label
    prompt_label = group_repeat(prompt_label, n, m)
    # responses: groups of m*n repeated m times
    resp_reward = group_repeat(resp_reward, m * n, m)
    resp_vlen = group_repeat(resp_vlen, m * n, m)
    resp_label = group_repeat(resp_label, m * n, m)
    rows = B * m * m * n
    assert len(prompt_label) == len(resp_label) == rows

    # ---- reward manager: score at last valid token, response_mask on valid tokens
    pos = torch.arange(RESP_LEN).unsqueeze(0)
    response_mask = (pos < resp_vlen.unsqueeze(1)).to(torch.long)
    token_level_scores = torch.zeros(rows, RESP_LEN, dtype=torch.float32)
    token_level_scores[torch.arange(rows), resp_vlen - 1] = resp_reward

    # ---- trainer: uid / inter_uid / inter_bool (deterministic ids instead of uuid4;
    #      only equality of ids matters to the reference function)
    uid = np.array([f"uid-{b}" for b in range(B)], dtype=object)
    uid = np.repeat(uid, n * m * m, axis=0)
    inter_uid = np.array([f"inter-{q}" for q in range(B * m)], dtype=object)
    diag = np.array([1 if a == c else 0 for a in range(m) for c in range(m)], dtype=object)
    inter_bool = np.tile(diag, B)
    inter_uid = np.repeat(inter_uid, n * m)
    inter_bool = np.repeat(inter_bool, n)
    assert len(uid) == len(inter_uid) == len(inter_bool) == rows

    # ---- sanity: row p of prompt b is (k, j, i) with p = (k*m + j)*n + i
    layout = []
    for r in range(rows):
        b, p = divmod(r, m * m * n)
        k, rem = divmod(p, m * n)
        j, i = divmod(rem, n)
        assert prompt_label[r].tolist() == [b, k], (r, prompt_label[r])
        assert resp_label[r].tolist() == [b, j, i], (r, resp_label[r])
        assert int(inter_bool[r]) == (1 if k == j else 0)
        assert inter_uid[r] == f"inter-{b * m + k}"
        layout.append((b, k, j, i))
    return token_level_scores, response_mask, uid, inter_uid, inter_bool, resp_vlen, layout


def reference_advantages(core_algos, rewards, valid_lens, m, n):
    tlr, mask, uid, inter_uid, inter_bool, vlen, layout = build_batch(rewards, valid_lens, m, n)
    # ray_trainer.compute_advantage (GRPO branch):
    #   core_algos.compute_grpo_outcome_advantage(token_level_rewards, response_mask, index, inter_index, inter_bool)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.std of one element warns (and returns nan)
            adv, _ret = core_algos.compute_grpo_outcome_advantage(tlr, mask, uid, inter_uid, inter_bool)
    except AssertionError as e:
        return {key: (None, f"AssertionError: {e}") for key in layout}
    out = {}
    for r, key in enumerate(layout):
        vals = adv[r][mask[r].bool()]
        pad = adv[r][~mask[r].bool()]
        # padding is reward * 0 (0, or nan where the row's advantage is nan)
        assert torch.all((pad == 0) | torch.isnan(pad)), (key, adv[r])
        # the advantage is broadcast over every valid token: all equal (or all nan)
        assert torch.all((vals == vals[0]) | (torch.isnan(vals) & torch.isnan(vals[0])))
        a = float(vals[-1].item())  # float32 -> python float64, exact
        out[key] = (None, "nan") if math.isnan(a) else (a, None)
    return out


# --------------------------------------------------------------------------
# paper convention (NOT the reference code): float64 numpy, unique responses
# --------------------------------------------------------------------------
def paper_advantages(r, m, n):
    """r: (m, n) float64 rewards of one prompt.  Returns dict (k, j, i) -> float or nan."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat = r.reshape(-1)
        g_mean = flat.mean()
        g_std = flat.std(ddof=1) if flat.size > 1 else float("nan")  # unbiased, like torch.std
        out = {}
        for j in range(m):
            l_mean = r[j].mean()
            l_std = r[j].std(ddof=1) if n > 1 else float("nan")
            for i in range(n):
                g = (r[j, i] - g_mean) / (g_std + EPS)
                l = (r[j, i] - l_mean) / (l_std + EPS)
                for k in range(m):
                    out[(k, j, i)] = g + l if k == j else g
    return out


# --------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------
DISCRETE = np.array([0.0, 0.1, 0.9, 1.0])


def f32_random(rng, shape):
    # random floats that are exactly representable in float32, so the input file
    # and the reference's float32 tensor hold the same numbers
    return rng.random(shape).astype(np.float32).astype(np.float64)


def make_cases(rng):
    """Each case: (name, m, n, list of (m, n) reward arrays — one per seed)."""
    cases = []

    def disc(m, n, k):
        return [rng.choice(DISCRETE, size=(m, n)) for _ in range(k)]

    def rnd(m, n, k):
        return [f32_random(rng, (m, n)) for _ in range(k)]

    cases.append(("c0", 2, 5, disc(2, 5, 4)))            # discrete rewards, paper-ish m=2
    cases.append(("c1", 2, 6, disc(2, 6, 2) + rnd(2, 6, 2)))  # shipped script: n=6, question_num=2
    cases.append(("c2", 1, 5, disc(1, 5, 2) + rnd(1, 5, 1)))  # single variant
    cases.append(("c3", 1, 6, disc(1, 6, 1) + rnd(1, 6, 1)))
    cases.append(("c4", 1, 2, [np.array([[0.0, 1.0]]), np.array([[0.1, 0.9]])]))
    cases.append(("c5", 3, 2, disc(3, 2, 2) + rnd(3, 2, 1)))
    cases.append(("c6", 3, 5, disc(3, 5, 2) + rnd(3, 5, 1)))
    cases.append(("c7", 4, 6, disc(4, 6, 1) + rnd(4, 6, 1)))
    cases.append(("c8", 4, 2, disc(4, 2, 2)))
    # all-equal groups (std 0 -> 0 / (0 + eps) = 0)
    cases.append(("c9", 2, 5, [np.full((2, 5), 1.0), np.full((2, 5), 0.0), np.full((2, 5), 0.1)]))
    cases.append(("c10", 1, 5, [np.full((1, 5), 0.9)]))
    # one variant ties, the other does not
    cases.append(("c11", 2, 5, [
        np.array([[1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.1, 1.0, 0.0]]),
        np.array([[0.0, 0.9, 0.0, 1.0, 0.1], [0.0, 0.0, 0.0, 0.0, 0.0]]),
        np.array([[0.1, 0.1, 0.1, 0.1, 0.1], [0.9, 0.1, 0.9, 0.9, 1.0]]),
    ]))
    cases.append(("c12", 3, 6, [
        np.vstack([np.full(6, 1.0), rng.choice(DISCRETE, 6), f32_random(rng, 6)]),
    ]))
    # n = 1: the reference's local group has one element -> torch.std = nan
    cases.append(("c13", 2, 1, disc(2, 1, 2)))
    cases.append(("c14", 4, 1, [f32_random(rng, (4, 1))]))
    # m = n = 1: the reference asserts (global group of one row)
    cases.append(("c15", 1, 1, [np.array([[1.0]])]))
    return cases


def dumps(obj):
    return json.dumps(obj, separators=(", ", ": "), allow_nan=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference-repo", required=True, help="checkout of github.com/HJYao00/R1-ShareVL")
    ap.add_argument("--out-dir", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--seed", type=int, default=20250522)
    args = ap.parse_args()

    core_algos = load_core_algos(os.path.abspath(args.reference_repo))
    rng = np.random.default_rng(args.seed)
    cases = make_cases(rng)

    inp, ref, pap = [], [], []
    counts = {"seeds": 0, "input": 0, "reference": 0, "paper": 0, "ref_null": 0, "paper_null": 0}
    for name, m, n, seeds in cases:
        B = len(seeds)
        rewards = np.stack(seeds).astype(np.float64)
        assert rewards.shape == (B, m, n)
        # valid response lengths (where the reward token sits); shared by the m copies of a response
        valid_lens = rng.integers(1, RESP_LEN + 1, size=(B, m, n))
        # one trainer batch per case: the B seeds are B prompts of the same batch
        ref_adv = reference_advantages(core_algos, rewards, valid_lens, m, n)
        for b in range(B):
            seed = f"{name}s{b}"
            counts["seeds"] += 1
            for j in range(m):
                for i in range(n):
                    inp.append({"seed": seed, "variant": j, "sample": i, "reward": float(rewards[b, j, i])})
            p_adv = paper_advantages(rewards[b], m, n)
            for k in range(m):
                for j in range(m):
                    for i in range(n):
                        a, note = ref_adv[(b, k, j, i)]
                        row = {"seed": seed, "context": k, "variant": j, "sample": i, "advantage": a}
                        if note is not None:
                            row["note"] = note
                            counts["ref_null"] += 1
                        ref.append(row)
                        pa = float(p_adv[(k, j, i)])
                        prow = {"seed": seed, "context": k, "variant": j, "sample": i,
                                "advantage": None if math.isnan(pa) else pa}
                        if math.isnan(pa):
                            prow["note"] = "nan"
                            counts["paper_null"] += 1
                        pap.append(prow)
    counts["input"], counts["reference"], counts["paper"] = len(inp), len(ref), len(pap)

    os.makedirs(args.out_dir, exist_ok=True)
    for fname, rows in (("input.jsonl", inp), ("expected_reference.jsonl", ref), ("expected_paper.jsonl", pap)):
        with open(os.path.join(args.out_dir, fname), "w") as f:
            for row in rows:
                f.write(dumps(row) + "\n")
    print(f"torch {torch.__version__}, numpy {np.__version__}")
    print(dumps(counts))


if __name__ == "__main__":
    main()
