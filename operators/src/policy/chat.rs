//! Chat templates rendered like transformers' `apply_chat_template`, with minijinja.
//!
//! Reference: transformers 5.23 `utils/chat_template_utils.py` (`_cached_compile_jinja_template`,
//! `render_jinja_template`) and `processing_utils.py` (`ProcessorMixin.apply_chat_template`,
//! where templates are found). transformers renders in a jinja2 sandbox with
//! `trim_blocks=True, lstrip_blocks=True` (and jinja2's default `keep_trailing_newline=False`),
//! the `loopcontrols` extension, a `tojson` filter that is Python's `json.dumps` (no HTML
//! escaping, `ensure_ascii=False`), `raise_exception` and `strftime_now` globals, and passes the
//! tokenizer's special tokens (`eos_token`, ...) as variables. Python's methods on strings, lists
//! and dicts (`.strip()`, `.split()`, `.items()`, ...) come from minijinja-contrib's pycompat.
//!
//! Differences that remain: dict keys are iterated (and `tojson`-ed) in sorted order, since a
//! `serde_json::Value` without `preserve_order` keeps no insertion order, while Python keeps it;
//! float formatting inside `{{ }}` is minijinja's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value as JValue};
use serde_json::{Map, Value};

use super::error::{PolicyError, Result};
use super::pyfmt::{json_dumps, py_repr, strftime_utc};

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Where it came from, for error messages.
    origin: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`; `origin` (a file name, say) appears in error messages.
    pub fn new(source: impl Into<String>, origin: impl Into<String>) -> Result<Self> {
        let origin = origin.into();
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .keep_trailing_newline(false)
                .build()
                .map_err(|e| PolicyError::Input(format!("chat template syntax: {e}")))?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", |format: String| strftime_utc(&format));
        env.add_template_owned("chat", source.into())
            .map_err(|e| PolicyError::Input(format!("chat template from {origin}: {e:#}")))?;
        Ok(Self { env, origin })
    }

    /// Where the template came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Renders `messages` (a JSON list of `{"role", "content", ...}`) as transformers'
    /// `processor.apply_chat_template(messages, add_generation_prompt=...)` does: keys whose value
    /// is `null` are dropped from each message, reasoning fields are aliased
    /// (`reasoning_content` / `thinking`), `tools` and `documents` are defined (as none unless
    /// given in `vars`), and `vars` (special tokens, `enable_thinking`, ...) are visible.
    pub fn render(
        &self,
        messages: &Value,
        add_generation_prompt: bool,
        vars: &Map<String, Value>,
    ) -> Result<String> {
        let Value::Array(list) = messages else {
            return Err(PolicyError::Input(
                "chat messages must be a JSON list of message objects".into(),
            ));
        };
        let mut msgs = Vec::with_capacity(list.len());
        for (i, m) in list.iter().enumerate() {
            let Value::Object(obj) = m else {
                return Err(PolicyError::Input(format!(
                    "chat message {i} must be a JSON object with `role` and `content`, found {m}"
                )));
            };
            msgs.push(to_jinja(&Value::Object(normalize_message(obj))));
        }
        let mut ctx: BTreeMap<String, JValue> =
            vars.iter().map(|(k, v)| (k.clone(), to_jinja(v))).collect();
        ctx.entry("tools".into()).or_insert(JValue::from(()));
        ctx.entry("documents".into()).or_insert(JValue::from(()));
        ctx.insert("messages".into(), JValue::from(msgs));
        ctx.insert(
            "add_generation_prompt".into(),
            JValue::from(add_generation_prompt),
        );
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| PolicyError::Input(format!("chat template ({}): {e}", self.origin)))?;
        tmpl.render(JValue::from(ctx)).map_err(|e| {
            PolicyError::Input(format!(
                "rendering the chat template ({}): {}",
                self.origin,
                error_chain(&e)
            ))
        })
    }
}

/// transformers' `_normalize_conversations` (drop `None` values) and `_alias_reasoning_fields`.
fn normalize_message(obj: &Map<String, Value>) -> Map<String, Value> {
    let mut out: Map<String, Value> = obj
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let reasoning = ["reasoning_content", "thinking", "reasoning"]
        .iter()
        .find_map(|k| out.get(*k).cloned());
    if let Some(r) = reasoning {
        out.entry("thinking").or_insert_with(|| r.clone());
        out.insert("reasoning_content".into(), r);
    }
    out
}

/// A JSON value as a template value (maps keep serde_json's key order).
pub(crate) fn to_jinja(v: &Value) -> JValue {
    match v {
        Value::Null => JValue::from(()),
        Value::Bool(b) => JValue::from(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => JValue::from(i),
            (None, Some(u)) => JValue::from(u),
            _ => JValue::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => JValue::from(s.as_str()),
        Value::Array(a) => JValue::from(a.iter().map(to_jinja).collect::<Vec<_>>()),
        Value::Object(o) => JValue::from(
            o.iter()
                .map(|(k, v)| (k.clone(), to_jinja(v)))
                .collect::<BTreeMap<String, JValue>>(),
        ),
    }
}

/// Prints `None`, `True`, `False`, lists and dicts the way Python's `str()` does (jinja2 output).
fn python_formatter(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &JValue,
) -> std::result::Result<(), Error> {
    match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Seq | ValueKind::Map
            if !value.is_undefined() =>
        {
            let mut s = String::new();
            py_repr(value, &mut s)?;
            out.write_str(&s).map_err(Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`,
/// i.e. Python's `json.dumps`.
fn tojson(
    value: &JValue,
    ensure_ascii: Option<JValue>,
    indent: Option<JValue>,
    separators: Option<JValue>,
    kwargs: Kwargs,
) -> std::result::Result<JValue, Error> {
    let pick = |pos: Option<JValue>, key: &str| -> std::result::Result<Option<JValue>, Error> {
        Ok(match pos {
            Some(v) => Some(v),
            None => kwargs.get::<Option<JValue>>(key)?,
        })
    };
    let ensure_ascii = pick(ensure_ascii, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let indent = match pick(indent, "indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match (v.as_i64(), v.as_str()) {
            (Some(n), _) => Some(" ".repeat(n.max(0) as usize)),
            (None, Some(s)) => Some(s.to_string()),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                ));
            }
        },
    };
    let separators = match pick(separators, "separators")? {
        Some(v) if !v.is_none() => {
            let parts: Vec<String> = v
                .try_iter()?
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be strings",
                    )
                })?;
            match <[String; 2]>::try_from(parts) {
                Ok([item, key]) => Some((item, key)),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be (item_separator, key_separator)",
                    ));
                }
            }
        }
        _ => None,
    };
    let sort_keys = kwargs
        .get::<Option<JValue>>("sort_keys")?
        .is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = separators.unwrap_or_else(|| {
        let item = if indent.is_some() { "," } else { ", " };
        (item.to_string(), ": ".to_string())
    });
    let mut s = String::new();
    json_dumps(
        value,
        &mut s,
        &super::pyfmt::JsonStyle {
            indent: indent.as_deref(),
            item_sep: &item_sep,
            key_sep: &key_sep,
            ensure_ascii,
            sort_keys,
        },
        0,
    )?;
    Ok(JValue::from(s))
}

fn raise_exception(message: String) -> std::result::Result<JValue, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// An error with its causes, on one line.
fn error_chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        let _ = write!(s, ": {cause}");
        src = cause.source();
    }
    s
}

/// Finds a checkpoint's chat template the way transformers does.
///
/// For a processor (vision models): `processor_config.json` key `chat_template`, then
/// `chat_template.json` (`{"chat_template": ...}`), then `chat_template.jinja`; text-only
/// tokenizers: `chat_template.jinja`, then `tokenizer_config.json` key `chat_template` (a string,
/// or a list of `{name, template}` of which `default` is used). Each list falls back on the
/// other's files. Returns the template and the file it came from.
pub(crate) fn find_template(
    dir: &Path,
    for_processor: bool,
    tokenizer_config: Option<&Value>,
) -> Result<Option<(String, PathBuf)>> {
    let jinja = dir.join("chat_template.jinja");
    let json_file = dir.join("chat_template.json");
    let processor_config = dir.join("processor_config.json");
    let tok_config = dir.join("tokenizer_config.json");
    let order: Vec<&Path> = if for_processor {
        vec![&processor_config, &json_file, &jinja, &tok_config]
    } else {
        vec![&jinja, &tok_config, &json_file]
    };
    for path in order {
        let found = if path == jinja {
            if !path.is_file() {
                continue;
            }
            Some(std::fs::read_to_string(path).map_err(|e| PolicyError::io(path, e))?)
        } else if path == tok_config {
            tokenizer_config
                .map(|cfg| template_field(cfg, path))
                .transpose()?
                .flatten()
        } else {
            if !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(path).map_err(|e| PolicyError::io(path, e))?;
            let cfg: Value = serde_json::from_str(&text)
                .map_err(|e| PolicyError::bad_file(path, format!("not valid JSON: {e}")))?;
            template_field(&cfg, path)?
        };
        if let Some(t) = found {
            return Ok(Some((t, path.to_path_buf())));
        }
    }
    Ok(None)
}

/// The `chat_template` field of a JSON config: a string, or a list of `{name, template}`.
fn template_field(cfg: &Value, path: &Path) -> Result<Option<String>> {
    match cfg.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(list)) => {
            let default = list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"));
            match default
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
            {
                Some(s) => Ok(Some(s.to_string())),
                None => Err(PolicyError::bad_file(
                    path,
                    "`chat_template` is a list without a template named \"default\"",
                )),
            }
        }
        Some(other) => Err(PolicyError::bad_file(
            path,
            format!("`chat_template` must be a string, found {other}"),
        )),
    }
}
