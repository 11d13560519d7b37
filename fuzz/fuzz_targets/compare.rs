//! Output comparison on arbitrary bits (NaN, infinities, subnormals, poison patterns) for every
//! dtype and metric: a kernel's output is whatever the GPU wrote.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verifier::compare::{compare, compare_runs, Metric, Poison};
use verifier::dtype::DType;
use verifier::inputs::HostTensor;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let dtype = DType::ALL[data[0] as usize % DType::ALL.len()];
    let metric = match data[1] % 4 {
        0 => Metric::Exact,
        1 => Metric::NormalizedMax { tol: 1e-3 },
        2 => Metric::AllClose {
            atol: 1e-5,
            rtol: 1e-3,
            max_bad_fraction: 0.0,
        },
        _ => Metric::AllClose {
            atol: 0.0,
            rtol: 0.0,
            max_bad_fraction: 0.01,
        },
    };
    let poison = match data[2] % 3 {
        0 => None,
        1 => Some(Poison::A),
        _ => Some(Poison::B),
    };
    let body = &data[4..];
    let size = dtype.size_bytes();
    let n = body.len() / (3 * size);
    let tensor = |k: usize| HostTensor {
        dtype,
        dims: vec![n as u64],
        bytes: body[k * n * size..(k + 1) * n * size].to_vec(),
    };
    let (got, expected, second) = (tensor(0), tensor(1), tensor(2));
    if let Ok(report) = compare(&got, &expected, metric, poison) {
        let _ = report.summary();
        let _ = report.passed();
        let _ = serde_json::to_string(&report);
    }
    let _ = compare_runs(&got, &second, &expected, metric);
});
