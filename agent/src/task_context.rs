//! Building the prompt's task context and rules from a validated task (`verifier::task::Task`),
//! so every caller shows the model the same facts in the same words.

use verifier::task::{Check, Peak, Role, Task, TensorDecl};

use crate::prompt::{IoKind, IoRow, NamedValue, ParamRow, Rules, ShapeRow, TaskContext};

/// The task as the model sees it; `spec_py` is the text of the task's `spec.py`.
pub fn task_context(task: &Task, spec_py: &str) -> TaskContext {
    let io = task
        .inputs
        .iter()
        .map(|t| io_row(t, IoKind::Input))
        .chain(task.outputs.iter().map(|t| io_row(t, IoKind::Output)))
        .collect();
    TaskContext {
        id: task.id.clone(),
        title: task.title.clone(),
        category: task.category.clone(),
        source: task.source.clone(),
        description: task.description.clone(),
        spec_py: spec_py.to_string(),
        params: task
            .params
            .iter()
            .map(|p| ParamRow {
                name: p.name.clone(),
                range: range_text(p.min, p.max, p.multiple_of, p.values.as_deref()),
                description: p.description.clone(),
            })
            .collect(),
        io,
        shapes: task
            .shapes
            .iter()
            .map(|s| ShapeRow {
                name: s.name.clone(),
                values: s
                    .values
                    .iter()
                    .map(|(k, v)| NamedValue {
                        name: k.clone(),
                        value: *v,
                    })
                    .collect(),
            })
            .collect(),
        tolerance: tolerance_text(task),
        roofline: Some(format!(
            "bytes = {}, flops = {}, peak = {}",
            task.roofline.bytes.text(),
            task.roofline.flops.text(),
            peak_name(task.roofline.peak)
        )),
    }
}

/// The coding rules for this task: the verifier's include allowlist and the task's fast-math
/// policy.
pub fn task_rules(task: &Task) -> Rules {
    let mut headers: Vec<String> = verifier::source::INCLUDE_ALLOWLIST
        .iter()
        .map(|h| h.to_string())
        .collect();
    headers.extend(
        verifier::source::INCLUDE_ALLOWED_PREFIXES
            .iter()
            .map(|p| format!("{p}*")),
    );
    Rules {
        header_allowlist: headers,
        fast_math: task.compile.fast_math,
        extra: Vec::new(),
    }
}

fn io_row(t: &TensorDecl, kind: IoKind) -> IoRow {
    let role = match (kind, t.role) {
        (IoKind::Output, _) => "output",
        (IoKind::Input, Role::Weight) => "weight",
        (IoKind::Input, Role::Activation) => "activation",
    };
    IoRow {
        name: t.name.clone(),
        kind,
        dtype: t.dtype.to_string(),
        cuda_type: Some(t.dtype.cuda_type().to_string()),
        shape: t.shape.iter().map(|e| e.text().to_string()).collect(),
        role: role.to_string(),
        description: t.description.clone(),
    }
}

fn range_text(
    min: Option<i64>,
    max: Option<i64>,
    multiple_of: Option<i64>,
    values: Option<&[i64]>,
) -> String {
    if let Some(vals) = values {
        let list: Vec<String> = vals.iter().map(|v| v.to_string()).collect();
        return format!("one of {}", list.join(", "));
    }
    let mut parts = Vec::new();
    match (min, max) {
        (Some(lo), Some(hi)) => parts.push(format!("{lo} to {hi}")),
        (Some(lo), None) => parts.push(format!("at least {lo}")),
        (None, Some(hi)) => parts.push(format!("at most {hi}")),
        (None, None) => {}
    }
    if let Some(m) = multiple_of {
        parts.push(format!("multiple of {m}"));
    }
    if parts.is_empty() {
        "any value".to_string()
    } else {
        parts.join(", ")
    }
}

fn check_text(c: &Check) -> String {
    match c {
        Check::NormalizedMax { tol } => format!("max|y - ref| / max|ref| <= {tol}"),
        Check::AllClose {
            atol,
            rtol,
            max_bad_fraction,
        } => {
            if *max_bad_fraction > 0.0 {
                format!("|y - ref| <= {atol} + {rtol} * |ref| for all but a fraction {max_bad_fraction} of the elements (NaN, Inf and unwritten elements never pass)")
            } else {
                format!("|y - ref| <= {atol} + {rtol} * |ref| for every element")
            }
        }
        Check::Exact => "bit-exact".to_string(),
    }
}

fn tolerance_text(task: &Task) -> String {
    let mut s = format!("every output: {}", check_text(&task.check));
    for o in &task.outputs {
        if let Some(c) = &o.check {
            s.push_str(&format!("; `{}`: {}", o.name, check_text(c)));
        }
    }
    s
}

fn peak_name(p: Peak) -> &'static str {
    match p {
        Peak::Fp64 => "fp64",
        Peak::Fp32 => "fp32",
        Peak::Tf32Tensor => "tf32_tensor",
        Peak::Fp16Tensor => "fp16_tensor",
        Peak::Bf16Tensor => "bf16_tensor",
        Peak::Fp8Tensor => "fp8_tensor",
        Peak::Int8Tensor => "int8_tensor",
        Peak::Int32 => "int32",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_naturally() {
        assert_eq!(range_text(Some(1), None, None, None), "at least 1");
        assert_eq!(
            range_text(Some(64), Some(65536), Some(8), None),
            "64 to 65536, multiple of 8"
        );
        assert_eq!(range_text(None, Some(16), None, None), "at most 16");
        assert_eq!(
            range_text(Some(1), None, None, Some(&[64, 128])),
            "one of 64, 128"
        );
        assert_eq!(range_text(None, None, None, None), "any value");
    }
}
