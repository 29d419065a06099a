#!/usr/bin/env python3
"""Writes tokenizer_corpus.txt: the corpus make_fixtures.py trains the fixture tokenizer on.

    python3 tests/golden/policy/make_tokenizer_corpus.py

One corpus line per file line (no line contains a newline). operators/tests/factory.rs trains
shareflow's BPE (policy::factory::train_tokenizer) on it with the fixture's vocabulary size and
checks that the result equals tiny-qwen2_5_vl/tokenizer.json, which the HF `tokenizers` trainer
made from the same lines.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import make_fixtures  # noqa: E402

lines = make_fixtures.build_corpus()
assert all("\n" not in line for line in lines)
with open(os.path.join(HERE, "tokenizer_corpus.txt"), "w", encoding="utf-8") as f:
    for line in lines:
        f.write(line + "\n")
print(f"{len(lines)} lines, BPE vocab size {make_fixtures.BPE_VOCAB_SIZE}")
