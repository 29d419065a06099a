#!/usr/bin/env python3
"""Tiny random Qwen2 / Qwen2.5-VL checkpoints + golden outputs from HF transformers.

Run from the repository root:

    python3 tests/golden/policy/make_fixtures.py

Everything is written next to this file (tests/golden/policy/).  The run is
deterministic (fixed seeds, CPU, 2 threads, float32, eager attention):
running it again rewrites byte-identical files.

What it makes (see README.md in this folder for the details and the schema):

* a tiny byte-level BPE tokenizer (Qwen2 pre-tokenizer, Qwen2-VL special
  tokens and chat template), trained here on a small built-in corpus;
* tiny-qwen2/        Qwen2ForCausalLM, single model.safetensors, tied embeddings;
* tiny-qwen2_5_vl/   Qwen2_5_VLForConditionalGeneration, flat Hub-style config,
                     2 safetensors shards + index, Hub tensor names, processor files;
* images/*.png       small RGB test images;
* cases.json         per-case prompt/response ids and response-token log-probs
                     (unpadded, right-padded batch, left-padded batch);
* pixel_values.safetensors   the image processor's pixel_values per image;
* greedy.json        greedy generate() token ids (one at a time and left-padded batch).

The weights are random but NOT HF's default init (std 0.02 gives a near-uniform
next-token distribution, which hides bugs): matrices ~ N(0, (1.5/sqrt(fan_in))^2),
embeddings and lm_head ~ N(0, 0.3^2), norm weights ~ U(0.7, 1.3), biases ~ N(0, 0.1^2).
"""

import hashlib
import json
import math
import os
import random
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tokenizers import (  # noqa: E402
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoProcessor,
    AutoTokenizer,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2ForCausalLM,
)

HERE = os.path.dirname(os.path.abspath(__file__))
QWEN2_DIR = os.path.join(HERE, "tiny-qwen2")
VL_DIR = os.path.join(HERE, "tiny-qwen2_5_vl")
IMG_DIR = os.path.join(HERE, "images")

TOLERANCE = 1e-4
NUM_THREADS = 2
SEED = 20250601

# --------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------

# The pre-tokenizer regex of Qwen2 (identical to transformers' Qwen2Tokenizer.PRETOKENIZE_REGEX).
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Added special tokens, in this order, appended after the BPE vocabulary (as in Qwen2-VL,
# whose added tokens also follow the regular vocabulary).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

BPE_VOCAB_SIZE = 440  # 256 byte symbols + merges; + 7 specials = 447 -> model vocab 448

# The chat template of Qwen/Qwen2-VL-*-Instruct and Qwen/Qwen2.5-VL-*-Instruct
# (chat_template.json / tokenizer_config.json on the Hub), verbatim.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_corpus():
    """A few KB of English + math text in the style of the RL data (deterministic)."""
    rng = random.Random(SEED)
    shapes = ["square", "circle", "triangle", "rectangle", "star", "hexagon", "cube", "sphere"]
    colors = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
    nouns = ["apples", "pencils", "books", "coins", "marbles", "cars", "birds", "boxes"]
    lines = [
        "You are a helpful assistant.",
        "Please reason step by step, and put your final answer within \\boxed{}.",
        "Answer the question about the image. First think inside <think> </think> tags.",
        "The answer is a number. Count carefully before you answer.",
        "Look at the picture. How many objects are there in total?",
        "Let x be the number of red squares. Then x + 2 = 5, so x = 3.",
        "The area of a rectangle is width times height: A = w * h.",
        "The perimeter of a square with side 4 is 4 * 4 = 16.",
        "A triangle has 3 sides and 3 angles; the angles add up to 180 degrees.",
        "If f(x) = 2x + 1, then f(3) = 7 and f(10) = 21.",
        "Solve 3x - 4 = 11. Add 4 to both sides: 3x = 15, so x = 5.",
        "The sum of the first n integers is n(n+1)/2.",
        "What is the value of 2^5? It is 32.",
        "The image shows a red circle, a blue square and two green triangles.",
        "There are more circles than squares in the picture.",
        "Hmm, wait. Let me count again: one, two, three, four.",
        "I'm sure the answer is correct. It's the only option that works.",
        "Step 1: read the question. Step 2: compute. Step 3: check the result.",
        "Which option is correct? (A) 2 (B) 3 (C) 4 (D) 5",
        "The probability of rolling a six with a fair die is 1/6.",
        "12 + 7 = 19, 19 - 4 = 15, 15 * 2 = 30, 30 / 5 = 6.",
        "Therefore, the final answer is \\boxed{6}.",
        "The angle between the two lines is 90 degrees.",
        "π is about 3.14159, and the circumference is 2πr.",
        "The chart shows that sales grew by 25% from 2019 to 2020.",
    ]
    for _ in range(70):
        n = rng.randint(0, 12)
        m = rng.randint(0, 9)
        s = rng.choice(shapes)
        c = rng.choice(colors)
        noun = rng.choice(nouns)
        kind = rng.randint(0, 5)
        if kind == 0:
            lines.append(f"How many {c} {s}s are in the image? Answer with a number.")
        elif kind == 1:
            lines.append(f"<think> I see {n} {c} {s}s and {m} other shapes. So there are {n} {c} {s}s. </think> \\boxed{{{n}}}")
        elif kind == 2:
            lines.append(f"Tom has {n} {noun} and buys {m} more. How many {noun} does he have now?")
        elif kind == 3:
            lines.append(f"<think> {n} + {m} = {n + m}. </think> The answer is \\boxed{{{n + m}}}.")
        elif kind == 4:
            lines.append(f"What is {n} times {m}? {n} * {m} = {n * m}, so the answer is {n * m}.")
        else:
            lines.append(f"Count the {s}s: there are {n} of them, and {m} of them are {c}.")
    return lines


def build_tokenizer():
    tok = Tokenizer(
        models.BPE(
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    # Same as Qwen2's tokenizer.json: a ByteLevel post-processor (offsets only, adds no BOS/EOS).
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(build_corpus(), trainer=trainer)
    tok.add_special_tokens(
        [AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True) for t in SPECIAL_TOKENS]
    )
    return tok


def tokenizer_config(tok):
    added = {}
    for t in SPECIAL_TOKENS:
        added[str(tok.token_to_id(t))] = {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [t for t in SPECIAL_TOKENS if t != "<|endoftext|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 4096,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


# --------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------

HIDDEN = 64
INTERMEDIATE = 128
LAYERS = 2
HEADS = 4
KV_HEADS = 2
ROPE_THETA = 10000.0
RMS_EPS = 1e-6
MAX_POS = 4096
MROPE_SECTION = [2, 3, 3]  # sums to head_dim / 2 = 8

MIN_PIXELS = 3136  # 56 * 56, as on the Hub
MAX_PIXELS = 7840  # 28 * 28 * 10 (Hub: 12845056); small so that one test image is downscaled


def round_up(x, m):
    return (x + m - 1) // m * m


def qwen2_config(vocab_size, ids):
    # Field set of the Hub's Qwen/Qwen2.5-*-Instruct config.json.
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": MAX_POS,
        "max_window_layers": LAYERS,
        "model_type": "qwen2",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": RMS_EPS,
        "rope_scaling": None,
        "rope_theta": ROPE_THETA,
        "sliding_window": MAX_POS,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "transformers_version": transformers.__version__,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }


def vl_config(vocab_size, ids):
    # Flat layout of the Hub's Qwen/Qwen2.5-VL-*-Instruct config.json: text fields at the
    # top level, vision_config nested, rope_scaling {"type": "mrope", ...}.
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": MAX_POS,
        "max_window_layers": LAYERS,
        "model_type": "qwen2_5_vl",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": RMS_EPS,
        "rope_theta": ROPE_THETA,
        "sliding_window": MAX_POS,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": transformers.__version__,
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": 4,
            "hidden_act": "silu",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "in_chans": 3,
            "in_channels": 3,
            "out_hidden_size": HIDDEN,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "window_size": 112,
            "fullatt_block_indexes": [1, 3],
            "tokens_per_second": 2,
            "temporal_patch_size": 2,
        },
        "rope_scaling": {"type": "mrope", "mrope_section": MROPE_SECTION},
        "vocab_size": vocab_size,
    }


def generation_config(ids):
    # Hub's generation_config.json minus the sampling defaults (do_sample/temperature/
    # repetition_penalty), so that a bare generate() is plain greedy.
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
        "transformers_version": transformers.__version__,
    }


def preprocessor_config():
    return {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "Qwen2VLImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "max_pixels": MAX_PIXELS,
        "merge_size": 2,
        "min_pixels": MIN_PIXELS,
        "patch_size": 14,
        "processor_class": "Qwen2_5_VLProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"longest_edge": MAX_PIXELS, "shortest_edge": MIN_PIXELS},
        "temporal_patch_size": 2,
    }


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def write_json(path, obj, indent=2):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def f32_list(t):
    """float32 tensor -> list of Python floats (exact: f32 widened to f64)."""
    return [float(x) for x in t.detach().to(torch.float32).reshape(-1).tolist()]


def init_weights(model, seed, gain=1.5, embed_std=0.3):
    """Deterministic, deliberately 'loud' random init (see module docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.ndim == 1 and name.endswith(".bias"):
                new = torch.randn(p.shape, generator=g) * 0.1
            elif p.ndim == 1:  # RMSNorm weights
                new = 0.7 + 0.6 * torch.rand(p.shape, generator=g)
            elif "embed_tokens" in name or name == "lm_head.weight":
                new = torch.randn(p.shape, generator=g) * embed_std
            else:
                fan_in = int(np.prod(p.shape[1:]))
                new = torch.randn(p.shape, generator=g) * (gain / math.sqrt(fan_in))
            p.copy_(new.to(p.dtype))


def hub_name(name):
    """transformers-5 state-dict name -> name used in the Hub Qwen2.5-VL checkpoints."""
    if name.startswith("model.visual."):
        return "visual." + name[len("model.visual.") :]
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model.") :]
    return name


def save_sharded(state, out_dir, n_shards=2):
    names = sorted(state)
    sizes = [state[n].numel() * state[n].element_size() for n in names]
    total = sum(sizes)
    shards = [[] for _ in range(n_shards)]
    acc = 0
    for n, s in zip(names, sizes):
        idx = min(n_shards - 1, int(acc * n_shards // total))
        shards[idx].append(n)
        acc += s
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        save_file({n: state[n].contiguous() for n in shard}, os.path.join(out_dir, fname), metadata={"format": "pt"})
        for n in shard:
            weight_map[n] = fname
    write_json(
        os.path.join(out_dir, "model.safetensors.index.json"),
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
    )


def assert_clean_load(cls, path, ref_state):
    model, info = cls.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        v = info.get(k)
        assert not v, f"{path}: loading reported {k}: {v}"
    sd = model.state_dict()
    for k, v in ref_state.items():
        assert torch.equal(sd[k], v), f"{path}: {k} differs after reload"
    return model.eval()


# --------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------

# (file name, width, height): what the processor does with it at min_pixels=3136, max_pixels=7840
IMAGES = [
    ("sq56.png", 56, 56),  # no resize: grid 1x4x4 -> 4 image tokens
    ("wide140x28.png", 140, 28),  # no resize: grid 1x2x10 -> 5 tokens; 2 attention windows across (padded)
    ("tall37x130.png", 37, 130),  # smart-resize (rounding) -> 28x140: grid 1x10x2; 2 windows down
    ("tiny30x15.png", 30, 15),  # below min_pixels: upscaled -> 84x56: grid 1x4x6
    ("big230x170.png", 230, 170),  # above max_pixels: downscaled -> 84x56: grid 1x4x6
]


def make_image(name, w, h, seed):
    rng = np.random.RandomState(seed)
    bg = tuple(int(x) for x in rng.randint(0, 256, 3))
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.randint(0, w)), int(rng.randint(0, h))
        x1, y1 = min(w - 1, x0 + int(rng.randint(4, max(5, w // 2)))), min(h - 1, y0 + int(rng.randint(4, max(5, h // 2))))
        col = tuple(int(x) for x in rng.randint(0, 256, 3))
        if rng.rand() < 0.5:
            d.rectangle([x0, y0, x1, y1], fill=col)
        else:
            d.ellipse([x0, y0, x1, y1], fill=col)
    arr = np.asarray(img).astype(np.int16)
    # a noisy band so that neighbouring patches differ at the pixel level
    bh = max(1, min(h // 5, 8))
    y = int(rng.randint(0, h - bh + 1))
    arr[y : y + bh] += rng.randint(-40, 41, size=(bh, w, 3)).astype(np.int16)
    arr = np.clip(arr, 0, 255).astype(np.uint8)
    Image.fromarray(arr, "RGB").save(os.path.join(IMG_DIR, name), format="PNG", optimize=False)


def load_image(rel):
    with Image.open(os.path.join(HERE, rel)) as im:
        return im.convert("RGB")


# --------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------

QWEN2_CASES = [
    {
        "name": "q2_count_sides",
        "question": "How many sides does a triangle have? Put your final answer within \\boxed{}.",
        "response": "<think> A triangle has 3 sides. </think> \\boxed{3}<|im_end|>",
    },
    {
        "name": "q2_arith",
        "question": "What is 12 + 7?",
        "response": "<think> 12 + 7 = 19. </think> The answer is \\boxed{19}.<|im_end|>",
    },
    {
        "name": "q2_truncated",
        "question": "Tom has 4 apples and buys 5 more. How many apples does he have now?",
        "response": "<think> Tom starts with 4 apples.\nHe buys 5 more, so 4 + 5 = 9.\nHmm, wait: π ≈ 3.14 is not",
    },
    {
        "name": "q2_short",
        "question": "2^5?",
        "response": "\\boxed{32}<|im_end|>",
    },
]

VL_CASES = [
    {
        "name": "vl_text_only",
        "images": [],
        "question": "How many sides does a square have?",
        "response": "<think> A square has 4 sides. </think> \\boxed{4}<|im_end|>",
    },
    {
        "name": "vl_text_long",
        "question": "Solve 3x - 4 = 11. Please reason step by step.",
        "images": [],
        "response": "<think> Add 4 to both sides: 3x = 15, so x = 5.\nCheck: 3 * 5 - 4 = 11. </think> \\boxed{5}",
    },
    {
        "name": "vl_img1_sq56",
        "images": ["images/sq56.png"],
        "question": "How many red squares are in the image?",
        "response": "<think> I see 2 red squares and 1 blue circle. </think> \\boxed{2}<|im_end|>",
    },
    {
        "name": "vl_img1_wide",
        "images": ["images/wide140x28.png"],
        "question": "Count the circles in the picture. Answer with a number.",
        "response": "<think> There are 3 circles. </think> \\boxed{3}<|im_end|>",
    },
    {
        "name": "vl_img1_big_downscaled",
        "images": ["images/big230x170.png"],
        "question": "What is the area of the green rectangle?",
        "response": "<think> The width is 4 and the height is 3, so A = 4 * 3 = 12. </think> \\boxed{12}<|im_end|>",
    },
    {
        "name": "vl_img1_tiny_upscaled",
        "images": ["images/tiny30x15.png"],
        "question": "Which option is correct? (A) 2 (B) 3 (C) 4 (D) 5",
        "response": "<think> Hmm, let me count again: one, two, three. </think> \\boxed{B}",
    },
    {
        "name": "vl_img2_tall_tiny",
        "images": ["images/tall37x130.png", "images/tiny30x15.png"],
        "question": "How many shapes are there in the two images in total?",
        "response": "<think> The first image has 4 shapes and the second has 2, so 4 + 2 = 6. </think> \\boxed{6}<|im_end|>",
    },
    {
        "name": "vl_img2_sq_wide",
        "images": ["images/sq56.png", "images/wide140x28.png"],
        "question": "Are there more circles in the first image or in the second?",
        "response": "<think> The second image has more circles. </think> \\boxed{second}<|im_end|>",
    },
]

# Greedy prompts: for each slot the first candidate whose greedy continuation is a fair exact-match
# test is taken: every step's top-2 logit margin >= MIN_GREEDY_MARGIN (far above float32 noise)
# and at least MIN_GREEDY_UNIQUE distinct new tokens (random models like to repeat one token).
_Q = [
    "What is 12 + 7?",
    "Which option is correct? (A) 2 (B) 3",
    "Solve 3x - 4 = 11.",
    "How many circles are in the image?",
    "Count the squares.",
    "What is 6 times 7?",
    "Is there a triangle?",
    "2 + 2 = ?",
    "Describe the image.",
    "Tom has 9 coins and buys 3 more. How many coins does he have now?",
    "What color is the circle?",
    "How many shapes are there?",
]
GREEDY_SLOTS = {
    "tiny-qwen2": [
        ("g_q2_text_a", [([], q) for q in _Q]),
        ("g_q2_text_b", [([], q) for q in _Q]),
        ("g_q2_text_c", [([], q) for q in _Q]),
    ],
    "tiny-qwen2_5_vl": [
        ("g_vl_text", [([], q) for q in _Q]),
        ("g_vl_img1", [([im], q) for im in ("images/wide140x28.png", "images/sq56.png", "images/tall37x130.png") for q in _Q]),
        ("g_vl_img2", [(["images/tiny30x15.png", "images/big230x170.png"], q) for q in _Q]),
    ],
}
MIN_GREEDY_MARGIN = 0.05
MIN_GREEDY_UNIQUE = 8


def messages_for(question, images):
    if images:
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
    else:
        content = question
    return [{"role": "user", "content": content}]


# --------------------------------------------------------------------------------------
# processor
# --------------------------------------------------------------------------------------


class MiniQwen2_5_VLProcessor:
    """What Qwen2_5_VLProcessor does for text + images, for environments without torchvision.

    transformers 5.23 cannot build Qwen2_5_VLProcessor at all without torchvision (its
    Qwen2VLVideoProcessor requires it, and the processor insists on a video processor), whatever
    files the checkpoint has.  This class reproduces the image path exactly: AutoImageProcessor's
    default image processor (torchvision backend where installed, else PIL), each <|image_pad|> expanded to
    grid_t*grid_h*grid_w/merge_size^2 copies, in order, then the tokenizer; plus mm_token_type_ids.
    Where torchvision is installed, make_fixtures.py asserts it agrees with AutoProcessor.
    """

    def __init__(self, path):
        from transformers import AutoImageProcessor

        self.image_processor = AutoImageProcessor.from_pretrained(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        with open(os.path.join(path, "chat_template.json"), encoding="utf-8") as f:
            self.chat_template = json.load(f)["chat_template"]
        self.image_token = "<|image_pad|>"
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = self.tokenizer.convert_tokens_to_ids("<|video_pad|>")

    def apply_chat_template(self, messages, **kw):
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, **kw)

    def __call__(self, text, images=None, return_tensors="pt", padding=False):
        text = list(text)
        out = {}
        if images:
            img = self.image_processor(images=images, return_tensors="pt")
            merge = self.image_processor.merge_size ** 2
            counts = [int(g.prod()) // merge for g in img["image_grid_thw"]]
            k = 0
            for i, t in enumerate(text):
                parts = t.split(self.image_token)
                s = parts[0]
                for rest in parts[1:]:
                    s += self.image_token * counts[k] + rest
                    k += 1
                text[i] = s
            assert k == len(counts), "image placeholders and images differ in number"
            out["pixel_values"] = img["pixel_values"]
            out["image_grid_thw"] = img["image_grid_thw"]
        enc = self.tokenizer(text, return_tensors=return_tensors, padding=padding)
        ids = enc["input_ids"]
        mm = torch.zeros_like(ids)
        mm[ids == self.image_token_id] = 1
        mm[ids == self.video_token_id] = 2
        res = {"input_ids": ids, "attention_mask": enc["attention_mask"], "mm_token_type_ids": mm}
        res.update(out)
        return res


def load_processor(path):
    """AutoProcessor (its default: the torchvision image processor) where it can be built, else the
    mini processor. The goldens are made with torchvision installed (asserted in main)."""
    try:
        return AutoProcessor.from_pretrained(path), "AutoProcessor.from_pretrained (default: torchvision backend)"
    except ImportError as e:  # no torchvision
        msg = str(e).strip().splitlines()[0]
        return MiniQwen2_5_VLProcessor(path), f"MiniQwen2_5_VLProcessor (AutoProcessor unavailable: {msg})"


def processor_agree(a, b, texts, images, padding=False):
    ea = a(text=texts, images=images or None, return_tensors="pt", padding=padding)
    eb = b(text=texts, images=images or None, return_tensors="pt", padding=padding)
    for k in ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw"):
        if k in ea or k in eb:
            assert torch.equal(ea[k], eb[k]), k


# --------------------------------------------------------------------------------------
# model evaluation
# --------------------------------------------------------------------------------------


def mm_token_type_ids(ids, image_token_id, video_token_id):
    t = torch.zeros_like(ids, dtype=torch.int32)
    t[ids == image_token_id] = 1
    t[ids == video_token_id] = 2
    return t


def forward_logits(model, is_vl, input_ids, attention_mask, pixel_values=None, image_grid_thw=None, position_ids=None):
    kw = dict(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    if position_ids is not None:
        kw["position_ids"] = position_ids
    if is_vl:
        # transformers 5 only builds the 3-D M-RoPE positions when mm_token_type_ids is given
        # (the processor returns it); without it image tokens get plain 1-D positions.
        kw["mm_token_type_ids"] = mm_token_type_ids(
            input_ids, model.config.image_token_id, model.config.video_token_id
        )
        if pixel_values is not None:
            kw["pixel_values"] = pixel_values
            kw["image_grid_thw"] = image_grid_thw
    with torch.no_grad():
        out = model(**kw)
    return out.logits.to(torch.float32)


def gather_logprobs(logits_row, ids_row, start, length):
    """log p(ids[start + i] | ids[:start + i]) for i < length, from one row of logits."""
    lp = torch.log_softmax(logits_row[start - 1 : start - 1 + length].to(torch.float32), dim=-1)
    tgt = ids_row[start : start + length]
    return lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)


def pad_batch(seqs, pad_id, side):
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    offsets = []
    for i, s in enumerate(seqs):
        off = 0 if side == "right" else L - len(s)
        ids[i, off : off + len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, off : off + len(s)] = 1
        offsets.append(off)
    return ids, mask, offsets


def text_position_ids(mask):
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 0)


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def main():
    torch.set_num_threads(NUM_THREADS)
    torch.manual_seed(SEED)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.use_deterministic_algorithms(True)

    for d in (QWEN2_DIR, VL_DIR, IMG_DIR):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)

    log = []

    def note(msg):
        print(msg)
        log.append(msg)

    # ---------------- tokenizer ----------------
    tok = build_tokenizer()
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    n_tok = tok.get_vocab_size(with_added_tokens=True)
    vocab_size = round_up(n_tok, 64)
    note(f"tokenizer: {n_tok} tokens (BPE {n_tok - len(SPECIAL_TOKENS)} + {len(SPECIAL_TOKENS)} special), model vocab_size {vocab_size}")
    note(f"special ids: {ids}")
    tj = json.loads(tok.to_str(pretty=True))
    # the Python binding serialises the ByteLevel decoder with its defaults; write what Qwen2's
    # tokenizer.json has (the decoder ignores these fields either way)
    tj["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    tok_json = json.dumps(tj, indent=2, ensure_ascii=False)
    tok = Tokenizer.from_str(tok_json)
    tok_cfg = tokenizer_config(tok)

    for d in (QWEN2_DIR, VL_DIR):
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(tok_json)
            f.write("\n")
        write_json(os.path.join(d, "tokenizer_config.json"), tok_cfg)
        write_json(os.path.join(d, "generation_config.json"), generation_config(ids))
    write_json(os.path.join(QWEN2_DIR, "config.json"), qwen2_config(vocab_size, ids))
    write_json(os.path.join(VL_DIR, "config.json"), vl_config(vocab_size, ids))
    write_json(os.path.join(VL_DIR, "preprocessor_config.json"), preprocessor_config())
    write_json(os.path.join(VL_DIR, "chat_template.json"), {"chat_template": CHAT_TEMPLATE})

    # The transformers tokenizer must agree with the raw `tokenizers` one.
    hf_tok = AutoTokenizer.from_pretrained(QWEN2_DIR)
    assert type(hf_tok).__name__ in ("Qwen2Tokenizer", "Qwen2TokenizerFast"), type(hf_tok)
    assert hf_tok.eos_token == "<|im_end|>" and hf_tok.pad_token == "<|endoftext|>" and hf_tok.bos_token is None
    probe_texts = build_corpus()[:40] + [
        "  leading spaces\n\n\ttabs and\r\nCRLF  ",
        "Ünïcödé ü (NFD: u\u0308) × ÷ π ≈ 3.14 — “quotes” 🙂",
        "<|im_start|>user\nhi<|im_end|>\n<|vision_start|><|image_pad|><|vision_end|>",
        "I'M here, you'RE there; it's 1234567 o'clock",
    ] + [c["response"] for c in QWEN2_CASES + VL_CASES]
    for t in probe_texts:
        a = tok.encode(t, add_special_tokens=False).ids
        b = hf_tok.encode(t, add_special_tokens=False)
        assert a == b, (t, a, b)
        assert hf_tok.decode(b) == tok.decode(a, skip_special_tokens=False)

    # ---------------- images ----------------
    for i, (name, w, h) in enumerate(IMAGES):
        make_image(name, w, h, SEED + 17 * i)
        assert os.path.getsize(os.path.join(IMG_DIR, name)) < 30_000

    # ---------------- checkpoints ----------------
    # tiny-qwen2
    cfg = AutoConfig.from_pretrained(QWEN2_DIR)
    cfg._attn_implementation = "eager"
    model = Qwen2ForCausalLM(cfg).to(torch.float32)
    init_weights(model, SEED + 1)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    # tied: the Hub checkpoints (e.g. Qwen2.5-0.5B) carry no lm_head.weight
    assert torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"])
    disk = {k: v for k, v in state.items() if k != "lm_head.weight"}
    save_file(disk, os.path.join(QWEN2_DIR, "model.safetensors"), metadata={"format": "pt"})
    qwen2 = assert_clean_load(Qwen2ForCausalLM, QWEN2_DIR, state)
    del model

    # tiny-qwen2_5_vl
    cfg = AutoConfig.from_pretrained(VL_DIR)
    cfg._attn_implementation = "eager"
    assert cfg.text_config.rope_parameters["mrope_section"] == MROPE_SECTION
    assert cfg.text_config.hidden_size == HIDDEN and cfg.vision_config.depth == 4
    model = Qwen2_5_VLForConditionalGeneration(cfg).to(torch.float32)
    init_weights(model, SEED + 2)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    hub_state = {hub_name(k): v for k, v in state.items()}
    assert len(hub_state) == len(state)
    assert "model.embed_tokens.weight" in hub_state and "visual.patch_embed.proj.weight" in hub_state
    assert "lm_head.weight" in hub_state and not any(k.startswith("model.language_model") for k in hub_state)
    save_sharded(hub_state, VL_DIR, n_shards=2)
    vl = assert_clean_load(Qwen2_5_VLForConditionalGeneration, VL_DIR, state)
    del model
    # the shards really hold Hub names
    on_disk = {}
    for f in sorted(os.listdir(VL_DIR)):
        if f.endswith(".safetensors"):
            on_disk.update(load_file(os.path.join(VL_DIR, f)))
    assert set(on_disk) == set(hub_state)

    # ---------------- processor ----------------
    processor, how = load_processor(VL_DIR)
    ip = processor.image_processor
    note(f"processor: {how}; image processor: {type(ip).__name__} (backend {getattr(ip, 'backend', '?')})")
    assert getattr(ip, "backend", "?") == "torchvision", ip
    mini = MiniQwen2_5_VLProcessor(VL_DIR)
    vl_tok = processor.tokenizer
    assert vl_tok.encode("<|image_pad|>", add_special_tokens=False) == [ids["<|image_pad|>"]]

    # pixel values per image
    pixel_store = {}
    image_info = {}
    for name, w, h in IMAGES:
        rel = f"images/{name}"
        out = ip(images=[load_image(rel)], return_tensors="pt")
        pv = out["pixel_values"].to(torch.float32).contiguous()
        thw = out["image_grid_thw"].to(torch.int64).contiguous()
        pixel_store[name] = pv
        pixel_store[name + ".image_grid_thw"] = thw.reshape(3)
        image_info[rel] = {"pixel_values": pv, "grid": thw.reshape(3)}
        note(f"image {name} {w}x{h}: grid_thw {thw.reshape(3).tolist()}, pixel_values {tuple(pv.shape)}")
    save_file(pixel_store, os.path.join(HERE, "pixel_values.safetensors"), metadata={"format": "pt"})

    # ---------------- cases ----------------
    pad_id = ids["<|endoftext|>"]
    all_cases = []
    per_model = {"tiny-qwen2": [], "tiny-qwen2_5_vl": []}
    for c in QWEN2_CASES:
        per_model["tiny-qwen2"].append(dict(c, images=[]))
    for c in VL_CASES:
        per_model["tiny-qwen2_5_vl"].append(dict(c))

    for model_name, cases in per_model.items():
        is_vl = model_name == "tiny-qwen2_5_vl"
        model = vl if is_vl else qwen2
        tk = vl_tok if is_vl else hf_tok
        for c in cases:
            msgs = messages_for(c["question"], c["images"])
            if is_vl:
                prompt_text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
                imgs = [load_image(p) for p in c["images"]]
                enc = processor(text=[prompt_text], images=imgs or None, return_tensors="pt")
                if processor is not mini:
                    processor_agree(processor, mini, [prompt_text], imgs)
                    assert prompt_text == mini.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
                prompt_ids = enc["input_ids"][0].tolist()
                if imgs:
                    pv = torch.cat([image_info[p]["pixel_values"] for p in c["images"]])
                    assert torch.equal(enc["pixel_values"].to(torch.float32), pv)
                    grid = torch.stack([image_info[p]["grid"] for p in c["images"]])
                    assert torch.equal(enc["image_grid_thw"], grid)
                    assert torch.equal(
                        enc["mm_token_type_ids"].to(torch.int32),
                        mm_token_type_ids(enc["input_ids"], ids["<|image_pad|>"], ids["<|video_pad|>"]),
                    )
                else:
                    pv, grid = None, None
            else:
                prompt_text = tk.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
                prompt_ids = tk.encode(prompt_text, add_special_tokens=False)
                pv, grid = None, None
            # tokenizer.apply_chat_template agrees with the processor for the text part
            assert prompt_text == tk.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            response_ids = tk.encode(c["response"], add_special_tokens=False)
            n_img_tok = sum(int(image_info[p]["grid"].prod()) // 4 for p in c["images"])
            assert prompt_ids.count(ids["<|image_pad|>"]) == n_img_tok
            full = torch.tensor([prompt_ids + response_ids])
            mask = torch.ones_like(full)
            logits = forward_logits(model, is_vl, full, mask, pv, grid)
            lp = gather_logprobs(logits[0], full[0], len(prompt_ids), len(response_ids))
            c.update(
                model=model_name,
                prompt_text=prompt_text,
                prompt_ids=prompt_ids,
                response_ids=response_ids,
                image_grid_thw=[image_info[p]["grid"].tolist() for p in c["images"]],
                logprobs=f32_list(lp),
                _pv=pv,
                _grid=grid,
            )
            if is_vl:
                # the 3-D M-RoPE position ids HF uses for prompt+response (handy for debugging)
                if grid is not None:
                    pos, delta = vl.model.get_rope_index(
                        full,
                        mm_token_type_ids=mm_token_type_ids(full, ids["<|image_pad|>"], ids["<|video_pad|>"]),
                        image_grid_thw=grid,
                        attention_mask=mask,
                    )
                    c["rope_position_ids"] = pos[:, 0].tolist()
                    c["rope_delta"] = int(delta.reshape(-1)[0])
                else:
                    c["rope_position_ids"] = [list(range(full.shape[1]))] * 3
                    c["rope_delta"] = 0

        # one padded batch of all cases of this model, right and left padded
        seqs = [c["prompt_ids"] + c["response_ids"] for c in cases]
        pvs = [c["_pv"] for c in cases if c["_pv"] is not None]
        grids = [c["_grid"] for c in cases if c["_grid"] is not None]
        pv_all = torch.cat(pvs) if pvs else None
        grid_all = torch.cat(grids) if grids else None
        for side, key in (("right", "batch_logprobs"), ("left", "batch_left_logprobs")):
            bids, bmask, offs = pad_batch(seqs, pad_id, side)
            # Qwen2: HF's forward does not derive positions from the mask (generate() does),
            # so pass cumsum(mask)-1 explicitly.  Qwen2.5-VL: get_rope_index uses the mask.
            pos = None if is_vl else text_position_ids(bmask)
            blogits = forward_logits(model, is_vl, bids, bmask, pv_all, grid_all, position_ids=pos)
            for i, c in enumerate(cases):
                lp = gather_logprobs(blogits[i], bids[i], offs[i] + len(c["prompt_ids"]), len(c["response_ids"]))
                c[key] = f32_list(lp)
            if not is_vl and side == "left":
                # what a bare forward (positions 0..L-1 incl. the pads) gives: RoPE is relative,
                # so only rounding differs
                nl = forward_logits(model, is_vl, bids, bmask)
                d = 0.0
                for i, c in enumerate(cases):
                    lp = gather_logprobs(nl[i], bids[i], offs[i] + len(c["prompt_ids"]), len(c["response_ids"]))
                    d = max(d, (lp - torch.tensor(c["logprobs"])).abs().max().item())
                note(f"{model_name}: left-padded batch WITHOUT explicit position_ids: max |diff| {d:.3g}")
        for key in ("batch_logprobs", "batch_left_logprobs"):
            d = max(max(abs(a - b) for a, b in zip(c["logprobs"], c[key])) for c in cases)
            note(f"{model_name}: {key} vs unpadded: max |diff| {d:.3g}")
            assert d <= TOLERANCE, (model_name, key, d)
        all_lp = torch.tensor([x for c in cases for x in c["logprobs"]])
        note(f"{model_name}: response log-probs: n {all_lp.numel()}, mean {all_lp.mean():.3f}, std {all_lp.std():.3f}, "
             f"min {all_lp.min():.3f}, max {all_lp.max():.3f}")
        assert all_lp.std() > 0.5, "log-probs not spread enough: init too quiet"
        assert all_lp.min() > -60.0, "log-probs too extreme: init too loud"
        all_cases.extend(cases)

    # the image must matter: same prompt with a blank (grey) image of the same size
    for c in per_model["tiny-qwen2_5_vl"]:
        if not c["images"]:
            continue
        blank_pv = torch.cat(
            [
                ip(images=[Image.new("RGB", load_image(p).size, (128, 128, 128))], return_tensors="pt")["pixel_values"]
                for p in c["images"]
            ]
        ).to(torch.float32)
        full = torch.tensor([c["prompt_ids"] + c["response_ids"]])
        logits = forward_logits(vl, True, full, torch.ones_like(full), blank_pv, c["_grid"])
        lp = gather_logprobs(logits[0], full[0], len(c["prompt_ids"]), len(c["response_ids"]))
        d = (lp - torch.tensor(c["logprobs"])).abs().max().item()
        note(f"{c['name']}: blank image changes response log-probs by up to {d:.3g}")
        assert d > 1e-2, "vision features do not matter"
        # and the 3-D positions matter: 1-D positions instead of M-RoPE
        with torch.no_grad():
            lg = vl(input_ids=full, attention_mask=torch.ones_like(full), pixel_values=c["_pv"],
                    image_grid_thw=c["_grid"], use_cache=False).logits
        lp1 = gather_logprobs(lg[0], full[0], len(c["prompt_ids"]), len(c["response_ids"]))
        d1 = (lp1 - torch.tensor(c["logprobs"])).abs().max().item()
        note(f"{c['name']}: 1-D positions instead of M-RoPE change response log-probs by up to {d1:.3g}")
        assert d1 > 1e-3
        # and the window attention matters where the image spans more than one window
        n_windows = sum(
            math.ceil(int(g[1]) // 2 / 4) * math.ceil(int(g[2]) // 2 / 4) for g in c["_grid"]
        )  # window_size 112 / patch 14 / merge 2 = 4 merged patches per window side
        if n_windows > len(c["images"]):
            saved = vl.model.visual.fullatt_block_indexes
            vl.model.visual.fullatt_block_indexes = list(range(len(vl.model.visual.blocks)))
            try:
                lg = forward_logits(vl, True, full, torch.ones_like(full), c["_pv"], c["_grid"])
            finally:
                vl.model.visual.fullatt_block_indexes = saved
            lp2 = gather_logprobs(lg[0], full[0], len(c["prompt_ids"]), len(c["response_ids"]))
            d2 = (lp2 - torch.tensor(c["logprobs"])).abs().max().item()
            note(f"{c['name']}: full attention in every vision block instead of windows changes log-probs by up to {d2:.3g}")
            assert d2 > 1e-3

    for c in all_cases:
        c.pop("_pv")
        c.pop("_grid")

    key_order = [
        "name", "model", "images", "question", "response", "prompt_text", "prompt_ids", "response_ids",
        "image_grid_thw", "logprobs", "batch_logprobs", "batch_left_logprobs", "rope_position_ids", "rope_delta",
    ]
    cases_out = {
        "schema_version": 1,
        "generated_by": "tests/golden/policy/make_fixtures.py",
        "versions": versions(),
        "dtype": "float32",
        "attn_implementation": "eager",
        "image_processor": type(ip).__name__ + " (torchvision backend, the AutoProcessor default)",
        "tolerance_abs": TOLERANCE,
        "pad_token_id": pad_id,
        "special_token_ids": ids,
        "notes": log_notes_cases(),
        "cases": [{k: c[k] for k in key_order if k in c} for c in all_cases],
    }
    write_compact_json(os.path.join(HERE, "cases.json"), cases_out)

    # ---------------- greedy ----------------
    greedy_out = {
        "schema_version": 1,
        "generated_by": "tests/golden/policy/make_fixtures.py",
        "versions": versions(),
        "settings": {"do_sample": False, "max_new_tokens": 16, "eos_token_id": [ids["<|im_end|>"], pad_id],
                     "pad_token_id": pad_id, "dtype": "float32", "attn_implementation": "eager"},
        "prompts": [],
        "batches": {},
    }
    for model_name, slots in GREEDY_SLOTS.items():
        is_vl = model_name == "tiny-qwen2_5_vl"
        model = vl if is_vl else qwen2
        tk = vl_tok if is_vl else hf_tok
        singles = []
        prompts = []
        used = set()
        for slot_name, candidates in slots:
            chosen = None
            tried = 0
            for images, question in candidates:
                if (tuple(images), question) in used:
                    continue
                tried += 1
                msgs = messages_for(question, images)
                prompt_text = tk.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
                imgs = [load_image(x) for x in images]
                if is_vl:
                    enc = processor(text=[prompt_text], images=imgs or None, return_tensors="pt")
                else:
                    enc = tk([prompt_text], return_tensors="pt", add_special_tokens=False)
                with torch.no_grad():
                    out = model.generate(**enc, do_sample=False, max_new_tokens=16, output_scores=True,
                                         return_dict_in_generate=True)
                new = out.sequences[0, enc["input_ids"].shape[1]:].tolist()
                margins = []
                for sc in out.scores:
                    top2 = torch.topk(sc[0].float(), 2).values
                    margins.append(float(top2[0] - top2[1]))
                if min(margins) >= MIN_GREEDY_MARGIN and len(set(new)) >= MIN_GREEDY_UNIQUE:
                    chosen = (images, question, prompt_text, enc, new, margins)
                    break
            assert chosen is not None, f"no candidate qualifies for greedy slot {slot_name}"
            images, question, prompt_text, enc, new, margins = chosen
            used.add((tuple(images), question))
            p = {"name": slot_name, "images": images, "question": question}
            prompts.append(p)
            singles.append(new)
            greedy_out["prompts"].append(
                {
                    "name": slot_name,
                    "model": model_name,
                    "images": images,
                    "question": question,
                    "prompt_text": prompt_text,
                    "prompt_ids": enc["input_ids"][0].tolist(),
                    "image_grid_thw": enc["image_grid_thw"].tolist() if images else [],
                    "new_token_ids": new,
                    "new_text": tk.decode(new, skip_special_tokens=False),
                    "top2_logit_margins": margins,
                    "min_top2_margin": min(margins),
                }
            )
            note(f"greedy {slot_name}: {question!r} {images} (candidate #{tried}): {len(new)} new tokens, "
                 f"{len(set(new))} distinct, min top-2 logit margin {min(margins):.3g}")
        # one left-padded batch of the same prompts
        texts = [tk.apply_chat_template(messages_for(p["question"], p["images"]), add_generation_prompt=True, tokenize=False)
                 for p in prompts]
        imgs = [load_image(x) for p in prompts for x in p["images"]]
        if is_vl:
            processor.tokenizer.padding_side = "left"
            mini.tokenizer.padding_side = "left"
            enc = processor(text=texts, images=imgs or None, return_tensors="pt", padding=True)
            if processor is not mini:
                processor_agree(processor, mini, texts, imgs, padding=True)
        else:
            tk.padding_side = "left"
            enc = tk(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, max_new_tokens=16)
        L = enc["input_ids"].shape[1]
        batch_new = []
        for i in range(len(prompts)):
            row = out[i, L:].tolist()
            # strip the padding generate() appends after a finished row
            if any(e in row for e in greedy_out["settings"]["eos_token_id"]):
                cut = min(row.index(e) for e in greedy_out["settings"]["eos_token_id"] if e in row)
                row = row[: cut + 1]
            batch_new.append(row)
        agree = [a == b for a, b in zip(singles, batch_new)]
        greedy_out["batches"][model_name] = {
            "padding_side": "left",
            "prompt_names": [p["name"] for p in prompts],
            "input_ids": enc["input_ids"].tolist(),
            "attention_mask": enc["attention_mask"].tolist(),
            "new_token_ids": batch_new,
            "agrees_with_unpadded": agree,
        }
        note(f"greedy {model_name}: left-padded batch agrees with one-at-a-time: {agree}")
        processor.tokenizer.padding_side = "right"
        mini.tokenizer.padding_side = "right"
        hf_tok.padding_side = "right"
    write_compact_json(os.path.join(HERE, "greedy.json"), greedy_out)

    print("\nfiles written (size, sha256 prefix):")
    outputs = [os.path.join(HERE, f) for f in ("cases.json", "greedy.json", "pixel_values.safetensors")]
    for d in (IMG_DIR, QWEN2_DIR, VL_DIR):
        outputs += [os.path.join(d, f) for f in sorted(os.listdir(d))]
    for p in outputs:
        print(f"  {os.path.relpath(p, HERE):50s} {os.path.getsize(p):9d}  {sha256(p)[:16]}")
    print(f"  total {sum(os.path.getsize(p) for p in outputs)} bytes")


def log_notes_cases():
    return [
        "logprobs[i] = log_softmax(logits[P-1+i])[response_ids[i]], P = len(prompt_ids), computed on the "
        "single unpadded sequence prompt_ids + response_ids (attention_mask all ones).",
        "batch_logprobs: the same, taken from ONE right-padded batch of all cases of the model "
        "(pad = <|endoftext|>, attention_mask 0 on pads, pixel_values/image_grid_thw of all cases concatenated in "
        "case order). batch_left_logprobs: the same batch left-padded.",
        "Qwen2.5-VL: positions are HF's get_rope_index (3-D M-RoPE) computed from the attention mask; "
        "transformers 5 needs mm_token_type_ids (1 on <|image_pad|>) for that. Qwen2 batches: position_ids = "
        "cumsum(attention_mask) - 1 (0 on pads).",
        "rope_position_ids (VL cases): [3][P+R] positions (t, h, w) of prompt+response; rope_delta = max+1-len.",
        "Floats are float32 values widened exactly to float64.",
    ]


def versions():
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "pillow": Image.__version__,
    }


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def write_compact_json(path, obj):
    """Indented JSON, but lists of numbers on one line (keeps the file small and diffable)."""

    def enc(o, ind):
        pad = "  " * ind
        if isinstance(o, dict):
            if not o:
                return "{}"
            items = [f'{pad}  {json.dumps(k, ensure_ascii=False)}: {enc(v, ind + 1)}' for k, v in o.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(o, list):
            flat = json.dumps(o, ensure_ascii=False)
            if all(not isinstance(x, (dict, list, str)) for x in o) or (
                all(isinstance(x, str) for x in o) and len(flat) < 100
            ):
                return flat
            if all(isinstance(x, list) and all(not isinstance(y, (dict, list)) for y in x) for x in o):
                return "[" + ", ".join(json.dumps(x, ensure_ascii=False) for x in o) + "]"
            items = [f"{pad}  {enc(v, ind + 1)}" for v in o]
            return "[\n" + ",\n".join(items) + "\n" + pad + "]"
        return json.dumps(o, ensure_ascii=False)

    text = enc(obj, 0) + "\n"
    assert json.loads(text) == json.loads(json.dumps(obj))
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
