//! `ksmith gpu info` (device facts: CUDA attributes, NVML clocks and temperature, driver and
//! NVRTC versions, the stored calibration) and `ksmith gpu calibrate` (copy bandwidth and
//! arithmetic peaks, stored for speed-of-light). Also the hidden `ksmith gpu serve`, which runs
//! one benchmark request isolated in its own process for `ksmith bench`.
//!
//! Nothing here changes clocks, power limits, persistence or compute mode.

use super::{Global, EXIT_HARNESS, EXIT_OK};
use anyhow::Context;
use bench_suite::store::{NewGpu, Store};
use clap::{Args, Subcommand};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use verifier::runtime::bench::{bench, BenchRequest};
use verifier::runtime::calibrate::{
    calibrate, gpu_key, load_calibration, save_calibration, CalibrateOptions, Calibration,
};
use verifier::runtime::strict::ReferenceCache;
use verifier::runtime::telemetry::Telemetry;
use verifier::runtime::{DeviceInfo, Gpu};

#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// Device facts: CUDA attributes, NVML clocks/temperature/power, driver and NVRTC versions
    Info(InfoArgs),
    /// Measure copy bandwidth and arithmetic peaks; stored for % of speed-of-light
    Calibrate(CalibrateArgs),
    /// Run one benchmark request read from stdin (internal; started by `ksmith bench`)
    #[command(hide = true)]
    Serve,
    /// Run one kernel once at one shape, after warm-up calls: the target `ksmith profile` and
    /// `ksmith audit` wrap in ncu / compute-sanitizer (internal)
    #[command(hide = true)]
    RunOnce(super::profile::RunOnceArgs),
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Where calibrations are kept [default: results]
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Print the calibration as JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Repetitions per microbenchmark (the best counts)
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub repetitions: u32,
    /// Where calibrations are kept (results/calibration/<gpu>.json) [default: results]
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
    /// Also record it in this result store (the gpus table) [default: $KSMITH_DB or results/ksmith.db]
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// Do not record it in the result store
    #[arg(long)]
    pub no_db: bool,
}

pub fn run(g: &Global, cmd: GpuCommand) -> anyhow::Result<u8> {
    match cmd {
        GpuCommand::Info(a) => info(g, &a),
        GpuCommand::Calibrate(a) => calibrate_cmd(g, &a),
        GpuCommand::Serve => serve(g),
        GpuCommand::RunOnce(a) => Ok(super::profile::run_once(g, &a)),
    }
}

pub(crate) fn results_dir(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("results"))
}

/// Opens GPU 0, or prints why there is none (what was looked for) and returns the exit code.
pub(crate) fn open_gpu(json: bool, command: &str) -> Result<Gpu, u8> {
    match Gpu::open(0) {
        Ok(g) => Ok(g),
        Err(e) => {
            let message = format!("`ksmith {command}` needs a GPU: {e}");
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "error": message, "exit": EXIT_HARNESS })
                );
            } else {
                eprintln!("error: {message}");
            }
            Err(EXIT_HARNESS)
        }
    }
}

fn nvrtc_line(g: &Global) -> (Option<String>, String) {
    match g.nvrtc_locator().load() {
        Ok(n) => {
            let v = format!("{}.{}", n.version.0, n.version.1);
            let line = format!("{v} ({})", n.library_path.display());
            (Some(v), line)
        }
        Err(e) => (None, format!("not found ({e})")),
    }
}

fn driver_version(info: &DeviceInfo) -> String {
    format!(
        "{}.{}",
        info.driver_version / 1000,
        (info.driver_version % 1000) / 10
    )
}

fn info(g: &Global, a: &InfoArgs) -> anyhow::Result<u8> {
    let gpu = match open_gpu(a.json, "gpu info") {
        Ok(g) => g,
        Err(code) => return Ok(code),
    };
    let i = &gpu.info;
    let telemetry = Telemetry::open(0, Some(i));
    let (nvrtc_version, nvrtc) = nvrtc_line(g);
    let key = gpu_key(i);
    let results = results_dir(a.results.as_deref());
    let cal = load_calibration(&results, &key);
    let (reading, max_clocks, nvml_driver, nvml_note) = match &telemetry {
        Telemetry::Nvml(n) => (
            Some(n.read()),
            Some(n.max_clocks_mhz()),
            n.driver_version(),
            None,
        ),
        Telemetry::Unavailable(r) => (None, None, None, Some(r.clone())),
    };
    if a.json {
        let v = info_value(
            i,
            &key,
            &InfoExtras {
                driver: nvml_driver,
                nvrtc: nvrtc_version,
                nvml_unavailable: nvml_note,
                reading,
                max_clocks,
            },
            &cal,
        );
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(EXIT_OK);
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    let mut row = |k: &str, v: String| {
        t.add_row(vec![k.to_string(), v]);
    };
    row("device", i.name.clone());
    if let Some(bus) = &i.pci_bus_id {
        row("PCI bus id", bus.clone());
    }
    row("gpu key", key.clone());
    row(
        "compute capability",
        format!(
            "{}.{} ({})",
            i.compute_capability.0,
            i.compute_capability.1,
            i.sm()
        ),
    );
    row("compile target", i.arch().to_string());
    row("SMs", i.sm_count.to_string());
    row(
        "memory",
        format!(
            "{:.1} GiB",
            i.total_memory_bytes as f64 / (1u64 << 30) as f64
        ),
    );
    row(
        "L2",
        format!("{:.1} MiB", i.l2_cache_bytes as f64 / (1u64 << 20) as f64),
    );
    row(
        "shared memory",
        format!(
            "{} KiB per block ({} KiB opt-in), {} KiB per SM",
            i.shared_mem_per_block / 1024,
            i.shared_mem_per_block_optin / 1024,
            i.shared_mem_per_sm / 1024
        ),
    );
    row(
        "registers",
        format!(
            "{} per block, {} per SM",
            i.registers_per_block, i.registers_per_sm
        ),
    );
    row(
        "threads",
        format!(
            "{} per block, {} per SM",
            i.max_threads_per_block, i.max_threads_per_sm
        ),
    );
    row(
        "theoretical bandwidth",
        format!("{:.0} GB/s", i.theoretical_bandwidth() / 1e9),
    );
    row("CUDA driver API", driver_version(i));
    row(
        "driver",
        nvml_driver.unwrap_or_else(|| "unknown (no NVML)".into()),
    );
    row("NVRTC", nvrtc);
    match (&reading, &nvml_note) {
        (Some(r), _) => {
            row("telemetry", r.describe());
            if let Some((sm, mem)) = max_clocks {
                row(
                    "max clocks",
                    format!(
                        "{} MHz SM, {} MHz memory",
                        sm.map(|v| v.to_string()).unwrap_or("?".into()),
                        mem.map(|v| v.to_string()).unwrap_or("?".into())
                    ),
                );
            }
        }
        (None, Some(n)) => row("telemetry", format!("unavailable: {n}")),
        _ => {}
    }
    match &cal {
        Ok(Some(c)) => row("calibration", summary_line(c)),
        Ok(None) => row(
            "calibration",
            "none (run `ksmith gpu calibrate`; SOL% needs it)".into(),
        ),
        Err(e) => row("calibration", format!("unreadable: {e}")),
    }
    println!("{t}");
    Ok(EXIT_OK)
}

/// What `gpu info` read beside the CUDA attributes.
pub(crate) struct InfoExtras {
    pub driver: Option<String>,
    pub nvrtc: Option<String>,
    pub nvml_unavailable: Option<String>,
    pub reading: Option<verifier::runtime::telemetry::Reading>,
    pub max_clocks: Option<(Option<u32>, Option<u32>)>,
}

/// `gpu info --json`.
pub(crate) fn info_value(
    i: &DeviceInfo,
    key: &str,
    x: &InfoExtras,
    cal: &Result<Option<Calibration>, verifier::runtime::calibrate::CalibrationError>,
) -> serde_json::Value {
    serde_json::json!({
        "gpu_key": key,
        "device": i,
        "theoretical_bandwidth_bytes_per_s": i.theoretical_bandwidth(),
        "cuda_driver_api": driver_version(i),
        "driver": x.driver,
        "nvrtc": x.nvrtc,
        "nvml": {
            "unavailable": x.nvml_unavailable,
            "reading": x.reading,
            "max_sm_clock_mhz": x.max_clocks.and_then(|c| c.0),
            "max_memory_clock_mhz": x.max_clocks.and_then(|c| c.1),
        },
        "calibration": cal.as_ref().ok().cloned().flatten(),
        "calibration_error": cal.as_ref().err().map(|e| e.to_string()),
    })
}

fn summary_line(c: &Calibration) -> String {
    let mut parts = Vec::new();
    if let Some(b) = &c.bandwidth {
        parts.push(format!("{:.0} GB/s", b.per_s / 1e9));
    }
    for (k, r) in &c.peaks {
        parts.push(format!("{k} {:.1} T/s", r.per_s / 1e12));
    }
    if let Some(l) = &c.launch {
        parts.push(format!("launch {:.2} us", l.median_ms * 1e3));
    }
    parts.join(", ")
}

/// The rows of a calibration table: (what, rate, method).
pub(crate) fn calibration_rows(c: &Calibration) -> Vec<(String, String, String)> {
    let mut rows = Vec::new();
    for (name, r) in [
        ("bandwidth", &c.bandwidth),
        ("copy kernel", &c.copy_kernel),
        ("cuMemcpyDtoD", &c.memcpy_dtod),
    ] {
        if let Some(r) = r {
            rows.push((
                name.to_string(),
                format!("{:.1} GB/s", r.per_s / 1e9),
                r.method.clone(),
            ));
        }
    }
    for (k, r) in &c.peaks {
        let unit = if k.starts_with("int") {
            "TOP/s"
        } else {
            "TFLOP/s"
        };
        rows.push((
            k.clone(),
            format!("{:.1} {unit}", r.per_s / 1e12),
            r.method.clone(),
        ));
    }
    if let Some(l) = &c.launch {
        rows.push((
            "launch overhead".to_string(),
            format!("{:.2} us", l.median_ms * 1e3),
            format!(
                "{} (p20 {:.2} us, p80 {:.2} us)",
                l.method,
                l.p20_ms * 1e3,
                l.p80_ms * 1e3
            ),
        ));
    }
    for (k, why) in &c.skipped {
        rows.push((k.clone(), "-".into(), format!("skipped: {why}")));
    }
    rows
}

fn calibrate_cmd(g: &Global, a: &CalibrateArgs) -> anyhow::Result<u8> {
    let gpu = match open_gpu(a.json, "gpu calibrate") {
        Ok(g) => g,
        Err(code) => return Ok(code),
    };
    let (compiler, _) = super::tasks::compiler(g)?;
    let telemetry = Telemetry::open(0, Some(&gpu.info));
    let key = gpu_key(&gpu.info);
    let opts = CalibrateOptions {
        repetitions: a.repetitions.max(1),
        ..CalibrateOptions::default()
    };
    let mut progress = |what: &str| eprintln!("calibrate: {what}");
    let cal = calibrate(&gpu, &compiler, &key, &opts, &telemetry, &mut progress)
        .map_err(|e| anyhow::anyhow!("calibration failed on {}: {e}", gpu.info.summary()))?;
    let results = results_dir(a.results.as_deref());
    let path = save_calibration(&results, &cal)?;
    let stored_db = if a.no_db {
        None
    } else {
        let url = Store::resolve_url(a.db.as_deref());
        let store = Store::open(&url).with_context(|| format!("opening the result store {url}"))?;
        let new = new_gpu(&gpu.info, Some(&cal));
        store.write(|tx| tx.upsert_gpu(&new))?;
        Some(bench_suite::store::redact_url(&url))
    };
    if a.json {
        println!("{}", cal.to_json());
        return Ok(EXIT_OK);
    }
    let mut t = comfy_table::Table::new();
    t.set_header(vec!["what", "rate", "how"]);
    for (w, r, m) in calibration_rows(&cal) {
        t.add_row(vec![w, r, m]);
    }
    println!("{}\n{t}", cal.device);
    if let Some(th) = cal.telemetry.throttled() {
        if th {
            println!("warning: the GPU throttled (power or thermal) during calibration; peaks may be low");
        }
    }
    println!("saved to {}", path.display());
    if let Some(db) = stored_db {
        println!("recorded in {db} (gpus.details.calibration)");
    }
    Ok(EXIT_OK)
}

/// The store's row for this GPU, the calibration in its details.
pub(crate) fn new_gpu(i: &DeviceInfo, cal: Option<&Calibration>) -> NewGpu {
    NewGpu {
        gpu_key: gpu_key(i),
        name: i.name.clone(),
        compute_capability: format!("{}.{}", i.compute_capability.0, i.compute_capability.1),
        sm_count: Some(i64::from(i.sm_count)),
        memory_bytes: i64::try_from(i.total_memory_bytes).ok(),
        driver_version: driver_version(i),
        details: serde_json::json!({
            "l2_cache_bytes": i.l2_cache_bytes,
            "calibration": cal,
        }),
    }
}

/// `ksmith gpu serve`: one [`BenchRequest`] as JSON on stdin; one JSON line on the protocol
/// stream: `{"report": ...}` or `{"error": ..., "context_lost": ..., "harness": ...}`.
fn serve(g: &Global) -> anyhow::Result<u8> {
    let mut out = verifier::runtime::stdio::take_protocol_stream()
        .map_err(|e| anyhow::anyhow!("cannot set up the protocol stream: {e}"))?;
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the request from stdin")?;
    let reply = match serve_one(g, &text) {
        Ok(report) => serde_json::json!({ "report": report }),
        Err((message, context_lost, harness)) => serde_json::json!({
            "error": message, "context_lost": context_lost, "harness": harness
        }),
    };
    writeln!(out, "{reply}")?;
    out.flush()?;
    Ok(EXIT_OK)
}

type ServeError = (String, bool, bool);

fn serve_one(g: &Global, text: &str) -> Result<verifier::runtime::bench::BenchReport, ServeError> {
    let req: BenchRequest = serde_json::from_str(text)
        .map_err(|e| (format!("unreadable bench request: {e}"), false, true))?;
    let gpu = Gpu::open(0).map_err(|e| (e.to_string(), false, true))?;
    let (compiler, _) =
        super::tasks::compiler(g).map_err(|e| (super::describe(&e), false, true))?;
    let telemetry = Telemetry::open(0, Some(&gpu.info));
    let mut cache = ReferenceCache::new(4 << 30);
    bench(&gpu, &compiler, &mut cache, &req, &telemetry)
        .map_err(|e| (e.message, e.context_lost, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use verifier::runtime::calibrate::{Rate, CALIBRATION_VERSION};
    use verifier::runtime::telemetry::MeasurementTelemetry;

    fn h100() -> DeviceInfo {
        DeviceInfo {
            driver_version: 13000,
            total_memory_bytes: 85029158912,
            ..DeviceInfo::preset("h100").expect("h100 is a preset")
        }
    }

    fn rate(per_s: f64, method: &str) -> Rate {
        Rate {
            per_s,
            method: method.into(),
            repetitions: 10,
            best_ms: 1.0,
        }
    }

    fn calibration() -> Calibration {
        Calibration {
            version: CALIBRATION_VERSION,
            gpu_key: gpu_key(&h100()),
            device: "NVIDIA H100 80GB HBM3 (sm_90)".into(),
            arch: "sm_90".into(),
            measured_at: 0,
            bandwidth: Some(rate(3.0e12, "copy kernel int4")),
            copy_kernel: Some(rate(3.0e12, "copy kernel int4")),
            memcpy_dtod: Some(rate(2.9e12, "cuMemcpyDtoD")),
            peaks: BTreeMap::from([
                ("bf16_tensor".to_string(), rate(700e12, "mma.sync bf16")),
                ("int8_tensor".to_string(), rate(1400e12, "mma.sync s8")),
            ]),
            skipped: BTreeMap::from([("fp8_tensor".to_string(), "needs sm_89".to_string())]),
            launch: Some(
                verifier::runtime::calibrate::launch_overhead(&[0.0018, 0.0021, 0.0019]).unwrap(),
            ),
            telemetry: MeasurementTelemetry::default(),
        }
    }

    #[test]
    fn driver_versions_and_keys() {
        let mut i = h100();
        assert_eq!(driver_version(&i), "13.0");
        i.driver_version = 12040;
        assert_eq!(driver_version(&i), "12.4");
        assert_eq!(gpu_key(&i), "NVIDIA H100 80GB HBM3|sm_90|driver 12.4");
        assert_eq!(results_dir(None), PathBuf::from("results"));
        assert_eq!(results_dir(Some(Path::new("/x"))), PathBuf::from("/x"));
    }

    #[test]
    fn calibration_tables_name_units_and_skips() {
        let c = calibration();
        let rows = calibration_rows(&c);
        let find = |w: &str| {
            rows.iter()
                .find(|r| r.0 == w)
                .unwrap_or_else(|| panic!("{w}: {rows:?}"))
        };
        assert_eq!(find("bandwidth").1, "3000.0 GB/s");
        assert_eq!(find("cuMemcpyDtoD").1, "2900.0 GB/s");
        assert_eq!(find("bf16_tensor").1, "700.0 TFLOP/s");
        assert_eq!(
            find("int8_tensor").1,
            "1400.0 TOP/s",
            "integer peaks are ops, not FLOPs"
        );
        assert_eq!(find("fp8_tensor").2, "skipped: needs sm_89");
        assert_eq!(find("launch overhead").1, "1.90 us");
        assert!(find("launch overhead")
            .2
            .contains("p20 1.84 us, p80 2.02 us"));
        assert_eq!(rows.len(), 7);
        assert_eq!(
            summary_line(&c),
            "3000 GB/s, bf16_tensor 700.0 T/s, int8_tensor 1400.0 T/s, launch 1.90 us"
        );
    }

    #[test]
    fn store_row_of_a_gpu_carries_l2_and_calibration() {
        let c = calibration();
        let g = new_gpu(&h100(), Some(&c));
        assert_eq!(g.gpu_key, c.gpu_key);
        assert_eq!(g.compute_capability, "9.0");
        assert_eq!(g.sm_count, Some(132));
        assert_eq!(g.driver_version, "13.0");
        assert_eq!(g.details["l2_cache_bytes"], 52428800);
        assert_eq!(g.details["calibration"]["bandwidth"]["per_s"], 3.0e12);
        assert!(new_gpu(&h100(), None).details["calibration"].is_null());
    }

    /// scripts/gpu-check.sh's one-line summaries read these files as the commands write them.
    #[test]
    fn gpu_check_summaries_read_info_and_calibration() {
        let dir = tempfile::tempdir().unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu-check.sh");
        let summary = |kind: &str, text: &str| {
            let p = dir.path().join(kind);
            std::fs::write(&p, text).unwrap();
            let o = std::process::Command::new("bash")
                .arg(&script)
                .args(["summary", kind])
                .arg(&p)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        let v = info_value(
            &h100(),
            "k",
            &InfoExtras {
                driver: Some("580.65".into()),
                nvrtc: Some("13.0".into()),
                nvml_unavailable: None,
                reading: None,
                max_clocks: None,
            },
            &Ok(None),
        );
        assert_eq!(
            summary("info", &v.to_string()),
            "NVIDIA H100 80GB HBM3, 132 SMs, driver 580.65, NVRTC 13.0, NVML ok"
        );
        // `calibrate --json` may be preceded by progress lines in the same log.
        let c = format!("calibrate: copy kernel\n{}", calibration().to_json());
        assert_eq!(
            summary("calibrate", &c),
            "copy 3000 GB/s; bf16_tensor 700T, int8_tensor 1400T; launch 1.9 us; skipped fp8_tensor"
        );
        let mut old = calibration();
        old.launch = None;
        assert_eq!(
            summary("calibrate", &old.to_json()),
            "copy 3000 GB/s; bf16_tensor 700T, int8_tensor 1400T; skipped fp8_tensor"
        );
        assert!(summary("calibrate", "garbage").starts_with("(no summary"));
    }

    #[test]
    fn serve_rejects_a_malformed_request_as_a_harness_error() {
        let g = Global {
            tasks_dir: None,
            nvrtc: None,
            cuda_include: None,
            arch: None,
            cache_dir: None,
            no_cache: true,
            verbose: 0,
        };
        let (message, lost, harness) = serve_one(&g, "{not json").unwrap_err();
        assert!(message.starts_with("unreadable bench request"), "{message}");
        assert!(!lost && harness);
    }
}
