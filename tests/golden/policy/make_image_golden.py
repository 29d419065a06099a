#!/usr/bin/env python3
"""Golden data for the Qwen2-VL input processor (operators/src/policy/{resample,image,chat,processor}.rs).

Run from the repository root (Pillow 13, transformers 5.23, tokenizers 0.23, numpy, safetensors):

    python3 tests/golden/policy/make_image_golden.py

Deterministic: fixed seeds, no randomness elsewhere; running it again rewrites identical files.
Checked by operators/tests/processor_golden.rs.

resize/            PIL `Image.resize` outputs (byte-exact target for resample.rs)
  index.json       cases: input PNG, target size, filter, output PNG; Pillow 13's pass order
                   on 300 random sizes
  pillow12.json    the same resizes by Pillow 12 (make_pillow12_golden.py, run afterwards)
  in_*.png         deterministic test images (noise + gradients + hard-edged shapes)
  out_*.png        PIL outputs
  convert_*.png    inputs in other modes (RGBA, LA, L, P + transparency) and
  rgb_*.png        transformers' `convert_to_rgb` of them (composited onto white)

processor/         a tiny Qwen2-VL style checkpoint directory without weights
  tokenizer.json, tokenizer_config.json, chat_template.json, preprocessor_config.json,
  generation_config.json      (the byte-level BPE is trained here on a small corpus)
  images/*.png                processor inputs
  image_processor.safetensors pixel_values / image_grid_thw of `Qwen2VLImageProcessorPil`
                              (transformers' slow, PIL backed image processor); each row holds
                              the C*patch*patch values once (HF repeats them temporal_patch_size
                              times, identical for a still image: asserted here)
  expected.json               prompts (rendered text, input_ids), encode/decode cases,
                              chat-template renders from transformers' own jinja2 environment

transformers 5.23 cannot build `Qwen2_5_VLProcessor` without torchvision (its video processor
needs it), so the prompt path is reproduced here the way the processor does it: the chat
template rendered by `render_jinja_template` (what `apply_chat_template` calls), the slow image
processor, each `<|image_pad|>` in the text replaced by grid_t*grid_h*grid_w/merge_size**2
copies in image order, then the tokenizer (`AutoTokenizer`, i.e. `Qwen2Tokenizer`).
"""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from transformers.image_transforms import convert_to_rgb  # noqa: E402
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (  # noqa: E402
    Qwen2VLImageProcessorPil,
    smart_resize,
)
from transformers.utils.chat_template_utils import render_jinja_template  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESIZE_DIR = os.path.join(HERE, "resize")
PROC_DIR = os.path.join(HERE, "processor")

VERSIONS = {
    "pillow": PIL.__version__,
    "transformers": transformers.__version__,
    "tokenizers": tokenizers.__version__,
    "numpy": np.__version__,
}


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def save_png(im, path):
    # deterministic: same pixels, same bytes
    im.save(path, format="PNG", optimize=True)


# --------------------------------------------------------------------------------------
# test images
# --------------------------------------------------------------------------------------


def make_rgb(w, h, seed, noise=10):
    """Gradients + a saturated rectangle + a black/white disc + uniform noise, as uint8 RGB.

    The hard edges make bicubic overshoot (negative lobes) so clipping is exercised; the noise
    makes every rounding decision visible.
    """
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack(
        [xx * 255.0 / max(w - 1, 1), yy * 255.0 / max(h - 1, 1), ((xx * 3 + yy * 5) * 4) % 256], axis=-1
    )
    x0, y0 = rng.randint(0, max(w // 2, 1)), rng.randint(0, max(h // 2, 1))
    img[y0 : y0 + max(h // 3, 1), x0 : x0 + max(w // 3, 1)] = rng.randint(0, 2, 3) * 255
    cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), max(min(w, h) / 4, 1.5)
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    img[disc] = 255.0 if seed % 2 else 0.0
    img = img + rng.randint(-noise, noise + 1, img.shape)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

# name -> (width, height, seed)
RESIZE_INPUTS = {
    "a61x47": (61, 47, 1),
    "b9x13": (9, 13, 2),
    "c80x60": (80, 60, 3),
    "d128x16": (128, 16, 4),
    "e3x200": (3, 200, 5),
}

# (input, (width, height), filter)
RESIZE_CASES = [
    ("a61x47", (28, 56), "bicubic"),  # down in x, up in y
    ("a61x47", (90, 70), "bicubic"),  # up both
    ("a61x47", (30, 20), "bicubic"),  # down both (antialiased support)
    ("a61x47", (61, 20), "bicubic"),  # width unchanged: vertical pass only
    ("a61x47", (20, 47), "bicubic"),  # height unchanged: horizontal pass only
    ("a61x47", (61, 47), "bicubic"),  # same size: copy
    ("b9x13", (56, 84), "bicubic"),  # tiny image, large upscale
    ("b9x13", (5, 7), "bicubic"),
    ("c80x60", (56, 28), "bicubic"),  # non-uniform downscale
    ("c80x60", (79, 61), "bicubic"),  # nearly the same size
    ("c80x60", (33, 17), "bicubic"),  # non-integer factors
    ("d128x16", (40, 16), "bicubic"),
    ("d128x16", (128, 40), "bicubic"),
    ("e3x200", (28, 56), "bicubic"),  # 3 wide: support wider than the image; vertical first
    ("a61x47", (90, 20), "bicubic"),  # width grows, height shrinks: vertical pass first (Pillow 13)
    ("a61x47", (50, 10), "bicubic"),  # height shrinks by > 2x the width's pixels: vertical first
    ("a61x47", (28, 56), "bilinear"),
    ("a61x47", (28, 56), "lanczos"),
    ("a61x47", (28, 56), "box"),
    ("a61x47", (28, 56), "hamming"),
    ("c80x60", (100, 40), "lanczos"),
]


def convert_inputs():
    """Images in other PIL modes, for convert_to_rgb (composites transparency onto white)."""
    rng = np.random.RandomState(11)
    w, h = 23, 17
    rgb = np.asarray(make_rgb(w, h, 12))
    alpha = rng.randint(0, 256, (h, w)).astype(np.uint8)
    alpha[0, :] = 0  # fully transparent row
    alpha[1, :] = 255  # fully opaque row
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    gray = Image.fromarray(rgb[..., 1].copy(), "L")
    la = Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA")
    pal = make_rgb(w, h, 13).quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pal.info["transparency"] = 3  # palette index 3 is transparent (PNG tRNS)
    return {"rgba": rgba, "l": gray, "la": la, "p_trns": pal}


def pass_order_cases(n=300):
    """"WxH>WxH:order" for random resizes that change both sides, where Pillow's result
    equals exactly one of "horizontal pass then vertical" ("H") and "vertical then horizontal"
    ("V"), each pass done by Pillow itself as a one-axis resize. Pillow 13 goes vertical first
    when the height shrinks by more than twice as many pixels as the width (PR 9549)."""
    rng = np.random.RandomState(99)
    out = []
    while len(out) < n:
        w, h, W, H = (int(v) for v in rng.randint(1, 90, 4))
        if W == w or H == h:
            continue
        im = Image.fromarray(rng.randint(0, 256, (h, w, 3)).astype(np.uint8), "RGB")
        b = Image.Resampling.BICUBIC
        one = np.asarray(im.resize((W, H), b))
        hv = np.array_equal(one, np.asarray(im.resize((W, h), b).resize((W, H), b)))
        vh = np.array_equal(one, np.asarray(im.resize((w, H), b).resize((W, H), b)))
        assert hv or vh, (w, h, W, H)
        if hv != vh:
            out.append(f"{w}x{h}>{W}x{H}:{'H' if hv else 'V'}")
    return out


def make_resize_golden():
    os.makedirs(RESIZE_DIR, exist_ok=True)
    index = {"generated_by": "tests/golden/policy/make_image_golden.py", "versions": VERSIONS}
    inputs = {}
    for name, (w, h, seed) in RESIZE_INPUTS.items():
        im = make_rgb(w, h, seed)
        save_png(im, os.path.join(RESIZE_DIR, f"in_{name}.png"))
        inputs[name] = im
    cases = []
    for name, (w, h), filt in RESIZE_CASES:
        # reload from the PNG, exactly what the Rust test decodes
        with Image.open(os.path.join(RESIZE_DIR, f"in_{name}.png")) as src:
            src = src.convert("RGB")
            assert np.array_equal(np.asarray(src), np.asarray(inputs[name]))
            out = src.resize((w, h), resample=FILTERS[filt])
        out_name = f"out_{name}_{w}x{h}_{filt}.png"
        save_png(out, os.path.join(RESIZE_DIR, out_name))
        cases.append({"input": f"in_{name}.png", "width": w, "height": h, "filter": filt, "output": out_name})
    index["resize"] = cases

    conv = []
    for name, im in convert_inputs().items():
        in_name = f"convert_{name}.png"
        save_png(im, os.path.join(RESIZE_DIR, in_name))
        with Image.open(os.path.join(RESIZE_DIR, in_name)) as src:
            src.load()
            mode = src.mode
            rgb = convert_to_rgb(src, return_numpy=True)
        out_name = f"rgb_{name}.png"
        save_png(Image.fromarray(rgb, "RGB"), os.path.join(RESIZE_DIR, out_name))
        conv.append({"input": in_name, "pil_mode": mode, "output": out_name})
    index["convert_to_rgb"] = conv
    index["pass_order"] = pass_order_cases()
    write_json(os.path.join(RESIZE_DIR, "index.json"), index)


# --------------------------------------------------------------------------------------
# tokenizer (Qwen2 layout: NFC, Split(regex) + ByteLevel(use_regex=False), ByteLevel decoder)
# --------------------------------------------------------------------------------------

PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           "<|video_pad|>"]
CORPUS = [
    "You are a helpful assistant.",
    "What is shown in the image? Describe the picture in detail.",
    "How many sides does a triangle have? Put your final answer within \\boxed{}.",
    "<think> A triangle has 3 sides. </think> The answer is \\boxed{3}.",
    "Solve 3x - 4 = 11. Please reason step by step, and put the final answer in a box.",
    "The quick brown fox jumps over the lazy dog. It's 12:45 and we're done; they'll see.",
    "Which of the shapes is red, and which is blue?\nAnswer with the letter of the correct option.",
    "Let x = 2. Then x^2 + 3x + 1 = 11, so the result is eleven.",
    "图片里有什么？ 请一步一步思考。 café naïve déjà vu",
    "    indented code:\n\tif (a < b) { return a; }\n\n",
]


def make_tokenizer():
    tok = Tokenizer(
        models.BPE(
            unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420, min_frequency=2, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    # the specials come after the vocabulary, as in Qwen2 (151643 ...)
    tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    return tok


QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)

# A text-only template in the tokenizer_config.json: the processor must prefer chat_template.json,
# a text-only load must take this one.  Written for this test to exercise what HF templates use:
# block tags on their own (indented) lines (trim_blocks / lstrip_blocks), namespace, reversed
# slices, loop variables, Python string methods, tests, tojson, break/continue, raise_exception,
# the special-token variables transformers passes (eos_token, ...) and extra kwargs.
FEATURE_TEMPLATE = """{# a template comment #}
{% set ns = namespace(last_user=-1, n=0) %}
{% for message in messages[::-1] %}
    {% if ns.last_user < 0 and message.role == 'user' %}
        {% set ns.last_user = (messages|length - 1) - loop.index0 %}
    {% endif %}
{% endfor %}
{% if messages[0].role == 'system' %}
<|im_start|>system
{{ messages[0].content | trim }}<|im_end|>
{% else %}
<|im_start|>system
You are a helpful assistant.<|im_end|>
{% endif %}
{% if tools %}
<|im_start|>tools
    {% for tool in tools %}
{{ tool | tojson }}
{{ tool | tojson(indent=2) }}
    {% endfor %}
<|im_end|>
{% endif %}
{% for message in messages %}
    {% if message.role == 'system' %}{% continue %}{% endif %}
    {% if message.role == 'stop' %}{% break %}{% endif %}
    {% set ns.n = ns.n + 1 %}
    {% if message.role == 'user' %}
<|im_start|>user
{{ message.content.strip() }}{% if loop.index0 == ns.last_user %} [last]{% endif %}<|im_end|>
    {% elif message.role == 'assistant' %}
        {% set content = message.content %}
        {% if '</think>' in content %}
            {% set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
            {% set content = content.split('</think>')[-1].lstrip('\\n') %}
<|im_start|>assistant
({{ reasoning | length }} chars of reasoning: {{ reasoning.upper() }}) {{ content }}
        {% else %}
<|im_start|>assistant
{{ content }}
        {% endif %}
        {% if message.tool_calls is defined and message.tool_calls is not none %}
            {% for call in message.tool_calls %}
<tool_call>{"name": "{{ call.name }}", "arguments": {{ call.arguments | tojson }}}</tool_call>{{ ',' if not loop.last }}
            {% endfor %}
        {% endif %}
{{ eos_token }}
    {% else %}
        {{ raise_exception('Unknown role: ' + message.role) }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
    {% if enable_thinking is defined and enable_thinking is false %}
<think>

</think>

    {% endif %}
{% endif %}
"""

TOOL = {
    "type": "function",
    "function": {
        "description": "Weather in a city, \"quoted\" & <escaped>? No: json.dumps keeps them; é stays.",
        "name": "get_weather",
        "parameters": {
            "properties": {"city": {"type": "string"}, "days": {"maximum": 7.5, "minimum": 1, "type": "integer"}},
            "required": ["city"],
            "type": "object",
        },
    },
}


def render_cases():
    """(name, template, messages, add_generation_prompt, kwargs) rendered by transformers' jinja2 env.

    Dict keys are written in sorted order: a serde_json::Value without `preserve_order` (what
    Processor::render_chat takes) sorts keys, Python keeps insertion order; see chat.rs.
    """
    convo = [
        {"content": "  Be brief.  ", "role": "system"},
        {"content": "What is 2+2?", "role": "user"},
        {"content": "<think>\nadd them\n</think>\n\nIt is 4.", "role": "assistant"},
        {"content": " And 3+3? ", "role": "user"},
    ]
    tool_turn = [
        {"content": "Weather in Paris?", "role": "user"},
        {
            "content": "Let me look.",
            "role": "assistant",
            "tool_calls": [
                {"arguments": {"city": "Paris", "days": 2}, "name": "get_weather"},
                {"arguments": {"city": "Nice", "days": 0.5}, "name": "get_weather"},
            ],
        },
    ]
    cases = [
        ("feature_convo", FEATURE_TEMPLATE, convo, True, {}),
        ("feature_convo_no_gen", FEATURE_TEMPLATE, convo, False, {}),
        ("feature_no_thinking", FEATURE_TEMPLATE, convo[1:2], True, {"enable_thinking": False}),
        ("feature_tools", FEATURE_TEMPLATE, tool_turn, False, {"tools": [TOOL]}),
        ("feature_stop", FEATURE_TEMPLATE, convo[1:2] + [{"content": "", "role": "stop"}] + convo[3:], True, {}),
        ("qwen2_vl_text", QWEN2_VL_TEMPLATE, convo[1:], True, {}),
        ("qwen2_vl_system", QWEN2_VL_TEMPLATE, convo, False, {}),
        (
            "qwen2_vl_images",
            QWEN2_VL_TEMPLATE,
            [{"content": [{"type": "image"}, {"type": "image"}, {"text": "Compare them.", "type": "text"}],
              "role": "user"}],
            True,
            {},
        ),
        (
            "qwen2_vl_vision_id",
            QWEN2_VL_TEMPLATE,
            [{"content": [{"type": "image"}, {"text": "Describe.", "type": "text"}, {"type": "video"}],
              "role": "user"}],
            True,
            {"add_vision_id": True},
        ),
    ]
    return [(n, t, sort_keys(m), g, sort_keys(k)) for n, t, m, g, k in cases]


def sort_keys(obj):
    return json.loads(json.dumps(obj, sort_keys=True))


# --------------------------------------------------------------------------------------
# processor directory
# --------------------------------------------------------------------------------------

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
MIN_PIXELS, MAX_PIXELS = 3136, 200704

# name -> (width, height, seed); 16-24 patches each keeps image_processor.safetensors small
PROC_IMAGES = {
    "p47x61": (47, 61, 21),  # rounds to 56x56
    "p13x9": (13, 9, 22),  # below min_pixels: upscaled
}
# the downscale branch (h_bar*w_bar > max_pixels), with a second, small max_pixels
DOWN_MAX_PIXELS = 4704
DOWN_IMAGE = ("p90x75", (90, 75, 24))

PROMPT_CASES = [
    {"name": "one_image", "question": "What is shown in the image?", "images": ["p47x61"]},
    {"name": "two_images", "question": "Which of the shapes is red?\nAnswer with the letter.",
     "images": ["p13x9", "p47x61"]},
    {"name": "text_only", "question": "Solve 3x - 4 = 11. Put your final answer within \\boxed{}.", "images": []},
    {"name": "special_in_question", "question": "Echo <|im_end|> and café 图片", "images": ["p47x61"]},
]

ENCODE_TEXTS = [
    "<think> A triangle has 3 sides. </think> \\boxed{3}<|im_end|>",
    "The quick brown fox, it's 12:45!\n\n  done\t",
    "unseen words: zebra quartz 🦀 naïve",  # noqa: RUF001
    "<|vision_start|><|image_pad|><|image_pad|><|vision_end|>",
    "",
]


def messages_for(question, n_images):
    if n_images:
        return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": question}]}]
    return [{"role": "user", "content": question}]


def make_processor_golden():
    os.makedirs(os.path.join(PROC_DIR, "images"), exist_ok=True)
    tok = make_tokenizer()
    tok.save(os.path.join(PROC_DIR, "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIAL}
    added = {
        str(ids[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True}
        for t in SPECIAL
    }
    write_json(
        os.path.join(PROC_DIR, "tokenizer_config.json"),
        {
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": added,
            "additional_special_tokens": SPECIAL[1:],
            "bos_token": None,
            "chat_template": FEATURE_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": 4096,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
    )
    write_json(os.path.join(PROC_DIR, "chat_template.json"), {"chat_template": QWEN2_VL_TEMPLATE})
    write_json(
        os.path.join(PROC_DIR, "generation_config.json"),
        {"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]], "pad_token_id": ids["<|endoftext|>"]},
    )
    pp_config = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_processor_type": "Qwen2VLImageProcessor",
        "image_std": CLIP_STD,
        "max_pixels": MAX_PIXELS,
        "merge_size": 2,
        "min_pixels": MIN_PIXELS,
        "patch_size": 14,
        "processor_class": "Qwen2_5_VLProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "temporal_patch_size": 2,
    }
    write_json(os.path.join(PROC_DIR, "preprocessor_config.json"), pp_config)

    # -------- image processor --------
    images = {}
    for name, (w, h, seed) in [*PROC_IMAGES.items(), DOWN_IMAGE]:
        path = os.path.join(PROC_DIR, "images", f"{name}.png")
        save_png(make_rgb(w, h, seed), path)
        with Image.open(path) as im:
            images[name] = im.convert("RGB")
    kw = {k: v for k, v in pp_config.items() if k not in ("image_processor_type", "processor_class")}
    ip = Qwen2VLImageProcessorPil(**kw)
    ip_down = Qwen2VLImageProcessorPil(**dict(kw, max_pixels=DOWN_MAX_PIXELS))
    store, image_cases = {}, []
    for name, proc, max_pixels in [(n, ip, MAX_PIXELS) for n in PROC_IMAGES] + [(DOWN_IMAGE[0], ip_down,
                                                                                  DOWN_MAX_PIXELS)]:
        out = proc(images=[images[name]], return_tensors="np")
        pv = np.ascontiguousarray(out["pixel_values"], dtype=np.float32)
        thw = np.asarray(out["image_grid_thw"], dtype=np.int64).reshape(3)
        w, h = images[name].size
        rh, rw = smart_resize(h, w, factor=28, min_pixels=MIN_PIXELS, max_pixels=max_pixels)
        assert [rh // 14, rw // 14] == thw[1:].tolist()
        # HF's rows are (C, T, patch, patch) with the T copies of a still image identical: store
        # them once, as (N, C*patch*patch); the Rust test compares each copy with it
        t = pv.reshape(pv.shape[0], 3, 2, 14, 14)
        assert np.array_equal(t[:, :, 0], t[:, :, 1])
        store[name] = np.ascontiguousarray(t[:, :, 0]).reshape(pv.shape[0], 3 * 14 * 14)
        store[name + ".image_grid_thw"] = thw
        image_cases.append({"image": f"images/{name}.png", "max_pixels": max_pixels, "resized_hw": [rh, rw],
                            "image_grid_thw": thw.tolist(), "shape": list(pv.shape)})
    save_file(store, os.path.join(PROC_DIR, "image_processor.safetensors"))

    # -------- tokenizer: transformers' Qwen2Tokenizer must agree with the raw tokenizers file ----
    hf_tok = AutoTokenizer.from_pretrained(PROC_DIR)
    raw = Tokenizer.from_file(os.path.join(PROC_DIR, "tokenizer.json"))
    special_map = hf_tok.special_tokens_map
    encode_cases = []
    for text in ENCODE_TEXTS:
        a = hf_tok.encode(text, add_special_tokens=False)
        assert a == raw.encode(text, add_special_tokens=False).ids, text
        encode_cases.append({
            "text": text,
            "ids": a,
            "decoded": hf_tok.decode(a),
            "decoded_skip_special": hf_tok.decode(a, skip_special_tokens=True),
        })

    # -------- prompts, the Qwen2_5_VLProcessor way --------
    prompt_cases = []
    for c in PROMPT_CASES:
        msgs = messages_for(c["question"], len(c["images"]))
        (text,), _ = render_jinja_template(
            conversations=[msgs], chat_template=QWEN2_VL_TEMPLATE, add_generation_prompt=True, **special_map
        )
        assert text == hf_tok.apply_chat_template(
            msgs, chat_template=QWEN2_VL_TEMPLATE, add_generation_prompt=True, tokenize=False
        )
        expanded = text
        grids = []
        if c["images"]:
            out = ip(images=[images[n] for n in c["images"]], return_tensors="np")
            grids = np.asarray(out["image_grid_thw"]).tolist()
            parts = text.split("<|image_pad|>")
            assert len(parts) == len(grids) + 1
            expanded = parts[0]
            for g, rest in zip(grids, parts[1:]):
                expanded += "<|image_pad|>" * (int(np.prod(g)) // 4) + rest
        input_ids = hf_tok(expanded)["input_ids"]
        assert input_ids == raw.encode(expanded).ids
        prompt_cases.append(dict(c, images=[f"images/{n}.png" for n in c["images"]], rendered=text,
                                 input_ids=input_ids, image_grid_thw=grids))

    render = []
    for name, template, msgs, gen, kwargs in render_cases():
        (text,), _ = render_jinja_template(
            conversations=[msgs], chat_template=template, add_generation_prompt=gen, **{**special_map, **kwargs}
        )
        render.append({"name": name, "template": "qwen2_vl" if template is QWEN2_VL_TEMPLATE else "feature",
                       "messages": msgs, "add_generation_prompt": gen, "kwargs": kwargs, "expected": text})
    (text_only,), _ = render_jinja_template(
        conversations=[messages_for(PROMPT_CASES[2]["question"], 0)], chat_template=FEATURE_TEMPLATE,
        add_generation_prompt=True, **special_map,
    )
    try:
        render_jinja_template(conversations=[[{"role": "robot", "content": "x"}]], chat_template=FEATURE_TEMPLATE)
        raise AssertionError("raise_exception did not raise")
    except Exception as e:  # jinja2.exceptions.TemplateError
        raise_message = str(e)

    write_json(
        os.path.join(PROC_DIR, "expected.json"),
        {
            "generated_by": "tests/golden/policy/make_image_golden.py",
            "versions": VERSIONS,
            "special_token_ids": ids,
            "special_tokens_map": special_map,
            "eos_ids": [ids["<|im_end|>"], ids["<|endoftext|>"]],
            "pad_id": ids["<|endoftext|>"],
            "image_processor": image_cases,
            "prompts": prompt_cases,
            "text_only_prompt": {"question": PROMPT_CASES[2]["question"], "rendered": text_only,
                                 "input_ids": hf_tok(text_only)["input_ids"]},
            "encode": encode_cases,
            "render": render,
            "raise_exception": {"messages": [{"role": "robot", "content": "x"}], "message": raise_message},
        },
    )


if __name__ == "__main__":
    make_resize_golden()
    make_processor_golden()
    total = 0
    for d in (RESIZE_DIR, PROC_DIR):
        for root, _, files in os.walk(d):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"golden files: {total / 1024:.1f} KiB")
