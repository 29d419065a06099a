//! Python list-of-strings literals: the `new_questions` column of R1-ShareVL-52K stores the
//! textual rewrites as `str(list_of_str)` (e.g. `['What is x?', "It's y"]`), which the reference
//! trainer reads back with `eval`. [`parse_py_list`] reads that literal without evaluating
//! anything; [`py_repr_list`] writes it the way Python's `repr` does.

/// Parses a Python list literal whose items are string literals: `['a', "b's"]`, `[]`,
/// `[ 'a' , ]`. Supports single, double and triple quotes, the `r`/`u` prefixes, adjacent
/// literals (`'a' 'b'` is `'ab'`) and Python's escapes (`\\ \' \" \n \t \r \a \b \f \v \ooo
/// \xhh \uXXXX \UXXXXXXXX`, backslash-newline); an unknown escape keeps its backslash, as in
/// Python. A UTF-16 surrogate pair written as two `\u` escapes is joined into one character.
///
/// Anything else (other item types, a missing bracket, an unterminated string, trailing text) is
/// an `Err` saying where parsing stopped.
pub fn parse_py_list(s: &str) -> Result<Vec<String>, String> {
    let mut p = Parser {
        chars: s.chars().collect(),
        pos: 0,
    };
    p.skip_ws();
    p.expect('[')?;
    let mut items = Vec::new();
    loop {
        p.skip_ws();
        if p.eat(']') {
            break;
        }
        items.push(p.string_item()?);
        p.skip_ws();
        if p.eat(',') {
            continue;
        }
        p.skip_ws();
        if p.eat(']') {
            break;
        }
        return Err(p.err("expected `,` or `]` after a list item"));
    }
    p.skip_ws();
    if p.pos < p.chars.len() {
        return Err(p.err("unexpected text after the closing `]`"));
    }
    Ok(items)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.chars.get(self.pos + k).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(&format!("expected `{c}`")))
        }
    }

    fn err(&self, what: &str) -> String {
        match self.peek() {
            Some(c) => format!("{what} at character {} (found {c:?})", self.pos),
            None => format!("{what} at character {} (end of text)", self.pos),
        }
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.pos += 1;
            } else if c == '\\' && matches!(self.peek_at(1), Some('\n')) {
                self.pos += 2;
            } else {
                break;
            }
        }
    }

    /// One list item: one or more adjacent string literals.
    fn string_item(&mut self) -> Result<String, String> {
        let mut out = self.string_literal()?;
        loop {
            let save = self.pos;
            self.skip_ws();
            if self.at_literal_start() {
                out.push_str(&self.string_literal()?);
            } else {
                self.pos = save;
                return Ok(out);
            }
        }
    }

    fn at_literal_start(&self) -> bool {
        let mut k = 0;
        while k < 2 && matches!(self.peek_at(k), Some('r' | 'R' | 'u' | 'U')) {
            k += 1;
        }
        matches!(self.peek_at(k), Some('\'' | '"'))
    }

    fn string_literal(&mut self) -> Result<String, String> {
        let mut raw = false;
        let mut k = 0;
        while let Some(c @ ('r' | 'R' | 'u' | 'U')) = self.peek() {
            if k == 2 {
                break;
            }
            raw |= matches!(c, 'r' | 'R');
            self.pos += 1;
            k += 1;
        }
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(self.err("expected a string literal")),
        };
        let triple = self.peek_at(1) == Some(quote) && self.peek_at(2) == Some(quote);
        self.pos += if triple { 3 } else { 1 };
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated string literal"));
            };
            if c == quote {
                if !triple {
                    self.pos += 1;
                    return Ok(out);
                }
                if self.peek_at(1) == Some(quote) && self.peek_at(2) == Some(quote) {
                    self.pos += 3;
                    return Ok(out);
                }
                out.push(c);
                self.pos += 1;
            } else if c == '\n' && !triple {
                return Err(self.err("newline inside a single-quoted string literal"));
            } else if c == '\\' {
                if raw {
                    // Raw strings keep the backslash and the next character (which cannot end
                    // the literal).
                    out.push('\\');
                    self.pos += 1;
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.pos += 1;
                    }
                } else {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
            } else {
                out.push(c);
                self.pos += 1;
            }
        }
    }

    /// The escape after a backslash (already consumed).
    fn escape(&mut self, out: &mut String) -> Result<(), String> {
        let Some(c) = self.peek() else {
            return Err(self.err("unterminated escape"));
        };
        self.pos += 1;
        match c {
            '\n' => {}
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'v' => out.push('\x0b'),
            '0'..='7' => {
                let mut v = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            self.pos += 1;
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(v).ok_or_else(|| self.err("invalid octal escape"))?);
            }
            'x' => {
                let v = self.hex(2)?;
                out.push(char::from_u32(v).ok_or_else(|| self.err("invalid \\x escape"))?);
            }
            'u' | 'U' => {
                let v = self.hex(if c == 'u' { 4 } else { 8 })?;
                if (0xD800..0xDC00).contains(&v) {
                    // A high surrogate: join it with a following `\uDC00..\uDFFF`.
                    if self.peek() == Some('\\') && self.peek_at(1) == Some('u') {
                        self.pos += 2;
                        let lo = self.hex(4)?;
                        if (0xDC00..0xE000).contains(&lo) {
                            let cp = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
                            if let Some(ch) = char::from_u32(cp) {
                                out.push(ch);
                                return Ok(());
                            }
                        }
                    }
                    return Err(self.err("unpaired UTF-16 surrogate escape"));
                }
                out.push(
                    char::from_u32(v)
                        .ok_or_else(|| self.err("escape is not a valid Unicode character"))?,
                );
            }
            'N' => return Err(self.err("`\\N{...}` escapes are not supported")),
            other => {
                out.push('\\');
                out.push(other);
            }
        }
        Ok(())
    }

    fn hex(&mut self, n: usize) -> Result<u32, String> {
        let mut v = 0u32;
        for _ in 0..n {
            let d = self
                .peek()
                .and_then(|d| d.to_digit(16))
                .ok_or_else(|| self.err(&format!("expected {n} hex digits in an escape")))?;
            v = v * 16 + d;
            self.pos += 1;
        }
        Ok(v)
    }
}

/// Python's `repr(items)` for a list of strings: `['a', "it's"]`.
///
/// Each item is quoted like `repr(str)`: single quotes unless the text holds a single quote and
/// no double quote; backslash, the quote, `\t \n \r` and other control characters are escaped
/// (`\xhh`), as are the non-printable characters Python escapes most often (C1 controls, no-break
/// and other Unicode spaces, line/paragraph separators, zero-width and bidi format characters,
/// BOM, surrogates). Python's full `str.isprintable` table (e.g. unassigned code points) is not
/// reproduced.
pub fn py_repr_list(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        py_repr_str(s, &mut out);
    }
    out.push(']');
    out
}

/// Python's `repr(str)` appended to `out`: single quotes unless the text has `'` and no `"`,
/// escapes for backslash, the quote and characters Python does not print (shared with the chat
/// template's `repr`).
pub(crate) fn py_repr_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !py_printable(c) => {
                let v = c as u32;
                if v < 0x100 {
                    out.push_str(&format!("\\x{v:02x}"));
                } else if v < 0x10000 {
                    out.push_str(&format!("\\u{v:04x}"));
                } else {
                    out.push_str(&format!("\\U{v:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// An approximation of Python's `str.isprintable` for one character.
fn py_printable(c: char) -> bool {
    let v = c as u32;
    !(v < 0x20
        || (0x7f..=0xa0).contains(&v)
        || v == 0xad
        || v == 0x061c
        || v == 0x1680
        || v == 0x180e
        || (0x2000..=0x200f).contains(&v)
        || (0x2028..=0x202f).contains(&v)
        || (0x205f..=0x2064).contains(&v)
        || (0x2066..=0x206f).contains(&v)
        || v == 0x3000
        || v == 0xfeff
        || (0xfff9..=0xfffb).contains(&v)
        || (0xe000..=0xf8ff).contains(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<String> {
        parse_py_list(s).unwrap_or_else(|e| vec![format!("ERR {e}")])
    }

    #[test]
    fn quotes_and_whitespace() {
        assert_eq!(ok("['What is x?', \"It's y\"]"), ["What is x?", "It's y"]);
        assert_eq!(ok("  [ 'a' ,\n 'b' , ]  "), ["a", "b"]);
        assert_eq!(ok("[]"), Vec::<String>::new());
        assert_eq!(ok("[ ]"), Vec::<String>::new());
        assert_eq!(ok("['a' 'b', u'c', r'\\n']"), ["ab", "c", "\\n"]);
        assert_eq!(ok("['''x'y''', \"\"\"q\"\"\"]"), ["x'y", "q"]);
    }

    #[test]
    fn escapes() {
        assert_eq!(
            ok(r#"['it\'s', "say \"hi\"", 'a\\b', 'l1\nl2\tt', '\u00e9\x41\101', '\q']"#),
            ["it's", "say \"hi\"", "a\\b", "l1\nl2\tt", "éAA", "\\q"]
        );
        assert_eq!(ok(r"['\ud83d\ude00', '\U0001F600']"), ["😀", "😀"]);
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            "",
            "[",
            "['a'",
            "['a' 'b'",
            "['a',, 'b']",
            "[1, 2]",
            "['a'] x",
            "['a\nb']",
            "[None]",
            "'a'",
            "['\\x4']",
            "['\\ud83d']",
            "[\"a']",
            "['a' , ] ]",
        ] {
            assert!(parse_py_list(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn repr_matches_python() {
        let items: Vec<String> = ["a", "it's", "say \"hi\" it's", "a\\b\n\t", "\u{7}é\u{a0}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            py_repr_list(&items),
            r#"['a', "it's", 'say "hi" it\'s', 'a\\b\n\t', '\x07é\xa0']"#
        );
        assert_eq!(py_repr_list(&[]), "[]");
        assert_eq!(parse_py_list(&py_repr_list(&items)).ok(), Some(items));
    }
}
