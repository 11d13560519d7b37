//! Every fixture under `tests/fixtures/malformed/<name>/` is a small task that is wrong in one
//! way. Its `expect.toml` names the diagnostic the loader must give: the file it is in, the
//! line, the dotted key and a substring of the message, and how many diagnostics there are in
//! all (1 unless `count` says otherwise, so one mistake does not cascade into a page of errors).
//!
//! The stage is chosen by the file the error is expected in: `task.toml` errors come from
//! `Task::parse`; `reference.toml` errors from `Plan::parse` (the task must be valid);
//! `reference.cu` errors from the include check (the task and plan must be valid).

use std::path::{Path, PathBuf};
use verifier::diag::Diagnostic;
use verifier::plan::Plan;
use verifier::source;
use verifier::task::Task;

#[derive(Debug)]
struct Expect {
    file: String,
    line: usize,
    key: String,
    message: String,
    count: usize,
}

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/malformed")
}

fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_root())
        .expect("fixtures directory is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn read_expect(dir: &Path) -> Result<Expect, String> {
    let path = dir.join("expect.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let s = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{}: `{k}` must be a string", path.display()))
    };
    let n = |k: &str, default: Option<i64>| {
        v.get(k)
            .and_then(|x| x.as_integer())
            .or(default)
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| format!("{}: `{k}` must be a non-negative integer", path.display()))
    };
    for k in v.keys() {
        if !["file", "line", "key", "message", "count"].contains(&k.as_str()) {
            return Err(format!("{}: unknown key `{k}`", path.display()));
        }
    }
    Ok(Expect {
        file: s("file")?,
        line: n("line", None)?,
        key: s("key")?,
        message: s("message")?,
        count: n("count", Some(1))?,
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The diagnostics the loader gives for a fixture at the stage `file` names.
fn diagnostics(dir: &Path, file: &str) -> Result<Vec<Diagnostic>, String> {
    let task_path = dir.join("task.toml");
    let task = Task::parse(&task_path, &read(&task_path));
    if file == "task.toml" {
        return match task {
            Ok(_) => Err("task.toml parsed without error".into()),
            Err(e) => Ok(e.diagnostics()),
        };
    }
    let task = task.map_err(|e| format!("task.toml should be valid at this stage:\n{e}"))?;
    let src_path = dir.join("reference.cu");
    let src = read(&src_path);
    let kernels = source::kernel_names(&src);
    let plan_path = dir.join("reference.toml");
    let plan = Plan::parse(&plan_path, &read(&plan_path), &task, &kernels);
    match file {
        "reference.toml" => match plan {
            Ok(_) => Err("reference.toml parsed without error".into()),
            Err(e) => Ok(e.diagnostics()),
        },
        "reference.cu" => {
            plan.map_err(|e| format!("reference.toml should be valid at this stage:\n{e}"))?;
            // Reported the way the suite loader reports them (see bench-suite's suite_load test,
            // which checks the loader itself on these same fixtures).
            Ok(source::check_includes(&src)
                .into_iter()
                .map(|v| Diagnostic {
                    file: src_path.clone(),
                    line: v.line,
                    column: 1,
                    key: "#include".into(),
                    message: v.message,
                })
                .collect())
        }
        other => Err(format!("expect.toml names an unknown file `{other}`")),
    }
}

fn check_fixture(dir: &Path) -> Result<(), String> {
    let want = read_expect(dir)?;
    let got = diagnostics(dir, &want.file)?;
    let listing = got
        .iter()
        .map(|d| format!("    {d}"))
        .collect::<Vec<_>>()
        .join("\n");
    let matches = |d: &Diagnostic| {
        d.file.ends_with(&want.file)
            && d.line == want.line
            && d.key == want.key
            && d.message.contains(&want.message)
    };
    if !got.iter().any(matches) {
        return Err(format!(
            "no diagnostic matches {want:?}; got {}:\n{listing}",
            got.len()
        ));
    }
    if got.len() != want.count {
        return Err(format!(
            "expected {} diagnostic(s), got {}:\n{listing}",
            want.count,
            got.len()
        ));
    }
    for d in &got {
        // Every diagnostic names its file and key, and renders compiler-style.
        if d.key.is_empty() {
            return Err(format!("a diagnostic names no key: {d}"));
        }
        let shown = d.to_string();
        let prefix = format!("{}:{}:", d.file.display(), d.line);
        if d.line > 0 && !shown.starts_with(&prefix) {
            return Err(format!("`{shown}` does not start with `{prefix}`"));
        }
        if !shown.contains(&format!("`{}`", d.key)) {
            return Err(format!("`{shown}` does not show its key"));
        }
    }
    Ok(())
}

#[test]
fn every_malformed_fixture_gives_its_diagnostic() {
    let dirs = fixture_dirs();
    assert!(dirs.len() >= 20, "only {} fixtures", dirs.len());
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        if let Err(why) = check_fixture(dir) {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

/// The fixtures are each one mistake away from a valid task: the fixed-up base must load, or a
/// fixture could pass for the wrong reason (a broken base reporting something else entirely).
#[test]
fn the_fixture_base_is_valid() {
    let dir = fixtures_root().join("plan_unknown_kernel");
    let text = read(&dir.join("task.toml"));
    let task = Task::parse(&dir.join("task.toml"), &text).expect("base task is valid");
    let src = read(&dir.join("reference.cu"));
    assert!(source::check_includes(&src).is_empty());
    let kernels = source::kernel_names(&src);
    let plan_text = read(&dir.join("reference.toml")).replace("copy_row\"", "copy_rows\"");
    let plan = Plan::parse(&dir.join("reference.toml"), &plan_text, &task, &kernels)
        .unwrap_or_else(|e| panic!("base plan is valid:\n{e}"));
    let launches = plan.resolve(&task.shapes[0]).expect("resolves");
    assert_eq!(launches[0].grid, [4, 1, 1]);
    assert_eq!(launches[0].block, [256, 1, 1]);
}

/// The `[checks.batch_invariant]` fixtures share a base that must load once its one mistake is
/// undone, with the check read as written and the default rows (first, middle, last).
#[test]
fn the_batch_invariant_fixture_base_is_valid() {
    let dir = fixtures_root().join("batch_invariant_unknown_param");
    let path = dir.join("task.toml");
    let text = read(&path).replace("param = \"B\"", "param = \"M\"");
    let task = Task::parse(&path, &text).unwrap_or_else(|e| panic!("base task is valid:\n{e}"));
    let bi = task
        .checks
        .batch_invariant
        .as_ref()
        .expect("the check is read");
    assert_eq!(bi.param, "M");
    assert_eq!(
        (bi.inputs.as_slice(), bi.outputs.as_slice()),
        (&["x".to_string()][..], &["y".to_string()][..])
    );
    let (rows, notes) = bi.rows_on(&task.shapes[0]);
    assert_eq!(rows, vec![0, 2, 3]);
    assert!(notes.is_empty(), "{notes:?}");
    // Without the section the same task has no check at all.
    let cut = text
        .split("[checks.batch_invariant]")
        .next()
        .expect("text before the section");
    let plain = Task::parse(&path, cut).unwrap_or_else(|e| panic!("{e}"));
    assert!(plain.checks.batch_invariant.is_none());
}
