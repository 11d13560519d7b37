//! `ksmith run --profile`: a correct, timed kernel that is its task's new best (geometric-mean
//! speedup over the reference, as the loop ranks kernels) is profiled with Nsight Compute at
//! its first timed shape, on the GPU that verified it and while that GPU is still its own, and
//! the Judge reads the summary with the kernel. A profile that fails is a note in the kernel's
//! feedback and the log, never a failure of the kernel.
//!
//! The `profiles` row belongs to the evaluation the run's recorder writes after the evaluator
//! returns, so it waits here ([`ProfileRows`]) until that evaluation is in the store (found by
//! its cache key) and is written at the next kernel or at the end of the run.

use super::{profile_candidate, Profiled};
use crate::cli::Global;
use agent::evaluate::KernelRun;
use agent::prompt::ShapeTiming;
use bench_suite::store::{candidate_hash, EvalKey, NewProfile, Store};
use bench_suite::suite::TaskDir;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Profiles one kernel at one shape on the GPU `visible` names.
pub(crate) trait KernelProfiler: Send + Sync {
    fn profile(
        &self,
        visible: &str,
        task: &TaskDir,
        source: &str,
        plan_toml: &str,
        shape: &str,
    ) -> Result<Profiled, String>;
}

/// ncu around `ksmith gpu run-once`, as `ksmith profile` runs it.
pub(crate) struct NcuProfiler {
    pub global: Global,
    pub ncu: PathBuf,
    pub tasks_root: PathBuf,
    pub limit: Duration,
}

impl KernelProfiler for NcuProfiler {
    fn profile(
        &self,
        visible: &str,
        task: &TaskDir,
        source: &str,
        plan_toml: &str,
        shape: &str,
    ) -> Result<Profiled, String> {
        profile_candidate(
            &self.global,
            &self.ncu,
            &self.tasks_root,
            &task.task,
            source,
            plan_toml,
            shape,
            Some(visible),
            self.limit,
        )
    }
}

/// Geometric-mean speedup over the reference across the timed shapes (the loop's ranking).
fn speedup(timings: &[ShapeTiming]) -> Option<f64> {
    let logs: Vec<f64> = timings
        .iter()
        .filter_map(|t| match (t.median_us, t.reference_us) {
            (Some(m), Some(r)) if m > 0.0 && r > 0.0 => Some((r / m).ln()),
            _ => None,
        })
        .collect();
    (!logs.is_empty()).then(|| (logs.iter().sum::<f64>() / logs.len() as f64).exp())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is one step: the data is whole even if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A profile waiting for its evaluation's row.
struct Pending {
    cache_key: String,
    profile: Profiled,
}

/// Where profiles of a run go: the evaluation's cache key is the one the recorder uses.
pub(crate) struct ProfileRows {
    pub store: Arc<Store>,
    pub task_hashes: BTreeMap<String, String>,
    pub gpu_key: String,
    pub protocol: String,
    pending: Mutex<Vec<Pending>>,
}

impl ProfileRows {
    pub fn new(
        store: Arc<Store>,
        task_hashes: BTreeMap<String, String>,
        gpu_key: String,
        protocol: String,
    ) -> ProfileRows {
        ProfileRows {
            store,
            task_hashes,
            gpu_key,
            protocol,
            pending: Mutex::new(Vec::new()),
        }
    }

    fn add(&self, task_id: &str, source: &str, plan_toml: &str, profile: Profiled) {
        let Some(task_hash) = self.task_hashes.get(task_id) else {
            tracing::warn!("{task_id}: not a task of this run; its profile is not stored");
            return;
        };
        let hash = candidate_hash(source, plan_toml);
        let cache_key = EvalKey {
            candidate_hash: &hash,
            task_hash,
            gpu_key: &self.gpu_key,
            protocol: &self.protocol,
        }
        .digest();
        lock(&self.pending).push(Pending { cache_key, profile });
    }

    /// Writes every waiting profile whose evaluation is recorded; returns how many still wait.
    pub fn flush(&self) -> usize {
        let mut pending = lock(&self.pending);
        pending.retain(|p| {
            let evaluation = match self.store.cached_evaluation(&p.cache_key) {
                Ok(Some(e)) => e,
                Ok(None) => return true,
                Err(e) => {
                    tracing::warn!("looking up a profiled evaluation: {e}");
                    return true;
                }
            };
            let row = NewProfile {
                evaluation_id: evaluation.id,
                tool: "ncu".into(),
                kernel: p.profile.kernel.clone(),
                metrics: p.profile.metrics.clone(),
                raw: p.profile.raw.clone(),
            };
            match self.store.write(|tx| tx.add_profile(&row)) {
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!("storing a profile: {e}");
                    true
                }
            }
        });
        pending.len()
    }
}

/// `--profile` for a run's kernel runner.
pub(crate) struct AgentProfiling {
    profiler: Box<dyn KernelProfiler>,
    /// Best geometric-mean speedup seen per task in this process.
    best: Mutex<BTreeMap<String, f64>>,
    rows: Option<ProfileRows>,
}

impl AgentProfiling {
    pub fn new(profiler: Box<dyn KernelProfiler>, rows: Option<ProfileRows>) -> AgentProfiling {
        AgentProfiling {
            profiler,
            best: Mutex::new(BTreeMap::new()),
            rows,
        }
    }

    /// Profiles `run`'s kernel when it is correct, timed and its task's new best; the summary
    /// (or why there is none) goes into `run`.
    pub fn after_run(
        &self,
        visible: &str,
        task: &TaskDir,
        source: &str,
        plan_toml: &str,
        run: &mut KernelRun,
    ) {
        self.flush();
        if !run.verdict.is_correct() {
            return;
        }
        let (Some(s), Some(shape)) = (speedup(&run.timings), run.timings.first()) else {
            return;
        };
        {
            let mut best = lock(&self.best);
            let id = &task.task.id;
            if best.get(id).is_some_and(|b| *b >= s) {
                return;
            }
            best.insert(id.clone(), s);
        }
        let shape = shape.shape.clone();
        match self
            .profiler
            .profile(visible, task, source, plan_toml, &shape)
        {
            Ok(p) => {
                run.profile_summary = Some(format!("at shape {shape}: {}", p.summary));
                if let Some(rows) = &self.rows {
                    rows.add(&task.task.id, source, plan_toml, p);
                }
            }
            Err(m) => {
                tracing::warn!("{}: profiling failed: {m}", task.task.id);
                run.profile_note = Some(format!(
                    "Nsight Compute could not profile this kernel ({m}); reason from the timings and the code"
                ));
            }
        }
    }

    /// Stores the profiles whose evaluations are recorded; how many still wait.
    pub fn flush(&self) -> usize {
        self.rows.as_ref().map_or(0, |r| r.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bench_suite::store::{NewCandidate, NewEvaluation, NewRun, NewTask, Origin, Verdict};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use verifier::verdict::Verdict as V;

    struct Fake {
        calls: AtomicUsize,
        fail: bool,
    }

    impl KernelProfiler for Arc<Fake> {
        fn profile(
            &self,
            visible: &str,
            task: &TaskDir,
            _: &str,
            _: &str,
            shape: &str,
        ) -> Result<Profiled, String> {
            assert_eq!(visible, "3");
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                return Err("ncu: ERR_NVGPUCTRPERM".into());
            }
            Ok(Profiled {
                summary: format!("`k` of {} is memory-bound", task.task.id),
                kernel: "k".into(),
                metrics: serde_json::json!({ "shape": shape }),
                raw: "csv".into(),
            })
        }
    }

    fn swiglu() -> TaskDir {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tasks/activation/swiglu");
        bench_suite::suite::load_task_dir(&dir).expect("swiglu loads")
    }

    fn run(correct: bool, speedup: Option<f64>) -> KernelRun {
        KernelRun {
            verdict: if correct {
                V::Correct {
                    cases: 1,
                    nondeterministic_within_tolerance: Vec::new(),
                }
            } else {
                V::Timeout {
                    case: None,
                    limit_ms: 1,
                }
            },
            timings: speedup
                .map(|s| {
                    vec![ShapeTiming {
                        shape: "small".into(),
                        median_us: Some(10.0),
                        reference_us: Some(10.0 * s),
                        sol_pct: None,
                        floor_us: None,
                    }]
                })
                .unwrap_or_default(),
            note: None,
            profile_summary: None,
            profile_note: None,
        }
    }

    #[test]
    fn only_a_correct_timed_new_best_is_profiled() {
        let fake = Arc::new(Fake {
            calls: AtomicUsize::new(0),
            fail: false,
        });
        let p = AgentProfiling::new(Box::new(fake.clone()), None);
        let t = swiglu();
        let go = |r: &mut KernelRun| p.after_run("3", &t, "src", "plan", r);
        let mut wrong = run(false, Some(2.0));
        go(&mut wrong);
        let mut untimed = run(true, None);
        go(&mut untimed);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
        assert!(wrong.profile_summary.is_none() && untimed.profile_summary.is_none());
        let mut first = run(true, Some(1.0));
        go(&mut first);
        assert_eq!(
            first.profile_summary.as_deref(),
            Some("at shape small: `k` of swiglu is memory-bound")
        );
        let mut slower = run(true, Some(0.9));
        go(&mut slower);
        let mut same = run(true, Some(1.0));
        go(&mut same);
        assert!(slower.profile_summary.is_none() && same.profile_summary.is_none());
        let mut faster = run(true, Some(1.5));
        go(&mut faster);
        assert!(faster.profile_summary.is_some());
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_profile_is_a_note_and_the_kernel_stays_correct() {
        let fake = Arc::new(Fake {
            calls: AtomicUsize::new(0),
            fail: true,
        });
        let p = AgentProfiling::new(Box::new(fake), None);
        let mut r = run(true, Some(1.2));
        p.after_run("3", &swiglu(), "src", "plan", &mut r);
        assert!(r.verdict.is_correct());
        assert!(r.profile_summary.is_none());
        let note = r.profile_note.unwrap();
        assert!(note.contains("ERR_NVGPUCTRPERM"), "{note}");
    }

    #[test]
    fn profiles_are_stored_once_their_evaluation_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let store = Arc::new(Store::open(&url).unwrap());
        let t = swiglu();
        let hashes: BTreeMap<String, String> =
            [("swiglu".to_string(), t.content_hash.clone())].into();
        let rows = ProfileRows::new(store.clone(), hashes, "gpu-k".into(), "proto".into());
        let fake = Arc::new(Fake {
            calls: AtomicUsize::new(0),
            fail: false,
        });
        let p = AgentProfiling::new(Box::new(fake), Some(rows));
        let mut r = run(true, Some(1.0));
        p.after_run("3", &t, "SRC", "PLAN", &mut r);
        assert_eq!(
            p.flush(),
            1,
            "no evaluation recorded yet: the profile waits"
        );
        // What the run's recorder writes for that kernel.
        let run_id = store
            .write(|tx| {
                tx.create_run(&NewRun {
                    name: "r".into(),
                    kind: "agent".into(),
                    agent: "m".into(),
                    suite: "custom".into(),
                    config: serde_json::json!({}),
                    git_rev: "x".into(),
                })
            })
            .unwrap()
            .id;
        let key = EvalKey {
            candidate_hash: &candidate_hash("SRC", "PLAN"),
            task_hash: &t.content_hash,
            gpu_key: "gpu-k",
            protocol: "proto",
        }
        .digest();
        store
            .write(|tx| {
                let task_id = tx.upsert_task(&NewTask {
                    name: "swiglu".into(),
                    category: "activation".into(),
                    title: "t".into(),
                    content_hash: t.content_hash.clone(),
                    details: serde_json::json!({}),
                })?;
                let (cid, _) = tx.add_candidate(&NewCandidate {
                    run_id,
                    task_id,
                    origin: Origin::Llm,
                    source: "SRC".into(),
                    plan: "PLAN".into(),
                    generation: 0,
                    island: 0,
                    llm_call_id: None,
                    parents: Vec::new(),
                    notes: serde_json::json!({}),
                })?;
                tx.add_evaluation(&NewEvaluation {
                    candidate_id: cid,
                    gpu_id: None,
                    cache_key: key.clone(),
                    protocol: "proto".into(),
                    verdict: Verdict::Correct,
                    details: serde_json::json!({}),
                    compile_ms: None,
                    timings: Vec::new(),
                    speedup_ref: Some(1.0),
                    speedup_eager: None,
                    speedup_compile: None,
                    sol_pct: None,
                    quarantined: false,
                    quarantine_reason: None,
                    cached_from: None,
                })
            })
            .unwrap();
        assert_eq!(p.flush(), 0);
        let stored = store.profiles_of_run(run_id).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].profile.tool, "ncu");
        assert_eq!(stored[0].profile.kernel, "k");
        assert_eq!(stored[0].profile.metrics["shape"], "small");
        assert_eq!(p.flush(), 0, "written once");
        assert_eq!(store.profiles_of_run(run_id).unwrap().len(), 1);
    }
}
