#!/usr/bin/env python3
"""Checks a checkpoint made by shareflow's `policy::factory::create_random_checkpoint` with
transformers.

    SHAREFLOW_FACTORY_OUT=/tmp/created cargo test -p shareflow-operators --test factory
    python3 tests/golden/policy/check_created_checkpoint.py /tmp/created/default
    python3 tests/golden/policy/check_created_checkpoint.py /tmp/created/tiny-tied

What it asserts (and stops on the first failure):

* `Qwen2_5_VLForConditionalGeneration.from_pretrained(DIR)` reports no missing, unexpected or
  mismatched keys and no errors, and every tensor of the safetensors files is the loaded one;
* the init matches transformers' own `_init_weights` for this config: each parameter of a model
  built by `Qwen2_5_VLForConditionalGeneration(config)` that is exactly zero (biases) or one
  (norms) is so in DIR too, and every other parameter has mean ~ 0 and std ~ initializer_range;
* tokenizer, chat template and image processor load (`AutoProcessor`, or without torchvision
  make_fixtures.py's equivalent of it over `AutoImageProcessor` + `AutoTokenizer`), the special-token ids in
  config.json / generation_config.json are the tokenizer's, and a forward pass on an image
  question gives finite logits.

Made for transformers 5.23 / torch 2.15 (CPU).
"""

import json
import math
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import load_processor  # noqa: E402


def hub_name(name):
    """transformers-5 state-dict name -> Hub checkpoint name."""
    if name.startswith("model.visual."):
        return "visual." + name[len("model.visual."):]
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model."):]
    return name


def main(path):
    torch.manual_seed(0)
    model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        v = info.get(k)
        assert not v, f"{path}: loading reported {k}: {v}"
    print("from_pretrained: no missing / unexpected / mismatched keys")

    with open(os.path.join(path, "model.safetensors.index.json")) as f:
        index = json.load(f)
    files = sorted(set(index["weight_map"].values()))
    stored = {}
    for fname in files:
        with safe_open(os.path.join(path, fname), "pt") as f:
            assert f.metadata() == {"format": "pt"}, f.metadata()
            for k in f.keys():
                stored[k] = f.get_tensor(k)
    assert set(stored) == set(index["weight_map"]), "index and shards disagree"
    state = {hub_name(k): v for k, v in model.state_dict().items()}
    cfg = model.config
    if cfg.tie_word_embeddings:
        assert "lm_head.weight" not in stored
        assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        state.pop("lm_head.weight", None)
    assert set(state) == set(stored), (set(state) ^ set(stored))
    for k, v in stored.items():
        assert v.dtype == torch.float32, (k, v.dtype)
        assert torch.equal(state[k], v), f"{k}: loaded tensor differs from the file"
    n_params = sum(v.numel() for v in stored.values())
    print(f"{len(stored)} tensors, {n_params} parameters, all float32, loaded exactly")

    # The init, against transformers' own for the same config.
    ref = Qwen2_5_VLForConditionalGeneration(AutoConfig.from_pretrained(path))
    ref_state = {hub_name(k): v for k, v in ref.state_dict().items()}
    std = getattr(cfg.get_text_config(), "initializer_range", 0.02)
    worst = 0.0
    for k, v in stored.items():
        r = ref_state[k]
        if torch.all(r == 0):
            assert torch.all(v == 0), f"{k}: HF inits zeros"
        elif torch.all(r == 1):
            assert torch.all(v == 1), f"{k}: HF inits ones"
        else:
            n = v.numel()
            mean, sd = v.double().mean().item(), v.double().std().item()
            ref_sd = r.double().std().item()
            assert abs(ref_sd - std) < 8 * std / math.sqrt(n), f"{k}: HF's own std {ref_sd}"
            assert abs(mean) < 6 * std / math.sqrt(n), f"{k}: mean {mean}"
            assert abs(sd - std) < 8 * std / math.sqrt(n), f"{k}: std {sd} vs {std}"
            worst = max(worst, abs(sd - std) / std)
    print(f"init matches HF _init_weights: zeros/ones where HF has them, N(0, {std}) elsewhere "
          f"(worst relative std deviation {worst:.3g})")

    # Processor and special tokens.
    processor, how = load_processor(path)
    print(f"processor: {how}")
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in
           ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]}
    with open(os.path.join(path, "config.json")) as f:
        raw = json.load(f)
    with open(os.path.join(path, "generation_config.json")) as f:
        gen = json.load(f)
    assert raw["bos_token_id"] == ids["<|endoftext|>"]
    assert raw["eos_token_id"] == ids["<|im_end|>"]
    assert raw["vision_start_token_id"] == ids["<|vision_start|>"]
    assert raw["vision_end_token_id"] == ids["<|vision_end|>"]
    assert raw["image_token_id"] == ids["<|image_pad|>"]
    assert raw["video_token_id"] == ids["<|video_pad|>"]
    assert gen["eos_token_id"] == [ids["<|im_end|>"], ids["<|endoftext|>"]]
    assert raw["vocab_size"] % 64 == 0 and len(tok) <= raw["vocab_size"] < len(tok) + 64
    assert list(ids.values()) == list(range(ids["<|endoftext|>"], ids["<|endoftext|>"] + 7))
    print(f"special tokens {ids}; vocab {len(tok)} padded to {raw['vocab_size']}")

    img = Image.new("RGB", (90, 70), (128, 128, 128))
    d = ImageDraw.Draw(img)
    for i in range(3):
        d.rectangle([10 + 25 * i, 20, 25 + 25 * i, 35], fill=(220, 30, 30))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many red squares?"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text + "\\boxed{3}<|im_end|>"], images=[img], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert torch.isfinite(logits).all()
    lp = torch.log_softmax(logits[0, :-1].double(), -1).gather(-1, enc["input_ids"][0, 1:, None])
    print(f"forward on an image question: {enc['input_ids'].shape[1]} tokens, grid "
          f"{enc['image_grid_thw'].tolist()}, mean token log-prob {lp.mean().item():.4f} "
          f"(uniform: {-math.log(raw['vocab_size']):.4f})")
    print("OK")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
