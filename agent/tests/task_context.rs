//! Prompt context built from real task declarations.

use std::path::Path;

use agent::prompt::{CoderMode, DeviceFacts, PromptContext, PromptRenderer};
use agent::task_context::{task_context, task_rules};
use verifier::task::Task;

const TASK: &str = r#"
id = "rmsnorm_residual"
title = "Fused residual add + RMSNorm"
category = "normalization"
description = "y = RMSNorm(x + r) * g; also returns h = x + r."

[params]
M = { min = 1 }
N = { min = 64, max = 65536, multiple_of = 8, description = "hidden size" }

[[shapes]]
name = "small"
M = 4096
N = 4096

[[inputs]]
name = "x"
dtype = "bf16"
shape = ["M", "N"]
init = { dist = "normal", mean = 0.0, std = 1.0 }
[[inputs]]
name = "g"
dtype = "bf16"
shape = ["N"]
init = { dist = "uniform", low = 0.5, high = 1.5 }
role = "weight"

[[outputs]]
name = "y"
dtype = "bf16"
shape = ["M", "N"]
check = { metric = "allclose", atol = 1e-2, rtol = 1e-2 }

[check]
metric = "normalized_max"
tol = 1e-2

[roofline]
bytes = "2*M*N*2 + 2*N"
flops = "4*M*N"
peak = "fp32"

[compile]
fast_math = true
"#;

#[test]
fn task_declaration_becomes_prompt_context() {
    let task = Task::parse(Path::new("task.toml"), TASK).expect("valid task");
    let tc = task_context(&task, "class Model(torch.nn.Module): ...");
    assert_eq!(tc.params[1].range, "64 to 65536, multiple of 8");
    assert_eq!(tc.params[1].description.as_deref(), Some("hidden size"));
    assert_eq!(tc.io.len(), 3);
    assert_eq!(tc.io[1].role, "weight");
    assert_eq!(tc.io[2].role, "output");
    assert_eq!(tc.io[0].cuda_type.as_deref(), Some("__nv_bfloat16"));
    assert!(
        tc.tolerance.contains("max|y - ref| / max|ref| <= 0.01"),
        "{}",
        tc.tolerance
    );
    assert!(
        tc.tolerance
            .contains("`y`: |y - ref| <= 0.01 + 0.01 * |ref|"),
        "{}",
        tc.tolerance
    );
    let rules = task_rules(&task);
    assert!(rules.fast_math);
    assert!(rules.header_allowlist.iter().any(|h| h == "cuda_bf16.h"));
    assert!(rules.header_allowlist.iter().any(|h| h == "cuda/std/*"));

    let ctx = PromptContext {
        task: tc,
        rules,
        device: DeviceFacts::default(),
        ..PromptContext::default()
    };
    let p = PromptRenderer::builtin()
        .expect("templates")
        .coder(&ctx, &CoderMode::Initial)
        .expect("renders");
    assert!(
        p.contains("| `g` | input | bf16 | `__nv_bfloat16` | [N] | weight |"),
        "{p}"
    );
    assert!(p.contains("- small: M=4096, N=4096"));
    assert!(p.contains("and `--use_fast_math`"));
    assert!(p.contains("Roofline: bytes = 2*M*N*2 + 2*N, flops = 4*M*N, peak = fp32."));
}

#[test]
fn a_seed_task_from_the_suite_renders() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tasks/activation/swiglu");
    let task = Task::load(&dir.join("task.toml")).expect("swiglu task loads");
    let spec = std::fs::read_to_string(dir.join("spec.py")).expect("spec.py");
    let ctx = PromptContext {
        task: task_context(&task, &spec),
        rules: task_rules(&task),
        ..PromptContext::default()
    };
    let p = PromptRenderer::builtin()
        .expect("templates")
        .coder(&ctx, &CoderMode::Initial)
        .expect("renders");
    for t in task.inputs.iter().chain(task.outputs.iter()) {
        assert!(
            p.contains(&format!("| `{}` |", t.name)),
            "{} missing",
            t.name
        );
    }
    for s in &task.shapes {
        assert!(
            p.contains(&format!("- {}: ", s.name)),
            "shape {} missing",
            s.name
        );
    }
    assert!(p.contains(spec.trim()));
}
