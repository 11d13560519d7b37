//! Reads NVRTC's PTX into functions of decoded instructions: registers become numbered slots,
//! symbols become addresses in their state space, labels become instruction indices.
//!
//! Only what NVRTC and hand-written inline asm produce is accepted; anything else is an error
//! naming the PTX line, so an unsupported kernel is reported, never mis-run.

use super::op::{decode, Inst, Mem, Op, Opd, Sreg};
use std::collections::HashMap;

/// The module's `.global` / `.const` variables, to be placed at the base `parse` was given.
pub struct ModuleImage {
    pub bytes: Vec<u8>,
}

pub struct Function {
    pub name: String,
    pub entry: bool,
    /// Each declared parameter: (offset in the frame's parameter area, bytes).
    pub params: Vec<(usize, usize)>,
    /// Return parameters of a `.func`: (offset, bytes).
    pub rets: Vec<(usize, usize)>,
    /// Bytes of the frame's parameter area: parameters, return values and call-site `.param`s.
    pub param_bytes: usize,
    pub local_bytes: usize,
    pub nregs: usize,
    /// Which register slots are predicates (`cp.async`'s last operand is a size or a predicate).
    pub pred_regs: Vec<bool>,
    pub insts: Vec<Inst>,
}

pub struct Program {
    pub functions: Vec<Function>,
    pub by_name: HashMap<String, usize>,
    pub image: ModuleImage,
    /// Bytes of static shared memory; dynamic shared memory starts at `dynamic_shared_base`.
    pub static_shared: usize,
    pub dynamic_shared_base: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PTX line {}: {}", self.line, self.message)
    }
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        message: message.into(),
    })
}

/// One statement, brace or label of the PTX text, with its line.
#[derive(Debug, Clone)]
enum Item {
    Open,
    Close,
    Label(String),
    Stmt(String),
}

/// Splits the text into statements (`;`-terminated), braces and labels, dropping comments and
/// the directives that carry no semantics (`.loc`, `.file`, debug sections).
fn items(text: &str) -> Result<Vec<(usize, Item)>, ParseError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_line = 0;
    let mut in_block_comment = false;
    let mut skip_section_depth: Option<i32> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let mut line = String::with_capacity(raw.len());
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            if in_block_comment {
                if c == '*' && chars.peek() == Some(&'/') {
                    chars.next();
                    in_block_comment = false;
                }
                continue;
            }
            if c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '/' && chars.peek() == Some(&'*') {
                chars.next();
                in_block_comment = true;
                continue;
            }
            line.push(c);
        }
        let t = line.trim();
        if let Some(depth) = skip_section_depth.as_mut() {
            *depth += t.matches('{').count() as i32 - t.matches('}').count() as i32;
            if *depth <= 0 && t.contains('}') {
                skip_section_depth = None;
            }
            continue;
        }
        if t.starts_with(".section") {
            let d = t.matches('{').count() as i32 - t.matches('}').count() as i32;
            if d > 0 || !t.contains('}') {
                skip_section_depth = Some(d);
            }
            continue;
        }
        if cur.trim().is_empty()
            && [
                ".loc",
                ".file",
                ".version",
                ".target",
                ".address_size",
                ".maxntid",
                ".reqntid",
                ".minnctapersm",
                ".maxnctapersm",
                ".maxnreg",
                ".explicitcluster",
                ".reqnctapercluster",
                ".maxclusterrank",
                ".noreturn",
            ]
            .iter()
            .any(|d| {
                // A whole word: `.loc` must not swallow `.local`.
                t.strip_prefix(d)
                    .is_some_and(|r| r.is_empty() || r.starts_with(char::is_whitespace))
            })
        {
            continue;
        }
        let mut rest = t;
        while !rest.is_empty() {
            if cur.trim().is_empty() {
                cur.clear();
                cur_line = line_no;
                rest = rest.trim_start();
                if let Some(r) = rest.strip_prefix('{') {
                    out.push((line_no, Item::Open));
                    rest = r;
                    continue;
                }
                if let Some(r) = rest.strip_prefix('}') {
                    out.push((line_no, Item::Close));
                    rest = r;
                    continue;
                }
                if let Some(colon) = label_end(rest) {
                    out.push((line_no, Item::Label(rest[..colon].trim().to_string())));
                    rest = &rest[colon + 1..];
                    continue;
                }
            }
            // A statement runs to `;`, except an entry/func header, which runs to its `{`.
            match rest.find(';') {
                Some(p) if !header_before_brace(&cur, &rest[..p]) => {
                    cur.push_str(&rest[..p]);
                    out.push((cur_line, Item::Stmt(std::mem::take(&mut cur))));
                    rest = &rest[p + 1..];
                }
                _ => {
                    if let Some(b) = rest.find('{') {
                        if is_header(&cur) || is_header(&rest[..b]) {
                            cur.push_str(&rest[..b]);
                            out.push((cur_line, Item::Stmt(std::mem::take(&mut cur))));
                            out.push((line_no, Item::Open));
                            rest = &rest[b + 1..];
                            continue;
                        }
                    }
                    cur.push_str(rest);
                    cur.push(' ');
                    rest = "";
                }
            }
        }
    }
    if !cur.trim().is_empty() {
        return err(cur_line, format!("unterminated statement `{}`", cur.trim()));
    }
    Ok(out)
}

fn is_header(s: &str) -> bool {
    let s = s.trim_start();
    (s.contains(".entry") || s.contains(".func")) && !s.starts_with("call")
}

/// An entry header's `;` only appears in a prototype declaration; a header followed by `{`
/// before any `;` is a definition.
fn header_before_brace(cur: &str, upto_semicolon: &str) -> bool {
    (is_header(cur) || is_header(upto_semicolon)) && upto_semicolon.contains('{')
}

/// `name:` at the start of the text (a label), not a `::` qualifier.
fn label_end(s: &str) -> Option<usize> {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$' || c == '.'))?;
    if end == 0 || s[..end].starts_with('.') {
        return None;
    }
    (s[end..].starts_with(':') && !s[end..].starts_with("::")).then_some(end)
}

#[derive(Clone, Copy)]
enum SymKind {
    /// An address in emulated global memory (`.global` and `.const` variables).
    Global(u64),
    Shared(u64),
    Local(u64),
    Param(u64),
}

struct Decl {
    space: String,
    align: usize,
    elem_bytes: usize,
    name: String,
    count: Option<usize>,
    init: Vec<String>,
    /// `name[]`: an `.extern .shared` array, i.e. dynamic shared memory.
    unsized_array: bool,
}

fn type_bytes(t: &str) -> Option<usize> {
    Some(match t {
        ".b8" | ".u8" | ".s8" => 1,
        ".b16" | ".u16" | ".s16" | ".f16" | ".bf16" => 2,
        ".b32" | ".u32" | ".s32" | ".f32" | ".f16x2" | ".bf16x2" => 4,
        ".b64" | ".u64" | ".s64" | ".f64" => 8,
        ".b128" => 16,
        _ => return None,
    })
}

/// `[.extern|.visible|.weak] .space [.align N] [.ptr...] .type name[count] [= {..}]`.
fn parse_decl(line: usize, s: &str) -> Result<Decl, ParseError> {
    let (head, init) = match s.split_once('=') {
        Some((h, i)) => (h, i.trim()),
        None => (s, ""),
    };
    let mut space = String::new();
    let mut align = 0;
    let mut elem_bytes = 0;
    let mut name = String::new();
    let mut words = head.split_whitespace().peekable();
    while let Some(w) = words.next() {
        match w {
            ".extern" | ".visible" | ".weak" | ".common" => {}
            ".global" | ".const" | ".shared" | ".local" | ".param" | ".reg" => space = w.into(),
            ".align" => {
                align = words
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| ParseError {
                        line,
                        message: format!("`.align` without a number in `{s}`"),
                    })?
            }
            w if w.starts_with(".ptr") => {}
            w if w.starts_with('.') && type_bytes(w).is_some() => {
                elem_bytes = type_bytes(w).unwrap_or(1)
            }
            w if w.starts_with('.') => {
                return err(
                    line,
                    format!("unknown qualifier `{w}` in declaration `{s}`"),
                )
            }
            w => {
                name = words.fold(w.to_string(), |a, b| a + b);
                break;
            }
        }
    }
    if elem_bytes == 0 {
        return err(line, format!("declaration without a type: `{s}`"));
    }
    let (base, count, unsized_) = match name.split_once('[') {
        Some((n, rest)) => {
            let inner = rest.trim_end_matches(']').trim();
            if inner.is_empty() {
                (n.to_string(), None, true)
            } else {
                let c = inner.parse::<usize>().map_err(|_| ParseError {
                    line,
                    message: format!("array size `{inner}` of `{n}` is not a number"),
                })?;
                (n.to_string(), Some(c), false)
            }
        }
        None => (name, None, false),
    };
    let init = if init.is_empty() {
        Vec::new()
    } else {
        init.trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    };
    Ok(Decl {
        space,
        align: align.max(elem_bytes),
        elem_bytes,
        name: base,
        count,
        init,
        unsized_array: unsized_,
    })
}

/// Limits on what a module may declare, far above what NVRTC emits for real kernels: bytes of
/// one declaration, of the module's variables, and registers per function.
const MAX_DECL_BYTES: usize = 256 << 20;
const MAX_REGS: usize = 1 << 16;
const MAX_LOCAL_BYTES: usize = 512 << 10;

/// `count` elements of `elem` bytes, if within [`MAX_DECL_BYTES`].
fn decl_bytes(line: usize, d: &Decl) -> Result<usize, ParseError> {
    d.count
        .unwrap_or(1)
        .checked_mul(d.elem_bytes)
        .filter(|&n| n <= MAX_DECL_BYTES)
        .ok_or_else(|| ParseError {
            line,
            message: format!(
                "`{}` is larger than the emulator's {MAX_DECL_BYTES} bytes",
                d.name
            ),
        })
}

fn align_up(x: usize, a: usize) -> usize {
    if a <= 1 {
        x
    } else {
        x.div_ceil(a) * a
    }
}

/// Module-wide state while reading.
struct Module {
    globals: HashMap<String, SymKind>,
    image: Vec<u8>,
    image_base: u64,
    static_shared: usize,
    dynamic_shared_align: usize,
    has_dynamic: Vec<String>,
    funcs: HashMap<String, usize>,
}

impl Module {
    fn add_global(&mut self, line: usize, d: &Decl) -> Result<(), ParseError> {
        let bytes = decl_bytes(line, d)?;
        if self.image.len() + bytes > MAX_DECL_BYTES || self.static_shared + bytes > MAX_DECL_BYTES
        {
            return err(line, "module variables larger than the emulator's limit");
        }
        match d.space.as_str() {
            ".global" | ".const" => {
                let at = align_up(self.image.len(), d.align);
                self.image.resize(at + bytes, 0);
                for (i, v) in d.init.iter().enumerate() {
                    let bits = parse_int(v)
                        .or_else(|| parse_float_bits(v, d.elem_bytes))
                        .ok_or_else(|| ParseError {
                            line,
                            message: format!("initializer `{v}` of `{}` is not a number", d.name),
                        })?;
                    let o = at + i * d.elem_bytes;
                    if o + d.elem_bytes > self.image.len() {
                        return err(line, format!("too many initializers for `{}`", d.name));
                    }
                    self.image[o..o + d.elem_bytes]
                        .copy_from_slice(&bits.to_le_bytes()[..d.elem_bytes]);
                }
                self.globals
                    .insert(d.name.clone(), SymKind::Global(self.image_base + at as u64));
            }
            ".shared" => {
                if d.unsized_array {
                    self.dynamic_shared_align = self.dynamic_shared_align.max(d.align);
                    self.has_dynamic.push(d.name.clone());
                } else {
                    let at = align_up(self.static_shared, d.align);
                    self.static_shared = at + bytes;
                    self.globals
                        .insert(d.name.clone(), SymKind::Shared(at as u64));
                }
            }
            other => return err(line, format!("`{other}` variable at module scope")),
        }
        Ok(())
    }
}

pub fn parse_int(s: &str) -> Option<u64> {
    let s = s.trim().trim_end_matches('U');
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let v = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u64::from_str_radix(h, 16).ok()?
    } else if digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        u64::from_str_radix(&digits[1..], 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<u64>().ok()?
    } else {
        return None;
    };
    Some(if neg { v.wrapping_neg() } else { v })
}

/// `0fXXXXXXXX` (f32 bits), `0dXXXXXXXXXXXXXXXX` (f64 bits) or a decimal literal, as the bits
/// of a `bytes`-wide float.
pub fn parse_float_bits(s: &str, bytes: usize) -> Option<u64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0f").or_else(|| s.strip_prefix("0F")) {
        let b = u32::from_str_radix(h, 16).ok()?;
        return Some(if bytes == 8 {
            (f32::from_bits(b) as f64).to_bits()
        } else {
            b as u64
        });
    }
    if let Some(h) = s.strip_prefix("0d").or_else(|| s.strip_prefix("0D")) {
        let b = u64::from_str_radix(h, 16).ok()?;
        return Some(if bytes == 4 {
            (f64::from_bits(b) as f32).to_bits() as u64
        } else {
            b
        });
    }
    let v: f64 = s.parse().ok()?;
    Some(if bytes == 8 {
        v.to_bits()
    } else {
        (v as f32).to_bits() as u64
    })
}

/// Registers and symbols visible at one point of a function body: braces open scopes.
struct Scope {
    regs: Vec<HashMap<String, u32>>,
    syms: Vec<HashMap<String, SymKind>>,
    labels: Vec<HashMap<String, usize>>,
    ids: Vec<usize>,
}

pub fn parse(text: &str, image_base: u64) -> Result<Program, ParseError> {
    let items = items(text)?;
    let mut m = Module {
        globals: HashMap::new(),
        image: Vec::new(),
        image_base,
        static_shared: 0,
        dynamic_shared_align: 16,
        has_dynamic: Vec::new(),
        funcs: HashMap::new(),
    };
    // Function names first: a call may name a function defined later.
    let mut nf = 0;
    for (_, it) in &items {
        if let Item::Stmt(s) = it {
            if is_header(s) {
                if let Some(name) = header_name(s) {
                    if !m.funcs.contains_key(&name) && !s.trim_start().starts_with(".extern") {
                        m.funcs.insert(name, nf);
                        nf += 1;
                    }
                }
            }
        }
    }
    // Module variables, in order, up to each function; then the function bodies.
    let mut functions: Vec<Option<Function>> = (0..nf).map(|_| None).collect();
    let mut i = 0;
    while i < items.len() {
        let (line, it) = &items[i];
        match it {
            Item::Stmt(s) if is_header(s) => {
                let is_def = matches!(items.get(i + 1), Some((_, Item::Open)));
                if !is_def {
                    i += 1;
                    continue;
                }
                let end = matching_close(&items, i + 1).ok_or_else(|| ParseError {
                    line: *line,
                    message: "function body without its closing `}`".into(),
                })?;
                let f = parse_function(&mut m, *line, s, &items[i + 2..end])?;
                if let Some(&k) = m.funcs.get(&f.name) {
                    functions[k] = Some(f);
                }
                i = end + 1;
            }
            Item::Stmt(s) => {
                let t = s.trim();
                if t.starts_with(".global")
                    || t.starts_with(".const")
                    || t.starts_with(".shared")
                    || t.starts_with(".extern")
                    || t.starts_with(".visible")
                    || t.starts_with(".weak")
                {
                    let d = parse_decl(*line, t)?;
                    m.add_global(*line, &d)?;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    let mut out = Vec::with_capacity(nf);
    let mut by_name = HashMap::new();
    for (name, k) in &m.funcs {
        by_name.insert(name.clone(), *k);
    }
    for (k, f) in functions.into_iter().enumerate() {
        match f {
            Some(f) => out.push(f),
            None => {
                let name = by_name
                    .iter()
                    .find(|(_, &v)| v == k)
                    .map(|(n, _)| n.clone())
                    .unwrap_or_default();
                return err(0, format!("function `{name}` is declared but not defined"));
            }
        }
    }
    let dynamic_shared_base = align_up(m.static_shared, m.dynamic_shared_align.max(128));
    Ok(Program {
        functions: out,
        by_name,
        image: ModuleImage { bytes: m.image },
        static_shared: m.static_shared,
        dynamic_shared_base,
    })
}

fn matching_close(items: &[(usize, Item)], open: usize) -> Option<usize> {
    let mut depth = 0;
    for (k, (_, it)) in items.iter().enumerate().skip(open) {
        match it {
            Item::Open => depth += 1,
            Item::Close => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

fn header_name(s: &str) -> Option<String> {
    // `.visible .entry name(` or `.func (.param .b64 r) name(`.
    let after = s
        .split(".entry")
        .nth(1)
        .or_else(|| s.split(".func").nth(1))?;
    let mut t = after.trim_start();
    if t.starts_with('(') {
        let close = t.find(')')?;
        t = t[close + 1..].trim_start();
    }
    let end = t
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(t.len());
    (end > 0).then(|| t[..end].to_string())
}

fn param_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_function(
    m: &mut Module,
    line: usize,
    header: &str,
    body: &[(usize, Item)],
) -> Result<Function, ParseError> {
    let name = header_name(header).ok_or_else(|| ParseError {
        line,
        message: format!("cannot read the function name in `{}`", header.trim()),
    })?;
    let entry = header.contains(".entry");
    let mut param_bytes = 0usize;
    let mut scope = Scope {
        regs: vec![HashMap::new()],
        syms: vec![HashMap::new()],
        labels: vec![HashMap::new()],
        ids: vec![0],
    };
    let mut declare_params =
        |list: &str, scope: &mut Scope| -> Result<Vec<(usize, usize)>, ParseError> {
            let mut v = Vec::new();
            for p in param_list(list) {
                let d = parse_decl(line, &p)?;
                let bytes = d.elem_bytes * d.count.unwrap_or(1);
                let at = align_up(param_bytes, d.align);
                param_bytes = at + bytes;
                scope.syms[0].insert(d.name.clone(), SymKind::Param(at as u64));
                v.push((at, bytes));
            }
            Ok(v)
        };
    // `.func (rets) name (params)` / `.entry name (params)`.
    let after = header
        .split(if entry { ".entry" } else { ".func" })
        .nth(1)
        .unwrap_or("");
    let mut t = after.trim_start();
    let mut rets = Vec::new();
    if t.starts_with('(') {
        let close = t.find(')').ok_or_else(|| ParseError {
            line,
            message: "return parameter list without its `)`".into(),
        })?;
        rets = declare_params(&t[1..close], &mut scope)?;
        t = &t[close + 1..];
    }
    let params = match (t.find('('), t.rfind(')')) {
        (Some(o), Some(c)) if c > o => declare_params(&t[o + 1..c], &mut scope)?,
        _ => Vec::new(),
    };
    let mut f = Function {
        name,
        entry,
        params,
        rets,
        param_bytes,
        local_bytes: 0,
        nregs: 0,
        pred_regs: Vec::new(),
        insts: Vec::new(),
    };
    // Pending branch targets: (instruction, operand index, label, scope chain).
    let mut fixups: Vec<(usize, usize, String, Vec<usize>, usize)> = Vec::new();
    let mut scope_labels: HashMap<usize, HashMap<String, usize>> = HashMap::new();
    let mut next_scope = 1;
    for (line, it) in body {
        let line = *line;
        match it {
            Item::Open => {
                scope.regs.push(HashMap::new());
                scope.syms.push(HashMap::new());
                scope.labels.push(HashMap::new());
                scope.ids.push(next_scope);
                next_scope += 1;
            }
            Item::Close => {
                if scope.ids.len() == 1 {
                    return err(line, "unbalanced `}`");
                }
                scope.regs.pop();
                scope.syms.pop();
                scope.labels.pop();
                scope.ids.pop();
            }
            Item::Label(l) => {
                let id = *scope.ids.last().unwrap_or(&0);
                scope_labels
                    .entry(id)
                    .or_default()
                    .insert(l.clone(), f.insts.len());
            }
            Item::Stmt(s) => {
                let s = s.trim();
                if s.is_empty() {
                    continue;
                }
                if let Some(rest) = s.strip_prefix(".reg") {
                    declare_regs(line, rest, &mut f, &mut scope)?;
                    continue;
                }
                if s.starts_with(".local") || s.starts_with(".shared") || s.starts_with(".param") {
                    let d = parse_decl(line, s)?;
                    let n = decl_bytes(line, &d)?;
                    if f.local_bytes + f.param_bytes + m.static_shared + n > MAX_DECL_BYTES {
                        return err(line, "declarations larger than the emulator's limit");
                    }
                    let sym = match d.space.as_str() {
                        ".local" => {
                            let at = align_up(f.local_bytes, d.align);
                            f.local_bytes = at + n;
                            if f.local_bytes > MAX_LOCAL_BYTES {
                                return err(line, format!("more than {MAX_LOCAL_BYTES} bytes of local memory per thread (a GPU's limit)"));
                            }
                            SymKind::Local(at as u64)
                        }
                        ".param" => {
                            let at = align_up(f.param_bytes, d.align);
                            f.param_bytes = at + n;
                            SymKind::Param(at as u64)
                        }
                        _ => {
                            let at = align_up(m.static_shared, d.align);
                            m.static_shared = at + n;
                            SymKind::Shared(at as u64)
                        }
                    };
                    if let Some(top) = scope.syms.last_mut() {
                        top.insert(d.name, sym);
                    }
                    continue;
                }
                if s.starts_with(".pragma") || s.starts_with(".loc ") || s.starts_with(".file ") {
                    continue;
                }
                if s.starts_with('.') {
                    return err(line, format!("unsupported directive `{s}`"));
                }
                let inst = parse_inst(m, line, s, &scope, &mut |k, label| {
                    fixups.push((f.insts.len(), k, label, scope.ids.clone(), line))
                })?;
                f.insts.push(inst);
            }
        }
    }
    f.insts.push(Inst::exit(0));
    for (at, k, label, chain, line) in fixups {
        let target = chain
            .iter()
            .rev()
            .find_map(|id| scope_labels.get(id).and_then(|l| l.get(&label)))
            .copied()
            .ok_or_else(|| ParseError {
                line,
                message: format!("branch to unknown label `{label}`"),
            })?;
        if let Some(o) = f.insts[at].opds.get_mut(k) {
            *o = Opd::Label(target);
        }
    }
    Ok(f)
}

fn declare_regs(
    line: usize,
    rest: &str,
    f: &mut Function,
    scope: &mut Scope,
) -> Result<(), ParseError> {
    // `.b32 %r<21>` or `.pred p, q` or `.b64 %SP`.
    let rest = rest.trim();
    let (ty, names) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| ParseError {
            line,
            message: format!("`.reg` without names: `.reg {rest}`"),
        })?;
    let names = names.trim();
    let names = names
        .split_once(char::is_whitespace)
        .map_or(names, |(a, b)| {
            // `.reg .v4 .b32 x` has a second qualifier.
            if a.starts_with('.') {
                b
            } else {
                names
            }
        });
    let top = scope.regs.len() - 1;
    for n in names.split(',') {
        let n = n.trim();
        if n.is_empty() {
            continue;
        }
        if let Some((base, count)) = n.split_once('<') {
            let c: usize = count
                .trim_end_matches('>')
                .trim()
                .parse()
                .map_err(|_| ParseError {
                    line,
                    message: format!("register range `{n}` is not `%name<count>`"),
                })?;
            if f.nregs + c > MAX_REGS {
                return err(
                    line,
                    format!("more than {MAX_REGS} registers in one function"),
                );
            }
            for k in 0..c {
                scope.regs[top].insert(format!("{base}{k}"), f.nregs as u32);
                f.nregs += 1;
                f.pred_regs.push(ty == ".pred");
            }
        } else {
            if f.nregs >= MAX_REGS {
                return err(
                    line,
                    format!("more than {MAX_REGS} registers in one function"),
                );
            }
            scope.regs[top].insert(n.to_string(), f.nregs as u32);
            f.nregs += 1;
            f.pred_regs.push(ty == ".pred");
        }
    }
    Ok(())
}

fn lookup_reg(scope: &Scope, name: &str) -> Option<u32> {
    scope.regs.iter().rev().find_map(|m| m.get(name)).copied()
}

fn lookup_sym(m: &Module, scope: &Scope, name: &str) -> Option<SymKind> {
    scope
        .syms
        .iter()
        .rev()
        .find_map(|s| s.get(name))
        .copied()
        .or_else(|| m.globals.get(name).copied())
        .or_else(|| {
            m.has_dynamic
                .iter()
                .any(|d| d == name)
                .then_some(SymKind::Shared(u64::MAX))
        })
}

/// Splits operands at top-level commas (not inside `{}`, `[]` or `()`).
fn split_operands(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '{' | '[' | '(' => depth += 1,
            '}' | ']' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur).trim().to_string());
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn parse_inst(
    m: &Module,
    line: usize,
    s: &str,
    scope: &Scope,
    fixup: &mut dyn FnMut(usize, String),
) -> Result<Inst, ParseError> {
    let mut t = s.trim();
    let mut guard = None;
    if let Some(g) = t.strip_prefix('@') {
        let (p, rest) = g
            .split_once(char::is_whitespace)
            .ok_or_else(|| ParseError {
                line,
                message: format!("guard without an instruction: `{s}`"),
            })?;
        let (neg, pn) = match p.strip_prefix('!') {
            Some(x) => (true, x),
            None => (false, p),
        };
        let r = lookup_reg(scope, pn).ok_or_else(|| ParseError {
            line,
            message: format!("unknown guard predicate `{pn}`"),
        })?;
        guard = Some((r, neg));
        t = rest.trim();
    }
    let (opcode, rest) = match t.split_once(char::is_whitespace) {
        Some((o, r)) => (o, r.trim()),
        None => (t, ""),
    };
    let mut opds = Vec::new();
    if opcode.starts_with("call") {
        // call[.uni] (rets), fname, (args)
        let parts = split_operands(rest);
        let mut fname = None;
        let mut lists = Vec::new();
        for p in &parts {
            if p.starts_with('(') {
                let inner = p.trim_start_matches('(').trim_end_matches(')');
                let mut v = Vec::new();
                for a in split_operands(inner) {
                    v.push(operand(m, line, &a, scope, &mut |_| {})?);
                }
                lists.push((fname.is_none(), v));
            } else {
                fname = Some(p.clone());
            }
        }
        let fname = fname.ok_or_else(|| ParseError {
            line,
            message: format!("call without a function name: `{s}`"),
        })?;
        let fidx = *m.funcs.get(&fname).ok_or_else(|| ParseError {
            line,
            message: format!("call to `{fname}`, which this module does not define (only calls within the module can be emulated)"),
        })?;
        let mut rets = Vec::new();
        let mut args = Vec::new();
        for (before, v) in lists {
            if before {
                rets = v;
            } else {
                args = v;
            }
        }
        opds.push(Opd::Func(fidx));
        opds.push(Opd::Vec(rets));
        opds.push(Opd::Vec(args));
    } else {
        for (k, o) in split_operands(rest).iter().enumerate() {
            let mut label = None;
            let opd = operand(m, line, o, scope, &mut |l| label = Some(l))?;
            if let Some(l) = label {
                fixup(k, l);
            }
            opds.push(opd);
        }
    }
    let op = match decode(opcode).map_err(|message| ParseError { line, message })? {
        // Only the operand list tells the register-A form from the descriptor one.
        Op::Wgmma(s) if matches!(opds.get(1), Some(Opd::Vec(_))) => {
            let mut s = (*s).clone();
            s.a_from_registers = true;
            Op::Wgmma(std::rc::Rc::new(s))
        }
        op => op,
    };
    let bytes = op.float_bytes();
    for o in opds.iter_mut() {
        float_to_bits(o, bytes);
    }
    Ok(Inst {
        op,
        guard,
        opds,
        line: line as u32,
        text: s.to_string().into(),
    })
}

/// Decimal float immediates take the instruction's float width.
fn float_to_bits(o: &mut Opd, bytes: usize) {
    match o {
        Opd::FloatImm(v) => {
            *o = Opd::Imm(if bytes == 8 {
                v.to_bits()
            } else {
                (*v as f32).to_bits() as u64
            })
        }
        Opd::Vec(v) => v.iter_mut().for_each(|x| float_to_bits(x, bytes)),
        _ => {}
    }
}

fn sreg(name: &str) -> Option<Sreg> {
    let axis = |s: &str| match s {
        "x" => Some(0),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    if let Some((base, a)) = name.split_once('.') {
        let a = axis(a)?;
        return Some(match base {
            "%tid" => Sreg::Tid(a),
            "%ntid" => Sreg::Ntid(a),
            "%ctaid" => Sreg::Ctaid(a),
            "%nctaid" => Sreg::Nctaid(a),
            "%clusterid" | "%cluster_ctaid" => Sreg::Zero,
            "%nclusterid" | "%cluster_nctaid" => Sreg::One,
            _ => return None,
        });
    }
    Some(match name {
        "%laneid" => Sreg::Laneid,
        "%warpid" => Sreg::Warpid,
        "%nwarpid" => Sreg::Nwarpid,
        "%smid" => Sreg::Zero,
        "%nsmid" => Sreg::Nsmid,
        "%gridid" => Sreg::Zero,
        "%lanemask_eq" => Sreg::LanemaskEq,
        "%lanemask_lt" => Sreg::LanemaskLt,
        "%lanemask_le" => Sreg::LanemaskLe,
        "%lanemask_gt" => Sreg::LanemaskGt,
        "%lanemask_ge" => Sreg::LanemaskGe,
        "%clock" | "%clock64" | "%globaltimer" | "%globaltimer_lo" => Sreg::Clock,
        "%dynamic_smem_size" => Sreg::DynamicSmem,
        "%total_smem_size" => Sreg::TotalSmem,
        "%cluster_ctarank" => Sreg::Zero,
        "%cluster_nctarank" => Sreg::One,
        "%is_explicit_cluster" => Sreg::Zero,
        _ => return None,
    })
}

fn operand(
    m: &Module,
    line: usize,
    s: &str,
    scope: &Scope,
    label: &mut dyn FnMut(String),
) -> Result<Opd, ParseError> {
    let s = s.trim();
    if s == "_" {
        return Ok(Opd::Sink);
    }
    if let Some(inner) = s.strip_prefix('{') {
        let inner = inner.trim_end_matches('}');
        let mut v = Vec::new();
        for p in split_operands(inner) {
            v.push(operand(m, line, &p, scope, &mut |_| {})?);
        }
        return Ok(Opd::Vec(v));
    }
    if let Some(inner) = s.strip_prefix('[') {
        return address(m, line, inner.trim_end_matches(']'), scope);
    }
    if let Some(x) = s.strip_prefix('!') {
        return Ok(Opd::Not(Box::new(operand(m, line, x, scope, label)?)));
    }
    if let Some((a, b)) = s.split_once('|') {
        let a = lookup_reg(scope, a.trim());
        let b = lookup_reg(scope, b.trim());
        if let (Some(a), Some(b)) = (a, b) {
            return Ok(Opd::Vec(vec![Opd::Reg(a), Opd::Reg(b)]));
        }
        return err(line, format!("unknown predicate pair `{s}`"));
    }
    if let Some(r) = lookup_reg(scope, s) {
        return Ok(Opd::Reg(r));
    }
    if s.starts_with('%') {
        return sreg(s).map(Opd::Sreg).ok_or_else(|| ParseError {
            line,
            message: format!("unknown register `{s}`"),
        });
    }
    if let Some(v) = parse_int(s) {
        return Ok(Opd::Imm(v));
    }
    if s.starts_with("0f") || s.starts_with("0d") || s.starts_with("0F") || s.starts_with("0D") {
        let bytes = if s.starts_with("0d") || s.starts_with("0D") {
            8
        } else {
            4
        };
        if let Some(b) = parse_float_bits(s, bytes) {
            return Ok(Opd::Imm(b));
        }
    }
    if s.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        if let Ok(v) = s.parse::<f64>() {
            return Ok(Opd::FloatImm(v));
        }
    }
    if let Some(sym) = lookup_sym(m, scope, s) {
        return Ok(sym_value(sym));
    }
    // A branch target or a function name, resolved later.
    label(s.to_string());
    Ok(Opd::Label(usize::MAX))
}

fn sym_value(sym: SymKind) -> Opd {
    match sym {
        SymKind::Global(a) => Opd::Imm(a),
        SymKind::Shared(u64::MAX) => Opd::DynShared,
        SymKind::Shared(a) | SymKind::Local(a) | SymKind::Param(a) => Opd::Imm(a),
    }
}

fn address(m: &Module, line: usize, s: &str, scope: &Scope) -> Result<Opd, ParseError> {
    let s = s.trim();
    // base[+offset], where base is a register, a symbol or absent (an absolute address).
    let (base, off) = match s.find(['+', '-']).filter(|&p| p > 0) {
        Some(p) => {
            let o = s[p..].replace("+-", "-").replace('+', "");
            let o = parse_int(&o).ok_or_else(|| ParseError {
                line,
                message: format!("address offset `{}` is not a number", &s[p..]),
            })? as i64;
            (s[..p].trim(), o)
        }
        None => (s, 0),
    };
    if let Some(r) = lookup_reg(scope, base) {
        return Ok(Opd::Mem(Mem {
            reg: Some(r),
            off,
            dyn_shared: false,
        }));
    }
    if let Some(v) = parse_int(base) {
        return Ok(Opd::Mem(Mem {
            reg: None,
            off: off.wrapping_add(v as i64),
            dyn_shared: false,
        }));
    }
    match lookup_sym(m, scope, base) {
        Some(SymKind::Shared(u64::MAX)) => Ok(Opd::Mem(Mem {
            reg: None,
            off,
            dyn_shared: true,
        })),
        Some(sym) => {
            // The instruction's state space says which memory the address is in.
            let (SymKind::Global(a) | SymKind::Shared(a) | SymKind::Local(a) | SymKind::Param(a)) =
                sym;
            Ok(Opd::Mem(Mem {
                reg: None,
                off: off.wrapping_add(a as i64),
                dyn_shared: false,
            }))
        }
        None => err(line, format!("unknown address `[{s}]`")),
    }
}
