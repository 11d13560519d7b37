//! The broken-kernel corpus (verifier/tests/broken/, see its README) on CPU: every entry is well
//! formed, names verdicts that exist, has a valid plan (except the `invalid_plan` entry) and
//! compiles with NVRTC for sm_90 (except the `compile_error` entry). Running them needs a GPU:
//! tests/gpu_broken.rs in the root crate. Without NVRTC the compile part is skipped visibly,
//! except under CI (`CI=true`), where a missing NVRTC is a failure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use verifier::nvrtc::{Arch, Compiler, Locator};
use verifier::runtime::corpus::{self, Entry};
use verifier::runtime::evaluate::{candidate_plan, compile, CompileFailure, TaskBundle};
use verifier::verdict::Verdict;

const KINDS: &[&str] = &[
    "compile_error",
    "invalid_plan",
    "launch_error",
    "runtime_fault",
    "timeout",
    "wrong_output",
    "input_mutated",
    "nondeterministic",
    "correct",
];

/// The repository: KSMITH_ROOT when the prebuilt test runs elsewhere (scripts/gpu-check.sh).
fn root() -> PathBuf {
    std::env::var_os("KSMITH_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

fn corpus() -> Vec<Entry> {
    corpus::load(&root().join("verifier/tests/broken")).unwrap()
}

fn swiglu() -> TaskBundle {
    TaskBundle::load(&root().join("tasks/activation/swiglu")).unwrap()
}

#[test]
fn every_entry_is_well_formed_and_the_corpus_covers_the_bar() {
    let bundle = swiglu();
    let entries = corpus();
    let mut covered = BTreeSet::new();
    for entry in &entries {
        let (name, e) = (&entry.name, &entry.expect);
        assert!(!e.description.is_empty(), "{name}");
        assert!(!e.verdict.is_empty(), "{name}: no verdict");
        for v in &e.verdict {
            assert!(KINDS.contains(&v.as_str()), "{name}: unknown verdict `{v}`");
            covered.insert(v.clone());
        }
        if let Some(v) = &e.variant {
            assert!(v == "base" || v == "stress", "{name}: variant `{v}`");
        }
        for s in e.shape.iter().chain(e.options.shapes.iter().flatten()) {
            assert!(bundle.task.shape(s).is_some(), "{name}: no shape `{s}`");
        }
        let _ = (e.options.heldout, e.options.timeout_s, &e.message_contains);
        match candidate_plan(&bundle.task, &entry.source, &entry.plan) {
            Ok(_) => assert!(
                !e.verdict.contains(&"invalid_plan".to_string()),
                "{name}: plan is valid"
            ),
            Err(v) => {
                assert_eq!(v.kind(), "invalid_plan");
                assert_eq!(e.verdict, vec!["invalid_plan"], "{name}: {}", v.feedback());
                let want = e.message_contains.as_deref().unwrap_or("");
                assert!(v.feedback().contains(want), "{name}: {}", v.feedback());
            }
        }
    }
    // The GPU bar: at least ten broken kernels, every failure mode of the brief represented.
    let broken = entries
        .iter()
        .filter(|e| e.expect.verdict != vec!["correct"])
        .count();
    assert!(broken >= 10, "only {broken} broken kernels");
    for kind in [
        "runtime_fault",
        "timeout",
        "wrong_output",
        "input_mutated",
        "launch_error",
        "nondeterministic",
        "correct",
    ] {
        assert!(covered.contains(kind), "no corpus entry expects `{kind}`");
    }
    eprintln!("{} corpus entries ({broken} broken)", entries.len());
}

#[test]
fn every_entry_compiles_for_sm_90_except_the_compile_error() {
    let nvrtc = match Locator::default().load() {
        Ok(n) => n,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("NVRTC is required under CI: {e}");
            }
            eprintln!("skipped: NVRTC not installed; run scripts/setup.sh ({e})");
            return;
        }
    };
    let compiler = Compiler::new(nvrtc, None);
    let bundle = swiglu();
    let mut compiled = 0;
    for entry in corpus() {
        let (name, e, source) = (&entry.name, &entry.expect, &entry.source);
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
                assert_ne!(e.verdict, vec!["compile_error"], "{name} compiled");
                assert!(!c.cubin.is_empty(), "{name}");
                let k = c.kernel("swiglu_bf16").unwrap();
                assert!(k.resources.is_some(), "{name}: no ptxas report");
                compiled += 1;
            }
            Err(CompileFailure::Verdict(v)) => {
                assert_eq!(e.verdict, vec!["compile_error"], "{name}: {}", v.feedback());
                assert!(matches!(*v, Verdict::CompileError { .. }));
                assert!(v.feedback().contains("kernel.cu"), "{}", v.feedback());
            }
            Err(CompileFailure::Harness(h)) => panic!("{name}: {h}"),
        }
    }
    eprintln!("{compiled} corpus kernels compiled for sm_90");
    assert!(compiled >= 11);
}
