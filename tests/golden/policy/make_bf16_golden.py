#!/usr/bin/env python3
"""transformers' own bfloat16 log-probs of the fixture cases, the yardstick of shareflow's bf16.

    python3 tests/golden/policy/make_bf16_golden.py

Loads tiny-qwen2/ and tiny-qwen2_5_vl/ (the fixtures of make_fixtures.py) with
dtype=torch.bfloat16 and eager attention, scores every case of cases.json unpadded (pixel values
from pixel_values.safetensors, cast to bf16 as the model's processor output would be), upcasts the
logits to float32 before log_softmax, and writes bf16_logprobs.json beside this file:
{"cases": {name: [logprob, ...]}, "versions": ...}. CPU, 2 threads; rerunning rewrites the same
file. operators/tests/policy_parity.rs compares shareflow's bf16 compute against both these and
the float32 goldens: shareflow's bf16 error must be of the size of transformers' own.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    cases = json.load(open(os.path.join(HERE, "cases.json")))["cases"]
    pv = load_file(os.path.join(HERE, "pixel_values.safetensors"))
    models = {
        "tiny-qwen2": transformers.AutoModelForCausalLM,
        "tiny-qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration,
    }
    out = {}
    for name, cls in models.items():
        model = cls.from_pretrained(
            os.path.join(HERE, name), dtype=torch.bfloat16, attn_implementation="eager"
        ).eval()
        cfg = model.config
        for c in (c for c in cases if c["model"] == name):
            ids = torch.tensor([c["prompt_ids"] + c["response_ids"]])
            kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            if name == "tiny-qwen2_5_vl":
                t = torch.zeros_like(ids, dtype=torch.int32)
                t[ids == cfg.image_token_id] = 1
                kw["mm_token_type_ids"] = t
                imgs = [p.removeprefix("images/") for p in c["images"]]
                if imgs:
                    kw["pixel_values"] = torch.cat([pv[i] for i in imgs]).to(torch.bfloat16)
                    kw["image_grid_thw"] = torch.stack(
                        [pv[i + ".image_grid_thw"].to(torch.int64) for i in imgs]
                    )
            with torch.no_grad():
                logits = model(**kw).logits[0].to(torch.float32)
            p, n = len(c["prompt_ids"]), len(c["response_ids"])
            lp = torch.log_softmax(logits[p - 1 : p - 1 + n], dim=-1)
            tgt = ids[0, p : p + n]
            got = lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
            f32 = torch.tensor(c["logprobs"])
            print(f"{c['name']}: transformers bf16 vs f32 max |diff| "
                  f"{(got - f32).abs().max().item():.4f}", file=sys.stderr)
            out[c["name"]] = [round(float(x), 6) for x in got]
    doc = {
        "generated_by": "tests/golden/policy/make_bf16_golden.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "dtype": "bfloat16 weights and activations, eager attention, float32 log_softmax",
        "cases": out,
    }
    with open(os.path.join(HERE, "bf16_logprobs.json"), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
