//! The task format (`task.toml`), validated. The schema is documented in `tasks/README.md`;
//! keep the two in step.

use crate::diag::{self, LoadError, Reporter};
use crate::dtype::DType;
use crate::expr::{Env, Expr};
use crate::toml_reader::{is_identifier, suggestion, Span, Table};
use indexmap::IndexMap;
use serde::Serialize;
use std::path::{Path, PathBuf};

mod checks;
pub use checks::{BatchInvariant, Checks, Sensitivity};

#[derive(Debug, Clone, Serialize)]
pub struct Task {
    pub id: String,
    pub title: String,
    pub category: String,
    pub source: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub params: Vec<Param>,
    pub constraints: Vec<Expr>,
    pub shapes: Vec<Shape>,
    pub inputs: Vec<TensorDecl>,
    pub outputs: Vec<TensorDecl>,
    pub check: Check,
    pub roofline: Roofline,
    pub compile: CompilePolicy,
    /// Optional properties beyond agreeing with the oracle (`[checks]`).
    pub checks: Checks,
    /// The `task.toml` this was read from.
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Param {
    pub name: String,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub multiple_of: Option<i64>,
    pub values: Option<Vec<i64>>,
    pub description: Option<String>,
}

impl Param {
    /// Why `v` is not a legal value of this parameter, if it is not.
    pub fn violation(&self, v: i64) -> Option<String> {
        if let Some(min) = self.min.filter(|m| v < *m) {
            return Some(format!("{} = {v} is below its minimum {min}", self.name));
        }
        if let Some(max) = self.max.filter(|m| v > *m) {
            return Some(format!("{} = {v} is above its maximum {max}", self.name));
        }
        if let Some(m) = self.multiple_of.filter(|m| v % *m != 0) {
            return Some(format!("{} = {v} is not a multiple of {m}", self.name));
        }
        if let Some(vals) = self.values.as_ref().filter(|vals| !vals.contains(&v)) {
            return Some(format!("{} = {v} is not one of {vals:?}", self.name));
        }
        None
    }
}

/// A named assignment of every parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shape {
    pub name: String,
    pub values: IndexMap<String, i64>,
}

/// `M=4096 N=28672`: parameter values as the shape lists them.
pub fn describe_values(values: &IndexMap<String, i64>) -> String {
    values
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Env for Shape {
    fn lookup(&self, name: &str) -> Option<i64> {
        self.values.get(name).copied()
    }
}

impl Shape {
    /// `B=4 K=8192 N=22016`, for tables and logs.
    pub fn describe(&self) -> String {
        describe_values(&self.values)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Activation,
    Weight,
}

#[derive(Debug, Clone, Serialize)]
pub struct TensorDecl {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Expr>,
    pub description: Option<String>,
    /// Inputs only.
    pub init: Option<Init>,
    pub role: Role,
    /// Outputs only: overrides the task's `[check]`.
    pub check: Option<Check>,
}

impl TensorDecl {
    /// Element count for a shape (checked: the product may not overflow).
    pub fn numel(&self, env: &dyn Env) -> Result<u64, String> {
        let mut n: u64 = 1;
        for (i, d) in self.shape.iter().enumerate() {
            let v = d.eval(env).map_err(|e| format!("dimension {i}: {e}"))?;
            let v =
                u64::try_from(v).map_err(|_| format!("dimension {i} (`{d}`) is negative: {v}"))?;
            n = n
                .checked_mul(v)
                .ok_or_else(|| format!("element count of `{}` overflows", self.name))?;
        }
        Ok(n)
    }

    /// `bf16[B, K]`, for tables and prompts.
    pub fn signature(&self) -> String {
        let dims: Vec<&str> = self.shape.iter().map(|e| e.text()).collect();
        format!("{}[{}]", self.dtype, dims.join(", "))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Init {
    pub kind: InitKind,
    /// Whether the verifier also checks this input under a heavy-tailed / rescaled variant.
    pub stress: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "dist", rename_all = "snake_case")]
pub enum InitKind {
    Normal {
        mean: f64,
        std: f64,
    },
    Uniform {
        low: f64,
        high: f64,
    },
    /// Bounds are expressions, so a range can follow a parameter (`high = "E"`).
    Randint {
        low: Expr,
        high: Expr,
    },
    Constant {
        value: f64,
    },
    StudentT {
        df: f64,
        scale: f64,
    },
    Generator(Generator),
}

/// How many bits a `sparse_bitmap` sets.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Density {
    /// The probability of each bit, the same at every shape (`density = 0.2`).
    Fixed(f64),
    /// Percent of bits set, an expression of the shape's params, so that shapes can model
    /// different sparsities (`density_percent = "DPCT"`); 0 to 100 at every legal shape.
    Percent(Expr),
}

impl Density {
    /// The probability of each bit at `shape`.
    pub fn at(&self, shape: &dyn Env) -> Result<f64, String> {
        match self {
            Density::Fixed(p) => Ok(*p),
            Density::Percent(e) => {
                let v = e.eval(shape).map_err(|e| format!("density_percent: {e}"))?;
                if !(0..=100).contains(&v) {
                    return Err(format!("density_percent `{e}` is {v}, outside 0 to 100"));
                }
                Ok(v as f64 / 100.0)
            }
        }
    }
}

/// Structured inputs that distributions cannot express. The verifier implements each.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "generator", rename_all = "snake_case")]
pub enum Generator {
    Nf4Table,
    DynamicMap8bit {
        signed: bool,
    },
    SortedOffsets {
        total: Expr,
        min_each: i64,
    },
    Permutation,
    SparseBitmap {
        density: Density,
    },
    PackedCodes {
        bits: u32,
    },
    Codebook {
        std: f64,
    },
    TopkDistinct {
        std: f64,
    },
    /// Draft tokens of a speculative tree that the target model agrees with at rate `accept`:
    /// token[.., i] is, with probability `accept`, the argmax of the `logits` row of node i's
    /// parent `parents[i] % i` (smallest index among equal maxima), else another token; node 0
    /// (the root) gets a random token. `logits` and `parents` are inputs declared earlier.
    DraftTokens {
        logits: String,
        parents: String,
        accept: f64,
    },
    /// Activations with systematic outlier features (LLM.int8()): max(1, round(fraction * C))
    /// of the C columns (last dimension), chosen at random, are N(0, outlier_std); the rest are
    /// N(0, std). Under the stress variant the values get Student-t tails and the variant's
    /// rescaling (scaled up, most columns cross an outlier threshold; down, none do).
    OutlierColumns {
        std: f64,
        outlier_std: f64,
        fraction: f64,
    },
    /// A DFloat11 decode table (i32 [65536]): lut[w] = symbol | length << 8 for the canonical
    /// Huffman code of the bf16 exponents of N(0, sigma) weights (sigma = 2^-3 .. 2^-9, the
    /// exponent histogram perturbed per draw, codes at most 16 bits).
    HuffmanLut,
    /// One part of a DFloat11 stream coded with the table `lut`: `bits` (u8 [8*NCH + 4]: `symbols`
    /// exponents drawn with probability 2^-length, MSB-first, cut or zero-padded to NCH chunks of
    /// 8 bytes plus 4 lookahead bytes), `gaps` (u8 [NCH]: where the first code starting in each
    /// chunk begins) or `block_offsets` (i32 [ceil(NCH/512)+1]: the first symbol of each 512-chunk
    /// block, at most `symbols`, the last equal to it), both read off the stream `bits`.
    HuffmanStream {
        part: HuffmanPart,
        lut: String,
        bits: Option<String>,
        symbols: Option<Expr>,
    },
    /// QMoE's sub-1-bit dictionary (i32 [65536, 2]): the 2^16 most probable sequences of 1..14
    /// ternary digit pairs (digit 0 with probability 0.885, 1 and 2 with 0.0575 each), L in bits
    /// 0..3 of both halves, digit d at bits 4+2*(d%14) of half d/14; which of the equally probable
    /// sequences at the cut are taken, and the order of the entries, are drawn per table.
    QmoeDictionary,
    /// One part of a QMoE codeword stream coded with the dictionary `dec` (an earlier
    /// `qmoe_dictionary` input): `codewords` (u16: `rows` rows of `row_len` ternary weights drawn
    /// from QMoE's model, each greedily coded longest match first, its last codeword possibly
    /// running past `row_len`; rows back to back, then random codewords to the end of the tensor)
    /// or `row_offsets` (i32 [rows + 1]: where each row's codewords begin, read off the stream
    /// `codewords` as a decoder would).
    QmoeStream {
        part: QmoePart,
        dec: String,
        row_len: Expr,
        rows: Option<Expr>,
        codewords: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QmoePart {
    Codewords,
    RowOffsets,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HuffmanPart {
    Bits,
    Gaps,
    BlockOffsets,
}

impl Generator {
    /// The inputs this generator reads (declared before the input it fills).
    pub fn reads(&self) -> Vec<&str> {
        match self {
            Generator::DraftTokens {
                logits, parents, ..
            } => vec![logits.as_str(), parents.as_str()],
            Generator::HuffmanStream { lut, bits, .. } => {
                let mut v = vec![lut.as_str()];
                v.extend(bits.as_deref());
                v
            }
            Generator::QmoeStream { dec, codewords, .. } => {
                let mut v = vec![dec.as_str()];
                v.extend(codewords.as_deref());
                v
            }
            _ => Vec::new(),
        }
    }
}

pub const GENERATORS: &[&str] = &[
    "nf4_table",
    "dynamic_map_8bit",
    "sorted_offsets",
    "permutation",
    "sparse_bitmap",
    "packed_codes",
    "codebook",
    "topk_distinct",
    "draft_tokens",
    "outlier_columns",
    "huffman_lut",
    "huffman_stream",
    "qmoe_dictionary",
    "qmoe_stream",
];

pub const DISTS: &[&str] = &["normal", "uniform", "randint", "constant", "student_t"];

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "metric", rename_all = "snake_case")]
pub enum Check {
    /// `max|y - ref| / max|ref| <= tol`: immune to KernelBench's all-zeros hole.
    NormalizedMax {
        tol: f64,
    },
    /// `|y - ref| <= atol + rtol*|ref|` elementwise; at most `max_bad_fraction` of the elements
    /// may miss it (for cards like "codes <= 1e-3 mismatch"). NaN, Inf and unwritten elements
    /// never count as allowed misses.
    AllClose {
        atol: f64,
        rtol: f64,
        #[serde(skip_serializing_if = "is_zero")]
        max_bad_fraction: f64,
    },
    Exact,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Peak {
    Fp64,
    Fp32,
    Tf32Tensor,
    Fp16Tensor,
    Bf16Tensor,
    Fp8Tensor,
    Int8Tensor,
    Int32,
}

pub const PEAKS: &[&str] = &[
    "fp64",
    "fp32",
    "tf32_tensor",
    "fp16_tensor",
    "bf16_tensor",
    "fp8_tensor",
    "int8_tensor",
    "int32",
];

#[derive(Debug, Clone, Serialize)]
pub struct Roofline {
    pub bytes: Expr,
    pub flops: Expr,
    pub peak: Peak,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CompilePolicy {
    pub fast_math: bool,
}

impl Task {
    /// Whether the verifier's stress variants change any input: some float input drawn from a
    /// continuous distribution (the only kind with a stress form, see `inputs::Variant`) opts in.
    pub fn stressable(&self) -> bool {
        self.inputs.iter().any(|d| {
            d.dtype.is_float()
                && d.init.as_ref().is_some_and(|i| {
                    i.stress
                        && matches!(
                            i.kind,
                            InitKind::Normal { .. }
                                | InitKind::Uniform { .. }
                                | InitKind::StudentT { .. }
                        )
                })
        })
    }

    pub fn load(path: &Path) -> Result<Task, LoadError> {
        let text = diag::read_file(path)?;
        Task::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Task, LoadError> {
        let doc = diag::parse_toml(path, text)?;
        let mut rep = Reporter::new(path, text);
        let task = read_task(&mut rep, &Table::root(doc.as_table()), path);
        match task {
            Some(t) if rep.is_empty() => Ok(t),
            _ => Err(LoadError::Invalid {
                diagnostics: rep.diagnostics,
            }),
        }
    }

    pub fn param_names(&self) -> Vec<&str> {
        self.params.iter().map(|p| p.name.as_str()).collect()
    }

    pub fn tensors(&self) -> impl Iterator<Item = &TensorDecl> {
        self.inputs.iter().chain(self.outputs.iter())
    }

    pub fn input(&self, name: &str) -> Option<&TensorDecl> {
        self.inputs.iter().find(|t| t.name == name)
    }

    pub fn shape(&self, name: &str) -> Option<&Shape> {
        self.shapes.iter().find(|s| s.name == name)
    }

    /// Checks a parameter assignment against ranges, constraints and every expression that must
    /// evaluate on it. Used for public shapes here and for held-out shapes by the verifier.
    pub fn check_shape(&self, shape: &Shape) -> Result<(), String> {
        for p in &self.params {
            let v = shape
                .values
                .get(&p.name)
                .ok_or_else(|| format!("no value for parameter `{}`", p.name))?;
            if let Some(why) = p.violation(*v) {
                return Err(why);
            }
        }
        for c in &self.constraints {
            match c.eval_bool(shape) {
                Ok(true) => {}
                Ok(false) => return Err(format!("constraint `{c}` does not hold")),
                Err(e) => return Err(format!("constraint: {e}")),
            }
        }
        for t in self.tensors() {
            t.numel(shape).map_err(|e| format!("`{}`: {e}", t.name))?;
            if let Some(Init {
                kind: InitKind::Randint { low, high },
                ..
            }) = &t.init
            {
                let (l, h) = randint_bounds(low, high, shape)
                    .map_err(|e| format!("`{}` randint: {e}", t.name))?;
                if let Some(why) = randint_misfit(t.dtype, l, h) {
                    return Err(format!("`{}` randint: {why}", t.name));
                }
            }
            if let Some(Init {
                kind: InitKind::Generator(Generator::SortedOffsets { total, .. }),
                ..
            }) = &t.init
            {
                total
                    .eval(shape)
                    .map_err(|e| format!("`{}` generator total: {e}", t.name))?;
            }
            if let Some(Init {
                kind: InitKind::Generator(Generator::SparseBitmap { density }),
                ..
            }) = &t.init
            {
                density
                    .at(shape)
                    .map_err(|e| format!("`{}` sparse_bitmap: {e}", t.name))?;
            }
        }
        for (what, e) in [
            ("bytes", &self.roofline.bytes),
            ("flops", &self.roofline.flops),
        ] {
            let v = e
                .eval(shape)
                .map_err(|err| format!("roofline {what}: {err}"))?;
            if v < 0 {
                return Err(format!("roofline {what} is negative ({v})"));
            }
        }
        Ok(())
    }
}

const TOP_KEYS: &[&str] = &[
    "id",
    "title",
    "category",
    "source",
    "description",
    "tags",
    "params",
    "constraints",
    "shapes",
    "inputs",
    "outputs",
    "check",
    "roofline",
    "compile",
    "checks",
];

fn read_task(rep: &mut Reporter, root: &Table, path: &Path) -> Option<Task> {
    root.deny_unknown(rep, TOP_KEYS);
    let id = root.str(rep, "id", true, "the task id, equal to its directory name");
    let title = root.str(rep, "title", true, "a one-line title");
    let category = root.str(
        rep,
        "category",
        true,
        "the category, equal to the parent directory",
    );
    let source = root.str(rep, "source", false, "").map(|s| s.0);
    let description = root.str(rep, "description", false, "").map(|s| s.0);
    let tags = root
        .str_list(rep, "tags")
        .into_iter()
        .map(|t| t.0)
        .collect();
    if let Some((id, span)) = &id {
        if !is_identifier(id) {
            rep.error(
                span.clone(),
                "id",
                format!("`{id}` is not a valid id (letters, digits, _)"),
            );
        }
    }

    let params = read_params(rep, root);
    let pnames: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
    let known = |n: &str| pnames.iter().any(|p| p == n);
    let known_list = if pnames.is_empty() {
        "(no params declared)".to_string()
    } else {
        pnames.join(", ")
    };

    let mut constraints = Vec::new();
    if root.has("constraints") {
        for (text, span, kpath) in root.str_list(rep, "constraints") {
            match Expr::parse(&text).and_then(|e| e.check_names(known).map(|_| e)) {
                Ok(e) => constraints.push(e),
                Err(e) => rep.error(span, kpath, format!("{e}; known names: {known_list}")),
            }
        }
    }

    let mut names_seen: Vec<String> = Vec::new();
    let inputs = read_tensors(
        rep,
        root,
        "inputs",
        true,
        &known,
        &known_list,
        &mut names_seen,
    );
    let outputs = read_tensors(
        rep,
        root,
        "outputs",
        false,
        &known,
        &known_list,
        &mut names_seen,
    );
    if !root.has("outputs") {
        root.missing(rep, "outputs", "at least one [[outputs]] table");
    }

    let check = root
        .table(
            rep,
            "check",
            true,
            "the [check] table: metric and tolerance",
        )
        .and_then(|t| read_check(rep, &t));

    let roofline = root
        .table(
            rep,
            "roofline",
            true,
            "the [roofline] table: bytes, flops, peak",
        )
        .and_then(|t| {
            t.deny_unknown(rep, &["bytes", "flops", "peak"]);
            let bytes = t.expr(rep, "bytes", true, &known, &known_list);
            let flops = t.expr(rep, "flops", true, &known, &known_list);
            let peak = t
                .str(rep, "peak", true, "which peak applies")
                .and_then(|(p, span)| {
                    let peak = match p.as_str() {
                        "fp64" => Peak::Fp64,
                        "fp32" => Peak::Fp32,
                        "tf32_tensor" => Peak::Tf32Tensor,
                        "fp16_tensor" => Peak::Fp16Tensor,
                        "bf16_tensor" => Peak::Bf16Tensor,
                        "fp8_tensor" => Peak::Fp8Tensor,
                        "int8_tensor" => Peak::Int8Tensor,
                        "int32" => Peak::Int32,
                        _ => {
                            rep.error(
                                span,
                                t.key_path("peak"),
                                format!(
                                    "unknown peak `{p}` (known: {}){}",
                                    PEAKS.join(", "),
                                    suggestion(&p, PEAKS)
                                ),
                            );
                            return None;
                        }
                    };
                    Some(peak)
                });
            Some(Roofline {
                bytes: bytes?,
                flops: flops?,
                peak: peak?,
            })
        });

    let compile = match root.table(rep, "compile", false, "") {
        Some(t) => {
            t.deny_unknown(rep, &["fast_math"]);
            CompilePolicy {
                fast_math: t.bool(rep, "fast_math").unwrap_or(false),
            }
        }
        None => CompilePolicy::default(),
    };

    let shapes = read_shapes(rep, root, &params);
    let (checks, checks_at) = checks::read(rep, root, &params, &inputs, &outputs);

    let task = Task {
        id: id?.0,
        title: title?.0,
        category: category?.0,
        source,
        description,
        tags,
        params,
        constraints,
        shapes: shapes.iter().map(|(s, _, _)| s.clone()).collect(),
        inputs,
        outputs,
        check: check?,
        roofline: roofline?,
        compile,
        checks,
        path: path.to_path_buf(),
    };
    // Shapes are checked against the whole task only once everything else read cleanly, so a
    // typo elsewhere does not cascade into a page of shape errors.
    if rep.is_empty() {
        for (shape, span, kpath) in &shapes {
            if let Err(why) = task.check_shape(shape) {
                rep.error(
                    span.clone(),
                    kpath.clone(),
                    format!("shape `{}`: {why}", shape.name),
                );
            }
        }
    }
    if rep.is_empty() {
        if let Some(at) = &checks_at {
            checks::check_on_shapes(rep, &task, at);
        }
    }
    Some(task)
}

fn read_params(rep: &mut Reporter, root: &Table) -> Vec<Param> {
    let Some(t) = root.table(rep, "params", false, "") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, item, kspan, _) in t.entries() {
        let path = t.key_path(&name);
        if !is_identifier(&name) {
            rep.error(
                kspan.clone(),
                &path,
                format!("parameter name `{name}` is not an identifier"),
            );
            continue;
        }
        if crate::expr::FUNCTIONS.contains(&name.as_str()) {
            rep.error(
                kspan.clone(),
                &path,
                format!("`{name}` is a function name and cannot be a parameter"),
            );
            continue;
        }
        let Some(pt) = item.as_table_like() else {
            if name == "constraints" || name == "shapes" {
                rep.error(
                    item.span().or(kspan),
                    &path,
                    format!("`{name}` landed inside [params]: TOML puts every key after a [table] header into that table; move `{name}` above [params]"),
                );
                continue;
            }
            rep.error(
                item.span().or(kspan),
                &path,
                format!("expected a table such as `{name} = {{ min = 1 }}`"),
            );
            continue;
        };
        let pt = Table {
            t: pt,
            path: path.clone(),
            span: item.span(),
        };
        pt.deny_unknown(rep, &["min", "max", "multiple_of", "values", "description"]);
        let min = pt.int(rep, "min").map(|v| v.0);
        let max = pt.int(rep, "max").map(|v| v.0);
        let multiple_of = pt.int(rep, "multiple_of");
        let values = pt.int_list(rep, "values");
        let description = pt.str(rep, "description", false, "").map(|s| s.0);
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo > hi {
                rep.error(
                    item.span(),
                    &path,
                    format!("min {lo} is greater than max {hi}"),
                );
            }
        }
        if let Some((m, span)) = &multiple_of {
            if *m <= 0 {
                rep.error(span.clone(), pt.key_path("multiple_of"), "must be positive");
            }
        }
        if let Some(v) = &values {
            if v.is_empty() {
                rep.error(
                    pt.value_span("values"),
                    pt.key_path("values"),
                    "must list at least one value",
                );
            }
        }
        out.push(Param {
            name,
            min,
            max,
            multiple_of: multiple_of.map(|m| m.0),
            values,
            description,
        });
    }
    out
}

fn read_shapes(rep: &mut Reporter, root: &Table, params: &[Param]) -> Vec<(Shape, Span, String)> {
    let tables = root.tables(rep, "shapes");
    if tables.is_empty() && !root.has("shapes") {
        root.missing(rep, "shapes", "at least one [[shapes]] table");
    }
    let mut out: Vec<(Shape, Span, String)> = Vec::new();
    for t in tables {
        let mut allowed: Vec<&str> = vec!["name"];
        allowed.extend(params.iter().map(|p| p.name.as_str()));
        t.deny_unknown(rep, &allowed);
        let Some((name, nspan)) = t.str(rep, "name", true, "the shape's name") else {
            continue;
        };
        if out.iter().any(|(s, _, _)| s.name == name) {
            rep.error(
                nspan.clone(),
                t.key_path("name"),
                format!("duplicate shape name `{name}`"),
            );
        }
        let mut values = IndexMap::new();
        let mut complete = true;
        for p in params {
            match t.int(rep, &p.name) {
                Some((v, _)) => {
                    values.insert(p.name.clone(), v);
                }
                None => {
                    if !t.has(&p.name) {
                        t.missing(rep, &p.name, "every parameter needs a value in every shape");
                    }
                    complete = false;
                }
            }
        }
        if complete {
            out.push((
                Shape { name, values },
                t.span.clone().or(nspan),
                t.path.clone(),
            ));
        }
    }
    out
}

const TENSOR_KEYS_IN: &[&str] = &["name", "dtype", "shape", "init", "role", "description"];
const TENSOR_KEYS_OUT: &[&str] = &["name", "dtype", "shape", "check", "description"];

fn read_tensors(
    rep: &mut Reporter,
    root: &Table,
    key: &str,
    inputs: bool,
    known: &dyn Fn(&str) -> bool,
    known_list: &str,
    names_seen: &mut Vec<String>,
) -> Vec<TensorDecl> {
    let mut out = Vec::new();
    for t in root.tables(rep, key) {
        t.deny_unknown(
            rep,
            if inputs {
                TENSOR_KEYS_IN
            } else {
                TENSOR_KEYS_OUT
            },
        );
        let name = t.str(rep, "name", true, "the tensor's name");
        if let Some((n, span)) = &name {
            if !is_identifier(n) {
                rep.error(
                    span.clone(),
                    t.key_path("name"),
                    format!("`{n}` is not an identifier"),
                );
            } else if names_seen.contains(n) {
                rep.error(
                    span.clone(),
                    t.key_path("name"),
                    format!("duplicate tensor name `{n}`"),
                );
            } else if known(n) {
                rep.error(
                    span.clone(),
                    t.key_path("name"),
                    format!("`{n}` is already a parameter name"),
                );
            }
            names_seen.push(n.clone());
        }
        let dtype = t
            .str(rep, "dtype", true, "the element type")
            .and_then(|(d, span)| {
                d.parse::<DType>()
                    .map_err(|e| rep.error(span, t.key_path("dtype"), e.to_string()))
                    .ok()
            });
        let shape = match t.has("shape") {
            true => t.expr_list(rep, "shape", (0, 8), known, known_list),
            false => {
                t.missing(
                    rep,
                    "shape",
                    "a list of dimension expressions; [] for a scalar",
                );
                None
            }
        };
        let description = t.str(rep, "description", false, "").map(|s| s.0);
        let role = if inputs {
            match t.str(rep, "role", false, "") {
                None => Some(Role::Activation),
                Some((r, span)) => match r.as_str() {
                    "activation" => Some(Role::Activation),
                    "weight" => Some(Role::Weight),
                    _ => {
                        rep.error(
                            span,
                            t.key_path("role"),
                            format!("unknown role `{r}` (known: activation, weight)"),
                        );
                        None
                    }
                },
            }
        } else {
            Some(Role::Activation)
        };
        let init = if inputs {
            match t.table(rep, "init", true, "how the harness generates this input") {
                Some(it) => read_init(rep, &it, dtype, known, known_list, &out),
                None => None,
            }
        } else {
            None
        };
        if let (
            Some(Init {
                kind: InitKind::Generator(Generator::QmoeDictionary),
                ..
            }),
            Some(sh),
        ) = (&init, &shape)
        {
            // The table is one fixed size whatever the shape: the dimensions must be constants.
            let none = Shape {
                name: String::new(),
                values: IndexMap::new(),
            };
            let dims: Vec<Option<i64>> = sh.iter().map(|e| e.eval(&none).ok()).collect();
            if dims != [Some(1 << 16), Some(2)] {
                rep.error(
                    t.value_span("shape"),
                    t.key_path("shape"),
                    format!(
                        "generator `qmoe_dictionary` makes a [65536, 2] table; the shape is [{}]",
                        sh.iter().map(|e| e.text()).collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
        let check = if inputs {
            None
        } else {
            t.table(rep, "check", false, "")
                .and_then(|c| read_check(rep, &c))
        };
        if let (Some((name, _)), Some(dtype), Some(shape), Some(role)) = (name, dtype, shape, role)
        {
            if inputs && init.is_none() {
                continue;
            }
            out.push(TensorDecl {
                name,
                dtype,
                shape,
                description,
                init,
                role,
                check,
            });
        }
    }
    out
}

fn read_check(rep: &mut Reporter, t: &Table) -> Option<Check> {
    let (metric, span) = t.str(rep, "metric", true, "normalized_max, allclose or exact")?;
    let mut positive = |key: &str| -> Option<f64> {
        let Some((v, span)) = t.float(rep, key) else {
            if !t.has(key) {
                t.missing(rep, key, &format!("a tolerance for metric `{metric}`"));
            }
            return None;
        };
        if v < 0.0 {
            rep.error(
                span,
                t.key_path(key),
                format!("tolerance must be >= 0, found {v}"),
            );
            return None;
        }
        Some(v)
    };
    let check = match metric.as_str() {
        "normalized_max" => {
            let tol = positive("tol");
            t.deny_unknown(rep, &["metric", "tol"]);
            Check::NormalizedMax { tol: tol? }
        }
        "allclose" => {
            let (atol, rtol) = (positive("atol"), positive("rtol"));
            let max_bad_fraction = match t.float(rep, "max_bad_fraction") {
                Some((f, span)) if !(0.0..1.0).contains(&f) => {
                    rep.error(
                        span,
                        t.key_path("max_bad_fraction"),
                        format!("must be in [0, 1), found {f}"),
                    );
                    0.0
                }
                Some((f, _)) => f,
                None => 0.0,
            };
            t.deny_unknown(rep, &["metric", "atol", "rtol", "max_bad_fraction"]);
            Check::AllClose {
                atol: atol?,
                rtol: rtol?,
                max_bad_fraction,
            }
        }
        "exact" => {
            t.deny_unknown(rep, &["metric"]);
            Check::Exact
        }
        _ => {
            let known = ["normalized_max", "allclose", "exact"];
            rep.error(
                span,
                t.key_path("metric"),
                format!(
                    "unknown metric `{metric}` (known: {}){}",
                    known.join(", "),
                    suggestion(&metric, &known)
                ),
            );
            return None;
        }
    };
    Some(check)
}

fn read_init(
    rep: &mut Reporter,
    t: &Table,
    dtype: Option<DType>,
    known: &dyn Fn(&str) -> bool,
    known_list: &str,
    earlier: &[TensorDecl],
) -> Option<Init> {
    let stress = t.bool(rep, "stress").unwrap_or(true);
    let dist = t.str(rep, "dist", false, "");
    let generator = t.str(rep, "generator", false, "");
    let (kind, allowed): (InitKind, &[&str]) = match (dist, generator) {
        (Some(_), Some((_, span))) => {
            rep.error(
                span,
                t.key_path("generator"),
                "give either `dist` or `generator`, not both",
            );
            return None;
        }
        (None, None) => {
            rep.error(
                t.span.clone(),
                &t.path,
                format!(
                    "needs `dist` ({}) or `generator` ({})",
                    DISTS.join(", "),
                    GENERATORS.join(", ")
                ),
            );
            return None;
        }
        (Some((d, span)), None) => {
            let float = |rep: &mut Reporter, key: &str, default: Option<f64>| -> Option<f64> {
                match t.float(rep, key) {
                    Some((v, _)) => Some(v),
                    None if t.has(key) => None,
                    None => default.or_else(|| {
                        t.missing(rep, key, &format!("a parameter of dist `{d}`"));
                        None
                    }),
                }
            };
            let (kind, allowed): (Option<InitKind>, &[&str]) = match d.as_str() {
                "normal" => {
                    let (mean, std) = (float(rep, "mean", Some(0.0)), float(rep, "std", Some(1.0)));
                    (
                        mean.zip(std)
                            .map(|(mean, std)| InitKind::Normal { mean, std }),
                        &["dist", "mean", "std", "stress"],
                    )
                }
                "uniform" => {
                    let (low, high) = (float(rep, "low", None), float(rep, "high", None));
                    if let (Some(l), Some(h)) = (low, high) {
                        if l >= h {
                            rep.error(
                                t.value_span("high"),
                                t.key_path("high"),
                                format!("high ({h}) must be greater than low ({l})"),
                            );
                        }
                    }
                    (
                        low.zip(high)
                            .map(|(low, high)| InitKind::Uniform { low, high }),
                        &["dist", "low", "high", "stress"],
                    )
                }
                "randint" => {
                    let low = t.expr(rep, "low", true, known, known_list);
                    let high = t.expr(rep, "high", true, known, known_list);
                    // Constant bounds are checked here, at the key; bounds that depend on
                    // parameters are checked for every shape.
                    if let (Some(l), Some(h)) = (&low, &high) {
                        if l.names().is_empty() && h.names().is_empty() {
                            let no_params = |_: &str| None;
                            match randint_bounds(l, h, &no_params) {
                                Err(why) => {
                                    rep.error(t.value_span("high"), t.key_path("high"), why)
                                }
                                Ok((lv, hv)) => {
                                    if let Some(why) = dtype.and_then(|d| randint_misfit(d, lv, hv))
                                    {
                                        rep.error(t.value_span("high"), t.key_path("high"), why);
                                    }
                                }
                            }
                        }
                    }
                    (
                        low.zip(high)
                            .map(|(low, high)| InitKind::Randint { low, high }),
                        &["dist", "low", "high", "stress"],
                    )
                }
                "constant" => (
                    float(rep, "value", None).map(|value| InitKind::Constant { value }),
                    &["dist", "value", "stress"],
                ),
                "student_t" => {
                    let (df, scale) = (float(rep, "df", None), float(rep, "scale", Some(1.0)));
                    if let Some(df) = df.filter(|df| *df <= 0.0) {
                        rep.error(
                            t.value_span("df"),
                            t.key_path("df"),
                            format!("degrees of freedom must be > 0, found {df}"),
                        );
                    }
                    (
                        df.zip(scale)
                            .map(|(df, scale)| InitKind::StudentT { df, scale }),
                        &["dist", "df", "scale", "stress"],
                    )
                }
                _ => {
                    rep.error(
                        span,
                        t.key_path("dist"),
                        format!(
                            "unknown dist `{d}` (known: {}){}",
                            DISTS.join(", "),
                            suggestion(&d, DISTS)
                        ),
                    );
                    return None;
                }
            };
            if let (Some(dt), Some(k)) = (dtype, &kind) {
                let float_only = matches!(
                    k,
                    InitKind::Normal { .. } | InitKind::Uniform { .. } | InitKind::StudentT { .. }
                );
                if float_only && !dt.is_float() {
                    rep.error(
                        span.clone(),
                        t.key_path("dist"),
                        format!("dist `{d}` makes floats but the dtype is {dt}; use randint"),
                    );
                }
            }
            (kind?, allowed)
        }
        (None, Some((g, span))) => {
            let (gen, allowed): (Option<Generator>, &[&str]) = match g.as_str() {
                "nf4_table" => (Some(Generator::Nf4Table), &["generator", "stress"]),
                "dynamic_map_8bit" => (
                    Some(Generator::DynamicMap8bit {
                        signed: t.bool(rep, "signed").unwrap_or(true),
                    }),
                    &["generator", "signed", "stress"],
                ),
                "sorted_offsets" => {
                    let total = t.expr(rep, "total", true, known, known_list);
                    let min_each = t.int(rep, "min_each").map(|v| v.0).unwrap_or(0);
                    (
                        total.map(|total| Generator::SortedOffsets { total, min_each }),
                        &["generator", "total", "min_each", "stress"],
                    )
                }
                "permutation" => (Some(Generator::Permutation), &["generator", "stress"]),
                "sparse_bitmap" => {
                    let density = match (t.has("density"), t.has("density_percent")) {
                        (true, true) => {
                            rep.error(
                                t.value_span("density_percent"),
                                t.key_path("density_percent"),
                                "give `density` (a probability) or `density_percent` (an expression of the params), not both".to_string(),
                            );
                            None
                        }
                        (false, false) => {
                            t.missing(
                                rep,
                                "density",
                                "the probability that a bit is set (or `density_percent`, an expression of the params)",
                            );
                            None
                        }
                        (true, false) => t.float(rep, "density").and_then(|(d, _)| {
                            in_unit_interval(rep, t, "density", d).then_some(Density::Fixed(d))
                        }),
                        (false, true) => t
                            .expr(rep, "density_percent", true, known, known_list)
                            .map(Density::Percent),
                    };
                    (
                        density.map(|density| Generator::SparseBitmap { density }),
                        &["generator", "density", "density_percent", "stress"],
                    )
                }
                "packed_codes" => {
                    let bits = t.int(rep, "bits");
                    if !t.has("bits") {
                        t.missing(rep, "bits", "the code width in bits (1 to 8)");
                    }
                    let bits = match bits {
                        Some((b, _)) if (1..=8).contains(&b) => Some(b as u32),
                        Some((b, span)) => {
                            rep.error(
                                span,
                                t.key_path("bits"),
                                format!("bits must be 1 to 8, found {b}"),
                            );
                            None
                        }
                        None => None,
                    };
                    (
                        bits.map(|bits| Generator::PackedCodes { bits }),
                        &["generator", "bits", "stress"],
                    )
                }
                "codebook" | "topk_distinct" => {
                    let std = t.float(rep, "std").map(|v| v.0).unwrap_or(1.0);
                    let gen = if g == "codebook" {
                        Generator::Codebook { std }
                    } else {
                        Generator::TopkDistinct { std }
                    };
                    (Some(gen), &["generator", "std", "stress"])
                }
                "outlier_columns" => {
                    let mut positive = |key: &str, default: f64| {
                        let v = t.float(rep, key).map(|v| v.0).unwrap_or(default);
                        if !(v.is_finite() && v > 0.0) {
                            rep.error(
                                t.value_span(key),
                                t.key_path(key),
                                format!("{key} must be a positive number, found {v}"),
                            );
                        }
                        v
                    };
                    let std = positive("std", 1.0);
                    let outlier_std = positive("outlier_std", 20.0);
                    let fraction = t.float(rep, "fraction").map(|v| v.0).unwrap_or(0.005);
                    in_unit_interval(rep, t, "fraction", fraction);
                    (
                        Some(Generator::OutlierColumns {
                            std,
                            outlier_std,
                            fraction,
                        }),
                        &["generator", "std", "outlier_std", "fraction", "stress"],
                    )
                }
                "huffman_lut" => (Some(Generator::HuffmanLut), &["generator", "stress"]),
                "huffman_stream" => {
                    let part = t.choice(
                        rep,
                        "part",
                        true,
                        &[
                            ("bits", HuffmanPart::Bits),
                            ("gaps", HuffmanPart::Gaps),
                            ("block_offsets", HuffmanPart::BlockOffsets),
                        ],
                    );
                    let lut =
                        read_dependency(rep, t, "lut", earlier, DType::is_integer, "an integer");
                    let needs_bits = part.is_some_and(|p| p != HuffmanPart::Bits);
                    let needs_symbols = part.is_some_and(|p| p != HuffmanPart::Gaps);
                    let bits = if needs_bits {
                        read_dependency(rep, t, "bits", earlier, DType::is_integer, "an integer")
                            .map(Some)
                    } else {
                        Some(None)
                    };
                    let symbols = if needs_symbols {
                        t.expr(rep, "symbols", true, known, known_list).map(Some)
                    } else {
                        Some(None)
                    };
                    let allowed: &[&str] = match part {
                        Some(HuffmanPart::Bits) => {
                            &["generator", "part", "lut", "symbols", "stress"]
                        }
                        Some(HuffmanPart::Gaps) => &["generator", "part", "lut", "bits", "stress"],
                        _ => &["generator", "part", "lut", "bits", "symbols", "stress"],
                    };
                    let gen = match (part, lut, bits, symbols) {
                        (Some(part), Some(lut), Some(bits), Some(symbols)) => {
                            Some(Generator::HuffmanStream {
                                part,
                                lut,
                                bits,
                                symbols,
                            })
                        }
                        _ => None,
                    };
                    (gen, allowed)
                }
                "qmoe_dictionary" => (Some(Generator::QmoeDictionary), &["generator", "stress"]),
                "qmoe_stream" => read_qmoe_stream(rep, t, earlier, known, known_list),
                "draft_tokens" => {
                    let logits =
                        read_dependency(rep, t, "logits", earlier, DType::is_float, "a float");
                    let parents = read_dependency(
                        rep,
                        t,
                        "parents",
                        earlier,
                        DType::is_integer,
                        "an integer",
                    );
                    let accept = t.float(rep, "accept").map(|v| v.0).unwrap_or(0.75);
                    in_unit_interval(rep, t, "accept", accept);
                    (
                        logits
                            .zip(parents)
                            .map(|(logits, parents)| Generator::DraftTokens {
                                logits,
                                parents,
                                accept,
                            }),
                        &["generator", "logits", "parents", "accept", "stress"],
                    )
                }
                _ => {
                    rep.error(
                        span,
                        t.key_path("generator"),
                        format!(
                            "unknown generator `{g}` (known: {}){}",
                            GENERATORS.join(", "),
                            suggestion(&g, GENERATORS)
                        ),
                    );
                    return None;
                }
            };
            if let (Some(dt), Some(gen)) = (dtype, &gen) {
                let ok = match gen {
                    Generator::Nf4Table | Generator::DynamicMap8bit { .. } => dt == DType::F32,
                    Generator::Codebook { .. }
                    | Generator::TopkDistinct { .. }
                    | Generator::OutlierColumns { .. } => dt.is_float(),
                    Generator::SortedOffsets { .. } | Generator::Permutation => dt.is_integer(),
                    Generator::SparseBitmap { .. }
                    | Generator::PackedCodes { .. }
                    | Generator::DraftTokens { .. } => dt.is_integer(),
                    Generator::HuffmanLut => dt == DType::I32,
                    Generator::HuffmanStream { part, .. } => match part {
                        HuffmanPart::Bits | HuffmanPart::Gaps => dt == DType::U8,
                        HuffmanPart::BlockOffsets => dt == DType::I32,
                    },
                    Generator::QmoeDictionary => dt == DType::I32,
                    Generator::QmoeStream { part, .. } => match part {
                        QmoePart::Codewords => dt == DType::U16,
                        QmoePart::RowOffsets => dt == DType::I32,
                    },
                };
                if !ok {
                    rep.error(
                        span,
                        t.key_path("generator"),
                        format!("generator `{g}` cannot make dtype {dt}"),
                    );
                }
            }
            (InitKind::Generator(gen?), allowed)
        }
    };
    t.deny_unknown(rep, allowed);
    Some(Init { kind, stress })
}

/// `qmoe_stream`: its part, the `qmoe_dictionary` input `dec` it codes with, the row length and
/// either the row count (`codewords`) or the `codewords` input it reads the offsets off.
fn read_qmoe_stream(
    rep: &mut Reporter,
    t: &Table,
    earlier: &[TensorDecl],
    known: &dyn Fn(&str) -> bool,
    known_list: &str,
) -> (Option<Generator>, &'static [&'static str]) {
    let part = t.choice(
        rep,
        "part",
        true,
        &[
            ("codewords", QmoePart::Codewords),
            ("row_offsets", QmoePart::RowOffsets),
        ],
    );
    let dec =
        read_dependency(rep, t, "dec", earlier, |d| d == DType::I32, "an i32").filter(|name| {
            let is_dict = earlier.iter().any(|d| {
                &d.name == name
                    && matches!(
                        d.init.as_ref().map(|i| &i.kind),
                        Some(InitKind::Generator(Generator::QmoeDictionary))
                    )
            });
            if !is_dict {
                rep.error(
                    t.value_span("dec"),
                    t.key_path("dec"),
                    format!(
                        "`{name}` is not made by the `qmoe_dictionary` generator; `dec` must be"
                    ),
                );
            }
            is_dict
        });
    let row_len = t.expr(rep, "row_len", true, known, known_list);
    let (rows, codewords) = match part {
        Some(QmoePart::Codewords) => (
            t.expr(rep, "rows", true, known, known_list).map(Some),
            Some(None),
        ),
        Some(QmoePart::RowOffsets) => {
            let cw = read_dependency(rep, t, "codewords", earlier, |d| d == DType::U16, "a u16")
                .filter(|name| {
                    let made = earlier.iter().find(|d| &d.name == name).and_then(|d| {
                        match d.init.as_ref().map(|i| &i.kind) {
                            Some(InitKind::Generator(Generator::QmoeStream {
                                part: QmoePart::Codewords,
                                dec,
                                ..
                            })) => Some(dec.clone()),
                            _ => None,
                        }
                    });
                    let ok = match (&made, &dec) {
                        (Some(d), Some(ours)) => d == ours,
                        (Some(_), None) => true,
                        (None, _) => false,
                    };
                    if !ok {
                        rep.error(
                            t.value_span("codewords"),
                            t.key_path("codewords"),
                            match made {
                                Some(d) => format!("`{name}` is coded with `{d}`, not with this `dec`"),
                                None => format!("`{name}` is not made by `qmoe_stream` with part = \"codewords\""),
                            },
                        );
                    }
                    ok
                })
                .map(Some);
            (Some(None), cw)
        }
        None => (None, None),
    };
    let allowed: &'static [&'static str] = match part {
        Some(QmoePart::Codewords) => &["generator", "part", "dec", "rows", "row_len", "stress"],
        Some(QmoePart::RowOffsets) => {
            &["generator", "part", "dec", "codewords", "row_len", "stress"]
        }
        None => &[
            "generator",
            "part",
            "dec",
            "rows",
            "codewords",
            "row_len",
            "stress",
        ],
    };
    let gen = match (part, dec, row_len, rows, codewords) {
        (Some(part), Some(dec), Some(row_len), Some(rows), Some(codewords)) => {
            Some(Generator::QmoeStream {
                part,
                dec,
                row_len,
                rows,
                codewords,
            })
        }
        _ => None,
    };
    (gen, allowed)
}

/// Reports `key` unless `v` is a probability or fraction (in [0, 1]).
/// Whether `v` is in [0, 1]; reports it where it is not.
fn in_unit_interval(rep: &mut Reporter, t: &Table, key: &str, v: f64) -> bool {
    let ok = (0.0..=1.0).contains(&v);
    if !ok {
        rep.error(
            t.value_span(key),
            t.key_path(key),
            format!("{key} must be in [0, 1], found {v}"),
        );
    }
    ok
}

/// The name of an input a generator reads (`key` of the init table): it must be declared
/// before the input being generated (which also rules out cycles) and be of the right kind.
fn read_dependency(
    rep: &mut Reporter,
    t: &Table,
    key: &str,
    earlier: &[TensorDecl],
    kind_ok: fn(DType) -> bool,
    kind: &str,
) -> Option<String> {
    let (name, span) = t.str(
        rep,
        key,
        true,
        "the name of an input declared before this one",
    )?;
    match earlier.iter().find(|d| d.name == name) {
        None => {
            let names: Vec<&str> = earlier.iter().map(|d| d.name.as_str()).collect();
            rep.error(
                span,
                t.key_path(key),
                format!(
                    "`{name}` is not an input declared before this one (declared before: {}){}",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    },
                    suggestion(&name, &names)
                ),
            );
            None
        }
        Some(d) if !kind_ok(d.dtype) => {
            rep.error(
                span,
                t.key_path(key),
                format!("`{name}` is {}, but `{key}` must be {kind} input", d.dtype),
            );
            None
        }
        Some(_) => Some(name),
    }
}

/// Evaluates randint bounds for a shape; `[low, high)` must not be empty.
pub fn randint_bounds(low: &Expr, high: &Expr, env: &dyn Env) -> Result<(i64, i64), String> {
    let l = low.eval(env).map_err(|e| format!("low: {e}"))?;
    let h = high.eval(env).map_err(|e| format!("high: {e}"))?;
    if l >= h {
        return Err(format!(
            "high ({h}) must be greater than low ({l}); the range is [low, high)"
        ));
    }
    Ok((l, h))
}

/// Why `[low, high)` cannot be drawn in an integer `dtype`, if it cannot.
fn randint_misfit(dtype: DType, l: i64, h: i64) -> Option<String> {
    let (lo, hi) = dtype.int_range()?;
    ((l as i128) < lo || (h as i128 - 1) > hi)
        .then(|| format!("range [{l}, {h}) does not fit dtype {dtype} ([{lo}, {hi}])"))
}

impl Serialize for Expr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
id = "t"
title = "t"
category = "c"
[params]
E = { min = 2 }
[[shapes]]
name = "s"
E = 8
[[inputs]]
name = "idx"
dtype = "i32"
shape = ["E"]
init = { dist = "randint", low = 0, high = "E" }
[[outputs]]
name = "y"
dtype = "f32"
shape = ["E"]
[check]
metric = "allclose"
atol = 1e-3
rtol = 1e-3
max_bad_fraction = 1e-3
[roofline]
bytes = "8*E"
flops = "0"
peak = "fp32"
"#;

    #[test]
    fn randint_bounds_follow_parameters() {
        let t = Task::parse(Path::new("task.toml"), BASE).unwrap();
        let Some(Init {
            kind: InitKind::Randint { low, high },
            ..
        }) = &t.inputs[0].init
        else {
            panic!("randint expected");
        };
        assert_eq!(randint_bounds(low, high, &t.shapes[0]).unwrap(), (0, 8));
        assert!(matches!(
            t.check,
            Check::AllClose { max_bad_fraction, .. } if max_bad_fraction == 1e-3
        ));
    }

    #[test]
    fn randint_bounds_are_checked_per_shape_and_fraction_in_range() {
        let empty = BASE.replace("high = \"E\"", "high = \"E - 8\"");
        let err = Task::parse(Path::new("task.toml"), &empty)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("randint") && err.contains("must be greater than low"),
            "{err}"
        );
        let wide = BASE
            .replace("dtype = \"i32\"", "dtype = \"u8\"")
            .replace("E = 8", "E = 300");
        let err = Task::parse(Path::new("task.toml"), &wide)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not fit dtype u8"), "{err}");
        let frac = BASE.replace("max_bad_fraction = 1e-3", "max_bad_fraction = 1.5");
        let err = Task::parse(Path::new("task.toml"), &frac)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("task.toml:23:") && err.contains("check.max_bad_fraction"),
            "{err}"
        );
    }
}
