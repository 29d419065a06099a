#!/usr/bin/env python3
"""The table of scripts/adaptive_share.sh: per run, steps, responses sampled in all (the sum of
`rollout/responses`; every sampled response is trained on in these graphs), the fraction of
questions expanded to all m variants, eval accuracy before and after, and wall time.

    python3 scripts/adaptive_share.py RUNS_DIR [M N BATCH]

M, N, BATCH default to the default run's 2, 6 and 4: a step samples BATCH * N responses for the
first variants, plus N * (M - 1) for each expanded question.
"""

import json
import os
import sys


def main(root, m=2, n=6, batch=4):
    print("| run | steps | responses sampled | expanded questions | eval before | eval after | change | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        summ = os.path.join(d, "summary.json")
        if not os.path.exists(summ):
            continue
        s = json.load(open(summ))
        rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
        responses = sum(r["rollout/responses"] for r in rows)
        first = batch * n * len(rows)
        expanded = (responses - first) / (n * (m - 1) * batch * len(rows)) if m > 1 else 0.0
        before, after = s["eval_accuracy_before"], s["eval_accuracy_after"]
        print(f"| {name} | {len(rows)} | {responses} | {expanded:.2f} | {before:.3f} | {after:.3f} "
              f"| {after - before:+.3f} | {s['wall_seconds']:.0f} |")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0] if args else "runs/adaptive", *(int(a) for a in args[1:4]))
