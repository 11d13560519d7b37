use super::*;

fn f32s(dims: &[u64], v: &[f32]) -> HostTensor {
    HostTensor {
        dtype: DType::F32,
        dims: dims.to_vec(),
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn i32s(dims: &[u64], v: &[i32]) -> HostTensor {
    HostTensor {
        dtype: DType::I32,
        dims: dims.to_vec(),
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

const NM: Metric = Metric::NormalizedMax { tol: 1e-2 };

#[test]
fn normalized_max_scales_by_the_reference() {
    let r = f32s(&[2, 2], &[100.0, -50.0, 1.0, 0.0]);
    let ok = f32s(&[2, 2], &[100.5, -50.0, 1.9, 0.5]);
    let rep = compare(&ok, &r, NM, None).unwrap();
    assert!(rep.passed(), "{}", rep.summary());
    assert!((rep.normalized_error - 0.009).abs() < 1e-6);
    let bad = f32s(&[2, 2], &[100.0, -50.0, 3.0, 0.0]);
    let rep = compare(&bad, &r, NM, None).unwrap();
    assert_eq!(rep.mismatches, 1);
    assert_eq!(rep.first_bad.as_ref().unwrap().coords, vec![1, 0]);
    assert_eq!(rep.worst[0].got, "3");
    assert_eq!(rep.worst[0].expected, "1");
}

/// KernelBench's hole: all-zero output passes absolute tolerance when the reference is tiny.
/// Normalized error sees it as 100 % off.
#[test]
fn zeros_do_not_pass_for_a_tiny_reference() {
    let r = f32s(&[3], &[4e-6, -1e-6, 2e-6]);
    let zeros = f32s(&[3], &[0.0; 3]);
    let rep = compare(&zeros, &r, NM, None).unwrap();
    assert_eq!(rep.mismatches, 3);
    assert!((rep.normalized_error - 1.0).abs() < 1e-6);
}

#[test]
fn all_zero_reference_bounds_the_absolute_error() {
    let r = f32s(&[4], &[0.0; 4]);
    let small = f32s(&[4], &[0.0, 1e-3, -5e-3, 0.0]);
    let rep = compare(&small, &r, NM, None).unwrap();
    assert!(rep.passed() && rep.reference_all_zero);
    assert!(rep.summary().contains("all zeros"));
    let big = f32s(&[4], &[0.0, 0.5, 0.0, 0.0]);
    assert_eq!(compare(&big, &r, NM, None).unwrap().mismatches, 1);
}

#[test]
fn nonfinite_output_is_a_mismatch_and_reference_nans_match_nans() {
    let r = f32s(&[4], &[1.0, f32::NAN, f32::INFINITY, 2.0]);
    let got = f32s(
        &[4],
        &[
            f32::NAN,
            f32::from_bits(0x7FC0_0001),
            f32::INFINITY,
            f32::NEG_INFINITY,
        ],
    );
    let rep = compare(
        &got,
        &r,
        Metric::AllClose {
            atol: 1.0,
            rtol: 1.0,
            max_bad_fraction: 0.0,
        },
        None,
    )
    .unwrap();
    assert_eq!(rep.mismatches, 2);
    assert_eq!(rep.nonfinite, 2);
    assert_eq!(rep.first_bad.as_ref().unwrap().index, 0);
    assert!(rep.worst[0].got.starts_with("NaN"));
    assert_eq!(rep.worst[0].abs_error, None);
    let wrong_inf = f32s(&[4], &[1.0, f32::NAN, f32::NEG_INFINITY, 2.0]);
    assert_eq!(compare(&wrong_inf, &r, NM, None).unwrap().mismatches, 1);
}

#[test]
fn allclose_is_elementwise() {
    let r = f32s(&[3], &[1000.0, 1.0, 0.0]);
    let got = f32s(&[3], &[1000.9, 1.0015, 0.0011]);
    let m = Metric::AllClose {
        atol: 1e-3,
        rtol: 1e-3,
        max_bad_fraction: 0.0,
    };
    let rep = compare(&got, &r, m, None).unwrap();
    // 0.9 <= 1.001 ok; 0.0015 <= 0.002 ok; 0.0011 > 0.001 bad.
    assert_eq!(rep.mismatches, 1);
    assert_eq!(rep.first_bad.unwrap().index, 2);
}

#[test]
fn exact_is_bitwise_but_any_nan_matches_a_nan() {
    let r = f32s(&[3], &[0.0, f32::NAN, 1.0]);
    let got = f32s(&[3], &[-0.0, f32::from_bits(0xFFFF_FFFF), 1.0]);
    let rep = compare(&got, &r, Metric::Exact, None).unwrap();
    assert_eq!(rep.mismatches, 1, "-0 differs from +0 bitwise");
    assert_eq!(rep.first_bad.unwrap().index, 0);
    let ri = i32s(&[2, 3], &[1, 2, 3, 4, 5, 6]);
    let gi = i32s(&[2, 3], &[1, 2, 3, 4, 5, -7]);
    let rep = compare(&gi, &ri, Metric::Exact, None).unwrap();
    assert_eq!(rep.mismatches, 1);
    assert_eq!(rep.worst[0].coords, vec![1, 2]);
    assert_eq!(rep.worst[0].got, "-7");
    assert_eq!(rep.worst[0].abs_error, Some(13.0));
}

#[test]
fn unwritten_elements_are_counted_from_the_poison() {
    for dtype in [
        DType::F32,
        DType::Bf16,
        DType::F16,
        DType::E4m3,
        DType::E5m2,
        DType::F64,
    ] {
        for p in [Poison::A, Poison::B] {
            let bits = p.bits(dtype);
            let f = crate::inputs::codec::read_f64(dtype, &p.element(dtype));
            assert!(f.is_nan(), "{dtype} poison {p:?} is a NaN");
            assert_ne!(bits, p.other().bits(dtype));
        }
    }
    assert_eq!(Poison::A.bits(DType::I16), 0xFFFF);
    assert_eq!(Poison::B.bits(DType::U8), 0xA5);
    let r = f32s(&[2, 3], &[1.0; 6]);
    let mut got = f32s(&[2, 3], &[1.0; 6]);
    Poison::A.fill(DType::F32, &mut got.bytes[12..]);
    let rep = compare(&got, &r, NM, Some(Poison::A)).unwrap();
    assert_eq!((rep.mismatches, rep.unwritten, rep.nonfinite), (3, 3, 3));
    assert_eq!(rep.first_bad.as_ref().unwrap().coords, vec![1, 0]);
    assert!(rep.first_bad.as_ref().unwrap().got.starts_with("unwritten"));
    // Integers: -1 is the poison A of i32; it is unwritten only where the reference differs.
    let ri = i32s(&[3], &[-1, 0, 5]);
    let mut gi = i32s(&[3], &[0; 3]);
    Poison::A.fill(DType::I32, &mut gi.bytes);
    let rep = compare(&gi, &ri, Metric::Exact, Some(Poison::A)).unwrap();
    assert_eq!((rep.mismatches, rep.unwritten), (2, 2));
}

#[test]
fn worst_elements_are_sorted_and_bounded() {
    let n = 1000;
    let r: Vec<f32> = vec![1.0; n];
    let g: Vec<f32> = (0..n).map(|i| 1.0 + i as f32).collect();
    let rep = compare(&f32s(&[10, 100], &g), &f32s(&[10, 100], &r), NM, None).unwrap();
    assert_eq!(rep.worst.len(), WORST_K);
    assert_eq!(rep.worst[0].coords, vec![9, 99]);
    assert!(rep
        .worst
        .windows(2)
        .all(|w| w[0].abs_error >= w[1].abs_error));
    assert_eq!(rep.first_bad.unwrap().coords, vec![0, 1]);
}

/// Large enough to take the parallel path; the merged result equals a serial recount.
#[test]
fn parallel_scan_merges_like_a_serial_one() {
    let n = 1 << 20;
    let r: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let mut g = r.clone();
    let bad = [3usize, 200_000, 700_001, n - 1];
    for (k, &i) in bad.iter().enumerate() {
        g[i] += 10.0 * (k + 1) as f32;
    }
    let rep = compare(&f32s(&[n as u64], &g), &f32s(&[n as u64], &r), NM, None).unwrap();
    assert_eq!(rep.mismatches, 4);
    assert_eq!(rep.first_bad.as_ref().unwrap().index, 3);
    assert_eq!(rep.worst[0].index, (n - 1) as u64);
    assert_eq!(rep.max_abs_error, 40.0);
}

#[test]
fn shape_and_dtype_mismatches_are_errors() {
    let a = f32s(&[4], &[0.0; 4]);
    let b = f32s(&[2, 2], &[0.0; 4]);
    assert!(matches!(
        compare(&a, &b, NM, None),
        Err(CompareError::Shape { .. })
    ));
    let c = i32s(&[4], &[0; 4]);
    assert!(matches!(
        compare(&a, &c, NM, None),
        Err(CompareError::DType { .. })
    ));
    let mut short = a.clone();
    short.bytes.pop();
    assert!(matches!(
        compare(&short, &a, NM, None),
        Err(CompareError::Length { .. })
    ));
}

#[test]
fn two_runs_identical_within_tolerance_or_racy() {
    let r = f32s(&[4], &[1.0, 2.0, 3.0, 4.0]);
    let a = f32s(&[4], &[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(
        compare_runs(&a, &a, &r, NM).unwrap(),
        RunAgreement::Identical
    );
    let b = f32s(&[4], &[1.0, 2.0, 3.000_001, 4.0]);
    match compare_runs(&a, &b, &r, NM).unwrap() {
        RunAgreement::WithinTolerance { differing, .. } => assert_eq!(differing, 1),
        other => panic!("{other:?}"),
    }
    let c = f32s(&[4], &[1.0, 2.0, 3.5, 4.0]);
    assert!(matches!(
        compare_runs(&a, &c, &r, NM).unwrap(),
        RunAgreement::Racy { .. }
    ));
    assert!(matches!(
        compare_runs(&a, &b, &r, Metric::Exact).unwrap(),
        RunAgreement::Racy { .. }
    ));
}

#[test]
fn reports_round_trip_through_json_with_nonfinite_numbers() {
    let r = f32s(&[2], &[f32::MAX, -f32::MAX]);
    let g = f32s(&[2], &[-f32::MAX, f32::NAN]);
    let rep = compare(&g, &r, NM, None).unwrap();
    let json = serde_json::to_string(&rep).unwrap();
    let back: MismatchReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.mismatches, rep.mismatches);
    assert_eq!(back.worst.len(), rep.worst.len());
    assert_eq!(back.worst[0], rep.worst[0]);
    assert_eq!(back.worst[1].got, "-3.4028235e38");
    let e = back.worst[1].abs_error.unwrap();
    assert!((e / rep.worst[1].abs_error.unwrap() - 1.0).abs() < 1e-12);
    let bad = json.replace("\"metric\":\"normalized_max\"", "\"metric\":\"nope\"");
    assert!(serde_json::from_str::<MismatchReport>(&bad).is_err());
}

#[test]
fn allclose_tolerates_a_declared_fraction_of_misses_but_never_nonfinite_or_unwritten() {
    let n = 2000usize;
    let r = f32s(&[n as u64], &vec![1.0; n]);
    let mut vals = vec![1.0f32; n];
    vals[3] = 2.0;
    vals[7] = 2.0; // 2 misses of 2000 = 1e-3
    let m = Metric::AllClose {
        atol: 1e-6,
        rtol: 1e-6,
        max_bad_fraction: 1e-3,
    };
    let rep = compare(&f32s(&[n as u64], &vals), &r, m, None).unwrap();
    assert_eq!((rep.mismatches, rep.allowed_mismatches()), (2, 2));
    assert!(rep.passed());
    vals[9] = 2.0;
    let rep = compare(&f32s(&[n as u64], &vals), &r, m, None).unwrap();
    assert!(!rep.passed(), "3 misses exceed floor(1e-3 * 2000) = 2");
    vals[9] = 1.0;
    vals[7] = f32::NAN;
    let rep = compare(&f32s(&[n as u64], &vals), &r, m, None).unwrap();
    assert_eq!(rep.allowed_mismatches(), 0, "a NaN voids the allowance");
    assert!(!rep.passed());
}
