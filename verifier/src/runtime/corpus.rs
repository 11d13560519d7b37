//! The broken-kernel corpus (`verifier/tests/broken/`): entries with the verdict each must get.
//! Read by the CPU corpus test, the GPU test that runs the corpus through workers, and
//! `scripts/gpu-check.sh` (through those tests; its `eval` step also reads expect.toml's
//! one-line `task`, `verdict`, `timeout_s`, `shapes` and `heldout` keys itself).

use crate::protocol::EvalOptions;
use crate::verdict::{Verdict, VerdictKind};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub description: String,
    /// The task the kernel is for (its id, the directory name under `tasks/<category>/`);
    /// [`DEFAULT_TASK`] when absent.
    pub task: Option<String>,
    /// The verdict must be one of these kinds.
    pub verdict: Vec<VerdictKind>,
    /// The failing case's shape name.
    pub shape: Option<String>,
    /// `base` or `stress`.
    pub variant: Option<String>,
    /// Text the verdict's feedback must contain.
    pub message_contains: Option<String>,
    #[serde(default)]
    pub options: RunOptions,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunOptions {
    pub shapes: Option<Vec<String>>,
    pub heldout: Option<u32>,
    pub timeout_s: Option<u64>,
}

/// The task of an entry whose expect.toml names none.
pub const DEFAULT_TASK: &str = "swiglu";
/// Public shapes a corpus entry runs on unless it says otherwise: two of swiglu's (its third,
/// realistic shape takes long to generate inputs for). Entries for other tasks list their own.
pub const DEFAULT_SHAPES: &[&str] = &["small", "awkward"];
pub const DEFAULT_TIMEOUT_S: u64 = 300;

#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub dir: PathBuf,
    pub source: String,
    pub plan: String,
    pub expect: Expect,
}

impl Entry {
    /// The id of the task this entry's kernel is for.
    pub fn task_id(&self) -> &str {
        self.expect.task.as_deref().unwrap_or(DEFAULT_TASK)
    }

    /// The directory of this entry's task under `tasks_root` (the repository's `tasks/`).
    pub fn task_dir(&self, tasks_root: &Path) -> Result<PathBuf, String> {
        task_dir(tasks_root, self.task_id()).map_err(|e| {
            format!(
                "{}: field `task`: {e}",
                self.dir.join("expect.toml").display()
            )
        })
    }

    /// Options of the strict check for this entry; `fresh_seed` and `heldout_seed` are fixed so
    /// runs are reproducible.
    pub fn options(&self) -> EvalOptions {
        let o = &self.expect.options;
        EvalOptions {
            shapes: o
                .shapes
                .clone()
                .unwrap_or_else(|| DEFAULT_SHAPES.iter().map(|s| s.to_string()).collect()),
            heldout_shapes: o.heldout.unwrap_or(1),
            heldout_seed: 7,
            fresh_seed: Some(20261124),
            ..EvalOptions::default()
        }
    }

    pub fn timeout_s(&self) -> u64 {
        self.expect.options.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S)
    }

    /// `Ok` when the verdict is what the entry expects, else what differs.
    pub fn check(&self, v: &Verdict) -> Result<(), String> {
        let e = &self.expect;
        if !e.verdict.contains(&v.kind()) {
            let want: Vec<&str> = e.verdict.iter().map(|k| k.as_str()).collect();
            return Err(format!(
                "expected {}, got {}: {}",
                want.join(" or "),
                v.kind(),
                first_line(&v.feedback())
            ));
        }
        let case = match v {
            Verdict::LaunchError { case, .. }
            | Verdict::RuntimeFault { case, .. }
            | Verdict::Timeout { case, .. } => case.clone(),
            Verdict::WrongOutput { case, .. }
            | Verdict::InputMutated { case, .. }
            | Verdict::Nondeterministic { case, .. } => Some(case.clone()),
            _ => None,
        };
        if let Some(want) = &e.shape {
            let got = case.as_ref().map(|c| c.shape.as_str()).unwrap_or("(none)");
            if got != want {
                return Err(format!("failed on shape {got}, expected {want}"));
            }
        }
        if let Some(want) = &e.variant {
            let got = match case.as_ref().map(|c| c.variant) {
                Some(crate::inputs::Variant::Base) => "base",
                Some(crate::inputs::Variant::Stress(_)) => "stress",
                None => "(none)",
            };
            if got != want {
                return Err(format!("failed on {got} inputs, expected {want}"));
            }
        }
        if let Some(want) = &e.message_contains {
            let fb = v.feedback();
            if !fb.contains(want.as_str()) {
                return Err(format!("feedback lacks `{want}`: {}", first_line(&fb)));
            }
        }
        Ok(())
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// The directory of task `id` under `tasks_root`: the one `<category>/<id>/` holding a
/// task.toml. An id that is not a plain directory name, or that no (or more than one)
/// category holds, is an error saying so.
pub fn task_dir(tasks_root: &Path, id: &str) -> Result<PathBuf, String> {
    let plain = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !plain {
        return Err(format!(
            "`{id}` is not a task id (letters, digits, `_` and `-` only)"
        ));
    }
    let rd = std::fs::read_dir(tasks_root)
        .map_err(|e| format!("cannot list tasks in {}: {e}", tasks_root.display()))?;
    let mut found: Vec<PathBuf> = rd
        .flatten()
        .map(|cat| cat.path().join(id))
        .filter(|d| d.join("task.toml").is_file())
        .collect();
    found.sort();
    match found.len() {
        0 => Err(format!(
            "unknown task `{id}`: no {}/<category>/{id}/task.toml",
            tasks_root.display()
        )),
        1 => Ok(found.remove(0)),
        _ => Err(format!(
            "task `{id}` is ambiguous: {}",
            found
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Every entry under `dir`, sorted by name.
pub fn load(dir: &Path) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in rd.flatten() {
        let d = e.path();
        if !d.is_dir() {
            continue;
        }
        let read = |n: &str| {
            std::fs::read_to_string(d.join(n)).map_err(|e| format!("{}: {e}", d.join(n).display()))
        };
        let expect_text = read("expect.toml")?;
        let expect: Expect = toml::from_str(&expect_text)
            .map_err(|e| format!("{}: {e}", d.join("expect.toml").display()))?;
        out.push(Entry {
            name: e.file_name().to_string_lossy().into_owned(),
            source: read("kernel.cu")?,
            plan: read("launch.toml")?,
            dir: d,
            expect,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Verdict;

    fn entry(toml_text: &str) -> Entry {
        Entry {
            name: "t".into(),
            dir: PathBuf::new(),
            source: String::new(),
            plan: String::new(),
            expect: toml::from_str(toml_text).unwrap(),
        }
    }

    #[test]
    fn an_unknown_verdict_fails_to_load_naming_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("typo");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("kernel.cu"), "").unwrap();
        std::fs::write(d.join("launch.toml"), "").unwrap();
        std::fs::write(
            d.join("expect.toml"),
            "description = \"d\"\nverdict = [\"wrong_outputs\"]\n",
        )
        .unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(err.contains("typo/expect.toml"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("wrong_outputs"), "{err}");
    }

    #[test]
    fn expectations_match_kind_and_message() {
        let e = entry("description = \"d\"\nverdict = [\"timeout\", \"runtime_fault\"]\nmessage_contains = \"signal 9\"\n");
        let v = Verdict::RuntimeFault {
            case: None,
            message: "worker killed by signal 9".into(),
            exit: None,
            stderr_tail: String::new(),
        };
        e.check(&v).unwrap();
        let err = e
            .check(&Verdict::Correct {
                cases: 3,
                nondeterministic_within_tolerance: vec![],
            })
            .unwrap_err();
        assert!(
            err.starts_with("expected timeout or runtime_fault, got correct"),
            "{err}"
        );
        let e = entry("description = \"d\"\nverdict = [\"launch_error\"]\nshape = \"small\"\n");
        let err = e
            .check(&Verdict::LaunchError {
                case: None,
                kernel: "k".into(),
                launch: 0,
                message: "m".into(),
            })
            .unwrap_err();
        assert_eq!(err, "failed on shape (none), expected small");
        assert_eq!(e.options().shapes, vec!["small", "awkward"]);
        assert_eq!(e.timeout_s(), DEFAULT_TIMEOUT_S);
    }

    #[test]
    fn the_task_defaults_to_swiglu_and_is_found_by_id() {
        let e = entry("description = \"d\"\nverdict = [\"correct\"]\n");
        assert_eq!(e.task_id(), "swiglu");
        let e = entry("description = \"d\"\nverdict = [\"correct\"]\ntask = \"mm\"\n");
        assert_eq!(e.task_id(), "mm");

        let root = tempfile::tempdir().unwrap();
        let mk = |rel: &str| {
            let d = root.path().join(rel);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("task.toml"), "").unwrap();
        };
        mk("gemm/mm");
        mk("activation/swiglu");
        mk("a/twice");
        mk("b/twice");
        std::fs::create_dir_all(root.path().join("gemm/no_toml")).unwrap();
        assert_eq!(
            e.task_dir(root.path()).unwrap(),
            root.path().join("gemm/mm")
        );
        assert_eq!(
            task_dir(root.path(), "swiglu").unwrap(),
            root.path().join("activation/swiglu")
        );
        let err = task_dir(root.path(), "nope").unwrap_err();
        assert!(err.starts_with("unknown task `nope`"), "{err}");
        let err = task_dir(root.path(), "no_toml").unwrap_err();
        assert!(err.starts_with("unknown task `no_toml`"), "{err}");
        let err = task_dir(root.path(), "twice").unwrap_err();
        assert!(err.contains("ambiguous"), "{err}");
        for bad in ["", "../gemm/mm", "gemm/mm", "mm "] {
            let err = task_dir(root.path(), bad).unwrap_err();
            assert!(err.contains("is not a task id"), "{bad}: {err}");
        }
        let err = task_dir(&root.path().join("missing"), "mm").unwrap_err();
        assert!(err.starts_with("cannot list tasks in"), "{err}");
        // The entry's error names its expect.toml and the field.
        let mut e = entry("description = \"d\"\nverdict = []\ntask = \"nope\"\n");
        e.dir = PathBuf::from("broken/x");
        let err = e.task_dir(root.path()).unwrap_err();
        assert!(
            err.starts_with("broken/x/expect.toml: field `task`: unknown task `nope`"),
            "{err}"
        );
        assert!(toml::from_str::<Expect>("description = \"d\"\nverdict = []\ntask = 3\n").is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(
            toml::from_str::<Expect>("description = \"d\"\nverdict = []\nverdikt = 1\n").is_err()
        );
        assert!(toml::from_str::<Expect>(
            "description = \"d\"\nverdict = []\n[options]\nshape = 1\n"
        )
        .is_err());
    }
}
