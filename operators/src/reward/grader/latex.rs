//! LaTeX to plain text, approximating `pylatexenc.latex2text.LatexNodes2Text`
//! (pylatexenc 2.11 defaults) as used by `mathruler.grader._parse_latex`
//! (<https://pypi.org/project/mathruler/>).
//!
//! Covered: groups, control words/symbols (trailing spaces after control words are
//! dropped), the argument rules of the default macro specs (a non-group argument is
//! one char or one argument-less macro; a macro with a missing mandatory argument
//! takes none), `\frac` -> `a/b`, `\sqrt` -> `√(x)`, text-like macros, accents as
//! combining marks (no NFC composition), specials (`~`, `--`, `&`, quotes) and the
//! symbol table in [`super::latex_symbols`]. Environments render their body.

use super::latex_symbols::{DOUBLESTRUCK, FRAKTUR, SCRIPT, styled, symbol};

const MAX_DEPTH: usize = 200;

#[derive(Clone, Copy)]
enum Kind {
    Frac,
    Sqrt,
    /// Concatenated text of all arguments (`\text`, `\mathrm`, ...).
    Concat,
    /// The text of the argument with this index.
    Arg(usize),
    /// Argument text followed by a combining mark (empty argument -> empty).
    Accent(char),
    /// Math alphabet: offsets of `A` and `a`, then exceptions (pylatexenc style).
    Style(u32, u32, &'static [(char, char)]),
    Discard,
    Newline,
}

const ARG_MACROS: &[(&str, &str, Kind)] = &[
    ("frac", "{{", Kind::Frac),
    ("nicefrac", "{{", Kind::Frac),
    ("sqrt", "[{", Kind::Sqrt),
    ("text", "{", Kind::Concat),
    ("textrm", "{", Kind::Concat),
    ("textit", "{", Kind::Concat),
    ("textbf", "{", Kind::Concat),
    ("textsl", "{", Kind::Concat),
    ("textsc", "{", Kind::Concat),
    ("emph", "{", Kind::Concat),
    ("mathrm", "{", Kind::Concat),
    ("mbox", "{", Kind::Discard),
    ("textmd", "{", Kind::Discard),
    ("textsf", "{", Kind::Discard),
    ("texttt", "{", Kind::Discard),
    ("textup", "{", Kind::Discard),
    ("label", "{", Kind::Discard),
    ("hphantom", "[{", Kind::Discard),
    ("vphantom", "[{", Kind::Discard),
    ("hspace", "*{", Kind::Discard),
    ("vspace", "*{", Kind::Newline),
    ("color", "[{", Kind::Discard),
    ("xleftarrow", "[{", Kind::Discard),
    ("xrightarrow", "[{", Kind::Discard),
    ("textcolor", "[{{", Kind::Arg(2)),
    ("colorbox", "[{{", Kind::Arg(2)),
    ("fcolorbox", "[{[{{", Kind::Arg(4)),
    ("mathbb", "{", Kind::Style(0x1D538, 0x1D552, DOUBLESTRUCK)),
    ("mathbf", "{", Kind::Style(0x1D400, 0x1D41A, &[])),
    (
        "mathit",
        "{",
        Kind::Style(0x1D434, 0x1D44E, &[('h', '\u{210e}')]),
    ),
    ("mathsf", "{", Kind::Style(0x1D5A0, 0x1D5BA, &[])),
    ("mathtt", "{", Kind::Style(0x1D670, 0x1D68A, &[])),
    ("mathcal", "{", Kind::Style(0x1D49C, 0x1D4B6, SCRIPT)),
    ("mathscr", "{", Kind::Style(0x1D49C, 0x1D4B6, SCRIPT)),
    ("mathfrak", "{", Kind::Style(0x1D504, 0x1D51E, FRAKTUR)),
    ("ensuremath", "{", Kind::Arg(0)),
    ("overline", "{", Kind::Arg(0)),
    ("underline", "{", Kind::Arg(0)),
    ("widehat", "{", Kind::Arg(0)),
    ("widetilde", "{", Kind::Arg(0)),
    ("wideparen", "{", Kind::Arg(0)),
    ("overleftarrow", "{", Kind::Arg(0)),
    ("overrightarrow", "{", Kind::Arg(0)),
    ("overleftrightarrow", "{", Kind::Arg(0)),
    ("underleftarrow", "{", Kind::Arg(0)),
    ("underrightarrow", "{", Kind::Arg(0)),
    ("underleftrightarrow", "{", Kind::Arg(0)),
    ("overbrace", "{", Kind::Arg(0)),
    ("underbrace", "{", Kind::Arg(0)),
    ("overgroup", "{", Kind::Arg(0)),
    ("undergroup", "{", Kind::Arg(0)),
    ("overbracket", "{", Kind::Arg(0)),
    ("underbracket", "{", Kind::Arg(0)),
    ("overlinesegment", "{", Kind::Arg(0)),
    ("underlinesegment", "{", Kind::Arg(0)),
    ("overleftharpoon", "{", Kind::Arg(0)),
    ("overrightharpoon", "{", Kind::Arg(0)),
    ("hat", "{", Kind::Accent('\u{302}')),
    ("tilde", "{", Kind::Accent('\u{303}')),
    ("bar", "{", Kind::Accent('\u{305}')),
    ("vec", "{", Kind::Accent('\u{20d7}')),
    ("dot", "{", Kind::Accent('\u{307}')),
    ("ddot", "{", Kind::Accent('\u{308}')),
    ("check", "{", Kind::Accent('\u{30c}')),
    ("breve", "{", Kind::Accent('\u{306}')),
    ("acute", "{", Kind::Accent('\u{301}')),
    ("grave", "{", Kind::Accent('\u{300}')),
    ("not", "{", Kind::Accent('\u{338}')),
    ("'", "{", Kind::Accent('\u{301}')),
    ("`", "{", Kind::Accent('\u{300}')),
    ("\"", "{", Kind::Accent('\u{308}')),
    ("^", "{", Kind::Accent('\u{302}')),
    ("~", "{", Kind::Accent('\u{303}')),
    ("=", "{", Kind::Accent('\u{304}')),
    (".", "{", Kind::Accent('\u{307}')),
    ("c", "{", Kind::Accent('\u{327}')),
    ("H", "{", Kind::Accent('\u{30b}')),
    ("k", "{", Kind::Accent('\u{328}')),
    ("b", "{", Kind::Accent('\u{331}')),
    ("d", "{", Kind::Accent('\u{323}')),
    ("r", "{", Kind::Accent('\u{30a}')),
    ("u", "{", Kind::Accent('\u{306}')),
    ("v", "{", Kind::Accent('\u{30c}')),
    ("begin", "{", Kind::Discard),
    ("end", "{", Kind::Discard),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    End,
    Brace,
    Bracket,
}

struct Parser {
    c: Vec<char>,
    i: usize,
    depth: usize,
}

/// `LatexNodes2Text().latex_to_text(s)`; `None` where pylatexenc would raise.
pub(super) fn latex_to_text(s: &str) -> Option<String> {
    let mut p = Parser {
        c: s.chars().collect(),
        i: 0,
        depth: 0,
    };
    p.seq(Stop::End).ok()
}

impl Parser {
    fn peek(&self, k: usize) -> Option<char> {
        self.c.get(self.i + k).copied()
    }

    fn seq(&mut self, stop: Stop) -> Result<String, ()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(());
        }
        let mut out = String::new();
        while let Some(ch) = self.peek(0) {
            self.i += 1;
            match ch {
                '}' if stop == Stop::Brace => break,
                '}' => {}
                ']' if stop == Stop::Bracket => break,
                '{' => out.push_str(&self.seq(Stop::Brace)?),
                '\\' => out.push_str(&self.macro_node(true)?),
                '%' => {
                    while let Some(c) = self.peek(0) {
                        self.i += 1;
                        if c == '\n' {
                            break;
                        }
                    }
                    while matches!(self.peek(0), Some(' ' | '\t')) {
                        self.i += 1;
                    }
                }
                '$' => {}
                '~' => out.push('\u{a0}'),
                '&' => out.push_str("   "),
                '-' if self.peek(0) == Some('-') && self.peek(1) == Some('-') => {
                    self.i += 2;
                    out.push('\u{2014}');
                }
                '-' if self.peek(0) == Some('-') => {
                    self.i += 1;
                    out.push('\u{2013}');
                }
                '`' if self.peek(0) == Some('`') => {
                    self.i += 1;
                    out.push('\u{201c}');
                }
                '\'' if self.peek(0) == Some('\'') => {
                    self.i += 1;
                    out.push('\u{201d}');
                }
                '!' | '?' if self.peek(0) == Some('`') => {
                    self.i += 1;
                    out.push(if ch == '!' { '\u{a1}' } else { '\u{bf}' });
                }
                _ => out.push(ch),
            }
        }
        self.depth -= 1;
        Ok(out)
    }

    /// Reads a macro name after the backslash (control words eat trailing spaces).
    fn macro_name(&mut self) -> String {
        let Some(first) = self.peek(0) else {
            return String::new();
        };
        if !first.is_ascii_alphabetic() {
            self.i += 1;
            return first.to_string();
        }
        let mut name = String::new();
        while let Some(c) = self.peek(0).filter(char::is_ascii_alphabetic) {
            name.push(c);
            self.i += 1;
        }
        while matches!(self.peek(0), Some(' ' | '\t' | '\n')) {
            self.i += 1;
        }
        name
    }

    fn macro_node(&mut self, allow_args: bool) -> Result<String, ()> {
        let name = self.macro_name();
        match name.as_str() {
            "" | "(" | ")" => return Ok(String::new()),
            "[" => return Ok("\n    ".to_string()),
            "]" => return Ok("\n".to_string()),
            "\\" => {
                if allow_args {
                    if self.peek(0) == Some('*') {
                        self.i += 1;
                    }
                    if self.peek(0) == Some('[') {
                        self.i += 1;
                        self.seq(Stop::Bracket)?;
                    }
                }
                return Ok("\n".to_string());
            }
            _ => {}
        }
        let Some(&(_, spec, kind)) = ARG_MACROS.iter().find(|(n, _, _)| *n == name) else {
            return Ok(symbol(&name).unwrap_or_default().to_string());
        };
        let args = if allow_args {
            let start = self.i;
            let args = self.args(spec)?;
            if args.is_none() {
                self.i = start;
            }
            args
        } else {
            None
        };
        let arg = |k: usize| -> String {
            args.as_ref()
                .and_then(|a| a.get(k).cloned().flatten())
                .unwrap_or_default()
        };
        Ok(match (kind, &args) {
            (Kind::Frac, Some(_)) => {
                let mand = mandatory(spec);
                format!("{}/{}", arg(mand[0]), arg(mand[1]))
            }
            (Kind::Frac, None) => "%s/%s".to_string(),
            (Kind::Sqrt, Some(_)) => format!("√({})", arg(1)),
            (Kind::Sqrt, None) => return Err(()),
            (Kind::Concat, Some(a)) => a.iter().flatten().cloned().collect(),
            (Kind::Arg(k), Some(_)) => arg(k),
            (Kind::Accent(mark), Some(_)) => {
                let text = arg(0);
                if text.is_empty() {
                    text
                } else {
                    format!("{text}{mark}")
                }
            }
            (Kind::Style(upper, lower, exceptions), Some(_)) => {
                styled(&arg(0), upper, lower, exceptions)
            }
            (Kind::Newline, _) => "\n".to_string(),
            _ => String::new(),
        })
    }

    /// Parses arguments per `spec`; `Ok(None)` when a mandatory one is missing.
    fn args(&mut self, spec: &str) -> Result<Option<Vec<Option<String>>>, ()> {
        let mut out = Vec::new();
        for kind in spec.chars() {
            while matches!(self.peek(0), Some(' ' | '\t' | '\n')) {
                self.i += 1;
            }
            match kind {
                '*' => {
                    let star = self.peek(0) == Some('*');
                    if star {
                        self.i += 1;
                    }
                    out.push(star.then(|| "*".to_string()));
                }
                '[' => {
                    if self.peek(0) == Some('[') {
                        self.i += 1;
                        out.push(Some(self.seq(Stop::Bracket)?));
                    } else {
                        out.push(None);
                    }
                }
                _ => match self.peek(0) {
                    None | Some('}') => return Ok(None),
                    Some('{') => {
                        self.i += 1;
                        out.push(Some(self.seq(Stop::Brace)?));
                    }
                    Some('\\') => {
                        self.i += 1;
                        out.push(Some(self.macro_node(false)?));
                    }
                    Some(c) => {
                        self.i += 1;
                        out.push(Some(c.to_string()));
                    }
                },
            }
        }
        Ok(Some(out))
    }
}

/// Indices of the mandatory (`{`) arguments in an argument spec.
fn mandatory(spec: &str) -> Vec<usize> {
    let mut v: Vec<usize> = spec
        .chars()
        .enumerate()
        .filter(|(_, c)| *c == '{')
        .map(|(i, _)| i)
        .collect();
    v.resize(2, 0);
    v
}

#[cfg(test)]
mod tests {
    use super::latex_to_text;

    fn t(s: &str) -> String {
        latex_to_text(s).unwrap_or_else(|| "<err>".to_string())
    }

    #[test]
    fn matches_pylatexenc_samples() {
        assert_eq!(t("\\frac{x+1}{2}"), "x+1/2");
        assert_eq!(t(" \\frac {1} {2}"), " 1/2");
        assert_eq!(t("\\frac12"), "1/2");
        assert_eq!(t("\\frac\\pi2"), "π/2");
        assert_eq!(t("\\sqrt[3]{8}"), "√(8)");
        assert_eq!(t("\\sqrt2"), "√(2)");
        assert_eq!(t("2\\pi r"), "2πr");
        assert_eq!(t("3 \\times 10^{5}"), "3 ×10^5");
        assert_eq!(t("\\left( 1,2 \\right)"), "( 1,2 )");
        assert_eq!(t("\\text{ cm}"), " cm");
        assert_eq!(t("\\foo{3}"), "3");
        assert_eq!(t("\\frac 1"), "%s/%s1");
        assert_eq!(t("\\sqrt\\frac12"), "√(%s/%s)12");
        assert_eq!(t("\\sqrt"), "<err>");
        assert_eq!(t("\\, \\; \\quad \\!"), "      ");
        assert_eq!(t("\\{1,2\\}"), "{1,2}");
        assert_eq!(t("x--1"), "x–1");
        assert_eq!(t("\\mbox{x}"), "");
        assert_eq!(t("\\mathbf{x1}"), "\u{1d431}1");
        assert_eq!(t("\\mathbb{R}"), "\u{211d}");
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let deep = "{".repeat(100_000);
        assert!(latex_to_text(&deep).is_none());
    }
}
