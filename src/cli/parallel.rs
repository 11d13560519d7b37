//! A work queue over a slice, served by lanes: one thread per lane, each owning its state (a
//! GPU's timing children, say), taking the next item whenever it is free. Used where GPUs work
//! through tasks or candidates in parallel (`ksmith bench`, `ksmith replay`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `work(lane, index, item)` over `items` on one thread per lane. Results come back in
/// the order of `items`; `None` for an item no lane started. `work` returning `(r, true)` keeps
/// `r` and stops every lane from starting another item; an error does the same and is
/// returned. `after_each` sees the results so far after each finished item (under the lock,
/// so calls never overlap).
pub fn run_lanes<L: Send, T: Sync, R: Send>(
    items: &[T],
    lanes: Vec<L>,
    work: impl Fn(&mut L, usize, &T) -> anyhow::Result<(R, bool)> + Sync,
    after_each: impl Fn(&[Option<R>]) + Sync,
) -> anyhow::Result<Vec<Option<R>>> {
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (work, after_each) = (&work, &after_each);
        let (results, first_error, next, stop) = (&results, &first_error, &next, &stop);
        for mut lane in lanes {
            s.spawn(move || loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { return };
                match work(&mut lane, i, item) {
                    Ok((r, stop_others)) => {
                        if stop_others {
                            stop.store(true, Ordering::SeqCst);
                        }
                        let mut d = results.lock().unwrap_or_else(|p| p.into_inner());
                        d[i] = Some(r);
                        after_each(&d);
                    }
                    Err(e) => {
                        stop.store(true, Ordering::SeqCst);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(results.into_inner().unwrap_or_else(|p| p.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn results_in_item_order_and_every_lane_works() {
        let items: Vec<u64> = (0..40).collect();
        let used = Mutex::new(std::collections::BTreeSet::new());
        let out = run_lanes(
            &items,
            vec![0usize, 1, 2],
            |lane, i, x| {
                used.lock().unwrap().insert(*lane);
                std::thread::sleep(Duration::from_millis(1 + (i % 3) as u64));
                Ok((x * 10, false))
            },
            |_| {},
        )
        .unwrap();
        let want: Vec<Option<u64>> = items.iter().map(|x| Some(x * 10)).collect();
        assert_eq!(out, want);
        assert_eq!(used.into_inner().unwrap().len(), 3);
    }

    #[test]
    fn a_stop_or_an_error_ends_the_queue() {
        let items: Vec<u32> = (0..100).collect();
        let seen = AtomicUsize::new(0);
        let out = run_lanes(
            &items,
            vec![()],
            |_, i, _| {
                seen.fetch_add(1, Ordering::SeqCst);
                Ok((i, i == 4))
            },
            |d| assert!(d.iter().flatten().count() <= 5),
        )
        .unwrap();
        assert_eq!(
            seen.load(Ordering::SeqCst),
            5,
            "one lane stops right after item 4"
        );
        assert_eq!(out.iter().flatten().count(), 5);
        assert!(out[5..].iter().all(Option::is_none));

        let err = run_lanes(
            &items,
            vec![()],
            |_, i, _| {
                if i == 2 {
                    anyhow::bail!("item {i} broke")
                } else {
                    Ok(((), false))
                }
            },
            |_| {},
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "item 2 broke");
    }
}
