//! A strict reader over a span-preserving TOML document.
//!
//! serde would reject unknown keys too, but only the first problem and without the key's path;
//! task authors (and LLMs writing launch plans) need every problem, each with its line and the
//! dotted path of the key, so validation walks `toml_edit`'s document by hand.

use crate::diag::Reporter;
use crate::expr::Expr;
use std::ops::Range;
use toml_edit::{Item, TableLike, Value};

pub type Span = Option<Range<usize>>;

/// One table being read: remembers which keys were consumed so leftovers can be reported.
pub struct Table<'d> {
    pub t: &'d dyn TableLike,
    pub path: String,
    pub span: Span,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(v) => value_type_name(v),
    }
}

fn value_type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "an inline table",
    }
}

/// Levenshtein distance, for "did you mean" hints on misspelt keys.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

pub fn suggestion(word: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

impl<'d> Table<'d> {
    pub fn root(doc: &'d toml_edit::Table) -> Self {
        Table {
            t: doc,
            path: String::new(),
            span: None,
        }
    }

    pub fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn key_span(&self, key: &str) -> Span {
        self.t.key(key).and_then(|k| k.span())
    }

    fn item(&self, key: &str) -> Option<&'d Item> {
        self.t.get(key).filter(|i| !i.is_none())
    }

    pub fn has(&self, key: &str) -> bool {
        self.item(key).is_some()
    }

    /// Every key that is not in `allowed` is an error (typos must not be ignored silently).
    pub fn deny_unknown(&self, rep: &mut Reporter, allowed: &[&str]) {
        for (k, _) in self.t.iter() {
            if !allowed.contains(&k) {
                rep.error(
                    self.key_span(k),
                    self.key_path(k),
                    format!(
                        "unknown key `{k}` (allowed here: {}){}",
                        allowed.join(", "),
                        suggestion(k, allowed)
                    ),
                );
            }
        }
    }

    pub fn missing(&self, rep: &mut Reporter, key: &str, what: &str) {
        rep.error(
            self.span.clone(),
            self.key_path(key),
            format!("missing required key `{key}` ({what})"),
        );
    }

    fn wrong_type(&self, rep: &mut Reporter, key: &str, item: &Item, want: &str) {
        rep.error(
            item.span(),
            self.key_path(key),
            format!("expected {want}, found {}", type_name(item)),
        );
    }

    pub fn value_span(&self, key: &str) -> Span {
        self.item(key)
            .and_then(|i| i.span())
            .or_else(|| self.key_span(key))
    }

    pub fn str(
        &self,
        rep: &mut Reporter,
        key: &str,
        required: bool,
        what: &str,
    ) -> Option<(String, Span)> {
        let Some(item) = self.item(key) else {
            if required {
                self.missing(rep, key, what);
            }
            return None;
        };
        match item.as_str() {
            Some(s) => Some((s.to_string(), item.span())),
            None => {
                self.wrong_type(rep, key, item, "a string");
                None
            }
        }
    }

    /// A string that must be one of `options`' names; the value paired with it. Missing (when
    /// `required`) or unknown is reported with the names (and a suggestion for a typo).
    pub fn choice<T: Copy>(
        &self,
        rep: &mut Reporter,
        key: &str,
        required: bool,
        options: &[(&str, T)],
    ) -> Option<T> {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let what = match names.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        let (v, span) = self.str(rep, key, required, &what)?;
        let found = options.iter().find(|(n, _)| *n == v).map(|(_, t)| *t);
        if found.is_none() {
            rep.error(
                span,
                self.key_path(key),
                format!(
                    "unknown {key} `{v}` (known: {}){}",
                    names.join(", "),
                    suggestion(&v, &names)
                ),
            );
        }
        found
    }

    pub fn int(&self, rep: &mut Reporter, key: &str) -> Option<(i64, Span)> {
        let item = self.item(key)?;
        match item.as_integer() {
            Some(v) => Some((v, item.span())),
            None => {
                self.wrong_type(rep, key, item, "an integer");
                None
            }
        }
    }

    /// A number: TOML integers are accepted where a float is expected (`std = 1`).
    pub fn float(&self, rep: &mut Reporter, key: &str) -> Option<(f64, Span)> {
        let item = self.item(key)?;
        match (item.as_float(), item.as_integer()) {
            (Some(f), _) if f.is_finite() => Some((f, item.span())),
            (Some(_), _) => {
                rep.error(item.span(), self.key_path(key), "expected a finite number");
                None
            }
            (None, Some(i)) => Some((i as f64, item.span())),
            _ => {
                self.wrong_type(rep, key, item, "a number");
                None
            }
        }
    }

    pub fn bool(&self, rep: &mut Reporter, key: &str) -> Option<bool> {
        let item = self.item(key)?;
        match item.as_bool() {
            Some(b) => Some(b),
            None => {
                self.wrong_type(rep, key, item, "true or false");
                None
            }
        }
    }

    pub fn str_list(&self, rep: &mut Reporter, key: &str) -> Vec<(String, Span, String)> {
        let Some(item) = self.item(key) else {
            return Vec::new();
        };
        let Some(arr) = item.as_array() else {
            self.wrong_type(rep, key, item, "an array of strings");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, v) in arr.iter().enumerate() {
            let path = format!("{}[{i}]", self.key_path(key));
            match v.as_str() {
                Some(s) => out.push((s.to_string(), v.span(), path)),
                None => rep.error(
                    v.span(),
                    path,
                    format!("expected a string, found {}", value_type_name(v)),
                ),
            }
        }
        out
    }

    pub fn int_list(&self, rep: &mut Reporter, key: &str) -> Option<Vec<i64>> {
        let item = self.item(key)?;
        let Some(arr) = item.as_array() else {
            self.wrong_type(rep, key, item, "an array of integers");
            return None;
        };
        let mut out = Vec::new();
        for (i, v) in arr.iter().enumerate() {
            match v.as_integer() {
                Some(n) => out.push(n),
                None => {
                    rep.error(
                        v.span(),
                        format!("{}[{i}]", self.key_path(key)),
                        format!("expected an integer, found {}", value_type_name(v)),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    /// An expression given as a string or a plain TOML integer, parsed and checked against
    /// `known` names.
    pub fn expr(
        &self,
        rep: &mut Reporter,
        key: &str,
        required: bool,
        known: &dyn Fn(&str) -> bool,
        known_list: &str,
    ) -> Option<Expr> {
        let Some(item) = self.item(key) else {
            if required {
                self.missing(rep, key, "an integer expression");
            }
            return None;
        };
        let path = self.key_path(key);
        match item.as_value() {
            Some(v) => value_expr(rep, v, &path, known, known_list),
            None => {
                self.wrong_type(rep, key, item, "an integer expression");
                None
            }
        }
    }

    /// A list of 1..=max expressions (`grid = ["ceil_div(N, 128)", "B"]`, `block = [256]`).
    pub fn expr_list(
        &self,
        rep: &mut Reporter,
        key: &str,
        (min, max): (usize, usize),
        known: &dyn Fn(&str) -> bool,
        known_list: &str,
    ) -> Option<Vec<Expr>> {
        let Some(item) = self.item(key) else {
            if min > 0 {
                self.missing(rep, key, "a list of integer expressions");
            }
            return None;
        };
        let Some(arr) = item.as_array() else {
            self.wrong_type(rep, key, item, "a list of integer expressions");
            return None;
        };
        if arr.len() < min || arr.len() > max {
            rep.error(
                item.span(),
                self.key_path(key),
                format!("expected {min} to {max} entries, found {}", arr.len()),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, v) in arr.iter().enumerate() {
            let path = format!("{}[{i}]", self.key_path(key));
            match value_expr(rep, v, &path, known, known_list) {
                Some(e) => out.push(e),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A sub-table, written as `[key]` or `key = { ... }`.
    pub fn table(
        &self,
        rep: &mut Reporter,
        key: &str,
        required: bool,
        what: &str,
    ) -> Option<Table<'d>> {
        let Some(item) = self.item(key) else {
            if required {
                self.missing(rep, key, what);
            }
            return None;
        };
        match item.as_table_like() {
            Some(t) => Some(Table {
                t,
                path: self.key_path(key),
                span: item.span().or_else(|| self.key_span(key)),
            }),
            None => {
                self.wrong_type(rep, key, item, "a table");
                None
            }
        }
    }

    /// An array of tables, written as `[[key]]` blocks or `key = [{ ... }, ...]`.
    pub fn tables(&self, rep: &mut Reporter, key: &str) -> Vec<Table<'d>> {
        let Some(item) = self.item(key) else {
            return Vec::new();
        };
        let base = self.key_path(key);
        if let Some(aot) = item.as_array_of_tables() {
            return aot
                .iter()
                .enumerate()
                .map(|(i, t)| Table {
                    t,
                    path: format!("{base}[{i}]"),
                    span: t.span(),
                })
                .collect();
        }
        if let Some(arr) = item.as_array() {
            let mut out = Vec::new();
            for (i, v) in arr.iter().enumerate() {
                match v.as_inline_table() {
                    Some(t) => out.push(Table {
                        t,
                        path: format!("{base}[{i}]"),
                        span: v.span(),
                    }),
                    None => rep.error(
                        v.span(),
                        format!("{base}[{i}]"),
                        format!("expected a table, found {}", value_type_name(v)),
                    ),
                }
            }
            return out;
        }
        self.wrong_type(rep, key, item, &format!("an array of tables (`[[{key}]]`)"));
        Vec::new()
    }

    /// All key/value pairs, for tables whose keys are data (`[params]`, a shape's values).
    pub fn entries(&self) -> Vec<(String, &'d Item, Span, Span)> {
        self.t
            .iter()
            .map(|(k, v)| (k.to_string(), v, self.key_span(k), v.span()))
            .collect()
    }
}

/// An expression from a TOML value: a string, or a plain integer.
pub fn value_expr(
    rep: &mut Reporter,
    v: &Value,
    path: &str,
    known: &dyn Fn(&str) -> bool,
    known_list: &str,
) -> Option<Expr> {
    let parsed = match v {
        Value::Integer(i) => Ok(Expr::constant(*i.value())),
        Value::String(s) => Expr::parse(s.value()),
        other => {
            rep.error(
                other.span(),
                path,
                format!(
                    "expected an integer expression (a string such as \"N*K/2\" or an integer), found {}",
                    value_type_name(other)
                ),
            );
            return None;
        }
    };
    let e = match parsed {
        Ok(e) => e,
        Err(err) => {
            rep.error(v.span(), path, err.to_string());
            return None;
        }
    };
    if let Err(err) = e.check_names(known) {
        rep.error(v.span(), path, format!("{err}; known names: {known_list}"));
        return None;
    }
    Some(e)
}

pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_for_typos() {
        assert_eq!(
            suggestion("dtyp", &["name", "dtype", "shape"]),
            "; did you mean `dtype`?"
        );
        assert_eq!(suggestion("zzzzzz", &["name", "dtype"]), "");
    }

    #[test]
    fn choices_name_the_options_when_missing_or_unknown() {
        let text = "a = \"gaps\"\nb = \"gapz\"\n";
        let doc = crate::diag::parse_toml(std::path::Path::new("task.toml"), text).unwrap();
        let t = Table::root(doc.as_table());
        let path = std::path::Path::new("task.toml");
        let mut rep = Reporter::new(path, text);
        let opts = [("bits", 1), ("gaps", 2), ("block_offsets", 3)];
        assert_eq!(t.choice(&mut rep, "a", true, &opts), Some(2));
        assert!(rep.diagnostics.is_empty());
        assert_eq!(t.choice(&mut rep, "b", true, &opts), None);
        assert_eq!(t.choice(&mut rep, "c", true, &opts), None);
        assert_eq!(t.choice(&mut rep, "d", false, &opts), None);
        let d: Vec<String> = rep.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d[0].contains("task.toml:2:")
                && d[0].contains(
                    "unknown b `gapz` (known: bits, gaps, block_offsets); did you mean `gaps`?"
                ),
            "{}",
            d[0]
        );
        assert!(d[1].contains("bits, gaps or block_offsets"), "{}", d[1]);
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("x_1"));
        assert!(is_identifier("_a"));
        assert!(!is_identifier("1a"));
        assert!(!is_identifier("a-b"));
        assert!(!is_identifier(""));
    }
}
