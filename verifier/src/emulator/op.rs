//! Decoded PTX instructions: the opcode's dotted modifiers become an [`Op`] once, at load, so
//! the interpreter dispatches on an enum instead of re-reading text per executed instruction.

use super::matrix::{parse_mma, MmaSpec};
use super::wgmma::{parse_wgmma, WgmmaSpec};
use std::rc::Rc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    B8,
    B16,
    B32,
    B64,
    B128,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    F16x2,
    Bf16,
    Bf16x2,
    Tf32,
    F32,
    F64,
    Pred,
    E4m3x2,
    E5m2x2,
}

impl Ty {
    fn from(s: &str) -> Option<Ty> {
        use Ty::*;
        Some(match s {
            "b8" => B8,
            "b16" => B16,
            "b32" => B32,
            "b64" => B64,
            "b128" => B128,
            "u8" => U8,
            "u16" => U16,
            "u32" => U32,
            "u64" => U64,
            "s8" => S8,
            "s16" => S16,
            "s32" => S32,
            "s64" => S64,
            "f16" => F16,
            "f16x2" => F16x2,
            "bf16" => Bf16,
            "bf16x2" => Bf16x2,
            "tf32" => Tf32,
            "f32" => F32,
            "f64" => F64,
            "pred" => Pred,
            "e4m3x2" => E4m3x2,
            "e5m2x2" => E5m2x2,
            _ => return None,
        })
    }
    pub fn bits(self) -> u32 {
        use Ty::*;
        match self {
            Pred => 1,
            B8 | U8 | S8 => 8,
            B16 | U16 | S16 | F16 | Bf16 | E4m3x2 | E5m2x2 => 16,
            B32 | U32 | S32 | F32 | F16x2 | Bf16x2 | Tf32 => 32,
            B64 | U64 | S64 | F64 => 64,
            B128 => 128,
        }
    }
    pub fn bytes(self) -> usize {
        (self.bits() as usize).div_ceil(8)
    }
    pub fn is_signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }
    pub fn is_float(self) -> bool {
        matches!(
            self,
            Ty::F16 | Ty::F16x2 | Ty::Bf16 | Ty::Bf16x2 | Ty::F32 | Ty::F64 | Ty::Tf32
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Global,
    Shared,
    Local,
    Param,
    Const,
    /// A generic address: global, or the shared / local window.
    Generic,
}

/// Rounding: `.rn .rz .rm .rp` for floats, `.rni .rzi .rmi .rpi` for float-to-integral.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rnd {
    Default,
    Rn,
    Rz,
    Rm,
    Rp,
    Rni,
    Rzi,
    Rmi,
    Rpi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sreg {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    Laneid,
    Warpid,
    Nwarpid,
    Nsmid,
    LanemaskEq,
    LanemaskLt,
    LanemaskLe,
    LanemaskGt,
    LanemaskGe,
    Clock,
    DynamicSmem,
    TotalSmem,
    Zero,
    One,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mem {
    pub reg: Option<u32>,
    pub off: i64,
    /// Relative to the start of dynamic shared memory (an `.extern .shared` array).
    pub dyn_shared: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Opd {
    Reg(u32),
    Imm(u64),
    FloatImm(f64),
    Sreg(Sreg),
    Vec(Vec<Opd>),
    Mem(Mem),
    /// An instruction index (after fix-up).
    Label(usize),
    Func(usize),
    Not(Box<Opd>),
    /// The address of dynamic shared memory.
    DynShared,
    Sink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    MulHi,
    MulWide,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
    Div,
    Rem,
    Copysign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    Neg,
    Abs,
    Not,
    Cnot,
    Popc,
    Clz,
    Brev,
    Bfind { shiftamt: bool },
    Ex2,
    Lg2,
    Rcp,
    Rsqrt,
    Sqrt,
    Sin,
    Cos,
    Tanh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomOp {
    Add,
    Min,
    Max,
    And,
    Or,
    Xor,
    Exch,
    Cas,
    Inc,
    Dec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    Sync,
    Arrive,
    RedPopc,
    RedAnd,
    RedOr,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Mov(Ty),
    Ld {
        space: Space,
        ty: Ty,
        vec: u8,
    },
    St {
        space: Space,
        ty: Ty,
        vec: u8,
    },
    Arith {
        f: Arith,
        ty: Ty,
        rnd: Rnd,
        ftz: bool,
        sat: bool,
        relu: bool,
        approx: bool,
    },
    Mad {
        ty: Ty,
        hi: bool,
        wide: bool,
    },
    Fma {
        ty: Ty,
        rnd: Rnd,
        ftz: bool,
        sat: bool,
    },
    Unary {
        f: Unary,
        ty: Ty,
        ftz: bool,
        approx: bool,
        rnd: Rnd,
    },
    Setp {
        cmp: Cmp,
        ty: Ty,
        combine: Option<BoolOp>,
        ftz: bool,
    },
    Selp(Ty),
    Cvt {
        dst: Ty,
        src: Ty,
        rnd: Rnd,
        sat: bool,
        ftz: bool,
        relu: bool,
    },
    Cvta {
        to: bool,
        space: Space,
    },
    Shf {
        left: bool,
        clamp: bool,
    },
    Bfi(Ty),
    Bfe(Ty),
    Prmt,
    Bra,
    Ret,
    Exit,
    Trap,
    Call,
    Bar(BarKind),
    BarWarp,
    Shfl(ShflMode),
    Vote(VoteMode),
    Match {
        all: bool,
    },
    Redux {
        f: AtomOp,
        ty: Ty,
    },
    Activemask,
    Atom {
        space: Space,
        f: AtomOp,
        ty: Ty,
        red: bool,
    },
    CpAsync {
        ca: bool,
        zfill_operand: bool,
    },
    CpAsyncCommit,
    /// Waits until at most this many committed groups are pending (`wait_all`: commit, then 0).
    CpAsyncWait {
        all: bool,
    },
    Nop,
    Mma(Rc<MmaSpec>),
    /// `wgmma.mma_async`: the four warps of a warpgroup together.
    Wgmma(Rc<WgmmaSpec>),
    Ldmatrix {
        count: usize,
        trans: bool,
    },
    Unsupported(Rc<str>),
}

impl Op {
    /// The width of a decimal float immediate's type, for operand conversion.
    pub fn float_bytes(&self) -> usize {
        let t = match self {
            Op::Mov(t) | Op::Selp(t) => Some(*t),
            Op::Arith { ty, .. } | Op::Fma { ty, .. } | Op::Unary { ty, .. } => Some(*ty),
            Op::Setp { ty, .. } => Some(*ty),
            Op::Cvt { src, .. } => Some(*src),
            Op::St { ty, .. } => Some(*ty),
            _ => None,
        };
        match t {
            Some(Ty::F64) | Some(Ty::B64) => 8,
            _ => 4,
        }
    }
}

pub struct Inst {
    pub op: Op,
    pub guard: Option<(u32, bool)>,
    pub opds: Vec<Opd>,
    pub line: u32,
    pub text: Rc<str>,
}

impl Inst {
    pub fn exit(line: u32) -> Inst {
        Inst {
            op: Op::Exit,
            guard: None,
            opds: Vec::new(),
            line,
            text: "(end of function)".into(),
        }
    }
}

fn rnd(m: &str) -> Option<Rnd> {
    Some(match m {
        "rn" => Rnd::Rn,
        "rz" => Rnd::Rz,
        "rm" => Rnd::Rm,
        "rp" => Rnd::Rp,
        "rni" => Rnd::Rni,
        "rzi" => Rnd::Rzi,
        "rmi" => Rnd::Rmi,
        "rpi" => Rnd::Rpi,
        _ => return None,
    })
}

fn space(m: &str) -> Option<Space> {
    Some(match m {
        "global" => Space::Global,
        "shared" | "shared::cta" => Space::Shared,
        "local" => Space::Local,
        "param" => Space::Param,
        "const" => Space::Const,
        _ => return None,
    })
}

fn atom_op(m: &str) -> Option<AtomOp> {
    Some(match m {
        "add" => AtomOp::Add,
        "min" => AtomOp::Min,
        "max" => AtomOp::Max,
        "and" => AtomOp::And,
        "or" => AtomOp::Or,
        "xor" => AtomOp::Xor,
        "exch" => AtomOp::Exch,
        "cas" => AtomOp::Cas,
        "inc" => AtomOp::Inc,
        "dec" => AtomOp::Dec,
        _ => return None,
    })
}

fn cmp(m: &str) -> Option<Cmp> {
    Some(match m {
        "eq" => Cmp::Eq,
        "ne" => Cmp::Ne,
        "lt" => Cmp::Lt,
        "le" => Cmp::Le,
        "gt" => Cmp::Gt,
        "ge" => Cmp::Ge,
        "lo" => Cmp::Lo,
        "ls" => Cmp::Ls,
        "hi" => Cmp::Hi,
        "hs" => Cmp::Hs,
        "equ" => Cmp::Equ,
        "neu" => Cmp::Neu,
        "ltu" => Cmp::Ltu,
        "leu" => Cmp::Leu,
        "gtu" => Cmp::Gtu,
        "geu" => Cmp::Geu,
        "num" => Cmp::Num,
        "nan" => Cmp::Nan,
        _ => return None,
    })
}

/// Modifiers that change nothing an emulator can observe: caching, memory ordering and scope
/// (execution is sequentially consistent here), alignment promises, eviction hints.
fn ignorable(m: &str) -> bool {
    matches!(
        m,
        "nc" | "ca"
            | "cg"
            | "cs"
            | "lu"
            | "cv"
            | "wb"
            | "wt"
            | "volatile"
            | "weak"
            | "relaxed"
            | "acquire"
            | "release"
            | "acq_rel"
            | "sc"
            | "cta"
            | "gpu"
            | "sys"
            | "cluster"
            | "sync"
            | "aligned"
            | "uni"
            | "full"
            | "lo"
            | "L1::no_allocate"
            | "L1::evict_last"
            | "L1::evict_first"
            | "L1::evict_normal"
            | "L1::evict_unchanged"
            | "L2::64B"
            | "L2::128B"
            | "L2::256B"
            | "L2::evict_last"
            | "L2::evict_first"
            | "L2::evict_normal"
            | "L2::cache_hint"
            | "NaN"
            | "xorsign"
    )
}

/// Decodes one opcode (`add.s32`, `ld.global.nc.v4.u32`, ...).
pub fn decode(opcode: &str) -> Result<Op, String> {
    let unsupported = || Op::Unsupported(opcode.into());
    if opcode.starts_with("mma") {
        return Ok(parse_mma(opcode)
            .map(|s| Op::Mma(Rc::new(s)))
            .unwrap_or_else(|_| unsupported()));
    }
    if let Some(rest) = opcode.strip_prefix("wgmma.") {
        // The accumulators are written when the instruction executes, so its fence, commit and
        // wait have nothing left to order.
        if rest.starts_with("mma_async") {
            return Ok(parse_wgmma(opcode)
                .map(|s| Op::Wgmma(Rc::new(s)))
                .unwrap_or_else(|_| unsupported()));
        }
        if rest.starts_with("fence")
            || rest.starts_with("commit_group")
            || rest.starts_with("wait_group")
        {
            return Ok(Op::Nop);
        }
        return Ok(unsupported());
    }
    let parts: Vec<&str> = opcode.split('.').collect();
    let base = parts[0];
    let mods = &parts[1..];
    let types: Vec<Ty> = mods.iter().filter_map(|m| Ty::from(m)).collect();
    let has = |m: &str| mods.contains(&m);
    let last_ty = types.last().copied();
    let vec = mods
        .iter()
        .find_map(|m| match *m {
            "v2" => Some(2u8),
            "v4" => Some(4),
            "v8" => Some(8),
            _ => None,
        })
        .unwrap_or(1);
    let rounding = mods.iter().find_map(|m| rnd(m)).unwrap_or(Rnd::Default);
    let ftz = has("ftz");
    let sat = has("sat") || has("satfinite");
    let relu = has("relu");
    let approx = has("approx");
    let ty = || last_ty.ok_or_else(|| format!("`{opcode}` names no type"));
    let op = match base {
        "mov" => Op::Mov(ty()?),
        "ld" | "ldu" => {
            let sp = mods.iter().find_map(|m| space(m)).unwrap_or(Space::Generic);
            Op::Ld {
                space: sp,
                ty: ty()?,
                vec,
            }
        }
        "st" => {
            let sp = mods.iter().find_map(|m| space(m)).unwrap_or(Space::Generic);
            Op::St {
                space: sp,
                ty: ty()?,
                vec,
            }
        }
        "add" | "sub" | "mul" | "min" | "max" | "and" | "or" | "xor" | "shl" | "shr" | "div"
        | "rem" | "copysign" => {
            let f = match base {
                "add" => Arith::Add,
                "sub" => Arith::Sub,
                "mul" if has("hi") => Arith::MulHi,
                "mul" if has("wide") => Arith::MulWide,
                "mul" => Arith::Mul,
                "min" => Arith::Min,
                "max" => Arith::Max,
                "and" => Arith::And,
                "or" => Arith::Or,
                "xor" => Arith::Xor,
                "shl" => Arith::Shl,
                "shr" => Arith::Shr,
                "div" => Arith::Div,
                "rem" => Arith::Rem,
                _ => Arith::Copysign,
            };
            if has("cc") {
                return Ok(unsupported());
            }
            Op::Arith {
                f,
                ty: ty()?,
                rnd: rounding,
                ftz,
                sat,
                relu,
                approx: approx || has("full"),
            }
        }
        "mad" if !has("cc") => Op::Mad {
            ty: ty()?,
            hi: has("hi"),
            wide: has("wide"),
        },
        "fma" => Op::Fma {
            ty: ty()?,
            rnd: rounding,
            ftz,
            sat,
        },
        "neg" | "abs" | "not" | "cnot" | "popc" | "clz" | "brev" | "bfind" | "ex2" | "lg2"
        | "rcp" | "rsqrt" | "sqrt" | "sin" | "cos" | "tanh" => Op::Unary {
            f: match base {
                "neg" => Unary::Neg,
                "abs" => Unary::Abs,
                "not" => Unary::Not,
                "cnot" => Unary::Cnot,
                "popc" => Unary::Popc,
                "clz" => Unary::Clz,
                "brev" => Unary::Brev,
                "bfind" => Unary::Bfind {
                    shiftamt: has("shiftamt"),
                },
                "ex2" => Unary::Ex2,
                "lg2" => Unary::Lg2,
                "rcp" => Unary::Rcp,
                "rsqrt" => Unary::Rsqrt,
                "sqrt" => Unary::Sqrt,
                "sin" => Unary::Sin,
                "cos" => Unary::Cos,
                _ => Unary::Tanh,
            },
            ty: ty()?,
            ftz,
            approx,
            rnd: rounding,
        },
        "setp" => Op::Setp {
            cmp: mods
                .iter()
                .find_map(|m| cmp(m))
                .ok_or_else(|| format!("`{opcode}` names no comparison"))?,
            ty: ty()?,
            combine: mods.iter().find_map(|m| match *m {
                "and" => Some(BoolOp::And),
                "or" => Some(BoolOp::Or),
                "xor" => Some(BoolOp::Xor),
                _ => None,
            }),
            ftz,
        },
        "selp" => Op::Selp(ty()?),
        "cvt" => {
            if types.len() < 2 {
                return Err(format!("`{opcode}` needs a destination and a source type"));
            }
            Op::Cvt {
                dst: types[0],
                src: types[1],
                rnd: rounding,
                sat,
                ftz,
                relu,
            }
        }
        "cvta" => Op::Cvta {
            to: has("to"),
            space: mods
                .iter()
                .find_map(|m| space(m))
                .ok_or_else(|| format!("`{opcode}` names no state space"))?,
        },
        "shf" => Op::Shf {
            left: has("l"),
            clamp: has("clamp"),
        },
        "bfi" => Op::Bfi(ty()?),
        "bfe" => Op::Bfe(ty()?),
        "prmt" if mods.len() == 1 => Op::Prmt,
        "bra" => Op::Bra,
        "ldmatrix"
            if has("m8n8")
                && has("b16")
                && mods.iter().any(|m| space(m) == Some(Space::Shared)) =>
        {
            Op::Ldmatrix {
                count: if has("x4") {
                    4
                } else if has("x2") {
                    2
                } else {
                    1
                },
                trans: has("trans"),
            }
        }
        "ret" => Op::Ret,
        "exit" => Op::Exit,
        "trap" => Op::Trap,
        "call" => Op::Call,
        "bar" | "barrier" if has("warp") => Op::BarWarp,
        "bar" | "barrier" => {
            if has("arrive") {
                Op::Bar(BarKind::Arrive)
            } else if has("red") {
                if has("popc") {
                    Op::Bar(BarKind::RedPopc)
                } else if has("and") {
                    Op::Bar(BarKind::RedAnd)
                } else {
                    Op::Bar(BarKind::RedOr)
                }
            } else {
                Op::Bar(BarKind::Sync)
            }
        }
        "shfl" => Op::Shfl(if has("up") {
            ShflMode::Up
        } else if has("down") {
            ShflMode::Down
        } else if has("bfly") {
            ShflMode::Bfly
        } else {
            ShflMode::Idx
        }),
        "vote" => Op::Vote(if has("ballot") {
            VoteMode::Ballot
        } else if has("all") {
            VoteMode::All
        } else if has("any") {
            VoteMode::Any
        } else {
            VoteMode::Uni
        }),
        "match" => Op::Match { all: has("all") },
        "redux" => Op::Redux {
            f: mods
                .iter()
                .find_map(|m| atom_op(m))
                .ok_or_else(|| format!("`{opcode}` names no operation"))?,
            ty: ty()?,
        },
        "activemask" => Op::Activemask,
        "atom" | "red" => {
            let f = mods
                .iter()
                .find_map(|m| atom_op(m))
                .ok_or_else(|| format!("`{opcode}` names no operation"))?;
            Op::Atom {
                space: mods.iter().find_map(|m| space(m)).unwrap_or(Space::Generic),
                f,
                ty: ty()?,
                red: base == "red",
            }
        }
        "cp" if has("async") && has("commit_group") => Op::CpAsyncCommit,
        "cp" if has("async") && has("wait_group") => Op::CpAsyncWait { all: false },
        "cp" if has("async") && has("wait_all") => Op::CpAsyncWait { all: true },
        "cp" if has("async") && has("shared") && has("global") && !has("bulk") => Op::CpAsync {
            ca: has("ca"),
            zfill_operand: false,
        },
        "membar" | "fence" | "nanosleep" | "prefetch" | "prefetchu" | "pmevent"
        | "griddepcontrol" => Op::Nop,
        _ => unsupported(),
    };
    if let Some(m) = mods.iter().find(|m| {
        !(ignorable(m)
            || Ty::from(m).is_some()
            || rnd(m).is_some()
            || space(m).is_some()
            || cmp(m).is_some()
            || atom_op(m).is_some()
            || matches!(
                **m,
                "v2" | "v4"
                    | "v8"
                    | "ftz"
                    | "sat"
                    | "satfinite"
                    | "relu"
                    | "approx"
                    | "hi"
                    | "wide"
                    | "shiftamt"
                    | "to"
                    | "l"
                    | "r"
                    | "wrap"
                    | "clamp"
                    | "warp"
                    | "arrive"
                    | "red"
                    | "popc"
                    | "up"
                    | "down"
                    | "bfly"
                    | "idx"
                    | "ballot"
                    | "all"
                    | "any"
                    | "async"
                    | "commit_group"
                    | "wait_group"
                    | "wait_all"
                    | "proxy"
                    | "async::shared::cta"
                    | "shared::cta"
                    | "gl"
                    | "trans"
                    | "m8n8"
                    | "x1"
                    | "x2"
                    | "x4"
                    | "mmio"
            ))
    }) {
        if !matches!(op, Op::Nop | Op::Unsupported(_)) {
            return Ok(Op::Unsupported(
                format!("{opcode} (modifier `.{m}`)").into(),
            ));
        }
    }
    Ok(op)
}
