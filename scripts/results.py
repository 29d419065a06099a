#!/usr/bin/env python3
"""Aggregates shareflow training runs into the tables of RESULTS.md.

    python3 scripts/results.py RUNS_DIR

Reads RUNS_DIR/*/summary.json and metrics.jsonl. Run names are `<config>-s<seed>`; rows are
grouped by config, with mean and per-seed values of eval accuracy before/after, the final
train reward (mean of the last 10 steps) and the fraction of questions whose rewards all tie
(first 10 steps vs last 10 steps).
"""

import json
import os
import statistics
import sys
from collections import defaultdict


def main(root):
    rows = defaultdict(list)
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        summ = os.path.join(d, "summary.json")
        if not os.path.exists(summ):
            continue
        cfg, _, seed = name.rpartition("-s")
        s = json.load(open(summ))
        m = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
        tied = [x["advantage/tied_fraction"] for x in m]
        rows[cfg].append({
            "seed": seed,
            "before": s["eval_accuracy_before"],
            "after": s["eval_accuracy_after"],
            "reward_last10": statistics.mean(x["reward/overall"] for x in m[-10:]),
            "acc_last10": statistics.mean(x["reward/accuracy"] for x in m[-10:]),
            "tied_first10": statistics.mean(tied[:10]),
            "tied_last10": statistics.mean(tied[-10:]),
            "wall": s["wall_seconds"],
            "responses": sum(1 for _ in m) and m[0].get("throughput/generated_tokens"),
        })
    print("| config | seeds | eval acc before | eval acc after | change | train acc, last 10 steps | tied fraction, first 10 -> last 10 steps | wall s/run |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for cfg, rs in rows.items():
        mean = lambda k: statistics.mean(r[k] for r in rs)
        per = lambda k: " / ".join(f"{r[k]:.3f}" for r in rs)
        print(f"| {cfg} | {len(rs)} | {mean('before'):.3f} ({per('before')}) | {mean('after'):.3f} ({per('after')}) "
              f"| {mean('after') - mean('before'):+.3f} | {mean('acc_last10'):.3f} | {mean('tied_first10'):.2f} -> {mean('tied_last10'):.2f} | {mean('wall'):.0f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/results")
