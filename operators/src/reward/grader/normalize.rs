//! String normalisation of `mathruler.grader` (<https://pypi.org/project/mathruler/>):
//! `math_normalize.normalize_answer` (Hendrycks MATH `_strip_string`) and the
//! grader's own `_normalize`, with hand-written equivalents of their regexes.

use super::latex::latex_to_text;

const UNITS: [&str; 16] = [
    "degree",
    "cm",
    "centimeter",
    "meter",
    "mile",
    "second",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "year",
    "foot",
    "feet",
    "inch",
    "yard",
];

/// `re.search(r"^\\text\{(?P<text>.+?)\}$", s)` -> the captured text.
fn text_wrapper(s: &str) -> Option<&str> {
    let rest = s.strip_prefix("\\text{")?;
    // `$` also matches before a single trailing newline.
    let body = rest.strip_suffix('\n').unwrap_or(rest);
    let inner = body.strip_suffix('}')?;
    (!inner.is_empty() && !inner.contains('\n')).then_some(inner)
}

/// MATH-style normalisation (`normalize_answer`).
pub(super) fn normalize_answer(answer: &str) -> String {
    let mut answer = answer.trim();
    if let Some(text) = text_wrapper(answer) {
        answer = text.trim();
    }
    strip_string(answer).unwrap_or_else(|()| answer.to_string())
}

/// `_strip_string`; `Err` where the Python code raises.
fn strip_string(s: &str) -> Result<String, ()> {
    let mut s = s
        .replace('\n', "")
        .replace("\\!", "")
        .replace("\\\\", "\\")
        .replace("tfrac", "frac")
        .replace("dfrac", "frac")
        .replace("\\left", "")
        .replace("\\right", "")
        .replace("^{\\circ}", "")
        .replace("^\\circ", "")
        .replace("\\$", "");
    if s.contains("\\text{ ") {
        let parts: Vec<&str> = s.split("\\text{ ").collect();
        if parts.len() != 2 {
            return Err(());
        }
        s = parts[0].to_string();
    }
    s = s
        .replace("\\%", "")
        .replace('%', "")
        .replace(" .", " 0.")
        .replace("{.", "{0.");
    if s.is_empty() {
        return Ok(s);
    }
    if s.starts_with('.') {
        s.insert(0, '0');
    }
    let eq: Vec<&str> = s.split('=').collect();
    if eq.len() == 2 && eq[0].chars().count() <= 2 {
        s = eq[1].to_string();
    }
    s = fix_sqrt(&s)?.replace(' ', "");
    s = fix_fracs(&s)?;
    if s == "0.5" {
        s = "\\frac{1}{2}".to_string();
    }
    Ok(fix_a_slash_b(&s))
}

fn fix_sqrt(s: &str) -> Result<String, ()> {
    let mut parts = s.split("\\sqrt");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        let first = part.chars().next().ok_or(())?;
        if first == '{' {
            out.push_str("\\sqrt");
            out.push_str(part);
        } else {
            out.push_str("\\sqrt{");
            out.push(first);
            out.push('}');
            out.push_str(&part[first.len_utf8()..]);
        }
    }
    Ok(out)
}

fn fix_fracs(s: &str) -> Result<String, ()> {
    let mut parts = s.split("\\frac");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        out.push_str("\\frac");
        let chars: Vec<char> = part.chars().collect();
        let first = *chars.first().ok_or(())?;
        if first == '{' {
            out.push_str(part);
            continue;
        }
        if chars.len() < 2 {
            return Ok(s.to_string());
        }
        let (a, b) = (chars[0], chars[1]);
        let post: String = chars[2..].iter().collect();
        if b != '{' {
            out.push_str(&format!("{{{a}}}{{{b}}}{post}"));
        } else {
            out.push_str(&format!("{{{a}}}{b}{post}"));
        }
    }
    Ok(out)
}

/// Whether `s` is what Python's `str(int(s))` would print back.
fn is_canonical_int(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s != "-0"
}

fn fix_a_slash_b(s: &str) -> String {
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() == 2 && is_canonical_int(parts[0]) && is_canonical_int(parts[1]) {
        format!("\\frac{{{}}}{{{}}}", parts[0], parts[1])
    } else {
        s.to_string()
    }
}

/// Python's `float(s)` (without `_` digit separators).
pub(super) fn py_float(s: &str) -> Option<f64> {
    let t = s.trim();
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    let lower = body.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity" | "nan") {
        return t.to_ascii_lowercase().parse::<f64>().ok();
    }
    let bytes = body.as_bytes();
    let mut i = 0;
    let int_digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits + frac_digits == 0 {
        return None;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if exp_digits == 0 {
            return None;
        }
        i += exp_digits;
    }
    if i != bytes.len() {
        return None;
    }
    t.parse::<f64>().ok()
}

/// `abs(x - int(round(x))) <= 1e-7` (False for inf / nan).
fn is_int(x: f64) -> bool {
    x.is_finite() && (x - x.round()).abs() <= 1e-7
}

/// Python's `str(int(x))` for a finite float already integral-ish.
fn int_string(x: f64) -> String {
    let v = x.trunc();
    if v == 0.0 {
        "0".to_string()
    } else {
        format!("{v:.0}")
    }
}

/// `_str_is_int`.
pub(super) fn str_is_int(x: &str) -> bool {
    py_float(&strip_properly_formatted_commas(x)).is_some_and(is_int)
}

/// `re.sub(r"(\d)(,)(\d\d\d)($|\D)", r"\1\3\4", expr)` until a fixed point.
pub(super) fn strip_properly_formatted_commas(expr: &str) -> String {
    let mut cur: Vec<char> = expr.chars().collect();
    loop {
        let mut next = Vec::with_capacity(cur.len());
        let mut i = 0;
        while i < cur.len() {
            let d = |k: usize| cur.get(k).is_some_and(|c| c.is_ascii_digit());
            if d(i) && cur.get(i + 1) == Some(&',') && d(i + 2) && d(i + 3) && d(i + 4) {
                let tail = cur.get(i + 5);
                if tail.is_none() || tail.is_some_and(|c| !c.is_ascii_digit()) {
                    next.push(cur[i]);
                    next.extend_from_slice(&cur[i + 2..i + 5]);
                    if let Some(&c) = tail {
                        next.push(c);
                    }
                    i += 5 + usize::from(tail.is_some());
                    continue;
                }
            }
            next.push(cur[i]);
            i += 1;
        }
        if next == cur {
            return next.into_iter().collect();
        }
        cur = next;
    }
}

/// `re.sub(rf"{unit}(es)?(s)? *(\^[0-9]+)?", "", expr)`.
fn remove_unit(expr: &str, unit: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(pos) = rest.find(unit) {
        out.push_str(&rest[..pos]);
        let mut tail = &rest[pos + unit.len()..];
        tail = tail.strip_prefix("es").unwrap_or(tail);
        tail = tail.strip_prefix('s').unwrap_or(tail);
        tail = tail.trim_start_matches(' ');
        if let Some(after) = tail.strip_prefix('^') {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 {
                tail = &after[digits..];
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// `re.sub` of the pattern `prefix` + ` *` + `suffix` (all literal): the match is
/// dropped, or replaced by `prefix` when `keep_prefix` (`- *` -> `-`).
fn remove_spaced(expr: &str, prefix: &str, suffix: &str, keep_prefix: bool) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(pos) = rest.find(prefix) {
        let after = rest[pos + prefix.len()..].trim_start_matches(' ');
        if let Some(tail) = after.strip_prefix(suffix) {
            out.push_str(&rest[..pos]);
            if keep_prefix {
                out.push_str(prefix);
            }
            rest = tail;
        } else {
            let step = pos + prefix.len();
            out.push_str(&rest[..step]);
            rest = &rest[step..];
        }
    }
    out.push_str(rest);
    out
}

/// `re.sub("([0-9]) +([0-9])", "\\1+\\2", step)`.
fn inject_mixed_numbers(s: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < c.len() {
        if c[i].is_ascii_digit() {
            let spaces = c[i + 1..].iter().take_while(|&&ch| ch == ' ').count();
            if spaces > 0 && c.get(i + 1 + spaces).is_some_and(char::is_ascii_digit) {
                out.push(c[i]);
                out.push('+');
                out.push(c[i + 1 + spaces]);
                i += spaces + 2;
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// `_parse_latex`: LaTeX to plain text plus symbol renaming; `None` on failure.
fn parse_latex(expr: &str) -> Option<String> {
    let expr = expr
        .replace("\\tfrac", "\\frac")
        .replace("\\dfrac", "\\frac")
        .replace("\\frac", " \\frac");
    let text = latex_to_text(&expr)?
        .replace('√', "sqrt")
        .replace('π', "pi")
        .replace('∞', "inf")
        .replace('∪', "U")
        .replace(['·', '×'], "*");
    Some(text.trim().to_string())
}

/// The grader's `_normalize`.
pub(super) fn normalize(expr: &str) -> String {
    let mut expr = text_wrapper(expr).unwrap_or(expr).to_string();
    expr = expr
        .replace("\\%", "%")
        .replace("\\$", "$")
        .replace(['$', '%'], "")
        .replace(" or ", " , ")
        .replace(" and ", " , ")
        .replace("million", "*10^6")
        .replace("billion", "*10^9")
        .replace("trillion", "*10^12");
    for unit in UNITS {
        expr = remove_unit(&expr, unit);
    }
    expr = remove_spaced(&expr, "^", "\\circ", false);
    if expr.len() > 1 && expr.starts_with('{') && expr.ends_with('}') {
        expr = expr[1..expr.len() - 1].to_string();
    }
    expr = remove_spaced(&expr, ",\\!", "", false);
    if let Some(x) = py_float(&expr).filter(|&x| is_int(x)) {
        expr = int_string(x.round());
    }
    if expr.contains('\\')
        && let Some(parsed) = parse_latex(&expr)
    {
        expr = parsed;
    }
    expr = remove_spaced(&expr, "-", "", true);
    expr = inject_mixed_numbers(&expr).replace([' ', '{', '}'], "");
    expr = expr.to_lowercase();
    if str_is_int(&expr)
        && let Some(x) = py_float(&expr.replace(',', ""))
    {
        expr = int_string(x);
    }
    expr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mathd_normalization() {
        assert_eq!(normalize_answer("\\dfrac12"), "\\frac{1}{2}");
        assert_eq!(normalize_answer("0.5"), "\\frac{1}{2}");
        assert_eq!(normalize_answer("3/4"), "\\frac{3}{4}");
        assert_eq!(normalize_answer("\\text{(A)}"), "(A)");
        assert_eq!(normalize_answer("k = 5"), "5");
        assert_eq!(normalize_answer("\\sqrt3"), "\\sqrt{3}");
        assert_eq!(normalize_answer("5 \\text{ cm}"), "5");
        assert_eq!(normalize_answer("\\sqrt"), "\\sqrt");
    }

    #[test]
    fn grader_normalization() {
        assert_eq!(normalize("1,000"), "1000");
        assert_eq!(normalize("5.0"), "5");
        assert_eq!(normalize("45 degrees"), "45");
        assert_eq!(normalize("\\frac{1}{2}"), "1/2");
        assert_eq!(normalize("3 \\frac{1}{2}"), "3+1/2");
        assert_eq!(normalize("\\text{Monday}"), "mon"); // "day" is a unit
        assert_eq!(normalize("2\\sqrt{2}"), "2sqrt(2)");
        assert_eq!(normalize("-0.0"), "0");
    }

    #[test]
    fn helpers() {
        assert_eq!(strip_properly_formatted_commas("1,000,000"), "1000000");
        assert_eq!(strip_properly_formatted_commas("(1,234,5)"), "(1234,5)");
        assert_eq!(py_float(" 1e3 "), Some(1000.0));
        assert_eq!(py_float("1e"), None);
        assert_eq!(py_float("."), None);
        assert!(str_is_int("12.0000000001"));
        assert_eq!(remove_unit("12 inches^2", "inch"), "12 ");
    }
}
