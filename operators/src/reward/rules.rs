//! The reference's reward rules, `math` and `r1v` (R1-ShareVL `examples/score_function/math.py`
//! and `r1v.py`), without regular expressions: each pattern is matched by hand with Python's
//! semantics (`re.DOTALL` where the reference sets it, `\s` = `str.isspace`).

use serde::{Deserialize, Serialize};

use super::grader::{extract_boxed_content, grade_answer};

/// Which reference rule scores a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RewardRule {
    /// `<think>..</think>..\boxed{}`; accuracy on the last `\boxed{}`; overall = 0.9 acc + 0.1 fmt.
    #[default]
    Math,
    /// `<think>..</think><answer>..</answer>`; accuracy on the answer; overall = 0.5 acc + 0.5 fmt.
    R1v,
}

impl std::str::FromStr for RewardRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "math" => Ok(Self::Math),
            "r1v" => Ok(Self::R1v),
            other => Err(format!("unknown reward rule `{other}` (use math or r1v)")),
        }
    }
}

/// The reward of one response.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RewardScore {
    /// The weighted total the advantages are computed from.
    pub overall: f64,
    /// 1 if the response has the rule's format, else 0.
    pub format: f64,
    /// 1 if the extracted answer grades equal to the ground truth, else 0.
    pub accuracy: f64,
}

/// Python's `str.isspace` (and `re`'s `\s` on `str`): Unicode White_Space plus U+001C..U+001F.
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `re.sub(r"\s*(<|>|/)\s*", r"\1", s)`: drop whitespace around every `<`, `>` and `/`.
pub fn strip_spaces_around_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut skipping = false;
    for c in s.chars() {
        if matches!(c, '<' | '>' | '/') {
            while out.ends_with(py_isspace) {
                out.pop();
            }
            out.push(c);
            skipping = true;
        } else if skipping && py_isspace(c) {
        } else {
            skipping = false;
            out.push(c);
        }
    }
    out
}

/// `re.fullmatch(r"<think>.*</think>.*\\boxed\{.*\}.*", s, re.DOTALL)`.
pub fn math_format(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("<think>") else {
        return false;
    };
    let Some(p) = rest.find("</think>") else {
        return false;
    };
    let rest = &rest[p + "</think>".len()..];
    let Some(q) = rest.find("\\boxed{") else {
        return false;
    };
    rest[q + "\\boxed{".len()..].contains('}')
}

/// `re.fullmatch(r"<think>.*?</think>\s*<answer>.*?</answer>", s, re.DOTALL)`.
pub fn r1v_format(s: &str) -> bool {
    let Some(body) = s.strip_prefix("<think>") else {
        return false;
    };
    let Some(body) = body.strip_suffix("</answer>") else {
        return false;
    };
    // Some `</think>` followed by optional whitespace and `<answer>` must fit inside `body`.
    body.match_indices("</think>").any(|(p, tag)| {
        let after = body[p + tag.len()..].trim_start_matches(py_isspace);
        after.starts_with("<answer>")
    })
}

/// `re.search(r"<answer>(.*?)</answer>", s)` (no DOTALL: the content holds no newline).
fn r1v_answer(s: &str) -> Option<&str> {
    s.match_indices("<answer>").find_map(|(p, tag)| {
        let rest = &s[p + tag.len()..];
        let line = rest.split('\n').next().unwrap_or(rest);
        line.find("</answer>").map(|q| &line[..q])
    })
}

/// Scores one response under a rule, exactly as the reference's `compute_score`. Also returns the
/// answer text that was graded.
pub fn score_response(
    rule: RewardRule,
    response: &str,
    ground_truth: &str,
) -> (RewardScore, String) {
    let one = |b: bool| if b { 1.0 } else { 0.0 };
    match rule {
        RewardRule::Math => {
            let s = strip_spaces_around_tags(response);
            let format = one(math_format(&s));
            let extracted = extract_boxed_content(&s);
            let accuracy = one(grade_answer(&extracted, ground_truth));
            let overall = 0.9 * accuracy + 0.1 * format;
            (
                RewardScore {
                    overall,
                    format,
                    accuracy,
                },
                extracted,
            )
        }
        RewardRule::R1v => {
            let format = one(r1v_format(response));
            let extracted = r1v_answer(response)
                .unwrap_or(response)
                .trim_matches(py_isspace)
                .to_string();
            let accuracy = one(grade_answer(
                &extracted,
                ground_truth.trim_matches(py_isspace),
            ));
            let overall = 0.5 * accuracy + 0.5 * format;
            (
                RewardScore {
                    overall,
                    format,
                    accuracy,
                },
                extracted,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_like_the_reference_regex() {
        assert_eq!(
            strip_spaces_around_tags("< think >a< /think > x"),
            "<think>a</think>x"
        );
        assert_eq!(
            strip_spaces_around_tags("1 / 2 and a  <  / b"),
            "1/2 and a</b"
        );
        assert_eq!(strip_spaces_around_tags("no tags"), "no tags");
    }

    #[test]
    fn math_format_cases() {
        assert!(math_format("<think>a</think>\\boxed{2}"));
        assert!(math_format("<think>a\nb</think>\nso \\boxed{2} done"));
        assert!(!math_format(" <think>a</think>\\boxed{2}"));
        assert!(!math_format("<think>a</think>\\boxed{2"));
        assert!(!math_format("<think>a</think> no box"));
        assert!(!math_format("\\boxed{2}<think>a</think>"));
    }

    #[test]
    fn r1v_format_and_answer_cases() {
        assert!(r1v_format("<think>a</think><answer>2</answer>"));
        assert!(r1v_format("<think>a</think> \n <answer>2</answer>"));
        assert!(r1v_format("<think>a</think>\u{1c}<answer>2</answer>"));
        assert!(!r1v_format("<think>a</think> x <answer>2</answer>"));
        assert!(!r1v_format("<think>a</think><answer>2</answer> "));
        assert_eq!(
            r1v_answer("<answer>2\n</answer><answer> 3 </answer>"),
            Some(" 3 ")
        );
        assert_eq!(r1v_answer("<answer>2"), None);
    }
}
