//! `ksmith tasks check`: validate every task and compile every reference kernel with NVRTC,
//! in parallel, one row per task.

use crate::suite::{Entry, Suite};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use verifier::nvrtc::{Arch, CompileRequest, Compiler, KernelReport};
use verifier::plan::Plan;
use verifier::runtime::launch::check_params;
use verifier::task::Task;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// task.toml, spec.py or the plan has problems.
    Invalid,
    /// The reference does not compile (or includes a disallowed header, or timed out).
    CompileError,
    /// Compiles, but ptxas reports register spills.
    Spills,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub id: String,
    pub category: String,
    pub status: Status,
    pub compile_ms: Option<f64>,
    pub cache_hit: bool,
    pub kernels: Vec<KernelReport>,
    /// Diagnostics or the compile log, one entry per problem.
    pub problems: Vec<String>,
    pub content_hash: Option<String>,
    /// NVRTC's log of a successful compilation (ptxas's per-kernel report); a failed one is
    /// in `problems`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub log: String,
}

impl CheckRow {
    pub fn failed(&self) -> bool {
        matches!(self.status, Status::Invalid | Status::CompileError)
    }

    /// ptxas's "Potential Performance Loss" notes among the problems (the task still passes).
    pub fn performance_losses(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.starts_with("ptxas: ") && p.contains("Potential Performance Loss"))
            .count()
    }
}

#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub arch: Arch,
    pub jobs: usize,
    /// Spills make the task fail (the suite's bar: no spills unless justified).
    pub deny_spills: bool,
}

/// Something the harness itself could not do (as opposed to a task failing its check).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HarnessError(pub String);

/// Checks the selected entries; `progress` is called once per finished task.
pub fn check(
    suite: &Suite,
    selected: &[&Entry],
    compiler: &Compiler,
    opts: &CheckOptions,
    progress: &(dyn Fn(&CheckRow) + Sync),
) -> Result<Vec<CheckRow>, HarnessError> {
    let next = AtomicUsize::new(0);
    let rows: Mutex<Vec<(usize, CheckRow)>> = Mutex::new(Vec::new());
    let harness_error: Mutex<Option<String>> = Mutex::new(None);
    let _ = suite;
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1).min(selected.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(entry) = selected.get(i) else { break };
                match check_one(entry, compiler, opts) {
                    Ok(row) => {
                        progress(&row);
                        if let Ok(mut r) = rows.lock() {
                            r.push((i, row));
                        }
                    }
                    Err(e) => {
                        if let Ok(mut h) = harness_error.lock() {
                            h.get_or_insert(e.0);
                        }
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = harness_error.into_inner().ok().flatten() {
        return Err(HarnessError(e));
    }
    let mut rows = rows
        .into_inner()
        .map_err(|_| HarnessError("a check thread panicked".into()))?;
    rows.sort_by_key(|(i, _)| *i);
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

fn check_one(
    entry: &Entry,
    compiler: &Compiler,
    opts: &CheckOptions,
) -> Result<CheckRow, HarnessError> {
    let t = match entry {
        Entry::Broken {
            id,
            category,
            diagnostics,
            ..
        } => {
            return Ok(CheckRow {
                id: id.clone(),
                category: category.clone(),
                status: Status::Invalid,
                compile_ms: None,
                cache_hit: false,
                kernels: Vec::new(),
                problems: diagnostics.iter().map(|d| d.to_string()).collect(),
                content_hash: None,
                log: String::new(),
            })
        }
        Entry::Ok(t) => t,
    };
    let mut req = CompileRequest::new(t.reference_source.clone(), t.plan.kernel_names(), opts.arch);
    req.fast_math = t.task.compile.fast_math;
    req.program_name = t
        .dir
        .join(crate::suite::REFERENCE_SOURCE)
        .display()
        .to_string();
    let mut row = CheckRow {
        id: t.task.id.clone(),
        category: t.task.category.clone(),
        status: Status::Ok,
        compile_ms: None,
        cache_hit: false,
        kernels: Vec::new(),
        problems: Vec::new(),
        content_hash: Some(t.content_hash.clone()),
        log: String::new(),
    };
    match compiler.compile(&req) {
        Ok(c) => {
            row.compile_ms = Some(c.compile_ms);
            row.cache_hit = c.cache_hit;
            for k in &c.kernels {
                match &k.resources {
                    None => row.problems.push(format!(
                        "kernel `{}` (symbol `{}`) has no ptxas report",
                        k.name, k.symbol
                    )),
                    Some(r) if r.spills() => {
                        row.problems.push(format!(
                            "kernel `{}` spills: {} bytes stores, {} bytes loads",
                            k.name, r.spill_stores, r.spill_loads
                        ));
                        if row.status == Status::Ok {
                            row.status = Status::Spills;
                        }
                    }
                    Some(_) => {}
                }
            }
            if row.status == Status::Spills && opts.deny_spills {
                row.status = Status::CompileError;
            }
            let mismatched = argument_problems(&t.task, &t.plan, &c.kernels);
            if !mismatched.is_empty() {
                row.status = Status::Invalid;
                row.problems.extend(mismatched);
            }
            // Correct code that lost its tensor-core overlap says so only in `ptxas info` lines.
            row.problems
                .extend(verifier::nvrtc::ptxas::performance_losses(&c.log));
            row.kernels = c.kernels;
            row.log = c.log;
        }
        Err(e) if e.is_kernel_fault() => {
            row.status = Status::CompileError;
            row.problems.push(e.to_string());
        }
        Err(e) => return Err(HarnessError(e.to_string())),
    }
    Ok(row)
}

/// Plan arguments that do not fit the compiled kernels' parameters (count and width, read from
/// the PTX), at every public shape: on a GPU each is an `ArgumentMismatch` launch error, since
/// the driver would read past the arguments or read another value than the plan wrote.
pub fn argument_problems(task: &Task, plan: &Plan, kernels: &[KernelReport]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for shape in &task.shapes {
        let launches = [plan.resolve_prepare(shape), plan.resolve(shape)];
        for l in launches.into_iter().flatten().flatten() {
            let Some(sizes) = kernels
                .iter()
                .find(|k| k.name == l.kernel)
                .and_then(|k| k.param_bytes.as_ref())
            else {
                continue;
            };
            if let Err(e) = check_params(&l, sizes) {
                let e = e.to_string();
                if !out.contains(&e) {
                    out.push(e);
                }
            }
        }
    }
    out
}
