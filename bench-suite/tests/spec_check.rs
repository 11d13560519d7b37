//! `ksmith tasks spec` without torch: spec_check on the CPU stand-in for torch runs the smallest
//! (or named) shape of each task on the CPU device, reports spec.py failures, wrong outputs and
//! degenerate ones (NaN, constants) per (task, shape), and says plainly when PyTorch is missing.
//! With real torch the same command is run over the whole suite by scripts/test.sh.

mod common;

use bench_suite::spec_check::{
    self, degeneracies, output_facts, Part, Probe, ShapePick, SpecCheckOptions, SpecStatus,
};
use bench_suite::suite::{load_task_dir, Entry};
use bench_suite::torch::{RunnerConfig, RunnerScript};
use common::python::{have_python, stand_in};
use std::path::{Path, PathBuf};
use std::time::Duration;
use verifier::dtype::DType;
use verifier::inputs::HostTensor;

fn fixture(f: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../verifier/tests/fixtures/malformed/plan_unknown_kernel")
        .join(f);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A valid row-copy task with shapes `small` (4x64) and `tiny` (2x8) whose input `x` has
/// `dtype` and `init`, and whose spec.py is `spec`.
fn task(root: &Path, id: &str, dtype: &str, init: &str, spec: &str) -> Entry {
    let dir = root.join("rows").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let toml = fixture("task.toml")
        .replace("id = \"plan_unknown_kernel\"", &format!("id = \"{id}\""))
        .replace("category = \"malformed\"", "category = \"rows\"")
        .replace("dtype = \"f32\"", &format!("dtype = \"{dtype}\""))
        .replace("init = { dist = \"normal\" }", init)
        .replace(
            "[[inputs]]",
            "[[shapes]]\nname = \"tiny\"\nM = 2\nN = 8\n\n[[inputs]]",
        );
    let metric = if dtype == "f32" {
        ""
    } else {
        "metric = \"exact\"\n"
    };
    // A second input, `w`, for specs that use it (or, to be caught, do not).
    let toml = toml.replace(
        "[[outputs]]",
        "[[inputs]]\nname = \"w\"\ndtype = \"f32\"\nshape = [\"N\"]\ninit = { dist = \"normal\" }\n\n[[outputs]]",
    );
    let toml = if metric.is_empty() {
        toml
    } else {
        toml.replace("metric = \"normalized_max\"\ntol = 1e-5\n", metric)
    };
    std::fs::write(dir.join("task.toml"), toml).unwrap();
    std::fs::write(dir.join("spec.py"), spec).unwrap();
    std::fs::write(dir.join("reference.cu"), fixture("reference.cu")).unwrap();
    std::fs::write(
        dir.join("reference.toml"),
        fixture("reference.toml").replace("\"copy_row\"", "\"copy_rows\""),
    )
    .unwrap();
    match load_task_dir(&dir) {
        Ok(td) => Entry::Ok(Box::new(td)),
        Err(d) => panic!("{id}: {d:?}"),
    }
}

/// Reads only `x` (the stand-in torch computes nothing): `w` is an input no output depends on.
const COPY_X: &str =
    "import torch\n\nclass Model(torch.nn.Module):\n    def forward(self, x, w):\n        return x.clone()\n";
/// Depends on all of `x` and on both halves of `w`: `x` with its first byte xor-ed with the
/// first and the last byte of `w`.
const COPY: &str = "import torch\n\nclass Model(torch.nn.Module):\n    def forward(self, x, w):\n        y = x.clone()\n        y.buf[0] ^= w.buf[0] ^ w.buf[-1]\n        return y\n";

/// `x` (xor-ed with `w` so that both matter), with its first element set to +inf when some
/// element of `x` exceeds 100 in magnitude.
const OVERFLOWS: &str = "import struct\nimport torch\n\nclass Model(torch.nn.Module):\n    def forward(self, x, w):\n        y = x.clone()\n        y.buf[0] ^= w.buf[0] ^ w.buf[-1]\n        v = struct.unpack('<%df' % (len(x.buf) // 4), bytes(x.buf))\n        if max(abs(e) for e in v) > 100:\n            y.buf[0:4] = struct.pack('<f', float('inf'))\n        return y\n";

fn opts(shapes: ShapePick, runner: RunnerConfig) -> SpecCheckOptions {
    SpecCheckOptions {
        shapes,
        seed: 1,
        sensitivity: true,
        stress: true,
        max_bytes: None,
        heldout: 0,
        heldout_seed: 1,
        runner,
    }
}

#[test]
fn facts_find_non_finite_and_constant_outputs() {
    let f32s = |v: &[f32]| HostTensor {
        dtype: DType::F32,
        dims: vec![v.len() as u64],
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    };
    let ok = output_facts("y", &f32s(&[1.0, -3.5, 0.25]));
    assert_eq!((ok.non_finite, ok.max_abs, ok.constant), (0, 3.5, false));
    assert!(degeneracies(&[ok]).is_empty());

    let nan = output_facts("y", &f32s(&[1.0, f32::NAN, f32::INFINITY, -2.0]));
    assert_eq!((nan.non_finite, nan.max_abs), (2, 2.0));
    let d = degeneracies(&[nan]);
    assert_eq!(d.len(), 1);
    assert!(
        d[0].contains("`y`: 2 of 4 values are NaN or infinite"),
        "{d:?}"
    );

    let flat = output_facts("z", &f32s(&[-1.0; 6]));
    assert!(flat.constant);
    let d = degeneracies(&[flat]);
    assert!(d[0].contains("`z`: all 6 values are equal"), "{d:?}");

    // One element is not "constant"; +0 and -0 differ in bits, so they are not constant either.
    assert!(!output_facts("s", &f32s(&[5.0])).constant);
    assert!(!output_facts("s", &f32s(&[0.0, -0.0])).constant);
    // Integer outputs have no non-finite values.
    let ints = HostTensor {
        dtype: DType::I32,
        dims: vec![2],
        bytes: [7i32, -9].iter().flat_map(|x| x.to_le_bytes()).collect(),
    };
    let f = output_facts("i", &ints);
    assert_eq!((f.non_finite, f.max_abs, f.constant), (0, 9.0, false));
}

#[test]
fn the_smallest_shape_is_picked_by_bytes() {
    let root = tempfile::tempdir().unwrap();
    let Entry::Ok(td) = task(
        root.path(),
        "copy",
        "f32",
        "init = { dist = \"normal\" }",
        COPY,
    ) else {
        unreachable!()
    };
    let bytes: Vec<Option<u64>> = td
        .task
        .shapes
        .iter()
        .map(|s| verifier::heldout::shape_bytes(&td.task, s).ok())
        .collect();
    // x [M, N] and y [M, N] in f32, w [N] in f32.
    assert_eq!(
        bytes,
        vec![Some(4 * (2 * 4 * 64 + 64)), Some(4 * (2 * 2 * 8 + 8))]
    );
}

#[test]
fn a_suite_through_the_stand_in_torch_on_the_cpu() {
    if !have_python() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let normal = "init = { dist = \"normal\" }";
    let entries = [
        task(root.path(), "copy", "f32", normal, COPY),
        task(
            root.path(),
            "constant",
            "i8",
            "init = { dist = \"randint\", low = 3, high = 4 }",
            COPY_X,
        ),
        task(
            root.path(),
            "crashes",
            "f32",
            normal,
            "import torch\n\nclass Model(torch.nn.Module):\n    def forward(self, x, w):\n        return undefined_name\n",
        ),
        task(
            root.path(),
            "two_outputs",
            "f32",
            normal,
            "import torch\n\nclass Model(torch.nn.Module):\n    def forward(self, x, w):\n        return x.clone(), x.clone()\n",
        ),
    ];
    let entries = {
        let mut e = entries.to_vec();
        e.push(task(root.path(), "ignores_w", "f32", normal, COPY_X));
        // Reads only the front of `w`, as a kernel that scans the first entries of a row would.
        e.push(task(
            root.path(),
            "reads_w_front",
            "f32",
            normal,
            "import torch\n\nclass Model(torch.nn.Module):\n    def forward(self, x, w):\n        y = x.clone()\n        y.buf[0] ^= w.buf[0]\n        return y\n",
        ));
        // Finite on the declared N(0, 1) inputs; infinite where the stress variant scales `x`
        // up (by 2^10 for f32), as a product through several fp16 layers would overflow.
        e.push(task(
            root.path(),
            "overflows_under_stress",
            "f32",
            normal,
            OVERFLOWS,
        ));
        e
    };
    let selected: Vec<&Entry> = entries.iter().collect();
    // "No CUDA" as on a CPU-only machine: the CPU device must not care.
    let runner = stand_in(&[("KSMITH_STANDIN_NO_CUDA", "1")]);
    let mut seen = Vec::new();
    let rows = spec_check::check(
        &selected,
        &opts(ShapePick::Smallest, runner.clone()),
        &mut |r| seen.push((r.id.clone(), r.shape.clone())),
    )
    .expect("the stand-in counts as torch");
    assert_eq!(seen.len(), 7);
    let by_id = |id: &str| rows.iter().find(|r| r.id == id).unwrap();

    let ok = by_id("copy");
    assert_eq!((ok.status, ok.shape.as_str()), (SpecStatus::Ok, "tiny"));
    assert_eq!(ok.outputs.len(), 1);
    assert_eq!(
        (ok.outputs[0].dims.clone(), ok.outputs[0].dtype.as_str()),
        (vec![2, 8], "f32")
    );
    assert!(ok.outputs[0].max_abs > 0.0);

    assert_eq!(
        ok.redrawn,
        vec!["x", "w"],
        "both inputs redrawn, both matter"
    );
    assert!(ok.problems.is_empty(), "{ok:?}");

    let ignores = by_id("ignores_w");
    assert_eq!(ignores.status, SpecStatus::Degenerate);
    let half = |part: Part| spec_check::insensitive(&Probe { input: 1, part }.describe("w"), 4 + 2);
    assert_eq!(
        ignores.problems,
        vec![half(Part::Lower), half(Part::Upper)],
        "x matters, w does not"
    );
    assert!(ignores.problems[1]
        .contains("the upper half of the last dimension of input `w` is drawn from another seed"));

    let over = by_id("overflows_under_stress");
    assert_eq!(over.status, SpecStatus::Degenerate, "{over:?}");
    assert_eq!(over.problems.len(), 1, "{over:?}");
    assert!(
        over.problems[0].contains(
            "output `y`: 1 of 16 values are NaN or infinite on the stress (heavy-tailed, scaled up) inputs"
        ) && over.problems[0].contains("`stress = false`"),
        "{over:?}"
    );
    assert_eq!(
        over.outputs[0].non_finite, 0,
        "finite on the declared inputs"
    );
    // Without the stress run it is a clean task.
    let mut no_stress = opts(ShapePick::Smallest, runner.clone());
    no_stress.stress = false;
    let o = spec_check::check(&selected[selected.len() - 1..], &no_stress, &mut |_| {}).unwrap();
    assert_eq!(o[0].status, SpecStatus::Ok, "{:?}", o[0]);

    let front = by_id("reads_w_front");
    assert_eq!(front.status, SpecStatus::Degenerate);
    assert_eq!(front.problems, vec![half(Part::Upper)], "{front:?}");

    let c = by_id("constant");
    assert_eq!(c.status, SpecStatus::Degenerate);
    assert!(c.problems[0].contains("all 16 values are equal"), "{c:?}");
    // The constant input is the same for every seed: only `w` is redrawn, and it is ignored.
    assert_eq!(c.redrawn, vec!["w"]);
    assert_eq!(c.problems[1..], [half(Part::Lower), half(Part::Upper)]);

    let crash = by_id("crashes");
    assert_eq!(crash.status, SpecStatus::Failed);
    assert!(
        crash.problems[0].contains("NameError") && crash.problems[0].contains("undefined_name"),
        "{crash:?}"
    );

    let two = by_id("two_outputs");
    assert_eq!(two.status, SpecStatus::Failed);
    assert!(
        two.problems[0].contains("Model returned 2 value(s), the task declares 1"),
        "{two:?}"
    );

    // Named shapes, and a name no task has.
    let rows = spec_check::check(
        &selected[..1],
        &opts(ShapePick::Named(vec!["small".into()]), runner.clone()),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        (rows[0].shape.as_str(), rows[0].outputs[0].dims.clone()),
        ("small", vec![4, 64])
    );
    let rows = spec_check::check(
        &selected[..1],
        &opts(ShapePick::Named(vec!["huge".into()]), runner.clone()),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(rows[0].status, SpecStatus::Failed);
    assert!(
        rows[0].problems[0].contains("no shape named huge (the task has small, tiny)"),
        "{:?}",
        rows[0]
    );
    let rows = spec_check::check(
        &selected[..1],
        &opts(ShapePick::All, runner.clone()),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(rows.len(), 2);

    // --max-bytes skips the larger public shape (never the smallest); held-out shapes come
    // after the public ones, labelled with their parameters, without the sensitivity runs.
    let mut o = opts(ShapePick::All, runner);
    o.max_bytes = Some(1);
    o.heldout = 2;
    let rows = spec_check::check(&selected[..1], &o, &mut |_| {}).unwrap();
    let got: Vec<(&str, SpecStatus)> = rows.iter().map(|r| (r.shape.as_str(), r.status)).collect();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0], ("small", SpecStatus::Skipped));
    assert!(
        rows[0].problems[0].contains("over --max-bytes"),
        "{:?}",
        rows[0]
    );
    assert_eq!(got[1], ("tiny", SpecStatus::Ok));
    for r in &rows[2..] {
        assert!(
            r.shape.starts_with("heldout-") && r.shape.contains("M="),
            "{r:?}"
        );
        assert_eq!(r.status, SpecStatus::Ok, "{r:?}");
        assert!(r.redrawn.is_empty());
    }
}

#[test]
fn missing_torch_or_python_is_said_once_and_stops_the_check() {
    if !have_python() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let e = task(
        root.path(),
        "copy",
        "f32",
        "init = { dist = \"normal\" }",
        COPY,
    );
    let fake = root.path().join("no_torch");
    std::fs::create_dir_all(fake.join("torch")).unwrap();
    std::fs::write(
        fake.join("torch/__init__.py"),
        "raise ImportError('No module named torch (stand-in)')\n",
    )
    .unwrap();
    let runner = RunnerConfig {
        env: vec![("PYTHONPATH".into(), fake.display().to_string())],
        timeout: Duration::from_secs(60),
        ..RunnerConfig::default()
    };
    let err = spec_check::check(&[&e, &e], &opts(ShapePick::Smallest, runner), &mut |_| {})
        .expect_err("no torch");
    assert!(err.0.contains("not importable"), "{err}");
    assert!(err.0.contains("KSMITH_PYTHON"), "{err}");

    let runner = RunnerConfig {
        python: PathBuf::from("/nonexistent/python3"),
        script: RunnerScript::Embedded,
        ..RunnerConfig::default()
    };
    let err = spec_check::check(&[&e], &opts(ShapePick::Smallest, runner), &mut |_| {})
        .expect_err("no python");
    assert!(err.0.contains("/nonexistent/python3"), "{err}");
}
