//! Load schedules (open/closed loop), precise waiting and duration parsing.

use std::time::Duration;

use tokio::time::Instant;

/// How requests are issued.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `concurrency` workers each send the next request as soon as the previous
    /// response has been read.
    Closed {
        /// Number of concurrently outstanding requests (one per connection).
        concurrency: usize,
    },
    /// Requests are due at fixed times `t0 + i / rate`; latency is measured from the
    /// due time, so stalls are not hidden by coordinated omission.
    Open {
        /// Target requests per second.
        rate: f64,
    },
}

impl Mode {
    /// `"open"` or `"closed"`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Closed { .. } => "closed",
            Self::Open { .. } => "open",
        }
    }
}

/// Fixed-rate schedule: request `i` is due at `t0 + i / rate`.
///
/// Requests are statically assigned to connections round-robin (`i % connections`),
/// so each connection has its own queue; a busy connection sends its overdue requests
/// as soon as it is free, and their latency still counts from the due time.
#[derive(Debug, Clone, Copy)]
pub struct OpenSchedule {
    t0: Instant,
    rate: f64,
    /// First index that falls in the measurement window (after warmup).
    pub first_measured: u64,
    /// Number of requests scheduled over warmup + duration.
    pub total: u64,
}

impl OpenSchedule {
    /// Creates a schedule starting at `t0`.
    pub fn new(t0: Instant, rate: f64, warmup: Duration, duration: Duration) -> Self {
        let count = |d: Duration| (d.as_secs_f64() * rate).ceil() as u64;
        Self {
            t0,
            rate,
            first_measured: count(warmup),
            total: count(warmup + duration),
        }
    }

    /// Due time of request `index`.
    pub fn due(&self, index: u64) -> Instant {
        self.t0 + Duration::from_secs_f64(index as f64 / self.rate)
    }

    /// Number of measured requests in `index, index + stride, ...` (below `total`).
    pub fn remaining_measured(&self, index: u64, stride: u64) -> u64 {
        let stride = stride.max(1);
        let first = if index >= self.first_measured {
            index
        } else {
            index + (self.first_measured - index).div_ceil(stride) * stride
        };
        if first >= self.total {
            0
        } else {
            (self.total - 1 - first) / stride + 1
        }
    }
}

/// Timer-wheel slack: tokio timers have millisecond granularity, so we sleep until
/// this long before the due time and then spin (yielding to the runtime) until it.
const SPIN: Duration = Duration::from_millis(2);

/// Waits until `due` with roughly microsecond precision.
pub async fn wait_until(due: Instant) {
    let now = Instant::now();
    if due <= now {
        return;
    }
    if due - now > SPIN {
        tokio::time::sleep_until(due - SPIN).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

/// Parses a duration such as `500ms`, `10s`, `2m`, `1h`, `250us` or `1.5s`
/// (a bare number means seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 500ms, 10s, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {s:?} (use ns, us, ms, s, m, h)"
            ));
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("duration {s:?} out of range"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        for bad in ["", "s", "10x", "-1s", "1..2s", "ms10"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn open_schedule_counts() {
        let t0 = Instant::now();
        let s = OpenSchedule::new(
            t0,
            1000.0,
            Duration::from_millis(100),
            Duration::from_millis(250),
        );
        assert_eq!((s.first_measured, s.total), (100, 350));
        assert_eq!(s.due(500) - t0, Duration::from_millis(500));
        // Sum over 4 connections equals the number of measured requests.
        let sum: u64 = (0..4).map(|k| s.remaining_measured(k, 4)).sum();
        assert_eq!(sum, 250);
        assert_eq!(s.remaining_measured(349, 4), 1);
        assert_eq!(s.remaining_measured(350, 4), 0);
        assert_eq!(s.remaining_measured(3, 4), 62); // 103, 107, ..., 347
    }

    #[tokio::test]
    async fn wait_until_is_not_early() {
        let due = Instant::now() + Duration::from_millis(3);
        wait_until(due).await;
        let late = Instant::now() - due;
        assert!(late < Duration::from_millis(50), "{late:?}");
    }
}
