//! `[checks]`: optional properties of a task beyond agreeing with the oracle, which the strict
//! protocol verifies on every candidate (and on the reference when it is checked).
//!
//! `[checks.batch_invariant]`: row `i` of the named outputs must be bitwise the same whether the
//! batch holds one row or `param` rows, wherever the row sits (HSPI-style batch invariance).
//! The protocol runs the candidate again with `param = 1` on single rows of the named inputs,
//! every other input unchanged, so the section is validated for exactly that: the named tensors
//! have `param` as their leading dimension and nowhere else, no other input depends on
//! `param`, and the single-row shape is legal (ranges, constraints, every expression).

use super::{Density, Generator, Init, InitKind, Param, Role, Shape, Task, TensorDecl};
use crate::diag::Reporter;
use crate::expr::Expr;
use crate::toml_reader::{suggestion, value_expr, Span, Table};
use serde::Serialize;
use std::collections::BTreeSet;

pub const CHECKS: &[&str] = &["batch_invariant", "sensitivity"];
const BATCH_KEYS: &[&str] = &["param", "inputs", "outputs", "rows"];
/// More probes than this per shape would make the check cost more than the run it guards.
const MAX_ROWS: usize = 16;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Checks {
    pub batch_invariant: Option<BatchInvariant>,
    pub sensitivity: Sensitivity,
}

/// `[checks.sensitivity]`: how `ksmith tasks spec` probes that the outputs depend on the inputs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sensitivity {
    /// Inputs redrawn only whole, never by halves of the last dimension: their tail is capacity
    /// a kernel is right not to read (a packed value stream with room for the dense size).
    pub whole: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchInvariant {
    /// The batch parameter: the leading dimension of every tensor below.
    pub param: String,
    /// Activations sliced to one row for the single-row runs.
    pub inputs: Vec<String>,
    /// Outputs whose single-row result must equal their row of the full batch, bit for bit.
    pub outputs: Vec<String>,
    /// Which rows to probe, as expressions over the parameters (default: first, middle, last).
    pub rows: Vec<Expr>,
}

impl BatchInvariant {
    /// `shape` with the batch parameter set to 1: the shape of one single-row run.
    pub fn probe_shape(&self, shape: &Shape) -> Shape {
        let mut values = shape.values.clone();
        values.insert(self.param.clone(), 1);
        Shape {
            name: shape.name.clone(),
            values,
        }
    }

    /// The batch size of `shape` (0 when the parameter is missing, which validation rules out).
    pub fn batch(&self, shape: &Shape) -> i64 {
        shape.values.get(&self.param).copied().unwrap_or(0)
    }

    /// The rows to probe on `shape`: evaluated, inside `0..batch`, without repeats, in the
    /// declared order; and a note for each row expression that gave no usable row (a held-out
    /// shape can make `M - 8` negative; public shapes are checked at load time).
    pub fn rows_on(&self, shape: &Shape) -> (Vec<u64>, Vec<String>) {
        let batch = self.batch(shape);
        let mut rows = Vec::new();
        let mut notes = Vec::new();
        for e in &self.rows {
            match e.eval(shape) {
                Ok(r) if (0..batch).contains(&r) => {
                    if !rows.contains(&(r as u64)) {
                        rows.push(r as u64);
                    }
                }
                Ok(r) => notes.push(format!(
                    "row `{e}` = {r} is outside 0..{batch} ({} = {batch})",
                    self.param
                )),
                Err(err) => notes.push(format!("row `{e}`: {err}")),
            }
        }
        (rows, notes)
    }

    fn default_rows(param: &str) -> Vec<Expr> {
        // Identifiers parse; a failure here could only drop a default probe, never panic.
        [format!("{param} / 2"), format!("{param} - 1")]
            .iter()
            .filter_map(|t| Expr::parse(t).ok())
            .fold(vec![Expr::constant(0)], |mut v, e| {
                v.push(e);
                v
            })
    }
}

/// Where the keys of `[checks.batch_invariant]` are, for errors found once shapes are known.
pub struct Located {
    param: (Span, String),
    rows: Vec<(Span, String)>,
}

/// Reads `[checks]`. Needs the params and tensors read before it.
pub(super) fn read(
    rep: &mut Reporter,
    root: &Table,
    params: &[Param],
    inputs: &[TensorDecl],
    outputs: &[TensorDecl],
) -> (Checks, Option<Located>) {
    let Some(t) = root.table(rep, "checks", false, "") else {
        return (Checks::default(), None);
    };
    t.deny_unknown(rep, CHECKS);
    let sensitivity = t
        .table(rep, "sensitivity", false, "")
        .map(|st| read_sensitivity(rep, &st, inputs))
        .unwrap_or_default();
    let Some(b) = t.table(rep, "batch_invariant", false, "") else {
        return (
            Checks {
                batch_invariant: None,
                sensitivity,
            },
            None,
        );
    };
    match read_batch(rep, &b, params, inputs, outputs) {
        Some((bi, at)) => (
            Checks {
                batch_invariant: Some(bi),
                sensitivity,
            },
            Some(at),
        ),
        None => (
            Checks {
                batch_invariant: None,
                sensitivity,
            },
            None,
        ),
    }
}

fn read_sensitivity(rep: &mut Reporter, t: &Table, inputs: &[TensorDecl]) -> Sensitivity {
    t.deny_unknown(rep, &["whole"]);
    let all: Vec<&str> = inputs.iter().map(|d| d.name.as_str()).collect();
    let mut whole: Vec<String> = Vec::new();
    for (name, span, path) in t.str_list(rep, "whole") {
        if !all.contains(&name.as_str()) {
            rep.error(
                span,
                path,
                format!(
                    "unknown input `{name}` (inputs: {}){}",
                    all.join(", "),
                    suggestion(&name, &all)
                ),
            );
        } else if whole.contains(&name) {
            rep.error(span, path, format!("`{name}` is listed twice"));
        } else {
            whole.push(name);
        }
    }
    Sensitivity { whole }
}

fn read_batch(
    rep: &mut Reporter,
    t: &Table,
    params: &[Param],
    inputs: &[TensorDecl],
    outputs: &[TensorDecl],
) -> Option<(BatchInvariant, Located)> {
    t.deny_unknown(rep, BATCH_KEYS);
    let pnames: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    let errors_before = rep.diagnostics.len();

    let param = t.str(
        rep,
        "param",
        true,
        "the batch parameter, e.g. `param = \"M\"`",
    );
    let param = param.and_then(|(p, span)| {
        let Some(decl) = params.iter().find(|d| d.name == p) else {
            rep.error(
                span,
                t.key_path("param"),
                format!(
                    "unknown parameter `{p}` (parameters: {}){}",
                    if pnames.is_empty() {
                        "none declared".to_string()
                    } else {
                        pnames.join(", ")
                    },
                    suggestion(&p, &pnames)
                ),
            );
            return None;
        };
        // The single-row runs set the parameter to 1: its own range must allow that.
        if let Some(why) = decl.violation(1) {
            rep.error(
                span.clone(),
                t.key_path("param"),
                format!("the batch-invariance check runs single rows ({p} = 1), but {why}"),
            );
            return None;
        }
        Some((p, span))
    });

    let tensor_names = |decls: &[TensorDecl]| -> Vec<String> {
        decls.iter().map(|d| d.name.clone()).collect::<Vec<_>>()
    };
    let (in_names, out_names) = (tensor_names(inputs), tensor_names(outputs));
    let batch_inputs = listed(rep, t, "inputs", inputs, &out_names, "outputs");
    let batch_outputs = listed(rep, t, "outputs", outputs, &in_names, "inputs");

    let mut rows = Vec::new();
    let mut row_spans = Vec::new();
    let known = |n: &str| pnames.contains(&n);
    let known_list = pnames.join(", ");
    if let Some(item) = t.t.get("rows").filter(|i| !i.is_none()) {
        let path = t.key_path("rows");
        match item.as_array() {
            Some(arr) if arr.is_empty() || arr.len() > MAX_ROWS => rep.error(
                item.span(),
                &path,
                format!(
                    "expected 1 to {MAX_ROWS} row expressions, found {}",
                    arr.len()
                ),
            ),
            Some(arr) => {
                for (i, v) in arr.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    if let Some(e) = value_expr(rep, v, &p, &known, &known_list) {
                        rows.push(e);
                        row_spans.push((v.span(), p));
                    }
                }
            }
            None => rep.error(
                item.span(),
                &path,
                "expected a list of row expressions such as [\"0\", \"M - 1\"]",
            ),
        }
    }

    let (param, param_span) = param?;
    // One problem per listed tensor: the layout first, then (inputs) what its values mean.
    for (d, span, path) in &batch_inputs {
        if let Some(why) = not_row_major_in(d, &param).or_else(|| not_row_local(d, &param)) {
            rep.error(span.clone(), path.clone(), why);
        }
    }
    for (d, span, path) in &batch_outputs {
        if let Some(why) = not_row_major_in(d, &param) {
            rep.error(span.clone(), path.clone(), why);
        }
    }
    // Unlisted inputs reach the single-row runs byte for byte, so they must not depend on the
    // batch size.
    for d in inputs {
        if batch_inputs.iter().any(|(b, _, _)| b.name == d.name) {
            continue;
        }
        if let Some(why) = depends_on(d, &param) {
            rep.error(
                t.value_span("inputs"),
                t.key_path("inputs"),
                format!(
                    "input `{}` ({}) {why} but is not listed: every unlisted input is passed unchanged to the single-row runs, so list it here if it holds one row per `{param}`",
                    d.name,
                    d.signature()
                ),
            );
        }
    }
    if rep.diagnostics.len() != errors_before {
        return None;
    }
    if rows.is_empty() {
        rows = BatchInvariant::default_rows(&param);
    }
    Some((
        BatchInvariant {
            param: param.clone(),
            inputs: batch_inputs
                .iter()
                .map(|(d, _, _)| d.name.clone())
                .collect(),
            outputs: batch_outputs
                .iter()
                .map(|(d, _, _)| d.name.clone())
                .collect(),
            rows,
        },
        Located {
            param: (param_span, t.key_path("param")),
            rows: row_spans,
        },
    ))
}

/// The tensors named under `key`, each of `decls`, with where it was named.
fn listed<'a>(
    rep: &mut Reporter,
    t: &Table,
    key: &str,
    decls: &'a [TensorDecl],
    other: &[String],
    other_key: &str,
) -> Vec<(&'a TensorDecl, Span, String)> {
    if !t.has(key) {
        t.missing(
            rep,
            key,
            &format!("the {key} whose leading dimension is the batch parameter"),
        );
        return Vec::new();
    }
    let before = rep.diagnostics.len();
    let entries = t.str_list(rep, key);
    if entries.is_empty() && rep.diagnostics.len() == before {
        rep.error(
            t.value_span(key),
            t.key_path(key),
            "must name at least one tensor",
        );
    }
    let all: Vec<&str> = decls.iter().map(|d| d.name.as_str()).collect();
    let mut out: Vec<(&TensorDecl, Span, String)> = Vec::new();
    for (name, span, path) in entries {
        match decls.iter().find(|d| d.name == name) {
            Some(d) if out.iter().any(|(o, _, _)| o.name == name) => {
                rep.error(span, path, format!("`{}` is listed twice", d.name))
            }
            Some(d) => out.push((d, span, path)),
            None if other.contains(&name) => rep.error(
                span,
                path,
                format!("`{name}` is not one of the {key}; list it under `{other_key}`"),
            ),
            None => rep.error(
                span,
                path,
                format!(
                    "unknown {} `{name}` ({key}: {}){}",
                    key.trim_end_matches('s'),
                    all.join(", "),
                    suggestion(&name, &all)
                ),
            ),
        }
    }
    out
}

/// Why a row of `d` is not a contiguous slice along `param`, if it is not.
fn not_row_major_in(d: &TensorDecl, param: &str) -> Option<String> {
    let Some(lead) = d.shape.first() else {
        return Some(format!(
            "`{}` is a scalar ({}); its leading dimension must be `{param}`",
            d.name,
            d.signature()
        ));
    };
    if lead.text().trim() != param {
        return Some(format!(
            "`{}` has shape {}: its leading dimension must be exactly `{param}`, so that row i is a contiguous slice",
            d.name,
            d.signature()
        ));
    }
    if d.shape[1..].iter().any(|e| e.names().contains(param)) {
        return Some(format!(
            "`{}` has shape {}: `{param}` may appear only as its leading dimension",
            d.name,
            d.signature()
        ));
    }
    None
}

/// Why the values of batch input `d` relate rows to each other, if they do: a row alone
/// would then not be a legal input of the single-row run.
fn not_row_local(d: &TensorDecl, param: &str) -> Option<String> {
    if d.role == Role::Weight {
        return Some(format!(
            "`{}` is a weight: weights are shared by every row; list only activations",
            d.name
        ));
    }
    match d.init.as_ref().map(|i| &i.kind) {
        Some(InitKind::Generator(g @ (Generator::Permutation | Generator::SortedOffsets { .. }))) => {
            Some(format!(
                "`{}` is made by the `{}` generator, whose values relate elements across rows; a single row of it is not a legal input",
                d.name,
                match g {
                    Generator::Permutation => "permutation",
                    _ => "sorted_offsets",
                }
            ))
        }
        _ => init_names(d.init.as_ref())
            .contains(param)
            .then(|| format!("`{}`'s init depends on `{param}`", d.name)),
    }
}

/// How `d` depends on `param`, if it does.
fn depends_on(d: &TensorDecl, param: &str) -> Option<String> {
    if d.shape.iter().any(|e| e.names().contains(param)) {
        return Some(format!("has a dimension that depends on `{param}`"));
    }
    init_names(d.init.as_ref())
        .contains(param)
        .then(|| format!("has an init that depends on `{param}`"))
}

fn init_names(init: Option<&Init>) -> BTreeSet<String> {
    match init.map(|i| &i.kind) {
        Some(InitKind::Randint { low, high }) => {
            low.names().union(&high.names()).cloned().collect()
        }
        Some(InitKind::Generator(Generator::SortedOffsets { total, .. })) => total.names(),
        Some(InitKind::Generator(Generator::SparseBitmap {
            density: Density::Percent(e),
        })) => e.names(),
        _ => BTreeSet::new(),
    }
}

/// Checks, on every public shape, that the single-row shape is legal and every row expression
/// lands inside the batch. One error per key at most: the first shape that fails.
pub(super) fn check_on_shapes(rep: &mut Reporter, task: &Task, at: &Located) {
    let Some(bi) = &task.checks.batch_invariant else {
        return;
    };
    for shape in task.shapes.iter().filter(|s| bi.batch(s) > 1) {
        let probe = bi.probe_shape(shape);
        if let Err(why) = task.check_shape(&probe) {
            rep.error(
                at.param.0.clone(),
                at.param.1.clone(),
                format!(
                    "the single-row run of shape `{}` ({}) is not a legal shape: {why}",
                    shape.name,
                    probe.describe()
                ),
            );
            break;
        }
    }
    for (e, (span, path)) in bi.rows.iter().zip(&at.rows) {
        for shape in task.shapes.iter().filter(|s| bi.batch(s) > 1) {
            let batch = bi.batch(shape);
            let why = match e.eval(shape) {
                Ok(r) if (0..batch).contains(&r) => continue,
                Ok(r) => format!("is {r}, outside the batch 0..{batch}"),
                Err(err) => err.to_string(),
            };
            rep.error(
                span.clone(),
                path.clone(),
                format!(
                    "row `{e}` on shape `{}` ({}) {why}",
                    shape.name,
                    shape.describe()
                ),
            );
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
id = "t"
title = "t"
category = "c"
[params]
M = { min = 1, max = 64 }
K = { min = 1 }
[[shapes]]
name = "s"
M = 8
K = 4
[[inputs]]
name = "x"
dtype = "f32"
shape = ["M", "K"]
init = { dist = "normal" }
[[inputs]]
name = "idx"
dtype = "i32"
shape = ["M"]
init = { dist = "randint", low = 0, high = "K" }
[[outputs]]
name = "y"
dtype = "f32"
shape = ["M"]
[check]
metric = "exact"
[roofline]
bytes = "4*M*K"
flops = "0"
peak = "fp32"
[checks.batch_invariant]
param = "M"
inputs = ["x", "idx"]
outputs = ["y"]
"#;

    fn parse(text: &str) -> Result<Task, String> {
        Task::parse(Path::new("task.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn rows_are_evaluated_per_shape_deduplicated_and_kept_in_range() {
        let t = parse(&BASE.replace(
            "outputs = [\"y\"]\n",
            "outputs = [\"y\"]\nrows = [\"M - 1\", 0, \"M - 1\", \"K\"]\n",
        ))
        .unwrap();
        let bi = t.checks.batch_invariant.as_ref().unwrap();
        assert_eq!(bi.rows_on(&t.shapes[0]), (vec![7, 0, 4], vec![]));
        // A held-out shape smaller than the rows: the row is dropped with a note.
        let mut small = t.shapes[0].clone();
        small.values.insert("M".into(), 3);
        let (rows, notes) = bi.rows_on(&small);
        assert_eq!(rows, vec![2, 0]);
        assert_eq!(
            notes,
            vec!["row `K` = 4 is outside 0..3 (M = 3)".to_string()]
        );
        let probe = bi.probe_shape(&t.shapes[0]);
        assert_eq!((probe.values["M"], probe.values["K"]), (1, 4));
    }

    #[test]
    fn batch_inputs_must_be_row_local_activations() {
        let weight = BASE.replace(
            "init = { dist = \"randint\", low = 0, high = \"K\" }",
            "init = { dist = \"randint\", low = 0, high = \"K\" }\nrole = \"weight\"",
        );
        let e = parse(&weight).unwrap_err();
        assert!(
            e.contains("`checks.batch_invariant.inputs[1]`: `idx` is a weight"),
            "{e}"
        );
        let perm = BASE.replace(
            "init = { dist = \"randint\", low = 0, high = \"K\" }",
            "init = { generator = \"permutation\" }",
        );
        let e = parse(&perm).unwrap_err();
        assert!(e.contains("`permutation` generator"), "{e}");
        let by_batch = BASE.replace("high = \"K\"", "high = \"M\"");
        let e = parse(&by_batch).unwrap_err();
        assert!(e.contains("`idx`'s init depends on `M`"), "{e}");
        // Not listed at all, an input with an M-dependent init is named as such.
        let unlisted = by_batch
            .replace(
                "shape = [\"M\"]\ninit = { dist = \"randint\"",
                "shape = [\"K\"]\ninit = { dist = \"randint\"",
            )
            .replace("inputs = [\"x\", \"idx\"]", "inputs = [\"x\"]");
        let e = parse(&unlisted).unwrap_err();
        assert!(
            e.contains("input `idx` (i32[K]) has an init that depends on `M` but is not listed"),
            "{e}"
        );
    }

    #[test]
    fn malformed_lists_are_located() {
        let e = parse(&BASE.replace("outputs = [\"y\"]", "outputs = []")).unwrap_err();
        assert!(
            e.contains("`checks.batch_invariant.outputs`: must name at least one tensor"),
            "{e}"
        );
        let e = parse(&BASE.replace(
            "inputs = [\"x\", \"idx\"]",
            "inputs = [\"x\", \"x\", \"idx\"]",
        ))
        .unwrap_err();
        assert!(
            e.contains("`checks.batch_invariant.inputs[1]`: `x` is listed twice"),
            "{e}"
        );
        let e = parse(&BASE.replace("outputs = [\"y\"]\n", "outputs = [\"y\"]\nrows = []\n"))
            .unwrap_err();
        assert!(
            e.contains("expected 1 to 16 row expressions, found 0"),
            "{e}"
        );
        let e = parse(&BASE.replace("outputs = [\"y\"]\n", "outputs = [\"y\"]\nrows = [\"Q\"]\n"))
            .unwrap_err();
        assert!(
            e.contains("`checks.batch_invariant.rows[0]`: unknown name `Q`"),
            "{e}"
        );
        let e = parse(&BASE.replace("param = \"M\"", "param = 3")).unwrap_err();
        assert!(
            e.contains("`checks.batch_invariant.param`: expected a string"),
            "{e}"
        );
        let e = parse(&BASE.replace(
            "[checks.batch_invariant]",
            "[checks]\nbatch_invariant = 1\n[unused]",
        ))
        .unwrap_err();
        assert!(
            e.contains("`checks.batch_invariant`: expected a table"),
            "{e}"
        );
    }
}
