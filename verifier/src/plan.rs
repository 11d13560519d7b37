//! Launch plans: the declarative host side of every kernel (reference or candidate). The harness
//! allocates, launches and times; the plan only says what to launch, with which geometry and
//! arguments. Format documented in `tasks/README.md`.

use crate::diag::{self, LoadError, Reporter};
use crate::dtype::DType;
use crate::expr::Expr;
use crate::task::{Role, Shape, Task};
use crate::toml_reader::{is_identifier, suggestion, Span, Table};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub scratch: Vec<Scratch>,
    pub prepare: Vec<Launch>,
    pub launch: Vec<Launch>,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scratch {
    pub name: String,
    pub dtype: DType,
    /// Length in elements.
    pub len: Expr,
    pub persistent: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Launch {
    /// As written: a function name or a template instantiation such as `gemm<128, 64>`.
    pub kernel: String,
    pub grid: Vec<Expr>,
    pub block: Vec<Expr>,
    pub shared_bytes: Expr,
    pub args: Vec<Arg>,
    pub when: Option<Expr>,
    pub cluster: Option<Vec<Expr>>,
    pub cooperative: bool,
}

impl Launch {
    /// The name to look for among the source's `__global__` functions.
    pub fn base_name(&self) -> &str {
        base_name(&self.kernel)
    }
}

pub fn base_name(kernel: &str) -> &str {
    kernel.split('<').next().unwrap_or(kernel).trim()
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Arg {
    /// A device pointer to an input, output or scratch buffer.
    Buffer(String),
    I32(Expr),
    I64(Expr),
    U32(Expr),
    U64(Expr),
    F32(f64),
    F64(f64),
}

/// A launch with every expression evaluated for one shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedLaunch {
    pub kernel: String,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    pub args: Vec<ResolvedArg>,
    pub cluster: Option<[u32; 3]>,
    pub cooperative: bool,
}

impl ResolvedLaunch {
    pub fn threads_per_block(&self) -> u64 {
        self.block.iter().map(|&b| b as u64).product()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ResolvedArg {
    Buffer(String),
    I32(i32),
    I64(i64),
    U32(u32),
    U64(u64),
    F32(f32),
    F64(f64),
}

/// CUDA's architectural limits that hold on every supported GPU; device-specific limits
/// (shared memory, registers) are checked by the runtime against the device.
pub const MAX_THREADS_PER_BLOCK: u64 = 1024;
pub const MAX_BLOCK_DIM: [i64; 3] = [1024, 1024, 64];
pub const MAX_GRID_DIM: [i64; 3] = [i32::MAX as i64, 65535, 65535];

const SCALAR_TYPES: &[&str] = &["i32", "i64", "u32", "u64", "f32", "f64"];

impl Plan {
    pub fn load(path: &Path, task: &Task, kernels: &BTreeSet<String>) -> Result<Plan, LoadError> {
        let text = diag::read_file(path)?;
        Plan::parse(path, &text, task, kernels)
    }

    /// Parses and validates a plan against its task and the `__global__` functions the source
    /// defines (see [`crate::source::kernel_names`]).
    pub fn parse(
        path: &Path,
        text: &str,
        task: &Task,
        kernels: &BTreeSet<String>,
    ) -> Result<Plan, LoadError> {
        let doc = diag::parse_toml(path, text)?;
        let mut rep = Reporter::new(path, text);
        let root = Table::root(doc.as_table());
        root.deny_unknown(&mut rep, &["scratch", "prepare", "launch"]);

        let params: Vec<&str> = task.param_names();
        let known = |n: &str| params.contains(&n);
        let known_list = if params.is_empty() {
            "(the task has no params)".to_string()
        } else {
            params.join(", ")
        };

        let mut scratch: Vec<Scratch> = Vec::new();
        // Where each accepted scratch buffer and launch was written, so a problem found only
        // when a shape is resolved still points at its line and key.
        let mut scratch_at: Vec<[(Span, String); 2]> = Vec::new();
        for t in root.tables(&mut rep, "scratch") {
            t.deny_unknown(&mut rep, &["name", "dtype", "len", "persistent"]);
            let name = t.str(&mut rep, "name", true, "the buffer's name");
            if let Some((n, span)) = &name {
                let clash = task.tensors().any(|x| &x.name == n)
                    || scratch.iter().any(|s| &s.name == n)
                    || known(n);
                if !is_identifier(n) {
                    rep.error(
                        span.clone(),
                        t.key_path("name"),
                        format!("`{n}` is not an identifier"),
                    );
                } else if clash {
                    rep.error(
                        span.clone(),
                        t.key_path("name"),
                        format!("`{n}` is already the name of a task tensor, parameter or scratch buffer"),
                    );
                }
            }
            let dtype = t
                .str(&mut rep, "dtype", true, "the element type")
                .and_then(|(d, span)| {
                    d.parse::<DType>()
                        .map_err(|e| rep.error(span, t.key_path("dtype"), e.to_string()))
                        .ok()
                });
            let len = t.expr(&mut rep, "len", true, &known, &known_list);
            let persistent = t.bool(&mut rep, "persistent").unwrap_or(false);
            if let (Some((name, _)), Some(dtype), Some(len)) = (name, dtype, len) {
                scratch.push(Scratch {
                    name,
                    dtype,
                    len,
                    persistent,
                });
                scratch_at.push([
                    (t.value_span("len"), t.key_path("len")),
                    (t.value_span("persistent"), t.key_path("persistent")),
                ]);
            }
        }

        let buffers = BufferNames {
            task,
            scratch: &scratch,
        };
        let mut prepare = Vec::new();
        let mut prepare_at: Vec<(Span, String)> = Vec::new();
        for t in root.tables(&mut rep, "prepare") {
            if let Some(l) = read_launch(&mut rep, &t, &buffers, kernels, &known, &known_list) {
                for a in &l.args {
                    if let Arg::Buffer(b) = a {
                        if !buffers.prepare_may_touch(b) {
                            rep.error(
                                t.value_span("args"),
                                t.key_path("args"),
                                format!(
                                    "a [[prepare]] launch may use only weight-role inputs and persistent scratch; `{b}` is neither"
                                ),
                            );
                        }
                    }
                }
                prepare.push(l);
                prepare_at.push((t.span.clone(), t.path.clone()));
            }
        }
        let mut launch = Vec::new();
        let mut launch_at: Vec<(Span, String)> = Vec::new();
        let launch_tables = root.tables(&mut rep, "launch");
        if launch_tables.is_empty() && !root.has("launch") {
            root.missing(&mut rep, "launch", "at least one [[launch]] table");
        }
        for t in launch_tables {
            if let Some(l) = read_launch(&mut rep, &t, &buffers, kernels, &known, &known_list) {
                launch.push(l);
                launch_at.push((t.span.clone(), t.path.clone()));
            }
        }
        if let Some(i) = scratch.iter().position(|s| s.persistent) {
            if prepare.is_empty() {
                let (span, key) = scratch_at[i][1].clone();
                rep.error(
                    span,
                    key,
                    "persistent scratch is written only by [[prepare]] launches, and this plan has none",
                );
            }
        }

        let plan = Plan {
            scratch,
            prepare,
            launch,
            path: path.to_path_buf(),
        };
        if rep.is_empty() {
            for shape in &task.shapes {
                let at = format!("shape `{}` ({})", shape.name, shape.describe());
                for (launches, locs, what) in [
                    (&plan.launch, &launch_at, "launch"),
                    (&plan.prepare, &prepare_at, "prepare"),
                ] {
                    match resolve_indexed(launches, shape, what) {
                        Err((i, why)) => {
                            let (span, key) = locs[i].clone();
                            rep.error(span, key, format!("{at}: {why}"));
                        }
                        Ok(v) if v.is_empty() && what == "launch" => rep.error(
                            launch_at.first().and_then(|l| l.0.clone()),
                            "launch",
                            format!("{at}: no [[launch]] applies (every `when` is false)"),
                        ),
                        Ok(_) => {}
                    }
                }
                for (s, loc) in plan.scratch.iter().zip(&scratch_at) {
                    let (span, key) = loc[0].clone();
                    match s.len.eval(shape) {
                        Err(e) => rep.error(span, key, format!("{at}: {e}")),
                        Ok(v) if v < 0 => {
                            rep.error(span, key, format!("{at}: len is negative ({v})"))
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
        if rep.is_empty() {
            Ok(plan)
        } else {
            Err(LoadError::Invalid {
                diagnostics: rep.diagnostics,
            })
        }
    }

    /// The launches that run every call for this shape, with their geometry and arguments.
    pub fn resolve(&self, shape: &Shape) -> Result<Vec<ResolvedLaunch>, String> {
        let out = resolve_all(&self.launch, shape, "launch")?;
        if out.is_empty() {
            return Err("no [[launch]] applies (every `when` is false)".to_string());
        }
        self.scratch_lengths(shape)?;
        Ok(out)
    }

    pub fn resolve_prepare(&self, shape: &Shape) -> Result<Vec<ResolvedLaunch>, String> {
        resolve_all(&self.prepare, shape, "prepare")
    }

    /// Scratch lengths in elements, in declaration order.
    pub fn scratch_lengths(&self, shape: &Shape) -> Result<Vec<u64>, String> {
        self.scratch
            .iter()
            .map(|s| {
                let v = s
                    .len
                    .eval(shape)
                    .map_err(|e| format!("scratch `{}` len: {e}", s.name))?;
                u64::try_from(v).map_err(|_| format!("scratch `{}` len is negative ({v})", s.name))
            })
            .collect()
    }

    /// Kernel names as written in the plan (for NVRTC name expressions), deduplicated.
    pub fn kernel_names(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.prepare
            .iter()
            .chain(self.launch.iter())
            .filter(|l| seen.insert(l.kernel.clone()))
            .map(|l| l.kernel.clone())
            .collect()
    }
}

fn resolve_all(
    launches: &[Launch],
    shape: &Shape,
    what: &str,
) -> Result<Vec<ResolvedLaunch>, String> {
    resolve_indexed(launches, shape, what).map_err(|(_, m)| m)
}

/// Like [`resolve_all`], also saying which launch failed.
fn resolve_indexed(
    launches: &[Launch],
    shape: &Shape,
    what: &str,
) -> Result<Vec<ResolvedLaunch>, (usize, String)> {
    let mut out = Vec::new();
    for (i, l) in launches.iter().enumerate() {
        let ctx = |m: String| (i, format!("{what}[{i}] (`{}`): {m}", l.kernel));
        if let Some(w) = &l.when {
            if !w.eval_bool(shape).map_err(|e| ctx(format!("when: {e}")))? {
                continue;
            }
        }
        out.push(resolve_launch(l, shape).map_err(ctx)?);
    }
    Ok(out)
}

fn dims(exprs: &[Expr], shape: &Shape, what: &str, max: [i64; 3]) -> Result<[u32; 3], String> {
    let mut d = [1u32; 3];
    for (i, e) in exprs.iter().enumerate() {
        let v = e.eval(shape).map_err(|err| format!("{what}[{i}]: {err}"))?;
        if v < 1 {
            return Err(format!(
                "{what}[{i}] = {v} (`{e}`); every dimension must be at least 1"
            ));
        }
        if v > max[i] {
            return Err(format!(
                "{what}[{i}] = {v} (`{e}`) exceeds CUDA's limit of {}",
                max[i]
            ));
        }
        d[i] = v as u32;
    }
    Ok(d)
}

fn resolve_launch(l: &Launch, shape: &Shape) -> Result<ResolvedLaunch, String> {
    let grid = dims(&l.grid, shape, "grid", MAX_GRID_DIM)?;
    let block = dims(&l.block, shape, "block", MAX_BLOCK_DIM)?;
    let threads: u64 = block.iter().map(|&b| b as u64).product();
    if threads > MAX_THREADS_PER_BLOCK {
        return Err(format!(
            "block has {threads} threads; CUDA allows at most {MAX_THREADS_PER_BLOCK}"
        ));
    }
    let smem = l
        .shared_bytes
        .eval(shape)
        .map_err(|e| format!("shared_bytes: {e}"))?;
    let shared_bytes =
        u32::try_from(smem).map_err(|_| format!("shared_bytes = {smem} is out of range"))?;
    let cluster = match &l.cluster {
        Some(c) => Some(dims(c, shape, "cluster", [8, 8, 8])?),
        None => None,
    };
    let mut args = Vec::new();
    for (i, a) in l.args.iter().enumerate() {
        let int = |e: &Expr| e.eval(shape).map_err(|err| format!("args[{i}]: {err}"));
        let range = |v: i64, ty: &str| format!("args[{i}] = {v} does not fit {ty}");
        args.push(match a {
            Arg::Buffer(b) => ResolvedArg::Buffer(b.clone()),
            Arg::I32(e) => {
                let v = int(e)?;
                ResolvedArg::I32(
                    i32::try_from(v).map_err(|_| range(v, "int (i32); pass it as \"i64:...\""))?,
                )
            }
            Arg::I64(e) => ResolvedArg::I64(int(e)?),
            Arg::U32(e) => {
                let v = int(e)?;
                ResolvedArg::U32(u32::try_from(v).map_err(|_| range(v, "u32"))?)
            }
            Arg::U64(e) => {
                let v = int(e)?;
                ResolvedArg::U64(u64::try_from(v).map_err(|_| range(v, "u64"))?)
            }
            Arg::F32(v) => ResolvedArg::F32(*v as f32),
            Arg::F64(v) => ResolvedArg::F64(*v),
        });
    }
    Ok(ResolvedLaunch {
        kernel: l.kernel.clone(),
        grid,
        block,
        shared_bytes,
        args,
        cluster,
        cooperative: l.cooperative,
    })
}

struct BufferNames<'a> {
    task: &'a Task,
    scratch: &'a [Scratch],
}

impl BufferNames<'_> {
    fn contains(&self, n: &str) -> bool {
        self.task.tensors().any(|t| t.name == n) || self.scratch.iter().any(|s| s.name == n)
    }

    fn list(&self) -> String {
        self.task
            .tensors()
            .map(|t| t.name.as_str())
            .chain(self.scratch.iter().map(|s| s.name.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn prepare_may_touch(&self, n: &str) -> bool {
        self.task
            .inputs
            .iter()
            .any(|t| t.name == n && t.role == Role::Weight)
            || self.scratch.iter().any(|s| s.name == n && s.persistent)
    }
}

const LAUNCH_KEYS: &[&str] = &[
    "kernel",
    "grid",
    "block",
    "shared_bytes",
    "args",
    "when",
    "cluster",
    "cooperative",
];

fn read_launch(
    rep: &mut Reporter,
    t: &Table,
    buffers: &BufferNames,
    kernels: &BTreeSet<String>,
    known: &dyn Fn(&str) -> bool,
    known_list: &str,
) -> Option<Launch> {
    t.deny_unknown(rep, LAUNCH_KEYS);
    let kernel = t.str(rep, "kernel", true, "the __global__ function to launch");
    if let Some((k, span)) = &kernel {
        let base = base_name(k);
        if !kernels.contains(base) {
            let names: Vec<&str> = kernels.iter().map(|s| s.as_str()).collect();
            let defined = if names.is_empty() {
                "the source defines no __global__ function".to_string()
            } else {
                format!("the source defines: {}", names.join(", "))
            };
            rep.error(
                span.clone(),
                t.key_path("kernel"),
                format!(
                    "kernel `{base}` is not defined in the source ({defined}){}",
                    suggestion(base, &names)
                ),
            );
        }
    }
    let grid = t.expr_list(rep, "grid", (1, 3), known, known_list);
    let block = t.expr_list(rep, "block", (1, 3), known, known_list);
    let shared_bytes = if t.has("shared_bytes") {
        t.expr(rep, "shared_bytes", false, known, known_list)
    } else {
        Some(Expr::constant(0))
    };
    let when = t.expr(rep, "when", false, known, known_list);
    let cluster = t.expr_list(rep, "cluster", (0, 3), known, known_list);
    let cooperative = t.bool(rep, "cooperative").unwrap_or(false);
    let mut args = Vec::new();
    let mut args_ok = true;
    if !t.has("args") {
        t.missing(rep, "args", "the kernel's arguments in order (may be [])");
        args_ok = false;
    }
    for (a, span, path) in t.str_list(rep, "args") {
        match parse_arg(&a, buffers, known) {
            Ok(arg) => args.push(arg),
            Err(msg) => {
                args_ok = false;
                let hint = format!(
                    "buffers: {}; params: {known_list}",
                    if buffers.list().is_empty() {
                        "(none)".to_string()
                    } else {
                        buffers.list()
                    }
                );
                rep.error(span, path, format!("{msg} ({hint})"));
            }
        }
    }
    if !args_ok {
        return None;
    }
    Some(Launch {
        kernel: kernel?.0,
        grid: grid?,
        block: block?,
        shared_bytes: shared_bytes?,
        args,
        when,
        cluster,
        cooperative,
    })
}

fn parse_arg(a: &str, buffers: &BufferNames, known: &dyn Fn(&str) -> bool) -> Result<Arg, String> {
    let a = a.trim();
    if let Some((ty, value)) = a.split_once(':') {
        let ty = ty.trim();
        let value = value.trim();
        let expr = || -> Result<Expr, String> {
            let e = Expr::parse(value).map_err(|e| format!("argument `{a}`: {e}"))?;
            e.check_names(known)
                .map_err(|e| format!("argument `{a}`: {e}"))?;
            Ok(e)
        };
        let float = || -> Result<f64, String> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    format!("argument `{a}`: `{value}` is not a finite floating-point literal")
                })
        };
        return match ty {
            "i32" => Ok(Arg::I32(expr()?)),
            "i64" => Ok(Arg::I64(expr()?)),
            "u32" => Ok(Arg::U32(expr()?)),
            "u64" => Ok(Arg::U64(expr()?)),
            "f32" => Ok(Arg::F32(float()?)),
            "f64" => Ok(Arg::F64(float()?)),
            _ => Err(format!(
                "argument `{a}`: unknown scalar type `{ty}` (known: {}){}",
                SCALAR_TYPES.join(", "),
                suggestion(ty, SCALAR_TYPES)
            )),
        };
    }
    if is_identifier(a) {
        if buffers.contains(a) {
            return Ok(Arg::Buffer(a.to_string()));
        }
        if !known(a) {
            return Err(format!("argument `{a}` names no buffer and no parameter"));
        }
    }
    let e = Expr::parse(a).map_err(|e| format!("argument `{a}`: {e}"))?;
    e.check_names(known)
        .map_err(|e| format!("argument `{a}`: {e}"))?;
    Ok(Arg::I32(e))
}
