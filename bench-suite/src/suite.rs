//! The task suite on disk: `tasks/<category>/<id>/{task.toml, spec.py, reference.cu,
//! reference.toml}`. A broken task is reported with its diagnostics and never hides the others.

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use verifier::diag::{Diagnostic, LoadError};
use verifier::plan::Plan;
use verifier::task::Task;

pub const ENV_TASKS_DIR: &str = "KSMITH_TASKS_DIR";
pub const TASK_FILE: &str = "task.toml";
pub const SPEC_FILE: &str = "spec.py";
pub const REFERENCE_SOURCE: &str = "reference.cu";
pub const REFERENCE_PLAN: &str = "reference.toml";

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("task suite directory {} does not exist (pass --tasks-dir DIR or set {ENV_TASKS_DIR})", .0.display())]
    Missing(PathBuf),
    #[error("cannot read task suite directory {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no task suite found: looked for tasks/ in {} (pass --tasks-dir DIR or set {ENV_TASKS_DIR})", .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound(Vec<PathBuf>),
}

/// A task whose files all loaded and validated.
#[derive(Debug, Clone)]
pub struct TaskDir {
    pub dir: PathBuf,
    pub task: Task,
    pub spec_path: PathBuf,
    pub reference_source: String,
    pub plan: Plan,
    /// The `__global__` functions `reference.cu` defines.
    pub kernels: BTreeSet<String>,
    /// SHA-256 over all four files: a result is only comparable to another on the same hash.
    pub content_hash: String,
}

#[derive(Debug, Clone)]
pub enum Entry {
    Ok(Box<TaskDir>),
    Broken {
        id: String,
        category: String,
        dir: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

impl Entry {
    pub fn id(&self) -> &str {
        match self {
            Entry::Ok(t) => &t.task.id,
            Entry::Broken { id, .. } => id,
        }
    }

    pub fn category(&self) -> &str {
        match self {
            Entry::Ok(t) => &t.task.category,
            Entry::Broken { category, .. } => category,
        }
    }
}

#[derive(Debug)]
pub struct Suite {
    pub root: PathBuf,
    pub entries: Vec<Entry>,
}

/// The suite directory: an explicit path, `$KSMITH_TASKS_DIR`, else `tasks/` in the current
/// directory, an ancestor of it, or an ancestor of the executable.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, SuiteError> {
    if let Some(p) = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(ENV_TASKS_DIR).map(PathBuf::from))
    {
        return if p.is_dir() {
            Ok(p)
        } else {
            Err(SuiteError::Missing(p))
        };
    }
    let roots = verifier::nvrtc::project_roots();
    for r in &roots {
        let t = r.join("tasks");
        if t.join("README.md").is_file() || t.is_dir() && has_task_dirs(&t) {
            return Ok(t);
        }
    }
    Err(SuiteError::NotFound(roots))
}

fn has_task_dirs(t: &Path) -> bool {
    std::fs::read_dir(t)
        .map(|rd| rd.filter_map(|e| e.ok()).any(|e| e.path().is_dir()))
        .unwrap_or(false)
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<PathBuf>, SuiteError> {
    let rd = std::fs::read_dir(dir).map_err(|source| SuiteError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut dirs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && !n.starts_with('_'))
        })
        .collect();
    dirs.sort();
    Ok(dirs)
}

impl Suite {
    /// Walks `root/<category>/<id>/` and loads every task found.
    pub fn discover(root: &Path) -> Result<Suite, SuiteError> {
        if !root.is_dir() {
            return Err(SuiteError::Missing(root.to_path_buf()));
        }
        let mut entries = Vec::new();
        for cat in sorted_subdirs(root)? {
            for dir in sorted_subdirs(&cat)? {
                if !dir.join(TASK_FILE).is_file() {
                    continue;
                }
                entries.push(match load_task_dir(&dir) {
                    Ok(t) => Entry::Ok(Box::new(t)),
                    Err(diagnostics) => Entry::Broken {
                        id: file_name(&dir),
                        category: file_name(&cat),
                        dir,
                        diagnostics,
                    },
                });
            }
        }
        Ok(Suite {
            root: root.to_path_buf(),
            entries,
        })
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id() == id)
    }

    pub fn ids(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.id()).collect()
    }

    /// The valid task `id`, or what is wrong: no such task, or its diagnostics.
    pub fn valid_task(&self, id: &str) -> Result<&TaskDir, String> {
        match self.get(id) {
            Some(Entry::Ok(td)) => Ok(td),
            Some(Entry::Broken { diagnostics, .. }) => {
                let d: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
                Err(format!("task `{id}` is invalid:\n{}", d.join("\n")))
            }
            None => Err(self.unknown_task(id)),
        }
    }

    /// What to say of an id that names no task: the closest id if one is near, and every id
    /// when there are few enough to read.
    pub fn unknown_task(&self, id: &str) -> String {
        let ids = self.ids();
        let hint = verifier::suggestion(id, &ids);
        let known = if ids.len() <= 12 {
            format!(" (known: {})", ids.join(", "))
        } else {
            format!(" ({} tasks; `ksmith tasks list` lists them)", ids.len())
        };
        format!("no task `{id}` in {}{hint}{known}", self.root.display())
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn diag(file: &Path, key: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        key: key.to_string(),
        message: message.into(),
    }
}

/// Points a diagnostic about a top-level key of `task.toml` at that key's value.
fn located(mut d: Diagnostic, task_text: &[u8]) -> Diagnostic {
    let text = String::from_utf8_lossy(task_text);
    let span = verifier::diag::parse_toml(&d.file, &text)
        .ok()
        .and_then(|doc| doc.as_table().get(&d.key).and_then(|i| i.span()));
    if let Some(s) = span {
        (d.line, d.column) = verifier::diag::line_col(&text, s.start);
    }
    d
}

/// Loads and cross-checks one task directory; every problem found is returned.
pub fn load_task_dir(dir: &Path) -> Result<TaskDir, Vec<Diagnostic>> {
    let task_path = dir.join(TASK_FILE);
    let task_text = std::fs::read(&task_path).unwrap_or_default();
    let task = Task::load(&task_path).map_err(|e| e.diagnostics())?;
    let mut problems = Vec::new();

    let dir_name = file_name(dir);
    if task.id != dir_name {
        problems.push(located(
            diag(
                &task_path,
                "id",
                format!(
                    "id `{}` differs from its directory name `{dir_name}`",
                    task.id
                ),
            ),
            &task_text,
        ));
    }
    let cat_name = dir.parent().map(file_name).unwrap_or_default();
    if task.category != cat_name {
        problems.push(located(
            diag(
                &task_path,
                "category",
                format!(
                    "category `{}` differs from its parent directory `{cat_name}`",
                    task.category
                ),
            ),
            &task_text,
        ));
    }

    let spec_path = dir.join(SPEC_FILE);
    let spec = std::fs::read_to_string(&spec_path);
    match &spec {
        Err(e) => problems.push(diag(&spec_path, "", format!("cannot read: {e}"))),
        Ok(s) if !s.contains("class Model") => problems.push(diag(
            &spec_path,
            "Model",
            "defines no `class Model(torch.nn.Module)`",
        )),
        Ok(_) => {}
    }

    let src_path = dir.join(REFERENCE_SOURCE);
    let source = match std::fs::read_to_string(&src_path) {
        Ok(s) => s,
        Err(e) => {
            problems.push(diag(&src_path, "", format!("cannot read: {e}")));
            return Err(problems);
        }
    };
    for v in verifier::source::check_includes(&source) {
        problems.push(Diagnostic {
            file: src_path.clone(),
            line: v.line,
            column: 1,
            key: "#include".into(),
            message: v.message,
        });
    }
    let kernels = verifier::source::kernel_names(&source);
    let plan_path = dir.join(REFERENCE_PLAN);
    let plan_text = std::fs::read(&plan_path).unwrap_or_default();
    let plan = match Plan::load(&plan_path, &task, &kernels) {
        Ok(p) => Some(p),
        Err(e @ LoadError::Read { .. }) | Err(e @ LoadError::Invalid { .. }) => {
            problems.extend(e.diagnostics());
            None
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let Some(plan) = plan else {
        return Err(problems);
    };

    let mut h = Sha256::new();
    for (name, bytes) in [
        (TASK_FILE, task_text.as_slice()),
        (SPEC_FILE, spec.as_deref().unwrap_or("").as_bytes()),
        (REFERENCE_SOURCE, source.as_bytes()),
        (REFERENCE_PLAN, plan_text.as_slice()),
    ] {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    Ok(TaskDir {
        dir: dir.to_path_buf(),
        task,
        spec_path,
        reference_source: source,
        plan,
        kernels,
        content_hash: hex::encode(h.finalize()),
    })
}
