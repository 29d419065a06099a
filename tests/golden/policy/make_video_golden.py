#!/usr/bin/env python3
"""Video input for Qwen2.5-VL: golden outputs from transformers 5.23 on tiny-qwen2_5_vl/.

Run from the repository root, after make_fixtures.py (it uses that checkpoint and its images):

    python3 tests/golden/policy/make_video_golden.py

Writes tests/golden/policy/video/:
  frames/<video>/NNN.png   the frames of each test video (drawn here: shapes moving across)
  pixel_values.safetensors the video processor's output per video: `<video>` =
                           pixel_values_videos [patches, 1176] f32, `<video>.video_grid_thw` [3]
  golden.json              per case: the videos (frame files, fps), images, question, response,
                           the processor's prompt ids (each <|video_pad|> expanded), grids,
                           second_per_grid_ts, the 3-D rotary positions of get_rope_index, and
                           the response-token log-probs; greedy generate() tokens per prompt

The frames are handed to the processor as a list of PIL images with `video_metadata` giving the
fps they were sampled at (`{"fps": F}`), or with no metadata, in which case transformers assumes
24 fps (`VideoMetadata.sampled_fps`). `second_per_grid_ts = temporal_patch_size / fps`, and a
video's temporal rotary index is `int(t * tokens_per_second * second_per_grid_t)`. An odd number
of frames is padded by repeating the last frame. Float32, eager attention, CPU, deterministic.
Checked by operators/tests/video_policy.rs (1e-4 absolute per token) and tests/policy_cli.rs.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_fixtures as mf  # noqa: E402

CKPT = os.path.join(HERE, "tiny-qwen2_5_vl")
OUT = os.path.join(HERE, "video")
QUESTION = "What moves in the video?"

# name -> (width, height, frames)
VIDEOS = {
    "v5_wide": (120, 90, 5),  # odd: the last frame is repeated
    "v4_tall": (61, 170, 4),
    "v2_big": (400, 300, 2),  # scaled down by max_pixels
}
# name, videos [(video, fps or None)], images, response
CASES = [
    ("wide_fps2", [("v5_wide", 2.0)], [], "<think> a circle moves </think> \\boxed{1}"),
    ("tall_default_fps", [("v4_tall", None)], [], "<think> a square </think> \\boxed{1}"),
    ("big_fps1", [("v2_big", 1.0)], [], "<think> two shapes </think> \\boxed{2}"),
    ("image_then_video", [("v4_tall", 0.5)], ["sq56.png"], "<think> both </think> \\boxed{3}"),
]
GREEDY = [("wide_fps2", 8), ("image_then_video", 8)]


def draw_frames(w, h, n, seed):
    frames = []
    for i in range(n):
        im = Image.new("RGB", (w, h), (250 - 20 * i, 245, 235 - 10 * seed))
        d = ImageDraw.Draw(im)
        x = int((w - 20) * i / max(n - 1, 1))
        d.ellipse([x, h // 4, x + 18, h // 4 + 18], fill=(200, 40 + 30 * i, 40))
        y = int((h - 16) * (n - 1 - i) / max(n - 1, 1))
        d.rectangle([w // 2 - 8, y, w // 2 + 8, y + 14], fill=(30, 60, 190 - 25 * i))
        frames.append(im)
    return frames


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    proc = AutoProcessor.from_pretrained(CKPT)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(CKPT, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    os.makedirs(os.path.join(OUT, "frames"), exist_ok=True)
    videos = {}
    for seed, (name, (w, h, n)) in enumerate(VIDEOS.items()):
        frames = draw_frames(w, h, n, seed)
        d = os.path.join(OUT, "frames", name)
        os.makedirs(d, exist_ok=True)
        for i, f in enumerate(frames):
            f.save(os.path.join(d, f"{i:03d}.png"))
        # read back, as the test reads the files
        videos[name] = [Image.open(os.path.join(d, f"{i:03d}.png")).convert("RGB") for i in range(n)]

    pixel = {}
    out = {
        "generated_by": "tests/golden/policy/make_video_golden.py",
        "model": "tiny-qwen2_5_vl",
        "dtype": "float32",
        "attn_implementation": "eager",
        "tolerance_abs": 1e-4,
        "cases": [],
        "greedy": [],
    }
    encoded = {}
    for cname, vids, images, response in CASES:
        content = [{"type": "image"} for _ in images] + [{"type": "video"} for _ in vids]
        content.append({"type": "text", "text": QUESTION})
        text = proc.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
        kw = dict(text=[text], videos=[videos[v] for v, _ in vids], return_tensors="pt", cap_pixels_per_frame=False)
        if any(fps is not None for _, fps in vids):
            assert all(fps is not None for _, fps in vids)
            kw["video_metadata"] = [{"fps": fps, "total_num_frames": VIDEOS[v][2]} for v, fps in vids]
        if images:
            kw["images"] = [Image.open(os.path.join(HERE, "images", i)).convert("RGB") for i in images]
        enc = proc(**kw)
        for (v, _), g in zip(vids, enc["video_grid_thw"]):
            n = int(g.prod())
            # one video per case here, so the case's pixel values are that video's
            pixel[v] = enc["pixel_values_videos"][:n].to(torch.float32).contiguous()
            pixel[v + ".video_grid_thw"] = g.to(torch.int64).contiguous()
        pid = enc["input_ids"]
        rid = proc.tokenizer(response, add_special_tokens=False)["input_ids"]
        full = torch.cat([pid, torch.tensor([rid])], 1)
        mm = mf.mm_token_type_ids(full, model.config.image_token_id, model.config.video_token_id)
        fkw = dict(input_ids=full, attention_mask=torch.ones_like(full), use_cache=False, mm_token_type_ids=mm,
                   pixel_values_videos=enc["pixel_values_videos"], video_grid_thw=enc["video_grid_thw"],
                   second_per_grid_ts=enc["second_per_grid_ts"])
        if images:
            fkw.update(pixel_values=enc["pixel_values"], image_grid_thw=enc["image_grid_thw"])
        pos, _ = model.model.get_rope_index(
            full, mm, image_grid_thw=fkw.get("image_grid_thw"), video_grid_thw=enc["video_grid_thw"],
            second_per_grid_ts=enc["second_per_grid_ts"], attention_mask=torch.ones_like(full))
        with torch.no_grad():
            logits = model(**fkw).logits.to(torch.float32)
        lp = mf.gather_logprobs(logits[0], full[0], pid.shape[1], len(rid))
        case = {
            "name": cname,
            "videos": [{"name": v, "frames": [f"frames/{v}/{i:03d}.png" for i in range(VIDEOS[v][2])], "fps": fps}
                       for v, fps in vids],
            "images": [f"images/{i}" for i in images],
            "question": QUESTION,
            "response": response,
            "prompt_text": text,
            "prompt_ids": pid[0].tolist(),
            "response_ids": rid,
            "video_grid_thw": enc["video_grid_thw"].tolist(),
            "image_grid_thw": enc["image_grid_thw"].tolist() if images else [],
            "second_per_grid_ts": [float(x) for x in enc["second_per_grid_ts"]],
            "rope_positions": pos[:, 0].tolist(),
            "logprobs": mf.f32_list(lp),
        }
        encoded[cname] = (case, fkw)
        out["cases"].append(case)
        print(f"{cname}: {pid.shape[1]} prompt tokens, video grids {case['video_grid_thw']}, "
              f"second_per_grid_ts {case['second_per_grid_ts']}")

    for cname, n_new in GREEDY:
        case, fkw = encoded[cname]
        kw = {k: v for k, v in fkw.items() if k not in ("input_ids", "attention_mask", "use_cache", "mm_token_type_ids")}
        ids = torch.tensor([case["prompt_ids"]])
        kw.update(input_ids=ids, attention_mask=torch.ones_like(ids),
                  mm_token_type_ids=mf.mm_token_type_ids(ids, model.config.image_token_id, model.config.video_token_id),
                  max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, output_scores=True,
                  return_dict_in_generate=True)
        with torch.no_grad():
            g = model.generate(**kw)
        tokens = g.sequences[0, ids.shape[1]:].tolist()
        margins = [float(torch.topk(s[0], 2).values.diff().abs()) for s in g.scores]
        keep = next((i for i, m in enumerate(margins) if m <= 0.02), len(margins))
        assert keep >= 4, f"{cname}: greedy margins {margins}"
        out["greedy"].append({"case": cname, "max_new_tokens": keep, "tokens": tokens[:keep],
                              "min_margin": min(margins[:keep])})
        print(f"greedy {cname}: {tokens[:keep]} (min margin {min(margins[:keep]):.3f})")

    save_file(pixel, os.path.join(OUT, "pixel_values.safetensors"), metadata={"format": "pt"})
    mf.write_json(os.path.join(OUT, "golden.json"), out, indent=1)


if __name__ == "__main__":
    main()
