//! Reports: known answers on a hand-built run, speed on a 40 tasks × 3 agents fixture, and the
//! HTML page rendered by a real headless Chromium.

mod common;

use bench_suite::report::{self, Baseline, Format, LeaderboardFilter};
use bench_suite::store::*;
use common::fixture;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Known {
    store: Store,
    _db: common::TestDb,
}

/// Five tasks with outcomes whose fast_p is easy to count by hand:
///   a: correct 2.5× (eager 3.0×)       b: correct exactly 1.0×
///   c: compile_error only              d: correct 1.6×, plus a quarantined 20× candidate
///   e: never attempted (an item, no candidates)
/// and a reference seed in every task that an agent run must not count.
fn known_run(db: common::TestDb) -> Known {
    let store = Store::open(&db.url).expect("open");
    store
        .write(|tx| {
            let gpu = tx.upsert_gpu(&NewGpu {
                gpu_key: "g".into(),
                name: "Test GPU".into(),
                compute_capability: "9.0".into(),
                sm_count: None,
                memory_bytes: None,
                driver_version: String::new(),
                details: json!({}),
            })?;
            let run = tx.create_run(&NewRun {
                name: "known".into(),
                kind: "agent".into(),
                agent: "model-x".into(),
                suite: "seed".into(),
                config: json!({}),
                git_rev: String::new(),
            })?;
            let mut ids = vec![];
            for (name, cat) in [
                ("a", "gemm"),
                ("b", "gemm"),
                ("c", "norm"),
                ("d", "norm"),
                ("e", "norm"),
            ] {
                ids.push(tx.upsert_task(&NewTask {
                    name: name.into(),
                    category: cat.into(),
                    title: String::new(),
                    content_hash: "h".into(),
                    details: json!({}),
                })?);
            }
            let mut n = 0;
            let mut add = |tx: &mut StoreTx<'_>,
                           task: i64,
                           origin: Origin,
                           generation: i64,
                           tokens: i64,
                           verdict: Verdict,
                           sref: Option<f64>,
                           eager: Option<f64>,
                           quarantined: bool|
             -> Result<()> {
                n += 1;
                let call = if origin == Origin::Llm {
                    Some(tx.add_llm_call(&NewLlmCall {
                        run_id: run.id,
                        task_id: Some(task),
                        role: "coder".into(),
                        provider: "p".into(),
                        model: "model-x".into(),
                        tokens_in: tokens,
                        tokens_out: 0,
                        cost_usd: 0.25,
                        latency_ms: 1.0,
                        request: String::new(),
                        response: String::new(),
                        error: None,
                    })?)
                } else {
                    None
                };
                let (c, _) = tx.add_candidate(&NewCandidate {
                    run_id: run.id,
                    task_id: task,
                    origin,
                    source: format!("k{n}"),
                    plan: String::new(),
                    generation,
                    island: 0,
                    llm_call_id: call,
                    parents: vec![],
                    notes: json!({}),
                })?;
                tx.add_evaluation(&NewEvaluation {
                    candidate_id: c,
                    gpu_id: Some(gpu),
                    cache_key: format!("e{n}"),
                    protocol: "t".into(),
                    verdict,
                    details: json!({}),
                    compile_ms: None,
                    timings: vec![],
                    speedup_ref: sref,
                    speedup_eager: eager,
                    speedup_compile: None,
                    sol_pct: sref.map(|s| s * 20.0),
                    quarantined,
                    quarantine_reason: None,
                    cached_from: None,
                })?;
                Ok(())
            };
            use Verdict::*;
            for &t in &ids[..4] {
                add(
                    tx,
                    t,
                    Origin::Reference,
                    0,
                    0,
                    Correct,
                    Some(1.0),
                    Some(1.2),
                    false,
                )?;
            }
            add(
                tx,
                ids[0],
                Origin::Llm,
                0,
                100,
                WrongOutput,
                None,
                None,
                false,
            )?;
            add(
                tx,
                ids[0],
                Origin::Llm,
                1,
                200,
                Correct,
                Some(1.5),
                Some(1.8),
                false,
            )?;
            add(
                tx,
                ids[0],
                Origin::Llm,
                2,
                300,
                Correct,
                Some(2.5),
                Some(3.0),
                false,
            )?;
            add(
                tx,
                ids[1],
                Origin::Llm,
                0,
                50,
                Correct,
                Some(1.0),
                None,
                false,
            )?;
            add(
                tx,
                ids[2],
                Origin::Llm,
                0,
                70,
                CompileError,
                None,
                None,
                false,
            )?;
            add(
                tx,
                ids[2],
                Origin::Llm,
                1,
                70,
                CompileError,
                None,
                None,
                false,
            )?;
            add(
                tx,
                ids[3],
                Origin::Llm,
                0,
                10,
                Correct,
                Some(20.0),
                Some(25.0),
                true,
            )?;
            add(
                tx,
                ids[3],
                Origin::Llm,
                1,
                10,
                Correct,
                Some(1.6),
                None,
                false,
            )?;
            Ok((run, ids))
        })
        .map(|(run, ids)| {
            store
                .add_items(
                    run.id,
                    &ids.iter()
                        .enumerate()
                        .map(|(i, t)| WorkItem {
                            key: format!("t{i}"),
                            task_id: Some(*t),
                            payload: json!({}),
                        })
                        .collect::<Vec<_>>(),
                )
                .expect("items");
        })
        .expect("known run");
    Known { store, _db: db }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn known_answers(db: common::TestDb) {
    let k = known_run(db);
    let (s, _) = report::run_report(&k.store, Some("known"), Format::Markdown).expect("report");
    assert_eq!(
        s.tasks_total, 5,
        "N counts the failed and the unattempted task"
    );
    assert_eq!(s.tasks_correct, 3);
    let fr = s.baseline(Baseline::Reference).expect("ref");
    let got: Vec<f64> = fr.fast_p.iter().map(|(_, v)| *v).collect();
    // p = 0: a, b, d; p = 1: a, d (b is exactly 1.0, strict >); p = 1.5: a, d; p = 2: a.
    assert_eq!(got, vec![3.0 / 5.0, 2.0 / 5.0, 2.0 / 5.0, 1.0 / 5.0]);
    // Geomean over correct tasks (quarantined 20× ignored, reference seeds ignored).
    assert!(close(
        fr.geomean_speedup.expect("g"),
        (2.5f64 * 1.0 * 1.6).powf(1.0 / 3.0)
    ));
    let fe = s.baseline(Baseline::Eager).expect("eager");
    assert_eq!(
        fe.measured, 1,
        "only a has an eager time among correct kernels"
    );
    assert_eq!(fe.fast_p[1].1, 1.0 / 5.0);
    let ta = s.tasks.iter().find(|t| t.task == "a").expect("a");
    assert_eq!(
        ta.tokens_to_first_correct,
        Some(300),
        "100 (wrong) + 200 (first correct)"
    );
    assert_eq!(ta.best_generation, Some(2));
    assert_eq!(ta.best_by_generation, vec![None, Some(1.5), Some(2.5)]);
    assert_eq!(
        ta.candidates, 3,
        "the reference seed is not an agent candidate"
    );
    let tc = s.tasks.iter().find(|t| t.task == "c").expect("c");
    assert_eq!(tc.main_failure(), Some("compile_error"));
    assert_eq!(tc.tokens_to_first_correct, None);
    let td = s.tasks.iter().find(|t| t.task == "d").expect("d");
    assert_eq!((td.quarantined, td.speedup_ref), (1, Some(1.6)));
    assert_eq!(s.quarantined, 1);
    assert!(close(s.cost.cost_usd, 8.0 * 0.25));
    assert!(close(s.cost.cost_per_task, 8.0 * 0.25 / 5.0));
    let norm = s
        .categories
        .iter()
        .find(|c| c.category == "norm")
        .expect("norm");
    assert_eq!((norm.tasks, norm.correct), (3, 1));
    assert!(close(norm.fast_1_ref, 1.0 / 3.0));

    // The same numbers come out of every format.
    let (_, md) = report::run_report(&k.store, Some("known"), Format::Markdown).expect("md");
    assert!(
        md.contains("| reference | 60.0% | 40.0% | 40.0% | 20.0% |"),
        "{md}"
    );
    let (_, js) = report::run_report(&k.store, Some("known"), Format::Json).expect("json");
    let v: Value = serde_json::from_str(&js).expect("valid JSON");
    assert_eq!(v["tasks_total"], 5);
    assert_eq!(v["baselines"][0]["fast_p"][1], json!([1.0, 0.4]));
    let (_, csv) = report::run_report(&k.store, Some("known"), Format::Csv).expect("csv");
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = r.records().collect::<Result<_, _>>().expect("csv rows");
    assert_eq!(rows.len(), 5);
    let a = rows.iter().find(|r| &r[2] == "a").expect("row a");
    assert_eq!((&a[4], &a[6], &a[7]), ("true", "2.5", "3"));

    // A bench run counts its reference kernels.
    let board =
        report::build_leaderboard(&k.store, &LeaderboardFilter::default(), Baseline::Reference)
            .expect("board");
    assert_eq!(board.rows.len(), 1);
}

#[test]
fn leaderboard_filters() {
    let db = common::sqlite();
    let store = Store::open(&db.url).expect("open");
    fixture::build(&store, 5, &AGENTS);
    // A second, later run of model-a.
    let names = fixture::build_runs(&store, 5, &[("model-a", 0.1)], "again");
    assert_eq!(names, vec!["again-model-a".to_string()]);
    let all = report::build_leaderboard(&store, &LeaderboardFilter::default(), Baseline::Reference)
        .expect("all");
    assert_eq!(all.rows.len(), 4);
    let latest = report::build_leaderboard(
        &store,
        &LeaderboardFilter {
            latest_per_agent: true,
            ..Default::default()
        },
        Baseline::Reference,
    )
    .expect("latest");
    let mut runs: Vec<&str> = latest.rows.iter().map(|r| r.run.name.as_str()).collect();
    runs.sort_unstable();
    assert_eq!(
        runs,
        vec!["again-model-a", "search-model-b", "search-model-c"]
    );
    let only = report::build_leaderboard(
        &store,
        &LeaderboardFilter {
            agent: Some("model-b".into()),
            ..Default::default()
        },
        Baseline::Eager,
    )
    .expect("agent");
    assert_eq!(only.rows.len(), 1);
    assert_eq!(only.baseline, Baseline::Eager);
}

#[test]
fn known_answers_sqlite() {
    known_answers(common::sqlite());
}

#[test]
fn known_answers_postgres() {
    if let Some(db) = common::postgres("known_answers_postgres") {
        known_answers(db);
    }
}

#[test]
fn unknown_run_and_empty_store_are_clear_errors() {
    let db = common::sqlite();
    let store = Store::open(&db.url).expect("open");
    let err = report::run_report(&store, None, Format::Markdown).expect_err("empty");
    assert!(err.to_string().contains("no runs"), "{err}");
    let err = report::run_report(&store, Some("nope"), Format::Markdown).expect_err("unknown");
    assert!(err.to_string().contains("nope"), "{err}");
    assert!("xml".parse::<Format>().is_err());
    assert!("speed".parse::<Baseline>().is_err());
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

const AGENTS: [(&str, f64); 3] = [("model-a", 0.9), ("model-b", 0.6), ("model-c", 0.3)];

#[test]
fn fixture_of_40_tasks_by_3_agents_renders_fast() {
    let db = common::sqlite();
    let store = Store::open(&db.url).expect("open");
    let runs = fixture::build(&store, 40, &AGENTS);
    // One report = load the run from the database, summarize, render.
    let mut slowest = Duration::ZERO;
    let mut bytes = 0;
    for run in &runs {
        for f in [Format::Markdown, Format::Json, Format::Csv, Format::Html] {
            let t = Instant::now();
            bytes += report::run_report(&store, Some(run), f)
                .expect("report")
                .1
                .len();
            slowest = slowest.max(t.elapsed());
        }
    }
    let t = Instant::now();
    let board =
        report::build_leaderboard(&store, &LeaderboardFilter::default(), Baseline::Reference)
            .expect("board");
    let html = report::render_leaderboard(&board, Format::Html).expect("board");
    let leaderboard_time = t.elapsed();
    for f in [Format::Markdown, Format::Json, Format::Csv] {
        bytes += report::render_leaderboard(&board, f).expect("board").len();
    }
    eprintln!(
        "40 tasks x 3 agents: slowest run report {:.0} ms, leaderboard (3 runs, HTML) {:.0} ms, {} bytes in all",
        slowest.as_secs_f64() * 1e3,
        leaderboard_time.as_secs_f64() * 1e3,
        bytes + html.len()
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a run report took {slowest:?}"
    );
    assert!(
        leaderboard_time < Duration::from_secs(2),
        "the leaderboard took {leaderboard_time:?}"
    );
    assert_eq!(board.rows.len(), 3);
    // The strongest agent ranks first.
    assert_eq!(board.rows[0].run.agent, "model-a");
    assert!(board.rows.iter().all(|r| r.tasks_total == 40));
    let md = report::render_leaderboard(&board, Format::Markdown).expect("md");
    assert_eq!(
        md.lines().filter(|l| l.starts_with('|')).count(),
        2 + board.rows.len(),
        "{md}"
    );
    assert_tables_not_ragged(&md);
    for run in &runs {
        let (_, md) = report::run_report(&store, Some(run), Format::Markdown).expect("md");
        assert_tables_not_ragged(&md);
    }
}

/// A Markdown table renders only when every row, the delimiter row included, has as many
/// cells as its header.
fn assert_tables_not_ragged(md: &str) {
    let cells = |l: &str| l.matches('|').count() - l.matches("\\|").count();
    let mut header: Option<usize> = None;
    for line in md.lines() {
        if !line.starts_with('|') {
            header = None;
            continue;
        }
        let n = cells(line);
        let h = *header.get_or_insert(n);
        assert_eq!(n, h, "ragged Markdown table at {line:?} in:\n{md}");
    }
}

/// The browser, or None (with a message) outside CI; in CI a missing browser fails.
fn chromium() -> Option<PathBuf> {
    let candidates = [
        std::env::var("KSMITH_TEST_CHROMIUM").ok(),
        Some("/usr/bin/chromium".to_string()),
        Some("/usr/bin/chromium-browser".to_string()),
    ];
    if let Some(p) = candidates
        .into_iter()
        .flatten()
        .map(PathBuf::from)
        .find(|p| p.exists())
    {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("chromium is not installed in CI; `source scripts/test-services.sh` first");
    }
    eprintln!("SKIPPED the browser test: chromium not found (source scripts/test-services.sh)");
    None
}

fn headless(browser: &Path, profile: &Path, extra: &[&str], page: &Path) -> std::process::Output {
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        // Any attempt to reach the network fails to resolve: the page must need none.
        "--host-resolver-rules=MAP * ~NOTFOUND",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(format!("file://{}", page.display()))
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("run chromium");
    // A browser that hangs must fail the test, not stall CI: kill it after two minutes.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    let out = child.wait_with_output().expect("wait for chromium");
    let _ = tx.send(());
    let _ = watchdog.join();
    out
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let Some(browser) = chromium() else { return };
    let db = common::sqlite();
    let store = Store::open(&db.url).expect("open");
    let runs = fixture::build(&store, 40, &AGENTS);
    let (summary, html) = report::run_report(&store, Some(&runs[2]), Format::Html).expect("html");
    assert!(!html.contains("<script"), "no JavaScript");
    for needle in ["src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(needle), "external resource: {needle}");
    }
    let dir = artifacts_dir();
    let page = dir.join("report.html");
    std::fs::write(&page, &html).expect("write page");
    let profile = tempfile::tempdir().expect("profile dir");

    let out = headless(&browser, profile.path(), &["--dump-dom"], &page);
    assert!(
        out.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    // Tables the browser built: one row per task, one per category, the fast_p table.
    let tbody = |id: &str| {
        let start = dom
            .find(&format!("<table id=\"{id}\""))
            .unwrap_or_else(|| panic!("table {id} missing"));
        let end = start + dom[start..].find("</table>").expect("table end");
        dom[start..end].matches("<tr").count()
    };
    assert_eq!(tbody("tasks"), 40 + 1, "header + one row per task");
    assert_eq!(tbody("categories"), 5 + 1);
    assert_eq!(tbody("fastp"), 3 + 1);
    assert_eq!(tbody("summary"), 10);
    // Charts: one bar or failure mark per task, fast_p curves, 11 SOL bins, generations.
    for id in [
        "chart-speedup",
        "chart-fastp",
        "chart-sol",
        "chart-generations",
    ] {
        assert!(
            dom.contains(&format!("<svg id=\"{id}\"")),
            "chart {id} missing"
        );
    }
    let marks = dom.matches("class=\"bar\"").count() + dom.matches("class=\"bar failed\"").count();
    assert_eq!(marks, 40);
    assert_eq!(
        dom.matches("class=\"bar failed\"").count(),
        summary.tasks.iter().filter(|t| !t.correct).count()
    );
    assert_eq!(dom.matches("class=\"bin\"").count(), 11);
    assert!(dom.matches("class=\"series\"").count() >= 2);

    let shot = dir.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let out = headless(
        &browser,
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,2400",
            "--hide-scrollbars",
        ],
        &page,
    );
    assert!(
        out.status.success(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(
        png.len() > 20_000,
        "a blank page compresses to almost nothing; got {} bytes",
        png.len()
    );
    eprintln!("screenshot kept at {}", shot.display());

    // The leaderboard page too.
    let board =
        report::build_leaderboard(&store, &LeaderboardFilter::default(), Baseline::Reference)
            .expect("board");
    let lb = dir.join("leaderboard.html");
    std::fs::write(
        &lb,
        report::render_leaderboard(&board, Format::Html).expect("html"),
    )
    .expect("write");
    let out = headless(&browser, profile.path(), &["--dump-dom"], &lb);
    assert!(out.status.success());
    let dom = String::from_utf8_lossy(&out.stdout);
    assert_eq!(dom.matches("<tr data-run=").count(), 3);
    let start = dom.find("<table id=\"per-task\"").expect("per-task table");
    let end = start + dom[start..].find("</table>").expect("end");
    assert_eq!(dom[start..end].matches("<tr").count(), 40 + 1);
    assert_eq!(dom.matches("class=\"series\"").count(), 3);
    let shot = dir.join("leaderboard.png");
    let out = headless(
        &browser,
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,1100",
            "--hide-scrollbars",
        ],
        &lb,
    );
    assert!(out.status.success());
    assert!(
        std::fs::metadata(&shot)
            .expect("leaderboard screenshot")
            .len()
            > 10_000
    );
}
