//! NVRTC loaded and dropped many times, from several threads at once, as a long-running worker
//! does when it builds a compiler per job. The failure this guards against is a SIGSEGV inside
//! libnvrtc's finalisers (`dlclose` while threads that used the library are still exiting),
//! which kills the whole process and is timing-dependent; so the cycles run in child processes
//! (this same test binary, selected by an environment variable), several times over.

use std::process::Command;
use verifier::nvrtc::{Arch, CompileRequest, Compiler, Locator};

const SRC: &str = "extern \"C\" __global__ void f(float* p) { p[threadIdx.x] = 1.f; }";
const CHILD: &str = "KSMITH_TEST_NVRTC_RELOAD_CHILD";
const TEST: &str = "loading_and_dropping_nvrtc_from_many_threads_does_not_crash";

fn cycles() {
    let workers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..6 {
                    let nv = Locator::default().load().expect("loads");
                    let c = Compiler::new(nv, None);
                    let req = CompileRequest::new(SRC, vec!["f".into()], Arch::DEFAULT);
                    let out = c.compile(&req).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(&out.cubin[..4], b"\x7fELF");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
}

#[test]
fn loading_and_dropping_nvrtc_from_many_threads_does_not_crash() {
    if std::env::var_os(CHILD).is_some() {
        cycles();
        return;
    }
    // Loaded and dropped here too: the children load it again.
    if verifier::nvrtc::nvrtc_for_tests(TEST).is_none() {
        return;
    }
    // While NVRTC was unloaded with its last handle, a child crashed in about 6 runs of 10.
    let exe = std::env::current_exe().expect("test binary");
    for run in 1..=4 {
        let out = Command::new(&exe)
            .args(["--exact", TEST, "--nocapture", "--test-threads", "1"])
            .env(CHILD, "1")
            .output()
            .expect("child runs");
        assert!(
            out.status.success(),
            "child run {run} failed: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
