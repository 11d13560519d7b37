//! Tests for `wgmma`. Operands are laid out in shared memory by the ISA's canonical layouts
//! ("Canonical Layouts" table, CuTe notation) evaluated by a small generic CuTe-layout function
//! here, composed with CuTe's `Swizzle<B,4,3>::apply` on the absolute byte address, independently
//! of the module's explicit address formulas; descriptors are built as a kernel builds them;
//! accumulators (and register A) are distributed and gathered with CuTe's `CLayout_64xN`
//! (`ALayout_64x16` / `ALayout_64x32`), and D is compared with a plain matrix product. The last
//! tests transcribe the shared-memory stores, descriptors and fragment indexing of the suite's
//! four wgmma kernels (tasks/*/reference.cu) and check that they compute the product.

use super::*;
use crate::emulator::exact::Rng;
use half::{bf16, f16};

fn op(rest: &str) -> String {
    format!("wgmma.mma_async.sync.aligned.{rest}")
}

// ---- CuTe layouts ----

/// A flat CuTe layout `shape:stride` at the 1-D coordinate `i` (colexicographic; the last mode
/// is unbounded, so its shape entry is ignored).
fn cute(shape: &[usize], stride: &[usize], mut i: usize) -> usize {
    let mut off = 0;
    for (n, (&s, &d)) in shape.iter().zip(stride).enumerate() {
        if n + 1 == shape.len() {
            off += i * d;
        } else {
            off += (i % s) * d;
            i /= s;
        }
    }
    off
}

/// CuTe `Swizzle<B,4,3>::apply`: `offset ^ ((offset & yyy_msk) >> 3)`, yyy_msk = (2^B-1) << 7.
fn cute_swizzle(b: u32, offset: usize) -> usize {
    let yyy = ((1usize << b) - 1) << 7;
    offset ^ ((offset & yyy) >> 3)
}

/// (row, col) of accumulator value `i` of thread `t`: CuTe `CLayout_64xN =
/// ((4,8,4),(2,2,N/8)):((128,1,16),(64,8,512))` over the column-major 64 x N tile.
fn c_at(t: usize, i: usize) -> (usize, usize) {
    let idx = cute(&[4, 8, 4], &[128, 1, 16], t) + cute(&[2, 2, 0], &[64, 8, 512], i);
    (idx % 64, idx / 64)
}

/// (row, k) of A value `v` of thread `t`: CuTe `ALayout_64x16 = ((4,8,4),(2,2,2)):((128,1,16),
/// (64,8,512))` (16-bit) / `ALayout_64x32 = ((4,8,4),(4,2,2)):((256,1,16),(64,8,1024))` (8-bit)
/// over the column-major 64 x K tile.
fn a_at(t: usize, v: usize, eight_bit: bool) -> (usize, usize) {
    let idx = if eight_bit {
        cute(&[4, 8, 4], &[256, 1, 16], t) + cute(&[4, 2, 0], &[64, 8, 1024], v)
    } else {
        cute(&[4, 8, 4], &[128, 1, 16], t) + cute(&[2, 2, 0], &[64, 8, 512], v)
    };
    (idx % 64, idx / 64)
}

/// An operand tile in shared memory, described the way the ISA's canonical-layout table does.
#[derive(Clone, Copy, Debug)]
struct Tile {
    mn_major: bool,
    /// 16-byte chunks per swizzle row: 1 (none), 2 (32B), 4 (64B), 8 (128B).
    w: usize,
    /// Bytes.
    lbo: usize,
    sbo: usize,
    /// K-major swizzled only: bytes between swizzle atoms along K (CuTe's tile_to_shape).
    katom: usize,
    base: usize,
    /// Bytes per element.
    eb: usize,
}

impl Tile {
    /// Byte offset from `base`, before swizzling, of element (mn, k): the ISA table's canonical
    /// layouts (strides converted from bytes to elements; T = 16 / eb).
    fn linear(&self, mn: usize, k: usize) -> usize {
        let t = 16 / self.eb;
        let (w, lbo, sbo) = (self.w, self.lbo / self.eb, self.sbo / self.eb);
        let elems = match (self.mn_major, w) {
            // ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))
            (true, 1) => cute(&[t, 1, 0], &[1, t, sbo], mn) + cute(&[8, 0], &[t, lbo], k),
            // ((T,W,m),(8,k)):((1,T,LBO),(WT,SBO))
            (true, _) => cute(&[t, w, 0], &[1, t, lbo], mn) + cute(&[8, 0], &[w * t, sbo], k),
            // ((8,m),(T,2k)):((1T,SBO),(1,LBO))
            (false, 1) => cute(&[8, 0], &[t, sbo], mn) + cute(&[t, 0], &[1, lbo], k),
            // ((8,m),(T,2k)):((WT,SBO),(1,T)); atoms of W chunks repeat along K `katom` apart
            (false, _) => {
                cute(&[8, 0], &[w * t, sbo], mn)
                    + cute(&[t, w, 0], &[1, t, self.katom / self.eb], k)
            }
        };
        elems * self.eb
    }

    /// The shared-memory address of element (mn, k): the swizzle acts on the absolute address.
    fn addr(&self, mn: usize, k: usize) -> usize {
        cute_swizzle(self.w.trailing_zeros(), self.base + self.linear(mn, k))
    }

    /// The descriptor of the K slice starting at k0, as CuTe's DescriptorIterator advances it:
    /// start = the (unswizzled) address of element (0, k0).
    fn desc(&self, k0: usize) -> u64 {
        let code: u64 = match self.w {
            1 => 0,
            2 => 3,
            4 => 2,
            _ => 1,
        };
        let start = (self.base + self.linear(0, k0)) as u64;
        ((start & 0x3ffff) >> 4)
            | (((self.lbo as u64 & 0x3ffff) >> 4) << 16)
            | (((self.sbo as u64 & 0x3ffff) >> 4) << 32)
            | (code << 62)
    }

    /// Writes `vals` (mns x kt, raw element bits) into `mem`, asserting no two elements collide.
    fn store(&self, mem: &mut [u8], vals: &[u32], mns: usize, kt: usize) {
        let mut used = vec![false; mem.len()];
        for mn in 0..mns {
            for k in 0..kt {
                let a = self.addr(mn, k);
                for (j, byte) in vals[mn * kt + k].to_le_bytes()[..self.eb]
                    .iter()
                    .enumerate()
                {
                    assert!(!used[a + j], "test layout overlaps itself at {:#x}", a + j);
                    used[a + j] = true;
                    mem[a + j] = *byte;
                }
            }
        }
    }
}

/// A canonical tile of `mns` x `kt` elements at `base`; `alt` picks the other arrangement
/// (which of LBO / SBO is the small stride) and `pad` adds room between groups.
fn tile(
    mn_major: bool,
    w: usize,
    eb: usize,
    mns: usize,
    kt: usize,
    base: usize,
    alt: bool,
) -> Tile {
    let t = 16 / eb;
    let pad = if alt { 0 } else { 1 };
    let (lbo, sbo, katom) = match (mn_major, w) {
        // Core matrices of 128 bytes: K chunks LBO apart, 8-row groups SBO apart.
        (false, 1) if alt => (128 * mns.div_ceil(8), 128, 0),
        (false, 1) => (128 + 16 * pad, (kt / t) * (128 + 16 * pad), 0),
        // Atoms of 8 rows x 16W bytes; SBO between 8-row groups; LBO unused (garbage here).
        (false, _) => {
            let sbo = 128 * w * (1 + pad);
            (0x2340, sbo, sbo * mns.div_ceil(8))
        }
        // Core matrices of T (MN) x 8 (K): MN groups SBO apart, 8-K-row groups LBO apart.
        (true, 1) if alt => (128, 128 * (kt / 8), 0),
        (true, 1) => (128 * mns.div_ceil(t) + 16 * pad, 128, 0),
        // Atoms of W*T (MN) x 8 (K): MN atoms LBO apart, 8-K-row groups SBO apart.
        (true, _) if alt => (128 * w, 128 * w * mns.div_ceil(w * t), 0),
        (true, _) => (128 * w * (kt / 8), 128 * w, 0),
    };
    Tile {
        mn_major,
        w,
        lbo,
        sbo,
        katom,
        base,
        eb,
    }
}

/// Bytes a tile spans from its base.
fn span(t: &Tile, mns: usize, kt: usize) -> usize {
    let mut hi = 0;
    for mn in 0..mns {
        for k in 0..kt {
            hi = hi.max(t.addr(mn, k) - t.base + t.eb);
        }
    }
    hi
}

// ---- values ----

fn fp8_ref(t: ElemType, b: u32) -> f64 {
    let s = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = if t == ElemType::E4m3 {
        ((b >> 3) & 15, b & 7)
    } else {
        ((b >> 2) & 31, b & 3)
    };
    match t {
        ElemType::E4m3 if e == 15 && m == 7 => f64::NAN,
        ElemType::E4m3 if e == 0 => s * m as f64 / 8.0 * 2f64.powi(-6),
        ElemType::E4m3 => s * (1.0 + m as f64 / 8.0) * 2f64.powi(e as i32 - 7),
        _ if e == 31 => {
            if m == 0 {
                s * f64::INFINITY
            } else {
                f64::NAN
            }
        }
        _ if e == 0 => s * m as f64 / 4.0 * 2f64.powi(-14),
        _ => s * (1.0 + m as f64 / 4.0) * 2f64.powi(e as i32 - 15),
    }
}

/// The bits of `x` in type `t` (x must be representable).
fn enc(t: ElemType, x: f64) -> u32 {
    match t {
        ElemType::Bf16 => {
            let h = bf16::from_f64(x);
            assert_eq!(h.to_f64(), x, "{x} is not a bf16");
            u32::from(h.to_bits())
        }
        ElemType::F16 => {
            let h = f16::from_f64(x);
            assert_eq!(h.to_f64(), x, "{x} is not an f16");
            u32::from(h.to_bits())
        }
        _ => (0..256)
            .find(|&b| fp8_ref(t, b) == x && (x != 0.0 || (b == 0) == x.is_sign_positive()))
            .unwrap_or_else(|| panic!("{x} is not a {t:?}")),
    }
}

/// D's bits for `x`, which the test data make exact in D's type.
fn dbits(acc: AccType, x: f64) -> u32 {
    match acc {
        AccType::F16 => enc(ElemType::F16, x),
        _ => {
            assert_eq!(x as f32 as f64, x, "{x} is not an f32");
            (x as f32).to_bits()
        }
    }
}

/// Scatters a 64 x N matrix of D bits into the 128 threads' registers (CLayout_64xN).
fn scatter_d(acc: AccType, n: usize, m: &[u32]) -> Vec<Vec<u32>> {
    let per = if acc == AccType::F16 { 2 } else { 1 };
    (0..128)
        .map(|t| {
            let mut regs = vec![0u32; n / 2 / per];
            for i in 0..n / 2 {
                let (r, c) = c_at(t, i);
                regs[i / per] |= m[r * n + c] << (32 / per * (i % per));
            }
            regs
        })
        .collect()
}

/// Gathers the 64 x N matrix of D bits from the threads' registers (CLayout_64xN).
fn gather_d(acc: AccType, n: usize, d: &[Vec<u32>]) -> Vec<u32> {
    let (per, mask) = if acc == AccType::F16 {
        (2, 0xffff)
    } else {
        (1, u32::MAX)
    };
    let mut out = vec![None; 64 * n];
    for (t, regs) in d.iter().enumerate() {
        for i in 0..n / 2 {
            let (r, c) = c_at(t, i);
            assert!(out[r * n + c].is_none());
            out[r * n + c] = Some((regs[i / per] >> (32 / per * (i % per))) & mask);
        }
    }
    out.into_iter()
        .map(|v| v.unwrap_or_else(|| panic!("a D element is not held by any thread")))
        .collect()
}

/// Random operand values for type `t`, small enough that every sum below is exact.
fn values(rng: &mut Rng, t: ElemType, acc: AccType, count: usize) -> Vec<f64> {
    (0..count)
        .map(|_| match (t, acc) {
            (ElemType::E5m2, AccType::F16) => rng.int(-3, 3) as f64,
            (ElemType::E5m2, _) => rng.scaled(7, 0, 2),
            (ElemType::E4m3, AccType::F16) => rng.int(-3, 3) as f64,
            (ElemType::E4m3, _) => rng.scaled(15, 0, 2),
            (_, AccType::F16) => rng.int(-4, 4) as f64,
            _ => rng.scaled(8, 0, 3),
        })
        .collect()
}

/// A test problem: A (64 x kt), B as N x kt (B transposed), C (64 x N), all row-major values.
struct Problem {
    spec: WgmmaSpec,
    kt: usize,
    a: Vec<f64>,
    bt: Vec<f64>,
    c: Vec<f64>,
}

impl Problem {
    fn new(rng: &mut Rng, opcode: &str, steps: usize) -> Problem {
        let spec = parse_wgmma(opcode).unwrap();
        let kt = spec.k * steps;
        let a = values(rng, spec.a, spec.d, 64 * kt);
        let bt = values(rng, spec.b, spec.d, spec.n * kt);
        let c = (0..64 * spec.n)
            .map(|_| rng.int(-64, 64) as f64 / if spec.d == AccType::F16 { 1.0 } else { 16.0 })
            .collect();
        Problem { spec, kt, a, bt, c }
    }

    /// The exact C + sign * A B, as D bits.
    fn expected(&self, sign: f64, with_c: bool) -> Vec<u32> {
        let n = self.spec.n;
        (0..64 * n)
            .map(|idx| {
                let (r, col) = (idx / n, idx % n);
                let ab: f64 = (0..self.kt)
                    .map(|k| self.a[r * self.kt + k] * self.bt[col * self.kt + k])
                    .sum();
                let c = if with_c { self.c[idx] } else { 0.0 };
                dbits(self.spec.d, c + sign * ab)
            })
            .collect()
    }

    /// Lays A and B out as `ta` / `tb`, runs one wgmma per K slice (scale-d 1 throughout) and
    /// returns D's bits (64 x N).
    fn run(
        &self,
        ta: &Tile,
        tb: &Tile,
        mem_len: usize,
        scales: (i32, i32),
    ) -> Result<Vec<u32>, String> {
        self.run_with((ta, tb), (ta, tb), mem_len, scales)
    }

    /// As `run`, with the data stored by the `store` tiles and the descriptors and imm-trans
    /// flags taken from the `describe` tiles.
    fn run_with(
        &self,
        store: (&Tile, &Tile),
        describe: (&Tile, &Tile),
        mem_len: usize,
        scales: (i32, i32),
    ) -> Result<Vec<u32>, String> {
        let (s, n) = (&self.spec, self.spec.n);
        let mut mem = vec![0xffu8; mem_len];
        let bits = |t: ElemType, v: &[f64]| v.iter().map(|&x| enc(t, x)).collect::<Vec<_>>();
        store.0.store(&mut mem, &bits(s.a, &self.a), 64, self.kt);
        store.1.store(&mut mem, &bits(s.b, &self.bt), n, self.kt);
        let c: Vec<u32> = self.c.iter().map(|&x| dbits(s.d, x)).collect();
        let mut d = scatter_d(s.d, n, &c);
        let (ta, tb) = describe;
        for step in 0..self.kt / s.k {
            let k0 = step * s.k;
            wgmma(
                s,
                ta.desc(k0),
                tb.desc(k0),
                &mem,
                &mut d,
                true,
                scales.0,
                scales.1,
                ta.mn_major,
                tb.mn_major,
            )?;
        }
        Ok(gather_d(s.d, n, &d))
    }
}

/// Places A at 1024 (or 1024 + 48 without swizzling) and B on the next 1024-byte boundary after
/// a gap; returns the tiles and the shared-memory size.
fn place(
    p: &Problem,
    (a_mn, a_w, a_alt): (bool, usize, bool),
    (b_mn, b_w, b_alt): (bool, usize, bool),
) -> (Tile, Tile, usize) {
    let (ea, eb) = (elem_bytes(p.spec.a), elem_bytes(p.spec.b));
    let base_a = if a_w == 1 { 1024 + 48 } else { 1024 };
    let ta = tile(a_mn, a_w, ea, 64, p.kt, base_a, a_alt);
    let end_a = base_a + span(&ta, 64, p.kt);
    let base_b = end_a.div_ceil(1024) * 1024 + 1024 + if b_w == 1 { 16 } else { 0 };
    let tb = tile(b_mn, b_w, eb, p.spec.n, p.kt, base_b, b_alt);
    let len = base_b + span(&tb, p.spec.n, p.kt) + 512;
    (ta, tb, len)
}

// ---- parsing ----

#[test]
fn parse_accepts_supported_forms_and_counts_registers() {
    let s = parse_wgmma(&op("m64n128k16.f32.bf16.bf16")).unwrap();
    assert_eq!(
        s,
        WgmmaSpec {
            n: 128,
            k: 16,
            a: ElemType::Bf16,
            b: ElemType::Bf16,
            d: AccType::F32,
            a_from_registers: false
        }
    );
    assert_eq!((s.d_regs(), s.a_regs()), (64, 4));
    let s = parse_wgmma(&op("m64n64k16.f32.bf16.bf16")).unwrap();
    assert_eq!((s.n, s.d_regs()), (64, 32));
    let s = parse_wgmma(&op("m64n128k32.f32.e4m3.e4m3")).unwrap();
    assert_eq!(
        (s.k, s.a, s.b, s.d_regs(), s.a_regs()),
        (32, ElemType::E4m3, ElemType::E4m3, 64, 4)
    );
    let s = parse_wgmma(&op("m64n256k16.f16.f16.f16")).unwrap();
    assert_eq!((s.d, s.d_regs()), (AccType::F16, 64));
    let s = parse_wgmma(&op("m64n8k32.f16.e5m2.e4m3")).unwrap();
    assert_eq!(
        (s.n, s.a, s.b, s.d_regs()),
        (8, ElemType::E5m2, ElemType::E4m3, 2)
    );
    let s = parse_wgmma(&op("m64n24k16.f32.f16.f16")).unwrap();
    assert_eq!(s.d_regs(), 12);
}

#[test]
fn parse_rejects_unsupported_forms_naming_what() {
    for (text, what) in [
        (
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
            "not a wgmma",
        ),
        ("wgmma.fence.sync.aligned", "not a wgmma"),
        (
            "wgmma.mma_async.sp.sync.aligned.m64n64k32.f32.f16.f16",
            "sparse",
        ),
        ("wgmma.mma_async.aligned.m64n64k16.f32.f16.f16", "`.sync`"),
        ("wgmma.mma_async.sync.m64n64k16.f32.f16.f16", "`.aligned`"),
        (&op("m128n64k16.f32.f16.f16"), "shape"),
        (&op("m64n60k16.f32.f16.f16"), "N = 60"),
        (&op("m64n264k16.f32.f16.f16"), "N = 264"),
        (&op("m64n0k16.f32.f16.f16"), "N = 0"),
        (&op("m64n64k32.f32.bf16.bf16"), "K = 32"),
        (&op("m64n64k16.f32.e4m3.e4m3"), "K = 16"),
        (&op("m64n64k16.f16.bf16.bf16"), "types"),
        (&op("m64n64k16.f32.f16.bf16"), "types"),
        (&op("m64n64k32.f32.e4m3.f16"), "types"),
        (&op("m64n64k32.s32.s8.s8"), "types"),
        (&op("m64n64k32.satfinite.s32.s8.s8"), "`.dtype.atype.btype`"),
        (&op("m64n64k8.f32.tf32.tf32"), "A type `.tf32`"),
        (&op("m64n64k16.f32.f16"), "`.dtype.atype.btype`"),
        (&op("m64n64k16.f32.f16.f16.f16"), "`.dtype.atype.btype`"),
        (&op("m64n64k16.f64.f16.f16"), "D type `.f64`"),
    ] {
        let e = parse_wgmma(text).unwrap_err();
        assert!(e.contains(what), "`{text}`: {e}");
        assert!(e.contains(text), "the message names the opcode: {e}");
    }
}

#[test]
fn descriptor_fields_decode_and_stray_bits_are_refused() {
    let desc =
        (0x1234u64 >> 4) | ((4096u64 >> 4) << 16) | ((1024u64 >> 4) << 32) | (5 << 49) | (1 << 62);
    assert_eq!(
        decode_descriptor(desc).unwrap(),
        Descriptor {
            start: 0x1230,
            lbo: 4096,
            sbo: 1024,
            base_offset: 5,
            swizzle: Swizzle::B128
        }
    );
    for (code, sw) in [
        (0u64, Swizzle::None),
        (1, Swizzle::B128),
        (2, Swizzle::B64),
        (3, Swizzle::B32),
    ] {
        assert_eq!(decode_descriptor(code << 62).unwrap().swizzle, sw);
    }
    assert_eq!(decode_descriptor(0x3fff).unwrap().start, 0x3fff0);
    for bit in [14, 15, 30, 31, 46, 47, 48, 52, 61] {
        let e = decode_descriptor(1u64 << bit).unwrap_err();
        assert!(e.contains("outside its fields"), "{e}");
    }
}

// ---- layouts ----

/// Every combination of major-ness and swizzle mode for A and B (bf16, f32 D), two K slices
/// (the second addressed by advancing the descriptor's start, as CuTe does), and both
/// arrangements of the strides, against the matrix product.
#[test]
fn bf16_canonical_layouts_match_the_matrix_product() {
    let mut rng = Rng(1);
    let ns = [8, 16, 24, 64, 128, 256, 40, 72];
    let mut case = 0;
    for a_mn in [false, true] {
        for a_w in [1, 2, 4, 8] {
            for b_mn in [false, true] {
                for b_w in [1, 2, 4, 8] {
                    case += 1;
                    let n = ns[case % ns.len()];
                    let p = Problem::new(&mut rng, &op(&format!("m64n{n}k16.f32.bf16.bf16")), 2);
                    let alt = case % 3 == 0;
                    let (ta, tb, len) = place(&p, (a_mn, a_w, alt), (b_mn, b_w, !alt));
                    let got = p.run(&ta, &tb, len, (1, 1)).unwrap();
                    assert_eq!(got, p.expected(1.0, true), "A {ta:?}, B {tb:?}, n {n}");
                }
            }
        }
    }
}

#[test]
fn f16_inputs_with_f16_and_f32_accumulators() {
    let mut rng = Rng(2);
    for (opcode, a, b) in [
        ("m64n64k16.f16.f16.f16", (false, 8, false), (true, 8, false)),
        ("m64n96k16.f16.f16.f16", (true, 4, true), (false, 2, false)),
        ("m64n32k16.f32.f16.f16", (true, 1, false), (true, 2, true)),
    ] {
        let p = Problem::new(&mut rng, &op(opcode), 2);
        let (ta, tb, len) = place(&p, a, b);
        assert_eq!(
            p.run(&ta, &tb, len, (1, 1)).unwrap(),
            p.expected(1.0, true),
            "{opcode}"
        );
    }
}

/// FP8 is K-major only: 64B and 128B swizzles (the kernels' modes), 32B and none.
#[test]
fn fp8_k_major_layouts_match_the_matrix_product() {
    let mut rng = Rng(3);
    for (opcode, w) in [
        ("m64n128k32.f32.e4m3.e4m3", 4),
        ("m64n128k32.f32.e4m3.e4m3", 8),
        ("m64n64k32.f32.e5m2.e4m3", 8),
        ("m64n40k32.f32.e4m3.e5m2", 2),
        ("m64n16k32.f32.e5m2.e5m2", 1),
        ("m64n64k32.f16.e4m3.e4m3", 4),
        ("m64n256k32.f16.e4m3.e5m2", 8),
    ] {
        let p = Problem::new(&mut rng, &op(opcode), 2);
        let (ta, tb, len) = place(&p, (false, w, false), (false, w, true));
        assert_eq!(
            p.run(&ta, &tb, len, (1, 1)).unwrap(),
            p.expected(1.0, true),
            "{opcode} w {w}"
        );
    }
}

/// The tests can fail: a descriptor that misdescribes the data gives another D (or an error).
#[test]
fn misdescribed_layouts_give_other_results() {
    let mut rng = Rng(4);
    let p = Problem::new(&mut rng, &op("m64n64k16.f32.bf16.bf16"), 2);
    let good = p.expected(1.0, true);
    let differs = |store: (&Tile, &Tile), describe: (&Tile, &Tile), len: usize, what: &str| {
        assert_eq!(
            p.run_with(store, store, len, (1, 1)).unwrap(),
            good,
            "{what}: as stored"
        );
        if let Ok(d) = p.run_with(store, describe, len, (1, 1)) {
            assert_ne!(d, good, "{what}");
        }
    };
    let swap = |t: &Tile| Tile {
        lbo: t.sbo,
        sbo: t.lbo,
        ..*t
    };
    // 128B-swizzled data described as 64B and as 32B (same strides); 64B data as 128B.
    let (ta, tb, len) = place(&p, (false, 8, false), (true, 8, false));
    differs(
        (&ta, &tb),
        (&Tile { w: 4, ..ta }, &tb),
        len,
        "A: 128B data, 64B descriptor",
    );
    differs(
        (&ta, &tb),
        (&ta, &Tile { w: 2, ..tb }),
        len,
        "B: 128B data, 32B descriptor",
    );
    let (ta, tb, len) = place(&p, (false, 4, false), (false, 4, true));
    differs(
        (&ta, &tb),
        (&Tile { w: 8, ..ta }, &tb),
        len,
        "A: 64B data, 128B descriptor",
    );
    // LBO and SBO exchanged: MN-major interleaved and 128B, K-major interleaved.
    let (ta, tb, len) = place(&p, (true, 1, false), (true, 8, false));
    differs(
        (&ta, &tb),
        (&swap(&ta), &tb),
        len,
        "A: MN-major interleaved, LBO/SBO swapped",
    );
    differs(
        (&ta, &tb),
        (&ta, &swap(&tb)),
        len,
        "B: MN-major 128B, LBO/SBO swapped",
    );
    let (ta, tb, len) = place(&p, (false, 1, false), (false, 1, true));
    differs(
        (&ta, &tb),
        (&swap(&ta), &tb),
        len,
        "A: K-major interleaved, LBO/SBO swapped",
    );
    // The wrong major-ness (imm-trans) for K-major data.
    let (ta, tb, len) = place(&p, (false, 8, false), (false, 8, false));
    let mn = |t: &Tile| Tile {
        mn_major: true,
        ..*t
    };
    differs(
        (&ta, &tb),
        (&ta, &mn(&tb)),
        len,
        "B: K-major data, imm-trans-b 1",
    );
    differs(
        (&ta, &tb),
        (&mn(&ta), &tb),
        len,
        "A: K-major data, imm-trans-a 1",
    );
}

// ---- scale-d, imm-scale, register A ----

#[test]
fn scale_d_false_ignores_the_accumulator() {
    let mut rng = Rng(5);
    for opcode in ["m64n32k16.f32.bf16.bf16", "m64n32k16.f16.f16.f16"] {
        let mut p = Problem::new(&mut rng, &op(opcode), 1);
        let (ta, tb, len) = place(&p, (false, 8, false), (true, 8, false));
        let mut mem = vec![0xffu8; len];
        let bits = |t: ElemType, v: &[f64]| v.iter().map(|&x| enc(t, x)).collect::<Vec<_>>();
        ta.store(&mut mem, &bits(p.spec.a, &p.a), 64, 16);
        tb.store(&mut mem, &bits(p.spec.b, &p.bt), 32, 16);
        // D full of NaNs: not read.
        let mut d = vec![vec![0x7fc0_7fc0u32; p.spec.d_regs()]; 128];
        wgmma(
            &p.spec,
            ta.desc(0),
            tb.desc(0),
            &mem,
            &mut d,
            false,
            1,
            1,
            false,
            true,
        )
        .unwrap();
        assert_eq!(
            gather_d(p.spec.d, 32, &d),
            p.expected(1.0, false),
            "{opcode}"
        );
        // All products -0 (A = -0): D = -0 without scale-d, +0 with a +0 accumulator.
        p.a = vec![-0.0; 64 * 16];
        p.bt = vec![1.0; 32 * 16];
        ta.store(&mut mem, &bits(p.spec.a, &p.a), 64, 16);
        tb.store(&mut mem, &bits(p.spec.b, &p.bt), 32, 16);
        let neg_zero = if p.spec.d == AccType::F16 {
            0x8000
        } else {
            0x8000_0000
        };
        wgmma(
            &p.spec,
            ta.desc(0),
            tb.desc(0),
            &mem,
            &mut d,
            false,
            1,
            1,
            false,
            true,
        )
        .unwrap();
        assert!(
            gather_d(p.spec.d, 32, &d).iter().all(|&x| x == neg_zero),
            "{opcode}"
        );
        let mut d = vec![vec![0u32; p.spec.d_regs()]; 128];
        wgmma(
            &p.spec,
            ta.desc(0),
            tb.desc(0),
            &mem,
            &mut d,
            true,
            1,
            1,
            false,
            true,
        )
        .unwrap();
        assert!(
            gather_d(p.spec.d, 32, &d).iter().all(|&x| x == 0),
            "{opcode}"
        );
    }
}

#[test]
fn imm_scale_minus_one_negates() {
    let mut rng = Rng(6);
    let p = Problem::new(&mut rng, &op("m64n64k16.f32.bf16.bf16"), 2);
    let (ta, tb, len) = place(&p, (false, 4, false), (true, 8, false));
    assert_eq!(
        p.run(&ta, &tb, len, (-1, 1)).unwrap(),
        p.expected(-1.0, true)
    );
    assert_eq!(
        p.run(&ta, &tb, len, (1, -1)).unwrap(),
        p.expected(-1.0, true)
    );
    assert_eq!(
        p.run(&ta, &tb, len, (-1, -1)).unwrap(),
        p.expected(1.0, true)
    );
    assert_ne!(p.expected(-1.0, true), p.expected(1.0, true));
    let p = Problem::new(&mut rng, &op("m64n64k32.f32.e4m3.e4m3"), 1);
    let (ta, tb, len) = place(&p, (false, 8, false), (false, 8, false));
    assert_eq!(
        p.run(&ta, &tb, len, (1, -1)).unwrap(),
        p.expected(-1.0, true)
    );
}

/// Packs A (64 x K) into the 128 threads' registers by CuTe's ALayout.
fn pack_a(t: ElemType, k: usize, a: &[f64]) -> Vec<Vec<u32>> {
    let eight = elem_bytes(t) == 1;
    let (per, bits) = if eight { (4, 8) } else { (2, 16) };
    (0..128)
        .map(|th| {
            let mut regs = vec![0u32; 4];
            for v in 0..4 * per {
                let (r, kk) = a_at(th, v, eight);
                regs[v / per] |= enc(t, a[r * k + kk]) << (bits * (v % per));
            }
            regs
        })
        .collect()
}

#[test]
fn register_a_matches_the_matrix_product() {
    let mut rng = Rng(7);
    for opcode in [
        "m64n64k16.f32.bf16.bf16",
        "m64n48k16.f16.f16.f16",
        "m64n128k32.f32.e4m3.e5m2",
    ] {
        let p = Problem::new(&mut rng, &op(opcode), 1);
        let spec = WgmmaSpec {
            a_from_registers: true,
            ..p.spec.clone()
        };
        let trans_b = elem_bytes(spec.b) == 2;
        let (_, tb, len) = place(&p, (false, 8, false), (trans_b, 8, false));
        let mut mem = vec![0xffu8; len];
        let bt: Vec<u32> = p.bt.iter().map(|&x| enc(spec.b, x)).collect();
        tb.store(&mut mem, &bt, spec.n, spec.k);
        let a = pack_a(spec.a, spec.k, &p.a);
        let c: Vec<u32> = p.c.iter().map(|&x| dbits(spec.d, x)).collect();
        let mut d = scatter_d(spec.d, spec.n, &c);
        wgmma_reg_a(&spec, &a, tb.desc(0), &mem, &mut d, true, 1, 1, trans_b).unwrap();
        assert_eq!(
            gather_d(spec.d, spec.n, &d),
            p.expected(1.0, true),
            "{opcode}"
        );
        let mut d = scatter_d(spec.d, spec.n, &c);
        wgmma_reg_a(&spec, &a, tb.desc(0), &mem, &mut d, true, -1, 1, trans_b).unwrap();
        assert_eq!(
            gather_d(spec.d, spec.n, &d),
            p.expected(-1.0, true),
            "{opcode} negated"
        );
    }
}

/// One output element through a whole wgmma: exact sums rounded once.
#[test]
fn accumulation_is_exact_and_rounds_once() {
    let spec = parse_wgmma(&op("m64n8k16.f32.bf16.bf16")).unwrap();
    let ta = tile(false, 1, 2, 64, 16, 0, false);
    let tb = tile(false, 1, 2, 8, 16, 4096, false);
    let dot = |a0: &[f64], b0: &[f64], c00: f64| {
        let mut mem = vec![0u8; 8192];
        let (mut a, mut bt) = (vec![0.0; 64 * 16], vec![0.0; 8 * 16]);
        a[..a0.len()].copy_from_slice(a0);
        bt[..b0.len()].copy_from_slice(b0);
        ta.store(
            &mut mem,
            &a.iter()
                .map(|&x| enc(ElemType::Bf16, x))
                .collect::<Vec<_>>(),
            64,
            16,
        );
        tb.store(
            &mut mem,
            &bt.iter()
                .map(|&x| enc(ElemType::Bf16, x))
                .collect::<Vec<_>>(),
            8,
            16,
        );
        let mut c = vec![0u32; 64 * 8];
        c[0] = (c00 as f32).to_bits();
        let mut d = scatter_d(AccType::F32, 8, &c);
        wgmma(
            &spec,
            ta.desc(0),
            tb.desc(0),
            &mem,
            &mut d,
            true,
            1,
            1,
            false,
            false,
        )
        .unwrap();
        gather_d(AccType::F32, 8, &d)[0]
    };
    let p = |e: i32| 2f64.powi(e);
    // 2^200 + 2^-120 - 2^200: a naive f64 sum gives 0.
    assert_eq!(
        dot(&[p(100), p(-60), -p(100)], &[p(100), p(-60), p(100)], 0.0),
        (p(-120) as f32).to_bits()
    );
    // 1 + 2^-24 + 2^-80 rounds up to 1 + 2^-23 (rounding through f64 first would give 1.0).
    assert_eq!(dot(&[p(-12), p(-40)], &[p(-12), p(-40)], 1.0), 0x3f80_0001);
    // A tie goes to even.
    assert_eq!(dot(&[p(-12)], &[p(-12)], 1.0), 0x3f80_0000);
    // Overflow.
    assert_eq!(dot(&[p(100)], &[p(100)], 0.0), f32::INFINITY.to_bits());
}

// ---- errors ----

#[test]
fn malformed_operands_are_errors_and_leave_d_alone() {
    let spec = parse_wgmma(&op("m64n16k16.f32.bf16.bf16")).unwrap();
    let fp8 = parse_wgmma(&op("m64n16k32.f32.e4m3.e4m3")).unwrap();
    let ta = tile(false, 8, 2, 64, 16, 1024, false);
    let tb = tile(true, 8, 2, 16, 16, 1024 + 8192, false);
    let (da, db) = (ta.desc(0), tb.desc(0));
    let mem = vec![0u8; 16384];
    let d0 = vec![vec![0x3f80_0000u32; 8]; 128];
    let check = |r: Result<(), String>, d: &[Vec<u32>], what: &str| {
        let e = r.unwrap_err();
        assert!(e.contains(what), "expected `{what}` in: {e}");
        assert_eq!(d, &d0[..], "D changed by a failed wgmma ({what})");
    };
    let mut d = d0.clone();
    assert!(wgmma(&spec, da, db, &mem, &mut d, true, 1, 1, false, true).is_ok());
    let mut d = d0.clone();
    check(
        wgmma(&spec, da, db, &mem, &mut d, true, 0, 1, false, true),
        &d,
        "imm-scale-a = 0",
    );
    check(
        wgmma(&spec, da, db, &mem, &mut d, true, 1, 2, false, true),
        &d,
        "imm-scale-b = 2",
    );
    check(
        wgmma(&fp8, da, db, &mem, &mut d, true, 1, 1, false, true),
        &d,
        "imm-trans-b = 1 with E4m3",
    );
    check(
        wgmma(&fp8, da, db, &mem, &mut d, true, 1, 1, true, false),
        &d,
        "imm-trans-a = 1 with E4m3",
    );
    check(
        wgmma(
            &spec,
            da | (1 << 49),
            db,
            &mem,
            &mut d,
            true,
            1,
            1,
            false,
            true,
        ),
        &d,
        "base offset 1",
    );
    check(
        wgmma(
            &spec,
            da,
            db | (1 << 47),
            &mem,
            &mut d,
            true,
            1,
            1,
            false,
            true,
        ),
        &d,
        "outside its fields",
    );
    // Past the end of shared memory.
    check(
        wgmma(&spec, da, db, &mem[..9000], &mut d, true, 1, 1, false, true),
        &d,
        "outside the 9000 bytes",
    );
    // A k16 slice starting 48 bytes into a 64-byte swizzle row runs past it.
    let t64 = tile(false, 4, 2, 64, 16, 1024, false);
    check(
        wgmma(
            &spec,
            t64.desc(0) + 3,
            db,
            &mem,
            &mut d,
            true,
            1,
            1,
            false,
            true,
        ),
        &d,
        "runs past the row",
    );
    // Accumulator shapes.
    let mut short = vec![vec![0u32; 8]; 127];
    assert!(
        wgmma(&spec, da, db, &mem, &mut short, true, 1, 1, false, true)
            .unwrap_err()
            .contains("127 threads")
    );
    let mut ragged = d0.clone();
    ragged[5].push(0);
    assert!(
        wgmma(&spec, da, db, &mem, &mut ragged, true, 1, 1, false, true)
            .unwrap_err()
            .contains("thread 5 has 9")
    );
    // Register-A form / descriptor form mismatches, and register counts.
    let reg = WgmmaSpec {
        a_from_registers: true,
        ..spec.clone()
    };
    let a = vec![vec![0u32; 4]; 128];
    check(
        wgmma(&reg, da, db, &mem, &mut d, true, 1, 1, false, true),
        &d,
        "registers",
    );
    check(
        wgmma_reg_a(&spec, &a, db, &mem, &mut d, true, 1, 1, true),
        &d,
        "descriptor",
    );
    check(
        wgmma_reg_a(&reg, &a[..64], db, &mem, &mut d, true, 1, 1, true),
        &d,
        "64 threads",
    );
    let mut a3 = a.clone();
    a3[7].pop();
    check(
        wgmma_reg_a(&reg, &a3, db, &mem, &mut d, true, 1, 1, true),
        &d,
        "thread 7 has 3",
    );
    assert!(wgmma_reg_a(&reg, &a, db, &mem, &mut d, true, 1, 1, true).is_ok());
    // An unsupported spec built by hand.
    let bad = WgmmaSpec {
        n: 12,
        ..spec.clone()
    };
    check(
        wgmma(&bad, da, db, &mem, &mut d, true, 1, 1, false, true),
        &d,
        "N = 12",
    );
    // The base offset field is meaningless without swizzling (ISA: valid for all modes except
    // no-swizzle): ignored there.
    let tn = tile(false, 1, 2, 64, 16, 1024, false);
    assert!(wgmma(
        &spec,
        tn.desc(0) | (3 << 49),
        db,
        &mem,
        &mut d,
        true,
        1,
        1,
        false,
        true
    )
    .is_ok());
}

// ---- the suite's kernels, transcribed ----

fn bf16_vals(rng: &mut Rng, count: usize) -> Vec<f64> {
    (0..count).map(|_| rng.scaled(8, 0, 3)).collect()
}

/// Thread `tid`'s accumulator `i` as the kernels index it (gemm_bf16 reference.cu:248-249 and
/// the same comment in the other three): acc[4j + e] is row row0 (e < 2) or row0 + 8, column
/// 8j + 2 * (lane % 4) + (e & 1), row0 = ((tid >> 5) & 3) * 16 + (lane >> 2) within the warpgroup.
fn kernel_d_at(tid: usize, i: usize) -> (usize, usize) {
    let lane = tid & 31;
    let row0 = ((tid >> 5) & 3) * 16 + (lane >> 2);
    let (j, e) = (i / 4, i % 4);
    (
        if e < 2 { row0 } else { row0 + 8 },
        8 * j + 2 * (lane & 3) + (e & 1),
    )
}

#[test]
fn kernel_fragment_indexing_is_cutes_clayout() {
    for t in 0..128 {
        for i in 0..128 {
            assert_eq!(kernel_d_at(t, i), c_at(t, i));
        }
    }
}

fn put(mem: &mut [u8], addr: usize, bits: u32, eb: usize) {
    mem[addr..addr + eb].copy_from_slice(&bits.to_le_bytes()[..eb]);
}

fn check_against(d: &[Vec<u32>], n: usize, want: impl Fn(usize, usize) -> f64, what: &str) {
    for (t, regs) in d.iter().enumerate() {
        for (i, &r) in regs.iter().enumerate() {
            let (row, col) = kernel_d_at(t, i);
            assert_eq!(
                f32::from_bits(r) as f64,
                want(row, col),
                "{what}: thread {t} acc {i} ({row}, {col}) of n {n}"
            );
        }
    }
}

/// tasks/gemm/gemm_bf16/reference.cu: a_off (72-74), b_off (77-80), smem_desc (184-188) and the
/// calls at 236-240: A K-major 64B, desc(sA + ks*32, 16, 512, 2); B N-major 128B,
/// desc(sB + ks*16*128, GEMM_BK*128, 1024, 1), imm-trans-b 1; m64n128k16, two warpgroups.
#[test]
fn gemm_bf16_kernel_layout_computes_the_product() {
    const BK: usize = 32;
    let (bm, bn, stages) = (128, 128, 3);
    let mut rng = Rng(11);
    let a = bf16_vals(&mut rng, bm * BK); // [m][k]
    let b = bf16_vals(&mut rng, BK * bn); // [k][n]
    let a_off = |row: usize, chunk: usize| row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4);
    let b_off = |k: usize, chunk: usize| {
        (chunk >> 3) * (BK * 128) + k * 128 + (((chunk & 7) ^ (k & 7)) << 4)
    };
    let smem_desc = |addr: usize, lbo: u64, sbo: u64, mode: u64| {
        ((addr as u64 & 0x3ffff) >> 4) | ((lbo >> 4) << 16) | ((sbo >> 4) << 32) | (mode << 62)
    };
    let a_stage = bm * BK * 2;
    let (s_a, s_b) = (a_stage, stages * a_stage + (bn * BK * 2)); // stage cs = 1
    let mut mem = vec![0xffu8; stages * a_stage + stages * BK * bn * 2];
    for m in 0..bm {
        for k in 0..BK {
            put(
                &mut mem,
                s_a + a_off(m, k / 8) + 2 * (k % 8),
                enc(ElemType::Bf16, a[m * BK + k]),
                2,
            );
        }
    }
    for k in 0..BK {
        for n in 0..bn {
            put(
                &mut mem,
                s_b + b_off(k, n / 8) + 2 * (n % 8),
                enc(ElemType::Bf16, b[k * bn + n]),
                2,
            );
        }
    }
    let spec = parse_wgmma(&op("m64n128k16.f32.bf16.bf16")).unwrap();
    for wg in 0..2 {
        let sa = s_a + wg * 64 * (BK * 2);
        let mut d = vec![vec![0u32; 64]; 128];
        for ks in 0..BK / 16 {
            let da = smem_desc(sa + ks * 32, 16, 512, 2);
            let db = smem_desc(s_b + ks * 16 * 128, (BK * 128) as u64, 1024, 1);
            wgmma(&spec, da, db, &mem, &mut d, true, 1, 1, false, true).unwrap();
        }
        let want = |r: usize, c: usize| {
            (0..BK)
                .map(|k| a[(64 * wg + r) * BK + k] * b[k * bn + c])
                .sum::<f64>()
        };
        check_against(&d, 128, want, "gemm_bf16");
    }
}

/// tasks/gemm/gemm_fp8_rowwise/reference.cu: tile_off (76-78), load_tile (82-98), sw64_desc
/// (149-154), the calls at 197-199: A and B K-major 64B (LBO field 1, SBO 512), the second k32
/// half at +32 bytes, scale-d 0 then 1; m64n128k32 e4m3.
#[test]
fn gemm_fp8_kernel_layout_computes_the_product() {
    const BK: usize = 64;
    let (bm, bn, stages) = (128, 128, 4);
    let mut rng = Rng(12);
    let val = |rng: &mut Rng| rng.scaled(15, 0, 2);
    let a: Vec<f64> = (0..bm * BK).map(|_| val(&mut rng)).collect(); // [m][k]
    let b: Vec<f64> = (0..bn * BK).map(|_| val(&mut rng)).collect(); // [n][k]
    let tile_off = |row: usize, chunk: usize| row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4);
    let sw64_desc = |addr: usize| {
        ((addr as u64 & 0x3ffff) >> 4) | (1 << 16) | ((512u64 >> 4) << 32) | (2 << 62)
    };
    let a_stage = bm * BK;
    let (s_a, s_b) = (2 * a_stage, stages * a_stage + 2 * bn * BK); // stage cs = 2
    let mut mem = vec![0xffu8; stages * (bm + bn) * BK];
    for r in 0..bm {
        for k in 0..BK {
            put(
                &mut mem,
                s_a + tile_off(r, k / 16) + k % 16,
                enc(ElemType::E4m3, a[r * BK + k]),
                1,
            );
        }
    }
    for r in 0..bn {
        for k in 0..BK {
            put(
                &mut mem,
                s_b + tile_off(r, k / 16) + k % 16,
                enc(ElemType::E4m3, b[r * BK + k]),
                1,
            );
        }
    }
    let spec = parse_wgmma(&op("m64n128k32.f32.e4m3.e4m3")).unwrap();
    for wg in 0..2 {
        let sa = s_a + wg * 64 * BK;
        let mut d = vec![vec![0x7fc0_0000u32; 64]; 128]; // `part` is never zeroed: scale-d 0 first
        wgmma(
            &spec,
            sw64_desc(sa),
            sw64_desc(s_b),
            &mem,
            &mut d,
            false,
            1,
            1,
            false,
            false,
        )
        .unwrap();
        wgmma(
            &spec,
            sw64_desc(sa + 32),
            sw64_desc(s_b + 32),
            &mem,
            &mut d,
            true,
            1,
            1,
            false,
            false,
        )
        .unwrap();
        let want = |r: usize, c: usize| {
            (0..BK)
                .map(|k| a[(64 * wg + r) * BK + k] * b[c * BK + k])
                .sum::<f64>()
        };
        check_against(&d, 128, want, "gemm_fp8_rowwise");
    }
}

/// tasks/microscaling/mxfp4_emulated_gemm/reference.cu: store_group (192-207: logical chunk c of
/// row r at r*128 + ((c ^ (r & 7)) << 4)), sw128_desc (150-153: LBO field 1, SBO 1024, 128B),
/// the calls at 241-246 (sA = st + wg*64*128, sB = st + TILE, slice ks at +32 bytes); K-major both.
#[test]
fn mxfp4_kernel_layout_computes_the_product() {
    const WG_BK: usize = 64;
    const TILE: usize = 128 * 128;
    let mut rng = Rng(13);
    let a = bf16_vals(&mut rng, 128 * WG_BK); // [m][k]
    let b = bf16_vals(&mut rng, 128 * WG_BK); // [n][k]
    let off = |r: usize, c: usize| r * 128 + ((c ^ (r & 7)) << 4);
    let sw128_desc = |addr: usize| {
        ((addr as u64 & 0x3ffff) >> 4) | (1 << 16) | ((1024u64 >> 4) << 32) | (1 << 62)
    };
    let st = 2 * TILE; // stage kt & 1 == 1
    let mut mem = vec![0xffu8; 4 * TILE];
    for r in 0..128 {
        for k in 0..WG_BK {
            put(
                &mut mem,
                st + off(r, k / 8) + 2 * (k % 8),
                enc(ElemType::Bf16, a[r * WG_BK + k]),
                2,
            );
            put(
                &mut mem,
                st + TILE + off(r, k / 8) + 2 * (k % 8),
                enc(ElemType::Bf16, b[r * WG_BK + k]),
                2,
            );
        }
    }
    let spec = parse_wgmma(&op("m64n128k16.f32.bf16.bf16")).unwrap();
    for wg in 0..2 {
        let (sa, sb) = (st + wg * 64 * 128, st + TILE);
        let mut d = vec![vec![0u32; 64]; 128];
        for ks in 0..WG_BK / 16 {
            wgmma(
                &spec,
                sw128_desc(sa + ks * 32),
                sw128_desc(sb + ks * 32),
                &mem,
                &mut d,
                true,
                1,
                1,
                false,
                false,
            )
            .unwrap();
        }
        let want = |r: usize, c: usize| {
            (0..WG_BK)
                .map(|k| a[(64 * wg + r) * WG_BK + k] * b[c * WG_BK + k])
                .sum::<f64>()
        };
        check_against(&d, 128, want, "mxfp4_emulated_gemm");
    }
}

/// tasks/attention/flash_attention_fwd/reference.cu (D = 128): tile_off (76-79), sw128_desc
/// (137-140), qk_wgmma (145-155: Q, K K-major 128B, slice kk at (kk >> 2) * 8 KiB + (kk & 3) * 32,
/// LBO 16, SBO 1024, scale-d kk > 0), pv_wgmma (160-174: P packed from the S accumulators into
/// register A, V N-major 128B at sV + kk*16*128, LBO 64*128, SBO 1024, imm-trans-b 1).
#[test]
fn flash_attention_kernel_layouts_compute_s_and_o() {
    const D: usize = 128;
    const BKV: usize = 64;
    const TILE_BYTES: usize = 64 * D * 2;
    let mut rng = Rng(14);
    let ints = |rng: &mut Rng, n: usize| (0..n).map(|_| rng.int(-3, 3) as f64).collect::<Vec<_>>();
    let (q, k, v) = (
        ints(&mut rng, 64 * D),
        ints(&mut rng, BKV * D),
        ints(&mut rng, BKV * D),
    );
    let tile_off = |row: usize, chunk: usize| {
        (chunk >> 3) * (64 * 128) + row * 128 + (((chunk & 7) ^ (row & 7)) << 4)
    };
    let sw128_desc = |addr: usize, lbo: u64, sbo: u64| {
        ((addr as u64 & 0x3ffff) >> 4) | ((lbo >> 4) << 16) | ((sbo >> 4) << 32) | (1 << 62)
    };
    let (s_q, s_k, s_v) = (0, TILE_BYTES, 2 * TILE_BYTES);
    let mut mem = vec![0xffu8; 3 * TILE_BYTES];
    for (base, x) in [(s_q, &q), (s_k, &k), (s_v, &v)] {
        for r in 0..64 {
            for c in 0..D {
                put(
                    &mut mem,
                    base + tile_off(r, c / 8) + 2 * (c % 8),
                    enc(ElemType::Bf16, x[r * D + c]),
                    2,
                );
            }
        }
    }
    // S = Q K^T.
    let qk = parse_wgmma(&op("m64n64k16.f32.bf16.bf16")).unwrap();
    let mut s = vec![vec![0x7fc0_0000u32; 32]; 128];
    for kk in 0..D / 16 {
        let off = (kk >> 2) * (64 * 128) + (kk & 3) * 32;
        wgmma(
            &qk,
            sw128_desc(s_q + off, 16, 1024),
            sw128_desc(s_k + off, 16, 1024),
            &mem,
            &mut s,
            kk > 0,
            1,
            1,
            false,
            false,
        )
        .unwrap();
    }
    let s_ref = |r: usize, c: usize| (0..D).map(|j| q[r * D + j] * k[c * D + j]).sum::<f64>();
    check_against(&s, 64, s_ref, "flash_attention S");
    // O = P V with P = bf16(S) packed as the kernel packs it: pa[kk][0] = (s[2kk][0], s[2kk][1]),
    // [1] = (s[2kk][2], s[2kk][3]), [2] = (s[2kk+1][0], s[2kk+1][1]), [3] = (s[2kk+1][2], s[2kk+1][3]).
    let pack = |lo: u32, hi: u32| {
        let h = |x: u32| u32::from(bf16::from_f32(f32::from_bits(x)).to_bits());
        h(lo) | (h(hi) << 16)
    };
    let pv = WgmmaSpec {
        a_from_registers: true,
        ..parse_wgmma(&op("m64n128k16.f32.bf16.bf16")).unwrap()
    };
    let mut o = vec![vec![0u32; 64]; 128];
    for kk in 0..BKV / 16 {
        let pa: Vec<Vec<u32>> = s
            .iter()
            .map(|r| {
                (0..4)
                    .map(|i| pack(r[8 * kk + 2 * i], r[8 * kk + 2 * i + 1]))
                    .collect()
            })
            .collect();
        wgmma_reg_a(
            &pv,
            &pa,
            sw128_desc(s_v + kk * 16 * 128, 64 * 128, 1024),
            &mem,
            &mut o,
            true,
            1,
            1,
            true,
        )
        .unwrap();
    }
    let p = |r: usize, c: usize| bf16::from_f64(s_ref(r, c)).to_f64();
    let o_ref = |r: usize, c: usize| (0..BKV).map(|j| p(r, j) * v[j * D + c]).sum::<f64>();
    check_against(&o, 128, o_ref, "flash_attention O");
}
