//! Input generation and held-out shapes against every real task in `tasks/`: each task draws
//! held-out shapes (which must be legal and within the byte cap) and generates every input for
//! them under the base and both stress variants; the smallest public shape is generated too
//! when it is small. Any generator or declaration the generators cannot honour fails here.

use std::path::{Path, PathBuf};
use verifier::heldout::{self, HeldoutOptions};
use verifier::inputs::{generate_inputs, HostTensor, StressScale, Variant};
use verifier::task::{InitKind, Task};

fn task_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tasks");
    let mut out = Vec::new();
    for cat in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for t in std::fs::read_dir(cat.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let f = t.path().join("task.toml");
            if f.is_file() {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

fn check_inputs(task: &Task, inputs: &[HostTensor], what: &str) -> Result<(), String> {
    for (decl, t) in task.inputs.iter().zip(inputs) {
        let expect = decl.dtype.size_bytes() as u64 * t.numel();
        if t.bytes.len() as u64 != expect {
            return Err(format!(
                "{what}: `{}` has {} bytes, expected {expect}",
                decl.name,
                t.bytes.len()
            ));
        }
        if decl.dtype.is_float()
            && !matches!(
                decl.init.as_ref().map(|i| &i.kind),
                Some(InitKind::Constant { .. })
            )
        {
            let bad = (0..t.numel() as usize).find(|&i| !t.get_f64(i).is_finite());
            if let Some(i) = bad {
                return Err(format!("{what}: `{}` element {i} is not finite", decl.name));
            }
        }
    }
    Ok(())
}

#[test]
fn every_task_generates_inputs_for_heldout_and_small_public_shapes() {
    let files = task_files();
    assert!(!files.is_empty(), "no tasks found");
    let mut failures = Vec::new();
    let mut generated = 0u64;
    for f in &files {
        let task = match Task::load(f) {
            Ok(t) => t,
            // Validation of task files is another test's job; skip what does not load.
            Err(_) => continue,
        };
        let opts = HeldoutOptions {
            count: 2,
            max_bytes: 1 << 20,
            ..HeldoutOptions::default()
        };
        let shapes = heldout::draw(&task, 42, &opts);
        if shapes.is_empty() {
            eprintln!("{}: no held-out shape fits 1 MiB", task.id);
        }
        let mut all = shapes.clone();
        if let Some(small) = task
            .shapes
            .iter()
            .filter(|s| heldout::shape_bytes(&task, s).is_ok_and(|b| b <= 2 << 20))
            .min_by_key(|s| heldout::shape_bytes(&task, s).unwrap_or(u64::MAX))
        {
            all.push(small.clone());
        }
        for s in &shapes {
            if let Err(e) = task.check_shape(s) {
                failures.push(format!(
                    "{}: held-out {} is illegal: {e}",
                    task.id,
                    s.describe()
                ));
            }
        }
        for s in &all {
            for v in [
                Variant::Base,
                Variant::Stress(StressScale::Up),
                Variant::Stress(StressScale::Down),
            ] {
                let what = format!("{} {} ({v})", task.id, s.describe());
                match generate_inputs(&task, s, 7, v) {
                    Ok(inputs) => {
                        generated += inputs.iter().map(|t| t.bytes.len() as u64).sum::<u64>();
                        if let Err(e) = check_inputs(&task, &inputs, &what) {
                            failures.push(e);
                        }
                    }
                    Err(e) => failures.push(format!("{what}: {e}")),
                }
            }
        }
    }
    eprintln!(
        "{} tasks, {:.1} MB generated",
        files.len(),
        generated as f64 / 1e6
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
