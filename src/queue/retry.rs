//! When a deferred copy is tried again, and when it stops being tried.

use std::time::Duration;

/// The wait before the next attempt after `attempts` failed ones (the last interval repeats),
/// or `None` when a copy queued `age` ago would pass `max_age`: it bounces instead.
pub fn next_delay(
    schedule: &[Duration],
    attempts: u32,
    age: Duration,
    max_age: Duration,
) -> Option<Duration> {
    let index = usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX);
    let delay = schedule
        .get(index)
        .or_else(|| schedule.last())
        .copied()
        .unwrap_or(Duration::from_secs(60));
    if age >= max_age {
        return None;
    }
    Some(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_repeats_its_last_interval_until_max_age() {
        let s = [Duration::from_secs(60), Duration::from_secs(300)];
        let day = Duration::from_secs(86400);
        assert_eq!(next_delay(&s, 1, Duration::ZERO, day), Some(s[0]));
        assert_eq!(next_delay(&s, 2, Duration::ZERO, day), Some(s[1]));
        assert_eq!(next_delay(&s, 9, Duration::ZERO, day), Some(s[1]));
        assert_eq!(next_delay(&s, 3, day, day), None);
    }
}
