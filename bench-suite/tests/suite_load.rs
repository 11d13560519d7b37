//! The suite loader (`load_task_dir`, `Suite::discover`, `locate`): directory-level checks
//! (id and category against the directory names, the four files present) and the malformed
//! fixtures of the verifier crate, which the loader must report exactly as the verifier's own
//! `malformed` test expects.

use bench_suite::suite::{self, load_task_dir, Entry, Suite, SuiteError};
use std::path::{Path, PathBuf};
use verifier::diag::Diagnostic;

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../verifier/tests/fixtures/malformed")
}

#[derive(Debug, Default)]
struct Expect {
    file: String,
    line: usize,
    key: String,
    message: String,
    count: usize,
}

/// Reads an `expect.toml`. These files use a fixed flat subset of TOML (`key = "string"` and
/// `key = integer`) that the verifier's `malformed` test checks with a real TOML parser, so
/// this reader only needs that subset; anything else is an error.
fn read_expect(dir: &Path) -> Expect {
    let path = dir.join("expect.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut e = Expect {
        count: 1,
        ..Default::default()
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}: bad line `{line}`", path.display()));
        let v = v.trim();
        let string = || {
            v.strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .map(|s| s.replace("\\\"", "\"").replace("\\\\", "\\"))
                .unwrap_or_else(|| panic!("{}: `{k}` is not a string", path.display()))
        };
        let int = || {
            v.parse::<usize>()
                .unwrap_or_else(|_| panic!("{}: `{k}` is not an integer", path.display()))
        };
        match k.trim() {
            "file" => e.file = string(),
            "key" => e.key = string(),
            "message" => e.message = string(),
            "line" => e.line = int(),
            "count" => e.count = int(),
            other => panic!("{}: unknown key `{other}`", path.display()),
        }
    }
    e
}

fn render(ds: &[Diagnostic]) -> String {
    ds.iter()
        .map(|d| format!("    {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_loader_reports_every_malformed_fixture_as_the_verifier_does() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_root())
        .expect("verifier fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 20, "{} fixtures", dirs.len());
    let mut failures = Vec::new();
    for dir in &dirs {
        let want = read_expect(dir);
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        // Fixtures live in `malformed/<name>/` with `id = "<name>"` and
        // `category = "malformed"`, so the directory checks pass and only the fixture's own
        // mistake remains.
        let got = match load_task_dir(dir) {
            Ok(_) => {
                failures.push(format!("{name}: loaded without error"));
                continue;
            }
            Err(d) => d,
        };
        let hit = got.iter().any(|d| {
            d.file.ends_with(&want.file)
                && d.file.starts_with(dir)
                && d.line == want.line
                && d.key == want.key
                && d.message.contains(&want.message)
        });
        if !hit || got.len() != want.count {
            failures.push(format!(
                "{name}: want {want:?}, got {}:\n{}",
                got.len(),
                render(&got)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A valid task `malformed/<id>/` made from the fixture base, under `root`.
fn valid_task(root: &Path, category: &str, dir_name: &str, id: &str) -> PathBuf {
    let base = fixtures_root().join("plan_unknown_kernel");
    let dir = root.join(category).join(dir_name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let read = |f: &str| std::fs::read_to_string(base.join(f)).expect("fixture base");
    let task = read("task.toml")
        .replace("id = \"plan_unknown_kernel\"", &format!("id = \"{id}\""))
        .replace("category = \"malformed\"", "category = \"rows\"");
    let write = |f: &str, s: &str| std::fs::write(dir.join(f), s).expect("write");
    write("task.toml", &task);
    write("reference.cu", &read("reference.cu"));
    write(
        "reference.toml",
        &read("reference.toml").replace("\"copy_row\"", "\"copy_rows\""),
    );
    write("spec.py", &read("spec.py"));
    dir
}

fn only(ds: Vec<Diagnostic>) -> Diagnostic {
    assert_eq!(ds.len(), 1, "{}", render(&ds));
    ds.into_iter().next().expect("one")
}

#[test]
fn a_valid_task_loads_and_its_hash_covers_all_four_files() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = valid_task(root.path(), "rows", "copy_task", "copy_task");
    let t = load_task_dir(&dir).unwrap_or_else(|d| panic!("{}", render(&d)));
    assert_eq!(t.task.id, "copy_task");
    assert_eq!(t.kernels.iter().collect::<Vec<_>>(), vec!["copy_rows"]);
    assert_eq!(t.content_hash.len(), 64);
    let mut hashes = vec![t.content_hash.clone()];
    for (file, edit) in [
        ("spec.py", "\n# comment\n"),
        ("reference.cu", "\n// comment\n"),
        ("reference.toml", "\n# comment\n"),
        ("task.toml", "\n# comment\n"),
    ] {
        let p = dir.join(file);
        let mut s = std::fs::read_to_string(&p).expect("read");
        s.push_str(edit);
        std::fs::write(&p, s).expect("write");
        let h = load_task_dir(&dir)
            .unwrap_or_else(|d| panic!("{}", render(&d)))
            .content_hash;
        assert!(
            !hashes.contains(&h),
            "editing {file} left the hash unchanged"
        );
        hashes.push(h);
    }
}

#[test]
fn id_must_equal_the_directory_name() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = valid_task(root.path(), "rows", "copy_task", "copy_tusk");
    let d = only(load_task_dir(&dir).expect_err("id mismatch"));
    assert!(d.file.ends_with("copy_task/task.toml"), "{d}");
    assert_eq!(d.key, "id");
    assert_eq!((d.line, d.column), (1, 6), "points at the id's value: {d}");
    assert!(
        d.message
            .contains("`copy_tusk` differs from its directory name `copy_task`"),
        "{d}"
    );
}

#[test]
fn category_must_equal_the_parent_directory_name() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = valid_task(root.path(), "norms", "copy_task", "copy_task");
    let d = only(load_task_dir(&dir).expect_err("category mismatch"));
    assert!(d.file.ends_with("task.toml"), "{d}");
    assert_eq!(d.key, "category");
    assert_eq!(
        (d.line, d.column),
        (3, 12),
        "points at the category's value: {d}"
    );
    assert!(d.message.contains("parent directory `norms`"), "{d}");
}

#[test]
fn a_missing_or_empty_spec_py_is_reported() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = valid_task(root.path(), "rows", "copy_task", "copy_task");
    std::fs::remove_file(dir.join("spec.py")).expect("rm");
    let d = only(load_task_dir(&dir).expect_err("no spec.py"));
    assert!(d.file.ends_with("spec.py"), "{d}");
    assert!(d.message.contains("cannot read"), "{d}");

    std::fs::write(dir.join("spec.py"), "import torch\n").expect("write");
    let d = only(load_task_dir(&dir).expect_err("no Model"));
    assert!(d.file.ends_with("spec.py"), "{d}");
    assert_eq!(d.key, "Model");
}

#[test]
fn a_missing_reference_source_or_plan_is_reported() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = valid_task(root.path(), "rows", "copy_task", "copy_task");
    std::fs::remove_file(dir.join("reference.cu")).expect("rm");
    let d = only(load_task_dir(&dir).expect_err("no reference.cu"));
    assert!(d.file.ends_with("reference.cu"), "{d}");
    assert!(d.message.contains("cannot read"), "{d}");

    let dir = valid_task(root.path(), "rows", "copy_task2", "copy_task2");
    std::fs::remove_file(dir.join("reference.toml")).expect("rm");
    let d = only(load_task_dir(&dir).expect_err("no reference.toml"));
    assert!(d.file.ends_with("reference.toml"), "{d}");
    assert!(d.message.contains("cannot read"), "{d}");
}

#[test]
fn a_missing_task_toml_is_reported_not_panicked_on() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = valid_task(root.path(), "rows", "copy_task", "copy_task");
    std::fs::remove_file(dir.join("task.toml")).expect("rm");
    let d = only(load_task_dir(&dir).expect_err("no task.toml"));
    assert!(d.file.ends_with("task.toml"), "{d}");
    assert!(d.message.contains("cannot read"), "{d}");
}

#[test]
fn discover_keeps_broken_tasks_beside_good_ones() {
    let root = tempfile::tempdir().expect("tempdir");
    valid_task(root.path(), "rows", "b_good", "b_good");
    let broken = valid_task(root.path(), "rows", "a_broken", "a_broken");
    std::fs::write(
        broken.join("reference.toml"),
        "[[launch]]\nkernel = \"nope\"\n",
    )
    .expect("write");
    // Skipped: hidden and underscore directories, and directories without a task.toml.
    valid_task(root.path(), "rows", "_draft", "_draft");
    valid_task(root.path(), ".hidden", "c_task", "c_task");
    std::fs::create_dir_all(root.path().join("rows/notes")).expect("mkdir");

    let s = Suite::discover(root.path()).expect("discover");
    assert_eq!(s.ids(), vec!["a_broken", "b_good"]);
    match s.get("a_broken") {
        Some(Entry::Broken {
            diagnostics,
            category,
            ..
        }) => {
            assert_eq!(category, "rows");
            assert!(
                diagnostics.iter().any(|d| d.key == "launch[0].kernel"),
                "{}",
                render(diagnostics)
            );
        }
        other => panic!("a_broken should be broken: {other:?}"),
    }
    assert!(matches!(s.get("b_good"), Some(Entry::Ok(_))));
}

#[test]
fn locate_and_discover_name_a_missing_directory() {
    let missing = Path::new("/nonexistent/ksmith-tasks");
    match suite::locate(Some(missing)) {
        Err(e @ SuiteError::Missing(_)) => {
            assert!(e.to_string().contains("/nonexistent/ksmith-tasks"), "{e}");
            assert!(e.to_string().contains("--tasks-dir"), "{e}");
        }
        other => panic!("expected SuiteError::Missing, got {other:?}"),
    }
    assert!(matches!(
        Suite::discover(missing),
        Err(SuiteError::Missing(_))
    ));
}

/// The committed suite itself loads cleanly: a task that fails here fails `ksmith tasks check`.
#[test]
fn every_real_task_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tasks");
    let s = Suite::discover(&root).expect("the repository's tasks/ directory");
    assert!(s.entries.len() >= 5, "{} tasks", s.entries.len());
    let broken: Vec<String> = s
        .entries
        .iter()
        .filter_map(|e| match e {
            Entry::Broken {
                id, diagnostics, ..
            } => Some(format!("{id}:\n{}", render(diagnostics))),
            Entry::Ok(_) => None,
        })
        .collect();
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
