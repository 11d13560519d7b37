//! Nsight Compute: the command line that profiles one kernel launch, and a parser of its
//! `--csv --page raw` output.
//!
//! The raw page is one CSV table: a header row (`"ID","Process ID","Process Name","Host Name",
//! "Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC"`, then one column per
//! metric), a units row (empty under the fixed columns, `"nsecond"`, `"%"`, `"byte"`, ... under
//! the metrics), then one row per profiled launch. Values are quoted and may carry thousands
//! separators (`"10,240,000"`); a metric the device or version does not provide reads `n/a`.
//! The profiled program's own output and ncu's `==PROF==` / `==WARNING==` / `==ERROR==` lines can
//! appear before, between and after the rows; they are set aside, and the errors among them are
//! recognised (counters not permitted, unknown metrics, no kernel profiled).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

/// The curated metric set requested with `--metrics`.
pub const METRICS: &[&str] = &[
    "gpu__time_duration.sum",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram__bytes_read.sum",
    "dram__bytes_write.sum",
    "l1tex__t_sector_hit_rate.pct",
    "lts__t_sector_hit_rate.pct",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "sm__maximum_warps_per_active_cycle_pct",
    "launch__occupancy_limit_registers",
    "launch__occupancy_limit_shared_mem",
    "launch__occupancy_limit_warps",
    "launch__occupancy_limit_blocks",
    "launch__registers_per_thread",
    "launch__shared_mem_per_block_static",
    "launch__shared_mem_per_block_dynamic",
    "launch__block_size",
    "launch__grid_size",
    "launch__waves_per_multiprocessor",
    "smsp__issue_active.avg.pct_of_peak_sustained_active",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum",
    "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
    "sm__inst_executed_pipe_tensor_op_hmma.sum",
    "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active",
    "l1tex__t_sectors_pipe_lsu_mem_local_op_ld.sum",
    "l1tex__t_sectors_pipe_lsu_mem_local_op_st.sum",
    "smsp__average_warp_latency_issue_stalled_barrier.ratio",
    "smsp__average_warp_latency_issue_stalled_branch_resolving.ratio",
    "smsp__average_warp_latency_issue_stalled_dispatch_stall.ratio",
    "smsp__average_warp_latency_issue_stalled_drain.ratio",
    "smsp__average_warp_latency_issue_stalled_imc_miss.ratio",
    "smsp__average_warp_latency_issue_stalled_lg_throttle.ratio",
    "smsp__average_warp_latency_issue_stalled_long_scoreboard.ratio",
    "smsp__average_warp_latency_issue_stalled_math_pipe_throttle.ratio",
    "smsp__average_warp_latency_issue_stalled_membar.ratio",
    "smsp__average_warp_latency_issue_stalled_mio_throttle.ratio",
    "smsp__average_warp_latency_issue_stalled_misc.ratio",
    "smsp__average_warp_latency_issue_stalled_no_instruction.ratio",
    "smsp__average_warp_latency_issue_stalled_not_selected.ratio",
    "smsp__average_warp_latency_issue_stalled_selected.ratio",
    "smsp__average_warp_latency_issue_stalled_short_scoreboard.ratio",
    "smsp__average_warp_latency_issue_stalled_sleeping.ratio",
    "smsp__average_warp_latency_issue_stalled_tex_throttle.ratio",
    "smsp__average_warp_latency_issue_stalled_wait.ratio",
];

/// Which launch of which kernel to profile.
#[derive(Debug, Clone)]
pub struct NcuTarget {
    /// A regular expression over kernel names (`-k regex:NAME`).
    pub kernel_regex: String,
    /// Matching launches to skip first (`-s`): skip the warm-up and correctness calls.
    pub launch_skip: u64,
    /// Matching launches to profile after the skipped ones (`-c`): 1 for the Judge's metrics,
    /// more to compare a duration distribution with the harness's timings.
    pub launch_count: u64,
    pub metrics: Vec<String>,
}

impl NcuTarget {
    pub fn new(kernel_regex: impl Into<String>, launch_skip: u64) -> NcuTarget {
        NcuTarget {
            kernel_regex: kernel_regex.into(),
            launch_skip,
            launch_count: 1,
            metrics: METRICS.iter().map(|m| m.to_string()).collect(),
        }
    }

    /// Only `gpu__time_duration.sum` of `launch_count` launches after `launch_skip`: the kernel
    /// durations to hold the harness's own timings against (one pass, no replay).
    pub fn durations(kernel_regex: impl Into<String>, launch_skip: u64, launch_count: u64) -> Self {
        NcuTarget {
            kernel_regex: kernel_regex.into(),
            launch_skip,
            launch_count,
            metrics: vec!["gpu__time_duration.sum".to_string()],
        }
    }

    /// The same target without `unknown` metrics: the retry after [`NcuError::UnknownMetrics`].
    pub fn without(&self, unknown: &[String]) -> NcuTarget {
        NcuTarget {
            metrics: self
                .metrics
                .iter()
                .filter(|m| !unknown.contains(m))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    /// ncu's arguments, before the profiled program's command line. Clocks are left alone
    /// (`--clock-control none`: never change the GPU's settings, DESIGN §5); units are printed in
    /// base units so that values need no scaling.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--clock-control".into(),
            "none".into(),
            "--target-processes".into(),
            "all".into(),
            "--print-units".into(),
            "base".into(),
            "-k".into(),
            format!("regex:{}", self.kernel_regex),
            "-s".into(),
            self.launch_skip.to_string(),
            "-c".into(),
            self.launch_count.max(1).to_string(),
            "--csv".into(),
            "--page".into(),
            "raw".into(),
            "--metrics".into(),
            self.metrics.join(","),
        ]
    }

    /// `ncu ARGS program...`.
    pub fn command(&self, ncu: &Path, program: &[OsString]) -> Command {
        let mut c = Command::new(ncu);
        c.args(self.args()).args(program);
        c
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NcuError {
    #[error("Nsight Compute may not read the GPU's performance counters here (ERR_NVGPUCTRPERM): run as an administrator or allow profiling for all users (NVreg_RestrictProfilingToAdminUsers=0); ncu said: {message}")]
    CountersNotPermitted { message: String },
    #[error("this Nsight Compute does not know the metric(s) {}: retry without them", names.join(", "))]
    UnknownMetrics { names: Vec<String>, message: String },
    #[error("Nsight Compute profiled no kernel (is the -k regex right, and -s below the number of launches?){}", if messages.is_empty() { String::new() } else { format!(": {}", messages.join(" | ")) })]
    NoKernelProfiled { messages: Vec<String> },
    #[error("ncu printed no CSV table{}", if messages.is_empty() { String::new() } else { format!("; its messages: {}", messages.join(" | ")) })]
    NoTable { messages: Vec<String> },
    #[error("ncu CSV, line {line}: {message}")]
    Csv { line: usize, message: String },
}

/// One value of the raw page.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Text(String),
    /// `n/a`, empty, or a non-finite number.
    NotAvailable,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub value: Value,
    pub unit: String,
}

/// Warp-stall breakdown: reason (`long_scoreboard`, ...) and its value in the family's units.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stalls {
    /// `latency` (smsp__average_warp_latency_issue_stalled_*: cycles per issued instruction) or
    /// `pc_sampling` (smsp__pcsamp_warps_issue_stalled_*: sample counts).
    pub family: &'static str,
    /// Largest first.
    pub reasons: Vec<(String, f64)>,
}

impl Stalls {
    /// The largest real stall (`selected` is a warp issuing, not stalling) and its share of all
    /// stall reasons, in percent.
    pub fn top(&self) -> Option<(&str, f64)> {
        let total: f64 = self
            .reasons
            .iter()
            .filter(|(r, _)| r != "selected")
            .map(|(_, v)| v)
            .sum();
        let (r, v) = self.reasons.iter().find(|(r, _)| r != "selected")?;
        (total > 0.0).then(|| (r.as_str(), 100.0 * v / total))
    }
}

/// The curated metrics of one launch; `None` is n/a (not collected, not supported, not a number).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Curated {
    pub duration_ns: Option<f64>,
    /// Speed-of-light: compute (SM) and memory throughput, % of peak.
    pub sm_throughput_pct: Option<f64>,
    pub memory_throughput_pct: Option<f64>,
    pub dram_throughput_pct: Option<f64>,
    pub dram_read_bytes: Option<f64>,
    pub dram_write_bytes: Option<f64>,
    pub l1_hit_pct: Option<f64>,
    pub l2_hit_pct: Option<f64>,
    pub achieved_occupancy_pct: Option<f64>,
    pub theoretical_occupancy_pct: Option<f64>,
    /// Blocks per SM each resource allows; the smallest is the occupancy limiter.
    pub limit_registers: Option<f64>,
    pub limit_shared_mem: Option<f64>,
    pub limit_warps: Option<f64>,
    pub limit_blocks: Option<f64>,
    pub registers_per_thread: Option<f64>,
    pub smem_static_bytes: Option<f64>,
    pub smem_dynamic_bytes: Option<f64>,
    pub block_size: Option<f64>,
    pub grid_size: Option<f64>,
    pub waves_per_sm: Option<f64>,
    pub issue_active_pct: Option<f64>,
    pub smem_conflicts_ld: Option<f64>,
    pub smem_conflicts_st: Option<f64>,
    pub smem_wavefronts_ld: Option<f64>,
    pub smem_wavefronts_st: Option<f64>,
    /// The HMMA pipe (warp-level `mma.sync`), % of peak.
    pub tensor_pipe_pct: Option<f64>,
    /// Every tensor instruction kind (`mma.sync`, Hopper's `wgmma`, Blackwell's `tcgen05`), % of
    /// peak: a wgmma kernel keeps the HMMA pipe idle and this one busy.
    pub tensor_any_pct: Option<f64>,
    /// HMMA instructions only (wgmma does not count here).
    pub tensor_inst: Option<f64>,
    /// Local-memory traffic (register spills, local arrays), in sectors.
    pub local_ld_sectors: Option<f64>,
    pub local_st_sectors: Option<f64>,
    pub stalls: Option<Stalls>,
}

impl Curated {
    /// The occupancy limiter(s): the resources allowing the fewest blocks per SM.
    pub fn limiters(&self) -> Vec<(&'static str, f64)> {
        let all = [
            ("registers", self.limit_registers),
            ("shared memory", self.limit_shared_mem),
            ("warps", self.limit_warps),
            ("blocks", self.limit_blocks),
        ];
        let Some(min) = all
            .iter()
            .filter_map(|(_, v)| *v)
            .min_by(|a, b| a.total_cmp(b))
        else {
            return Vec::new();
        };
        all.iter()
            .filter_map(|(n, v)| v.filter(|v| *v == min).map(|v| (*n, v)))
            .collect()
    }
}

/// One profiled launch.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelProfile {
    pub id: Option<u64>,
    pub kernel_name: String,
    pub block_size: Option<String>,
    pub grid_size: Option<String>,
    pub device: Option<String>,
    pub cc: Option<String>,
    /// Every metric column, by name.
    pub metrics: BTreeMap<String, Metric>,
    pub curated: Curated,
    /// Values that were present but unusable, naming the metric (kept out of `curated`).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NcuReport {
    pub kernels: Vec<KernelProfile>,
    /// ncu's own `==PROF==` / `==WARNING==` / `==ERROR==` lines.
    pub messages: Vec<String>,
}

const FIXED: [&str; 11] = [
    "ID",
    "Process ID",
    "Process Name",
    "Host Name",
    "Kernel Name",
    "Context",
    "Stream",
    "Block Size",
    "Grid Size",
    "Device",
    "CC",
];

fn is_tool_line(l: &str) -> bool {
    let t = l.trim_start();
    t.starts_with("==PROF==")
        || t.starts_with("==WARNING==")
        || t.starts_with("==ERROR==")
        || t.starts_with("==INFO==")
}

/// Parses a value as ncu prints it: `1,234.5`, `4.0e-05`, `n/a`, text such as `(256, 1, 1)`,
/// or a number followed by a unit (`12.5 %`), whose unit is then returned too.
pub fn parse_value(raw: &str) -> (Value, Option<String>) {
    let s = raw.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("n/a") || s == "-" {
        return (Value::NotAvailable, None);
    }
    let number = |t: &str| -> Option<f64> {
        let grouped = t.contains(',') && {
            let int = t
                .trim_start_matches(['-', '+'])
                .split('.')
                .next()
                .unwrap_or("");
            let groups: Vec<&str> = int.split(',').collect();
            !groups[0].is_empty()
                && groups[0].len() <= 3
                && groups[1..].iter().all(|g| g.len() == 3)
                && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit()))
        };
        let cleaned = if grouped {
            t.replace(',', "")
        } else if t.contains(',') {
            return None;
        } else {
            t.to_string()
        };
        // Rust accepts "inf" and "nan"; ncu never means those as measurements.
        if cleaned
            .bytes()
            .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E')
        {
            return None;
        }
        cleaned.parse::<f64>().ok()
    };
    if let Some(v) = number(s) {
        return (
            if v.is_finite() {
                Value::Number(v)
            } else {
                Value::NotAvailable
            },
            None,
        );
    }
    if let Some((n, unit)) = s.split_once(char::is_whitespace) {
        let unit = unit.trim();
        if !unit.contains(char::is_whitespace) {
            if let Some(v) = number(n) {
                return (Value::Number(v), Some(unit.to_string()));
            }
        }
    }
    (Value::Text(s.to_string()), None)
}

/// Scale of a unit to the base unit of its kind (ns for time, bytes for sizes); `None` for a
/// unit of another kind.
fn scale(unit: &str, kind: Kind) -> Option<f64> {
    let u = unit.trim();
    match kind {
        Kind::Time => match u {
            "nsecond" | "ns" | "" => Some(1.0),
            "usecond" | "us" => Some(1e3),
            "msecond" | "ms" => Some(1e6),
            "second" | "s" => Some(1e9),
            _ => None,
        },
        // ncu scales bytes by powers of 1000 (Kbyte, Mbyte); `--print-units base` avoids them.
        Kind::Bytes => match u {
            "byte" | "B" | "" => Some(1.0),
            "Kbyte" | "KB" | "kbyte" => Some(1e3),
            "Mbyte" | "MB" => Some(1e6),
            "Gbyte" | "GB" => Some(1e9),
            "Tbyte" | "TB" => Some(1e12),
            _ => None,
        },
        Kind::Percent => matches!(u, "%" | "").then_some(1.0),
        Kind::Count => Some(1.0),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Time,
    Bytes,
    Percent,
    Count,
}

fn numeric(
    metrics: &BTreeMap<String, Metric>,
    name: &str,
    kind: Kind,
    warnings: &mut Vec<String>,
) -> Option<f64> {
    let m = metrics.get(name)?;
    match &m.value {
        Value::Number(v) => match scale(&m.unit, kind) {
            Some(f) => Some(v * f),
            None => {
                warnings.push(format!("`{name}`: unexpected unit `{}`", m.unit));
                None
            }
        },
        Value::Text(t) => {
            warnings.push(format!("`{name}`: `{t}` is not a number"));
            None
        }
        Value::NotAvailable => None,
    }
}

fn stalls(metrics: &BTreeMap<String, Metric>) -> Option<Stalls> {
    let family = |prefix: &str, fam: &'static str| -> Option<Stalls> {
        let mut reasons: Vec<(String, f64)> = metrics
            .iter()
            .filter_map(|(name, m)| {
                let rest = name.strip_prefix(prefix)?;
                let reason = rest.split('.').next()?;
                // Per-PC-sampling variants that split a reason further are not reasons.
                if reason.is_empty() || reason.ends_with("_not_issued") {
                    return None;
                }
                match m.value {
                    Value::Number(v) => Some((reason.to_string(), v)),
                    _ => None,
                }
            })
            .collect();
        if reasons.is_empty() {
            return None;
        }
        reasons.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Some(Stalls {
            family: fam,
            reasons,
        })
    };
    family("smsp__average_warp_latency_issue_stalled_", "latency")
        .or_else(|| family("smsp__pcsamp_warps_issue_stalled_", "pc_sampling"))
}

fn curate(metrics: &BTreeMap<String, Metric>, w: &mut Vec<String>) -> Curated {
    use Kind::*;
    let mut n = |name: &str, kind: Kind| numeric(metrics, name, kind, w);
    Curated {
        duration_ns: n("gpu__time_duration.sum", Time),
        sm_throughput_pct: n("sm__throughput.avg.pct_of_peak_sustained_elapsed", Percent),
        memory_throughput_pct: n(
            "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed",
            Percent,
        ),
        dram_throughput_pct: n(
            "dram__throughput.avg.pct_of_peak_sustained_elapsed",
            Percent,
        ),
        dram_read_bytes: n("dram__bytes_read.sum", Bytes),
        dram_write_bytes: n("dram__bytes_write.sum", Bytes),
        l1_hit_pct: n("l1tex__t_sector_hit_rate.pct", Percent),
        l2_hit_pct: n("lts__t_sector_hit_rate.pct", Percent),
        achieved_occupancy_pct: n("sm__warps_active.avg.pct_of_peak_sustained_active", Percent),
        theoretical_occupancy_pct: n("sm__maximum_warps_per_active_cycle_pct", Percent),
        limit_registers: n("launch__occupancy_limit_registers", Count),
        limit_shared_mem: n("launch__occupancy_limit_shared_mem", Count),
        limit_warps: n("launch__occupancy_limit_warps", Count),
        limit_blocks: n("launch__occupancy_limit_blocks", Count),
        registers_per_thread: n("launch__registers_per_thread", Count),
        smem_static_bytes: n("launch__shared_mem_per_block_static", Bytes),
        smem_dynamic_bytes: n("launch__shared_mem_per_block_dynamic", Bytes),
        block_size: n("launch__block_size", Count),
        grid_size: n("launch__grid_size", Count),
        waves_per_sm: n("launch__waves_per_multiprocessor", Count),
        issue_active_pct: n(
            "smsp__issue_active.avg.pct_of_peak_sustained_active",
            Percent,
        ),
        smem_conflicts_ld: n(
            "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
            Count,
        ),
        smem_conflicts_st: n(
            "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum",
            Count,
        ),
        smem_wavefronts_ld: n(
            "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum",
            Count,
        ),
        smem_wavefronts_st: n(
            "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum",
            Count,
        ),
        tensor_pipe_pct: n(
            "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
            Percent,
        ),
        tensor_any_pct: n(
            "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active",
            Percent,
        ),
        tensor_inst: n("sm__inst_executed_pipe_tensor_op_hmma.sum", Count),
        local_ld_sectors: n("l1tex__t_sectors_pipe_lsu_mem_local_op_ld.sum", Count),
        local_st_sectors: n("l1tex__t_sectors_pipe_lsu_mem_local_op_st.sum", Count),
        stalls: stalls(metrics),
    }
}

/// Errors ncu reported in its messages, in order of precedence.
fn message_error(messages: &[String]) -> Option<NcuError> {
    if let Some(m) = messages.iter().find(|m| m.contains("ERR_NVGPUCTRPERM")) {
        return Some(NcuError::CountersNotPermitted { message: m.clone() });
    }
    let unknown: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains("Failed to find metric"))
        .collect();
    if !unknown.is_empty() {
        let names = unknown
            .iter()
            .filter_map(|m| {
                let rest = m.split("Failed to find metric").nth(1)?;
                let name = rest
                    .split_whitespace()
                    .next()?
                    .trim_matches(|c: char| c == '"' || c == '\'' || c == ':' || c == '.');
                let name = name.strip_prefix("regex:").unwrap_or(name);
                (!name.is_empty()).then(|| name.to_string())
            })
            .collect();
        return Some(NcuError::UnknownMetrics {
            names,
            message: unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" | "),
        });
    }
    None
}

impl NcuReport {
    /// `gpu__time_duration.sum` of every profiled launch that has one, in nanoseconds, in
    /// launch order.
    pub fn durations_ns(&self) -> Vec<f64> {
        self.kernels
            .iter()
            .filter_map(|k| k.curated.duration_ns)
            .collect()
    }
}

/// Parses everything ncu wrote (stdout and stderr together are fine).
pub fn parse(text: &str) -> Result<NcuReport, NcuError> {
    let text = text.trim_start_matches('\u{feff}');
    let mut messages = Vec::new();
    let mut table: Vec<(usize, &str)> = Vec::new();
    let mut in_table = false;
    for (i, line) in text.lines().enumerate() {
        if is_tool_line(line) {
            messages.push(line.trim().to_string());
            continue;
        }
        if !in_table && line.trim_start().starts_with("\"ID\",") {
            in_table = true;
        }
        // Once in the table, only quoted rows belong to it; anything else is program output.
        if in_table && line.trim_start().starts_with('"') {
            table.push((i + 1, line));
        }
    }
    if let Some(e) = message_error(&messages) {
        return Err(e);
    }
    if table.is_empty() {
        if messages
            .iter()
            .any(|m| m.contains("No kernels were profiled"))
        {
            return Err(NcuError::NoKernelProfiled { messages });
        }
        return Err(NcuError::NoTable { messages });
    }
    let mut rows: Vec<(usize, Vec<String>)> = Vec::with_capacity(table.len());
    for (line, raw) in &table {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(raw.as_bytes());
        let mut rec = csv::StringRecord::new();
        match rdr.read_record(&mut rec) {
            Ok(true) => rows.push((*line, rec.iter().map(str::to_string).collect())),
            Ok(false) => {}
            Err(e) => {
                return Err(NcuError::Csv {
                    line: *line,
                    message: e.to_string(),
                })
            }
        }
    }
    if rows.is_empty() {
        return Err(NcuError::NoTable { messages });
    }
    let (header_line, header) = rows.remove(0);
    for (i, want) in FIXED.iter().enumerate().take(5) {
        if header.get(i).map(String::as_str) != Some(*want) {
            return Err(NcuError::Csv {
                line: header_line,
                message: format!(
                    "column {} is {:?}, expected {want:?} (not a `--page raw` table?)",
                    i + 1,
                    header.get(i).map(String::as_str).unwrap_or("<missing>")
                ),
            });
        }
    }
    let fixed = FIXED
        .iter()
        .take_while(|f| header.iter().any(|h| h == *f))
        .count();
    let col = |name: &str| header.iter().position(|h| h == name);
    // The units row has an empty ID; ncu always prints one, but a table without it is still read.
    let units: Vec<String> = match rows.first() {
        Some((_, r)) if r.first().is_some_and(|id| id.trim().is_empty()) => rows.remove(0).1,
        _ => vec![String::new(); header.len()],
    };
    if rows.is_empty() {
        return Err(NcuError::NoKernelProfiled { messages });
    }
    let mut kernels = Vec::with_capacity(rows.len());
    for (line, row) in rows {
        if row.len() != header.len() {
            return Err(NcuError::Csv {
                line,
                message: format!(
                    "{} fields for {} columns (truncated output?)",
                    row.len(),
                    header.len()
                ),
            });
        }
        let get = |name: &str| {
            col(name)
                .and_then(|i| row.get(i))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let Some(kernel_name) = get("Kernel Name") else {
            return Err(NcuError::Csv {
                line,
                message: "empty `Kernel Name`".into(),
            });
        };
        let id = match get("ID") {
            None => None,
            Some(s) => match parse_value(&s).0 {
                Value::Number(v) if v >= 0.0 && v.fract() == 0.0 => Some(v as u64),
                _ => {
                    return Err(NcuError::Csv {
                        line,
                        message: format!("`ID` is {s:?}, not a launch number"),
                    })
                }
            },
        };
        let mut metrics = BTreeMap::new();
        for (i, name) in header.iter().enumerate().skip(fixed) {
            let (value, inline_unit) = parse_value(&row[i]);
            let unit = inline_unit.unwrap_or_else(|| units.get(i).cloned().unwrap_or_default());
            metrics.insert(name.clone(), Metric { value, unit });
        }
        let mut warnings = Vec::new();
        let curated = curate(&metrics, &mut warnings);
        kernels.push(KernelProfile {
            id,
            kernel_name,
            block_size: get("Block Size"),
            grid_size: get("Grid Size"),
            device: get("Device"),
            cc: get("CC"),
            metrics,
            curated,
            warnings,
        });
    }
    Ok(NcuReport { kernels, messages })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_target_and_durations() {
        let a = NcuTarget::durations("swiglu_bf16", 10, 20).args();
        let pair = |k: &str| a.iter().position(|x| x == k).map(|i| a[i + 1].as_str());
        assert_eq!(pair("-s"), Some("10"));
        assert_eq!(pair("-c"), Some("20"));
        assert_eq!(pair("--metrics"), Some("gpu__time_duration.sum"));
        assert_eq!(pair("--clock-control"), Some("none"));
        let mut t = NcuTarget::new("k", 0);
        t.launch_count = 0;
        assert_eq!(
            t.args()[t.args().iter().position(|x| x == "-c").unwrap() + 1],
            "1"
        );
        let csv = "\"ID\",\"Process ID\",\"Process Name\",\"Host Name\",\"Kernel Name\",\"gpu__time_duration.sum\"\n\
                   \"\",\"\",\"\",\"\",\"\",\"usecond\"\n\
                   \"0\",\"1\",\"ksmith\",\"h\",\"swiglu_bf16\",\"1.5\"\n\
                   \"1\",\"1\",\"ksmith\",\"h\",\"swiglu_bf16\",\"n/a\"\n\
                   \"2\",\"1\",\"ksmith\",\"h\",\"swiglu_bf16\",\"1,250\"\n";
        let r = parse(csv).unwrap();
        assert_eq!(r.kernels.len(), 3);
        assert_eq!(r.durations_ns(), [1500.0, 1_250_000.0]);
    }
}
