//! Brute-force protection: failed authentications counted per client IP in a fixed window.
//!
//! Used by SMTP AUTH (421 4.7.0 once the limit is reached) and by the HTTP side for bad API
//! tokens (429 with `Retry-After`). A success does not reset the count: one valid account must
//! not let a client go on guessing others. The table is bounded: expired entries are dropped
//! when it grows, and past [`MAX_TRACKED`] addresses the oldest windows are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most client addresses remembered at once.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Failures per client IP within `window`; `max` failures block the address until the window
/// ends.
#[derive(Debug)]
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    table: Mutex<HashMap<IpAddr, Window>>,
}

impl FailureLimiter {
    /// `max` 0 disables the limit.
    pub fn new(max: u32, window: Duration) -> FailureLimiter {
        FailureLimiter {
            max,
            window: window.max(Duration::from_secs(1)),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` must still wait, when it has used up its failures.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        self.blocked_at(ip, Instant::now())
    }

    /// Counts one failure of `ip`; returns how long it must wait when that was one too many.
    pub fn fail(&self, ip: IpAddr) -> Option<Duration> {
        self.fail_at(ip, Instant::now())
    }

    fn blocked_at(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.max == 0 {
            return None;
        }
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let w = table.get(&ip)?;
        let ends = w.started + self.window;
        (w.failures >= self.max && ends > now).then(|| ends - now)
    }

    fn fail_at(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.max == 0 {
            return None;
        }
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.len() >= MAX_TRACKED && !table.contains_key(&ip) {
            let window = self.window;
            table.retain(|_, w| w.started + window > now);
            if table.len() >= MAX_TRACKED {
                if let Some(oldest) = table.iter().min_by_key(|(_, w)| w.started).map(|(k, _)| *k) {
                    table.remove(&oldest);
                }
            }
        }
        let w = table.entry(ip).or_insert(Window {
            started: now,
            failures: 0,
        });
        if w.started + self.window <= now {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        let ends = w.started + self.window;
        (w.failures >= self.max).then(|| ends.saturating_duration_since(now))
    }
}

/// Whole seconds to tell a client to wait (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_until_the_window_ends() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(l.fail_at(ip, t0), None);
        assert_eq!(l.fail_at(ip, t0), None);
        assert!(l.blocked_at(ip, t0).is_none());
        assert!(l.fail_at(ip, t0).is_some());
        let wait = l.blocked_at(ip, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(l.blocked_at(other, t0).is_none());
        assert!(l.blocked_at(ip, t0 + Duration::from_secs(60)).is_none());
        // A new window starts from scratch.
        assert_eq!(l.fail_at(ip, t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn zero_disables_and_the_table_stays_bounded() {
        let off = FailureLimiter::new(0, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..10 {
            assert!(off.fail(ip).is_none());
        }
        assert!(off.blocked(ip).is_none());
        let l = FailureLimiter::new(5, Duration::from_secs(60));
        for i in 0..(MAX_TRACKED as u32 + 10) {
            l.fail(IpAddr::from(i.to_be_bytes()));
        }
        assert!(l.table.lock().unwrap().len() <= MAX_TRACKED);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
