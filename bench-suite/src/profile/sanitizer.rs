//! compute-sanitizer: the command line of each tool and a parser of its reports.
//!
//! Every tool line starts with `=========` (the program's own output does not and is skipped).
//! A report is a head line saying what happened, followed by indented detail lines, e.g.
//!
//! ```text
//! ========= Invalid __global__ write of size 4 bytes
//! =========     at scale_kernel(float*, int, float)+0x50 in scale.cu:14
//! =========     by thread (287,0,0) in block (3906,0,0)
//! =========     Address 0x7f2a1c003c9c is out of bounds
//! ```
//!
//! racecheck prints hazards (`Error: Potential WAW hazard detected at __shared__ 0x0 in block
//! (0,0,0) :` followed by the two threads' accesses) and analysis lines (`Error: Race reported
//! between Write access at k()+0xf0 in a.cu:40` / `and Read access at ... [4 hazards]`); initcheck
//! `Uninitialized __global__ memory read of size 4 bytes`; synccheck `Barrier error detected.
//! Divergent thread(s) in warp`. The tool closes with `ERROR SUMMARY: N errors` (racecheck:
//! `RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)`). Source files and lines
//! appear when the kernel was compiled with `-lineinfo`.

use serde::Serialize;
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    Memcheck,
    Racecheck,
    Initcheck,
    Synccheck,
}

impl Tool {
    pub const ALL: [Tool; 4] = [
        Tool::Memcheck,
        Tool::Racecheck,
        Tool::Initcheck,
        Tool::Synccheck,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Memcheck => "memcheck",
            Tool::Racecheck => "racecheck",
            Tool::Initcheck => "initcheck",
            Tool::Synccheck => "synccheck",
        }
    }

    /// The sanitizer's arguments, before the checked program's command line. `kernel` limits
    /// checking to kernels whose mangled name contains it (`--kernel-name kns=...`).
    pub fn args(self, kernel: Option<&str>) -> Vec<String> {
        let mut a = vec![
            "--tool".to_string(),
            self.name().to_string(),
            "--print-limit".into(),
            "100".into(),
            "--show-backtrace".into(),
            "device".into(),
        ];
        if self == Tool::Racecheck {
            // Both the per-hazard reports (threads, addresses) and the per-source-line analysis.
            a.extend(["--racecheck-report".into(), "all".into()]);
        }
        if let Some(k) = kernel {
            a.extend(["--kernel-name".into(), format!("kns={k}")]);
        }
        a
    }

    pub fn command(self, sanitizer: &Path, kernel: Option<&str>, program: &[OsString]) -> Command {
        let mut c = Command::new(sanitizer);
        c.args(self.args(kernel)).args(program);
        c
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// memcheck: out-of-bounds or misaligned access (also racecheck's cluster entry/exit).
    InvalidAccess,
    /// initcheck: read of memory never written.
    UninitializedRead,
    /// initcheck `--track-unused-memory`.
    UnusedMemory,
    /// racecheck: one byte-accurate hazard between two threads.
    Hazard,
    /// racecheck analysis: a race between source locations.
    Race,
    /// synccheck: misuse of `__syncthreads` / `__syncwarp` / wgmma sequencing.
    BarrierError,
    /// memcheck: device-side malloc/free misuse.
    MallocFree,
    /// memcheck `--leak-check full`.
    Leak,
    /// A CUDA API call that returned an error.
    ApiError,
    /// An imprecise error the hardware reported (illegal address, illegal instruction, ...).
    HardwareException,
}

/// `file:line` from `-lineinfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceLine {
    pub file: String,
    pub line: u32,
}

/// One access of a racecheck hazard or race.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    pub kind: String,
    pub thread: Option<[u32; 3]>,
    pub function: Option<String>,
    pub source: Option<SourceLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// racecheck's ERROR / WARNING / INFO.
    pub severity: Option<String>,
    /// The head line, as the tool printed it.
    pub message: String,
    /// `__global__`, `__shared__`, `__local__`.
    pub space: Option<String>,
    /// read, write, atomic (racecheck: the hazard type, WAW / WAR / RAW).
    pub access: Option<String>,
    pub size_bytes: Option<u64>,
    pub kernel: Option<String>,
    pub source: Option<SourceLine>,
    pub thread: Option<[u32; 3]>,
    pub block: Option<[u32; 3]>,
    pub address: Option<u64>,
    /// What the address line says about it: "is out of bounds", "is misaligned", ...
    pub address_note: Option<String>,
    pub accesses: Vec<Access>,
    pub hazards: Option<u64>,
    /// Other detail lines (values, device frames).
    pub detail: Vec<String>,
}

impl Finding {
    fn new(kind: FindingKind, message: &str) -> Finding {
        Finding {
            kind,
            severity: None,
            message: message.to_string(),
            space: None,
            access: None,
            size_bytes: None,
            kernel: None,
            source: None,
            thread: None,
            block: None,
            address: None,
            address_note: None,
            accesses: Vec::new(),
            hazards: None,
            detail: Vec::new(),
        }
    }

    /// One line for the Judge / the verdict.
    pub fn describe(&self) -> String {
        let mut s = self.message.trim_end_matches([':', ' ']).to_string();
        if let Some(k) = &self.kernel {
            s += &format!(" in `{k}`");
        }
        if let Some(src) = &self.source {
            s += &format!(" at {}:{}", src.file, src.line);
        }
        if let (Some(t), Some(b)) = (self.thread, self.block) {
            s += &format!(
                ", thread ({},{},{}) of block ({},{},{})",
                t[0], t[1], t[2], b[0], b[1], b[2]
            );
        } else if let Some(b) = self.block {
            s += &format!(", block ({},{},{})", b[0], b[1], b[2]);
        }
        if let Some(a) = self.address {
            s += &format!(", address {a:#x}");
            if let Some(n) = &self.address_note {
                s += &format!(" {n}");
            }
        }
        for a in &self.accesses {
            s += &format!("; {} access", a.kind);
            if let Some(t) = a.thread {
                s += &format!(" by thread ({},{},{})", t[0], t[1], t[2]);
            }
            if let Some(src) = &a.source {
                s += &format!(" at {}:{}", src.file, src.line);
            }
        }
        if let Some(h) = self.hazards {
            s += &format!(" [{h} hazards]");
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SanitizerReport {
    pub findings: Vec<Finding>,
    /// `ERROR SUMMARY: N errors`.
    pub error_summary: Option<u64>,
    /// `RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)`.
    pub racecheck_summary: Option<[u64; 3]>,
    /// Tool lines that are neither findings nor summaries (start-up errors, notes).
    pub notes: Vec<String>,
    /// Whether any line came from the sanitizer at all.
    pub saw_tool_output: bool,
}

impl SanitizerReport {
    /// Clean: the tool ran, printed its summary, and found nothing.
    pub fn is_clean(&self) -> bool {
        self.saw_tool_output
            && self.findings.is_empty()
            && (self.error_summary == Some(0) || self.racecheck_summary.is_some_and(|s| s[0] == 0))
    }

    /// `3 findings: 2 invalid_access, 1 leak (ERROR SUMMARY: 3 errors)`, or why nothing is known.
    pub fn summary(&self) -> String {
        if !self.saw_tool_output {
            return "no compute-sanitizer output (did the tool run?)".into();
        }
        let mut counts: Vec<(FindingKind, usize)> = Vec::new();
        for f in &self.findings {
            match counts.iter_mut().find(|(k, _)| *k == f.kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((f.kind, 1)),
            }
        }
        let mut s = if counts.is_empty() {
            "no findings".to_string()
        } else {
            format!(
                "{} finding(s): {}",
                self.findings.len(),
                counts
                    .iter()
                    .map(|(k, n)| format!(
                        "{n} {}",
                        serde_json::to_value(k)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if let Some(n) = self.error_summary {
            s += &format!(" (ERROR SUMMARY: {n} errors)");
        }
        if let Some([h, e, w]) = self.racecheck_summary {
            s += &format!(" (RACECHECK SUMMARY: {h} hazards, {e} errors, {w} warnings)");
        }
        if self.error_summary.is_none() && self.racecheck_summary.is_none() {
            s += " (no summary line: the output may be truncated)";
        }
        s
    }
}

/// Strips `=========` and the indentation; `None` for a line the tool did not print.
fn tool_line(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix("=========")?;
    Some(rest.trim())
}

fn triple(s: &str) -> Option<[u32; 3]> {
    let inner = s.trim().strip_prefix('(')?.split(')').next()?;
    let v: Vec<u32> = inner
        .split(',')
        .map(|x| x.trim().parse().ok())
        .collect::<Option<_>>()?;
    (v.len() == 3).then(|| [v[0], v[1], v[2]])
}

fn hex(s: &str) -> Option<u64> {
    let t = s.trim().trim_end_matches([',', ':']);
    u64::from_str_radix(t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"))?, 16).ok()
}

fn number_before(s: &str, word: &str) -> Option<u64> {
    let idx = s.find(word)?;
    s[..idx]
        .split_whitespace()
        .last()?
        .trim_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

fn source_line(s: &str) -> Option<SourceLine> {
    let (file, line) = s.trim().rsplit_once(':')?;
    let line: u32 = line.trim().parse().ok()?;
    (!file.is_empty()).then(|| SourceLine {
        file: file.to_string(),
        line,
    })
}

/// Splits an `at ...` location into (function, source line). Formats seen in NVIDIA's docs:
/// `k(int*, int)+0x50 in scale.cu:14`, `k():0x160 in demo.cu:6`, `0x150 in k(int*, int)`
/// and the older `0x3c8 in dir/file.cu:42:k(int*,int*)`.
fn location(s: &str) -> (Option<String>, Option<SourceLine>) {
    let s = s.trim();
    let strip_offset = |f: &str| -> String {
        let f = f.trim();
        let cut = f
            .rfind("+0x")
            .or_else(|| f.rfind(":0x"))
            .filter(|i| hex(&f[i + 1..]).is_some());
        cut.map_or(f, |i| &f[..i]).trim().to_string()
    };
    if let Some(rest) = s
        .strip_prefix("0x")
        .and_then(|r| r.split_once(" in "))
        .map(|x| x.1)
    {
        // `0x3c8 in file.cu:42:kernel(...)` or `0x150 in kernel(...)`.
        let parts: Vec<&str> = rest.splitn(3, ':').collect();
        if parts.len() == 3 {
            if let Ok(line) = parts[1].parse::<u32>() {
                return (
                    Some(parts[2].trim().to_string()),
                    Some(SourceLine {
                        file: parts[0].to_string(),
                        line,
                    }),
                );
            }
        }
        return (Some(rest.trim().to_string()), None);
    }
    match s.rsplit_once(" in ") {
        Some((func, src)) => match source_line(src) {
            Some(sl) => (Some(strip_offset(func)), Some(sl)),
            None => (Some(strip_offset(s)), None),
        },
        None => (Some(strip_offset(s)), None),
    }
}

const HARDWARE: &[&str] = &[
    "Illegal Address",
    "Out-of-range Address",
    "Out-of-range Shared or Local Address",
    "Misaligned Address",
    "Misaligned Shared or Local Address",
    "Illegal Instruction",
    "Invalid PC",
    "Hardware Stack Overflow",
    "Illegal Instruction Parameter",
    "Invalid Address Space",
];

fn head(line: &str) -> Option<Finding> {
    let (severity, body) = match line.split_once(": ") {
        Some((sev, body))
            if matches!(
                sev.to_ascii_uppercase().as_str(),
                "ERROR" | "WARNING" | "INFO"
            ) =>
        {
            (Some(sev.to_ascii_uppercase()), body)
        }
        _ => (None, line),
    };
    let mut f = if let Some(rest) = body
        .strip_prefix("Potential ")
        .filter(|r| r.contains(" hazard detected at "))
    {
        let mut f = Finding::new(FindingKind::Hazard, line);
        f.access = rest.split_whitespace().next().map(str::to_string);
        let at = rest.split(" hazard detected at ").nth(1).unwrap_or("");
        let mut w = at.split_whitespace();
        f.space = w.next().map(str::to_string);
        f.address = w.next().and_then(hex);
        f.block = at.split(" in block ").nth(1).and_then(triple);
        f
    } else if let Some(rest) = body.strip_prefix("Race reported between ") {
        let mut f = Finding::new(FindingKind::Race, line);
        let first = race_access(rest);
        f.kernel.clone_from(&first.function);
        f.source.clone_from(&first.source);
        f.accesses.push(first);
        f.hazards = hazards(rest);
        f
    } else if body.starts_with("Invalid ") || body.starts_with("Potential invalid ") {
        if !body.contains(" of size ") {
            return None;
        }
        let mut f = Finding::new(FindingKind::InvalidAccess, line);
        access_head(
            &mut f,
            body.trim_start_matches("Potential ")
                .trim_start_matches("Invalid ")
                .trim_start_matches("invalid "),
        );
        f
    } else if let Some(rest) = body.strip_prefix("Uninitialized ") {
        let mut f = Finding::new(FindingKind::UninitializedRead, line);
        access_head(&mut f, &rest.replacen(" memory", "", 1));
        f
    } else if body.starts_with("Unused __") {
        let mut f = Finding::new(FindingKind::UnusedMemory, line);
        f.space = body.split_whitespace().nth(1).map(str::to_string);
        f.size_bytes = number_before(body, "bytes");
        f.block = body.split(" in block ").nth(1).and_then(triple);
        f
    } else if body.starts_with("Barrier error detected")
        || body.starts_with("Warpgroup MMA sequence error detected")
    {
        Finding::new(FindingKind::BarrierError, line)
    } else if body.starts_with("Malloc/Free error encountered") {
        Finding::new(FindingKind::MallocFree, line)
    } else if let Some(rest) = body.strip_prefix("Leaked ") {
        let mut f = Finding::new(FindingKind::Leak, line);
        f.size_bytes = rest.split_whitespace().next().and_then(|n| n.parse().ok());
        f.address = rest
            .split(" at ")
            .nth(1)
            .and_then(|a| a.split_whitespace().next())
            .and_then(hex);
        f
    } else if body.starts_with("Program hit ") && body.contains("on CUDA API call to") {
        Finding::new(FindingKind::ApiError, line)
    } else if HARDWARE.iter().any(|h| {
        body.trim_start_matches("Warp ")
            .trim_start_matches("Lane ")
            .starts_with(h)
    }) {
        Finding::new(FindingKind::HardwareException, line)
    } else {
        return None;
    };
    f.severity = severity;
    Some(f)
}

/// `__global__ write of size 4 bytes` (memcheck) or `__shared__ read of size 4 bytes` (initcheck).
fn access_head(f: &mut Finding, s: &str) {
    let mut w = s.split_whitespace();
    let first = w.next();
    if first.is_some_and(|x| x.starts_with("__")) {
        f.space = first.map(str::to_string);
        f.access = w.next().map(str::to_string);
    } else {
        f.access = first.map(str::to_string);
    }
    f.size_bytes = s
        .split(" of size ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok());
}

fn hazards(s: &str) -> Option<u64> {
    let inner = s.rsplit_once('[')?.1;
    number_before(inner, "hazard")
}

/// `Write access at k()+0xf0 in a.cu:40 [4 hazards]`.
fn race_access(s: &str) -> Access {
    let s = s.trim().trim_start_matches("and ").trim();
    let kind = s.split_whitespace().next().unwrap_or("").to_string();
    let loc = s
        .split_once(" access at ")
        .map(|x| x.1)
        .unwrap_or("")
        .split(" [")
        .next()
        .unwrap_or("");
    let (function, source) = location(loc);
    Access {
        kind,
        thread: None,
        function,
        source,
    }
}

/// Parses everything the sanitizer and the checked program printed.
pub fn parse(text: &str) -> SanitizerReport {
    let mut report = SanitizerReport {
        findings: Vec::new(),
        error_summary: None,
        racecheck_summary: None,
        notes: Vec::new(),
        saw_tool_output: false,
    };
    let mut current: Option<Finding> = None;
    for raw in text.lines() {
        let Some(line) = tool_line(raw) else { continue };
        report.saw_tool_output = true;
        if line.is_empty() || line == "COMPUTE-SANITIZER" {
            report.findings.extend(current.take());
            continue;
        }
        if let Some(rest) = line.strip_prefix("ERROR SUMMARY:") {
            report.findings.extend(current.take());
            report.error_summary = number_before(rest, "error");
            continue;
        }
        if let Some(rest) = line.strip_prefix("RACECHECK SUMMARY:") {
            report.findings.extend(current.take());
            let n = number_before(rest, "hazard");
            let e = number_before(rest, "error");
            let w = number_before(rest, "warning");
            if let (Some(n), Some(e), Some(w)) = (n, e, w) {
                report.racecheck_summary = Some([n, e, w]);
            } else {
                report.notes.push(line.to_string());
            }
            continue;
        }
        if let Some(f) = head(line) {
            report.findings.extend(current.take());
            current = Some(f);
            continue;
        }
        let Some(f) = current.as_mut() else {
            report.notes.push(line.to_string());
            continue;
        };
        detail(f, line);
    }
    report.findings.extend(current.take());
    report
}

fn detail(f: &mut Finding, line: &str) {
    if let Some(rest) = line.strip_prefix("at ") {
        if f.kernel.is_none() {
            let (func, src) = location(rest);
            f.kernel = func;
            f.source = src;
            return;
        }
    }
    if let Some(rest) = line.strip_prefix("by thread ") {
        f.thread = triple(rest);
        f.block = rest.split(" in block ").nth(1).and_then(triple).or(f.block);
        return;
    }
    if let Some(rest) = line.strip_prefix("Address ") {
        let mut w = rest.splitn(2, ' ');
        f.address = w.next().and_then(hex);
        f.address_note = w
            .next()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        return;
    }
    for kind in ["Read", "Write"] {
        if let Some(rest) = line.strip_prefix(&format!("{kind} Thread ")) {
            let loc = rest.split_once(" at ").map(|x| x.1).unwrap_or("");
            let (function, source) = location(loc);
            if f.kernel.is_none() {
                f.kernel.clone_from(&function);
                f.source.clone_from(&source);
            }
            f.accesses.push(Access {
                kind: kind.to_string(),
                thread: triple(rest),
                function,
                source,
            });
            return;
        }
    }
    if line.starts_with("and ") && line.contains(" access at ") {
        f.accesses.push(race_access(line));
        f.hazards = hazards(line).or(f.hazards);
        return;
    }
    // Host backtraces say where the launch was made, not where the kernel went wrong.
    if line.starts_with("Saved host backtrace")
        || line.starts_with("Host Frame")
        || line.starts_with("in ")
    {
        return;
    }
    f.detail.push(line.to_string());
}
