#!/usr/bin/env python3
"""Generate golden cases for the Rust port of mathruler.grader.

Run (from the repository root):
    pip install mathruler==0.1.0 sympy==1.14.0 pylatexenc==2.11 tqdm
    python3 tests/golden/grader/make_golden.py

Versions used to produce the committed golden.jsonl:
    python 3.11.7, mathruler 0.1.0, sympy 1.14.0, pylatexenc 2.11, tqdm 4.70.1
    (mathruler.grader imports tqdm but does not declare it as a dependency)

Each output line is {"response", "ground_truth", "extracted", "accuracy"} where
extracted = mathruler.grader.extract_boxed_content(response) and
accuracy = int(mathruler.grader.grade_answer(extracted, ground_truth)).
The case list is deterministic (fixed seed); do not reorder casually.
"""

import json
import os
import random

from mathruler.grader import extract_boxed_content, grade_answer

SEED = 20240607
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden.jsonl")

# (ground_truth, [equivalent answers], [wrong / near-miss answers])
PAIRS = [
    ("\\frac{1}{2}", ["\\frac12", "\\dfrac{1}{2}", "1/2", "0.5", ".5", "\\tfrac{1}{2}", "\\frac{2}{4}"], ["\\frac{1}{3}", "2/4", "0.51", "-\\frac{1}{2}"]),
    ("\\frac{3}{4}", ["0.75", "3/4", "\\dfrac{3}{4}", "\\frac{6}{8}"], ["6/8", "\\frac{4}{3}", "0.7"]),
    ("-\\frac{2}{3}", ["-2/3", "\\frac{-2}{3}", "-\\dfrac{2}{3}", "\\frac{2}{-3}"], ["\\frac{2}{3}", "-0.67", "-0.666"]),
    ("\\frac{\\sqrt{3}}{2}", ["\\frac{1}{2}\\sqrt{3}", "\\sqrt{3}/2", "\\frac{\\sqrt3}{2}", "\\sqrt{\\frac{3}{4}}"], ["\\frac{\\sqrt{2}}{2}", "0.866", "\\sqrt{3}"]),
    ("2\\sqrt{2}", ["\\sqrt{8}", "2\\sqrt2", "\\sqrt{2}\\cdot 2", "2 \\sqrt{2}"], ["\\sqrt{2}", "4", "2.83"]),
    ("\\sqrt{5}", ["\\sqrt5", "5^{1/2}", "\\sqrt{ 5 }"], ["5", "\\sqrt{6}", "2.236"]),
    ("3\\pi", ["3 \\pi", "\\pi \\cdot 3", "3\\times\\pi", "\\frac{6\\pi}{2}"], ["3", "\\pi", "9.42", "3\\pi^2"]),
    ("\\frac{\\pi}{4}", ["\\pi/4", "\\frac{1}{4}\\pi", "0.25\\pi"], ["\\frac{\\pi}{2}", "45", "0.785"]),
    ("5", ["5", "5.0", "05", "\\text{5}", "{5}", "5.00", "x = 5", "5\\text{ cm}", "5^\\circ", "5^{\\circ}", "\\$5", "5 \\%"], ["6", "-5", "4.9", "\\frac{10}{2}", "5.1", "25/5", "\\sqrt{25}"]),
    ("12", ["12", "12.0", "\\mathbf{12}", "12 \\text{ inches}", "12 inches", "k=12"], ["13", "11.99", "\\frac{24}{2}", "2\\cdot 6"]),
    ("-7", ["-7", "- 7", "-7.0", "\\left(-7\\right)", "(-7)"], ["7", "-8", "-\\frac{14}{2}"]),
    ("0", ["0", "0.0", "-0", "+0"], ["1", "0.01", "O"]),
    ("1000", ["1,000", "1000", "1{,}000", "1000.0", "1,\\!000", "10^3"], ["100", "1,001", "999"]),
    ("1234567", ["1,234,567", "1234567", "1 234 567"], ["1,234,568", "123456"]),
    ("25\\%", ["25", "25\\%", "25%", "0.25"], ["26\\%", "2.5"]),
    ("45^\\circ", ["45", "45^{\\circ}", "45^\\circ", "45 degrees", "45\\text{ degrees}"], ["46", "135^\\circ", "\\frac{\\pi}{4}"]),
    ("30", ["30^\\circ", "30 ^\\circ", "30 \\text{ cm}", "30\\text{ meters}", "30 seconds", "30 \\mbox{ cm}", "\\boxed{30}"], ["31", "30.5"]),
    ("10\\text{ cm}", ["10", "10 cm", "10\\text{ cm}", "10 centimeters"], ["100", "1 cm"]),
    ("\\text{(A)}", ["A", "(A)", "\\text{(A)}", "\\text{A}", "a", "\\textbf{(A)}"], ["B", "(B)", "\\text{(C)}", "AB"]),
    ("B", ["B", "(B)", "b", "\\text{B}", "\\mathrm{B}", "B."], ["A", "C", "(D)", "BC"]),
    ("C", ["C", "\\text{C}", "(C)"], ["D", "E", "c)"]),
    ("(1,2)", ["(1,2)", "(1, 2)", "\\left(1,2\\right)", "( 1 , 2 )", "(1,\\frac{4}{2})", "(\\frac{2}{2},2)"], ["(2,1)", "[1,2]", "(1,2,3)", "1,2", "(1,3)"]),
    ("(-\\infty, 3]", ["(-\\infty,3]", "(-\\infty, 3]", "\\left(-\\infty, 3\\right]"], ["(-\\infty,3)", "[-\\infty,3]", "(3,\\infty)", "x \\le 3"]),
    ("[2,5)", ["[2,5)", "[2, 5)", "\\left[2,5\\right)"], ["(2,5)", "[2,5]", "[2,6)"]),
    ("(3,-4)", ["(3,-4)", "(3, -4)", "(3,- 4)", "(\\frac{6}{2},-4)"], ["(-4,3)", "(3,4)"]),
    ("(0, \\frac{1}{2})", ["(0,\\frac12)", "(0, 0.5)", "(0,1/2)"], ["(0,2)", "(\\frac{1}{2},0)"]),
    ("2x+1", ["2x+1", "1+2x", "2 x + 1", "x+x+1", "2\\cdot x+1", "(2x+1)"], ["2x-1", "2x", "x+1", "2y+1"]),
    ("x^2-1", ["x^2-1", "(x-1)(x+1)", "(x+1)(x-1)", "-1+x^2", "x^{2}-1", "x\\cdot x-1"], ["x^2+1", "(x-1)^2", "x^2"]),
    ("(x+1)^2", ["x^2+2x+1", "(1+x)^2", "(x+1)(x+1)", "x^{2}+2x+1"], ["x^2+1", "(x+1)^3"]),
    ("\\frac{x}{2}", ["x/2", "\\frac{1}{2}x", "0.5x", "\\frac12 x"], ["2x", "\\frac{2}{x}"]),
    ("3x^2y", ["3yx^2", "3x^2 y", "x^2\\cdot 3y"], ["3xy^2", "3x^2"]),
    ("\\frac{1}{x+1}", ["1/(x+1)", "\\frac{1}{1+x}", "(x+1)^{-1}"], ["\\frac{1}{x-1}", "x+1"]),
    ("a+b", ["b+a", "a + b"], ["a-b", "ab"]),
    ("2\\sqrt{x}", ["\\sqrt{4x}", "2 \\sqrt{x}", "\\sqrt{x}\\cdot 2"], ["\\sqrt{2x}", "2x"]),
    ("\\frac{5}{3}", ["1\\frac{2}{3}", "5/3", "\\frac{10}{6}", "1 \\frac{2}{3}"], ["\\frac{3}{5}", "1.67", "10/6", "1.666"]),
    ("7\\frac{1}{4}", ["7 \\frac14", "\\frac{29}{4}", "7.25", "7\\frac{1}{4}"], ["7\\frac{1}{5}", "7"]),
    ("3.14", ["3.14", "3.140", "\\frac{314}{100}", "3.14\\text{ m}"], ["\\pi", "3.1", "3.141"]),
    ("0.001", ["0.001", ".001", "\\frac{1}{1000}", "10^{-3}", "1 \\times 10^{-3}"], ["0.01", "0.0010001"]),
    ("2.5", ["2.5", "\\frac{5}{2}", "5/2", "2\\frac{1}{2}", "2 1/2"], ["2.4", "\\frac{2}{5}", "25"]),
    ("-0.25", ["-0.25", "-\\frac{1}{4}", "-1/4", "-.25"], ["0.25", "-0.2"]),
    ("\\infty", ["\\infty", "+\\infty", "inf"], ["-\\infty", "\\text{infinity}"]),
    ("\\{1,2,3\\}", ["\\{1,2,3\\}", "1,2,3", "\\{1, 2, 3\\}", "\\{3,2,1\\}"], ["\\{1,2\\}", "\\{1,2,4\\}"]),
    ("1,2", ["1,2", "1, 2", "1 \\text{ and } 2", "1 or 2", "2,1"], ["1", "1,3"]),
    ("x=3", ["3", "x=3", "x = 3"], ["x=4", "y=3"]),
    ("y=2x+3", ["y=2x+3", "y = 3+2x", "2x+3"], ["y=2x-3", "y=3x+2"]),
    ("\\text{Monday}", ["Monday", "\\text{monday}", "\\text{ Monday}", "\\textbf{Monday}"], ["Tuesday", "\\text{Sunday}"]),
    ("\\text{yes}", ["yes", "Yes", "\\text{Yes}", "YES"], ["no", "\\text{No}"]),
    ("1.5 \\text{ million}", ["1500000", "1.5 million", "1,500,000"], ["1.5", "15 million"]),
    ("2^{10}", ["1024", "2^{10}", "2^10"], ["1023", "2^{11}", "20"]),
    ("\\sqrt{2}+1", ["1+\\sqrt{2}", "1 + \\sqrt2", "\\sqrt2+1"], ["\\sqrt{3}+1", "2.414"]),
    ("\\frac{1+\\sqrt{5}}{2}", ["\\frac{\\sqrt{5}+1}{2}", "(1+\\sqrt{5})/2", "\\frac{1}{2}+\\frac{\\sqrt{5}}{2}"], ["\\frac{1-\\sqrt{5}}{2}", "1.618"]),
    ("\\pi^2", ["\\pi^{2}", "\\pi\\cdot\\pi", "\\pi \\times \\pi"], ["2\\pi", "9.87"]),
    ("e^2", ["e^{2}", "e\\cdot e"], ["2e", "7.389"]),
    ("4!", ["24", "4!", "4\\cdot 3\\cdot 2"], ["4", "25"]),
    ("\\binom{5}{2}", ["10", "\\binom{5}{2}", "\\dbinom{5}{2}"], ["5", "20"]),
    ("6", ["3!", "6", "\\frac{12}{2}", "2\\cdot3", "\\sqrt{36}"], ["7", "5.99"]),
    ("\\frac{7}{2}", ["3.5", "7/2", "\\frac{14}{4}", "3\\frac12"], ["14/4", "3.4"]),
    ("\\$ 45.50", ["45.50", "\\$45.50", "45.5", "\\$45.5"], ["45", "46.50"]),
    ("\\frac{a}{b}", ["a/b", "\\frac{a}{b}", "\\dfrac{a}{b}"], ["b/a", "\\frac{b}{a}"]),
    ("x \\in [1, 3]", ["[1,3]", "x \\in [1,3]", "1 \\le x \\le 3"], ["(1,3)", "[1,4]"]),
    ("10^{-2}", ["0.01", "\\frac{1}{100}", "1/100", "10^{-2}"], ["0.1", "10^{-3}"]),
    ("\\dfrac{9}{4}", ["\\frac{9}{4}", "2.25", "9/4", "2\\frac{1}{4}"], ["\\frac{4}{9}", "2.2"]),
    ("\\left( \\frac{1}{2}, -\\frac{3}{2} \\right)", ["(\\frac12,-\\frac32)", "(0.5,-1.5)", "\\left(\\frac{1}{2},-\\frac{3}{2}\\right)"], ["(\\frac12,\\frac32)", "(-1.5,0.5)"]),
    ("8\\sqrt{3}", ["8 \\sqrt 3", "\\sqrt{192}", "8\\sqrt3"], ["8\\sqrt{2}", "13.86"]),
    ("\\frac{3\\sqrt{2}}{4}", ["\\frac{3}{4}\\sqrt{2}", "\\frac{3}{2\\sqrt{2}}", "0.75\\sqrt{2}"], ["\\frac{3\\sqrt{2}}{2}", "1.06"]),
    ("-\\sqrt{3}", ["-\\sqrt3", "-\\sqrt{3}", "-1\\cdot\\sqrt{3}"], ["\\sqrt{3}", "-3"]),
    ("100", ["100", "100.", "100.00", "10^2", "1\\times 10^2", "10 \\times 10"], ["1000", "99", "100.5"]),
    ("64", ["64", "2^6", "4^3", "8^2", "8 \\cdot 8"], ["63", "32"]),
]

TEMPLATES = [
    "The answer is $\\boxed{%s}$.",
    "\\boxed{%s}",
    "So the final answer is \\boxed{%s}",
    "Let's compute step by step. First 2+2=4. Then we get $$\\boxed{%s}$$ as required.",
    "We try \\boxed{0} first, but actually the answer is \\boxed{%s}.",
    "Thus, $x = \\boxed{%s}$",
    "<think>hmm {nested} thoughts</think> Answer: \\boxed{ %s }",
    "Final Answer: The final answer is $\\boxed{%s}$. I hope it is correct.",
]

SPECIAL_RESPONSES = [
    ("The answer is 5.", "5"),
    ("no box here, answer 12", "12"),
    ("\\boxed{}", "5"),
    ("\\boxed{ }", "0"),
    ("\\boxed{\\frac{1}{2}", "\\frac{1}{2}"),
    ("\\boxed {3}", "3"),
    ("\\boxed{{3}}", "3"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("\\boxed{\\left\\{ 1,2 \\right\\}}", "\\{1,2\\}"),
    ("\\boxed{a{b{c}d}e}", "abcde"),
    ("\\boxed{{{{{{{{{{7}}}}}}}}}}", "7"),
    ("\\boxed{2} and also \\boxed{3}", "3"),
    ("\\boxed{2} and also \\boxed{3}", "2"),
    ("$\\boxed{\\text{(B)}}$", "B"),
    ("\\fbox{4}", "4"),
    ("None", "None"),
    ("\\boxed{None}", "None"),
    ("\\boxed{\\frac{1}{0}}", "\\frac{1}{0}"),
    ("\\boxed{1/0}", "1"),
    ("\\boxed{x^{1000}}", "x^{1000}"),
    ("\\boxed{2^{100}}", "2^{100}"),
    ("\\boxed{x^2^3}", "x^6"),
    ("\\boxed{abc}", "abc"),
    ("\\boxed{xyz}", "zyx"),
    ("\\boxed{\\sqrt{-4}}", "2i"),
    ("\\boxed{\\frac{\\frac{1}{2}}{\\frac{3}{4}}}", "\\frac{2}{3}"),
    ("\\boxed{((1+2)}", "3"),
    ("\\boxed{)(}", "0"),
    ("\\boxed{\\sin(x)}", "\\sin x"),
    ("\\boxed{\\ln 2}", "\\ln 2"),
    ("\\boxed{\\log_2 8}", "3"),
    ("\\boxed{1\\\\2}", "12"),
    ("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\boxed{3 \\text{ apples}}", "3"),
    ("\\boxed{\\text{3 apples}}", "3"),
    ("\\boxed{5 \\text{ and } 6}", "5,6"),
    ("\\boxed{x \\ge 2}", "x \\geq 2"),
    ("\\boxed{\\emptyset}", "\\varnothing"),
    ("\\boxed{10^{10}}", "10000000000"),
    ("\\boxed{1e3}", "1000"),
    ("\\boxed{0.999999999}", "1"),
    ("\\boxed{0.3333}", "\\frac{1}{3}"),
    ("\\boxed{\\frac{1}{3}}", "0.3333333333"),
    ("\\boxed{9.0}", "9"),
    ("\\boxed{-0.0}", "0"),
    ("\\boxed{3 + 2i}", "3+2i"),
    ("\\boxed{2i + 3}", "3+2i"),
    ("\\boxed{\\pm 2}", "\\pm 2"),
    ("\\boxed{2, -2}", "\\pm 2"),
    ("\\boxed{\\frac12+\\frac13}", "\\frac{5}{6}"),
    ("\\boxed{\\%}", "0"),
    ("\\boxed{$5$}", "5"),
    ("\\boxed{\\mathrm{(D)}}", "D"),
    ("\\boxed{\\textbf{(E) } 42}", "42"),
    ("\\boxed{42 \\textbf{(E)}}", "E"),
    ("\\boxed{7 \\frac{3}{4}}", "7.75"),
    ("\\boxed{\\frac{\\pi}{3}\\text{ radians}}", "\\frac{\\pi}{3}"),
    ("\\boxed{60^\\circ}", "\\frac{\\pi}{3}"),
    ("\\boxed{x y}", "xy"),
    ("\\boxed{2(x+1)}", "2x+2"),
    ("\\boxed{x(x+1)}", "x^2+x"),
    ("\\boxed{\\left| -3 \\right|}", "3"),
    ("\\boxed{|-3|}", "3"),
    ("\\boxed{5!}", "120"),
    ("\\boxed{\\frac{n(n+1)}{2}}", "\\frac{n^2+n}{2}"),
    ("\\boxed{1 \\frac{1}{2}}", "1.5"),
    ("\\boxed{- 1 \\frac{1}{2}}", "-1.5"),
    ("\\boxed{\\frac{-1}{2}}", "-0.5"),
    ("\\boxed{0.5}", "\\frac{1}{2}"),
    ("\\boxed{0.50}", "\\frac{1}{2}"),
    ("\\boxed{\\frac{2}{4}}", "0.5"),
    ("\\boxed{1/3}", "2/6"),
    ("\\boxed{3/9}", "1/3"),
    ("\\boxed{\\sqrt{2}/2}", "\\frac{1}{\\sqrt{2}}"),
    ("\\boxed{2^{-1}}", "\\frac12"),
    ("\\boxed{4^{0.5}}", "2"),
    ("\\boxed{\\sqrt[3]{8}}", "2"),
    ("\\boxed{2 \\times 10^{3}}", "2000"),
    ("\\boxed{2,000}", "2000"),
    ("\\boxed{2,00}", "200"),
    ("\\boxed{12,345.6}", "12345.6"),
    ("\\boxed{\\text{even}}", "\\text{even}"),
    ("\\boxed{\\text{odd}}", "\\text{even}"),
    ("\\boxed{\\textbf{True}}", "True"),
    ("\\boxed{}}}", "0"),
    ("}}}\\boxed{{", "0"),
    ("\\boxed{\\boxed{5}}", "5"),
    ("\\boxed{x^2 + y^2 = 1}", "x^2+y^2=1"),
    ("\\boxed{y^2 + x^2 = 1}", "x^2+y^2=1"),
    ("\\boxed{(x-2)^2}", "x^2-4x+4"),
    ("\\boxed{x^2-4x+4}", "(x-2)^2"),
    ("\\boxed{(a+b)^2}", "a^2+2ab+b^2"),
    ("\\boxed{\\frac{x^2-1}{x-1}}", "x+1"),
    ("\\boxed{\\sqrt{x^2}}", "x"),
    ("\\boxed{\\frac{1}{\\sqrt{3}}}", "\\frac{\\sqrt{3}}{3}"),
    ("\\boxed{\\sqrt{12}}", "2\\sqrt{3}"),
    ("\\boxed{\\sqrt{50}}", "5\\sqrt{2}"),
    ("\\boxed{7.0710678}", "5\\sqrt{2}"),
    ("\\boxed{1.4142135623730951}", "\\sqrt{2}"),
    ("\\boxed{6.283185307179586}", "2\\pi"),
    ("\\boxed{0.1+0.2}", "0.3"),
    ("\\boxed{\\frac{1}{10}+\\frac{2}{10}}", "0.3"),
]


def wrap(rng, ans):
    t = rng.choice(TEMPLATES)
    return t % ans


def main():
    rng = random.Random(SEED)
    cases = []
    for gt, goods, bads in PAIRS:
        for a in goods:
            cases.append((wrap(rng, a), gt))
        for a in bads:
            cases.append((wrap(rng, a), gt))
        # swapped roles: the ground truth given as response to an equivalent answer
        cases.append((wrap(rng, gt), rng.choice(goods)))
    cases.extend(SPECIAL_RESPONSES)
    # random arithmetic near-misses
    for _ in range(60):
        p, q = rng.randint(1, 30), rng.randint(1, 30)
        kind = rng.randint(0, 5)
        if kind == 0:
            gt, ans = f"\\frac{{{p}}}{{{q}}}", f"{p}/{q}"
        elif kind == 1:
            gt, ans = str(p * q), f"{p}\\cdot {q}" if rng.random() < 0.5 else str(p * q + rng.choice([0, 1, -1]))
        elif kind == 2:
            gt, ans = f"{p}\\sqrt{{{q}}}", f"\\sqrt{{{p * p * q}}}" if rng.random() < 0.5 else f"{p}\\sqrt{{{q + 1}}}"
        elif kind == 3:
            gt, ans = f"({p},{q})", f"({p}, {q})" if rng.random() < 0.5 else f"({q},{p})"
        elif kind == 4:
            gt, ans = f"{p}x+{q}", f"{q}+{p}x" if rng.random() < 0.5 else f"{q}x+{p}"
        else:
            gt, ans = f"{p / 4}", f"\\frac{{{p}}}{{4}}" if rng.random() < 0.5 else f"{p}/{4 + rng.randint(0, 1)}"
        cases.append((wrap(rng, ans), gt))
    with open(OUT, "w", encoding="utf-8") as f:
        for response, gt in cases:
            extracted = extract_boxed_content(response)
            acc = int(bool(grade_answer(extracted, gt)))
            f.write(json.dumps({"response": response, "ground_truth": gt, "extracted": extracted, "accuracy": acc}, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
