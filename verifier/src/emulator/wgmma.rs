//! Hopper's warpgroup matrix multiply-accumulate (`wgmma.mma_async`) as pure functions: A and B
//! read from the CTA's shared memory through matrix descriptors (or A from registers), the 128
//! threads' accumulator registers updated in place.
//!
//! Registers hold bits as in [`super::matrix`]: `.f32` values are `f32::to_bits`, packed `.f16`
//! pairs hold element 0 in the low half, packed 8-bit values element 0 in the lowest byte.
//!
//! Sources: NVIDIA PTX ISA, section 9.7.15 "Asynchronous Warpgroup Level Matrix Multiply-Accumulate
//! Instructions" (9.7.15.5.1 "Register Fragments and Shared Memory Matrix Layouts", 9.7.15.5.2
//! `wgmma.mma_async`), cross-checked with CUTLASS's CuTe: `include/cute/arch/mma_sm90_desc.hpp`
//! (`GmmaDescriptor`), `include/cute/atom/mma_traits_sm90_gmma.hpp` (`Layout_{K,MN}_*_Atom`,
//! `make_gmma_desc`, `CLayout_64xN`, `ALayout_64x16/64x32`), `include/cute/swizzle.hpp` and
//! `include/cute/pointer_swizzle.hpp` (`swizzle_ptr`).
//!
//! **Descriptor** ("Matrix Descriptor Format"): bits 0-13 the start address, 16-29 the leading
//! dimension byte offset (LBO), 32-45 the stride dimension byte offset (SBO), each encoded as
//! `(x & 0x3FFFF) >> 4`; bits 49-51 the base offset; bits 62-63 the swizzle mode (0 none, 1 128B,
//! 2 64B, 3 32B). The other bits belong to no field and must be 0 here.
//!
//! **Layouts** ("Canonical Layouts", the ISA's table in CuTe notation; `make_gmma_desc`'s comment
//! gives the same table). `T` = elements per 16 bytes, `W` = 16-byte chunks per swizzle row (1
//! without swizzling, 2, 4, 8 for 32B, 64B, 128B); A is read as (m, k), B as (n, k):
//! - K-major, none:       `((8,m),(T,2k)):((1T,SBO),(1,LBO))`: 8 rows of 16 bytes, 8-row groups
//!   SBO apart, the second 16-byte K chunk LBO away;
//! - K-major, swizzled:   `((8,m),(T,2k)):((WT,SBO),(1,T))`: rows of 16W bytes, 8-row groups SBO
//!   apart, K contiguous along the row; LBO "not used, assumed to be 1";
//! - MN-major, none:      `((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))`: T MN-contiguous elements by 8 K
//!   rows of 16 bytes, the next T of MN SBO away, the next 8 K rows LBO away;
//! - MN-major, swizzled:  `((T,W,m),(8,k)):((1,T,LBO),(WT,SBO))`: one 16W-byte row of W*T
//!   MN-contiguous elements per K index, 8 K rows per atom; the next W*T of MN LBO away, the next
//!   8 K rows SBO away.
//!
//! The text tables "Leading/Stride Dimension Byte Offset" say the same (MN-major LBO: interleave
//! "offset from the first 8 columns to the next 8 columns", swizzled "from the first
//! (swizzle-byte-size/16) rows to the next"; MN-major SBO: interleave "from the first row to the
//! next row", swizzled "from the first 8 columns to the next 8 columns"; K-major SBO "from the
//! first 8 rows to the next 8 rows"), and so does the stride extraction of `make_gmma_desc` (MN
//! INTERLEAVE: SBO = MN stride, LBO = K stride; MN swizzled: the reverse).
//!
//! **Swizzle**: the linear byte address is composed with `Swizzle<B,4,3>`, B = log2 W: address
//! bits 4..4+B are XORed with bits 7..7+B. CuTe applies it to the absolute shared-memory address
//! (`swizzle_ptr`: "Arch chose to design hardware with position-dependent swizzles"), and the ISA's
//! base offset 0 means "the repeating pattern starts" on a 1024/512/256-byte boundary, so with base
//! offset 0 the XOR takes absolute address bits. A nonzero base offset (pattern starting
//! elsewhere) is refused: the ISA gives its encoding but no address formula. The emulator's
//! shared addresses start at 0, so offsets into `shared` are absolute addresses.
//! A descriptor whose start is advanced inside a swizzle row (CuTe's `DescriptorIterator` adds
//! the k-block's offset to the start, e.g. +32 bytes for the second k16 slice of a 64-byte row) is
//! fine; a slice that would run past the end of the row is refused (not a canonical layout).
//!
//! **D fragment** ("Matrix Fragments for wgmma .m64nNk16/k32", figures 149/153, image-only in the
//! ISA; CuTe `CLayout_64xN = ((4,8,4),(2,2,N/8)):((128,1,16),(64,8,512))` over column-major
//! 64xN): element `i` (0..N/2) of thread `t` is row `16*(t/32) + (t%32)/4 + 8*((i/2)%2)`, column
//! `8*(i/4) + 2*(t%4) + i%2`; an `.f16` D packs elements 2j (low) and 2j+1 into register j.
//!
//! **A in registers** (figures 148/152; CuTe `ALayout_64x16`/`ALayout_64x32`): warp w holds rows
//! 16w..16w+15 in mma.sync's A layout: element `w` of register `r` (e per register) of thread `t`
//! is row `16*(t/32) + (t%32)/4 + 8*(r%2)`, column `e*(t%4) + w + 4e*(r/2)`.
//!
//! Supported: `m64nNk16` with `.f16` (D `.f16`/`.f32`) or `.bf16` (D `.f32`), `m64nNk32` with
//! `.e4m3`/`.e5m2` in any combination (D `.f16`/`.f32`), N a multiple of 8 in 8..=256. `imm-trans`
//! only for 16-bit types (ISA: "only supported for the wgmma.mma_async variants with .f16/.bf16
//! types on matrices accessed from shared memory"). Not supported: tf32, integer, b1, `.sp`.
//!
//! Arithmetic is that of [`super::matrix`] (the helpers both share live in `exact`): inputs and
//! products exact in f64, their sum with C exact, rounded once to nearest even to D's type: the
//! ideal result, which tensor cores approximate ("Precision and rounding" leaves order and
//! rounding unspecified).

use super::exact::{decode_elem, decode_ieee, dot_float, f16_bits};
use super::matrix::{acc_type, elem_type, AccType, ElemType};

/// M of every wgmma shape.
pub const M: usize = 64;
/// Threads of a warpgroup.
pub const THREADS: usize = 128;

/// A parsed `wgmma.mma_async...` opcode.
#[derive(Debug, Clone, PartialEq)]
pub struct WgmmaSpec {
    /// N: a multiple of 8 in 8..=256.
    pub n: usize,
    /// K: 16 for f16/bf16, 32 for e4m3/e5m2.
    pub k: usize,
    pub a: ElemType,
    pub b: ElemType,
    pub d: AccType,
    /// A comes from registers ([`wgmma_reg_a`]) rather than a descriptor ([`wgmma`]). The opcode
    /// does not say which (the operand list does), so [`parse_wgmma`] leaves it false.
    pub a_from_registers: bool,
}

fn is_16bit(t: ElemType) -> bool {
    matches!(t, ElemType::F16 | ElemType::Bf16)
}

fn elem_bytes(t: ElemType) -> usize {
    if is_16bit(t) {
        2
    } else {
        1
    }
}

/// Parses the full opcode text, e.g. "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16" or
/// "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3". Err(message) naming what is not
/// supported.
pub fn parse_wgmma(opcode: &str) -> Result<WgmmaSpec, String> {
    let bad = |what: String| format!("unsupported wgmma `{opcode}`: {what}");
    let mut parts = opcode.trim().split('.');
    if (parts.next(), parts.next()) != (Some("wgmma"), Some("mma_async")) {
        return Err(bad("not a wgmma.mma_async instruction".into()));
    }
    match parts.next() {
        Some("sync") => {}
        Some("sp") => return Err(bad("the sparse `.sp` variant".into())),
        other => {
            return Err(bad(format!(
                "expected `.sync`, found `.{}`",
                other.unwrap_or("")
            )))
        }
    }
    if parts.next() != Some("aligned") {
        return Err(bad("expected `.aligned`".into()));
    }
    let shape = parts.next().unwrap_or("");
    let (n, k) = shape
        .strip_prefix("m64n")
        .and_then(|rest| rest.split_once('k'))
        .and_then(|(n, k)| Some((n.parse::<usize>().ok()?, k.parse::<usize>().ok()?)))
        .ok_or_else(|| bad(format!("shape `.{shape}`")))?;
    let rest: Vec<&str> = parts.collect();
    let [d, a, b] = rest[..] else {
        return Err(bad(format!(
            "expected `.dtype.atype.btype` after the shape, found `.{}`",
            rest.join(".")
        )));
    };
    let spec = WgmmaSpec {
        n,
        k,
        d: acc_type(d).ok_or_else(|| bad(format!("D type `.{d}`")))?,
        a: elem_type(a).ok_or_else(|| bad(format!("A type `.{a}`")))?,
        b: elem_type(b).ok_or_else(|| bad(format!("B type `.{b}`")))?,
        a_from_registers: false,
    };
    check_spec(&spec).map_err(bad)?;
    Ok(spec)
}

/// The combinations of the ISA's `wgmma.mma_async` syntax that this module implements.
fn check_spec(s: &WgmmaSpec) -> Result<(), String> {
    use {AccType as T, ElemType as E};
    let fp8 = |t: ElemType| matches!(t, E::E4m3 | E::E5m2);
    let types_ok = match s.a {
        E::F16 => s.b == E::F16 && matches!(s.d, T::F16 | T::F32),
        E::Bf16 => s.b == E::Bf16 && s.d == T::F32,
        E::E4m3 | E::E5m2 => fp8(s.b) && matches!(s.d, T::F16 | T::F32),
        E::S8 | E::U8 => false,
    };
    if !types_ok {
        return Err(format!(
            "types D {:?}, A {:?}, B {:?} (supported: f16 with f16/f32 D, bf16 with f32 D, \
             e4m3/e5m2 with f16/f32 D)",
            s.d, s.a, s.b
        ));
    }
    let k = if is_16bit(s.a) { 16 } else { 32 };
    if s.k != k {
        return Err(format!("K = {} with {:?} inputs (must be {k})", s.k, s.a));
    }
    if !s.n.is_multiple_of(8) || !(8..=256).contains(&s.n) {
        return Err(format!("N = {} (must be a multiple of 8 in 8..=256)", s.n));
    }
    Ok(())
}

impl WgmmaSpec {
    /// 32-bit accumulator registers per thread: N/2 for an f32 D, N/4 for an f16 D.
    pub fn d_regs(&self) -> usize {
        match self.d {
            AccType::F16 => self.n / 4,
            AccType::F32 | AccType::S32 => self.n / 2,
        }
    }

    /// 32-bit A registers per thread in the register-A form (64 x K elements over 128 threads).
    pub fn a_regs(&self) -> usize {
        M * self.k * elem_bytes(self.a) / (4 * THREADS)
    }
}

/// The swizzling mode of a matrix descriptor (bits 62-63).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swizzle {
    None,
    B32,
    B64,
    B128,
}

impl Swizzle {
    /// 16-byte chunks per swizzle row: 1 (no swizzling), 2, 4, 8.
    fn chunks(self) -> usize {
        match self {
            Swizzle::None => 1,
            Swizzle::B32 => 2,
            Swizzle::B64 => 4,
            Swizzle::B128 => 8,
        }
    }
}

/// A decoded matrix descriptor; addresses and offsets in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    pub start: usize,
    /// Leading dimension byte offset.
    pub lbo: usize,
    /// Stride dimension byte offset.
    pub sbo: usize,
    pub base_offset: u32,
    pub swizzle: Swizzle,
}

/// The bits that belong to a descriptor field.
const DESC_FIELDS: u64 = 0x3fff | (0x3fff << 16) | (0x3fff << 32) | (0x7 << 49) | (0x3 << 62);

/// Decodes a 64-bit matrix descriptor. Err if a bit outside the fields is set.
pub fn decode_descriptor(desc: u64) -> Result<Descriptor, String> {
    let stray = desc & !DESC_FIELDS;
    if stray != 0 {
        return Err(format!(
            "matrix descriptor {desc:#018x} sets bits {stray:#018x} outside its fields (start \
             0-13, LBO 16-29, SBO 32-45, base offset 49-51, swizzle 62-63)"
        ));
    }
    let field = |shift: u32| ((desc >> shift) & 0x3fff) as usize * 16;
    Ok(Descriptor {
        start: field(0),
        lbo: field(16),
        sbo: field(32),
        base_offset: ((desc >> 49) & 7) as u32,
        swizzle: match desc >> 62 {
            0 => Swizzle::None,
            1 => Swizzle::B128,
            2 => Swizzle::B64,
            _ => Swizzle::B32,
        },
    })
}

/// The shared-memory byte address of element (mn, k) of an operand (mn: the row of A or the
/// column of B) with `eb`-byte elements, per the canonical layouts and the swizzle (module doc).
fn element_address(
    d: &Descriptor,
    mn_major: bool,
    mn: usize,
    k: usize,
    eb: usize,
) -> Result<usize, String> {
    let t = 16 / eb;
    let w = d.swizzle.chunks();
    let row = 16 * w;
    // (offset within one 16W-byte row, offset of that row)
    let (in_row, rows) = match (mn_major, d.swizzle) {
        // ((8,m),(T,2k)):((1T,SBO),(1,LBO))
        (false, Swizzle::None) => (
            (k % t) * eb,
            (mn % 8) * 16 + (mn / 8) * d.sbo + (k / t) * d.lbo,
        ),
        // ((8,m),(T,2k)):((WT,SBO),(1,T))
        (false, _) => (
            (k / t) * 16 + (k % t) * eb,
            (mn % 8) * row + (mn / 8) * d.sbo,
        ),
        // ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))
        (true, Swizzle::None) => (
            (mn % t) * eb,
            (mn / t) * d.sbo + (k % 8) * 16 + (k / 8) * d.lbo,
        ),
        // ((T,W,m),(8,k)):((1,T,LBO),(WT,SBO))
        (true, _) => (
            (mn / t % w) * 16 + (mn % t) * eb,
            (mn / (t * w)) * d.lbo + (k % 8) * row + (k / 8) * d.sbo,
        ),
    };
    if d.start % row + in_row >= row {
        return Err(format!(
            "element ({mn}, {k}) lies {in_row} bytes into a {row}-byte swizzle row that the \
             start address {:#x} enters at byte {}: the operand runs past the row (not a \
             canonical layout)",
            d.start,
            d.start % row
        ));
    }
    let linear = d.start + in_row + rows;
    // Swizzle<B,4,3>: bits 4..4+B ^= bits 7..7+B (B = log2 W; none for W = 1).
    Ok(linear ^ (((linear >> 7) & (w - 1)) << 4))
}

/// Reads an operand of `mns` x K elements (A: 64 x K; B: N x K, i.e. B transposed) from shared
/// memory as values, negated if `negate`. Index `mn * k + kk`.
fn load_operand(
    name: &str,
    t: ElemType,
    desc: u64,
    shared: &[u8],
    (mns, k): (usize, usize),
    mn_major: bool,
    negate: bool,
) -> Result<Vec<f64>, String> {
    let err = |e: String| format!("wgmma operand {name}: {e}");
    let d = decode_descriptor(desc).map_err(err)?;
    if d.swizzle != Swizzle::None && d.base_offset != 0 {
        return Err(err(format!(
            "matrix base offset {} (descriptor {desc:#018x}) is not supported: only swizzle \
             patterns that start on their natural boundary (base offset 0)",
            d.base_offset
        )));
    }
    let eb = elem_bytes(t);
    let mut out = Vec::with_capacity(mns * k);
    for mn in 0..mns {
        for kk in 0..k {
            let addr = element_address(&d, mn_major, mn, kk, eb).map_err(err)?;
            let bytes = shared.get(addr..addr + eb).ok_or_else(|| {
                err(format!(
                    "element ({mn}, {kk}) at shared address {addr:#x} lies outside the {} bytes \
                     of shared memory (descriptor {desc:#018x})",
                    shared.len()
                ))
            })?;
            let bits = bytes
                .iter()
                .rev()
                .fold(0u32, |acc, &byte| (acc << 8) | u32::from(byte));
            let v = decode_elem(t, bits);
            out.push(if negate { -v } else { v });
        }
    }
    Ok(out)
}

/// Row and column of accumulator element `i` of thread `t` (module doc, "D fragment").
fn d_index(t: usize, i: usize) -> (usize, usize) {
    (
        16 * (t / 32) + (t % 32) / 4 + 8 * ((i / 2) % 2),
        8 * (i / 4) + 2 * (t % 4) + i % 2,
    )
}

/// Row and column of element `w` of A register `r` of thread `t`, `e` elements per register.
fn a_index(t: usize, r: usize, w: usize, e: usize) -> (usize, usize) {
    (
        16 * (t / 32) + (t % 32) / 4 + 8 * (r % 2),
        e * (t % 4) + w + 4 * e * (r / 2),
    )
}

fn scale_sign(name: &str, v: i32) -> Result<bool, String> {
    match v {
        1 => Ok(false),
        -1 => Ok(true),
        _ => Err(format!("wgmma: {name} = {v} (must be 1 or -1)")),
    }
}

fn check_transpose(spec: &WgmmaSpec, trans_a: bool, trans_b: bool) -> Result<(), String> {
    if (trans_a || trans_b) && !is_16bit(spec.a) {
        return Err(format!(
            "wgmma: imm-trans-{} = 1 with {:?} inputs (transposition is only supported for \
             .f16/.bf16)",
            if trans_a { "a" } else { "b" },
            spec.a
        ));
    }
    Ok(())
}

fn check_accumulators(spec: &WgmmaSpec, d: &[Vec<u32>]) -> Result<(), String> {
    if d.len() != THREADS {
        return Err(format!(
            "wgmma accumulators: {} threads, expected {THREADS}",
            d.len()
        ));
    }
    let want = spec.d_regs();
    match d.iter().position(|r| r.len() != want) {
        Some(t) => Err(format!(
            "wgmma accumulators: thread {t} has {} registers, expected {want}",
            d[t].len()
        )),
        None => Ok(()),
    }
}

/// One warpgroup-wide `wgmma.mma_async` with A and B in shared memory (descriptors).
///
/// `shared` is the CTA's whole shared memory (offsets are addresses). `d[t]` (t in 0..128, the
/// warpgroup's threads in order) holds thread t's D registers, updated in place: D = A*B, plus D
/// if `scale_d`. `imm_scale_a`/`imm_scale_b` are 1 or -1 (negate A / B); `trans_a`/`trans_b` are
/// the imm-trans flags (0: K-major, 1: MN-major), 16-bit types only. The descriptors must be the
/// same in every warp of the warpgroup (the caller's check).
///
/// Err for an unsupported spec, wrong thread or register counts, scale or transpose values the
/// ISA does not allow, a malformed descriptor, and elements outside `shared`. On Err `d` is
/// unchanged.
#[allow(clippy::too_many_arguments)]
pub fn wgmma(
    spec: &WgmmaSpec,
    desc_a: u64,
    desc_b: u64,
    shared: &[u8],
    d: &mut [Vec<u32>],
    scale_d: bool,
    imm_scale_a: i32,
    imm_scale_b: i32,
    trans_a: bool,
    trans_b: bool,
) -> Result<(), String> {
    let (neg_a, neg_b) = check_call(spec, false, d, imm_scale_a, imm_scale_b, trans_a, trans_b)?;
    let a = load_operand("A", spec.a, desc_a, shared, (M, spec.k), trans_a, neg_a)?;
    let b = load_b(spec, desc_b, shared, trans_b, neg_b)?;
    accumulate(spec, &a, &b, d, scale_d)
}

/// The register-A form: `a[t]` holds thread t's A registers ([`WgmmaSpec::a_regs`], the fragment
/// in the module doc), B comes from shared memory; otherwise as [`wgmma`]. Needs
/// `spec.a_from_registers`.
#[allow(clippy::too_many_arguments)]
pub fn wgmma_reg_a(
    spec: &WgmmaSpec,
    a: &[Vec<u32>],
    desc_b: u64,
    shared: &[u8],
    d: &mut [Vec<u32>],
    scale_d: bool,
    imm_scale_a: i32,
    imm_scale_b: i32,
    trans_b: bool,
) -> Result<(), String> {
    let (neg_a, neg_b) = check_call(spec, true, d, imm_scale_a, imm_scale_b, false, trans_b)?;
    let nregs = spec.a_regs();
    if a.len() != THREADS {
        return Err(format!(
            "wgmma operand A: {} threads, expected {THREADS}",
            a.len()
        ));
    }
    if let Some(t) = a.iter().position(|r| r.len() != nregs) {
        return Err(format!(
            "wgmma operand A: thread {t} has {} registers, expected {nregs}",
            a[t].len()
        ));
    }
    let bits = 8 * elem_bytes(spec.a);
    let e = 32 / bits;
    let mut a_val = vec![0.0; M * spec.k];
    for (t, regs) in a.iter().enumerate() {
        for (r, &reg) in regs.iter().enumerate() {
            for w in 0..e {
                let (row, col) = a_index(t, r, w, e);
                let v = decode_elem(spec.a, (reg >> (w * bits)) & ((1u64 << bits) - 1) as u32);
                a_val[row * spec.k + col] = if neg_a { -v } else { v };
            }
        }
    }
    let b = load_b(spec, desc_b, shared, trans_b, neg_b)?;
    accumulate(spec, &a_val, &b, d, scale_d)
}

/// The checks both forms make first, in order: the spec (and that A comes from where the call
/// says, registers or not), the two imm-scale values, the transpose flags, the accumulators.
/// Returns whether to negate A and B.
fn check_call(
    spec: &WgmmaSpec,
    a_from_registers: bool,
    d: &[Vec<u32>],
    imm_scale_a: i32,
    imm_scale_b: i32,
    trans_a: bool,
    trans_b: bool,
) -> Result<(bool, bool), String> {
    check_spec(spec)?;
    if spec.a_from_registers != a_from_registers {
        return Err(if a_from_registers {
            "wgmma: the spec says A comes from a descriptor, but registers were given".into()
        } else {
            "wgmma: the spec says A comes from registers, but descriptors were given".into()
        });
    }
    let neg = (
        scale_sign("imm-scale-a", imm_scale_a)?,
        scale_sign("imm-scale-b", imm_scale_b)?,
    );
    check_transpose(spec, trans_a, trans_b)?;
    check_accumulators(spec, d)?;
    Ok(neg)
}

/// Operand B (N x K) from its descriptor, as [`load_operand`] reads it.
fn load_b(
    spec: &WgmmaSpec,
    desc_b: u64,
    shared: &[u8],
    trans_b: bool,
    neg_b: bool,
) -> Result<Vec<f64>, String> {
    load_operand(
        "B",
        spec.b,
        desc_b,
        shared,
        (spec.n, spec.k),
        trans_b,
        neg_b,
    )
}

/// D = A (64 x K) * B (given as N x K) (+ D), per thread and fragment element. `d` is checked.
fn accumulate(
    spec: &WgmmaSpec,
    a: &[f64],
    b: &[f64],
    d: &mut [Vec<u32>],
    scale_d: bool,
) -> Result<(), String> {
    let k = spec.k;
    let mut out = vec![vec![0u32; spec.d_regs()]; THREADS];
    for (t, (regs, new)) in d.iter().zip(out.iter_mut()).enumerate() {
        for i in 0..spec.n / 2 {
            let (row, col) = d_index(t, i);
            // Without scale-d, -0 is the identity of the sum (so all -0 products give -0).
            let c = match (scale_d, spec.d) {
                (false, _) => -0.0,
                (true, AccType::F16) => {
                    decode_ieee((regs[i / 2] >> (16 * (i % 2))) & 0xffff, 5, 10, true)
                }
                (true, _) => decode_ieee(regs[i], 8, 23, true),
            };
            let products = (0..k).map(|kk| a[row * k + kk] * b[col * k + kk]);
            match spec.d {
                AccType::F32 => {
                    new[i] = (dot_float(products, c, 24, -149, 128, "wgmma")? as f32).to_bits();
                }
                AccType::F16 => {
                    new[i / 2] |=
                        f16_bits(dot_float(products, c, 11, -24, 16, "wgmma")?) << (16 * (i % 2));
                }
                AccType::S32 => return Err("wgmma: integer accumulators are not supported".into()),
            }
        }
    }
    for (regs, new) in d.iter_mut().zip(out) {
        *regs = new;
    }
    Ok(())
}

#[cfg(test)]
#[path = "wgmma_tests.rs"]
mod tests;
