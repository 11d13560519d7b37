//! The broken-kernel corpus (verifier/tests/broken/, see its README) on CPU: every entry is well
//! formed, names a task that exists (swiglu unless its expect.toml says `task = "ID"`) and
//! verdicts that exist, runs on shapes its task has, has a plan valid under its task's rules
//! (except the `invalid_plan` entry) and compiles with NVRTC for sm_90a (except the
//! `compile_error` entry). Running them needs a GPU:
//! tests/gpu_broken.rs in the root crate. Without NVRTC the compile part is skipped visibly,
//! except under CI (`CI=true`), where a missing NVRTC is a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use verifier::nvrtc::Arch;
use verifier::runtime::corpus::{self, Entry};
use verifier::runtime::evaluate::{candidate_plan, compile, CompileFailure, TaskBundle};
use verifier::verdict::{Verdict, VerdictKind};

/// The repository: KSMITH_ROOT when the prebuilt test runs elsewhere (scripts/gpu-check.sh).
fn root() -> PathBuf {
    std::env::var_os("KSMITH_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

fn corpus() -> Vec<Entry> {
    corpus::load(&root().join("verifier/tests/broken")).unwrap()
}

/// The tasks of the corpus's entries, by id, each loaded once; an entry naming a task that does
/// not exist (or is invalid) fails here, naming the entry's expect.toml.
fn tasks(entries: &[Entry]) -> BTreeMap<String, TaskBundle> {
    let tasks_root = root().join("tasks");
    let mut out = BTreeMap::new();
    for entry in entries {
        let id = entry.task_id();
        if out.contains_key(id) {
            continue;
        }
        let dir = entry
            .task_dir(&tasks_root)
            .unwrap_or_else(|e| panic!("{}: {e}", entry.name));
        let bundle =
            TaskBundle::load(&dir).unwrap_or_else(|e| panic!("{}: task `{id}`: {e}", entry.name));
        assert_eq!(bundle.task.id, id, "{}: {}", entry.name, dir.display());
        out.insert(id.to_string(), bundle);
    }
    out
}

#[test]
fn every_entry_is_well_formed_and_the_corpus_covers_the_bar() {
    let entries = corpus();
    let tasks = tasks(&entries);
    let mut covered = BTreeSet::new();
    for entry in &entries {
        let (name, e) = (&entry.name, &entry.expect);
        let bundle = &tasks[entry.task_id()];
        assert!(!e.description.is_empty(), "{name}");
        assert!(!e.verdict.is_empty(), "{name}: no verdict");
        // Unknown verdict names do not get this far: expect.toml does not parse.
        covered.extend(e.verdict.iter().copied());
        if let Some(v) = &e.variant {
            assert!(v == "base" || v == "stress", "{name}: variant `{v}`");
        }
        // The shapes the entry runs on (the swiglu defaults unless it lists its own).
        let opts = entry.options();
        for s in &opts.shapes {
            assert!(
                bundle.task.shape(s).is_some(),
                "{name}: task `{}` has no shape `{s}` (an entry for a task other than {} lists options.shapes)",
                entry.task_id(),
                corpus::DEFAULT_TASK
            );
        }
        // The failing shape: one of those, or a held-out shape the entry draws.
        if let Some(s) = &e.shape {
            let heldout = (0..opts.heldout_shapes).any(|k| *s == format!("heldout-{k}"));
            assert!(
                opts.shapes.contains(s) || heldout,
                "{name}: `shape = \"{s}\"` is neither one of its shapes {:?} nor one of its {} held-out shapes",
                opts.shapes,
                opts.heldout_shapes
            );
        }
        let _ = (e.options.heldout, e.options.timeout_s, &e.message_contains);
        match candidate_plan(&bundle.task, &entry.source, &entry.plan) {
            Ok(plan) => {
                assert!(
                    !e.verdict.contains(&VerdictKind::InvalidPlan),
                    "{name}: plan is valid"
                );
                // It resolves on every public shape it runs on, and on the single-row shape
                // of the task's batch-invariance check: a failure there would be a plan error,
                // not the breakage the entry is about.
                let task = &bundle.task;
                for s in &opts.shapes {
                    let Some(shape) = task.shape(s) else { continue };
                    let mut shapes = vec![shape.clone()];
                    if let Some(b) = &task.checks.batch_invariant {
                        if b.batch(shape) > 1 {
                            shapes.push(b.probe_shape(shape));
                        }
                    }
                    for sh in &shapes {
                        plan.resolve(sh)
                            .unwrap_or_else(|m| panic!("{name}: plan on {}: {m}", sh.describe()));
                        plan.resolve_prepare(sh).unwrap_or_else(|m| {
                            panic!("{name}: prepare on {}: {m}", sh.describe())
                        });
                    }
                }
            }
            Err(v) => {
                assert_eq!(v.kind(), VerdictKind::InvalidPlan);
                assert_eq!(
                    e.verdict,
                    vec![VerdictKind::InvalidPlan],
                    "{name}: {}",
                    v.feedback()
                );
                let want = e.message_contains.as_deref().unwrap_or("");
                assert!(v.feedback().contains(want), "{name}: {}", v.feedback());
            }
        }
    }
    // The GPU bar: at least ten broken kernels, every failure mode of the brief represented.
    let broken = entries
        .iter()
        .filter(|e| e.expect.verdict != vec![VerdictKind::Correct])
        .count();
    assert!(broken >= 10, "only {broken} broken kernels");
    for kind in [
        VerdictKind::RuntimeFault,
        VerdictKind::Timeout,
        VerdictKind::WrongOutput,
        VerdictKind::InputMutated,
        VerdictKind::LaunchError,
        VerdictKind::Nondeterministic,
        VerdictKind::Correct,
    ] {
        assert!(covered.contains(&kind), "no corpus entry expects `{kind}`");
    }
    eprintln!("{} corpus entries ({broken} broken)", entries.len());
}

#[test]
fn every_entry_compiles_for_sm_90a_except_the_compile_error() {
    let Some(compiler) = verifier::nvrtc::compiler_for_tests(
        "every_entry_compiles_for_sm_90a_except_the_compile_error",
    ) else {
        return;
    };
    let entries = corpus();
    let tasks = tasks(&entries);
    let mut compiled = 0;
    for entry in entries {
        let (name, e, source) = (&entry.name, &entry.expect, &entry.source);
        let bundle = &tasks[entry.task_id()];
        let Ok(plan) = candidate_plan(&bundle.task, source, &entry.plan) else {
            continue;
        };
        match compile(
            &compiler,
            &bundle.task,
            source,
            &plan,
            Arch::DEFAULT,
            "kernel.cu",
        ) {
            Ok(c) => {
                assert_ne!(
                    e.verdict,
                    vec![VerdictKind::CompileError],
                    "{name} compiled"
                );
                assert!(!c.cubin.is_empty(), "{name}");
                for k in plan.kernel_names() {
                    let report = c.kernel(&k).unwrap_or_else(|| {
                        panic!("{name}: no kernel `{k}` in the compiled program")
                    });
                    assert!(
                        report.resources.is_some(),
                        "{name}: no ptxas report for `{k}`"
                    );
                }
                // Each entry is broken in one way on purpose, never by a plan whose arguments
                // miss the kernel's parameters (the runtime would refuse it before launching).
                for shape in &bundle.task.shapes {
                    for l in plan.resolve(shape).into_iter().flatten() {
                        let sizes = c
                            .kernel(&l.kernel)
                            .and_then(|k| k.param_bytes.clone())
                            .unwrap_or_else(|| {
                                panic!("{name}: no PTX parameters for `{}`", l.kernel)
                            });
                        if let Err(err) = verifier::runtime::launch::check_params(&l, &sizes) {
                            panic!("{name} at {}: {err}", shape.name);
                        }
                    }
                }
                compiled += 1;
            }
            Err(CompileFailure::Verdict(v)) => {
                assert_eq!(
                    e.verdict,
                    vec![VerdictKind::CompileError],
                    "{name}: {}",
                    v.feedback()
                );
                assert!(matches!(*v, Verdict::CompileError { .. }));
                assert!(v.feedback().contains("kernel.cu"), "{}", v.feedback());
            }
            Err(CompileFailure::Harness(h)) => panic!("{name}: {h}"),
        }
    }
    eprintln!("{compiled} corpus kernels compiled for {}", Arch::DEFAULT);
    assert!(compiled >= 16, "only {compiled} corpus kernels compiled");
}
