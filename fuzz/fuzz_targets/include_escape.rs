//! The include allowlist is a security boundary: kernel source comes from an LLM, and an
//! `#include` NVRTC honours can read any file into the compile log, which goes back to the LLM.
//! This target compiles the input with the real NVRTC (no GPU needed) and fails if a file the
//! allowlist should keep out reached the preprocessor: a header planted where a relative include
//! would find it (the working directory) and at an absolute path, both of which `#error` with a
//! marker, and /etc/passwd, whose first line starts `root:`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Duration;
use verifier::nvrtc::{Arch, CompileError, CompileRequest, Compiler, Locator};

const MARKER: &str = "KSMITH_FUZZ_SECRET_REACHED";

fn compiler() -> &'static Compiler {
    static C: OnceLock<Compiler> = OnceLock::new();
    C.get_or_init(|| {
        let nvrtc = Locator::default()
            .load()
            .expect("NVRTC: run scripts/setup.sh first");
        // Planted after NVRTC is found (its search may use the working directory).
        let dir = std::env::temp_dir().join("ksmith-fuzz-include");
        std::fs::create_dir_all(&dir).expect("temp dir");
        let secret = format!("#error {MARKER}\n");
        for name in ["secret.h", "secret", "cuda_secret.h"] {
            std::fs::write(dir.join(name), &secret).expect("plant");
        }
        std::fs::write("/tmp/ksmith_secret.h", &secret).expect("plant absolute");
        std::env::set_current_dir(&dir).expect("chdir");
        Compiler::new(nvrtc, None)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let mut req = CompileRequest::new(src, Vec::new(), Arch::DEFAULT);
    req.timeout = Duration::from_secs(20);
    let log = match compiler().compile(&req) {
        Ok(c) => c.log,
        Err(CompileError::Failed { log, .. }) => log,
        Err(_) => return,
    };
    if log.contains(MARKER) || log.contains("root:x:0:0") {
        panic!("a kept-out file reached NVRTC past the include check:\n{src}\n--- log ---\n{log}");
    }
});
