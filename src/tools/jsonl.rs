//! Reading JSON lines with errors that name the source, line and field.

use serde_json::{Map, Value};

use super::ToolError;

/// At most this many input errors are listed before giving up.
pub const MAX_REPORTED: usize = 20;

/// Reads a file, or standard input for `-`.
pub fn read_input(path: &str) -> Result<String, ToolError> {
    let read = if path == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    read.map_err(|error| ToolError::Read {
        source_name: if path == "-" {
            "<stdin>".into()
        } else {
            path.into()
        },
        error,
    })
}

/// One parsed JSON object with its line number, for field access with located errors.
#[derive(Debug)]
pub struct Line<'a> {
    /// 1-based line number.
    pub number: usize,
    /// The source's name.
    pub source: &'a str,
    /// The object.
    pub object: Map<String, Value>,
}

impl Line<'_> {
    fn err(&self, msg: impl std::fmt::Display) -> String {
        format!("{} line {}: {msg}", self.source, self.number)
    }

    fn field(&self, name: &str) -> Result<&Value, String> {
        self.object
            .get(name)
            .ok_or_else(|| self.err(format_args!("field `{name}` is missing")))
    }

    /// A string field.
    pub fn string(&self, name: &str) -> Result<String, String> {
        match self.field(name)? {
            Value::String(s) => Ok(s.clone()),
            other => Err(self.err(format_args!("field `{name}` must be a string, got {other}"))),
        }
    }

    /// A string field that may also be given as a number (e.g. a numeric ground truth).
    pub fn string_or_number(&self, name: &str) -> Result<String, String> {
        match self.field(name)? {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(self.err(format_args!("field `{name}` must be a string, got {other}"))),
        }
    }

    /// A non-negative integer field that fits in `u32`.
    pub fn index(&self, name: &str) -> Result<u32, String> {
        let v = self.field(name)?;
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| {
                self.err(format_args!(
                    "field `{name}` must be a non-negative integer, got {v}"
                ))
            })
    }

    /// A finite number field.
    pub fn finite(&self, name: &str) -> Result<f64, String> {
        let v = self.field(name)?;
        match v.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            _ => Err(self.err(format_args!(
                "field `{name}` must be a finite number, got {v}"
            ))),
        }
    }
}

/// Parses every non-blank line as a JSON object and converts it with `convert`; collects up to
/// [`MAX_REPORTED`] errors, each naming the source and line.
pub fn parse_lines<T>(
    text: &str,
    source: &str,
    mut convert: impl FnMut(&Line<'_>) -> Result<T, String>,
) -> Result<Vec<T>, ToolError> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let number = i + 1;
        let parsed = match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(object)) => convert(&Line {
                number,
                source,
                object,
            }),
            Ok(other) => Err(format!(
                "{source} line {number}: expected a JSON object, got {}",
                truncate(&other.to_string())
            )),
            Err(e) => Err(format!("{source} line {number}: malformed JSON ({e})")),
        };
        match parsed {
            Ok(x) => out.push(x),
            Err(e) => {
                errors.push(e);
                if errors.len() == MAX_REPORTED {
                    errors.push(format!("(stopped after {MAX_REPORTED} errors)"));
                    break;
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ToolError::Input(errors))
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}
