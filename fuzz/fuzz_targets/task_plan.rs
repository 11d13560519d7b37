//! A task directory from outside the program: task.toml, plan.toml and the kernel source, in
//! one input separated by `SEPARATOR` lines (scripts/fuzz.sh seeds it with every bundled
//! task). What a valid task and plan lead to is exercised too: shapes, held-out draws and
//! corners, input generation (small shapes only), launch resolution and the launch analysis.
#![no_main]

use bench_suite::launches;
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use verifier::heldout::{self, HeldoutOptions};
use verifier::inputs::{self, StressScale, Variant};
use verifier::nvrtc::{KernelReport, KernelResources};
use verifier::plan::Plan;
use verifier::runtime::DeviceInfo;
use verifier::source;
use verifier::task::Task;

const SEPARATOR: &str = "\n#~~~~ksmith-fuzz~~~~\n";
/// Inputs are generated only for shapes this small: generation dominates a run, and the edge
/// cases of the generators are at small sizes.
const GENERATE_MAX_BYTES: u64 = 4 << 10;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, SEPARATOR);
    let task_text = parts.next().unwrap_or("");
    let plan_text = parts.next().unwrap_or("");
    let source_text = parts.next().unwrap_or("");

    let _ = source::check_includes(source_text);
    let kernels = source::kernel_names(source_text);

    let Ok(task) = Task::parse(Path::new("fuzz/task.toml"), task_text) else {
        return;
    };
    let _ = task.stressable();
    let mut shapes: Vec<_> = task.shapes.clone();
    let opts = HeldoutOptions {
        count: 2,
        max_bytes: 1 << 20,
        attempts: 64,
    };
    shapes.extend(heldout::draw(&task, 7, &opts));
    shapes.extend(heldout::corners(&task).into_iter().take(16));
    for shape in &shapes {
        let _ = task.check_shape(shape);
        let _ = shape.describe();
        let small = matches!(heldout::shape_bytes(&task, shape), Ok(b) if b <= GENERATE_MAX_BYTES);
        if small {
            for variant in [Variant::Base, Variant::Stress(StressScale::Up)] {
                let _ = inputs::generate_inputs(&task, shape, 1, variant);
            }
        }
    }

    let Ok(plan) = Plan::parse(Path::new("fuzz/plan.toml"), plan_text, &task, &kernels) else {
        return;
    };
    for shape in &shapes {
        let _ = plan.resolve(shape);
        let _ = plan.resolve_prepare(shape);
        let _ = plan.scratch_lengths(shape);
    }
    let reports: Vec<KernelReport> = plan
        .kernel_names()
        .into_iter()
        .enumerate()
        .map(|(i, name)| KernelReport {
            symbol: name.clone(),
            resources: Some(KernelResources {
                symbol: name.clone(),
                registers: [32, 64, 128, 255][i % 4],
                spill_stores: 0,
                spill_loads: 0,
                stack_frame: 0,
                smem: [0, 1024, 49152, 232448][i % 4],
                barriers: 1,
                cmem0: 0,
            }),
            param_bytes: Some(vec![8; i % 6]),
            name,
        })
        .collect();
    let _ = bench_suite::check::argument_problems(&task, &plan, &reports);
    if let Some(device) = DeviceInfo::preset("h100") {
        let refs: Vec<_> = shapes.iter().collect();
        let _ = launches::analyze(&task, &plan, &reports, &refs, &device);
    }
});
