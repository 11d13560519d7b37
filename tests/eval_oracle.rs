//! `ksmith eval --oracle` and `--reference` as a process, on a machine without a GPU: the
//! arguments are checked, the task's reference files are the ones used, and the missing driver
//! is reported with exit 3 (the PyTorch oracle needs the GPU worker like the reference does).

mod support;

use support::cli::{command, repo};

#[test]
fn oracle_and_reference_arguments_are_checked() {
    let d = repo().join("tasks/activation/swiglu");
    let run = |args: &[&str]| command().arg("eval").args(args).output().unwrap();
    // Neither a kernel nor --reference.
    let out = run(&["--task", "swiglu"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("KERNEL.cu|DIR"),
        "{out:?}"
    );
    // --reference with a kernel.
    let k = d.join("reference.cu").display().to_string();
    let out = run(&["--task", "swiglu", "--reference", &k]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{out:?}"
    );
    // An unknown oracle names the known ones.
    let out = run(&["--task", "swiglu", "--reference", "--oracle", "numpy"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reference") && err.contains("pytorch"),
        "{err}"
    );
    // --reference of an unknown task: the task is the problem.
    let out = run(&[
        "--task",
        "no_such_task",
        "--reference",
        "--oracle",
        "pytorch",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no task `no_such_task`"),
        "{out:?}"
    );
}

#[test]
fn reference_against_pytorch_without_a_gpu_exits_3() {
    if verifier::runtime::driver_present() {
        eprintln!("skipped: a CUDA driver is present (tests/gpu_spec_agreement.rs covers this)");
        return;
    }
    let out = command()
        .args([
            "eval",
            "--json",
            "--task",
            "swiglu",
            "--reference",
            "--oracle",
            "pytorch",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exit"], 3);
    assert_eq!(v["skipped"], false);
    assert!(v["error"].as_str().unwrap().contains("libcuda.so.1"), "{v}");
}

#[test]
fn worker_answers_a_pytorch_oracle_request_without_dying() {
    use std::io::Write;
    use std::process::Stdio;
    let d = repo().join("tasks/activation/swiglu");
    let mut child = command()
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let eval = serde_json::json!({
        "id": 1, "kind": "evaluate", "task_dir": d,
        "source": std::fs::read_to_string(d.join("reference.cu")).unwrap(),
        "plan": std::fs::read_to_string(d.join("reference.toml")).unwrap(),
        "options": {"shapes": ["small"], "heldout_shapes": 0, "seeds": [0], "stress": false,
                    "oracle": "pytorch"}
    });
    let input = format!("{eval}\n{{\"id\":2,\"kind\":\"shutdown\"}}\n");
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
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["kind"], "bye");
    if verifier::runtime::driver_present() {
        // With a GPU: a verdict, or a visible PyTorch skip; never a crash.
        let ok = lines[0]["kind"] == "evaluated"
            || lines[0]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("skipped: PyTorch"));
        assert!(ok, "{}", lines[0]);
    } else {
        assert_eq!(lines[0]["kind"], "harness_error", "{}", lines[0]);
        let m = lines[0]["message"].as_str().unwrap();
        assert!(m.contains("no CUDA driver") || m.contains("NVRTC"), "{m}");
    }
}
