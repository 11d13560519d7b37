//! The loaders never panic, whatever they are given: every real task's `task.toml`,
//! `reference.toml` and `reference.cu` is mutated (truncated, lines deleted or duplicated,
//! values swapped between lines, values replaced with extremes, bytes flipped) with a fixed
//! seed, and each mutant is parsed; `Ok` or `Err` are both fine, a panic fails the test. What
//! parses is also exercised further (shapes checked, plans resolved, errors rendered), since
//! a mutant that parses reaches code a malformed one does not.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use verifier::expr::Expr;
use verifier::plan::Plan;
use verifier::source;
use verifier::task::Task;

/// splitmix64: deterministic, and good enough to pick mutation sites.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// Bytes likely to break TOML structure, expressions or the include scanner.
const NASTY: &[u8] = b"\"'[]{}=,.#\\\n:<>()/*-+%!&|0123456789 _aZ\t\r\x00\x7f";

/// Values that stress the readers' type and range handling.
const EXTREMES: &[&str] = &[
    "0",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999",
    "1e308",
    "nan",
    "inf",
    "\"\"",
    "\"M *\"",
    "\"9223372036854775807 * 2\"",
    "\"1 / 0\"",
    "\"((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((M))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))\"",
    "[]",
    "[[]]",
    "{}",
    "true",
    "\"f16:1.0\"",
    "\"i32:\"",
    "\"u64:-1\"",
    "[1, 2, 3, 4]",
    "\"é\"",
    "1979-05-27T07:32:00Z",
];

fn cut(text: &str, at: usize) -> String {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text[..at].to_string()
}

/// Deterministic mutants of `text`, at most about `budget` of them.
fn mutants(text: &str, rng: &mut Rng, budget: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let per = budget / 6;

    // Truncation at evenly spaced byte offsets (every N-th byte).
    let step = (text.len() / per.max(1)).max(1);
    for at in (0..text.len()).step_by(step).take(per) {
        out.push((format!("truncated at byte {at}"), cut(text, at)));
    }
    // Line deletion and duplication.
    for _ in 0..per / 2 {
        let i = rng.below(lines.len());
        let mut l = lines.clone();
        l.remove(i.min(l.len().saturating_sub(1)));
        out.push((format!("line {} deleted", i + 1), l.join("\n")));
        let j = rng.below(lines.len());
        let mut l = lines.clone();
        if let Some(line) = lines.get(j) {
            l.insert(j, line);
        }
        out.push((format!("line {} duplicated", j + 1), l.join("\n")));
    }
    // Values swapped between two `key = value` lines.
    let assignments: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains('='))
        .collect();
    for _ in 0..per {
        if assignments.len() < 2 {
            break;
        }
        let (a, b) = (*rng.pick(&assignments), *rng.pick(&assignments));
        let (Some((ka, va)), Some((kb, vb))) = (lines[a].split_once('='), lines[b].split_once('='))
        else {
            continue;
        };
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        l[a] = format!("{ka}={vb}");
        l[b] = format!("{kb}={va}");
        out.push((
            format!("values of lines {} and {} swapped", a + 1, b + 1),
            l.join("\n"),
        ));
    }
    // Values replaced with extremes.
    for _ in 0..per {
        if assignments.is_empty() {
            break;
        }
        let a = *rng.pick(&assignments);
        let Some((k, _)) = lines[a].split_once('=') else {
            continue;
        };
        let v = rng.pick(EXTREMES);
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        l[a] = format!("{k}= {v}");
        out.push((format!("line {} value set to {v}", a + 1), l.join("\n")));
    }
    // Random byte flips (1 to 4 per mutant); the result need not be valid UTF-8, so it is
    // decoded lossily, as a loader reading a damaged file would see it.
    for _ in 0..per {
        let mut bytes = text.as_bytes().to_vec();
        let n = 1 + rng.below(4);
        let mut sites = Vec::new();
        for _ in 0..n {
            if bytes.is_empty() {
                break;
            }
            let i = rng.below(bytes.len());
            bytes[i] = if rng.below(4) == 0 {
                rng.next() as u8
            } else {
                *rng.pick(NASTY)
            };
            sites.push(i);
        }
        out.push((
            format!("bytes {sites:?} flipped"),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    out
}

fn tasks_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tasks")
}

fn task_dirs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(cats) = std::fs::read_dir(tasks_root()) else {
        return out;
    };
    for cat in cats.filter_map(|e| e.ok()).map(|e| e.path()) {
        let Ok(ids) = std::fs::read_dir(&cat) else {
            continue;
        };
        for d in ids.filter_map(|e| e.ok()).map(|e| e.path()) {
            if d.join("task.toml").is_file() && d.join("reference.toml").is_file() {
                out.push(d);
            }
        }
    }
    out.sort();
    out
}

/// Runs `f` and turns a panic into a described failure; returns what `f` returned, or false.
fn no_panic(failures: &mut Vec<String>, what: &str, text: &str, f: impl FnOnce() -> bool) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(parsed) => parsed,
        Err(_) => {
            let head: String = text.chars().take(300).collect();
            failures.push(format!("{what}: panicked; input starts:\n{head}"));
            false
        }
    }
}

fn exercise_task(path: &Path, text: &str) -> bool {
    match Task::parse(path, text) {
        Ok(t) => {
            for s in &t.shapes {
                let _ = t.check_shape(s);
                for x in t.tensors() {
                    let _ = x.numel(s);
                    let _ = x.signature();
                }
            }
            let _ = serde_json::to_string(&t);
            true
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    }
}

fn exercise_plan(path: &Path, text: &str, task: &Task, kernels: &BTreeSet<String>) -> bool {
    match Plan::parse(path, text, task, kernels) {
        Ok(p) => {
            for s in &task.shapes {
                let _ = p.resolve(s);
                let _ = p.resolve_prepare(s);
                let _ = p.scratch_lengths(s);
            }
            let _ = p.kernel_names();
            true
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    }
}

#[test]
fn mutated_real_tasks_never_panic_the_loaders() {
    let dirs = task_dirs();
    assert!(
        dirs.len() >= 5,
        "expected the real task suite under {}, found {} tasks",
        tasks_root().display(),
        dirs.len()
    );
    let started = std::time::Instant::now();
    // Spread about 6000 cases over the suite, whatever its size.
    let budget = (6000 / (3 * dirs.len())).max(24);
    let mut rng = Rng(0x6b73_6d69_7468);
    let mut failures = Vec::new();
    let mut cases = 0usize;
    let mut parsed = 0usize;
    for dir in &dirs {
        let name = dir
            .strip_prefix(tasks_root())
            .unwrap_or(dir)
            .display()
            .to_string();
        let task_path = dir.join("task.toml");
        let plan_path = dir.join("reference.toml");
        let src_path = dir.join("reference.cu");
        let task_text = std::fs::read_to_string(&task_path).unwrap_or_default();
        let plan_text = std::fs::read_to_string(&plan_path).unwrap_or_default();
        let src = std::fs::read_to_string(&src_path).unwrap_or_default();

        for (what, m) in mutants(&task_text, &mut rng, budget) {
            cases += 1;
            parsed += usize::from(no_panic(
                &mut failures,
                &format!("{name}/task.toml {what}"),
                &m,
                || exercise_task(&task_path, &m),
            ));
        }
        // Plans are validated against their task; a task that does not load (someone is
        // editing it) still gets its task.toml mutants above.
        let kernels = source::kernel_names(&src);
        if let Ok(task) = Task::parse(&task_path, &task_text) {
            for (what, m) in mutants(&plan_text, &mut rng, budget) {
                cases += 1;
                parsed += usize::from(no_panic(
                    &mut failures,
                    &format!("{name}/reference.toml {what}"),
                    &m,
                    || exercise_plan(&plan_path, &m, &task, &kernels),
                ));
            }
        }
        for (what, m) in mutants(&src, &mut rng, budget / 2) {
            cases += 1;
            no_panic(
                &mut failures,
                &format!("{name}/reference.cu {what}"),
                &m,
                || {
                    let _ = source::check_includes(&m);
                    !source::kernel_names(&m).is_empty()
                },
            );
        }
    }
    eprintln!(
        "{cases} mutants of {} tasks ({parsed} still loaded) in {:.1} s",
        dirs.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(cases >= 2000, "only {cases} cases");
    assert!(
        failures.is_empty(),
        "{} of {cases} mutants panicked:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Random token soup through the expression parser and evaluator.
#[test]
fn random_expressions_never_panic() {
    const TOKENS: &[&str] = &[
        "M",
        "N",
        "K",
        "0",
        "1",
        "-1",
        "7",
        "9223372036854775807",
        "99999999999999999999",
        "+",
        "-",
        "*",
        "/",
        "%",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "&&",
        "||",
        "!",
        "(",
        ")",
        ",",
        "min(",
        "max(",
        "ceil_div(",
        "round_up(",
        "if(",
        "foo(",
        " ",
        "é",
        "\"",
        "$",
        "=",
    ];
    let mut rng = Rng(42);
    let env = |n: &str| match n {
        "M" => Some(0),
        "N" => Some(i64::MAX),
        "K" => Some(-3),
        _ => None,
    };
    let mut failures = Vec::new();
    let mut evaluated = 0;
    for case in 0..3000 {
        let len = 1 + rng.below(24);
        let text: String = (0..len).map(|_| *rng.pick(TOKENS)).collect();
        evaluated += usize::from(no_panic(
            &mut failures,
            &format!("expression {case}"),
            &text,
            || {
                let Ok(e) = Expr::parse(&text) else {
                    return false;
                };
                let _ = e.check_names(|n| env(n).is_some());
                let _ = e.names();
                e.eval(&env).is_ok()
            },
        ));
    }
    // Nesting far past the parser's depth limit is an error, not a stack overflow.
    for deep in [
        "(".repeat(5000),
        "-".repeat(5000) + "1",
        "!".repeat(4000) + "1",
    ] {
        let rejected = no_panic(&mut failures, "deep nesting", &deep, || {
            Expr::parse(&deep).is_err()
        });
        assert!(rejected, "{} bytes of nesting were accepted", deep.len());
    }
    // Well-formed expressions reach the evaluator: overflow, division by zero and lazy
    // branches on extreme values.
    let mut structured_ok = 0;
    for case in 0..3000 {
        let text = random_expr(&mut rng, 5);
        let parsed = no_panic(&mut failures, &format!("structured {case}"), &text, || {
            let Ok(e) = Expr::parse(&text) else {
                return false;
            };
            let _ = e.eval(&env);
            true
        });
        structured_ok += usize::from(parsed);
    }
    eprintln!("{structured_ok} of 3000 structured expressions parsed");
    assert!(
        structured_ok > 2000,
        "only {structured_ok} well-formed expressions parsed"
    );
    eprintln!("3000 random expressions, {evaluated} evaluated without error");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A syntactically valid expression (functions sometimes get the wrong number of arguments).
fn random_expr(rng: &mut Rng, depth: usize) -> String {
    const LEAVES: &[&str] = &[
        "M",
        "N",
        "K",
        "0",
        "1",
        "2",
        "-1",
        "9223372036854775807",
        "64",
    ];
    const OPS: &[&str] = &[
        "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||",
    ];
    const FUNCS: &[&str] = &["min", "max", "ceil_div", "round_up", "if"];
    if depth == 0 || rng.below(4) == 0 {
        return rng.pick(LEAVES).to_string();
    }
    match rng.below(4) {
        0 => format!("-({})", random_expr(rng, depth - 1)),
        1 => format!("!({})", random_expr(rng, depth - 1)),
        2 => {
            let f = *rng.pick(FUNCS);
            let arity = match f {
                "min" | "max" => 2 + rng.below(2),
                "if" => 3,
                _ => 2,
            };
            // One call in ten gets a wrong argument count.
            let arity = if rng.below(10) == 0 {
                rng.below(4)
            } else {
                arity
            };
            let args: Vec<String> = (0..arity).map(|_| random_expr(rng, depth - 1)).collect();
            format!("{f}({})", args.join(", "))
        }
        _ => format!(
            "({} {} {})",
            random_expr(rng, depth - 1),
            rng.pick(OPS),
            random_expr(rng, depth - 1)
        ),
    }
}
