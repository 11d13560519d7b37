//! A one-shot timer on its own thread: armed around each synchronisation with a kernel, it
//! runs an action if the kernel has not finished in time. The worker uses it to answer with a
//! `timeout` verdict that names the case, then restart in place (a spinning kernel cannot be
//! interrupted; only closing the driver's descriptors, at exec or exit, frees the GPU). The
//! parent's per-request limit stays as a backstop.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Action = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    armed: Option<(Instant, Action)>,
}

pub struct Watchdog {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl Watchdog {
    pub fn new() -> std::io::Result<Watchdog> {
        let inner: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let t = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || run(&t))?;
        Ok(Watchdog { inner })
    }

    /// Runs `action` after `limit` unless disarmed (or re-armed) first.
    pub fn arm(&self, limit: Duration, action: impl FnOnce() + Send + 'static) {
        let (m, cv) = &*self.inner;
        if let Ok(mut s) = m.lock() {
            s.armed = Some((Instant::now() + limit, Box::new(action)));
            cv.notify_all();
        }
    }

    pub fn disarm(&self) {
        let (m, cv) = &*self.inner;
        if let Ok(mut s) = m.lock() {
            s.armed = None;
            cv.notify_all();
        }
    }
}

fn run(inner: &(Mutex<State>, Condvar)) {
    let (m, cv) = inner;
    let Ok(mut s) = m.lock() else { return };
    loop {
        let deadline = s.armed.as_ref().map(|(d, _)| *d);
        match deadline {
            None => match cv.wait(s) {
                Ok(g) => s = g,
                Err(_) => return,
            },
            Some(d) if Instant::now() >= d => {
                if let Some((_, action)) = s.armed.take() {
                    drop(s);
                    action();
                    s = match m.lock() {
                        Ok(g) => g,
                        Err(_) => return,
                    };
                }
            }
            Some(d) => match cv.wait_timeout(s, d.saturating_duration_since(Instant::now())) {
                Ok((g, _)) => s = g,
                Err(_) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn fires_once_after_the_limit_and_not_when_disarmed() {
        let w = Watchdog::new().unwrap();
        let (tx, rx) = mpsc::channel();
        let t0 = Instant::now();
        let tx2 = tx.clone();
        w.arm(Duration::from_millis(50), move || {
            tx2.send("fired").unwrap()
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "fired");
        assert!(t0.elapsed() >= Duration::from_millis(50));

        let tx3 = tx.clone();
        w.arm(Duration::from_millis(50), move || tx3.send("late").unwrap());
        w.disarm();
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());

        // Re-arming replaces the earlier action and deadline.
        let tx4 = tx.clone();
        w.arm(Duration::from_millis(20), move || {
            tx4.send("first").unwrap()
        });
        w.arm(Duration::from_millis(60), move || {
            tx.send("second").unwrap()
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "second");
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }
}
