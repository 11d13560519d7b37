//! Output of the tools the harness runs: Nsight Compute CSV, compute-sanitizer reports, the
//! ptxas info log (resources and performance notes), PTX entry declarations and instructions,
//! and a stored calibration file.
#![no_main]

use bench_suite::profile::{ncu, sanitizer};
use libfuzzer_sys::fuzz_target;
use verifier::nvrtc::{emulated, ptx_params, ptxas};
use verifier::runtime::calibrate::Calibration;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = ncu::parse(&text);
    for field in text.split(',').take(64) {
        let _ = ncu::parse_value(field);
    }
    let _ = sanitizer::parse(&text);
    let _ = ptxas::parse(&text);
    let _ = ptxas::performance_losses(&text);
    if let Ok(arch) = "sm_90".parse() {
        let _ = emulated::notes(&text, arch);
    }
    let _ = Calibration::from_json(&text, std::path::Path::new("c.json"));
    for symbol in ["k", "_Z6kernelPfi"] {
        let _ = ptx_params::entry_params(&text, symbol);
    }
    if let Some(word) = text.split_whitespace().find(|w| w.len() < 64) {
        let _ = ptx_params::entry_params(&text, word);
    }
});
