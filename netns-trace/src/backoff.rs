//! How often the loader collects the events written without a wakeup
//! (`kread::emit` in the eBPF crate): every 250 ms while events flow,
//! backing off to 500 ms while none come. A wakeup costs the traced workload
//! a context switch on a busy CPU: the bench measured a fixed 50 ms poll at
//! a few percent of a loopback TCP loop that produces no events at all, and
//! a 50 ms poll while events flow at several percent of namespace churn
//! (docs/performance.md). Urgent events (a stuck device, a watch request)
//! wake the loader at once either way, and so does the first event after
//! a poll that found none (`trace::reader_idle`).
use std::time::Duration;

pub const MIN: Duration = Duration::from_millis(250);
pub const MAX: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollBackoff {
    current: Duration,
}

impl Default for PollBackoff {
    fn default() -> Self {
        Self { current: MIN }
    }
}

impl PollBackoff {
    pub fn current(&self) -> Duration {
        self.current
    }

    /// The wait before the next poll, after one that `found` events (or
    /// not): back to the minimum, or twice as long up to the maximum.
    pub fn next(&mut self, found: bool) -> Duration {
        self.current = if found {
            MIN
        } else {
            (self.current * 2).min(MAX)
        };
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_when_idle_and_snaps_back_on_events() {
        let mut b = PollBackoff::default();
        assert_eq!(b.current(), MIN);
        let idle: Vec<u64> = (0..5).map(|_| b.next(false).as_millis() as u64).collect();
        assert_eq!(idle, [500, 500, 500, 500, 500]);
        assert_eq!(b.next(true), MIN);
        assert_eq!(b.next(false), MIN * 2);
    }
}
