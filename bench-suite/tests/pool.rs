//! Worker isolation against a stand-in worker: a bash script that speaks the protocol and, per
//! request, answers, crashes, hangs, writes garbage or a partial line, or floods stderr. The
//! mode is the request's `source`. Every test is bounded to a few seconds.

use bench_suite::pool::{
    visible_device, Limits, Outcome, Pool, PoolConfig, Reply, Worker, WorkerCommand,
};
use std::path::Path;
use std::time::{Duration, Instant};
use verifier::protocol::{EvalOptions, EvaluateRequest, RequestBody, ResponseBody};
use verifier::verdict::Verdict;

const STAND_IN: &str = r#"#!/usr/bin/env bash
# A fake `ksmith worker`.
while IFS= read -r line; do
  [[ $line =~ \"id\":([0-9]+) ]] && id=${BASH_REMATCH[1]}
  [[ $line =~ \"kind\":\"([a-z_]+)\" ]] && kind=${BASH_REMATCH[1]}
  mode=""
  [[ $line =~ \"source\":\"([a-z_0-9]+)\" ]] && mode=${BASH_REMATCH[1]}
  case "$kind" in
    ping) printf '{"id":%s,"kind":"pong","pid":%s,"protocol":1,"device":"%s"}\n' "$id" "$$" "${CUDA_VISIBLE_DEVICES:-none}"; continue ;;
    shutdown) printf '{"id":%s,"kind":"bye"}\n' "$id"; exit 0 ;;
  esac
  case "$mode" in
    ok) ;;
    segv) echo "CUDA_ERROR_ILLEGAL_ADDRESS in kernel" >&2; kill -SEGV $$ ;;
    exit3) echo "fatal: cannot continue" >&2; exit 3 ;;
    hang) sleep 30 ;;
    garbage) echo "this is not json"; continue ;;
    partial_exit) printf '{"id":%s,"kind":' "$id"; exit 0 ;;
    partial_hang) printf '{"id":%s,"kind":' "$id"; sleep 30 ;;
    wrong_id) printf '{"id":%s,"kind":"bye"}\n' "$((id + 1000))"; continue ;;
    long) head -c 5000 /dev/zero | tr '\0' 'x'; echo; continue ;;
    flood) head -c 3000000 /dev/zero | tr '\0' 'e' >&2; echo "last words" >&2 ;;
    answer_then_exit) printf '{"id":%s,"kind":"evaluated","verdict":{"verdict":"correct","cases":1,"nondeterministic_within_tolerance":[]},"elapsed_ms":1}\n' "$id"; exit 0 ;;
    slow) sleep 0.3 ;;
    span) echo "${CUDA_VISIBLE_DEVICES:-none} start $(date +%s%N)" >> "$SPAN_LOG"; sleep 0.3; echo "${CUDA_VISIBLE_DEVICES:-none} end $(date +%s%N)" >> "$SPAN_LOG" ;;
    *) printf '{"id":%s,"kind":"harness_error","message":"unknown mode %s"}\n' "$id" "$mode"; continue ;;
  esac
  printf '{"id":%s,"kind":"evaluated","verdict":{"verdict":"correct","cases":1,"nondeterministic_within_tolerance":[]},"elapsed_ms":1,"log":["%s"]}\n' "$id" "${CUDA_VISIBLE_DEVICES:-none}"
done
"#;

fn stand_in(dir: &Path) -> WorkerCommand {
    let path = dir.join("worker.sh");
    std::fs::write(&path, STAND_IN).unwrap();
    WorkerCommand {
        program: "bash".into(),
        args: vec![path.display().to_string()],
        env: vec![],
    }
}

fn eval(mode: &str) -> RequestBody {
    RequestBody::Evaluate(EvaluateRequest {
        task_dir: "tasks/x/y".into(),
        source: mode.into(),
        plan: String::new(),
        options: EvalOptions::default(),
    })
}

fn limits() -> Limits {
    Limits {
        max_line_bytes: 4096,
        ..Limits::default()
    }
}

fn is_correct(o: &Outcome) -> bool {
    matches!(o, Outcome::Answered(ResponseBody::Evaluated(e)) if e.verdict.is_correct())
}

const T: Duration = Duration::from_secs(2);

#[test]
fn answers_pings_and_evaluations() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::new(stand_in(dir.path()), limits());
    match w.call(RequestBody::Ping, T) {
        Outcome::Answered(ResponseBody::Pong(info)) => {
            assert_eq!(Some(info.pid), w.pid());
            assert_eq!(info.protocol, 1);
        }
        other => panic!("{other:?}"),
    }
    for _ in 0..3 {
        assert!(is_correct(&w.call(eval("ok"), T)));
    }
    assert_eq!(w.starts, 1, "one process served every request");
    w.shutdown(T);
    assert_eq!(w.pid(), None);
}

#[test]
fn crashes_become_runtime_faults_and_the_worker_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::new(stand_in(dir.path()), limits());
    assert!(is_correct(&w.call(eval("ok"), T)));
    let first_pid = w.pid();
    match w.call(eval("segv"), T) {
        Outcome::Died {
            exit, stderr_tail, ..
        } => {
            assert_eq!(exit.signal, Some(11), "{exit:?}");
            assert!(
                stderr_tail.contains("CUDA_ERROR_ILLEGAL_ADDRESS"),
                "{stderr_tail}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.pid(), None);
    assert!(is_correct(&w.call(eval("ok"), T)));
    assert_ne!(w.pid(), first_pid);
    match w.call(eval("exit3"), T) {
        Outcome::Died {
            exit, stderr_tail, ..
        } => {
            assert_eq!((exit.code, exit.signal), (Some(3), None));
            assert!(stderr_tail.contains("fatal"));
        }
        other => panic!("{other:?}"),
    }
    assert!(is_correct(&w.call(eval("ok"), T)));
    assert_eq!(w.starts, 3);
    let v = Reply::from(w.call(eval("segv"), T));
    match v.verdict().unwrap() {
        Verdict::RuntimeFault { message, .. } => assert!(message.contains("SIGSEGV"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hangs_time_out_and_kill_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::new(stand_in(dir.path()), limits());
    assert!(is_correct(&w.call(eval("ok"), T)));
    let pid = w.pid().unwrap();
    let start = Instant::now();
    let out = w.call(eval("hang"), Duration::from_millis(400));
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(matches!(out, Outcome::TimedOut { .. }), "{out:?}");
    // The group is gone: the worker and the `sleep` it started.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "worker reaped"
    );
    // Field 5 of /proc/PID/stat is the process group (field 3 the state); the name field may
    // hold spaces, so count from its closing parenthesis. Killed children linger as zombies
    // until init reaps them: those do not count.
    let live_in_group = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                let Some((_, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                let f: Vec<&str> = rest.split_whitespace().collect();
                f.len() > 2 && f[0] != "Z" && f[2] == pid.to_string()
            })
            .count()
    };
    let until = Instant::now() + Duration::from_secs(2);
    let mut group_left = live_in_group();
    while group_left > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
        group_left = live_in_group();
    }
    assert_eq!(group_left, 0, "no process of the killed group survives");
    assert!(is_correct(&w.call(eval("ok"), T)));
    let out = w.call(eval("partial_hang"), Duration::from_millis(300));
    assert!(matches!(out, Outcome::TimedOut { .. }), "{out:?}");
    match Reply::from(out).verdict().unwrap() {
        Verdict::Timeout { limit_ms, .. } => assert_eq!(*limit_ms, 300),
        other => panic!("{other:?}"),
    }
    assert!(is_correct(&w.call(eval("ok"), T)));
}

#[test]
fn garbage_partial_lines_wrong_ids_and_long_lines_restart_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::new(stand_in(dir.path()), limits());
    for (mode, want) in [
        ("garbage", "protocol"),
        ("wrong_id", "protocol"),
        ("long", "protocol"),
        ("partial_exit", "died"),
    ] {
        let out = w.call(eval(mode), T);
        match (&out, want) {
            (Outcome::Protocol { error, .. }, "protocol") => assert!(!error.is_empty()),
            (Outcome::Died { partial, .. }, "died") => assert!(*partial > 0),
            _ => panic!("{mode}: {out:?}"),
        }
        assert_eq!(w.pid(), None, "{mode}: killed");
        assert!(
            is_correct(&w.call(eval("ok"), T)),
            "{mode}: next request is served"
        );
    }
    let r = Reply::from(w.call(eval("garbage"), T));
    assert!(
        matches!(&r, Reply::HarnessError(e) if e.contains("protocol")),
        "{r:?}"
    );
}

#[test]
fn stderr_floods_are_drained_and_only_the_tail_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::new(stand_in(dir.path()), limits());
    let start = Instant::now();
    assert!(is_correct(&w.call(eval("flood"), Duration::from_secs(5))));
    assert!(start.elapsed() < Duration::from_secs(5));
    match w.call(eval("exit3"), T) {
        Outcome::Died { stderr_tail, .. } => {
            assert!(stderr_tail.len() <= limits().stderr_tail_bytes + 100);
            assert!(stderr_tail.contains("fatal"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_worker_that_exits_after_answering_is_replaced_silently() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::new(stand_in(dir.path()), limits());
    assert!(is_correct(&w.call(eval("answer_then_exit"), T)));
    std::thread::sleep(Duration::from_millis(100));
    assert!(is_correct(&w.call(eval("ok"), T)));
    assert_eq!(w.starts, 2);
}

/// A worker stuck before reading stdin (say, in driver initialisation) must not block the
/// parent on a request larger than the pipe buffer.
#[test]
fn a_worker_that_never_reads_times_out_on_a_large_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stuck.sh");
    std::fs::write(&path, "sleep 30\n").unwrap();
    let mut w = Worker::new(
        WorkerCommand {
            program: "bash".into(),
            args: vec![path.display().to_string()],
            env: vec![],
        },
        limits(),
    );
    let big = RequestBody::Evaluate(EvaluateRequest {
        task_dir: "t".into(),
        source: "x".repeat(4 << 20),
        plan: String::new(),
        options: EvalOptions::default(),
    });
    let start = Instant::now();
    let out = w.call(big, Duration::from_millis(500));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(out, Outcome::TimedOut { .. }), "{out:?}");
}

#[test]
fn missing_worker_binary_is_a_harness_error() {
    let mut w = Worker::new(
        WorkerCommand {
            program: "/nonexistent/ksmith".into(),
            args: vec![],
            env: vec![],
        },
        limits(),
    );
    let r = Reply::from(w.call(eval("ok"), T));
    assert!(
        matches!(&r, Reply::HarnessError(e) if e.contains("/nonexistent/ksmith")),
        "{r:?}"
    );
}

/// A batch over two workers goes on past every kind of fault, answers in order, and spreads
/// work over both workers with CUDA_VISIBLE_DEVICES set per worker.
#[test]
fn a_pool_batch_survives_every_fault() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = PoolConfig::per_gpu(stand_in(dir.path()), &[0, 1], Duration::from_millis(800));
    cfg.limits = limits();
    let pool = Pool::new(cfg);
    let modes = [
        "ok",
        "segv",
        "slow",
        "hang",
        "ok",
        "garbage",
        "slow",
        "partial_exit",
        "exit3",
        "ok",
        "partial_hang",
        "flood",
        "slow",
        "ok",
    ];
    let start = Instant::now();
    let replies = pool.run_batch(modes.iter().map(|m| (eval(m), None)).collect());
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(replies.len(), modes.len());
    let mut devices = std::collections::BTreeSet::new();
    for (m, r) in modes.iter().zip(&replies) {
        let kind = match r {
            Reply::Answered(ResponseBody::Evaluated(e)) => {
                devices.extend(e.log.iter().cloned());
                e.verdict.kind().as_str()
            }
            Reply::Fault(v) => v.kind().as_str(),
            Reply::HarnessError(_) => "harness_error",
            Reply::Answered(other) => panic!("{m}: {other:?}"),
        };
        let want = match *m {
            "ok" | "slow" | "flood" => "correct",
            "segv" | "exit3" | "partial_exit" => "runtime_fault",
            "hang" | "partial_hang" => "timeout",
            _ => "harness_error",
        };
        assert_eq!(kind, want, "{m}");
    }
    assert_eq!(
        devices,
        [dev(0), dev(1)].into_iter().collect(),
        "both workers served requests, each with its own GPU"
    );
    // Six faults kill a worker; a restart happens when that worker takes its next request, so
    // a fault that ends a worker's share of the batch restarts nothing.
    let starts: u32 = pool.starts().iter().sum();
    assert!((2 + 6 - 2..=2 + 6).contains(&starts), "{starts} starts");
    // The pool still works after the batch.
    let again = pool.run_batch(vec![(RequestBody::Ping, None), (eval("ok"), None)]);
    assert!(matches!(again[0], Reply::Answered(ResponseBody::Pong(_))));
    assert!(again[1].verdict().unwrap().is_correct());
    pool.shutdown(T);
}

/// What worker `i` of a per-GPU pool sees as CUDA_VISIBLE_DEVICES under this test's own.
fn dev(i: u32) -> String {
    visible_device(std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(), i)
}

fn device_of(r: &Reply) -> String {
    match r {
        Reply::Answered(ResponseBody::Evaluated(e)) => e.log.join(","),
        other => panic!("{other:?}"),
    }
}

/// Requests addressed to one worker reach that worker's GPU; a worker the pool lacks is a
/// harness error, not a panic; and a fault on one worker leaves the others alone.
#[test]
fn requests_reach_the_named_worker() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = PoolConfig::per_gpu(stand_in(dir.path()), &[0, 1], Duration::from_millis(800));
    cfg.limits = limits();
    let pool = Pool::new(cfg);
    let ok = |m: &str| match eval(m) {
        RequestBody::Evaluate(r) => r,
        _ => unreachable!(),
    };
    for _ in 0..2 {
        assert_eq!(device_of(&pool.evaluate_on(1, ok("ok"))), dev(1));
        assert_eq!(device_of(&pool.evaluate_on(0, ok("ok"))), dev(0));
    }
    match pool.call_on(2, RequestBody::Ping, None) {
        Reply::HarnessError(m) => assert!(m.contains("no worker 2: the pool has 2"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A hang on worker 0 times out under its own limit and restarts only worker 0.
    let r = pool.call_on(0, eval("hang"), Some(Duration::from_millis(300)));
    assert!(
        matches!(&r, Reply::Fault(Verdict::Timeout { limit_ms: 300, .. })),
        "{r:?}"
    );
    assert_eq!(device_of(&pool.evaluate_on(1, ok("ok"))), dev(1));
    assert_eq!(device_of(&pool.evaluate_on(0, ok("ok"))), dev(0));
    assert_eq!(pool.starts(), vec![2, 1]);
    pool.shutdown(T);
}

/// Two threads on two workers run at the same time; two threads on one worker take turns
/// (the stand-in logs the start and end of each request with a nanosecond clock).
#[test]
fn workers_serve_in_parallel_and_one_worker_never_serves_two_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("spans.log");
    let mut cmd = stand_in(dir.path());
    cmd.env
        .push(("SPAN_LOG".to_string(), log.display().to_string()));
    let mut cfg = PoolConfig::per_gpu(cmd, &[0, 1], Duration::from_secs(5));
    cfg.limits = limits();
    let pool = Pool::new(cfg);
    // Start both processes first, so that start-up time does not separate the spans.
    for i in 0..2 {
        assert!(matches!(
            pool.call_on(i, RequestBody::Ping, None),
            Reply::Answered(ResponseBody::Pong(_))
        ));
    }
    let spans = |workers: [usize; 2]| -> Vec<(String, u128, u128)> {
        let _ = std::fs::remove_file(&log);
        std::thread::scope(|s| {
            for w in workers {
                let pool = &pool;
                s.spawn(move || {
                    assert!(pool
                        .call_on(w, eval("span"), None)
                        .verdict()
                        .unwrap()
                        .is_correct())
                });
            }
        });
        let text = std::fs::read_to_string(&log).unwrap();
        let mut open: Vec<(String, u128)> = Vec::new();
        let mut out = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let t: u128 = f[2].parse().unwrap();
            if f[1] == "start" {
                open.push((f[0].to_string(), t));
            } else {
                let i = open.iter().position(|(d, _)| d == f[0]).unwrap();
                let (d, s) = open.remove(i);
                out.push((d, s, t));
            }
        }
        assert_eq!(out.len(), 2, "{text}");
        out
    };
    let overlap = |a: &(String, u128, u128), b: &(String, u128, u128)| a.1 < b.2 && b.1 < a.2;

    let both = spans([0, 1]);
    assert_ne!(both[0].0, both[1].0);
    assert!(
        overlap(&both[0], &both[1]),
        "different workers overlap: {both:?}"
    );

    let one = spans([1, 1]);
    assert!(one.iter().all(|s| s.0 == dev(1)), "{one:?}");
    assert!(
        !overlap(&one[0], &one[1]),
        "one worker takes turns: {one:?}"
    );
    assert_eq!(pool.starts(), vec![1, 1]);
    pool.shutdown(T);
}

#[test]
fn child_ordinals_follow_the_parents_visible_devices() {
    assert_eq!(visible_device(None, 1), "1");
    assert_eq!(visible_device(Some(""), 0), "0");
    assert_eq!(visible_device(Some("  "), 2), "2");
    assert_eq!(visible_device(Some("2,3"), 0), "2");
    assert_eq!(visible_device(Some("2,3"), 1), "3");
    assert_eq!(
        visible_device(Some("GPU-8f1e, MIG-5a2b/1/0"), 1),
        "MIG-5a2b/1/0"
    );
    // Past the end of the list the driver would not have numbered it; keep the ordinal.
    assert_eq!(visible_device(Some("4"), 1), "1");
}
