#!/usr/bin/env python3
"""Tiny random Qwen3 / Qwen3-VL checkpoints and golden outputs from transformers 5.23.

Run from the repository root, after make_fixtures.py and make_window_golden.py (it reuses the
fixture tokenizer of tiny-qwen2_5_vl and the image drawing of make_window_golden.py):

    python3 tests/golden/policy/make_qwen3_golden.py

Writes tests/golden/policy/qwen3/:
  tiny-qwen3/      Qwen3ForCausalLM (q/k RMS norms, explicit head_dim 32 != hidden / heads,
                   tied embeddings), saved by save_pretrained; chat_template.jinja in the shape
                   of Qwen3's (no default system prompt, optional empty think block)
  tiny-qwen3_vl/   Qwen3VLForConditionalGeneration saved by save_pretrained (transformers 5
                   names `model.language_model.*`, `model.visual.*`): vision depth 3, patch 16,
                   LayerNorm blocks with a GELU(tanh) MLP, a learned 4x4 position table
                   interpolated to each image's grid, deepstack mergers after vision blocks 0
                   and 1 injected after decoder layers 0 and 1; text decoder with q/k norms and
                   interleaved multimodal rotary (mrope_section [2, 3, 3]); preprocessor_config
                   (patch 16, mean/std 0.5, as the Hub's Qwen3-VL) and chat_template.json in the
                   shape of Qwen3-VL-Instruct's
  images/*.png     test images; each needs a resize to multiples of 32
  golden.json      per case: model, images, prompt ids (from the processor's chat template),
                   response ids, image_grid_thw, response-token log-probs; greedy generate()
                   tokens per prompt; the AdamW round trip of `train` below
  pixel_values.safetensors   the default (torchvision) image processor's output per image
  grad.safetensors the gradient of every tiny-qwen3_vl parameter for the surrogate loss of
                   operators/tests/qwen3_policy.rs (names as in the checkpoint)

The models run in float32 with eager attention on CPU; log-probs are computed on the single
unpadded sequence prompt + response. Checked by operators/tests/qwen3_policy.rs at 1e-4 absolute
per token. Deterministic.

The chat templates are written here from the structure of the Hub templates (Qwen/Qwen3-*,
Qwen/Qwen3-VL-*-Instruct); they are not byte copies of them. What the tests check is that
shareflow renders a checkpoint's template exactly as transformers does.
"""

import json
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_fixtures as mf  # noqa: E402
import make_window_golden as mw  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoProcessor,
    AutoTokenizer,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

SRC = os.path.join(HERE, "tiny-qwen2_5_vl")
OUT = os.path.join(HERE, "qwen3")
TEXT_DIR = os.path.join(OUT, "tiny-qwen3")
VL_DIR = os.path.join(OUT, "tiny-qwen3_vl")
IMG = os.path.join(OUT, "images")
SEED = 31
LR = 1e-2
MIN_GREEDY_MARGIN = 0.02  # logits agree to ~1e-5, so a lead of 0.02 cannot flip

QWEN3_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

QWEN3_VL_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].content is string %}{{- messages[0].content }}"
    "{%- else %}{%- for content in messages[0].content %}"
    "{%- if 'text' in content %}{{- content.text }}{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set image_count = namespace(value=0) %}"
    "{%- set video_count = namespace(value=0) %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}"
    "{%- else %}{%- for content in message.content %}"
    "{%- if content.type == 'image' or 'image' in content or 'image_url' in content %}"
    "{%- set image_count.value = image_count.value + 1 %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif content.type == 'video' or 'video' in content %}"
    "{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in content %}{{- content.text }}"
    "{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}"
    "{%- else %}{%- for content in message.content %}"
    "{%- if 'text' in content %}{{- content.text }}{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# name -> (width, height, seed); resized size (factor 32) and merged grid in comments
IMAGES = {
    "q120x90.png": (120, 90, 11),  # -> 128x96: grid 6x8, merged 3x4
    "q61x170.png": (61, 170, 12),  # -> 64x160: grid 10x4, merged 5x2 (tall)
    "q400x300.png": (400, 300, 13),  # downscaled to 224x160: grid 10x14, merged 5x7
    "q30x20.png": (30, 20, 14),  # -> 32x32: grid 2x2, one merged token
}

QUESTION = "How many shapes are there?"
# (name, model, images, question, response)
CASES = [
    ("text_q3", "tiny-qwen3", [], QUESTION, "<think> none </think> \\boxed{0}"),
    ("text_q3_long", "tiny-qwen3", [], "What is 12 + 30? Think step by step.", "12 + 30 = 42, so \\boxed{42}"),
    ("text_vl", "tiny-qwen3_vl", [], QUESTION, "<think> no image </think> \\boxed{0}"),
    ("one_wide", "tiny-qwen3_vl", ["q120x90.png"], QUESTION, "<think> two shapes </think> \\boxed{2}"),
    ("one_tall", "tiny-qwen3_vl", ["q61x170.png"], QUESTION, "<think> one </think> \\boxed{1}"),
    ("one_down", "tiny-qwen3_vl", ["q400x300.png"], QUESTION, "<think> four shapes </think> \\boxed{4}"),
    ("two", "tiny-qwen3_vl", ["q30x20.png", "q120x90.png"], QUESTION, "<think> five </think> \\boxed{5}"),
]
GREEDY = [("text_q3", 10), ("text_vl", 10), ("one_wide", 10), ("one_down", 10)]  # cut at a near-tie
# The surrogate loss of `grad.safetensors`: -(1.0 * sum logp(A) - 0.5 * sum logp(B)) / (|A| + |B|)
GRAD_CASES = [("one_tall", 1.0), ("text_vl", -0.5)]


def text_config(vocab, ids):
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": vocab,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "attention_bias": False,
        "tie_word_embeddings": True,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
    }


def vl_config(vocab, ids):
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "model_type": "qwen3_vl",
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": False,
        "text_config": {
            "model_type": "qwen3_vl_text",
            "vocab_size": vocab,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "hidden_act": "silu",
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
            "attention_bias": False,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
        },
        "vision_config": {
            "model_type": "qwen3_vl_vision",
            "depth": 3,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "hidden_act": "gelu_pytorch_tanh",
            "in_channels": 3,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 16,
            "deepstack_visual_indexes": [0, 1],
        },
    }


def preprocessor_config():
    return {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "Qwen2VLImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "merge_size": 2,
        "patch_size": 16,
        "processor_class": "Qwen3VLProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"longest_edge": 40000, "shortest_edge": 1024},
        "temporal_patch_size": 2,
    }


def write_common(d, ids, template_file, template):
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(SRC, f), d)
    tc = json.load(open(os.path.join(d, "tokenizer_config.json")))
    tc.pop("chat_template", None)
    mf.write_json(os.path.join(d, "tokenizer_config.json"), tc)
    mf.write_json(os.path.join(d, "generation_config.json"), mf.generation_config(ids))
    if template_file.endswith(".json"):
        mf.write_json(os.path.join(d, template_file), {"chat_template": template})
    else:
        with open(os.path.join(d, template_file), "w", encoding="utf-8") as f:
            f.write(template)



def messages(question, images):
    return mf.messages_for(question, images)


def main():
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    shutil.rmtree(OUT, ignore_errors=True)
    for d in (TEXT_DIR, VL_DIR, IMG):
        os.makedirs(d)

    tok = AutoTokenizer.from_pretrained(SRC)
    vocab = mf.round_up(len(tok), 64)
    ids = {t: tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens + ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]}

    models = {}
    tm = Qwen3ForCausalLM(Qwen3Config(**text_config(vocab, ids)))
    mf.init_weights(tm, SEED)
    tm.save_pretrained(TEXT_DIR)
    write_common(TEXT_DIR, ids, "chat_template.jinja", QWEN3_TEMPLATE)
    vm = Qwen3VLForConditionalGeneration(Qwen3VLConfig(**vl_config(vocab, ids)))
    mf.init_weights(vm, SEED + 1)
    vm.save_pretrained(VL_DIR)
    write_common(VL_DIR, ids, "chat_template.json", QWEN3_VL_TEMPLATE)
    mf.write_json(os.path.join(VL_DIR, "preprocessor_config.json"), preprocessor_config())
    del tm, vm
    for name, (w, h, seed) in IMAGES.items():
        mw.make_image(os.path.join(IMG, name), w, h, seed)

    models["tiny-qwen3"] = mf.assert_clean_load(Qwen3ForCausalLM, TEXT_DIR, {})
    models["tiny-qwen3_vl"] = mf.assert_clean_load(Qwen3VLForConditionalGeneration, VL_DIR, {})
    tok3 = AutoTokenizer.from_pretrained(TEXT_DIR)
    proc = AutoProcessor.from_pretrained(VL_DIR)
    assert type(proc).__name__ == "Qwen3VLProcessor", type(proc).__name__
    assert type(proc.image_processor).__name__ == "Qwen2VLImageProcessor"

    pixel = {}
    for name in IMAGES:
        im = Image.open(os.path.join(IMG, name)).convert("RGB")
        enc = proc.image_processor(images=[im], return_tensors="pt")
        pixel[name] = enc["pixel_values"].to(torch.float32).contiguous()
        pixel[name + ".image_grid_thw"] = enc["image_grid_thw"][0].to(torch.int64).contiguous()
    save_file(pixel, os.path.join(OUT, "pixel_values.safetensors"), metadata={"format": "pt"})

    def encode(model_name, images, question):
        msgs = messages(question, images)
        if model_name == "tiny-qwen3":
            text = tok3.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            ids_ = tok3(text, add_special_tokens=False)["input_ids"]
            return text, torch.tensor([ids_]), None, None
        text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        pil = [Image.open(os.path.join(IMG, i)).convert("RGB") for i in images]
        enc = proc(text=[text], images=pil or None, return_tensors="pt")
        if images:
            # the processor's pixel values are the image processor's, image by image
            assert torch.equal(enc["pixel_values"], torch.cat([pixel[i] for i in images]))
        return text, enc["input_ids"], enc.get("pixel_values"), enc.get("image_grid_thw")

    def logits_of(model_name, full, pv, grid):
        model = models[model_name]
        return mf.forward_logits(model, model_name != "tiny-qwen3", full, torch.ones_like(full), pv, grid)

    out = {
        "generated_by": "tests/golden/policy/make_qwen3_golden.py",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        "dtype": "float32",
        "attn_implementation": "eager",
        "tolerance_abs": 1e-4,
        "cases": [],
        "greedy": [],
    }
    by_name = {}
    for cname, model_name, images, question, response in CASES:
        text, pid, pv, grid = encode(model_name, images, question)
        t = tok3 if model_name == "tiny-qwen3" else proc.tokenizer
        rid = t(response, add_special_tokens=False)["input_ids"]
        full = torch.cat([pid, torch.tensor([rid])], 1)
        logits = logits_of(model_name, full, pv, grid)
        lp = mf.gather_logprobs(logits[0], full[0], pid.shape[1], len(rid))
        case = {
            "name": cname,
            "model": model_name,
            "images": [f"images/{i}" for i in images],
            "question": question,
            "response": response,
            "prompt_text": text,
            "prompt_ids": pid[0].tolist(),
            "response_ids": rid,
            "image_grid_thw": grid.tolist() if grid is not None else [],
            "logprobs": mf.f32_list(lp),
        }
        by_name[cname] = (case, pv, grid)
        out["cases"].append(case)
        print(f"{cname}: {len(case['prompt_ids'])} prompt tokens, grids {case['image_grid_thw']}")

    for cname, n_new in GREEDY:
        case, pv, grid = by_name[cname]
        model_name = case["model"]
        seq = list(case["prompt_ids"])
        margins = []
        for _ in range(n_new):
            full = torch.tensor([seq])
            logits = logits_of(model_name, full, pv, grid)[0, -1]
            top = torch.topk(logits, 2)
            margins.append(float(top.values[0] - top.values[1]))
            seq.append(int(top.indices[0]))
        # keep the steps before the first near-tie (a 1e-5 difference must not flip a token)
        keep = next((i for i, m in enumerate(margins) if m <= MIN_GREEDY_MARGIN), len(margins))
        assert keep >= 4, f"{cname}: greedy margin {margins} too small"
        n_new, margins = keep, margins[:keep]
        new = seq[len(case["prompt_ids"]) : len(case["prompt_ids"]) + keep]
        model = models[model_name]
        kw = dict(input_ids=torch.tensor([case["prompt_ids"]]), max_new_tokens=n_new, do_sample=False,
                  min_new_tokens=n_new)
        if model_name != "tiny-qwen3":
            kw["mm_token_type_ids"] = mf.mm_token_type_ids(kw["input_ids"], model.config.image_token_id, model.config.video_token_id)
            if pv is not None:
                kw.update(pixel_values=pv, image_grid_thw=grid)
        with torch.no_grad():
            gen = model.generate(**kw)[0, len(case["prompt_ids"]) :].tolist()
        assert gen == new, f"{cname}: generate() {gen} != step-by-step argmax {new}"
        out["greedy"].append({"case": cname, "max_new_tokens": n_new, "tokens": new, "min_margin": min(margins)})
        print(f"greedy {cname}: {new} (min margin {min(margins):.3f})")

    # gradients of the surrogate loss, and one AdamW step on it
    model = Qwen3VLForConditionalGeneration.from_pretrained(VL_DIR, dtype=torch.float32, attn_implementation="eager")
    model.train()

    def surrogate():
        total, n_tok = 0.0, 0
        for cname, adv in GRAD_CASES:
            case, pv, grid = by_name[cname]
            pid = torch.tensor([case["prompt_ids"]])
            full = torch.cat([pid, torch.tensor([case["response_ids"]])], 1)
            kw = dict(input_ids=full, attention_mask=torch.ones_like(full), use_cache=False,
                      mm_token_type_ids=mf.mm_token_type_ids(full, model.config.image_token_id, model.config.video_token_id))
            if pv is not None:
                kw.update(pixel_values=pv, image_grid_thw=grid)
            logits = model(**kw).logits[0]
            lp = torch.log_softmax(logits[pid.shape[1] - 1 : -1], -1)
            lp = lp.gather(-1, full[0, pid.shape[1] :].unsqueeze(-1)).squeeze(-1)
            total = total + adv * lp.sum()
            n_tok += lp.numel()
        return -total / n_tok

    loss = surrogate()
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} has no gradient"
        grads[name] = p.grad.detach().clone().contiguous()
    save_file(grads, os.path.join(OUT, "grad.safetensors"), metadata={"format": "pt"})
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=False)
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        after = float(surrogate())
    out["train"] = {
        "loss": "surrogate of grad.safetensors",
        "cases": [{"case": c, "advantage": a} for c, a in GRAD_CASES],
        "adamw": {"lr": LR, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
        "loss_before": float(loss.detach()),
        "loss_after_one_step": after,
    }
    print(f"surrogate loss {float(loss.detach()):.6f} -> {after:.6f} after one AdamW step")
    mf.write_json(os.path.join(OUT, "golden.json"), out, indent=1)
    print("sizes:", {d: sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)) for d in (TEXT_DIR, VL_DIR)})


if __name__ == "__main__":
    main()
