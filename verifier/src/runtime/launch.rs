//! Launch preparation that needs no GPU: checking a resolved launch against the device and the
//! compiled function before launching (a refused launch is the kernel's fault and must not touch
//! the context), and packing an argument list built at run time into the pointer array
//! `cuLaunchKernel` takes.

use super::device::DeviceInfo;
use super::error::{OverLimits, RuntimeError};
use crate::plan::{ResolvedArg, ResolvedLaunch};
use serde::{Deserialize, Serialize};
use std::ffi::c_void;

/// What `cuFuncGetAttribute` says about one compiled kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FuncAttrs {
    /// The most threads per block this kernel can be launched with (lowered by its register
    /// use and by `__launch_bounds__`).
    pub max_threads_per_block: u32,
    pub num_regs: u32,
    pub static_shared_bytes: u32,
    pub local_bytes: u32,
    pub const_bytes: u32,
    /// Dynamic shared memory currently allowed (48 KiB minus static until raised).
    pub max_dynamic_shared_bytes: u32,
    /// `major * 10 + minor` of the SASS.
    pub binary_version: u32,
}

/// Registers are allocated per warp in units of 256.
const REGISTER_UNIT: u64 = 256;

/// Registers one warp of a kernel using `per_thread` registers is allocated.
pub fn registers_per_warp(per_thread: u32, warp_size: u32) -> u64 {
    (u64::from(per_thread) * u64::from(warp_size)).div_ceil(REGISTER_UNIT) * REGISTER_UNIT
}
/// Blocks per cluster without `CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED`.
pub const PORTABLE_CLUSTER_BLOCKS: u64 = 8;
/// Hopper's largest cluster (non-portable).
pub const MAX_CLUSTER_BLOCKS: u64 = 16;

/// Everything that makes the device refuse (or silently mis-run) this launch, checked up
/// front; `Ok` does not promise the launch succeeds, only that these limits hold.
pub fn check_limits(l: &ResolvedLaunch, f: &FuncAttrs, d: &DeviceInfo) -> Result<(), OverLimits> {
    let mut p = Vec::new();
    let threads = l.threads_per_block();
    if threads > d.max_threads_per_block as u64 {
        p.push(format!(
            "block {:?} has {threads} threads; the device allows {}",
            l.block, d.max_threads_per_block
        ));
    } else if threads > f.max_threads_per_block as u64 {
        p.push(format!(
            "block {:?} has {threads} threads; the compiled kernel can run at most {} per block ({} registers per thread, or its __launch_bounds__)",
            l.block, f.max_threads_per_block, f.num_regs
        ));
    }
    for (i, axis) in ["x", "y", "z"].iter().enumerate() {
        if l.block[i] > d.max_block_dim[i] {
            p.push(format!(
                "block.{axis} = {} exceeds the device's {}",
                l.block[i], d.max_block_dim[i]
            ));
        }
        if l.grid[i] > d.max_grid_dim[i] {
            p.push(format!(
                "grid.{axis} = {} exceeds the device's {}",
                l.grid[i], d.max_grid_dim[i]
            ));
        }
    }
    let warps = threads.div_ceil(d.warp_size.max(1) as u64);
    let regs = registers_per_warp(f.num_regs, d.warp_size) * warps;
    if regs > d.registers_per_block as u64 {
        p.push(format!(
            "needs {regs} registers per block ({} per thread x {threads} threads); the device has {}",
            f.num_regs, d.registers_per_block
        ));
    }
    let smem = f.static_shared_bytes as u64 + l.shared_bytes as u64;
    if smem > d.shared_mem_per_block_optin as u64 {
        p.push(format!(
            "needs {smem} bytes of shared memory per block ({} static + {} dynamic); the device allows at most {} per block",
            f.static_shared_bytes, l.shared_bytes, d.shared_mem_per_block_optin
        ));
    }
    if let Some(c) = l.cluster {
        if !d.cluster_launch {
            p.push(format!(
                "thread-block clusters need compute capability 9.0 or newer; the device is {}.{}",
                d.compute_capability.0, d.compute_capability.1
            ));
        }
        for (i, axis) in ["x", "y", "z"].iter().enumerate() {
            if c[i] == 0 || !l.grid[i].is_multiple_of(c[i]) {
                p.push(format!(
                    "grid.{axis} = {} is not a multiple of cluster.{axis} = {}",
                    l.grid[i], c[i]
                ));
            }
        }
        let blocks: u64 = c.iter().map(|&x| x as u64).product();
        if blocks > MAX_CLUSTER_BLOCKS {
            p.push(format!(
                "cluster {c:?} has {blocks} blocks; at most {MAX_CLUSTER_BLOCKS} are supported"
            ));
        }
    }
    if l.cooperative && !d.cooperative_launch {
        p.push("the device does not support cooperative launches".to_string());
    }
    if p.is_empty() {
        Ok(())
    } else {
        Err(OverLimits {
            kernel: l.kernel.clone(),
            problems: p,
        })
    }
}

/// A cooperative grid must be resident all at once: `blocks_per_sm` is the occupancy the
/// driver computes for this block size and shared memory.
pub fn check_coresident(
    l: &ResolvedLaunch,
    blocks_per_sm: u32,
    d: &DeviceInfo,
) -> Result<(), OverLimits> {
    let blocks: u64 = l.grid.iter().map(|&g| g as u64).product();
    let fit = blocks_per_sm as u64 * d.sm_count as u64;
    if blocks > fit {
        return Err(OverLimits {
            kernel: l.kernel.clone(),
            problems: vec![format!(
                "cooperative launch of {blocks} blocks; only {fit} fit on the device at once ({blocks_per_sm} per SM x {} SMs at this block size and shared memory)",
                d.sm_count
            )],
        });
    }
    Ok(())
}

/// Bytes of one argument slot in [`PackedArgs`]: the widest argument a plan can pass.
pub const SLOT_BYTES: usize = 8;

/// The plan's arguments against the kernel's parameter sizes (`cuFuncGetParamInfo`, in
/// order). `cuLaunchKernel` reads one pointer per *parameter* from the argument array and
/// that parameter's size from the slot it points to: fewer arguments than parameters, or a
/// parameter wider than a slot (a struct or `CUtensorMap` by value), would make the driver read
/// past what the harness wrote — undefined behaviour in the worker rather than a launch error
/// the kernel's author can act on. Extra arguments are never read, so they are not refused.
pub fn check_params(l: &ResolvedLaunch, param_sizes: &[usize]) -> Result<(), RuntimeError> {
    let mismatch = |problem: String| RuntimeError::ArgumentMismatch {
        kernel: l.kernel.clone(),
        problem,
    };
    if l.args.len() < param_sizes.len() {
        return Err(mismatch(format!(
            "the kernel takes {} parameters; the plan passes {} arguments (arguments are in the kernel's parameter order)",
            param_sizes.len(),
            l.args.len()
        )));
    }
    if let Some((i, size)) = param_sizes
        .iter()
        .enumerate()
        .find(|(_, &s)| s > SLOT_BYTES)
    {
        return Err(mismatch(format!(
            "parameter {i} is {size} bytes (passed by value); a plan argument is a pointer or a scalar of at most {SLOT_BYTES} bytes"
        )));
    }
    // A width that differs is no overrun, but the kernel reads another value than the plan
    // wrote: an `int` for a `long long` loses the sign of a negative value, an `f32` for a
    // `double` is garbage, a pointer for an `int` is its low half. Refused, naming the fix.
    for (i, (arg, &size)) in l.args.iter().zip(param_sizes).enumerate() {
        let (width, what) = arg_width(arg);
        if width != size {
            let want = match size {
                4 => "`i32:`, `u32:` or `f32:` (a bare integer expression is an i32)",
                8 => "a buffer name, or `i64:`, `u64:` or `f64:`",
                _ => "a scalar of that size",
            };
            return Err(mismatch(format!(
                "argument {i} is {what} ({width} bytes) but the kernel's parameter {i} is {size} bytes: pass {want}"
            )));
        }
    }
    Ok(())
}

/// Bytes the harness writes for a plan argument, and what it is.
fn arg_width(a: &ResolvedArg) -> (usize, &'static str) {
    match a {
        ResolvedArg::Buffer(_) => (8, "a buffer pointer"),
        ResolvedArg::I32(_) => (4, "an i32"),
        ResolvedArg::U32(_) => (4, "a u32"),
        ResolvedArg::F32(_) => (4, "an f32"),
        ResolvedArg::I64(_) => (8, "an i64"),
        ResolvedArg::U64(_) => (8, "a u64"),
        ResolvedArg::F64(_) => (8, "an f64"),
    }
}

/// Kernel arguments in their own 8-byte slots; `cuLaunchKernel` reads each parameter's size
/// from the slot's start (little endian), so narrower scalars sit in the low bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedArgs {
    slots: Vec<u64>,
}

impl PackedArgs {
    /// The `void**` array: valid while `self` is neither moved nor dropped.
    pub fn pointers(&mut self) -> Vec<*mut c_void> {
        self.slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect()
    }

    pub fn slot(&self, i: usize) -> Option<u64> {
        self.slots.get(i).copied()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Packs a launch's arguments: buffer names become device addresses through `address`.
pub fn pack_args(
    l: &ResolvedLaunch,
    address: &dyn Fn(&str) -> Option<u64>,
) -> Result<PackedArgs, RuntimeError> {
    let mut slots = Vec::with_capacity(l.args.len());
    for (i, a) in l.args.iter().enumerate() {
        slots.push(match a {
            ResolvedArg::Buffer(name) => {
                address(name).ok_or_else(|| RuntimeError::UnknownBuffer {
                    kernel: l.kernel.clone(),
                    index: i,
                    name: name.clone(),
                })?
            }
            ResolvedArg::I32(v) => *v as u32 as u64,
            ResolvedArg::U32(v) => *v as u64,
            ResolvedArg::I64(v) => *v as u64,
            ResolvedArg::U64(v) => *v,
            ResolvedArg::F32(v) => v.to_bits() as u64,
            ResolvedArg::F64(v) => v.to_bits(),
        });
    }
    Ok(PackedArgs { slots })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::device::tests::h100;

    fn launch(block: [u32; 3], smem: u32) -> ResolvedLaunch {
        ResolvedLaunch {
            kernel: "k".into(),
            grid: [132, 1, 1],
            block,
            shared_bytes: smem,
            args: vec![],
            cluster: None,
            cooperative: false,
        }
    }

    fn attrs() -> FuncAttrs {
        FuncAttrs {
            max_threads_per_block: 1024,
            num_regs: 32,
            static_shared_bytes: 0,
            local_bytes: 0,
            const_bytes: 0,
            max_dynamic_shared_bytes: 49152,
            binary_version: 90,
        }
    }

    #[test]
    fn a_normal_launch_passes() {
        check_limits(&launch([256, 1, 1], 0), &attrs(), &h100()).unwrap();
        // 200 KiB of dynamic shared memory is legal on H100 after opting in.
        check_limits(&launch([256, 1, 1], 200 * 1024), &attrs(), &h100()).unwrap();
    }

    #[test]
    fn launch_bounds_and_registers_are_enforced() {
        let mut f = attrs();
        f.max_threads_per_block = 128;
        let e = check_limits(&launch([256, 1, 1], 0), &f, &h100()).unwrap_err();
        assert!(
            e.to_string().contains("can run at most 128 per block"),
            "{e}"
        );
        let mut f = attrs();
        f.num_regs = 255;
        let e = check_limits(&launch([1024, 1, 1], 0), &f, &h100()).unwrap_err();
        // 255 registers round up to 8192 per warp; 32 warps need 262144.
        assert!(
            e.to_string().contains("needs 262144 registers per block"),
            "{e}"
        );
        let e = check_limits(&launch([64, 64, 1], 0), &attrs(), &h100()).unwrap_err();
        assert!(
            e.to_string()
                .contains("4096 threads; the device allows 1024"),
            "{e}"
        );
    }

    #[test]
    fn shared_memory_counts_static_and_dynamic() {
        let mut f = attrs();
        f.static_shared_bytes = 40 * 1024;
        let e = check_limits(&launch([256, 1, 1], 200 * 1024), &f, &h100()).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("launch over resource limits: `k`"), "{s}");
        assert!(
            s.contains("245760 bytes of shared memory per block (40960 static + 204800 dynamic)"),
            "{s}"
        );
    }

    #[test]
    fn clusters_and_cooperative_grids() {
        let mut l = launch([128, 1, 1], 0);
        l.cluster = Some([2, 1, 1]);
        check_limits(&l, &attrs(), &h100()).unwrap();
        l.grid = [133, 1, 1];
        let e = check_limits(&l, &attrs(), &h100()).unwrap_err();
        assert!(e
            .to_string()
            .contains("grid.x = 133 is not a multiple of cluster.x = 2"));
        l.grid = [128, 4, 1];
        l.cluster = Some([8, 4, 1]);
        let e = check_limits(&l, &attrs(), &h100()).unwrap_err();
        assert!(e.to_string().contains("32 blocks"), "{e}");
        let mut old = h100();
        old.cluster_launch = false;
        old.compute_capability = (8, 0);
        l.cluster = Some([2, 1, 1]);
        let e = check_limits(&l, &attrs(), &old).unwrap_err();
        assert!(e.to_string().contains("device is 8.0"), "{e}");

        let mut c = launch([256, 1, 1], 0);
        c.cooperative = true;
        c.grid = [264, 1, 1];
        check_coresident(&c, 2, &h100()).unwrap();
        c.grid = [265, 1, 1];
        let e = check_coresident(&c, 2, &h100()).unwrap_err();
        assert!(e.to_string().contains("only 264 fit"), "{e}");
    }

    #[test]
    fn arguments_pack_into_little_endian_slots() {
        let l = ResolvedLaunch {
            args: vec![
                ResolvedArg::Buffer("x".into()),
                ResolvedArg::I32(-2),
                ResolvedArg::I64(-3),
                ResolvedArg::U32(7),
                ResolvedArg::U64(u64::MAX),
                ResolvedArg::F32(1e-6),
                ResolvedArg::F64(0.5),
            ],
            ..launch([1, 1, 1], 0)
        };
        let mut p = pack_args(&l, &|n| (n == "x").then_some(0x7f00_0000_1000)).unwrap();
        assert_eq!(p.slot(0), Some(0x7f00_0000_1000));
        assert_eq!(p.slot(1), Some(0xffff_fffe));
        assert_eq!(p.slot(2), Some((-3i64) as u64));
        assert_eq!(p.slot(3), Some(7));
        assert_eq!(p.slot(4), Some(u64::MAX));
        assert_eq!(p.slot(5), Some(1e-6f32.to_bits() as u64));
        assert_eq!(p.slot(6), Some(0.5f64.to_bits()));
        let ptrs = p.pointers();
        assert_eq!(ptrs.len(), 7);
        // What the driver reads for an `int` parameter: the first four bytes of the slot.
        // SAFETY: the pointer is into `p`, alive and 8 bytes long.
        let first4 = unsafe { std::slice::from_raw_parts(ptrs[1] as *const u8, 4) };
        assert_eq!(i32::from_le_bytes(first4.try_into().unwrap()), -2);

        let e = pack_args(&l, &|_| None).unwrap_err();
        assert!(e.to_string().contains("argument 0 names buffer `x`"), "{e}");
    }

    #[test]
    fn arguments_must_cover_every_kernel_parameter() {
        let l = ResolvedLaunch {
            args: vec![ResolvedArg::Buffer("x".into()), ResolvedArg::I32(4)],
            ..launch([1, 1, 1], 0)
        };
        // (float* x, int n) and (float* x, int n) plus an unread extra argument are fine.
        check_params(&l, &[8, 4]).unwrap();
        check_params(&l, &[8]).unwrap();
        check_params(&l, &[]).unwrap();
        // (float* x, int n, float eps): the driver would read a third pointer past the array.
        let e = check_params(&l, &[8, 4, 4]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "launch of `k`: the kernel takes 3 parameters; the plan passes 2 arguments (arguments are in the kernel's parameter order)"
        );
        assert!(!e.is_sticky() && !e.is_harness());
        // A 128-byte CUtensorMap by value would be read past its 8-byte slot.
        let e = check_params(&l, &[8, 128]).unwrap_err();
        assert!(e.to_string().contains("parameter 1 is 128 bytes"), "{e}");
        // (float* x, long long n) given an i32: the kernel would read another value.
        let e = check_params(&l, &[8, 8]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "launch of `k`: argument 1 is an i32 (4 bytes) but the kernel's parameter 1 is 8 bytes: pass a buffer name, or `i64:`, `u64:` or `f64:`"
        );
        assert!(!e.is_sticky() && !e.is_harness());
        // (int n, ...) given a buffer.
        let e = check_params(&l, &[4, 4]).unwrap_err();
        assert!(
            e.to_string().contains("argument 0 is a buffer pointer (8 bytes) but the kernel's parameter 0 is 4 bytes: pass `i32:`, `u32:` or `f32:`"),
            "{e}"
        );
        let wide = ResolvedLaunch {
            args: vec![
                ResolvedArg::F64(1.0),
                ResolvedArg::U64(1),
                ResolvedArg::I64(-1),
                ResolvedArg::F32(1.0),
                ResolvedArg::U32(1),
            ],
            ..launch([1, 1, 1], 0)
        };
        check_params(&wide, &[8, 8, 8, 4, 4]).unwrap();
        assert!(check_params(&wide, &[4, 8, 8, 4, 4]).is_err());
    }
}
