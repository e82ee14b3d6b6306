//! Rate limiting for log lines that a misbehaving client or a failing output can repeat
//! without end: the same kind of line is written at most once per `log.repeat_interval`,
//! and the next one written says how many were suppressed in between. Every suppressed
//! line is counted in `lumberd_log_messages_suppressed_total`, so nothing is hidden.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntCounter;

/// What identifies "the same line": a category and a fixed kind (a reason label). Both
/// are static strings, so the number of keys is bounded by the code, not by clients.
pub type Key = (&'static str, &'static str);

pub struct LogThrottle {
    interval: Duration,
    state: Mutex<HashMap<Key, Entry>>,
    suppressed_total: IntCounter,
}

struct Entry {
    last: Instant,
    suppressed: u64,
}

impl LogThrottle {
    pub fn new(interval: Duration, suppressed_total: IntCounter) -> LogThrottle {
        LogThrottle {
            interval,
            state: Mutex::new(HashMap::new()),
            suppressed_total,
        }
    }

    /// `Some(n)` when a line for `key` should be written now, `n` being how many were
    /// suppressed since the last one; `None` when it is suppressed.
    pub fn allow(&self, key: Key) -> Option<u64> {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: Key, now: Instant) -> Option<u64> {
        // A poisoned lock (a panic elsewhere while holding it) must not silence logs.
        let Ok(mut state) = self.state.lock() else {
            return Some(0);
        };
        match state.get_mut(&key) {
            Some(e) if now.duration_since(e.last) < self.interval => {
                e.suppressed += 1;
                self.suppressed_total.inc();
                None
            }
            Some(e) => {
                e.last = now;
                Some(std::mem::take(&mut e.suppressed))
            }
            None => {
                state.insert(
                    key,
                    Entry {
                        last: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_interval_are_suppressed_and_counted_on_the_next_line() {
        let counter = IntCounter::new("t_total", "t").unwrap();
        let t = LogThrottle::new(Duration::from_secs(10), counter.clone());
        let t0 = Instant::now();
        let key = ("connection", "zlib");
        assert_eq!(t.allow_at(key, t0), Some(0));
        assert_eq!(t.allow_at(key, t0 + Duration::from_secs(1)), None);
        assert_eq!(t.allow_at(key, t0 + Duration::from_secs(9)), None);
        assert_eq!(counter.get(), 2);
        assert_eq!(
            t.allow_at(key, t0 + Duration::from_secs(10)),
            Some(2),
            "the next line carries the suppressed count"
        );
        assert_eq!(t.allow_at(key, t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn different_kinds_are_limited_separately() {
        let t = LogThrottle::new(
            Duration::from_secs(10),
            IntCounter::new("t_total", "t").unwrap(),
        );
        let t0 = Instant::now();
        assert_eq!(t.allow_at(("connection", "zlib"), t0), Some(0));
        assert_eq!(t.allow_at(("connection", "truncated"), t0), Some(0));
        assert_eq!(t.allow_at(("tls", "zlib"), t0), Some(0));
        assert_eq!(t.allow_at(("connection", "zlib"), t0), None);
    }
}
