//! Emulated global memory: exact-size allocations at GPU-like addresses. Every access is checked
//! against them, so a read or write one byte outside a buffer is an illegal address here, where
//! a GPU would often let it pass unnoticed.

/// Where the first allocation goes; allocations are 512-byte aligned, as `cuMemAlloc` returns.
pub const GLOBAL_BASE: u64 = 0x7f00_0000_0000;
/// The generic-address windows of shared and local memory (`cvta.shared`, `cvta.local`).
pub const SHARED_WINDOW: u64 = 0x7e00_0000_0000;
pub const LOCAL_WINDOW: u64 = 0x7d00_0000_0000;
pub const WINDOW_BYTES: u64 = 1 << 32;
const ALIGN: u64 = 512;
/// Unused gap after each allocation, so an access past one buffer never lands in the next.
const GAP: u64 = 4096;

pub struct Alloc {
    pub base: u64,
    pub data: Vec<u8>,
}

#[derive(Default)]
pub struct Global {
    /// Sorted by base (bases only grow).
    allocs: Vec<Alloc>,
    next: u64,
}

impl Global {
    pub fn new() -> Global {
        Global {
            allocs: Vec::new(),
            next: GLOBAL_BASE,
        }
    }

    /// The address the next allocation will get.
    pub fn next_base(&self) -> u64 {
        self.next
    }

    pub fn alloc(&mut self, bytes: usize, fill: u8) -> u64 {
        let base = self.next;
        self.next = (base + bytes as u64 + GAP).div_ceil(ALIGN) * ALIGN;
        self.allocs.push(Alloc {
            base,
            data: vec![fill; bytes],
        });
        base
    }

    fn find(&self, addr: u64, len: usize) -> Option<(usize, usize)> {
        let i = match self.allocs.binary_search_by(|a| a.base.cmp(&addr)) {
            Ok(i) => i,
            Err(0) => return None,
            Err(i) => i - 1,
        };
        let a = &self.allocs[i];
        let off = (addr - a.base) as usize;
        (off.checked_add(len)? <= a.data.len()).then_some((i, off))
    }

    pub fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let (i, off) = self.find(addr, len)?;
        Some(&self.allocs[i].data[off..off + len])
    }

    pub fn bytes_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let (i, off) = self.find(addr, len)?;
        Some(&mut self.allocs[i].data[off..off + len])
    }

    /// The allocation holding `addr`, for fault messages: (base, size).
    pub fn nearest(&self, addr: u64) -> Option<(u64, usize)> {
        let i = match self.allocs.binary_search_by(|a| a.base.cmp(&addr)) {
            Ok(i) => i,
            Err(0) => return None,
            Err(i) => i - 1,
        };
        self.allocs.get(i).map(|a| (a.base, a.data.len()))
    }
}
