//! Answer grader ported from `mathruler.grader` (mathruler 0.1.0,
//! <https://pypi.org/project/mathruler/>), itself derived from the PRM800K grader.
//!
//! [`grade_answer`] accepts a given answer when
//! 1. the MATH-dataset normalisation (`math_normalize.normalize_answer`) of both
//!    strings is identical, or
//! 2. the grader normalisation (`_normalize`: units, `\text{}`, latex-to-text,
//!    lower-casing, ...) is identical, or
//! 3. element-wise (tuples / intervals are split), fractions match exactly,
//!    integer ground truths need an integer answer, and otherwise the difference
//!    `(truth)-(given)` is zero under a sympy-like evaluation ([`expr`]).
//!
//! [`extract_boxed_content`] returns the contents of the last `\boxed{...}` or the
//! string `"None"` when there is no complete box, exactly like mathruler.

mod eval;
mod expr;
mod latex;
mod latex_symbols;
mod normalize;
mod tokens;

use normalize::{normalize, normalize_answer, str_is_int, strip_properly_formatted_commas};

const TUPLE_CHARS: [char; 4] = ['(', ')', '[', ']'];

/// Contents of the last `\boxed{...}` in `text` (trimmed), or `"None"`.
pub fn extract_boxed_content(text: &str) -> String {
    const OPEN: &str = "\\boxed{";
    let Some(start) = text.rfind(OPEN) else {
        return "None".to_string();
    };
    let content = &text[start + OPEN.len()..];
    let mut depth: i64 = 0;
    for (i, ch) in content.char_indices() {
        if ch == '{' {
            depth += 1;
        } else if ch == '}' {
            depth -= 1;
        }
        if depth == -1 {
            return content[..i].trim().to_string();
        }
    }
    "None".to_string()
}

/// Whether `given_answer` is equivalent to `ground_truth` (mathruler semantics).
pub fn grade_answer(given_answer: &str, ground_truth: &str) -> bool {
    if normalize_answer(ground_truth) == normalize_answer(given_answer) {
        return true;
    }
    let truth = normalize(ground_truth);
    let given = normalize(given_answer);
    if truth == given {
        return true;
    }
    if given.is_empty() {
        return false;
    }
    let truth_elems = split_tuple(&truth);
    let given_elems = split_tuple(&given);
    if truth_elems.len() > 1
        && (truth.chars().next() != given.chars().next()
            || truth.chars().last() != given.chars().last())
    {
        return false;
    }
    if truth_elems.len() != given_elems.len() {
        return false;
    }
    truth_elems.iter().zip(&given_elems).all(|(t, g)| {
        if is_frac(t) && is_frac(g) {
            // Unreduced fractions must match literally.
            t == g
        } else if str_is_int(t) != str_is_int(g) {
            // Integer ground truths require an integer answer (and vice versa).
            false
        } else {
            are_equal_under_sympy(t, g)
        }
    })
}

/// `are_equal_under_sympy`: evaluate `(truth)-(given)` when it is considered safe.
fn are_equal_under_sympy(truth: &str, given: &str) -> bool {
    let expr = format!("({truth})-({given})");
    should_allow_eval(&expr) && expr::difference_is_zero(&expr)
}

/// Python's `count_unknown_letters_in_expr`.
fn count_unknown_letters(expr: &str) -> usize {
    let stripped = expr.replace("sqrt", "").replace("frac", "");
    let mut letters: Vec<char> = stripped.chars().filter(|c| c.is_alphabetic()).collect();
    letters.sort_unstable();
    letters.dedup();
    letters.len()
}

/// Python's `should_allow_eval` (letters, `^{`, `^(`, and the two bad regexes).
fn should_allow_eval(expr: &str) -> bool {
    if count_unknown_letters(expr) > 2 || expr.contains("^{") || expr.contains("^(") {
        return false;
    }
    let chars: Vec<char> = expr.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c != '^' {
            continue;
        }
        let digits = chars[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        // r"\^[0-9]+\^" and r"\^[0-9][0-9]+"
        if digits >= 2 || (digits >= 1 && chars.get(i + 1 + digits) == Some(&'^')) {
            return false;
        }
    }
    true
}

/// Python's `split_tuple`.
fn split_tuple(expr: &str) -> Vec<String> {
    let expr = strip_properly_formatted_commas(expr);
    let chars: Vec<char> = expr.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let n = chars.len();
    if n > 2
        && TUPLE_CHARS.contains(&chars[0])
        && TUPLE_CHARS.contains(&chars[n - 1])
        && !chars[1..n - 1].iter().any(|c| TUPLE_CHARS.contains(c))
    {
        let inner: String = chars[1..n - 1].iter().collect();
        inner.split(',').map(|e| e.trim().to_string()).collect()
    } else {
        vec![expr]
    }
}

/// Python's `_is_frac`: `^-?[0-9]+.?/0*[1-9][0-9]*.?$` (`.` is any non-newline char).
fn is_frac(expr: &str) -> bool {
    let chars: Vec<char> = expr.chars().collect();
    // `$` also matches before one trailing newline.
    let ends: Vec<usize> = if chars.last() == Some(&'\n') {
        vec![chars.len(), chars.len() - 1]
    } else {
        vec![chars.len()]
    };
    ends.into_iter().any(|end| {
        let c = &chars[..end];
        c.iter()
            .enumerate()
            .any(|(k, &ch)| ch == '/' && frac_numerator(&c[..k]) && frac_denominator(&c[k + 1..]))
    })
}

/// `-?[0-9]+.?` over the whole slice.
fn frac_numerator(c: &[char]) -> bool {
    let body = |s: &[char]| {
        let n = s.len();
        (n >= 1 && s.iter().all(char::is_ascii_digit))
            || (n >= 2 && s[..n - 1].iter().all(char::is_ascii_digit) && s[n - 1] != '\n')
    };
    body(c) || (c.first() == Some(&'-') && body(&c[1..]))
}

/// `0*[1-9][0-9]*.?` over the whole slice.
fn frac_denominator(c: &[char]) -> bool {
    let ok = |s: &[char]| {
        !s.is_empty() && s.iter().all(char::is_ascii_digit) && s.iter().any(|&d| d != '0')
    };
    ok(c) || (!c.is_empty() && c[c.len() - 1] != '\n' && ok(&c[..c.len() - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_extraction() {
        assert_eq!(extract_boxed_content("so \\boxed{ 3 } ok"), "3");
        assert_eq!(
            extract_boxed_content("\\boxed{1} \\boxed{\\frac{1}{2}}"),
            "\\frac{1}{2}"
        );
        assert_eq!(extract_boxed_content("no box"), "None");
        assert_eq!(extract_boxed_content("\\boxed{unclosed"), "None");
        assert_eq!(extract_boxed_content("\\boxed{}"), "");
    }

    #[test]
    fn frac_regex() {
        assert!(is_frac("1/2"));
        assert!(is_frac("-10/04"));
        assert!(is_frac("1a/2b"));
        assert!(!is_frac("1/0"));
        assert!(!is_frac("x/2"));
        assert!(!is_frac("1/2/3/4"));
    }

    #[test]
    fn grading_basics() {
        assert!(grade_answer("\\dfrac{1}{2}", "\\frac{1}{2}"));
        assert!(grade_answer("0.5", "\\frac{1}{2}"));
        assert!(grade_answer("1,000", "1000"));
        assert!(grade_answer("(x-1)(x+1)", "x^2-1"));
        assert!(grade_answer("1+2x", "2x+1"));
        assert!(!grade_answer("\\frac{10}{2}", "5"));
        assert!(!grade_answer("2/4", "\\frac{1}{2}"));
        assert!(grade_answer("(1, 2)", "(1,2)"));
        assert!(!grade_answer("[1,2]", "(1,2)"));
        assert!(grade_answer("45^\\circ", "45"));
        assert!(!grade_answer("None", "5"));
    }

    #[test]
    fn eval_guard() {
        assert!(!should_allow_eval("(x^{2})-(y)"));
        assert!(!should_allow_eval("(2^10)-(1024)"));
        assert!(!should_allow_eval("(abc)-(1)"));
        assert!(should_allow_eval("(sqrt(x)+y)-(1)"));
    }

    #[test]
    fn no_panic_on_odd_input() {
        let deep = format!("{}1{}", "{".repeat(5000), "}".repeat(5000));
        let _ = grade_answer(&deep, "1");
        let _ = grade_answer("\\frac", "\\sqrt");
        let _ = grade_answer("2**99999999999", "1");
        let _ = grade_answer("ß/\u{0}é^", "(");
    }
}
