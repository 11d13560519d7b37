//! Prompt rendering: typed contexts in, markdown prompts out, through the tera templates in
//! `prompts/`. The templates are compiled into the binary (a user can point at a directory of
//! edited copies instead). Everything the GPU would tell us is optional: without a device the
//! facts read "unknown", so prompts render on any machine (dry runs, tests, replays).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The templates, by the names they are registered under.
const TEMPLATES: &[(&str, &str)] = &[
    ("coder.md.tera", include_str!("../../prompts/coder.md.tera")),
    (
        "judge_correction.md.tera",
        include_str!("../../prompts/judge_correction.md.tera"),
    ),
    (
        "judge_optimization.md.tera",
        include_str!("../../prompts/judge_optimization.md.tera"),
    ),
    (
        "mutate.md.tera",
        include_str!("../../prompts/mutate.md.tera"),
    ),
    (
        "crossover.md.tera",
        include_str!("../../prompts/crossover.md.tera"),
    ),
    (
        "partials/task.md.tera",
        include_str!("../../prompts/partials/task.md.tera"),
    ),
    (
        "partials/device.md.tera",
        include_str!("../../prompts/partials/device.md.tera"),
    ),
    (
        "partials/rules.md.tera",
        include_str!("../../prompts/partials/rules.md.tera"),
    ),
    (
        "partials/kernel.md.tera",
        include_str!("../../prompts/partials/kernel.md.tera"),
    ),
    (
        "partials/history.md.tera",
        include_str!("../../prompts/partials/history.md.tera"),
    ),
    (
        "partials/reply_format.md.tera",
        include_str!("../../prompts/partials/reply_format.md.tera"),
    ),
];

const UNKNOWN: &str = "unknown";

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("cannot read prompt template {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("prompt template error: {0}")]
    Template(String),
}

impl From<tera::Error> for PromptError {
    fn from(e: tera::Error) -> Self {
        // tera's Display is the outermost message only; the cause names the line and variable.
        let mut s = e.to_string();
        let mut cur = std::error::Error::source(&e);
        while let Some(c) = cur {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cur = c.source();
        }
        PromptError::Template(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Typed context, filled by the caller from the task, the device and the search state.

/// What the model is told about the task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskContext {
    pub id: String,
    pub title: String,
    pub category: String,
    pub source: Option<String>,
    pub description: Option<String>,
    pub spec_py: String,
    pub params: Vec<ParamRow>,
    pub io: Vec<IoRow>,
    pub shapes: Vec<ShapeRow>,
    /// E.g. "every output within normalized max error 1e-2 of the reference".
    pub tolerance: String,
    /// E.g. "bytes = 2*M*N*3, flops = 4*M*N, peak fp32".
    pub roofline: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParamRow {
    pub name: String,
    /// Human text of the legal range: "min 1, multiple of 64", "one of 64, 128".
    pub range: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoKind {
    Input,
    Output,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IoRow {
    pub name: String,
    pub kind: IoKind,
    pub dtype: String,
    /// The element type in CUDA C++ (`__nv_bfloat16`), if known.
    pub cuda_type: Option<String>,
    /// Shape expressions, e.g. `["M", "N"]`.
    pub shape: Vec<String>,
    /// "activation", "weight" or "output".
    pub role: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShapeRow {
    pub name: String,
    pub values: Vec<NamedValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedValue {
    pub name: String,
    pub value: i64,
}

/// Facts about the target GPU. Every field is optional; missing ones render as "unknown".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceFacts {
    pub name: Option<String>,
    /// (major, minor), e.g. (9, 0).
    pub compute_capability: Option<(u32, u32)>,
    /// The NVRTC target kernels are compiled for, e.g. `sm_90a`.
    #[serde(default)]
    pub compile_target: Option<String>,
    pub sm_count: Option<u32>,
    pub smem_per_block_bytes: Option<u64>,
    /// The opt-in maximum of dynamic shared memory per block.
    pub smem_per_block_optin_bytes: Option<u64>,
    pub smem_per_sm_bytes: Option<u64>,
    pub registers_per_block: Option<u64>,
    pub registers_per_sm: Option<u64>,
    pub max_threads_per_block: Option<u32>,
    pub max_threads_per_sm: Option<u32>,
    pub l2_bytes: Option<u64>,
    /// Measured device-memory copy bandwidth (`ksmith gpu calibrate`), GB/s.
    pub measured_bandwidth_gbps: Option<f64>,
    /// Measured peak rates, e.g. ("fp32", 60.0) and ("bf16_tensor", 700.0), in TFLOP/s.
    pub peaks_tflops: Vec<(String, f64)>,
    /// Measured GPU time of one empty launch inside the timed window (`ksmith gpu
    /// calibrate`), microseconds: what every launch of a plan costs at the least.
    #[serde(default)]
    pub launch_overhead_us: Option<f64>,
    pub driver_version: Option<String>,
    pub nvrtc_version: Option<String>,
}

/// Rules the model must follow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    /// Headers `#include` may name (from the verifier's allowlist).
    pub header_allowlist: Vec<String>,
    pub fast_math: bool,
    /// Task- or run-specific extra rules, one sentence each.
    pub extra: Vec<String>,
}

/// Timing of a kernel on one public shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShapeTiming {
    pub shape: String,
    pub median_us: Option<f64>,
    pub reference_us: Option<f64>,
    /// Percent of the speed-of-light floor (100 = at the roofline).
    pub sol_pct: Option<f64>,
    /// The speed-of-light floor itself, where the GPU is calibrated: a time under it means the
    /// kernel cannot have done the declared work (the result is quarantined, never ranked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_us: Option<f64>,
}

/// A kernel as shown to a model: code, plan, and what is known about it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelSnapshot {
    pub source: String,
    pub plan: String,
    /// "correct", "wrong_output", ... when evaluated.
    pub verdict: Option<String>,
    pub timings: Vec<ShapeTiming>,
    /// Registers / spills / shared memory per kernel from ptxas.
    pub resources: Option<String>,
    /// A short profile summary (a few metrics with values), if profiled.
    pub profile_summary: Option<String>,
}

/// One line of the short history shown to the models.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub round: u32,
    /// "initial", "repair", "optimize", "mutate", "crossover".
    pub action: String,
    pub verdict: String,
    /// Geometric-mean speedup over the reference, when correct and timed.
    pub speedup: Option<f64>,
    /// One line: the error or the idea tried.
    pub summary: String,
}

/// Everything shared by all prompts of one task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptContext {
    pub task: TaskContext,
    pub device: DeviceFacts,
    pub rules: Rules,
    /// The best kernel so far (correct and fastest), if there is one.
    pub best: Option<KernelSnapshot>,
    pub history: Vec<HistoryEntry>,
    /// Why the model's previous reply could not be used (no code block, cut off, ...), shown to
    /// the Coder so it fixes the form of its answer.
    pub notice: Option<String>,
}

/// What the Coder is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum CoderMode {
    /// First kernel for the task.
    Initial,
    /// The current kernel failed: `feedback` is the harness's report (compile log, verdict
    /// details); `advice` the Judge's diagnosis.
    Repair {
        current: KernelSnapshot,
        feedback: String,
        advice: Option<String>,
    },
    /// The current kernel is correct; `advice` is the Judge's optimisation proposal.
    Optimize {
        current: KernelSnapshot,
        advice: Option<String>,
    },
}

// ---------------------------------------------------------------------------------------------
// Views: what the templates actually see, with every number already formatted.

#[derive(Serialize)]
struct Fact {
    label: &'static str,
    value: String,
}

#[derive(Serialize)]
struct TimingView {
    shape: String,
    median_us: String,
    reference_us: String,
    speedup: String,
    sol_pct: String,
}

#[derive(Serialize)]
struct KernelView<'a> {
    source: &'a str,
    plan: &'a str,
    verdict: Option<&'a str>,
    timings: Vec<TimingView>,
    resources: Option<&'a str>,
    profile_summary: Option<&'a str>,
}

#[derive(Serialize)]
struct HistoryView<'a> {
    round: u32,
    action: &'a str,
    verdict: &'a str,
    speedup: Option<String>,
    summary: &'a str,
}

fn fmt_opt<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| UNKNOWN.to_string())
}

fn fmt_bytes(b: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if b >= MIB && b.is_multiple_of(MIB) {
        format!("{} MiB", b / MIB)
    } else if b >= MIB {
        format!("{:.1} MiB", b as f64 / MIB as f64)
    } else if b >= KIB && b.is_multiple_of(KIB) {
        format!("{} KiB", b / KIB)
    } else {
        format!("{b} bytes")
    }
}

/// Three significant figures, enough for timings and rates without false precision.
fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return UNKNOWN.to_string();
    }
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

impl DeviceFacts {
    fn rows(&self) -> Vec<Fact> {
        let mut rows = vec![
            Fact {
                label: "GPU",
                value: self.name.clone().unwrap_or_else(|| UNKNOWN.into()),
            },
            Fact {
                label: "compute capability",
                value: fmt_opt(self.compute_capability, |(a, b)| {
                    format!("{a}.{b} (sm_{a}{b})")
                }),
            },
            Fact {
                label: "kernels are compiled for",
                value: fmt_opt(self.compile_target.as_deref(), |t| {
                    if t.ends_with('a') {
                        format!("{t} (arch-specific: this GPU's own instructions, such as wgmma and setmaxnreg on sm_90a, compile)")
                    } else {
                        t.to_string()
                    }
                }),
            },
            Fact {
                label: "SMs",
                value: fmt_opt(self.sm_count, |n| n.to_string()),
            },
            Fact {
                label: "shared memory per block",
                value: match (self.smem_per_block_bytes, self.smem_per_block_optin_bytes) {
                    (Some(d), Some(o)) if o > d => {
                        format!("{} ({} with opt-in)", fmt_bytes(d), fmt_bytes(o))
                    }
                    (Some(d), _) => fmt_bytes(d),
                    (None, Some(o)) => format!("{} with opt-in", fmt_bytes(o)),
                    (None, None) => UNKNOWN.into(),
                },
            },
            Fact {
                label: "shared memory per SM",
                value: fmt_opt(self.smem_per_sm_bytes, fmt_bytes),
            },
            Fact {
                label: "32-bit registers per block / per SM",
                value: format!(
                    "{} / {}",
                    fmt_opt(self.registers_per_block, |n| n.to_string()),
                    fmt_opt(self.registers_per_sm, |n| n.to_string())
                ),
            },
            Fact {
                label: "max threads per block / per SM",
                value: format!(
                    "{} / {}",
                    fmt_opt(self.max_threads_per_block, |n| n.to_string()),
                    fmt_opt(self.max_threads_per_sm, |n| n.to_string())
                ),
            },
            Fact {
                label: "L2 cache",
                value: fmt_opt(self.l2_bytes, fmt_bytes),
            },
            Fact {
                label: "measured memory bandwidth",
                value: fmt_opt(self.measured_bandwidth_gbps, |g| {
                    format!("{} GB/s", fmt_num(g))
                }),
            },
            Fact {
                label: "measured peak rates",
                value: if self.peaks_tflops.is_empty() {
                    UNKNOWN.into()
                } else {
                    self.peaks_tflops
                        .iter()
                        .map(|(k, v)| format!("{k} {} TFLOP/s", fmt_num(*v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            },
        ];
        if let Some(us) = self.launch_overhead_us {
            rows.push(Fact {
                label: "measured launch overhead",
                value: format!(
                    "{} us per launch, even of an empty kernel: a call of k launches costs at least k times this, so at shapes whose floor is a few microseconds, fewer launches win",
                    fmt_num(us)
                ),
            });
        }
        if let Some(v) = &self.driver_version {
            rows.push(Fact {
                label: "driver",
                value: v.clone(),
            });
        }
        if let Some(v) = &self.nvrtc_version {
            rows.push(Fact {
                label: "NVRTC",
                value: v.clone(),
            });
        }
        rows
    }
}

impl KernelSnapshot {
    fn view(&self) -> KernelView<'_> {
        KernelView {
            source: &self.source,
            plan: &self.plan,
            verdict: self.verdict.as_deref(),
            timings: self
                .timings
                .iter()
                .map(|t| TimingView {
                    shape: t.shape.clone(),
                    median_us: fmt_opt(t.median_us, fmt_num),
                    reference_us: fmt_opt(t.reference_us, fmt_num),
                    speedup: match (t.median_us, t.reference_us) {
                        (Some(m), Some(r)) if m > 0.0 => format!("{}x", fmt_num(r / m)),
                        _ => UNKNOWN.into(),
                    },
                    sol_pct: fmt_opt(t.sol_pct, |p| format!("{}%", fmt_num(p))),
                })
                .collect(),
            resources: self.resources.as_deref(),
            profile_summary: self.profile_summary.as_deref(),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Renders the five prompts.
pub struct PromptRenderer {
    tera: tera::Tera,
}

impl PromptRenderer {
    /// The templates compiled into the binary.
    pub fn builtin() -> Result<Self, PromptError> {
        Self::from_sources(
            TEMPLATES
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string())),
        )
    }

    /// Templates read from `dir` (same file names as `prompts/`); a file missing there falls
    /// back to the built-in one, so a user can override just the template they edit.
    pub fn from_dir(dir: &Path) -> Result<Self, PromptError> {
        let mut sources = Vec::new();
        for (name, builtin) in TEMPLATES {
            let path = dir.join(name);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => builtin.to_string(),
                Err(source) => return Err(PromptError::Read { path, source }),
            };
            sources.push((name.to_string(), text));
        }
        Self::from_sources(sources)
    }

    fn from_sources(
        sources: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, PromptError> {
        let mut tera = tera::Tera::default();
        // Prompts are markdown for a model, not HTML: never escape.
        tera.autoescape_on(vec![]);
        tera.add_raw_templates(sources)?;
        Ok(PromptRenderer { tera })
    }

    fn base(&self, ctx: &PromptContext) -> tera::Context {
        let mut c = tera::Context::new();
        c.insert("task", &ctx.task);
        c.insert("device", &ctx.device.rows());
        c.insert("compile_target", &ctx.device.compile_target);
        c.insert("rules", &ctx.rules);
        c.insert("best", &ctx.best.as_ref().map(KernelSnapshot::view));
        let history: Vec<HistoryView> = ctx
            .history
            .iter()
            .map(|h| HistoryView {
                round: h.round,
                action: &h.action,
                verdict: &h.verdict,
                speedup: h.speedup.map(|s| format!("{}x", fmt_num(s))),
                summary: &h.summary,
            })
            .collect();
        c.insert("history", &history);
        c.insert("notice", &ctx.notice);
        c
    }

    pub fn coder(&self, ctx: &PromptContext, mode: &CoderMode) -> Result<String, PromptError> {
        let mut c = self.base(ctx);
        match mode {
            CoderMode::Initial => c.insert("mode", "initial"),
            CoderMode::Repair {
                current,
                feedback,
                advice,
            } => {
                c.insert("mode", "repair");
                c.insert("current", &current.view());
                c.insert("feedback", feedback);
                c.insert("advice", advice);
            }
            CoderMode::Optimize { current, advice } => {
                c.insert("mode", "optimize");
                c.insert("current", &current.view());
                c.insert("advice", advice);
            }
        }
        Ok(tidy(&self.tera.render("coder.md.tera", &c)?))
    }

    pub fn judge_correction(
        &self,
        ctx: &PromptContext,
        candidate: &KernelSnapshot,
        feedback: &str,
    ) -> Result<String, PromptError> {
        let mut c = self.base(ctx);
        c.insert("candidate", &candidate.view());
        c.insert("feedback", feedback);
        Ok(tidy(&self.tera.render("judge_correction.md.tera", &c)?))
    }

    pub fn judge_optimization(
        &self,
        ctx: &PromptContext,
        candidate: &KernelSnapshot,
    ) -> Result<String, PromptError> {
        let mut c = self.base(ctx);
        c.insert("candidate", &candidate.view());
        Ok(tidy(&self.tera.render("judge_optimization.md.tera", &c)?))
    }

    pub fn mutate(
        &self,
        ctx: &PromptContext,
        parent: &KernelSnapshot,
        direction: Option<&str>,
    ) -> Result<String, PromptError> {
        let mut c = self.base(ctx);
        c.insert("parent", &parent.view());
        c.insert("direction", &direction);
        Ok(tidy(&self.tera.render("mutate.md.tera", &c)?))
    }

    pub fn crossover(
        &self,
        ctx: &PromptContext,
        parent_a: &KernelSnapshot,
        parent_b: &KernelSnapshot,
    ) -> Result<String, PromptError> {
        let mut c = self.base(ctx);
        c.insert("parent_a", &parent_a.view());
        c.insert("parent_b", &parent_b.view());
        Ok(tidy(&self.tera.render("crossover.md.tera", &c)?))
    }
}

/// Collapses runs of blank lines outside code fences to one, and trims the ends: template
/// conditionals leave gaps that cost tokens and read badly. Code inside fences is left as is.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut fence: Option<String> = None;
    let mut blank_run = 0;
    for line in text.trim().lines() {
        let t = line.trim_start();
        let marker: String = t.chars().take_while(|c| *c == '`' || *c == '~').collect();
        if marker.len() >= 3 {
            match &fence {
                None => fence = Some(marker),
                Some(open) if t.trim_end() == open.as_str() => fence = None,
                Some(_) => {}
            }
        }
        if fence.is_none() && line.trim().is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The last `max_lines` lines of a log, at most `max_chars` characters, with a marker when cut.
/// Compile logs and verifier reports can be long; their end names the error.
pub fn tail_lines(text: &str, max_lines: usize, max_chars: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    let mut out = lines[start..].join("\n");
    let mut cut = start > 0;
    let n = out.chars().count();
    if n > max_chars {
        out = out.chars().skip(n - max_chars).collect();
        cut = true;
    }
    if cut {
        format!("[... earlier lines omitted ...]\n{out}")
    } else {
        out
    }
}
