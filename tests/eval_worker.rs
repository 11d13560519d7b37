//! `ksmith eval` and `ksmith worker` as processes. On a machine without a CUDA driver (CI, the
//! developers' machines) eval must say what it looked for and exit 3, and the worker must keep
//! answering the protocol; with a driver these tests check the protocol only.

mod support;

use std::io::Write;
use std::process::Stdio;
use support::cli::{command, repo};

fn has_driver() -> bool {
    verifier::runtime::driver_present()
}

#[test]
fn eval_without_a_gpu_exits_3_and_names_the_driver() {
    if has_driver() {
        eprintln!("skipped: a CUDA driver is present (the GPU tests cover eval)");
        return;
    }
    let d = repo().join("tasks/activation/swiglu");
    let out = command()
        .args(["eval", "--task", "swiglu"])
        .arg(d.join("reference.cu"))
        .arg("--plan")
        .arg(d.join("reference.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no CUDA driver: looked for libcuda.so.1"),
        "{err}"
    );
    assert!(err.contains("needs a GPU machine"), "{err}");

    // The directory form: DIR/kernel.cu and DIR/launch.toml.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(d.join("reference.cu"), dir.path().join("kernel.cu")).unwrap();
    std::fs::copy(d.join("reference.toml"), dir.path().join("launch.toml")).unwrap();
    let out = command()
        .args(["eval", "--json", "--task", "swiglu"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exit"], 3);
    assert!(v["error"].as_str().unwrap().contains("libcuda.so.1"), "{v}");
    // A directory without kernel.cu: still one JSON object, exit 3.
    let empty = tempfile::tempdir().unwrap();
    let out = command()
        .args(["eval", "--json", "--task", "swiglu"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("kernel.cu"), "{v}");
}

#[test]
fn eval_usage_errors_are_reported() {
    let d = repo().join("tasks/activation/swiglu");
    // A .cu file without --plan.
    let out = command()
        .args(["eval", "--task", "swiglu"])
        .arg(d.join("reference.cu"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--plan PLAN.toml"));
    // An unknown task, and a misspelt one: exit 3 and what was looked for.
    let unknown = |task: &str| {
        let out = command()
            .args(["eval", "--task", task])
            .arg(d.join("reference.cu"))
            .arg("--plan")
            .arg(d.join("reference.toml"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = unknown("no_such_task");
    assert!(
        err.contains("no task `no_such_task`") && err.contains("`ksmith tasks list` lists them"),
        "{err}"
    );
    let err = unknown("swiglue");
    assert!(err.contains("did you mean `swiglu`?"), "{err}");
}

/// `--sanitize` looks for compute-sanitizer before the GPU (a missing tool is found before
/// minutes of checking); `--profile` is advisory, so a missing ncu is not an error by itself.
#[test]
fn eval_deep_audit_tools_are_located_first() {
    let missing = repo().join("no/such/compute-sanitizer");
    let out = command()
        .args([
            "eval",
            "--json",
            "--task",
            "swiglu",
            "--reference",
            "--sanitize",
        ])
        .arg("--sanitizer")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("compute-sanitizer") && e.contains("no/such"),
        "{v}"
    );
    if has_driver() {
        return;
    }
    let out = command()
        .args(["eval", "--task", "swiglu", "--reference", "--profile"])
        .arg("--ncu")
        .arg(repo().join("no/such/ncu"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("libcuda.so.1") && !err.contains("ncu"),
        "{err}"
    );
}

#[test]
fn worker_answers_every_request_on_a_clean_protocol_stream() {
    let d = repo().join("tasks/activation/swiglu");
    let mut child = command()
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let eval = serde_json::json!({
        "id": 2, "kind": "evaluate", "task_dir": d,
        "source": "extern \"C\" __global__ void k() {}",
        "plan": "[[launch]]\nkernel = \"k\"\ngrid = [1]\nblock = [1]\nargs = []\n",
        "options": {"shapes": ["small"], "heldout_shapes": 0, "stress": false}
    });
    let input =
        format!("{{\"id\":1,\"kind\":\"ping\"}}\n\n{eval}\n{{\"id\":3,\"kind\":\"shutdown\"}}\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["kind"], "pong");
    assert_eq!(lines[0]["protocol"], 1);
    assert_eq!(lines[1]["id"], 2);
    assert_eq!(lines[2]["kind"], "bye");
    if !has_driver() {
        assert_eq!(lines[0]["device"], serde_json::Value::Null);
        assert_eq!(lines[1]["kind"], "harness_error");
        assert!(
            lines[1]["message"]
                .as_str()
                .unwrap()
                .contains("no CUDA driver")
                || lines[1]["message"].as_str().unwrap().contains("NVRTC"),
            "{}",
            lines[1]
        );
    } else {
        // The plan is fine but `k` computes nothing: a verdict, not a harness error.
        assert_eq!(lines[1]["kind"], "evaluated", "{}", lines[1]);
    }
}

#[test]
fn worker_rejects_garbage_and_exits() {
    let mut child = command()
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"this is not json\n{\"id\":1,\"kind\":\"ping\"}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty(), "nothing on the protocol stream");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreadable request"));
}

#[test]
fn worker_restarts_in_place_keeping_pid_and_pipes() {
    use std::io::{BufRead, BufReader};
    let mut child = command()
        .arg("worker")
        .env("KSMITH_WORKER_RESTART_AFTER_PING", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // One request at a time, as the pool sends them: the next one is written only after the
    // answer, possibly while the worker is replacing its image.
    let mut ask = |line: &str| -> serde_json::Value {
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.flush().unwrap();
        let mut l = String::new();
        stdout.read_line(&mut l).unwrap();
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l:?}"))
    };
    let a = ask("{\"id\":1,\"kind\":\"ping\"}\n");
    let b = ask("{\"id\":2,\"kind\":\"ping\"}\n");
    let c = ask("{\"id\":3,\"kind\":\"shutdown\"}\n");
    assert_eq!((a["id"].as_u64(), b["id"].as_u64()), (Some(1), Some(2)));
    assert_eq!(a["pid"], b["pid"], "same process after the restart");
    assert_eq!(c["kind"], "bye");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("restarting in place").count(), 2, "{err}");
}
