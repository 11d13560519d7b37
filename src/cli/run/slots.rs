//! GPU slots: one per GPU a run uses. A kernel's evaluation checks a slot out, verifies and
//! times on that GPU, and gives it back, so one GPU never does two things at once (a timing
//! never shares its device with another kernel's work) while several GPUs work in parallel.

use std::sync::{Condvar, Mutex, MutexGuard};

/// One GPU of a run: its ordinal in this process and the `CUDA_VISIBLE_DEVICES` value that
/// shows a child process that same device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuSlot {
    pub ordinal: u32,
    pub visible: String,
}

impl GpuSlot {
    /// The slots of these ordinals, mapped through this process's own `CUDA_VISIBLE_DEVICES`.
    pub fn for_ordinals(ordinals: &[u32]) -> Vec<GpuSlot> {
        let parent = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        ordinals
            .iter()
            .map(|&ordinal| GpuSlot {
                ordinal,
                visible: bench_suite::pool::visible_device(parent.as_deref(), ordinal),
            })
            .collect()
    }
}

/// Which slots are free; [`Slots::checkout`] waits for one.
pub struct Slots {
    free: Mutex<Vec<bool>>,
    returned: Condvar,
}

/// A checked-out slot, given back when dropped (also when the evaluation panics or fails).
pub struct Checkout<'a> {
    slots: &'a Slots,
    pub index: usize,
}

impl Slots {
    pub fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(vec![true; n.max(1)]),
            returned: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<bool>> {
        // The flags are only flipped under the lock, one at a time: never half-updated.
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lowest free slot, waiting until one is given back.
    pub fn checkout(&self) -> Checkout<'_> {
        let mut free = self.lock();
        loop {
            if let Some(index) = free.iter().position(|f| *f) {
                free[index] = false;
                return Checkout { slots: self, index };
            }
            free = self.returned.wait(free).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        let mut free = self.slots.lock();
        if let Some(f) = free.get_mut(self.index) {
            *f = true;
        }
        drop(free);
        self.slots.returned.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn a_slot_is_held_by_one_at_a_time_and_all_slots_are_used() {
        let slots = Slots::new(2);
        let busy: Vec<AtomicUsize> = (0..2).map(|_| AtomicUsize::new(0)).collect();
        let used: Vec<AtomicUsize> = (0..2).map(|_| AtomicUsize::new(0)).collect();
        let most = AtomicUsize::new(0);
        let running = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    for _ in 0..5 {
                        let c = slots.checkout();
                        assert_eq!(busy[c.index].fetch_add(1, Ordering::SeqCst), 0);
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        used[c.index].fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        running.fetch_sub(1, Ordering::SeqCst);
                        busy[c.index].fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= 2);
        let total: usize = used.iter().map(|u| u.load(Ordering::SeqCst)).sum();
        assert_eq!(total, 30);
    }

    #[test]
    fn a_busy_slot_sends_the_next_to_another_and_the_third_waits() {
        let slots = Slots::new(2);
        let a = slots.checkout();
        let b = slots.checkout();
        assert_eq!((a.index, b.index), (0, 1));
        let got = std::thread::scope(|s| {
            let waiter = s.spawn(|| slots.checkout().index);
            std::thread::sleep(Duration::from_millis(50));
            assert!(!waiter.is_finished(), "no slot is free: the third waits");
            drop(b);
            waiter.join()
        });
        assert_eq!(got.ok(), Some(1));
        drop(a);
    }

    #[test]
    fn a_slot_comes_back_when_its_holder_panics() {
        let slots = Slots::new(1);
        let r = std::thread::scope(|s| {
            s.spawn(|| {
                let _c = slots.checkout();
                panic!("evaluation blew up");
            })
            .join()
        });
        assert!(r.is_err());
        assert_eq!(slots.checkout().index, 0);
    }
}
