#!/usr/bin/env python3
"""Load a checkpoint directory (e.g. one written by shareflow) with HF transformers and print
the response log-probs of the cases in cases.json for that model, as JSON {case name: [logprobs]}.

    python3 tests/golden/policy/roundtrip.py DIR                     # print {name: logprobs}
    python3 tests/golden/policy/roundtrip.py DIR --compare OUT.json  # assert |HF - OUT| <= tol
    python3 tests/golden/policy/roundtrip.py DIR --golden            # assert |HF(DIR) - cases.json| <= tol

DIR must have the Hub layout of tiny-qwen2/ or tiny-qwen2_5_vl/ (config.json + model.safetensors
or model-*-of-*.safetensors + index).  Which cases are used follows config.json's model_type
(qwen2 -> "tiny-qwen2" cases, qwen2_5_vl -> "tiny-qwen2_5_vl" cases; --model overrides).
Loading must report no missing / unexpected / mismatched tensors.

The ids come from cases.json (prompt_ids, response_ids) and the pixels from
pixel_values.safetensors, so only DIR's config and weights are under test: DIR needs no tokenizer
or processor files.  Log-probs are computed exactly as make_fixtures.py computes the golden ones
(float32, eager attention, 2 threads, one unpadded sequence per case; for Qwen2.5-VL with
mm_token_type_ids so that HF builds the 3-D M-RoPE positions).

--compare FILE: FILE is JSON, either {case name: [logprobs]} or an object with a "cases" list of
{"name", "logprobs"} (the cases.json shape).  Every case of the model must be present with the
right length; exit status 1 if any |difference| > --tol (default 1e-4).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration, Qwen2ForCausalLM  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # keep __pycache__ out of the fixture folder
from make_fixtures import forward_logits, gather_logprobs  # noqa: E402

MODEL_FOR_TYPE = {
    "qwen2": ("tiny-qwen2", Qwen2ForCausalLM),
    "qwen2_5_vl": ("tiny-qwen2_5_vl", Qwen2_5_VLForConditionalGeneration),
}


def load_model(path):
    cfg = AutoConfig.from_pretrained(path)
    if cfg.model_type not in MODEL_FOR_TYPE:
        raise SystemExit(f"{path}: model_type {cfg.model_type!r} not handled (want qwen2 or qwen2_5_vl)")
    fixture, cls = MODEL_FOR_TYPE[cfg.model_type]
    model, info = cls.from_pretrained(path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    if bad:
        raise SystemExit(f"{path}: transformers reported problems while loading: {bad}")
    return model.eval(), fixture, cfg.model_type == "qwen2_5_vl"


def case_logprobs(model, is_vl, cases, pixels):
    out = {}
    for c in cases:
        ids = torch.tensor([c["prompt_ids"] + c["response_ids"]])
        pv = grid = None
        if c["images"]:
            pv = torch.cat([pixels[os.path.basename(p)] for p in c["images"]])
            grid = torch.tensor(c["image_grid_thw"], dtype=torch.long)
        logits = forward_logits(model, is_vl, ids, torch.ones_like(ids), pv, grid)
        lp = gather_logprobs(logits[0], ids[0], len(c["prompt_ids"]), len(c["response_ids"]))
        out[c["name"]] = [float(x) for x in lp.tolist()]
    return out


def read_logprob_file(path):
    with open(path, encoding="utf-8") as f:
        obj = json.load(f)
    if isinstance(obj, dict) and isinstance(obj.get("cases"), list):
        return {c["name"]: c["logprobs"] for c in obj["cases"]}
    return obj


def compare(ref, got, tol, ref_label, got_label):
    worst = 0.0
    ok = True
    for name, a in ref.items():
        if name not in got:
            print(f"FAIL {name}: missing from {got_label}")
            ok = False
            continue
        b = got[name]
        if len(a) != len(b):
            print(f"FAIL {name}: {len(b)} log-probs in {got_label}, {len(a)} in {ref_label}")
            ok = False
            continue
        d = max((abs(x - y) for x, y in zip(a, b)), default=0.0)
        worst = max(worst, d)
        status = "ok  " if d <= tol else "FAIL"
        ok &= d <= tol
        print(f"{status} {name}: {len(a)} tokens, max |diff| {d:.3g}")
    print(f"{'PASS' if ok else 'FAIL'}: {len(ref)} cases, worst |diff| {worst:.3g} (tol {tol:g})")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="checkpoint directory (Hub layout)")
    ap.add_argument("--cases", default=os.path.join(HERE, "cases.json"))
    ap.add_argument("--pixels", default=os.path.join(HERE, "pixel_values.safetensors"))
    ap.add_argument("--model", choices=["tiny-qwen2", "tiny-qwen2_5_vl"], help="which cases (default: from config.json)")
    ap.add_argument("--compare", metavar="FILE", help="JSON {case name: logprobs} to check against HF's")
    ap.add_argument("--golden", action="store_true", help="check HF(DIR) against the golden logprobs in cases.json")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    torch.set_num_threads(2)
    model, fixture, is_vl = load_model(args.dir)
    fixture = args.model or fixture
    with open(args.cases, encoding="utf-8") as f:
        cases = [c for c in json.load(f)["cases"] if c["model"] == fixture]
    if not cases:
        raise SystemExit(f"no cases for {fixture} in {args.cases}")
    pixels = load_file(args.pixels) if any(c["images"] for c in cases) else {}
    hf = case_logprobs(model, is_vl, cases, pixels)

    if not args.compare and not args.golden:
        json.dump(hf, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    ok = True
    if args.golden:
        print(f"== HF on {args.dir} vs golden {os.path.relpath(args.cases)}")
        ok &= compare({c["name"]: c["logprobs"] for c in cases}, hf, args.tol, "golden", "HF")
    if args.compare:
        print(f"== HF on {args.dir} vs {args.compare}")
        ok &= compare(hf, read_logprob_file(args.compare), args.tol, "HF", args.compare)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
