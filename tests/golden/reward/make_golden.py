#!/usr/bin/env python3
"""Golden scores for `shareflow score` from the R1-ShareVL release's own reward functions.

Loads `examples/score_function/math.py` and `examples/score_function/r1v.py` from a checkout of
github.com/HJYao00/R1-ShareVL (commit da7388e659fce3a3eeb16a47d543c101fad692fe) by path and
scores every (response, ground_truth) pair of ../grader/golden.jsonl plus format edge cases below
with both rules. Writes `input.jsonl` (the `shareflow score` input) and `expected_math.jsonl` /
`expected_r1v.jsonl` (one line per input line: overall, format, accuracy).

    pip install mathruler==0.1.0 sympy pylatexenc
    python3 tests/golden/reward/make_golden.py --reference-repo /path/to/R1-ShareVL
"""
import argparse
import importlib.util
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent

FORMAT_CASES = [
    ("<think>a</think> so \\boxed{2}", "2"),
    ("<think>a</think>\\boxed{2}", "2"),
    ("< think >a< /think > \\boxed{2}", "2"),
    ("<think>a</ think>\\boxed{2}", "2"),
    (" <think>a</think>\\boxed{2}", "2"),
    ("x<think>a</think>\\boxed{2}", "2"),
    ("<think>a\nb</think>\n\\boxed{2}\ntrailing", "2"),
    ("<think>a</think>no box", "2"),
    ("\\boxed{2}<think>a</think>", "2"),
    ("<think>a</think>\\boxed{2", "2"),
    ("<think></think>\\boxed{}", ""),
    ("<think>a</think><answer>2</answer>", "2"),
    ("<think>a</think>  \n <answer>2</answer>", "2"),
    ("<think>a</think> x <answer>2</answer>", "2"),
    ("<think>a</think><answer>2</answer> ", "2"),
    ("<think>a</think><answer> 2 </answer>", "2"),
    ("<think>a</think><answer>2\n</answer>", "2"),
    ("<think>a</think><answer>1</answer><answer>2</answer>", "2"),
    ("<think>x</think></think><answer>3/4</answer>", "\\frac{3}{4}"),
    ("no tags at all 2", "2"),
    ("2", "2"),
    ("<think>a</think>\u2003<answer>2</answer>", "2"),
    ("<think>a</think>\x1c<answer>2</answer>", "2"),
    ("<think>1 / 2</think>\\boxed{1 / 2}", "\\frac{1}{2}"),
    ("<think>a</think>\\boxed{x < 3}", "x<3"),
]


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference-repo", required=True)
    args = ap.parse_args()
    repo = pathlib.Path(args.reference_repo)
    math = load(repo / "examples/score_function/math.py", "ref_math")
    r1v = load(repo / "examples/score_function/r1v.py", "ref_r1v")
    cases = []
    for line in (HERE.parent / "grader" / "golden.jsonl").read_text().splitlines():
        c = json.loads(line)
        cases.append((c["response"], c["ground_truth"]))
    cases.extend(FORMAT_CASES)
    with open(HERE / "input.jsonl", "w") as f:
        for resp, gt in cases:
            f.write(json.dumps({"response": resp, "ground_truth": gt}) + "\n")
    for rule, mod in (("math", math), ("r1v", r1v)):
        with open(HERE / f"expected_{rule}.jsonl", "w") as f:
            for resp, gt in cases:
                s = mod.compute_score(resp, gt)
                f.write(json.dumps({k: float(s[k]) for k in ("overall", "format", "accuracy")}) + "\n")
    print(f"{len(cases)} cases")


if __name__ == "__main__":
    main()
