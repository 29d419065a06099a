"""Writes the dataset-loader fixtures of tests/golden/data/ and expected.json.

The Rust test operators/tests/data_loader.rs loads every fixture with
`shareflow_operators::data::load_dataset` and compares the rows with expected.json.

    pip install pyarrow datasets pillow     # tested: pyarrow 26.0.1, datasets 5.2.0, Pillow 13.0.0
    python3 tests/golden/data/make_data_fixtures.py

Images are compared by FNV-1a 64 (hex) of the encoded bytes (the file for path images) and, for
lossless formats, of the decoded RGB8 pixels (PIL `convert("RGB").tobytes()`), plus their size.
"""

import io
import json
import os
import shutil

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def make_image(w, h, seed, mode="RGB"):
    img = Image.new(mode, (w, h))
    px = img.load()
    for y in range(h):
        for x in range(w):
            v = [(x * 37 + y * 11 + seed * 53 + c * 29) % 256 for c in range(4)]
            if mode == "RGB":
                px[x, y] = tuple(v[:3])
            elif mode == "RGBA":
                px[x, y] = tuple(v)
            else:
                px[x, y] = v[0]
    return img


def encode(img, fmt):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def describe(data: bytes, lossless: bool):
    img = Image.open(io.BytesIO(data))
    img.load()
    return {
        "width": img.width,
        "height": img.height,
        "fnv_bytes": fnv1a64(data),
        "fnv_rgb8": fnv1a64(img.convert("RGB").tobytes()) if lossless else None,
    }


PNG_A = encode(make_image(8, 6, 1), "PNG")
PNG_B = encode(make_image(5, 7, 2, "RGBA"), "PNG")
PNG_C = encode(make_image(6, 6, 3, "L"), "PNG")
JPEG_D = encode(make_image(8, 6, 4), "JPEG")
IMAGES = {"a": (PNG_A, True), "b": (PNG_B, True), "c": (PNG_C, True), "d": (JPEG_D, False)}


def img_desc(name):
    data, lossless = IMAGES[name]
    return describe(data, lossless)


def expected_row(row, rid, problem, answer, images, rewrites):
    return {
        "row": row,
        "id": rid,
        "problem": problem,
        "answer": answer,
        "rewrites": rewrites,
        "images": [img_desc(n) for n in images],
    }


def write(path, table):
    full = os.path.join(HERE, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    pq.write_table(table, full)


IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def image_cells(names):
    return [{"bytes": IMAGES[n][0], "path": None} for n in names]


def main():
    for name in ["hf_images.parquet", "sharded", "paths.parquet", "images", "paths.jsonl",
                 "bad_rows.parquet", "missing_column.parquet", "image_types"]:
        p = os.path.join(HERE, name)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)
    expected = {"fixtures": {}}

    # (a) HF datasets, Sequence(Image()), stringified new_questions (as R1-ShareVL-52K).
    rows_a = [
        ("q0", "<image><image>Compare the two shapes. Which is larger?", "A", ["a", "d"],
         ["Which of the two shapes is larger?", "Of the shapes shown, which one's bigger?"]),
        ("q1", "<image>What is x?", "3", ["b"],
         ["What is x?", "It's y: say \"x\"", "tab\there \\ back", "caf\u00e9 \u00b2"]),
        ("q2", "What is 2 + 2?", "4", [], []),
        ("q3", "Count the shapes in the image.", "5", ["c"], ["How many shapes?"]),
    ]
    features = datasets.Features({
        "id": datasets.Value("string"),
        "problem": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "images": datasets.Sequence(datasets.Image()),
        "new_questions": datasets.Value("string"),
        "source": datasets.Value("string"),
    })
    ds = datasets.Dataset.from_dict({
        "id": [r[0] for r in rows_a],
        "problem": [r[1] for r in rows_a],
        "answer": [r[2] for r in rows_a],
        "images": [image_cells(r[3]) for r in rows_a],
        "new_questions": [str(r[4]) for r in rows_a],
        "source": ["fixture"] * len(rows_a),
    }, features=features)
    ds.to_parquet(os.path.join(HERE, "hf_images.parquet"))
    expected["fixtures"]["hf_images.parquet"] = [
        expected_row(i, r[0], r[1], r[2], r[3], r[4]) for i, r in enumerate(rows_a)]

    # (b) Sharded HF export layout, list<string> new_questions, no id column.
    shards = {
        "train-00000-of-00002": [("<image>Shape?", "circle", ["a"], ["Which shape?"]),
                                  ("Text only?", "yes", [], [])],
        "train-00001-of-00002": [("<image>Colour?", "red", ["d"], ["What colour?", "Hue?"]),
                                  ("<image> and <image>?", "both", ["b", "c"], [])],
        "test-00000-of-00001": [("<image>Test?", "t", ["c"], ["Test again?"])],
    }
    by_split = {"train": [], "test": []}
    for shard, rows in shards.items():
        table = pa.table({
            "problem": pa.array([r[0] for r in rows], pa.string()),
            "answer": pa.array([r[1] for r in rows], pa.string()),
            "images": pa.array([image_cells(r[2]) for r in rows], pa.list_(IMAGE_STRUCT)),
            "new_questions": pa.array([r[3] for r in rows], pa.list_(pa.string())),
        })
        write(f"sharded/data/{shard}.parquet", table)
        split = shard.split("-")[0]
        by_split[split] += [expected_row(i, f"{shard}:{i}", r[0], r[1], r[2], r[3])
                            for i, r in enumerate(rows)]
    # Load order is by path: test-... sorts before train-....
    expected["fixtures"]["sharded"] = by_split["test"] + by_split["train"]
    expected["fixtures"]["sharded@train"] = by_split["train"]
    expected["fixtures"]["sharded@test"] = by_split["test"]

    # Image files for the path fixtures.
    files = {"images/a.png": "a", "images/d.jpg": "d", "images/sub/c.png": "c"}
    for rel, n in files.items():
        full = os.path.join(HERE, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(IMAGES[n][0])

    # (c) pyarrow, images as list<string> relative paths, float answers, integer ids.
    rows_c = [
        (10, "<image>Area?", 2.5, ["images/a.png"], ["a"], "2.5"),
        (11, "<image><image>Sum?", 3.0, ["images/d.jpg", "images/sub/c.png"], ["d", "c"], "3"),
        (12, "Negative?", -1.25, [], [], "-1.25"),
    ]
    write("paths.parquet", pa.table({
        "id": pa.array([r[0] for r in rows_c], pa.int64()),
        "problem": pa.array([r[1] for r in rows_c], pa.string()),
        "answer": pa.array([r[2] for r in rows_c], pa.float64()),
        "images": pa.array([r[3] for r in rows_c], pa.list_(pa.string())),
        "extra": pa.array([{"k": 1}] * len(rows_c)),
    }))
    expected["fixtures"]["paths.parquet"] = [
        expected_row(i, str(r[0]), r[1], r[5], r[4], []) for i, r in enumerate(rows_c)]

    # (d) JSON lines with path images (list, single string, {"path": ...}), a blank line.
    lines = [
        {"id": "j0", "problem": "<image>Which?", "answer": 7, "images": ["images/a.png"],
         "new_questions": ["Which one?"]},
        {"id": "j1", "problem": "<image>Single path?", "answer": "B", "images": "images/d.jpg",
         "new_questions": "['Single?', \"It's one\"]", "meta": {"x": 1}},
        None,
        {"problem": "<image>Object path?", "answer": "C",
         "images": [{"bytes": None, "path": "images/sub/c.png"}]},
        {"id": "j3", "problem": "No image", "answer": "D", "images": None, "new_questions": None},
    ]
    with open(os.path.join(HERE, "paths.jsonl"), "w") as f:
        for line in lines:
            f.write("\n" if line is None else json.dumps(line) + "\n")
    expected["fixtures"]["paths.jsonl"] = [
        expected_row(0, "j0", "<image>Which?", "7", ["a"], ["Which one?"]),
        expected_row(1, "j1", "<image>Single path?", "B", ["d"], ["Single?", "It's one"]),
        expected_row(2, "paths:2", "<image>Object path?", "C", ["c"], []),
        expected_row(3, "j3", "No image", "D", [], []),
    ]

    # Other image column types: list<binary>, a single struct, binary, large_list (and a
    # dictionary-encoded answer column in binary.parquet).
    one = [("<image>One?", "1", "a"), ("<image>Two?", "2", "d")]
    types = {
        "list_binary": pa.array([[IMAGES[r[2]][0]] for r in one], pa.list_(pa.binary())),
        "struct": pa.array([image_cells([r[2]])[0] for r in one], IMAGE_STRUCT),
        "binary": pa.array([IMAGES[r[2]][0] for r in one], pa.binary()),
        "large_list": pa.array(
            [image_cells([r[2]]) for r in one],
            pa.large_list(pa.struct([("bytes", pa.large_binary()), ("path", pa.large_string())]))),
    }
    for name, col in types.items():
        answers = pa.array([r[1] for r in one], pa.string())
        if name == "binary":
            answers = answers.dictionary_encode()  # as pandas categoricals are written
        write(f"image_types/{name}.parquet", pa.table({
            "problem": pa.array([r[0] for r in one], pa.large_string()),
            "answer": answers,
            "images": col,
        }))
        expected["fixtures"][f"image_types/{name}.parquet"] = [
            expected_row(i, f"{name}:{i}", r[0], r[1], [r[2]], []) for i, r in enumerate(one)]

    # (e) Bad rows: which (row, column) each one is reported at.
    truncated_png = PNG_A[: len(PNG_A) // 2]
    bad_rows = [
        ("<image>Good?", "yes", [PNG_A], "['Good?']", None),
        ("<image>Empty answer?", "", [PNG_A], "[]", "answer"),
        ("<image><image>Corrupt second image?", "x", [PNG_A, b"not an image at all"], "[]",
         "images"),
        ("<image>Bad rewrites?", "x", [PNG_A], "['unterminated", "new_questions"),
        ("<image><image>Two placeholders, one image?", "x", [PNG_A], "[]", "images"),
        ("<image>Truncated PNG?", "x", [truncated_png], "[]", "images"),
        ("Good text row", "ok", [], "['Fine?']", None),
    ]
    write("bad_rows.parquet", pa.table({
        "problem": pa.array([r[0] for r in bad_rows], pa.string()),
        "answer": pa.array([r[1] for r in bad_rows], pa.string()),
        "images": pa.array([[{"bytes": b, "path": None} for b in r[2]] for r in bad_rows],
                           pa.list_(IMAGE_STRUCT)),
        "new_questions": pa.array([r[3] for r in bad_rows], pa.string()),
    }))
    expected["bad_rows"] = {
        "file": "bad_rows.parquet",
        "bad": [{"row": i, "column": r[4]} for i, r in enumerate(bad_rows) if r[4]],
        "good": [i for i, r in enumerate(bad_rows) if not r[4]],
    }

    # A file without the prompt column.
    write("missing_column.parquet", pa.table({
        "question": pa.array(["What?"], pa.string()),
        "answer": pa.array(["x"], pa.string()),
        "images": pa.array([[]], pa.list_(IMAGE_STRUCT)),
    }))
    expected["missing_column"] = {
        "file": "missing_column.parquet",
        "column": "problem",
        "present": ["question", "answer", "images"],
        "key": "data.prompt_key",
    }

    # Python's repr of string lists, for `py_repr_list` / `parse_py_list`.
    lists = [
        [],
        ["plain"],
        ["it's", 'say "hi"', "both ' and \"", "back\\slash"],
        ["tab\t", "nl\n", "cr\r", "bell\x07", "del\x7f", "nul\x00"],
        ["caf\u00e9", "\u00b2\u03c0\u4e2d\U0001f600", "nbsp\u00a0", "shy\u00ad"],
        ["zw\u200b", "ls\u2028", "bom\ufeff", "pua\ue000", "c1\x85", "ideo\u3000"],
        ["", " ", "'", '"', "''", "\\'"],
    ]
    expected["py_repr"] = [{"items": items, "repr": repr(items)} for items in lists]

    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
