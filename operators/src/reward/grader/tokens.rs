//! Tokenisation for the sympy branch of `mathruler.grader`
//! (<https://pypi.org/project/mathruler/>): Python's tokenizer for numbers and
//! names (`05` is `0` then `5`, `2x` is `2` then `x`, `1e3` and `2.` are floats)
//! followed by sympy's `auto_symbol` / `split_symbols` name handling.

use super::eval::{Num, Undefined};

const KEYWORDS: &[&str] = &[
    "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif",
    "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda",
    "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];
const GREEK: &[&str] = &[
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lamda",
    "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi",
    "omega",
];
/// Lower-case sympy names reachable under the two-letter limit that we cannot evaluate.
const UNSUPPORTED: &[&str] = &[
    "nan", "oo", "zoo", "gff", "rf", "ff", "li", "jn", "yn", "hn1", "hn2", "fft", "ntt", "fu",
    "eye",
];
const FUNCS: &[&str] = &["sqrt", "frac", "ln", "re", "im", "csc"];

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Num(Num, bool),
    Sym(String),
    Pi,
    Func(&'static str),
    Op(&'static str),
}

fn number(text: &str, is_float: bool) -> Result<Tok, Undefined> {
    if !is_float && let Ok(n) = text.parse::<i128>() {
        return Ok(Tok::Num(Num::int(n), false));
    }
    let x: f64 = text.parse().map_err(|_| Undefined)?;
    Ok(Tok::Num(Num::F(x), is_float))
}

/// Python-style tokenisation plus sympy's name handling.
pub(super) fn tokenize(s: &str) -> Result<Vec<Tok>, Undefined> {
    let c: Vec<char> = s.chars().collect();
    let digits = |mut j: usize| {
        while c.get(j).is_some_and(char::is_ascii_digit) {
            j += 1;
        }
        j
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_ascii_digit() || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let int_end = digits(i);
            let mut j = int_end;
            let mut is_float = false;
            if c.get(j) == Some(&'.') {
                j = digits(j + 1);
                is_float = true;
            }
            if matches!(c.get(j), Some('e' | 'E')) {
                let k = j + 1 + usize::from(matches!(c.get(j + 1), Some('+' | '-')));
                if c.get(k).is_some_and(char::is_ascii_digit) {
                    j = digits(k);
                    is_float = true;
                }
            }
            if matches!(c.get(j), Some('j' | 'J')) {
                return Err(Undefined); // imaginary literal
            }
            if !is_float && ch == '0' {
                j = i + c[i..int_end].iter().take_while(|&&d| d == '0').count();
            }
            let text: String = c[i..j].iter().collect();
            out.push(number(&text, is_float)?);
            i = j;
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while c.get(i).is_some_and(|&x| x.is_alphanumeric() || x == '_') {
                i += 1;
            }
            let name: String = c[start..i].iter().collect();
            push_name(&name, &mut out)?;
        } else {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            let op = match (two.as_str(), ch) {
                ("**", _) => "**",
                (_, '+') => "+",
                (_, '-') => "-",
                (_, '*') => "*",
                (_, '/') if two != "//" => "/",
                (_, '(') => "(",
                (_, ')') => ")",
                (_, '!') if two != "!=" => "!",
                (_, ' ' | '\t') => "",
                _ => return Err(Undefined),
            };
            i += op.len().max(1);
            if !op.is_empty() {
                out.push(Tok::Op(op));
            }
        }
    }
    Ok(out)
}

fn push_name(name: &str, out: &mut Vec<Tok>) -> Result<(), Undefined> {
    if KEYWORDS.contains(&name) || UNSUPPORTED.contains(&name) {
        return Err(Undefined);
    }
    if name == "pi" {
        out.push(Tok::Pi);
    } else if let Some(f) = FUNCS.iter().find(|f| **f == name) {
        out.push(Tok::Func(f));
    } else if name.contains('_') || GREEK.contains(&name) || name.chars().count() == 1 {
        out.push(Tok::Sym(name.to_string()));
    } else {
        let chars: Vec<char> = name.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            if chars[i].is_ascii_digit() {
                let n = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                let text: String = chars[i..i + n].iter().collect();
                out.push(number(&text, false)?);
                i += n;
            } else if chars[i].is_numeric() {
                return Err(Undefined);
            } else {
                out.push(Tok::Sym(chars[i].to_string()));
                i += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Num, Tok, tokenize};

    #[test]
    fn python_like_tokens() {
        let t = tokenize("05x").expect("tokens");
        assert_eq!(t.len(), 3);
        assert_eq!(t[0], Tok::Num(Num::int(0), false));
        assert_eq!(tokenize("xy2").expect("tokens").len(), 3);
        assert_eq!(
            tokenize("x_1").expect("tokens"),
            vec![Tok::Sym("x_1".to_string())]
        );
        assert_eq!(
            tokenize("1e3").expect("tokens"),
            vec![Tok::Num(Num::F(1000.0), true)]
        );
        assert!(tokenize("2j").is_err());
        assert!(tokenize("if").is_err());
        assert!(tokenize("a<b").is_err());
    }
}
