//! Warp-collective matrix instructions (`mma.sync`, `mma.sp`, `ldmatrix`) as pure functions over
//! the 32 lanes' register values.
//!
//! Every register is a `u32` holding its bits: `.f32` values are `f32::to_bits`, packed 16-bit
//! values hold element 0 in the low half, packed 8-bit values hold element 0 in the lowest byte.
//!
//! Layouts follow the NVIDIA PTX ISA, section "Warp Level Matrix Multiply-Accumulate
//! Instructions" (9.7.14 in ISA 9.0):
//! - "Matrix Fragments for mma.m16n8k8" / "mma.m16n8k16 with floating point type" /
//!   "mma.m16n8k16 with integer type" / "mma.m16n8k32" (dense A, B, C/D);
//! - "Sparse matrix storage" and "Matrix Fragments for sparse mma.m16n8k32 with .f16 and .bf16
//!   types" (compressed A, metadata, sparsity selector);
//! - "Warp-level matrix load instruction: ldmatrix".
//!
//! All the supported fragments share one shape, which is why one pair of index formulas serves
//! them all (`e` = elements per 32-bit register, `g` = lane / 4, `t` = lane % 4, element `w` of
//! register `r`):
//! - A (16 x K, row-major, K counted in stored elements): row `g + 8*(r & 1)`,
//!   column `t*e + w + 4*e*(r >> 1)`;
//! - B (K x 8): row `t*e + w + 4*e*r`, column `g`;
//! - C/D (16 x 8), element `i` in 0..4: row `g + 8*(i >> 1)`, column `2*t + (i & 1)`.
//!
//! Supported: dense `m16n8k8`/`m16n8k16` with f16 (C/D f16 or f32) or bf16 (f32);
//! `m16n8k16`/`m16n8k32` with s8/u8 (s32, optional `.satfinite`) or e4m3/e5m2 (C/D f16 or f32);
//! `mma.sp` / `mma.sp::ordered_metadata` `m16n8k32` with f16 (C = D, f16 or f32) or bf16 (f32).
//! Everything else is refused by name.
//!
//! Arithmetic is exact: every input and every product is exact in f64; the sum of the products
//! and C is exact too (checked with TwoSum, else redone in a wide fixed-point integer), and it
//! is rounded once, to nearest even, to D's type. Integer sums are exact and then wrap or clamp.
//! The ISA leaves accumulation order and rounding unspecified ("Precision and rounding" under
//! `mma`), so tensor cores may differ in the last bits: this is the ideal result a tolerance
//! check should be centred on. (A plain f64 sum would not do: bf16 products span ~520 bits of
//! magnitude, and rounding f64 then f32 rounds twice.)

use super::exact::{decode_elem, decode_ieee, dot_float, f16_bits};

/// An element type of the A or B operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    F16,
    Bf16,
    E4m3,
    E5m2,
    S8,
    U8,
}

/// The type of the C or D operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccType {
    F16,
    F32,
    S32,
}

/// A parsed `mma.sync...` / `mma.sp...` opcode.
#[derive(Debug, Clone, PartialEq)]
pub struct MmaSpec {
    pub m: usize,
    pub n: usize,
    /// The logical K (for `mma.sp` the dense K; A then stores K/2 columns).
    pub k: usize,
    pub a: ElemType,
    pub b: ElemType,
    pub c: AccType,
    pub d: AccType,
    /// `mma.sp` / `mma.sp::ordered_metadata`.
    pub sparse: bool,
    /// `mma.sp::ordered_metadata`: the two indices of each metadata nibble must increase.
    pub ordered_metadata: bool,
    /// `.satfinite` (integer only): clamp to the s32 range instead of wrapping.
    pub satfinite: bool,
}

pub(super) fn elem_type(s: &str) -> Option<ElemType> {
    Some(match s {
        "f16" => ElemType::F16,
        "bf16" => ElemType::Bf16,
        "e4m3" => ElemType::E4m3,
        "e5m2" => ElemType::E5m2,
        "s8" => ElemType::S8,
        "u8" => ElemType::U8,
        _ => return None,
    })
}

pub(super) fn acc_type(s: &str) -> Option<AccType> {
    Some(match s {
        "f16" => AccType::F16,
        "f32" => AccType::F32,
        "s32" => AccType::S32,
        _ => return None,
    })
}

fn elem_bits(t: ElemType) -> usize {
    match t {
        ElemType::F16 | ElemType::Bf16 => 16,
        _ => 8,
    }
}

/// Parses the full opcode text, e.g. "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" or
/// "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32".
/// Err(message) for anything not supported, naming what.
pub fn parse_mma(opcode: &str) -> Result<MmaSpec, String> {
    let bad = |what: String| format!("unsupported mma `{opcode}`: {what}");
    let mut parts = opcode.trim().split('.');
    if parts.next() != Some("mma") {
        return Err(bad("not an mma instruction".into()));
    }
    let (sparse, ordered_metadata) = match parts.next() {
        Some("sync") => (false, false),
        Some(v @ ("sp" | "sp::ordered_metadata")) => {
            if parts.next() != Some("sync") {
                return Err(bad("expected `.sync` after the sparse variant".into()));
            }
            (true, v == "sp::ordered_metadata")
        }
        other => return Err(bad(format!("unknown variant `.{}`", other.unwrap_or("")))),
    };
    if parts.next() != Some("aligned") {
        return Err(bad("expected `.aligned`".into()));
    }
    let shape = parts.next().unwrap_or("");
    let (m, n, k) = match shape {
        "m16n8k8" => (16, 8, 8),
        "m16n8k16" => (16, 8, 16),
        "m16n8k32" => (16, 8, 32),
        _ => return Err(bad(format!("shape `.{shape}`"))),
    };
    if (parts.next(), parts.next()) != (Some("row"), Some("col")) {
        return Err(bad("only the `.row.col` layout is supported".into()));
    }
    let mut next = parts.next().unwrap_or("");
    let satfinite = next == "satfinite";
    if satfinite {
        next = parts.next().unwrap_or("");
    }
    if next.starts_with("kind::") {
        return Err(bad(format!("qualifier `.{next}`")));
    }
    let types = [
        next,
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    ];
    if let Some(extra) = parts.next() {
        return Err(bad(format!("qualifier `.{extra}`")));
    }
    let [d, a, b, c] = types;
    let d = acc_type(d).ok_or_else(|| bad(format!("D type `.{d}`")))?;
    let a = elem_type(a).ok_or_else(|| bad(format!("A type `.{a}`")))?;
    let b = elem_type(b).ok_or_else(|| bad(format!("B type `.{b}`")))?;
    let c = acc_type(c).ok_or_else(|| bad(format!("C type `.{c}`")))?;
    let spec = MmaSpec {
        m,
        n,
        k,
        a,
        b,
        c,
        d,
        sparse,
        ordered_metadata,
        satfinite,
    };
    check_combination(&spec).map_err(bad)?;
    Ok(spec)
}

/// The combinations of the ISA's `mma` / `mma.sp` syntax tables that this module implements.
fn check_combination(s: &MmaSpec) -> Result<(), String> {
    use {AccType as T, ElemType as E};
    if (s.m, s.n) != (16, 8) {
        return Err(format!("shape m{}n{}k{}", s.m, s.n, s.k));
    }
    let int = matches!(s.a, E::S8 | E::U8);
    let fp8 = matches!(s.a, E::E4m3 | E::E5m2);
    if int != matches!(s.b, E::S8 | E::U8) || fp8 != matches!(s.b, E::E4m3 | E::E5m2) {
        return Err(format!("A type {:?} with B type {:?}", s.a, s.b));
    }
    if !int && !fp8 && s.a != s.b {
        return Err(format!("A type {:?} with B type {:?}", s.a, s.b));
    }
    if s.satfinite && !int {
        return Err("`.satfinite` on a floating-point mma".into());
    }
    let float_acc = |t: AccType| matches!(t, T::F16 | T::F32);
    let acc_ok = match s.a {
        E::S8 | E::U8 => s.c == T::S32 && s.d == T::S32,
        E::Bf16 => s.c == T::F32 && s.d == T::F32,
        E::F16 | E::E4m3 | E::E5m2 => float_acc(s.c) && float_acc(s.d),
    };
    if !acc_ok {
        return Err(format!(
            "C/D types {:?}/{:?} with {:?} inputs",
            s.c, s.d, s.a
        ));
    }
    if s.sparse && s.c != s.d {
        return Err("mma.sp needs the same C and D types".into());
    }
    let shape_ok = match (s.sparse, elem_bits(s.a), s.k) {
        (false, 16, 8 | 16) | (false, 8, 16 | 32) => true,
        // Sparse: only the 16-bit m16n8k32 form (2:4 A, selector 0 or 1) is implemented.
        (true, 16, 32) => true,
        _ => false,
    };
    if !shape_ok {
        let v = if s.sparse { "mma.sp" } else { "mma" };
        return Err(format!(
            "{v} m{}n{}k{} with {:?} inputs",
            s.m, s.n, s.k, s.a
        ));
    }
    Ok(())
}

impl MmaSpec {
    /// How many 32-bit registers each lane supplies for A, B, C and receives for D.
    pub fn regs(&self) -> (usize, usize, usize, usize) {
        let acc = |t: AccType| if t == AccType::F16 { 2 } else { 4 };
        // 32 lanes x 32 bits = 1024 bits per register across the warp.
        let a = self.m * self.stored_k() * elem_bits(self.a) / 1024;
        let b = self.k * self.n * elem_bits(self.b) / 1024;
        (a, b, acc(self.c), acc(self.d))
    }

    /// Columns of A held in registers: K, or K/2 for the 2:4-compressed A of `mma.sp`.
    fn stored_k(&self) -> usize {
        if self.sparse {
            self.k / 2
        } else {
            self.k
        }
    }
}

/// Row and stored column of element `w` of A register `r` in `lane` (`e` elements per register).
fn a_index(lane: usize, r: usize, w: usize, e: usize) -> (usize, usize) {
    (
        lane / 4 + 8 * (r & 1),
        (lane % 4) * e + w + 4 * e * (r >> 1),
    )
}

/// Row (k) and column (n) of element `w` of B register `r` in `lane`.
fn b_index(lane: usize, r: usize, w: usize, e: usize) -> (usize, usize) {
    ((lane % 4) * e + w + 4 * e * r, lane / 4)
}

/// Row and column of accumulator element `i` (0..4) of `lane`.
fn c_index(lane: usize, i: usize) -> (usize, usize) {
    (lane / 4 + 8 * (i >> 1), 2 * (lane % 4) + (i & 1))
}

/// Element `w` of width `bits` from a packed register.
fn field(reg: u32, w: usize, bits: usize) -> u32 {
    (reg >> (w * bits)) & ((1u64 << bits) - 1) as u32
}

fn check_operand(name: &str, regs: &[Vec<u32>], want: usize) -> Result<(), String> {
    if regs.len() != 32 {
        return Err(format!(
            "mma operand {name}: {} lanes, expected 32",
            regs.len()
        ));
    }
    match regs.iter().position(|r| r.len() != want) {
        Some(lane) => Err(format!(
            "mma operand {name}: lane {lane} has {} registers, expected {want}",
            regs[lane].len()
        )),
        None => Ok(()),
    }
}

/// Executes one warp-wide mma. a[lane], b[lane], c[lane] hold that lane's operand registers
/// (lengths per regs()). For sparse (mma.sp) `meta` is Some((e[lane] metadata register values,
/// sparsity selector immediate)). Returns d[lane].
///
/// Err for an unsupported spec, wrong lane or register counts, metadata missing (mma.sp) or
/// given (dense), a selector other than 0/1, and metadata the ISA calls undefined (two equal
/// indices in a chunk; decreasing indices under `::ordered_metadata`).
pub fn mma(
    spec: &MmaSpec,
    a: &[Vec<u32>],
    b: &[Vec<u32>],
    c: &[Vec<u32>],
    meta: Option<(&[u32], u32)>,
) -> Result<Vec<Vec<u32>>, String> {
    check_combination(spec)?;
    let (na, nb, nc, nd) = spec.regs();
    check_operand("A", a, na)?;
    check_operand("B", b, nb)?;
    check_operand("C", c, nc)?;
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let (abits, bbits) = (elem_bits(spec.a), elem_bits(spec.b));
    let (ae, be) = (32 / abits, 32 / bbits);

    // Decode the stored A (m x stored_k) and B (k x n) once. f64 holds every input exactly, and
    // every product exactly too (at most 22 significant bits, exponents within 2^-266..2^256).
    let sk = spec.stored_k();
    let mut a_val = vec![0.0; m * sk];
    for (lane, regs) in a.iter().enumerate() {
        for (r, &reg) in regs.iter().enumerate() {
            for w in 0..ae {
                let (row, col) = a_index(lane, r, w, ae);
                a_val[row * sk + col] = decode_elem(spec.a, field(reg, w, abits));
            }
        }
    }
    let mut b_val = vec![0.0; k * n];
    for (lane, regs) in b.iter().enumerate() {
        for (r, &reg) in regs.iter().enumerate() {
            for w in 0..be {
                let (kk, col) = b_index(lane, r, w, be);
                b_val[kk * n + col] = decode_elem(spec.b, field(reg, w, bbits));
            }
        }
    }

    // The terms of each row of A as (k index, index into a_val). For mma.sp only the stored
    // values take part: the pruned positions are never multiplied (so 0 * inf cannot arise).
    let rows: Vec<Vec<(usize, usize)>> = match (spec.sparse, meta) {
        (false, None) => (0..m)
            .map(|r| (0..k).map(|kk| (kk, r * k + kk)).collect())
            .collect(),
        (true, Some((e, selector))) => sparse_rows(spec, e, selector)?,
        (false, Some(_)) => return Err("metadata given for a dense mma".into()),
        (true, None) => return Err("mma.sp needs metadata and a sparsity selector".into()),
    };

    let mut d = vec![vec![0u32; nd]; 32];
    for (lane, dregs) in d.iter_mut().enumerate() {
        for i in 0..4 {
            let (row, col) = c_index(lane, i);
            let c_val = match spec.c {
                AccType::F16 => decode_ieee(field(c[lane][i / 2], i % 2, 16), 5, 10, true),
                AccType::F32 => decode_ieee(c[lane][i], 8, 23, true),
                AccType::S32 => f64::from(c[lane][i] as i32),
            };
            let products = rows[row]
                .iter()
                .map(|&(kk, ai)| a_val[ai] * b_val[kk * n + col]);
            match spec.d {
                AccType::S32 => dregs[i] = dot_int(products, c_val, spec.satfinite),
                AccType::F32 => {
                    dregs[i] = (dot_float(products, c_val, 24, -149, 128, "mma")? as f32).to_bits()
                }
                AccType::F16 => {
                    let v = dot_float(products, c_val, 11, -24, 16, "mma")?;
                    dregs[i / 2] |= f16_bits(v) << (16 * (i % 2));
                }
            }
        }
    }
    Ok(d)
}

/// The terms of each row of the compressed A of `mma.sp` m16n8k32 (16-bit types), as
/// (dense k index, index into the stored 16x16 A), decoded from the metadata.
///
/// Per "Sparse matrix storage": each 4-wide chunk of a row of A holds two non-zeros, stored in
/// order as two consecutive compressed columns (compressed column `c` is slot `c % 2` of chunk
/// `c / 2`), and their positions are two 2-bit indices in one metadata nibble (slot 0 in bits
/// 0-1, slot 1 in bits 2-3). For m16n8k32 "a thread-pair within a group of four consecutive
/// threads contributes the sparsity metadata": selector 0 picks threads T0,T1, selector 1
/// T2,T3. Within the pair (Figure "Sparse MMA .m16n8k32 metadata layout for .f16/.bf16 type",
/// image-only in the ISA), the first thread covers dense columns 0-15 and the second 16-31;
/// bits 0-15 describe row groupID and bits 16-31 row groupID+8, nibble `j` for chunk `j`.
/// That reading of the figure is the one LLVM's sm_80 integration test
/// `sparse-mma-2-4-f16.mlir` (metadata 16x2xi16: lane loads `[quad][lane%2]` low and
/// `[quad+8][lane%2]` high) and Triton's `mma.sp` lowering use; tests reproduce the former's
/// hardware output.
fn sparse_rows(
    spec: &MmaSpec,
    e: &[u32],
    selector: u32,
) -> Result<Vec<Vec<(usize, usize)>>, String> {
    if e.len() != 32 {
        return Err(format!("mma.sp metadata: {} lanes, expected 32", e.len()));
    }
    if selector > 1 {
        return Err(format!(
            "mma.sp m16n8k32: sparsity selector {selector} (must be 0 or 1)"
        ));
    }
    let sk = spec.stored_k();
    let mut rows = Vec::with_capacity(spec.m);
    for row in 0..spec.m {
        let mut terms = Vec::with_capacity(sk);
        for chunk in 0..spec.k / 4 {
            let lane = 4 * (row % 8) + 2 * selector as usize + chunk / 4;
            let nibble = (e[lane] >> (16 * (row / 8) + 4 * (chunk % 4))) & 0xf;
            let (i0, i1) = ((nibble & 3) as usize, (nibble >> 2) as usize);
            // Equal indices are undefined ("0b0000, 0b0101, 0b1010, 0b1111 are invalid");
            // ::ordered_metadata additionally requires increasing indices.
            if i0 == i1 || (spec.ordered_metadata && i0 > i1) {
                return Err(format!(
                    "mma.sp: invalid metadata {nibble:#06b} for row {row}, columns {}..{} \
                     (lane {lane}, e = {:#010x})",
                    4 * chunk,
                    4 * chunk + 4,
                    e[lane]
                ));
            }
            terms.push((4 * chunk + i0, row * sk + 2 * chunk));
            terms.push((4 * chunk + i1, row * sk + 2 * chunk + 1));
        }
        rows.push(terms);
    }
    Ok(rows)
}

/// Integer dot product. The f64 sum is exact (integers below 2^53); then `.satfinite` clamps
/// and plain `.s32` wraps ("If `.satfinite` is not specified, the accumulated value is wrapped
/// instead").
fn dot_int(products: impl Iterator<Item = f64>, c: f64, satfinite: bool) -> u32 {
    let sum = products.fold(c, |s, p| s + p) as i64;
    if satfinite {
        sum.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32 as u32
    } else {
        sum as i32 as u32
    }
}

/// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].shared.b16: `count` is 1, 2 or 4; rows[i] is
/// the 16 bytes read at the row address supplied by lane i (rows.len() == 8*count: lanes 0-7
/// address matrix 0's rows, 8-15 matrix 1's, ...). Returns per lane its `count` destination
/// registers (a missing row reads as zeros).
///
/// Per the ISA: "A group of four threads loads an entire row of the matrix", thread 0 receiving
/// the first fragment, so lane l gets row l/4, columns 2*(l%4) and 2*(l%4)+1 (the lower column
/// in the low half; memory is little-endian). `.trans` loads the matrix "in column-major
/// format": lane l gets the same position of the transpose, i.e. elements (2*(l%4), l/4) and
/// (2*(l%4)+1, l/4) of the stored rows.
pub fn ldmatrix(count: usize, trans: bool, rows: &[[u8; 16]]) -> Vec<Vec<u32>> {
    let elem = |mat: usize, row: usize, col: usize| -> u32 {
        rows.get(8 * mat + row).map_or(0, |r| {
            u32::from(u16::from_le_bytes([r[2 * col], r[2 * col + 1]]))
        })
    };
    (0..32)
        .map(|lane| {
            let (r, c) = (lane / 4, 2 * (lane % 4));
            (0..count)
                .map(|mat| {
                    let (lo, hi) = if trans {
                        (elem(mat, c, r), elem(mat, c + 1, r))
                    } else {
                        (elem(mat, r, c), elem(mat, r, c + 1))
                    };
                    lo | (hi << 16)
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
#[path = "matrix_tests.rs"]
mod tests;
