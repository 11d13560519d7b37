//! One thread's instructions, up to the next point where it must wait for others (a barrier or
//! a warp-collective instruction, which [`super::cta`] executes for the whole warp).

use super::memory::{Global, LOCAL_WINDOW, SHARED_WINDOW, WINDOW_BYTES};
use super::num;
use super::op::{
    Arith, AtomOp, BarKind, BoolOp, Cmp, Inst, Mem, Op, Opd, Rnd, Space, Sreg, Ty, Unary,
};
use super::ptx::Program;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    IllegalAddress,
    Misaligned,
    IllegalInstruction,
    Trap,
    /// Out of instruction budget, or every thread waiting on something that never comes.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub message: String,
}

pub fn fault<T>(kind: FaultKind, message: impl Into<String>) -> Result<T, Fault> {
    Err(Fault {
        kind,
        message: message.into(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ready,
    /// At a warp-collective instruction.
    Warp,
    /// At `bar.sync` / `bar.red`: barrier id, expected threads (0: the whole CTA), predicate.
    Barrier {
        id: u32,
        count: u32,
        pred: bool,
    },
    Exited,
}

pub struct Frame {
    func: usize,
    pc: usize,
    regs: Vec<u64>,
    params: Vec<u8>,
    local: Vec<u8>,
    /// (offset in the caller's parameter area, bytes) for each return value.
    rets: Vec<(usize, usize)>,
}

/// A `cp.async` in flight. Its source was read at issue; its destination is written only when a
/// `cp.async.wait_group` / `wait_all` covering its group executes, the latest a GPU may land it,
/// so a kernel that reads a stage before waiting for it reads stale shared memory here.
pub struct PendingCopy {
    /// The commit group (`OPEN_GROUP`: not committed yet).
    group: u32,
    dst: u64,
    bytes: [u8; 16],
    len: u8,
}

const OPEN_GROUP: u32 = u32::MAX;

/// Writes every pending copy of a committed group below `below`, in issue order.
fn land_copies(cta: &mut Cta, t: &mut Thread, below: u32) -> Result<(), Fault> {
    if t.copies
        .iter()
        .all(|c| c.group == OPEN_GROUP || c.group >= below)
    {
        return Ok(());
    }
    let copies = std::mem::take(&mut t.copies);
    let mut rest = Vec::new();
    for c in copies {
        if c.group != OPEN_GROUP && c.group < below {
            cta.write(t, Space::Shared, c.dst, &c.bytes[..c.len as usize])?;
        } else {
            rest.push(c);
        }
    }
    t.copies = rest;
    Ok(())
}

pub struct Thread {
    pub func: usize,
    pub pc: usize,
    pub regs: Vec<u64>,
    pub params: Vec<u8>,
    pub local: Vec<u8>,
    frames: Vec<Frame>,
    copies: Vec<PendingCopy>,
    committed: u32,
    pub tid: [u32; 3],
    pub lane: u32,
    pub warp: u32,
    pub state: State,
}

impl Thread {
    pub fn new(prog: &Program, func: usize, params: &[u8], tid: [u32; 3], linear: u32) -> Thread {
        let f = &prog.functions[func];
        let mut p = params.to_vec();
        p.resize(f.param_bytes.max(params.len()), 0);
        Thread {
            func,
            pc: 0,
            regs: vec![0; f.nregs],
            params: p,
            local: vec![0; f.local_bytes],
            frames: Vec::new(),
            copies: Vec::new(),
            committed: 0,
            tid,
            lane: linear % 32,
            warp: linear / 32,
            state: State::Ready,
        }
    }
}

/// What every thread of the running CTA shares.
pub struct Cta<'a> {
    pub prog: &'a Program,
    pub global: &'a mut Global,
    pub shared: Vec<u8>,
    pub ctaid: [u32; 3],
    pub nctaid: [u32; 3],
    pub ntid: [u32; 3],
    pub dynamic_shared: u32,
    pub clock: u64,
    /// Instructions executed by this launch so far, and the cap.
    pub executed: u64,
    pub budget: u64,
    /// `bar.arrive` counts per barrier id since its last release.
    pub arrived: [u32; 16],
    /// Run the threads of the CTA last to first.
    pub reverse: bool,
    /// Warp-level `mma` and warpgroup-level `wgmma` instructions executed (tensor-core work).
    pub mma: u64,
    pub wgmma: u64,
}

fn trunc(v: u64, bits: u32) -> u64 {
    if bits >= 64 {
        v
    } else {
        v & ((1u64 << bits) - 1)
    }
}

fn sext(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        let s = 64 - bits;
        ((v << s) as i64) >> s
    }
}

impl Cta<'_> {
    pub fn val(&mut self, t: &Thread, o: &Opd) -> Result<u64, Fault> {
        Ok(match o {
            Opd::Reg(r) => t.regs[*r as usize],
            Opd::Imm(v) => *v,
            Opd::FloatImm(v) => (*v as f32).to_bits() as u64,
            Opd::DynShared => self.prog.dynamic_shared_base as u64,
            Opd::Not(x) => (self.val(t, x)? & 1) ^ 1,
            Opd::Sreg(s) => {
                let lanes_below = (1u64 << t.lane) - 1;
                match *s {
                    Sreg::Tid(a) => t.tid[a as usize] as u64,
                    Sreg::Ntid(a) => self.ntid[a as usize] as u64,
                    Sreg::Ctaid(a) => self.ctaid[a as usize] as u64,
                    Sreg::Nctaid(a) => self.nctaid[a as usize] as u64,
                    Sreg::Laneid => t.lane as u64,
                    Sreg::Warpid => t.warp as u64,
                    Sreg::Nwarpid => (self.ntid.iter().product::<u32>() as u64).div_ceil(32),
                    Sreg::Nsmid => 132,
                    Sreg::LanemaskEq => 1 << t.lane,
                    Sreg::LanemaskLt => lanes_below,
                    Sreg::LanemaskLe => lanes_below | (1 << t.lane),
                    Sreg::LanemaskGt => trunc(!(lanes_below | (1 << t.lane)), 32),
                    Sreg::LanemaskGe => trunc(!lanes_below, 32),
                    Sreg::Clock => {
                        self.clock += 1;
                        self.clock
                    }
                    Sreg::DynamicSmem => self.dynamic_shared as u64,
                    Sreg::TotalSmem => self.shared.len() as u64,
                    Sreg::Zero => 0,
                    Sreg::One => 1,
                }
            }
            other => {
                return fault(
                    FaultKind::IllegalInstruction,
                    format!("operand {other:?} is not a value"),
                )
            }
        })
    }

    pub fn set(&self, t: &mut Thread, o: &Opd, v: u64) -> Result<(), Fault> {
        match o {
            Opd::Reg(r) => {
                t.regs[*r as usize] = v;
                Ok(())
            }
            Opd::Sink => Ok(()),
            other => fault(
                FaultKind::IllegalInstruction,
                format!("cannot write to {other:?}"),
            ),
        }
    }

    pub fn address(&self, t: &Thread, m: &Mem) -> u64 {
        let mut a = m.off as u64;
        if let Some(r) = m.reg {
            a = a.wrapping_add(t.regs[r as usize]);
        }
        if m.dyn_shared {
            a = a.wrapping_add(self.prog.dynamic_shared_base as u64);
        }
        a
    }

    /// Resolves a generic address to its state space.
    fn classify(space: Space, addr: u64) -> (Space, u64) {
        match space {
            Space::Generic if (SHARED_WINDOW..SHARED_WINDOW + WINDOW_BYTES).contains(&addr) => {
                (Space::Shared, addr - SHARED_WINDOW)
            }
            Space::Generic if (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW_BYTES).contains(&addr) => {
                (Space::Local, addr - LOCAL_WINDOW)
            }
            Space::Generic | Space::Const => (Space::Global, addr),
            s => (s, addr),
        }
    }

    pub fn read(&self, t: &Thread, space: Space, addr: u64, out: &mut [u8]) -> Result<(), Fault> {
        let n = out.len();
        let (sp, a) = Self::classify(space, addr);
        check_align(sp, addr, n)?;
        let src: Option<&[u8]> = match sp {
            Space::Global => self.global.bytes(a, n),
            Space::Shared => slice(&self.shared, a, n),
            Space::Local => slice(&t.local, a, n),
            Space::Param => slice(&t.params, a, n),
            _ => None,
        };
        match src {
            Some(s) => {
                out.copy_from_slice(s);
                Ok(())
            }
            None => Err(self.out_of_bounds("read", sp, addr, n)),
        }
    }

    pub fn write(
        &mut self,
        t: &mut Thread,
        space: Space,
        addr: u64,
        bytes: &[u8],
    ) -> Result<(), Fault> {
        let n = bytes.len();
        let (sp, a) = Self::classify(space, addr);
        check_align(sp, addr, n)?;
        let dst: Option<&mut [u8]> = match sp {
            Space::Global => self.global.bytes_mut(a, n),
            Space::Shared => slice_mut(&mut self.shared, a, n),
            Space::Local => slice_mut(&mut t.local, a, n),
            Space::Param => slice_mut(&mut t.params, a, n),
            _ => None,
        };
        match dst {
            Some(d) => {
                d.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(self.out_of_bounds("write", sp, addr, n)),
        }
    }

    fn out_of_bounds(&self, what: &str, sp: Space, addr: u64, n: usize) -> Fault {
        let detail = match sp {
            Space::Global => match self.global.nearest(addr) {
                Some((base, size)) if addr >= base && addr < base + size as u64 + 4096 => format!(
                    "{} bytes past the end of the {size}-byte buffer at {base:#x}",
                    addr + n as u64 - (base + size as u64)
                ),
                _ => "outside every allocation".into(),
            },
            Space::Shared => format!(
                "beyond the CTA's {} bytes of shared memory",
                self.shared.len()
            ),
            _ => "out of bounds".into(),
        };
        Fault {
            kind: FaultKind::IllegalAddress,
            message: format!("{n}-byte {what} of {sp:?} address {addr:#x}: {detail}"),
        }
    }
}

fn slice(v: &[u8], a: u64, n: usize) -> Option<&[u8]> {
    let a = usize::try_from(a).ok()?;
    v.get(a..a.checked_add(n)?)
}

fn slice_mut(v: &mut [u8], a: u64, n: usize) -> Option<&mut [u8]> {
    let a = usize::try_from(a).ok()?;
    v.get_mut(a..a.checked_add(n)?)
}

fn check_align(sp: Space, addr: u64, n: usize) -> Result<(), Fault> {
    if sp != Space::Param && n.is_power_of_two() && addr & (n as u64 - 1) != 0 {
        return fault(
            FaultKind::Misaligned,
            format!("{n}-byte access of {sp:?} address {addr:#x} is not {n}-byte aligned"),
        );
    }
    Ok(())
}

/// Runs `t` until it exits or reaches a barrier or warp-collective instruction.
pub fn run(cta: &mut Cta, t: &mut Thread) -> Result<(), Fault> {
    let prog = cta.prog;
    loop {
        let inst = &prog.functions[t.func].insts[t.pc];
        cta.executed += 1;
        if cta.executed > cta.budget {
            return fault(
                FaultKind::Hang,
                format!(
                    "still running after {} instructions (the emulator's budget): an endless loop, or a wait on another CTA",
                    cta.budget
                ),
            )
            .map_err(|f| locate(f, prog, t));
        }
        if let Some((p, neg)) = inst.guard {
            if ((t.regs[p as usize] & 1) != 0) == neg {
                t.pc += 1;
                continue;
            }
        }
        match step(cta, t, inst) {
            Ok(Flow::Next) => t.pc += 1,
            Ok(Flow::Jump(pc)) => t.pc = pc,
            Ok(Flow::Stop) => return Ok(()),
            Err(f) => return Err(locate(f, prog, t)),
        }
    }
}

/// Adds where it happened: function, PTX line and text, thread.
pub fn locate(mut f: Fault, prog: &Program, t: &Thread) -> Fault {
    let func = &prog.functions[t.func];
    if let Some(i) = func.insts.get(t.pc) {
        f.message = format!(
            "{} (thread {:?}, `{}` PTX line {}: `{}`)",
            f.message, t.tid, func.name, i.line, i.text
        );
    }
    f
}

enum Flow {
    Next,
    Jump(usize),
    Stop,
}

fn opd(inst: &Inst, k: usize) -> Result<&Opd, Fault> {
    inst.opds.get(k).ok_or_else(|| Fault {
        kind: FaultKind::IllegalInstruction,
        message: format!("operand {} missing", k + 1),
    })
}

/// The registers of a load or store of `vec` elements of `ty`, and its bytes (at most 64).
fn vector_regs(o: &Opd, ty: Ty, vec: u8) -> Result<(&[Opd], usize), Fault> {
    let total = ty.bytes() * vec as usize;
    if total > 64 {
        return fault(FaultKind::IllegalInstruction, "access wider than 64 bytes");
    }
    let regs = elems(o);
    if regs.len() != vec as usize {
        return fault(
            FaultKind::IllegalInstruction,
            "vector width and registers differ",
        );
    }
    Ok((regs, total))
}

fn elems(o: &Opd) -> &[Opd] {
    match o {
        Opd::Vec(v) => v,
        other => std::slice::from_ref(other),
    }
}

fn step(cta: &mut Cta, t: &mut Thread, inst: &Inst) -> Result<Flow, Fault> {
    let prog = cta.prog;
    match &inst.op {
        Op::Mov(ty) => {
            let d = opd(inst, 0)?;
            let a = opd(inst, 1)?;
            match (d, a) {
                (Opd::Vec(parts), _) | (_, Opd::Vec(parts)) if parts.is_empty() => {
                    return fault(FaultKind::IllegalInstruction, "empty register vector");
                }
                (Opd::Vec(parts), src) => {
                    // Unpack: the low part goes to the first register.
                    let v = cta.val(t, src)?;
                    let w = ty.bits() / parts.len() as u32;
                    for (k, p) in parts.iter().enumerate() {
                        cta.set(t, p, trunc(v >> (w * k as u32), w))?;
                    }
                }
                (dst, Opd::Vec(parts)) => {
                    let w = ty.bits() / parts.len() as u32;
                    let mut v = 0u64;
                    for (k, p) in parts.iter().enumerate() {
                        v |= trunc(cta.val(t, p)?, w) << (w * k as u32);
                    }
                    cta.set(t, dst, v)?;
                }
                (dst, src) => {
                    let v = match src {
                        Opd::FloatImm(x) if *ty == Ty::F64 => x.to_bits(),
                        _ => cta.val(t, src)?,
                    };
                    cta.set(t, dst, trunc(v, ty.bits()))?
                }
            }
        }
        Op::Ld { space, ty, vec } => {
            let Opd::Mem(m) = opd(inst, 1)? else {
                return fault(FaultKind::IllegalInstruction, "load without an address");
            };
            let addr = cta.address(t, m);
            let n = ty.bytes();
            let mut buf = [0u8; 64];
            let (dst, total) = vector_regs(opd(inst, 0)?, *ty, *vec)?;
            cta.read(t, *space, addr, &mut buf[..total])?;
            for (k, d) in dst.iter().enumerate() {
                let mut b = [0u8; 8];
                let take = n.min(8);
                b[..take].copy_from_slice(&buf[k * n..k * n + take]);
                let raw = u64::from_le_bytes(b);
                let v = if ty.is_signed() {
                    sext(raw, ty.bits()) as u64
                } else {
                    raw
                };
                cta.set(t, d, v)?;
            }
        }
        Op::St { space, ty, vec } => {
            let Opd::Mem(m) = opd(inst, 0)? else {
                return fault(FaultKind::IllegalInstruction, "store without an address");
            };
            let addr = cta.address(t, m);
            let n = ty.bytes();
            let mut buf = [0u8; 64];
            let (src, total) = vector_regs(opd(inst, 1)?, *ty, *vec)?;
            for (k, s) in src.iter().enumerate() {
                let v = match s {
                    Opd::FloatImm(x) if *ty == Ty::F64 => x.to_bits(),
                    _ => cta.val(t, s)?,
                };
                buf[k * n..k * n + n.min(8)].copy_from_slice(&v.to_le_bytes()[..n.min(8)]);
            }
            cta.write(t, *space, addr, &buf[..total])?;
        }
        Op::Arith {
            f,
            ty,
            rnd,
            ftz,
            sat,
            relu,
            approx,
        } => {
            let a = cta.val(t, opd(inst, 1)?)?;
            let b = cta.val(t, opd(inst, 2)?)?;
            let v = arith(*f, *ty, *rnd, *ftz, *sat, *relu, *approx, a, b)?;
            cta.set(t, opd(inst, 0)?, v)?;
        }
        Op::Mad { ty, hi, wide } => {
            let a = cta.val(t, opd(inst, 1)?)?;
            let b = cta.val(t, opd(inst, 2)?)?;
            let c = cta.val(t, opd(inst, 3)?)?;
            let v = if ty.is_float() {
                num::fma(*ty, Rnd::Rn, false, false, a, b, c)
            } else {
                let f = if *wide {
                    Arith::MulWide
                } else if *hi {
                    Arith::MulHi
                } else {
                    Arith::Mul
                };
                let p = arith(f, *ty, Rnd::Default, false, false, false, false, a, b)?;
                let bits = if *wide { ty.bits() * 2 } else { ty.bits() };
                trunc(p.wrapping_add(c), bits)
            };
            cta.set(t, opd(inst, 0)?, v)?;
        }
        Op::Fma { ty, rnd, ftz, sat } => {
            let a = cta.val(t, opd(inst, 1)?)?;
            let b = cta.val(t, opd(inst, 2)?)?;
            let c = cta.val(t, opd(inst, 3)?)?;
            cta.set(t, opd(inst, 0)?, num::fma(*ty, *rnd, *ftz, *sat, a, b, c))?;
        }
        // `.approx` results are computed exactly (see `num`).
        Op::Unary {
            f, ty, ftz, rnd, ..
        } => {
            let a = cta.val(t, opd(inst, 1)?)?;
            cta.set(t, opd(inst, 0)?, unary(*f, *ty, *ftz, *rnd, a))?;
        }
        Op::Setp {
            cmp,
            ty,
            combine,
            ftz,
        } => {
            let a = cta.val(t, opd(inst, 1)?)?;
            let b = cta.val(t, opd(inst, 2)?)?;
            let r = compare(*cmp, *ty, *ftz, a, b);
            let (p, q) = match combine {
                None => (r, !r),
                Some(op) => {
                    let c = cta.val(t, opd(inst, 3)?)? & 1 != 0;
                    let f = |x: bool| match op {
                        BoolOp::And => x && c,
                        BoolOp::Or => x || c,
                        BoolOp::Xor => x ^ c,
                    };
                    (f(r), f(!r))
                }
            };
            match opd(inst, 0)? {
                Opd::Vec(v) if v.len() == 2 => {
                    cta.set(t, &v[0], p as u64)?;
                    cta.set(t, &v[1], q as u64)?;
                }
                d => cta.set(t, d, p as u64)?,
            }
        }
        Op::Selp(ty) => {
            let a = cta.val(t, opd(inst, 1)?)?;
            let b = cta.val(t, opd(inst, 2)?)?;
            let c = cta.val(t, opd(inst, 3)?)?;
            let v = if c & 1 != 0 { a } else { b };
            cta.set(t, opd(inst, 0)?, trunc(v, ty.bits()))?;
        }
        Op::Cvt {
            dst,
            src,
            rnd,
            sat,
            ftz,
            relu,
        } => {
            let d = opd(inst, 0)?;
            let a = cta.val(t, opd(inst, 1)?)?;
            let v = if matches!(dst, Ty::F16x2 | Ty::Bf16x2 | Ty::E4m3x2 | Ty::E5m2x2)
                && inst.opds.len() == 3
            {
                // Two sources: the first goes to the upper half.
                let b = cta.val(t, opd(inst, 2)?)?;
                num::cvt_pair(*dst, *src, *rnd, *sat, *relu, a, b)?
            } else {
                num::cvt(*dst, *src, *rnd, *sat, *ftz, *relu, a)?
            };
            cta.set(t, d, v)?;
        }
        Op::Cvta { to, space } => {
            let a = cta.val(t, opd(inst, 1)?)?;
            let window = match space {
                Space::Shared => SHARED_WINDOW,
                Space::Local => LOCAL_WINDOW,
                _ => 0,
            };
            let v = if *to {
                a.wrapping_sub(window)
            } else {
                a.wrapping_add(window)
            };
            cta.set(t, opd(inst, 0)?, v)?;
        }
        Op::Shf { left, clamp } => {
            let a = cta.val(t, opd(inst, 1)?)? as u32 as u64;
            let b = cta.val(t, opd(inst, 2)?)? as u32 as u64;
            let c = cta.val(t, opd(inst, 3)?)? as u32;
            let n = if *clamp { c.min(32) } else { c & 31 };
            let both = (b << 32) | a;
            let v = if *left {
                ((both << n) >> 32) as u32
            } else {
                (both >> n) as u32
            };
            cta.set(t, opd(inst, 0)?, v as u64)?;
        }
        Op::Bfi(ty) => {
            let a = cta.val(t, opd(inst, 1)?)?;
            let b = cta.val(t, opd(inst, 2)?)?;
            let pos = cta.val(t, opd(inst, 3)?)? as u32 & 0xff;
            let len = cta.val(t, opd(inst, 4)?)? as u32 & 0xff;
            let bits = ty.bits();
            let mut v = trunc(b, bits);
            if len > 0 && pos < bits {
                let len = len.min(bits - pos);
                let mask = trunc(
                    if len >= 64 {
                        u64::MAX
                    } else {
                        (1u64 << len) - 1
                    },
                    bits,
                ) << pos;
                v = (v & !mask) | ((a << pos) & mask);
            }
            cta.set(t, opd(inst, 0)?, trunc(v, bits))?;
        }
        Op::Bfe(ty) => {
            let a = cta.val(t, opd(inst, 1)?)?;
            let pos = cta.val(t, opd(inst, 2)?)? as u32 & 0xff;
            let len = cta.val(t, opd(inst, 3)?)? as u32 & 0xff;
            let bits = ty.bits();
            let a = trunc(a, bits);
            let v = if len == 0 {
                0
            } else {
                let field = if pos >= bits { 0 } else { a >> pos };
                let len = len.min(bits);
                let field = trunc(field, len);
                let sign = if ty.is_signed() {
                    if pos + len > bits {
                        (a >> (bits - 1)) & 1
                    } else {
                        (a >> (pos + len - 1)) & 1
                    }
                } else {
                    0
                };
                if sign == 1 && len < 64 {
                    trunc(field | (u64::MAX << len), bits)
                } else {
                    field
                }
            };
            cta.set(t, opd(inst, 0)?, v)?;
        }
        Op::Prmt => {
            let a = cta.val(t, opd(inst, 1)?)? as u32 as u64;
            let b = cta.val(t, opd(inst, 2)?)? as u32 as u64;
            let c = cta.val(t, opd(inst, 3)?)? as u32;
            let both = (b << 32) | a;
            let mut v = 0u32;
            for i in 0..4 {
                let sel = (c >> (4 * i)) & 0xf;
                let mut byte = ((both >> (8 * (sel & 7))) & 0xff) as u32;
                if sel & 8 != 0 {
                    byte = if byte & 0x80 != 0 { 0xff } else { 0 };
                }
                v |= byte << (8 * i);
            }
            cta.set(t, opd(inst, 0)?, v as u64)?;
        }
        Op::Bra => match opd(inst, 0)? {
            Opd::Label(pc) if *pc != usize::MAX => return Ok(Flow::Jump(*pc)),
            _ => {
                return fault(
                    FaultKind::IllegalInstruction,
                    "branch without a resolved target",
                )
            }
        },
        Op::Exit => {
            t.state = State::Exited;
            return Ok(Flow::Stop);
        }
        Op::Ret => {
            let Some(fr) = t.frames.pop() else {
                t.state = State::Exited;
                return Ok(Flow::Stop);
            };
            let callee = &prog.functions[t.func];
            let mut rets = Vec::new();
            for (&(off, bytes), &(to, _)) in callee.rets.iter().zip(fr.rets.iter()) {
                rets.push((to, t.params[off..off + bytes].to_vec()));
            }
            t.func = fr.func;
            t.regs = fr.regs;
            t.params = fr.params;
            t.local = fr.local;
            for (to, bytes) in rets {
                if let Some(d) = t.params.get_mut(to..to + bytes.len()) {
                    d.copy_from_slice(&bytes);
                }
            }
            return Ok(Flow::Jump(fr.pc));
        }
        Op::Trap => return fault(FaultKind::Trap, "trap (an assert or __trap())"),
        Op::Call => {
            let (Opd::Func(fi), Opd::Vec(rets), Opd::Vec(args)) =
                (opd(inst, 0)?, opd(inst, 1)?, opd(inst, 2)?)
            else {
                return fault(FaultKind::IllegalInstruction, "malformed call");
            };
            if t.frames.len() >= 64 {
                return fault(FaultKind::Hang, "call depth over 64");
            }
            let callee = &prog.functions[*fi];
            let mut params = vec![0u8; callee.param_bytes];
            for (a, &(off, bytes)) in args.iter().zip(callee.params.iter()) {
                let Opd::Imm(from) = a else {
                    return fault(
                        FaultKind::IllegalInstruction,
                        "call argument is not a .param variable",
                    );
                };
                let from = *from as usize;
                let src = t.params.get(from..from + bytes).ok_or_else(|| Fault {
                    kind: FaultKind::IllegalAddress,
                    message: "call argument outside the parameter area".into(),
                })?;
                params[off..off + bytes].copy_from_slice(src);
            }
            let ret_slots = rets
                .iter()
                .zip(callee.rets.iter())
                .filter_map(|(r, &(_, bytes))| match r {
                    Opd::Imm(to) => Some((*to as usize, bytes)),
                    _ => None,
                })
                .collect();
            let fr = Frame {
                func: t.func,
                pc: t.pc + 1,
                regs: std::mem::replace(&mut t.regs, vec![0; callee.nregs]),
                params: std::mem::replace(&mut t.params, params),
                local: std::mem::replace(&mut t.local, vec![0; callee.local_bytes]),
                rets: ret_slots,
            };
            t.frames.push(fr);
            t.func = *fi;
            return Ok(Flow::Jump(0));
        }
        Op::Bar(kind) => {
            // bar.sync a{, b} / bar.arrive a, b / bar.red.op d, a{, b}, {!}c
            let red = !matches!(kind, BarKind::Sync | BarKind::Arrive);
            let first = usize::from(red);
            let id = cta.val(t, opd(inst, first)?)? as u32;
            let has_count = inst.opds.len() == first + 2 + usize::from(red);
            let count = if has_count {
                cta.val(t, opd(inst, first + 1)?)? as u32
            } else {
                0
            };
            if id >= 16 {
                return fault(
                    FaultKind::IllegalInstruction,
                    format!("barrier id {id} (at most 15)"),
                );
            }
            if *kind == BarKind::Arrive {
                cta.arrived[id as usize] += 1;
                return Ok(Flow::Next);
            }
            let pred = match inst.opds.last() {
                Some(o) if red => cta.val(t, o)? & 1 != 0,
                _ => false,
            };
            t.state = State::Barrier { id, count, pred };
            return Ok(Flow::Stop);
        }
        Op::Activemask => {
            // Every thread not exited counts as active: the emulator runs no lane ahead of
            // another across a divergent branch the way hardware might.
            cta.set(t, opd(inst, 0)?, 0xffff_ffff)?;
        }
        Op::Atom { space, f, ty, red } => {
            let (mem_at, first_src) = if *red { (0, 1) } else { (1, 2) };
            let Opd::Mem(m) = opd(inst, mem_at)? else {
                return fault(FaultKind::IllegalInstruction, "atomic without an address");
            };
            let addr = cta.address(t, m);
            let n = ty.bytes();
            let mut buf = [0u8; 8];
            cta.read(t, *space, addr, &mut buf[..n])?;
            let old = u64::from_le_bytes(buf);
            let b = cta.val(t, opd(inst, first_src)?)?;
            let new = match f {
                AtomOp::Cas => {
                    let c = cta.val(t, opd(inst, first_src + 1)?)?;
                    if trunc(old, ty.bits()) == trunc(b, ty.bits()) {
                        c
                    } else {
                        old
                    }
                }
                AtomOp::Exch => b,
                AtomOp::Inc => {
                    if trunc(old, 32) >= trunc(b, 32) {
                        0
                    } else {
                        old + 1
                    }
                }
                AtomOp::Dec => {
                    if trunc(old, 32) == 0 || trunc(old, 32) > trunc(b, 32) {
                        b
                    } else {
                        old - 1
                    }
                }
                AtomOp::Add => arith(Arith::Add, *ty, Rnd::Rn, false, false, false, false, old, b)?,
                AtomOp::Min => arith(
                    Arith::Min,
                    *ty,
                    Rnd::Default,
                    false,
                    false,
                    false,
                    false,
                    old,
                    b,
                )?,
                AtomOp::Max => arith(
                    Arith::Max,
                    *ty,
                    Rnd::Default,
                    false,
                    false,
                    false,
                    false,
                    old,
                    b,
                )?,
                AtomOp::And => old & b,
                AtomOp::Or => old | b,
                AtomOp::Xor => old ^ b,
            };
            cta.write(t, *space, addr, &new.to_le_bytes()[..n])?;
            if !*red {
                let v = if ty.is_signed() {
                    sext(old, ty.bits()) as u64
                } else {
                    trunc(old, ty.bits())
                };
                cta.set(t, opd(inst, 0)?, v)?;
            }
        }
        Op::CpAsync { .. } => {
            // Copied at issue: a kernel that reads the destination before waiting on its group
            // is wrong on hardware and may still pass here.
            let (Opd::Mem(d), Opd::Mem(s)) = (opd(inst, 0)?, opd(inst, 1)?) else {
                return fault(FaultKind::IllegalInstruction, "cp.async without addresses");
            };
            let size = cta.val(t, opd(inst, 2)?)? as usize;
            if !matches!(size, 4 | 8 | 16) {
                return fault(
                    FaultKind::IllegalInstruction,
                    format!("cp.async of {size} bytes"),
                );
            }
            let mut src_size = size;
            if let Some(o) = inst.opds.get(3) {
                let is_pred = matches!(o, Opd::Reg(r) if prog.functions[t.func].pred_regs.get(*r as usize).copied().unwrap_or(false))
                    || matches!(o, Opd::Not(_));
                let v = cta.val(t, o)?;
                src_size = if is_pred {
                    if v & 1 != 0 {
                        0
                    } else {
                        size
                    }
                } else {
                    (v as usize).min(size)
                };
            }
            let mut bytes = [0u8; 16];
            if src_size > 0 {
                let sa = cta.address(t, s);
                cta.read(t, Space::Global, sa, &mut bytes[..src_size])?;
                check_align(Space::Global, sa, size)?;
            }
            let dst = cta.address(t, d);
            // The destination is checked now, written at the wait (see `PendingCopy`).
            let mut probe = [0u8; 16];
            cta.read(t, Space::Shared, dst, &mut probe[..size])?;
            t.copies.push(PendingCopy {
                group: OPEN_GROUP,
                dst,
                bytes,
                len: size as u8,
            });
        }
        Op::CpAsyncCommit => {
            for c in t.copies.iter_mut().filter(|c| c.group == OPEN_GROUP) {
                c.group = t.committed;
            }
            t.committed += 1;
        }
        Op::CpAsyncWait { all } => {
            let keep = if *all {
                for c in t.copies.iter_mut().filter(|c| c.group == OPEN_GROUP) {
                    c.group = t.committed;
                }
                t.committed += 1;
                0
            } else {
                cta.val(t, opd(inst, 0)?)? as u32
            };
            let done_below = t.committed.saturating_sub(keep);
            land_copies(cta, t, done_below)?;
        }
        Op::Nop => {}
        Op::Unsupported(what) => {
            return fault(
                FaultKind::IllegalInstruction,
                format!("the emulator does not implement `{what}`"),
            )
        }
        // Waits for, or reads the registers of, other threads: `cta` executes it for them all.
        Op::BarWarp
        | Op::Shfl(_)
        | Op::Vote(_)
        | Op::Match { .. }
        | Op::Redux { .. }
        | Op::Mma(_)
        | Op::Wgmma(_)
        | Op::Ldmatrix { .. } => {
            t.state = State::Warp;
            return Ok(Flow::Stop);
        }
    }
    Ok(Flow::Next)
}

#[allow(clippy::too_many_arguments)]
pub fn arith(
    f: Arith,
    ty: Ty,
    rnd: Rnd,
    ftz: bool,
    sat: bool,
    relu: bool,
    approx: bool,
    a: u64,
    b: u64,
) -> Result<u64, Fault> {
    if ty.is_float() {
        return num::float_arith(f, ty, rnd, ftz, sat, relu, approx, a, b).ok_or_else(|| Fault {
            kind: FaultKind::IllegalInstruction,
            message: format!("the emulator does not implement {f:?} on {ty:?}"),
        });
    }
    if ty == Ty::Pred {
        return Ok(match f {
            Arith::And => a & b & 1,
            Arith::Or => (a | b) & 1,
            Arith::Xor => (a ^ b) & 1,
            _ => {
                return fault(
                    FaultKind::IllegalInstruction,
                    format!("{f:?} on predicates"),
                )
            }
        });
    }
    let bits = ty.bits();
    if bits > 64 {
        return fault(FaultKind::IllegalInstruction, format!("{f:?} on {ty:?}"));
    }
    let (ua, ub) = (trunc(a, bits), trunc(b, bits));
    let (sa, sb) = (sext(a, bits), sext(b, bits));
    let signed = ty.is_signed();
    let v = match f {
        Arith::Add if sat && signed => {
            (sa as i128 + sb as i128).clamp(i32::MIN as i128, i32::MAX as i128) as u64
        }
        Arith::Sub if sat && signed => {
            (sa as i128 - sb as i128).clamp(i32::MIN as i128, i32::MAX as i128) as u64
        }
        Arith::Add => ua.wrapping_add(ub),
        Arith::Sub => ua.wrapping_sub(ub),
        Arith::Mul => ua.wrapping_mul(ub),
        Arith::MulHi => {
            if signed {
                ((sa as i128 * sb as i128) >> bits) as u64
            } else {
                ((ua as u128 * ub as u128) >> bits) as u64
            }
        }
        Arith::MulWide => {
            let v = if signed {
                (sa as i128 * sb as i128) as u64
            } else {
                (ua as u128 * ub as u128) as u64
            };
            return Ok(trunc(v, bits * 2));
        }
        Arith::Min if signed => sa.min(sb) as u64,
        Arith::Max if signed => {
            let m = sa.max(sb);
            (if relu { m.max(0) } else { m }) as u64
        }
        Arith::Min => ua.min(ub),
        Arith::Max => ua.max(ub),
        Arith::And => ua & ub,
        Arith::Or => ua | ub,
        Arith::Xor => ua ^ ub,
        Arith::Shl => {
            let n = trunc(b, 32);
            if n >= bits as u64 {
                0
            } else {
                ua << n
            }
        }
        Arith::Shr => {
            let n = trunc(b, 32).min(bits as u64 - 1 + u64::from(!signed));
            if signed {
                (sa >> n.min(63)) as u64
            } else if n >= bits as u64 {
                0
            } else {
                ua >> n
            }
        }
        Arith::Div | Arith::Rem if ub == 0 => {
            // Undefined on hardware; a fixed value keeps runs reproducible.
            u64::MAX
        }
        Arith::Div if signed => sa.wrapping_div(sb) as u64,
        Arith::Rem if signed => sa.wrapping_rem(sb) as u64,
        Arith::Div => ua / ub,
        Arith::Rem => ua % ub,
        Arith::Copysign => return fault(FaultKind::IllegalInstruction, "copysign on integers"),
    };
    Ok(trunc(v, bits))
}

fn unary(f: Unary, ty: Ty, ftz: bool, rnd: Rnd, a: u64) -> u64 {
    let bits = ty.bits().min(64);
    match f {
        Unary::Not if ty == Ty::Pred => (a & 1) ^ 1,
        Unary::Not => trunc(!a, bits),
        Unary::Cnot => (trunc(a, bits) == 0) as u64,
        Unary::Popc => trunc(a, bits).count_ones() as u64,
        Unary::Clz => (trunc(a, bits).leading_zeros() - (64 - bits)) as u64,
        Unary::Brev => trunc(a, bits).reverse_bits() >> (64 - bits),
        Unary::Bfind { shiftamt } => {
            let v = if ty.is_signed() {
                let s = sext(a, bits);
                if s < 0 {
                    !s as u64
                } else {
                    s as u64
                }
            } else {
                trunc(a, bits)
            };
            if v == 0 {
                0xffff_ffff
            } else {
                let pos = 63 - v.leading_zeros() as u64;
                if shiftamt {
                    bits as u64 - 1 - pos
                } else {
                    pos
                }
            }
        }
        Unary::Neg if !ty.is_float() => trunc((sext(a, bits)).wrapping_neg() as u64, bits),
        Unary::Abs if !ty.is_float() => trunc(sext(a, bits).wrapping_abs() as u64, bits),
        _ => num::float_unary(f, ty, ftz, rnd, a),
    }
}

fn compare(c: Cmp, ty: Ty, ftz: bool, a: u64, b: u64) -> bool {
    if ty.is_float() {
        let (x, y) = num::float_pair(ty, ftz, a, b);
        let unordered = x.is_nan() || y.is_nan();
        return match c {
            Cmp::Eq => !unordered && x == y,
            Cmp::Ne => !unordered && x != y,
            Cmp::Lt => !unordered && x < y,
            Cmp::Le => !unordered && x <= y,
            Cmp::Gt => !unordered && x > y,
            Cmp::Ge => !unordered && x >= y,
            Cmp::Equ => unordered || x == y,
            Cmp::Neu => unordered || x != y,
            Cmp::Ltu => unordered || x < y,
            Cmp::Leu => unordered || x <= y,
            Cmp::Gtu => unordered || x > y,
            Cmp::Geu => unordered || x >= y,
            Cmp::Num => !unordered,
            Cmp::Nan => unordered,
            Cmp::Lo => x < y,
            Cmp::Ls => x <= y,
            Cmp::Hi => x > y,
            Cmp::Hs => x >= y,
        };
    }
    let bits = ty.bits();
    if ty.is_signed() {
        let (x, y) = (sext(a, bits), sext(b, bits));
        match c {
            Cmp::Eq => x == y,
            Cmp::Ne => x != y,
            Cmp::Lt => x < y,
            Cmp::Le => x <= y,
            Cmp::Gt => x > y,
            Cmp::Ge => x >= y,
            Cmp::Lo => (x as u64) < y as u64,
            Cmp::Ls => x as u64 <= y as u64,
            Cmp::Hi => x as u64 > y as u64,
            Cmp::Hs => x as u64 >= y as u64,
            _ => false,
        }
    } else {
        let (x, y) = (trunc(a, bits), trunc(b, bits));
        match c {
            Cmp::Eq => x == y,
            Cmp::Ne => x != y,
            Cmp::Lt | Cmp::Lo => x < y,
            Cmp::Le | Cmp::Ls => x <= y,
            Cmp::Gt | Cmp::Hi => x > y,
            Cmp::Ge | Cmp::Hs => x >= y,
            _ => false,
        }
    }
}
