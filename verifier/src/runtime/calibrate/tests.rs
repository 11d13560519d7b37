use super::*;
use crate::nvrtc::Arch;

fn rate(per_s: f64) -> Rate {
    Rate {
        per_s,
        method: "test".into(),
        repetitions: 3,
        best_ms: 1.0,
    }
}

/// H100-like figures: 3.0 TB/s copy bandwidth, 60 TFLOP/s fp32, 600 TFLOP/s bf16.
fn calibration() -> Calibration {
    let mut peaks = BTreeMap::new();
    peaks.insert("fp32".to_string(), rate(60e12));
    peaks.insert("bf16_tensor".to_string(), rate(600e12));
    let mut skipped = BTreeMap::new();
    skipped.insert("fp8_tensor".to_string(), "needs sm_89".to_string());
    Calibration {
        version: CALIBRATION_VERSION,
        gpu_key: "NVIDIA H100 80GB HBM3|sm_90|driver 12.4".into(),
        device: "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)".into(),
        arch: "sm_90".into(),
        measured_at: 1_700_000_000,
        bandwidth: Some(rate(3.0e12)),
        copy_kernel: Some(rate(3.0e12)),
        memcpy_dtod: Some(rate(2.8e12)),
        peaks,
        skipped,
        launch: Some(launch_overhead(&[0.0021, 0.0019, 0.002, 0.0025, 0.002]).unwrap()),
        telemetry: MeasurementTelemetry::unavailable("no NVML in tests"),
    }
}

fn swiglu() -> Task {
    let dir = crate::nvrtc::project_roots()
        .into_iter()
        .map(|r| r.join("tasks/activation/swiglu"))
        .find(|d| d.join("task.toml").is_file())
        .expect("tasks/activation/swiglu in the repository");
    Task::load(&dir.join("task.toml")).unwrap()
}

#[test]
fn calibrations_round_trip_through_json_and_disk() {
    let c = calibration();
    let back = Calibration::from_json(&c.to_json(), Path::new("c.json")).unwrap();
    assert_eq!(back, c);
    let dir = tempfile::tempdir().unwrap();
    assert!(load_calibration(dir.path(), &c.gpu_key).unwrap().is_none());
    let p = save_calibration(dir.path(), &c).unwrap();
    assert!(p.starts_with(dir.path().join("calibration")));
    let name = p.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(name, "NVIDIA_H100_80GB_HBM3_sm_90_driver_12.4.json");
    assert_eq!(load_calibration(dir.path(), &c.gpu_key).unwrap(), Some(c));
}

#[test]
fn a_calibration_from_before_the_launch_overhead_still_loads() {
    let mut v: serde_json::Value = serde_json::from_str(&calibration().to_json()).unwrap();
    v.as_object_mut().unwrap().remove("launch");
    let c = Calibration::from_json(&v.to_string(), Path::new("c.json")).unwrap();
    assert_eq!(c.launch, None);
}

#[test]
fn the_launch_overhead_is_the_median_of_its_samples() {
    let o = calibration().launch.unwrap();
    assert_eq!((o.median_ms, o.samples), (0.002, 5));
    assert!(o.p20_ms <= o.median_ms && o.median_ms <= o.p80_ms, "{o:?}");
    assert!(o.method.contains("empty kernel") && o.method.contains("5 samples"));
    assert!(launch_overhead(&[])
        .unwrap_err()
        .contains("no usable samples"));
    assert!(launch_overhead(&[0.002, f64::NAN]).is_err());
}

#[test]
fn malformed_calibrations_name_the_file_and_the_problem() {
    let p = Path::new("results/calibration/x.json");
    let e = Calibration::from_json("{\"version\": 1,\n \"gpu_key\": 3}", p).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("results/calibration/x.json") && s.contains("line 2"),
        "{s}"
    );
    let e = Calibration::from_json("", p).unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");

    let mut c = calibration();
    c.version = 99;
    let s = Calibration::from_json(&c.to_json(), p)
        .unwrap_err()
        .to_string();
    assert!(
        s.contains("version 99") && s.contains("ksmith gpu calibrate"),
        "{s}"
    );

    let mut c = calibration();
    c.peaks.get_mut("fp32").unwrap().per_s = 0.0;
    let s = Calibration::from_json(&c.to_json(), p)
        .unwrap_err()
        .to_string();
    assert!(s.contains("`fp32` has rate 0"), "{s}");
    let mut c = calibration();
    c.bandwidth.as_mut().unwrap().per_s = -1.0;
    let s = Calibration::from_json(&c.to_json(), p)
        .unwrap_err()
        .to_string();
    assert!(s.contains("`bandwidth`"), "{s}");
}

#[test]
fn sol_comes_from_the_roofline_and_the_stored_rates() {
    let task = swiglu();
    let shape = task.shape("small").unwrap().clone();
    let (m, n) = (shape.values["M"] as f64, shape.values["N"] as f64);
    let c = calibration();
    // Memory-bound: 6*M*N bytes at 3 TB/s.
    let floor = 6.0 * m * n / 3.0e12 * 1e3;
    let s = sol(&task, &shape, &c, 2.0 * floor).unwrap();
    assert_eq!(s.bytes, (6.0 * m * n) as i64);
    assert_eq!(s.flops, (4.0 * m * n) as i64);
    assert_eq!(s.peak, "fp32");
    assert!(
        (s.floor_ms - floor).abs() < 1e-12,
        "{} vs {floor}",
        s.floor_ms
    );
    assert!((s.percent - 50.0).abs() < 1e-9, "{}", s.percent);
    assert_eq!(s.bound, Bound::Memory);
    // 600 TFLOP/s of bf16 against 6*M*N bytes at 3 TB/s: compute-bound from 1200 ops a byte on.
    let mut heavy = swiglu();
    heavy.roofline.peak = Peak::Bf16Tensor;
    heavy.roofline.flops = crate::expr::Expr::parse("7300*M*N").unwrap();
    assert_eq!(sol(&heavy, &shape, &c, 1.0).unwrap().bound, Bound::Compute);

    // Read back from disk, the same answer.
    let dir = tempfile::tempdir().unwrap();
    save_calibration(dir.path(), &c).unwrap();
    let stored = load_calibration(dir.path(), &c.gpu_key).unwrap().unwrap();
    assert_eq!(sol(&task, &shape, &stored, 2.0 * floor).unwrap(), s);

    // A peak that was skipped says why; a missing bandwidth too.
    let mut t = swiglu();
    t.roofline.peak = Peak::Fp8Tensor;
    let e = sol(&t, &shape, &c, 1.0).unwrap_err().to_string();
    assert!(e.contains("fp8_tensor") && e.contains("needs sm_89"), "{e}");
    let mut nb = calibration();
    nb.bandwidth = None;
    assert!(sol(&task, &shape, &nb, 1.0)
        .unwrap_err()
        .to_string()
        .contains("bandwidth"));
    assert!(sol(&task, &shape, &c, 0.0).is_err());
}

#[test]
fn peak_names_are_the_task_formats() {
    use crate::task::PEAKS;
    for p in [
        Peak::Fp64,
        Peak::Fp32,
        Peak::Tf32Tensor,
        Peak::Fp16Tensor,
        Peak::Bf16Tensor,
        Peak::Fp8Tensor,
        Peak::Int8Tensor,
        Peak::Int32,
    ] {
        assert!(PEAKS.contains(&peak_name(p)), "{p:?}");
    }
    // Every peak a task can name has a microbenchmark.
    let benches: Vec<&str> = arith_benches().iter().map(|b| b.peak).collect();
    for p in PEAKS {
        assert!(benches.contains(p), "no benchmark for {p}");
    }
}

#[test]
fn mma_operation_counts() {
    let b = arith_benches();
    let get = |p: &str| b.iter().find(|x| x.peak == p).unwrap().ops_per_thread_iter;
    // 4 mma per iteration, 2*16*8*16 operations each, shared by 32 lanes.
    assert_eq!(get("bf16_tensor"), 512.0);
    assert_eq!(get("fp16_tensor"), 512.0);
    assert_eq!(get("int8_tensor"), 1024.0);
    assert_eq!(get("fp8_tensor"), 1024.0);
    assert_eq!(get("tf32_tensor"), 256.0);
    assert_eq!(get("fp32"), 16.0);
}

#[test]
fn wgmma_benchmarks_run_last_on_sm_90_only_and_count_warpgroup_products() {
    let b = arith_benches();
    let first = b.iter().position(|x| x.arch_specific).unwrap();
    // The calibration stops at an arch-specific benchmark that faults: nothing may follow.
    assert!(b[first..].iter().all(|x| x.arch_specific));
    let wgmma: Vec<&ArithBench> = b[first..].iter().collect();
    let peaks: Vec<&str> = wgmma.iter().map(|x| x.peak).collect();
    assert_eq!(
        peaks,
        [
            "bf16_tensor",
            "fp16_tensor",
            "fp8_tensor",
            "int8_tensor",
            "tf32_tensor"
        ]
    );
    for x in &wgmma {
        assert_eq!(x.target(90).unwrap().to_string(), "sm_90a");
        assert!(x.target(89).is_err() && x.target(100).is_err());
        assert!(x.source.contains("wgmma.mma_async.sync.aligned.m64n256k"));
    }
    // 4 wgmma per iteration, 2*64*256*K operations each, shared by 128 threads.
    assert_eq!(wgmma[0].ops_per_thread_iter, 16384.0);
    assert_eq!(wgmma[2].ops_per_thread_iter, 32768.0);
    assert_eq!(wgmma[4].ops_per_thread_iter, 8192.0);
    // FP8 mma.sync only where it is a tensor-core instruction; wgmma measures FP8 on sm_90.
    let e4m3 = b.iter().find(|x| x.kernel == "ks_mma_e4m3").unwrap();
    for cc in [89, 120, 121] {
        assert!(e4m3.target(cc).is_ok(), "sm_{cc}");
    }
    for cc in [90, 100] {
        assert!(e4m3.target(cc).unwrap_err().contains("emulated"), "sm_{cc}");
    }
    assert!(wgmma
        .iter()
        .any(|x| x.peak == "fp8_tensor" && x.target(90).is_ok()));
    // mma.sync still runs everywhere from sm_80.
    let mma = b.iter().find(|x| x.kernel == "ks_mma_bf16").unwrap();
    assert_eq!(mma.target(90).unwrap().to_string(), "sm_90");
    assert!(mma.target(75).unwrap_err().contains("sm_80 or newer"));
}

#[test]
fn the_faster_measurement_of_a_peak_is_kept_naming_the_other() {
    let mut a = rate(600e12);
    a.method = "wgmma".into();
    let mut b = rate(450e12);
    b.method = "mma.sync".into();
    for r in [faster(a.clone(), b.clone()), faster(b, a)] {
        assert_eq!(r.per_s, 600e12);
        assert_eq!(r.method, "wgmma (best of; also mma.sync: 450.0 T/s)");
    }
}

#[test]
fn gpu_keys_name_device_arch_and_driver() {
    let info = crate::runtime::device::tests::h100();
    assert_eq!(gpu_key(&info), "NVIDIA H100 80GB HBM3|sm_90|driver 12.4");
}

/// The microbenchmarks are real CUDA: NVRTC compiles each for the architectures that have its
/// instruction (and the FP8 one is refused below sm_89).
#[test]
fn microbenchmarks_compile_with_nvrtc() {
    let Some(compiler) = crate::nvrtc::test_compiler() else {
        return;
    };
    let sm = |s: &str| s.parse::<Arch>().unwrap();
    let c = compiler
        .compile(&CompileRequest::new(
            COPY_KERNEL,
            vec!["ks_copy".into()],
            sm("sm_90"),
        ))
        .unwrap();
    assert!(!c.cubin.is_empty());
    let e = compiler
        .compile(&CompileRequest::new(
            EMPTY_KERNEL,
            vec!["ks_empty".into()],
            sm("sm_90a"),
        ))
        .unwrap();
    assert!(e.kernel("ks_empty").is_some());
    for b in arith_benches() {
        for cc in [80, 90] {
            match b.target(cc) {
                Ok(a) => {
                    let c = compiler
                        .compile(&CompileRequest::new(
                            b.source.clone(),
                            vec![b.kernel.to_string()],
                            a,
                        ))
                        .unwrap_or_else(|e| panic!("{} for {a}: {e}", b.kernel));
                    assert!(!c.cubin.is_empty());
                    let r = c.kernel(b.kernel).and_then(|k| k.resources.clone());
                    let r = r.unwrap_or_else(|| panic!("{}: no ptxas report", b.kernel));
                    assert_eq!(r.spill_stores, 0, "{} spills on {a}: {r:?}", b.kernel);
                    // 256 threads a block must fit the register file.
                    assert!(r.registers * 256 <= 65536, "{}: {r:?}", b.kernel);
                }
                Err(why) if b.emulated_on.contains(&cc) => {
                    // Compiles (to an emulation), but is not what the benchmark measures.
                    assert!(why.contains("emulated"), "{why}");
                }
                Err(why) => {
                    // Refused by the compiler too: the rule is the instruction's, not ours.
                    let plain = sm(&format!("sm_{cc}"));
                    let r = compiler.compile(&CompileRequest::new(
                        b.source.clone(),
                        vec![b.kernel.to_string()],
                        plain,
                    ));
                    assert!(r.is_err(), "{} compiled for {plain} ({why})", b.kernel);
                }
            }
        }
    }
}

#[test]
fn bandwidth_is_the_best_streaming_rate_and_names_the_others() {
    let r = |per_s: f64, method: &str| {
        Some(Rate {
            per_s,
            method: method.into(),
            repetitions: 3,
            best_ms: 1.0,
        })
    };
    let (copy, memcpy, read) = (r(2.8e12, "copy"), r(2.7e12, "memcpy"), r(3.1e12, "read"));
    let b = best_bandwidth(&[&copy, &memcpy, &read]).unwrap();
    assert_eq!(b.per_s, 3.1e12);
    assert_eq!(
        b.method,
        "read (best of; also copy: 2800 GB/s; memcpy: 2700 GB/s)"
    );
    let none = None;
    let b = best_bandwidth(&[&copy, &none]).unwrap();
    assert_eq!((b.per_s, b.method.as_str()), (2.8e12, "copy"));
    assert!(best_bandwidth(&[&none]).is_none());
}

/// The FMA loops' multiplier and addend are opaque to the compiler: with literal operands NVVM
/// folded four unrolled `x * 3 + 7` into one `x * 81 + 280`, and the int32 rate came out four
/// times the work done. Every multiply-add in the PTX must take them from registers.
#[test]
fn fma_loops_keep_every_counted_operation() {
    let Some(compiler) = crate::nvrtc::test_compiler() else {
        return;
    };
    for b in arith_benches() {
        let op = match b.peak {
            "int32" => "mad.lo.s32",
            "fp32" => "fma.rn.f32",
            "fp64" => "fma.rn.f64",
            _ => continue,
        };
        let c = compiler
            .compile(&CompileRequest::new(
                b.source.clone(),
                vec![b.kernel.to_string()],
                "sm_90".parse::<Arch>().unwrap(),
            ))
            .unwrap_or_else(|e| panic!("{}: {e}", b.kernel));
        let ops: Vec<&str> = c
            .ptx
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with(op))
            .collect();
        // 8 chains: at least one unrolled body of 8.
        assert!(ops.len() >= 8, "{}: {ops:?}", b.kernel);
        for l in ops {
            let operands: Vec<&str> = l[op.len()..]
                .trim_end_matches(';')
                .split(',')
                .map(str::trim)
                .collect();
            assert!(
                operands.iter().all(|o| o.starts_with('%')),
                "{}: a constant operand lets the compiler fold iterations: {l}",
                b.kernel
            );
        }
    }
}
