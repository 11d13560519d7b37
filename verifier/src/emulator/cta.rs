//! Runs a grid one CTA at a time. Within a CTA each thread runs alone until it must wait; then
//! the warp-collective instructions whose participants have all arrived execute, and then the
//! barriers whose threads have all arrived release. Nothing left to do with threads still
//! waiting is a deadlock, reported with what each warp waits on.

use super::exec::{fault, locate, run, Cta, Fault, FaultKind, State, Thread};
use super::matrix;
use super::op::{AtomOp, BarKind, Op, Opd, ShflMode, VoteMode};
use super::ptx::Program;
use super::wgmma;

/// Runs every thread of one CTA to completion.
pub fn run_cta(cta: &mut Cta, threads: &mut [Thread]) -> Result<(), Fault> {
    loop {
        if cta.reverse {
            for t in threads.iter_mut().rev() {
                if t.state == State::Ready {
                    run(cta, t)?;
                }
            }
        } else {
            for t in threads.iter_mut() {
                if t.state == State::Ready {
                    run(cta, t)?;
                }
            }
        }
        if threads.iter().all(|t| t.state == State::Exited) {
            return Ok(());
        }
        if warp_collectives(cta, threads)? || warpgroup_collectives(cta, threads)? {
            continue;
        }
        if barriers(cta, threads) {
            continue;
        }
        return Err(deadlock(cta.prog, threads));
    }
}

fn deadlock(prog: &Program, threads: &[Thread]) -> Fault {
    let mut lines = Vec::new();
    for t in threads.iter().filter(|t| t.state != State::Exited).take(4) {
        let f = &prog.functions[t.func];
        let at = f
            .insts
            .get(t.pc)
            .map(|i| (i.line, i.text.to_string()))
            .unwrap_or_default();
        lines.push(format!(
            "thread {:?} waits at PTX line {} `{}`",
            t.tid, at.0, at.1
        ));
    }
    let waiting = threads.iter().filter(|t| t.state != State::Exited).count();
    Fault {
        kind: FaultKind::Hang,
        message: format!(
            "deadlock: {waiting} threads wait on barriers or warp-collective instructions that the others never reach; {}",
            lines.join("; ")
        ),
    }
}

/// Releases barriers whose expected threads have all arrived.
fn barriers(cta: &mut Cta, threads: &mut [Thread]) -> bool {
    let live = threads.iter().filter(|t| t.state != State::Exited).count() as u32;
    let mut released = false;
    for id in 0..16u32 {
        let mut waiting = 0u32;
        let mut count = 0u32;
        let mut popc = 0u32;
        let mut all = true;
        for t in threads.iter() {
            if let State::Barrier {
                id: i,
                count: c,
                pred,
            } = t.state
            {
                if i == id {
                    waiting += 1;
                    count = count.max(c);
                    popc += pred as u32;
                    all &= pred;
                }
            }
        }
        if waiting == 0 {
            continue;
        }
        let expected = if count == 0 { live } else { count };
        if waiting + cta.arrived[id as usize] < expected {
            continue;
        }
        cta.arrived[id as usize] = 0;
        let any = popc > 0;
        for t in threads.iter_mut() {
            if let State::Barrier { id: i, .. } = t.state {
                if i != id {
                    continue;
                }
                let f = &cta.prog.functions[t.func];
                let inst = &f.insts[t.pc];
                if let Op::Bar(kind) = &inst.op {
                    let v = match kind {
                        BarKind::RedPopc => Some(popc as u64),
                        BarKind::RedAnd => Some(all as u64),
                        BarKind::RedOr => Some(any as u64),
                        _ => None,
                    };
                    if let (Some(v), Some(d)) = (v, inst.opds.first()) {
                        let d = d.clone();
                        let _ = cta.set(t, &d, v);
                    }
                }
                t.state = State::Ready;
                t.pc += 1;
            }
        }
        released = true;
    }
    released
}

/// The member mask an instruction names (its last operand for `.sync` forms), or the whole warp.
fn member_mask(cta: &mut Cta, t: &Thread, op: &Op, opds: &[Opd]) -> Result<u32, Fault> {
    let o = match op {
        Op::BarWarp => opds.first(),
        Op::Shfl(_) | Op::Vote(_) | Op::Match { .. } | Op::Redux { .. } => opds.last(),
        _ => None,
    };
    Ok(match o {
        Some(o) => cta.val(t, o)? as u32,
        None => u32::MAX,
    })
}

/// Executes each warp-collective instruction whose participants have all arrived. Returns
/// whether any did.
fn warp_collectives(cta: &mut Cta, threads: &mut [Thread]) -> Result<bool, Fault> {
    let prog = cta.prog;
    let mut any = false;
    for warp in threads.chunks_mut(32) {
        loop {
            let mut exited = 0u32;
            let mut sites: Vec<(usize, usize)> = Vec::new();
            for t in warp.iter() {
                match t.state {
                    State::Exited => exited |= 1 << t.lane,
                    State::Warp if !sites.contains(&(t.func, t.pc)) => sites.push((t.func, t.pc)),
                    _ => {}
                }
            }
            let all_lanes = if warp.len() >= 32 {
                u32::MAX
            } else {
                (1u32 << warp.len()) - 1
            };
            let mut ran = false;
            for (func, pc) in sites {
                let inst = &prog.functions[func].insts[pc];
                let mut here = 0u32;
                let mut first = 0;
                for (k, t) in warp.iter().enumerate().rev() {
                    if t.state == State::Warp && (t.func, t.pc) == (func, pc) {
                        here |= 1 << t.lane;
                        first = k;
                    }
                }
                if matches!(inst.op, Op::Wgmma(_)) {
                    continue;
                }
                let whole_warp = matches!(inst.op, Op::Mma(_) | Op::Ldmatrix { .. });
                if whole_warp && exited != 0 {
                    return Err(locate(
                        Fault {
                            kind: FaultKind::IllegalInstruction,
                            message: format!(
                                "a warp-wide `.aligned` instruction while lanes {exited:#010x} have exited"
                            ),
                        },
                        prog,
                        &warp[first],
                    ));
                }
                let needed = if whole_warp {
                    all_lanes
                } else {
                    member_mask(cta, &warp[first], &inst.op, &inst.opds)? & all_lanes & !exited
                };
                if needed & !here == 0 {
                    execute(cta, warp, here, func, pc)?;
                    ran = true;
                    break;
                }
            }
            if !ran {
                break;
            }
            any = true;
        }
    }
    Ok(any)
}

/// Executes each `wgmma.mma_async` that all 128 threads of its warpgroup have reached.
fn warpgroup_collectives(cta: &mut Cta, threads: &mut [Thread]) -> Result<bool, Fault> {
    let prog = cta.prog;
    let mut any = false;
    for group in threads.chunks_mut(wgmma::THREADS) {
        let Some(first) = group.iter().position(|t| t.state == State::Warp) else {
            continue;
        };
        let (func, pc) = (group[first].func, group[first].pc);
        let inst = &prog.functions[func].insts[pc];
        let Op::Wgmma(spec) = &inst.op else {
            continue;
        };
        if group.len() < wgmma::THREADS || group.iter().any(|t| t.state == State::Exited) {
            let f = Fault {
                kind: FaultKind::IllegalInstruction,
                message: "wgmma needs all 128 threads of its warpgroup".into(),
            };
            return Err(locate(f, prog, &group[first]));
        }
        if !group
            .iter()
            .all(|t| t.state == State::Warp && (t.func, t.pc) == (func, pc))
        {
            continue;
        }
        let r = (|| -> Result<(), Fault> {
            let ill = |m: String| Fault {
                kind: FaultKind::IllegalInstruction,
                message: m,
            };
            let opd = |k: usize| {
                inst.opds
                    .get(k)
                    .ok_or_else(|| ill(format!("wgmma operand {} missing", k + 1)))
            };
            let mut d = vals(cta, group, opd(0)?)?;
            let imm = |cta: &mut Cta, k: usize| -> Result<i32, Fault> {
                Ok(cta.val(&group[0], opd(k)?)? as u32 as i32)
            };
            let scale_d = cta.val(&group[0], opd(3)?)? & 1 != 0;
            let (scale_a, scale_b) = (imm(cta, 4)?, imm(cta, 5)?);
            let desc_b = cta.val(&group[0], opd(2)?)?;
            if spec.a_from_registers {
                let a = vals(cta, group, opd(1)?)?;
                let trans_b = inst.opds.len() > 6 && imm(cta, 6)? != 0;
                wgmma::wgmma_reg_a(
                    spec,
                    &a,
                    desc_b,
                    &cta.shared,
                    &mut d,
                    scale_d,
                    scale_a,
                    scale_b,
                    trans_b,
                )
                .map_err(ill)?;
            } else {
                let desc_a = cta.val(&group[0], opd(1)?)?;
                let trans_a = inst.opds.len() > 6 && imm(cta, 6)? != 0;
                let trans_b = inst.opds.len() > 7 && imm(cta, 7)? != 0;
                wgmma::wgmma(
                    spec,
                    desc_a,
                    desc_b,
                    &cta.shared,
                    &mut d,
                    scale_d,
                    scale_a,
                    scale_b,
                    trans_a,
                    trans_b,
                )
                .map_err(ill)?;
            }
            scatter(cta, group, opd(0)?, &d)
        })();
        r.map_err(|f| locate(f, prog, &group[0]))?;
        cta.wgmma += 1;
        for t in group.iter_mut() {
            t.pc += 1;
            t.state = State::Ready;
        }
        any = true;
    }
    Ok(any)
}

/// Writes `values[k]` (one value per register of `o`) to thread k's registers: the inverse of
/// [`vals`]. A thread or register without a value gets 0.
fn scatter(cta: &Cta, threads: &mut [Thread], o: &Opd, values: &[Vec<u32>]) -> Result<(), Fault> {
    let regs = std::slice::from_ref(o);
    let regs = match o {
        Opd::Vec(v) => v.as_slice(),
        _ => regs,
    };
    for (k, t) in threads.iter_mut().enumerate() {
        for (i, r) in regs.iter().enumerate() {
            let v = values.get(k).and_then(|x| x.get(i)).copied().unwrap_or(0);
            cta.set(t, r, v as u64)?;
        }
    }
    Ok(())
}

fn vals(cta: &mut Cta, warp: &[Thread], o: &Opd) -> Result<Vec<Vec<u32>>, Fault> {
    let parts: Vec<&Opd> = match o {
        Opd::Vec(v) => v.iter().collect(),
        x => vec![x],
    };
    let mut out = Vec::with_capacity(32);
    for t in warp {
        let mut r = Vec::with_capacity(parts.len());
        for p in &parts {
            r.push(cta.val(t, p)? as u32);
        }
        out.push(r);
    }
    Ok(out)
}

/// Runs the collective at (`func`, `pc`) for the lanes in `here`, and moves them past it.
fn execute(
    cta: &mut Cta,
    warp: &mut [Thread],
    here: u32,
    func: usize,
    pc: usize,
) -> Result<(), Fault> {
    let prog = cta.prog;
    let inst = &prog.functions[func].insts[pc];
    let lanes: Vec<usize> = (0..warp.len())
        .filter(|&k| here & (1 << warp[k].lane) != 0)
        .collect();
    let needs = match &inst.op {
        Op::Shfl(_) => 5,
        Op::Mma(_) => 4,
        Op::Vote(_) | Op::Match { .. } | Op::Redux { .. } => 3,
        Op::Ldmatrix { .. } => 2,
        _ => 0,
    };
    if inst.opds.len() < needs {
        let f = Fault {
            kind: FaultKind::IllegalInstruction,
            message: format!(
                "{} operands; this instruction takes {needs}",
                inst.opds.len()
            ),
        };
        return Err(locate(f, prog, &warp[lanes.first().copied().unwrap_or(0)]));
    }
    let r = (|| -> Result<(), Fault> {
        match &inst.op {
            Op::BarWarp => {}
            Op::Shfl(mode) => {
                let a: Vec<u64> = warp
                    .iter()
                    .map(|t| cta.val(t, &inst.opds[1]))
                    .collect::<Result<_, _>>()?;
                let mut out = Vec::new();
                for &k in &lanes {
                    let t = &warp[k];
                    let b = cta.val(t, &inst.opds[2])? as u32 & 0x1f;
                    let c = cta.val(t, &inst.opds[3])? as u32;
                    let lane = t.lane;
                    let seg = (c >> 8) & 0x1f;
                    let clamp = c & 0x1f;
                    let max_lane = (lane & seg) | (clamp & !seg);
                    let min_lane = lane & seg;
                    let (j, ok) = match mode {
                        ShflMode::Up => {
                            let j = lane as i32 - b as i32;
                            (j, j >= max_lane as i32)
                        }
                        ShflMode::Down => {
                            let j = lane + b;
                            (j as i32, j <= max_lane)
                        }
                        ShflMode::Bfly => {
                            let j = lane ^ b;
                            (j as i32, j <= max_lane)
                        }
                        ShflMode::Idx => {
                            let j = min_lane | (b & !seg);
                            (j as i32, j <= max_lane)
                        }
                    };
                    let src = if ok { j as usize } else { lane as usize };
                    let v = if here & (1 << src) != 0 {
                        a[src]
                    } else {
                        a[lane as usize]
                    };
                    out.push((k, v, ok));
                }
                for (k, v, ok) in out {
                    match &inst.opds[0] {
                        Opd::Vec(d) if d.len() == 2 => {
                            cta.set(&mut warp[k], &d[0], v)?;
                            cta.set(&mut warp[k], &d[1], ok as u64)?;
                        }
                        d => cta.set(&mut warp[k], d, v)?,
                    }
                }
            }
            Op::Vote(mode) => {
                let mut ballot = 0u32;
                for &k in &lanes {
                    if cta.val(&warp[k], &inst.opds[1])? & 1 != 0 {
                        ballot |= 1 << warp[k].lane;
                    }
                }
                let v = match mode {
                    VoteMode::Ballot => ballot as u64,
                    VoteMode::Any => (ballot != 0) as u64,
                    VoteMode::All => (ballot == here) as u64,
                    VoteMode::Uni => (ballot == 0 || ballot == here) as u64,
                };
                for &k in &lanes {
                    cta.set(&mut warp[k], &inst.opds[0], v)?;
                }
            }
            Op::Match { all } => {
                let v: Vec<u64> = lanes
                    .iter()
                    .map(|&k| cta.val(&warp[k], &inst.opds[1]))
                    .collect::<Result<_, _>>()?;
                let same_all = v.iter().all(|x| *x == v[0]);
                for (i, &k) in lanes.iter().enumerate() {
                    let mut m = 0u32;
                    for (j, &k2) in lanes.iter().enumerate() {
                        if v[j] == v[i] {
                            m |= 1 << warp[k2].lane;
                        }
                    }
                    let d = if *all {
                        if same_all {
                            here
                        } else {
                            0
                        }
                    } else {
                        m
                    };
                    match &inst.opds[0] {
                        Opd::Vec(dv) if dv.len() == 2 => {
                            cta.set(&mut warp[k], &dv[0], d as u64)?;
                            cta.set(&mut warp[k], &dv[1], same_all as u64)?;
                        }
                        o => cta.set(&mut warp[k], o, d as u64)?,
                    }
                }
            }
            Op::Redux { f, ty } => {
                let v: Vec<u64> = lanes
                    .iter()
                    .map(|&k| cta.val(&warp[k], &inst.opds[1]))
                    .collect::<Result<_, _>>()?;
                let signed = ty.is_signed();
                let s = |x: u64| x as u32 as i32 as i64;
                let r = v.iter().skip(1).fold(v[0], |acc, &x| match f {
                    AtomOp::Add => (acc as u32).wrapping_add(x as u32) as u64,
                    AtomOp::Min if signed => s(acc).min(s(x)) as u32 as u64,
                    AtomOp::Max if signed => s(acc).max(s(x)) as u32 as u64,
                    AtomOp::Min => (acc as u32).min(x as u32) as u64,
                    AtomOp::Max => (acc as u32).max(x as u32) as u64,
                    AtomOp::And => acc & x,
                    AtomOp::Or => acc | x,
                    _ => acc ^ x,
                });
                for &k in &lanes {
                    cta.set(&mut warp[k], &inst.opds[0], r)?;
                }
            }
            Op::Ldmatrix { count, trans } => {
                let mut rows = Vec::with_capacity(8 * count);
                for t in warp.iter().take(8 * count) {
                    let Opd::Mem(m) = &inst.opds[1] else {
                        return fault(FaultKind::IllegalInstruction, "ldmatrix without an address");
                    };
                    let a = cta.address(t, m);
                    let mut row = [0u8; 16];
                    cta.read(t, super::op::Space::Shared, a, &mut row)
                        .map_err(|f| locate(f, prog, t))?;
                    rows.push(row);
                }
                let out = matrix::ldmatrix(*count, *trans, &rows);
                scatter(cta, warp, &inst.opds[0], &out)?;
            }
            Op::Mma(spec) => {
                let a = vals(cta, warp, &inst.opds[1])?;
                let b = vals(cta, warp, &inst.opds[2])?;
                let c = vals(cta, warp, &inst.opds[3])?;
                let meta = match (inst.opds.get(4), inst.opds.get(5)) {
                    (Some(e), Some(sel)) => {
                        let e: Vec<u32> = warp
                            .iter()
                            .map(|t| cta.val(t, e).map(|v| v as u32))
                            .collect::<Result<_, _>>()?;
                        let s = cta.val(&warp[0], sel)? as u32;
                        Some((e, s))
                    }
                    _ => None,
                };
                cta.mma += 1;
                let d = matrix::mma(
                    spec,
                    &a,
                    &b,
                    &c,
                    meta.as_ref().map(|(e, s)| (e.as_slice(), *s)),
                )
                .map_err(|m| Fault {
                    kind: FaultKind::IllegalInstruction,
                    message: m,
                })?;
                scatter(cta, warp, &inst.opds[0], &d)?;
            }
            other => {
                return fault(
                    FaultKind::IllegalInstruction,
                    format!("{other:?} is not warp-collective"),
                );
            }
        }
        Ok(())
    })();
    if let Err(f) = r {
        let k = lanes.first().copied().unwrap_or(0);
        return Err(locate(f, prog, &warp[k]));
    }
    for &k in &lanes {
        warp[k].pc += 1;
        warp[k].state = State::Ready;
    }
    Ok(())
}
