//! Seconds from outside the program (a server's header, a config file, the command line, the
//! environment) as a `Duration` that cannot panic: `Duration::from_secs_f64` panics on NaN,
//! negatives and anything above ~1.8e19 s, and `Instant::now() + d` overflows long before that.

use std::time::Duration;

/// The longest wait or limit taken from outside: 2^32 s, over a century.
pub const LONGEST: Duration = Duration::from_secs(1 << 32);

/// `s` seconds, clamped to `[0, LONGEST]`; NaN is zero.
pub fn clamped(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        Duration::ZERO
    } else if s >= LONGEST.as_secs_f64() {
        LONGEST
    } else {
        Duration::from_secs_f64(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_clamp_instead_of_panicking() {
        assert_eq!(clamped(1.5), Duration::from_millis(1500));
        assert_eq!(clamped(-3.0), Duration::ZERO);
        assert_eq!(clamped(f64::NAN), Duration::ZERO);
        assert_eq!(clamped(f64::INFINITY), LONGEST);
        assert_eq!(clamped(1e300), LONGEST);
        // A deadline that far ahead is representable.
        assert!(std::time::Instant::now().checked_add(LONGEST).is_some());
    }
}
