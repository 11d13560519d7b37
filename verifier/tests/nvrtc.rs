//! NVRTC integration: real compilations with the library `scripts/setup.sh` installs into
//! tools/cuda (or one on the system). Without NVRTC these tests print a visible skip and pass,
//! except under CI (`CI=true`), where a missing NVRTC is a failure.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use verifier::nvrtc::nvrtc_for_tests as nvrtc;
use verifier::nvrtc::{Arch, CompileCache, CompileError, CompileRequest, Compiler, Locator};

fn request(src: &str, kernels: &[&str]) -> CompileRequest {
    let mut r = CompileRequest::new(
        src,
        kernels.iter().map(|k| k.to_string()).collect(),
        Arch::DEFAULT,
    );
    r.program_name = "test_kernel.cu".into();
    r
}

const TWO_KERNELS: &str = r#"
#include <cuda_bf16.h>

template <int B>
__global__ void k(float* p, int n) {
    __shared__ float tile[B];
    int i = blockIdx.x * B + threadIdx.x;
    tile[threadIdx.x] = i < n ? p[i] : 0.f;
    __syncthreads();
    if (i < n) p[i] = tile[B - 1 - threadIdx.x] * 2.f;
}

extern "C" __global__ void plain(const __nv_bfloat16* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __bfloat162float(x[i]);
}
"#;

#[test]
fn compiles_cubin_for_sm_90a_with_a_report_per_kernel() {
    let Some(nv) = nvrtc("compiles_cubin_for_sm_90a_with_a_report_per_kernel") else {
        return;
    };
    let c = Compiler::new(nv, None);
    let out = c
        .compile(&request(TWO_KERNELS, &["plain", "k<128>"]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.cubin.len() > 64, "CUBIN of {} bytes", out.cubin.len());
    assert_eq!(&out.cubin[..4], b"\x7fELF", "CUBIN is not an ELF image");
    assert!(
        out.ptx.lines().any(|l| l.trim() == ".target sm_90a"),
        "PTX lacks `.target sm_90a`:\n{}",
        out.ptx.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    // The default target is H100's arch-specific one.
    assert_eq!(out.arch, "sm_90a");
    assert!(out
        .options
        .contains(&"--gpu-architecture=sm_90a".to_string()));
    assert!(!out.cache_hit);

    assert_eq!(out.kernels.len(), 2);
    let plain = out.kernel("plain").expect("report for `plain`");
    assert_eq!(plain.symbol, "plain", "extern \"C\" keeps its name");
    let tmpl = out.kernel("k<128>").expect("report for `k<128>`");
    // The plan's name maps to the mangled instantiation, and its ptxas report is found.
    assert_eq!(tmpl.symbol, "_Z1kILi128EEvPfi");
    for k in &out.kernels {
        let r = k
            .resources
            .as_ref()
            .unwrap_or_else(|| panic!("no ptxas report for `{}`:\n{}", k.name, out.log));
        assert_eq!(r.symbol, k.symbol);
        assert!(
            r.registers > 0,
            "`{}` uses 0 registers?\n{}",
            k.name,
            out.log
        );
        assert!(!r.spills(), "`{}` spills:\n{}", k.name, out.log);
    }
    let r = tmpl.resources.as_ref().expect("checked above");
    assert_eq!(r.smem, 128 * 4, "static shared memory of k<128>");
    assert_eq!(r.barriers, 1);
}

/// 96 live floats per thread against the 32 registers that `__launch_bounds__(1024, 2)`
/// leaves (65536 / 2048): ptxas must spill. The same kernel without the bound is the control.
const SPILLER: &str = r#"
extern "C" __global__ void BOUNDS spiller(const float* __restrict__ x, float* __restrict__ y, int n) {
    float v[96];
    #pragma unroll
    for (int i = 0; i < 96; ++i) v[i] = x[threadIdx.x + i * n];
    float acc = 0.f;
    #pragma unroll
    for (int i = 0; i < 96; ++i) {
        #pragma unroll
        for (int j = 0; j < 96; j += 7) acc = fmaf(v[i], v[(i + j) % 96], acc);
    }
    #pragma unroll
    for (int i = 0; i < 96; ++i) y[threadIdx.x + i * n] = v[i] * acc;
}
"#;

#[test]
fn register_spills_are_reported() {
    let Some(nv) = nvrtc("register_spills_are_reported") else {
        return;
    };
    let c = Compiler::new(nv, None);
    let bounded = SPILLER.replace("BOUNDS", "__launch_bounds__(1024, 2)");
    let out = c
        .compile(&request(&bounded, &["spiller"]))
        .unwrap_or_else(|e| panic!("{e}"));
    let r = out.kernels[0].resources.clone().expect("ptxas report");
    assert!(
        r.spills() && r.spill_stores > 0 && r.spill_loads > 0,
        "expected spills:\n{}",
        out.log
    );
    assert!(
        r.registers <= 32,
        "{} registers under a 32 limit",
        r.registers
    );

    let free = SPILLER.replace("BOUNDS", "");
    let out = c
        .compile(&request(&free, &["spiller"]))
        .unwrap_or_else(|e| panic!("{e}"));
    let r = out.kernels[0].resources.clone().expect("ptxas report");
    assert!(
        !r.spills(),
        "the unbounded control spills too:\n{}",
        out.log
    );
    assert!(r.registers > 32);
}

#[test]
fn a_compile_error_returns_the_log_naming_the_line() {
    let Some(nv) = nvrtc("a_compile_error_returns_the_log_naming_the_line") else {
        return;
    };
    let c = Compiler::new(nv, None);
    let src = "extern \"C\" __global__ void broken(float* y) {\n    int i = threadIdx.x;\n    y[i] = undeclared_thing * 2.0f;\n}\n";
    match c.compile(&request(src, &["broken"])) {
        Err(e @ CompileError::Failed { .. }) => {
            assert!(e.is_kernel_fault());
            let CompileError::Failed { log, .. } = &e else {
                unreachable!()
            };
            assert!(
                log.contains("test_kernel.cu(3)") && log.contains("undeclared_thing"),
                "log does not name line 3:\n{log}"
            );
        }
        other => panic!("expected CompileError::Failed, got {other:?}"),
    }
}

#[test]
fn disallowed_includes_are_rejected_before_nvrtc_runs() {
    let Some(nv) = nvrtc("disallowed_includes_are_rejected_before_nvrtc_runs") else {
        return;
    };
    let c = Compiler::new(nv, None);
    for (src, line, what) in [
        (
            "#include \"/etc/passwd\"\n__global__ void f() {}\n",
            1,
            "absolute",
        ),
        (
            "// x\n\n#include \"../x\"\n__global__ void f() {}\n",
            3,
            "..",
        ),
        (
            "#include <stdio.h>\n__global__ void f() {}\n",
            1,
            "allowlist",
        ),
    ] {
        // Had NVRTC seen `/etc/passwd` the result would be a compile failure whose log quotes
        // the file; the include check answers first, with its own variant.
        match c.compile(&request(src, &["f"])) {
            Err(CompileError::Includes(v)) => {
                assert_eq!(v.len(), 1, "{v:?}");
                assert_eq!(v[0].line, line, "{src}");
                assert!(v[0].message.contains(what), "{}", v[0].message);
            }
            other => panic!("{src}: expected CompileError::Includes, got {other:?}"),
        }
    }
}

/// Every way in tests/fixtures/include_tricks to spell an include (digraphs, line splices,
/// comments inside the directive, macros, `__has_include`, `#include_next`, raw strings, digit
/// separators and character literals that might fool a lexer) is compiled for real with a
/// header planted at the path it names: the header must never reach NVRTC. Its `#error` text
/// would be in the log, as `/etc/passwd`'s first line would be (NVRTC reads both absolute and
/// working-directory-relative quoted includes). scripts/fuzz.sh's include_escape target starts
/// from the same files.
#[test]
fn include_tricks_never_reach_a_planted_header() {
    let Some(nv) = nvrtc("include_tricks_never_reach_a_planted_header") else {
        return;
    };
    let c = Compiler::new(nv, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = "KSMITH_PLANTED_HEADER_REACHED";
    let planted = dir.path().join("secret.h");
    std::fs::write(&planted, format!("#error {marker}\n")).expect("plant");
    let planted = planted.display().to_string();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/include_tricks");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("include_tricks")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{} tricks", files.len());
    let (mut rejected, mut compiled) = (0, 0);
    for f in &files {
        let trick = std::fs::read_to_string(f).expect("trick");
        let src = trick
            .replace("/tmp/ksmith_secret.h", "secret.h")
            .replace("cuda_secret.h", "secret.h")
            .replace("secret.h", &planted);
        let mut req = request(&src, &[]);
        req.program_name = f.display().to_string();
        let log = match c.compile(&req) {
            Err(CompileError::Includes(v)) => {
                assert!(!v.is_empty());
                rejected += 1;
                continue;
            }
            Ok(out) => out.log,
            Err(CompileError::Failed { log, .. }) => log,
            Err(e) => panic!("{}: {e}", f.display()),
        };
        compiled += 1;
        assert!(
            !log.contains(marker),
            "{}: the planted header reached NVRTC:\n{src}\n{log}",
            f.display()
        );
    }
    eprintln!("{rejected} tricks rejected by the include check, {compiled} compiled without reaching the header");
    assert!(
        rejected >= 15 && compiled >= 2,
        "{rejected} rejected, {compiled} compiled"
    );
}

#[test]
fn oversized_source_is_rejected() {
    let Some(nv) = nvrtc("oversized_source_is_rejected") else {
        return;
    };
    let c = Compiler::new(nv, None);
    let src = format!("__global__ void f() {{}}\n//{}\n", "x".repeat(600 * 1024));
    assert!(matches!(
        c.compile(&request(&src, &["f"])),
        Err(CompileError::SourceTooLarge { .. })
    ));
}

#[test]
fn second_compile_is_a_cache_hit_with_the_same_cubin() {
    let Some(nv) = nvrtc("second_compile_is_a_cache_hit_with_the_same_cubin") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Compiler::new(nv, Some(CompileCache::new(dir.path().join("nvrtc"))));
    let req = request(TWO_KERNELS, &["plain", "k<128>"]);
    let first = c.compile(&req).unwrap_or_else(|e| panic!("{e}"));
    assert!(!first.cache_hit);
    let t = Instant::now();
    let second = c.compile(&req).unwrap_or_else(|e| panic!("{e}"));
    let hit_time = t.elapsed();
    assert!(second.cache_hit, "second compile missed the cache");
    assert_eq!(first.cubin, second.cubin);
    assert_eq!(first.ptx, second.ptx);
    assert_eq!(first.key, second.key);
    // The hit reports the original compile time (stored as JSON: equal to within an ulp or so).
    assert!(
        (first.compile_ms - second.compile_ms).abs() <= 1e-9 * first.compile_ms.max(1.0),
        "{} ms vs {} ms",
        first.compile_ms,
        second.compile_ms
    );
    for (a, b) in first.kernels.iter().zip(&second.kernels) {
        assert_eq!((&a.name, &a.symbol), (&b.name, &b.symbol));
        assert_eq!(a.resources, b.resources);
    }
    assert!(
        hit_time < Duration::from_millis(first.compile_ms as u64 + 1),
        "hit took {hit_time:?}, compiling took {} ms",
        first.compile_ms
    );
    let entries: Vec<PathBuf> = walk(dir.path());
    assert!(
        entries.iter().any(|p| p.ends_with("kernel.cubin")),
        "{entries:?}"
    );

    // Anything that changes the output changes the key: source, kernels, options.
    let mut other = req.clone();
    other.fast_math = true;
    let third = c.compile(&other).unwrap_or_else(|e| panic!("{e}"));
    assert!(!third.cache_hit);
    assert_ne!(third.key, first.key);
    let mut other = req.clone();
    other.kernels = vec!["k<64>".into()];
    let fourth = c.compile(&other).unwrap_or_else(|e| panic!("{e}"));
    assert!(!fourth.cache_hit);
    assert_eq!(fourth.kernels[0].symbol, "_Z1kILi64EEvPfi");
}

fn walk(d: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Recursive template instantiation: far more than 1 ms of front-end work.
const TEMPLATE_HEAVY: &str = r#"
#include <cuda/std/type_traits>
#include <cuda/std/utility>
template <int N> struct Fib {
    static constexpr long long v = Fib<N - 1>::v + Fib<N - 2>::v;
};
template <> struct Fib<1> { static constexpr long long v = 1; };
template <> struct Fib<0> { static constexpr long long v = 0; };
template <int... I>
__device__ long long sum(cuda::std::integer_sequence<int, I...>) {
    return (Fib<I % 80>::v + ... + 0);
}
extern "C" __global__ void heavy(long long* out) {
    *out = sum(cuda::std::make_integer_sequence<int, 600>{});
}
"#;

#[test]
fn a_compile_past_its_deadline_times_out() {
    let Some(nv) = nvrtc("a_compile_past_its_deadline_times_out") else {
        return;
    };
    let c = Compiler::new(nv, None);
    let mut req = request(TEMPLATE_HEAVY, &["heavy"]);
    req.timeout = Duration::from_millis(1);
    let t = Instant::now();
    match c.compile(&req) {
        Err(e @ CompileError::Timeout { .. }) => {
            assert!(e.is_kernel_fault());
            assert!(e.to_string().contains("did not finish"), "{e}");
        }
        other => panic!("expected CompileError::Timeout, got {other:?}"),
    }
    // The caller stops waiting at the deadline; it does not wait for NVRTC.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn an_explicit_missing_library_names_the_path_and_the_fix() {
    // Needs no NVRTC: the path is checked before anything is loaded.
    let loc = Locator {
        library: Some("/nonexistent/libnvrtc.so".into()),
        include: None,
    };
    let e = loc.load().expect_err("a missing file cannot load");
    let msg = e.to_string();
    assert!(msg.contains("/nonexistent/libnvrtc.so"), "{msg}");
    assert!(msg.contains("scripts/setup.sh"), "no fix named: {msg}");

    // A directory that holds no libnvrtc, and a file that is not a library.
    let dir = tempfile::tempdir().expect("tempdir");
    let msg = Locator {
        library: Some(dir.path().to_path_buf()),
        include: None,
    }
    .load()
    .expect_err("empty directory")
    .to_string();
    assert!(
        msg.contains(&dir.path().display().to_string()) && msg.contains("libnvrtc.so"),
        "{msg}"
    );
    let fake = dir.path().join("libnvrtc.so.13");
    std::fs::write(&fake, b"not an ELF file").expect("write");
    // Headers are looked up before the library is opened; give it some.
    std::fs::write(dir.path().join("cuda_fp16.h"), b"").expect("write");
    let msg = Locator {
        library: Some(fake.clone()),
        include: Some(dir.path().to_path_buf()),
    }
    .load()
    .expect_err("garbage library")
    .to_string();
    assert!(
        msg.contains(&fake.display().to_string()) && msg.contains("cannot be loaded"),
        "{msg}"
    );
}
